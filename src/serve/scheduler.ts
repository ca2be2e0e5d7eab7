/**
 * Continuous batching over the engine's KV cache. Requests wait in a FIFO queue; between decode steps
 * the scheduler admits as many as there are free cache slots, prefills each prompt on its own (so a
 * prompt's cache and first-token logits never depend on what else is running), copies the prompt's
 * cache to the slots of its other samples (n > 1), and then every running sample advances by one
 * token per decode step, as one M = batch pass through the model. Each sample draws from its own
 * Rng(seed), one uniform per token, and the model computes each row independently, so a sample's
 * tokens depend on its prompt, settings and seed only, not on what else is in flight.
 *
 * All engine work runs on the event-loop thread in short synchronous steps; between steps the loop
 * yields, so HTTP requests are read and streamed tokens are written while a batch is running.
 */

import { createKvCache, type KvCache } from "../engine/decode.js";
import { logSumExp } from "../engine/layers.js";
import type { LlamaModel } from "../engine/model.js";
import { SamplerScratch, type SamplingSettings, sampleFromLogits } from "../engine/sampler.js";
import { Rng } from "../util/rng.js";

/** A token id with its log-probability under the model's unmodified softmax. */
export interface TokenLogprob {
  id: number;
  logprob: number;
}

/** One sampled token as reported to its request. */
export interface SampledToken extends TokenLogprob {
  /** The most likely ids of this step, best first (empty unless the job asked for top log-probs). */
  top: TokenLogprob[];
}

/** Why a sample ended. */
export type FinishReason = "stop" | "length";

/** One sample of a job: its seed and where its tokens go. */
export interface SampleSink {
  seed: number;
  /** Called for every sampled token; returning true ends the sample now ("stop", e.g. a stop string). */
  onToken(token: SampledToken): boolean;
  /** Called once when the sample ends normally. */
  onFinish(reason: FinishReason): void;
}

/** A generation job: one prompt, one or more samples of it. */
export interface GenerationJob {
  /** Prompt token ids (at least one, each below the model's vocab_size). */
  prompt: readonly number[];
  /** Tokens to sample at most per sample (>= 1); prompt.length + maxTokens must fit the context. */
  maxTokens: number;
  settings: SamplingSettings;
  /** Sampled ids that end a sample (reported to onToken, then the sample finishes with "stop"). */
  stopIds: ReadonlySet<number>;
  /** How many most likely ids to report with each token (0: none). */
  topLogprobs: number;
  samples: SampleSink[];
  /** Called once, instead of the samples' onFinish, if the engine fails while the job is running. */
  onError(error: Error): void;
}

/** A scoring job: the log-probs of a given sequence's tokens (an echo of the prompt). */
export interface ScoreResult {
  /** Entry t is log p(ids[t] | ids[<t]) for t >= 1; entry 0 is NaN (nothing predicts the first token). */
  logprobs: Float64Array;
  /** Per position t >= 1, the most likely ids (empty when none were asked); entry 0 is empty. */
  top: TokenLogprob[][];
}

/** A handle to cancel a submitted job (its client went away). */
export interface JobHandle {
  cancel(): void;
}

/** The queue is full: the caller should answer 429 with Retry-After. */
export class QueueFullError extends Error {
  constructor(readonly waiting: number) {
    super(`the server is busy: ${waiting} sample(s) are already waiting; retry shortly`);
    this.name = "QueueFullError";
  }
}

/** A scoring job was cancelled before it ran (its client went away). */
export class CancelledError extends Error {
  constructor() {
    super("cancelled");
    this.name = "CancelledError";
  }
}

/** The scheduler is shutting down and takes no new work. */
export class SchedulerClosedError extends Error {
  constructor() {
    super("the server is shutting down");
    this.name = "SchedulerClosedError";
  }
}

/** Options of a BatchScheduler. */
export interface BatchSchedulerOptions {
  /** Samples decoded together at most (KV-cache slots). */
  maxBatch: number;
  /** Samples (and scoring jobs) waiting for a slot at most; beyond it submit throws QueueFullError. */
  maxQueue: number;
  /** Longest sequence (prompt + sampled tokens) the model takes: max_position_embeddings. */
  contextLength: number;
  /** Sampling considers ids below this only (the tokenizer's vocabulary; default: the model's). */
  sampleVocab?: number;
  /** Smallest KV-cache length allocated (default 256); the cache grows up to contextLength as needed. */
  minCacheLength?: number;
  /** Padded tokens of scoring run between two decode steps at most (default 4096). */
  scoreTokensPerStep?: number;
}

/** Counters for logs, tests and benchmarks. */
export interface SchedulerStats {
  /** Samples running now. */
  running: number;
  /** Samples waiting for a slot. */
  waiting: number;
  /** Decode steps run so far. */
  steps: number;
  /** Most samples decoded in one step so far. */
  maxBatchSeen: number;
  /** Tokens sampled so far. */
  tokens: number;
  /** Seconds spent in engine work (scoring, prefill, decode) so far: the rest of the time it idled. */
  busySeconds: number;
}

interface QueuedJob {
  job: GenerationJob;
  cancelled: boolean;
  /** Samples of this job still running (or not yet admitted). */
  open: number;
  failed: boolean;
}

interface RunningSample {
  entry: QueuedJob;
  sink: SampleSink;
  rng: Rng;
  slot: number;
  produced: number;
  /** The last sampled token, not yet fed into the cache. */
  nextToken: number;
}

interface QueuedScore {
  ids: readonly number[];
  topLogprobs: number;
  /** Taken off the queue for running, or cancelled: either way it must not be touched again. */
  settled: boolean;
  resolve(result: ScoreResult): void;
  reject(error: Error): void;
}

/**
 * Copies the first `length` cached positions of slot `from` to slot `to` in every layer. The KvCache
 * layout is [slots, kvHeads, maxLen, headDim] per layer (decode.ts); RoPE is applied at absolute
 * positions, so a copied prefix is valid in any slot.
 */
function copySlot(cache: KvCache, from: number, to: number, kvHeads: number, headDim: number): void {
  const length = cache.lengths[from];
  const run = length * headDim;
  for (let l = 0; l < cache.keys.length; l++) {
    const keys = cache.keys[l];
    const values = cache.values[l];
    for (let h = 0; h < kvHeads; h++) {
      const src = (from * kvHeads + h) * cache.maxLen * headDim;
      const dst = (to * kvHeads + h) * cache.maxLen * headDim;
      keys.copyWithin(dst, src, src + run);
      values.copyWithin(dst, src, src + run);
    }
  }
  cache.lengths[to] = length;
}

/** The k most likely ids of a logits row among the first `vocab`, best first, as log-probs. */
function topLogprobsOf(
  logits: Float32Array,
  offset: number,
  vocab: number,
  k: number,
  lse: number,
): TokenLogprob[] {
  const best: TokenLogprob[] = [];
  if (k <= 0) return best;
  // Insertion into a short sorted list: k is at most 20, the vocabulary is scanned once.
  for (let j = 0; j < vocab; j++) {
    const value = logits[offset + j];
    if (best.length === k && value <= best[k - 1].logprob) continue;
    let at = best.length;
    while (at > 0 && best[at - 1].logprob < value) at--;
    best.splice(at, 0, { id: j, logprob: value });
    if (best.length > k) best.pop();
  }
  for (const entry of best) entry.logprob -= lse;
  return best;
}

function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Runs generation and scoring jobs through one model with continuous batching. */
export class BatchScheduler {
  private readonly queue: QueuedJob[] = [];
  private readonly scores: QueuedScore[] = [];
  private readonly running: (RunningSample | null)[];
  private readonly scratch: SamplerScratch;
  private readonly vocab: number;
  private readonly sampleVocab: number;
  private readonly kvHeads: number;
  private readonly headDim: number;
  private cache: KvCache | null = null;
  private waitingSamples = 0;
  private runningCount = 0;
  private loop: Promise<void> | null = null;
  private closed = false;
  private readonly idleWaiters: Array<() => void> = [];
  private counters = { steps: 0, maxBatchSeen: 0, tokens: 0, busySeconds: 0 };

  /** A scheduler over `model`, which must have an LM head. */
  constructor(
    readonly model: LlamaModel,
    readonly options: BatchSchedulerOptions,
  ) {
    if (!model.hasLmHead) throw new Error("BatchScheduler: the model has no LM head (a reward model?)");
    if (!Number.isInteger(options.maxBatch) || options.maxBatch < 1)
      throw new RangeError(`maxBatch must be a positive integer, got ${options.maxBatch}`);
    if (!Number.isInteger(options.maxQueue) || options.maxQueue < 0)
      throw new RangeError(`maxQueue must be an integer >= 0, got ${options.maxQueue}`);
    this.vocab = model.dims.vocab;
    this.sampleVocab = Math.min(options.sampleVocab ?? this.vocab, this.vocab);
    this.kvHeads = model.dims.kvHeads;
    this.headDim = model.dims.headDim;
    this.running = new Array(options.maxBatch).fill(null);
    this.scratch = new SamplerScratch(this.vocab);
  }

  /** Running and waiting counts and throughput counters. */
  stats(): SchedulerStats {
    return {
      running: this.runningCount,
      waiting: this.waitingSamples + this.scores.length,
      ...this.counters,
    };
  }

  /**
   * Queues a generation job. Throws QueueFullError when the queue cannot take its samples (an empty
   * queue always takes one job, so a job with more samples than maxQueue still runs), and
   * SchedulerClosedError after close().
   */
  submit(job: GenerationJob): JobHandle {
    if (this.closed) throw new SchedulerClosedError();
    const n = job.samples.length;
    if (n < 1 || n > this.options.maxBatch)
      throw new RangeError(`a job needs 1 to ${this.options.maxBatch} samples, got ${n}`);
    if (job.prompt.length < 1) throw new RangeError("a job needs a prompt of at least one token");
    if (!Number.isInteger(job.maxTokens) || job.maxTokens < 1)
      throw new RangeError(`maxTokens must be a positive integer, got ${job.maxTokens}`);
    if (job.prompt.length + job.maxTokens > this.options.contextLength)
      throw new RangeError(
        `prompt (${job.prompt.length}) + maxTokens (${job.maxTokens}) exceed the context of ${this.options.contextLength}`,
      );
    this.checkRoom(n);
    const entry: QueuedJob = { job, cancelled: false, open: n, failed: false };
    this.queue.push(entry);
    this.waitingSamples += n;
    this.kick();
    return {
      cancel: () => {
        entry.cancelled = true;
        this.kick();
      },
    };
  }

  /** Queues the scoring of `ids` (an echo); resolves with each token's log-prob given the ones before. */
  score(ids: readonly number[], topLogprobs = 0, signal?: AbortSignal): Promise<ScoreResult> {
    if (this.closed) return Promise.reject(new SchedulerClosedError());
    if (ids.length < 1) return Promise.reject(new RangeError("nothing to score"));
    if (ids.length > this.options.contextLength)
      return Promise.reject(
        new RangeError(`${ids.length} tokens exceed the context of ${this.options.contextLength}`),
      );
    try {
      this.checkRoom(1);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      const entry: QueuedScore = { ids, topLogprobs, settled: false, resolve, reject };
      signal?.addEventListener(
        "abort",
        () => {
          if (entry.settled) return;
          entry.settled = true;
          reject(new CancelledError());
        },
        { once: true },
      );
      this.scores.push(entry);
      this.kick();
    });
  }

  /** Takes no new work, lets queued and running jobs finish, then resolves. */
  async close(): Promise<void> {
    this.closed = true;
    await this.idle();
  }

  /** Resolves once nothing is queued or running. */
  idle(): Promise<void> {
    if (this.loop === null) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private checkRoom(n: number): void {
    const waiting = this.waitingSamples + this.scores.length;
    if (waiting > 0 && waiting + n > this.options.maxQueue) throw new QueueFullError(waiting);
  }

  private kick(): void {
    if (this.loop !== null) return;
    this.loop = this.run().finally(() => {
      this.loop = null;
      for (const resolve of this.idleWaiters.splice(0)) resolve();
      // Work queued by a callback during the last step's wake-up starts a new loop.
      if (this.queue.length > 0 || this.scores.length > 0) this.kick();
    });
  }

  private hasWork(): boolean {
    return this.queue.length > 0 || this.scores.length > 0 || this.runningCount > 0;
  }

  private async run(): Promise<void> {
    // The first step waits a turn of the event loop: submit() returns before any token is sampled,
    // and requests that arrive together start together.
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.hasWork()) {
      try {
        this.step();
      } catch (error) {
        this.failRunning(error instanceof Error ? error : new Error(String(error)));
      }
      // Let sockets be read and written between steps.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    // The model has one KV-cache arena: whoever samples with it while this scheduler is idle makes
    // the cache stale, so an idle scheduler lets it go and makes a fresh one when work comes.
    this.cache = null;
  }

  /** One scheduling step: scoring, retiring cancelled work, admitting, one decode step. */
  private step(): void {
    const started = performance.now();
    try {
      this.runScores();
      this.retireCancelled();
      this.admit();
      this.decode();
    } finally {
      this.counters.busySeconds += (performance.now() - started) / 1000;
    }
  }

  private runScores(): void {
    const budget = this.options.scoreTokensPerStep ?? 4096;
    let used = 0;
    while (this.scores.length > 0) {
      const entry = this.scores[0];
      if (entry.settled) {
        this.scores.shift();
        continue;
      }
      if (used > 0 && used + entry.ids.length > budget) break;
      this.scores.shift();
      entry.settled = true;
      used += entry.ids.length;
      try {
        entry.resolve(this.scoreOne(entry.ids, entry.topLogprobs));
      } catch (error) {
        entry.reject(error instanceof Error ? error : new Error(String(error)));
      }
    }
  }

  private scoreOne(ids: readonly number[], topLogprobs: number): ScoreResult {
    const T = ids.length;
    const V = this.vocab;
    const batch = {
      ids: Int32Array.from(ids),
      batch: 1,
      seqLen: T,
      lengths: Int32Array.from([T]),
      lossMask: new Uint8Array(T).fill(1),
    };
    // The log-probs come from forward itself, so an echo reports exactly what training and
    // `selfsteer logprobs` compute; the top ids need the logits, which cost a second pass.
    const { tokenLogprobs } = this.model.forward(batch, { keep: false });
    const logprobs = new Float64Array(T);
    logprobs[0] = Number.NaN;
    for (let t = 1; t < T; t++) logprobs[t] = tokenLogprobs[t];
    const top: TokenLogprob[][] = ids.map(() => []);
    if (topLogprobs > 0) {
      const logits = this.model.forwardLogits(batch, { keep: false });
      for (let t = 1; t < T; t++) {
        // Row t - 1 predicts token t; its normaliser is the one forward used for that token.
        const offset = (t - 1) * V;
        const lse = logits[offset + ids[t]] - logprobs[t];
        top[t] = topLogprobsOf(logits, offset, this.sampleVocab, topLogprobs, lse);
      }
    }
    return { logprobs, top };
  }

  private retireCancelled(): void {
    for (let slot = 0; slot < this.running.length; slot++) {
      const sample = this.running[slot];
      if (sample?.entry.cancelled) this.release(slot);
    }
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const entry = this.queue[i];
      if (!entry.cancelled) continue;
      this.queue.splice(i, 1);
      this.waitingSamples -= entry.job.samples.length;
    }
  }

  private release(slot: number): void {
    const sample = this.running[slot];
    if (sample === null) return;
    this.running[slot] = null;
    this.runningCount--;
    sample.entry.open--;
  }

  /** A cache of maxBatch slots long enough for `needed` tokens, made only while nothing runs. */
  private ensureCache(needed: number): boolean {
    if (this.cache !== null && this.cache.maxLen >= needed) return true;
    if (this.runningCount > 0) return false;
    const minLength = this.options.minCacheLength ?? 256;
    // Room for what is queued now too, so a burst of longer requests does not regrow it one by one.
    let longest = needed;
    for (const entry of this.queue)
      longest = Math.max(longest, entry.job.prompt.length + entry.job.maxTokens);
    const maxLen = Math.min(this.options.contextLength, Math.max(minLength, nextPowerOfTwo(longest)));
    this.cache = createKvCache(this.model, this.options.maxBatch, maxLen);
    return true;
  }

  private freeSlots(): number {
    return this.options.maxBatch - this.runningCount;
  }

  /** Moves whatever runs in slot 0 elsewhere, so prefill (which writes slot 0) can use it. */
  private vacateSlotZero(cache: KvCache): void {
    const sample = this.running[0];
    if (sample === null) return;
    const to = this.running.indexOf(null, 1);
    if (to < 0) throw new Error("no free slot to move slot 0 to");
    copySlot(cache, 0, to, this.kvHeads, this.headDim);
    this.running[to] = sample;
    this.running[0] = null;
    sample.slot = to;
  }

  private admit(): void {
    while (this.queue.length > 0) {
      const entry = this.queue[0];
      const { job } = entry;
      const n = job.samples.length;
      if (n > this.freeSlots()) return;
      if (!this.ensureCache(job.prompt.length + job.maxTokens)) return;
      this.queue.shift();
      this.waitingSamples -= n;
      const cache = this.cache!;
      try {
        this.vacateSlotZero(cache);
        cache.lengths[0] = 0;
        // One prompt per prefill: its cache and logits are the same whatever else is queued.
        const logits = cache.prefill([job.prompt]);
        for (let k = 0; k < n; k++) {
          const slot = k === 0 ? 0 : this.running.indexOf(null, 1);
          if (slot < 0) throw new Error("no free slot for an admitted sample");
          if (k > 0) copySlot(cache, 0, slot, this.kvHeads, this.headDim);
          const sink = job.samples[k];
          const sample: RunningSample = {
            entry,
            sink,
            rng: new Rng(sink.seed),
            slot,
            produced: 0,
            nextToken: -1,
          };
          this.running[slot] = sample;
          this.runningCount++;
          this.sampleInto(sample, logits, 0);
        }
      } catch (error) {
        this.failJob(entry, error instanceof Error ? error : new Error(String(error)));
        throw error;
      }
    }
  }

  private decode(): void {
    if (this.runningCount === 0) return;
    const cache = this.cache!;
    const slots: number[] = [];
    const tokens: number[] = [];
    for (let slot = 0; slot < this.running.length; slot++) {
      const sample = this.running[slot];
      if (sample === null) continue;
      slots.push(slot);
      tokens.push(sample.nextToken);
    }
    const logits = cache.decodeStep(Int32Array.from(slots), Int32Array.from(tokens));
    this.counters.steps++;
    this.counters.maxBatchSeen = Math.max(this.counters.maxBatchSeen, slots.length);
    slots.forEach((slot, row) => {
      const sample = this.running[slot];
      if (sample !== null) this.sampleInto(sample, logits, row);
    });
  }

  /** Samples the next token of `sample` from logits row `row`; finishes and frees it when it ends. */
  private sampleInto(sample: RunningSample, logits: Float32Array, row: number): void {
    const { job } = sample.entry;
    const offset = row * this.vocab;
    const id = sampleFromLogits(logits, offset, this.sampleVocab, job.settings, sample.rng, this.scratch);
    const lse = logSumExp(logits, offset, this.vocab);
    const token: SampledToken = {
      id,
      logprob: logits[offset + id] - lse,
      top: topLogprobsOf(logits, offset, this.sampleVocab, job.topLogprobs, lse),
    };
    sample.produced++;
    this.counters.tokens++;
    let reason: FinishReason | null = null;
    if (sample.entry.cancelled) {
      this.release(sample.slot);
      return;
    }
    const stopRequested = sample.sink.onToken(token);
    if (job.stopIds.has(id) || stopRequested) reason = "stop";
    else if (sample.produced >= job.maxTokens) reason = "length";
    if (reason === null) {
      sample.nextToken = id;
      return;
    }
    this.release(sample.slot);
    sample.sink.onFinish(reason);
  }

  private failJob(entry: QueuedJob, error: Error): void {
    if (entry.failed) return;
    entry.failed = true;
    entry.cancelled = true;
    entry.job.onError(error);
  }

  /** An engine failure: every running job fails, and the cache is rebuilt for the next job. */
  private failRunning(error: Error): void {
    for (let slot = 0; slot < this.running.length; slot++) {
      const sample = this.running[slot];
      if (sample === null) continue;
      this.release(slot);
      this.failJob(sample.entry, error);
    }
    this.cache = null;
  }
}
