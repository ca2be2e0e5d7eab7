/**
 * The engine benchmark, measured the way bench/torch_peer.py measures PyTorch on the same presets:
 * training tokens/s (forward + backward + AdamW, next-token loss on every token of random ids, median
 * step after warm-up) and generation tokens/s (batch B, a 16-token random prompt, greedy decoding with
 * the KV cache up to the preset's sequence length, best of a few runs, prefill included).
 */
import { Rng } from "../util/rng.js";
import { type LlamaConfig, LlamaConfigSchema } from "./config.js";
import type { ElementwiseKernels, GemmBatchItem, Kernels } from "./kernels/types.js";
import { LlamaModel, type TokenBatch } from "./model.js";
import { AdamW, decayMaskFromSpecs } from "./optim.js";
import { generateTokens } from "./sampler.js";

/** A benchmark preset: model size and workload. */
export interface BenchPreset {
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  /** Training sequence length, and where generation stops (prompt included). */
  seqLen: number;
  batch: number;
  /** lm_head shares the embedding matrix (default false). */
  tied?: boolean;
}

/**
 * The presets of the engine issue (rope_theta 10000, eps 1e-5), same as bench/torch_peer.py. S, M and
 * L are untied; XL is shaped like SmolLM2-135M (tied embeddings, 9 heads over 3 KV heads), with random weights.
 */
export const BENCH_PRESETS = {
  S: { vocab: 512, hidden: 128, intermediate: 512, layers: 4, heads: 4, kvHeads: 4, seqLen: 64, batch: 8 },
  M: { vocab: 2048, hidden: 256, intermediate: 1024, layers: 4, heads: 4, kvHeads: 4, seqLen: 128, batch: 8 },
  L: { vocab: 4096, hidden: 512, intermediate: 2048, layers: 6, heads: 8, kvHeads: 8, seqLen: 128, batch: 8 },
  XL: {
    vocab: 49152,
    hidden: 576,
    intermediate: 1536,
    layers: 30,
    heads: 9,
    kvHeads: 3,
    seqLen: 256,
    batch: 2,
    tied: true,
  },
} as const satisfies Record<string, BenchPreset>;

/** A preset's name. */
export type BenchPresetName = keyof typeof BENCH_PRESETS;

/** Tokens of the random prompt each generated sequence starts from. */
export const BENCH_PROMPT_TOKENS = 16;

/** The Llama config of a preset. */
export function benchConfig(preset: BenchPreset): LlamaConfig {
  return LlamaConfigSchema.parse({
    vocab_size: preset.vocab,
    hidden_size: preset.hidden,
    intermediate_size: preset.intermediate,
    num_hidden_layers: preset.layers,
    num_attention_heads: preset.heads,
    num_key_value_heads: preset.kvHeads,
    max_position_embeddings: Math.max(preset.seqLen, BENCH_PROMPT_TOKENS + 1),
    rope_theta: 10000,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: preset.tied === true,
  });
}

/** Options of runBench. */
export interface BenchOptions {
  /** Timed training steps (median reported; default 10). */
  steps?: number;
  /** Untimed training steps first (default 2, as the peer). */
  warmup?: number;
  /** Generation runs (best reported; default 3, as the peer). */
  generateRuns?: number;
  /** Seed of the weights and the random ids (default 0). */
  seed?: number;
  /**
   * Also measure where a training step's time goes (matrix products, attention's batched products,
   * compiled element-wise loops, everything else) and single-stream decoding with its implied memory
   * traffic. Timing every kernel call costs a little, so the plain figures come from a run without it.
   */
  profile?: boolean;
}

/** Milliseconds of one training phase, split by what computed them (medians over the timed steps). */
export interface PhaseProfile {
  total: number;
  /** Kernels.sgemm: the linear layers and the LM head. */
  matmul: number;
  /** Kernels.sgemmBatch: attention's per-head products. */
  attentionProducts: number;
  /** The backend's compiled element-wise loops (SwiGLU), where it has them. */
  elementwise: number;
  /** Everything else: norms, RoPE, softmax, the loss, residual copies, AdamW (TypeScript loops). */
  other: number;
}

/** What `profile` adds to a BenchResult. */
export interface BenchProfile {
  forward: PhaseProfile;
  backward: PhaseProfile;
  optimizer: PhaseProfile;
  /** Share of the step outside matrix products (sgemm and sgemmBatch). */
  outsideProductsShare: number;
  /** Greedy decoding of one sequence with the KV cache (prompt 16 tokens, to the preset's length). */
  decodeSingle: DecodeFigures;
  /** The same for the preset's batch of sequences decoded together. */
  decodeBatched: DecodeFigures;
}

/** Decode throughput and the memory traffic it implies. */
export interface DecodeFigures {
  sequences: number;
  tokensPerSec: number;
  /** Bytes a decode step must read at least: every weight the step multiplies by, plus the KV cache. */
  bytesPerStep: number;
  /** bytesPerStep * steps per second. */
  impliedGBPerSec: number;
}

/** Medians of one training step's phases, in milliseconds. */
export interface TrainPhases {
  forward: number;
  backward: number;
  optimizer: number;
}

/** What runBench measures. */
export interface BenchResult {
  batch: number;
  seqLen: number;
  parameters: number;
  /** batch * seqLen / median step time. */
  trainTokensPerSec: number;
  trainStepMs: number;
  trainPhasesMs: TrainPhases;
  /** batch * (seqLen - 16) / best generation time. */
  generateTokensPerSec: number;
  generateMs: number;
  /** This process's peak RSS in MB right after training (before generation), Node itself included. */
  trainPeakRssMB: number;
  /** The final training loss (about ln(vocab) on random ids: a check that the step computed something). */
  finalLoss: number;
  /** With options.profile: the per-phase breakdown and decoding figures. */
  profile?: BenchProfile;
}

/** Every function of ElementwiseKernels (a missing one fails the type check of the record below). */
const ELEMENTWISE_METHODS = Object.keys({
  swigluForward: 0,
  swigluRecompute: 0,
  swigluBackward: 0,
  splitHeads: 0,
  mergeHeads: 0,
  causalSoftmax: 0,
  causalSoftmaxBackward: 0,
  rmsnormForward: 0,
  rmsnormBackward: 0,
  softmaxRows: 0,
  softmaxRowsBackward: 0,
  cachedAttention: 0,
  adamw: 0,
} satisfies Record<keyof ElementwiseKernels, 0>) as (keyof ElementwiseKernels)[];

/**
 * Kernels that time every product and element-wise call of the kernels they wrap (for `profile`);
 * everything else passes through.
 */
class TimedKernels implements Kernels {
  readonly name: string;
  readonly backend: Kernels["backend"];
  readonly threads: number;
  readonly elementwise: ElementwiseKernels | undefined;
  matmulMs = 0;
  batchMs = 0;
  elementwiseMs = 0;

  constructor(private readonly inner: Kernels) {
    this.name = inner.name;
    this.backend = inner.backend;
    this.threads = inner.threads;
    const e = inner.elementwise;
    this.elementwise = e === undefined ? undefined : this.timedElementwise(e);
  }

  /** Sets every counter to zero. */
  reset(): void {
    this.matmulMs = 0;
    this.batchMs = 0;
    this.elementwiseMs = 0;
  }

  alloc(length: number): Float32Array {
    return this.inner.alloc(length);
  }

  release(view: Float32Array): void {
    this.inner.release(view);
  }

  sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: Float32Array,
    B: Float32Array,
    beta: number,
    C: Float32Array,
  ): void {
    const t0 = performance.now();
    this.inner.sgemm(transA, transB, M, N, K, alpha, A, B, beta, C);
    this.matmulMs += performance.now() - t0;
  }

  sgemmBatch(
    transA: boolean,
    transB: boolean,
    alpha: number,
    beta: number,
    items: readonly GemmBatchItem[],
  ): void {
    const t0 = performance.now();
    this.inner.sgemmBatch(transA, transB, alpha, beta, items);
    this.batchMs += performance.now() - t0;
  }

  waitForWorkers(timeoutMs?: number): boolean {
    return this.inner.waitForWorkers(timeoutMs);
  }

  dispose(): void {
    this.inner.dispose();
  }

  /** Every function of `e`, timed into elementwiseMs. */
  private timedElementwise(e: ElementwiseKernels): ElementwiseKernels {
    const timed: Record<string, unknown> = {};
    for (const key of ELEMENTWISE_METHODS) {
      const f = e[key] as unknown;
      timed[key] = (...args: unknown[]) => {
        const t0 = performance.now();
        (f as (...a: unknown[]) => void).apply(e, args);
        this.elementwiseMs += performance.now() - t0;
      };
    }
    return timed as unknown as ElementwiseKernels;
  }
}

function median(values: readonly number[]): number {
  const sorted = values.slice().sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** Measures training and generation throughput of a preset on `kernels`. */
export function runBench(preset: BenchPreset, kernels: Kernels, options: BenchOptions = {}): BenchResult {
  const steps = options.steps ?? 10;
  const warmup = options.warmup ?? 2;
  const runs = options.generateRuns ?? 3;
  if (!Number.isInteger(steps) || steps < 1)
    throw new RangeError(`steps must be a positive integer, got ${steps}`);
  if (!Number.isInteger(warmup) || warmup < 0)
    throw new RangeError(`warmup must be an integer >= 0, got ${warmup}`);
  if (!Number.isInteger(runs) || runs < 1)
    throw new RangeError(`generateRuns must be a positive integer, got ${runs}`);
  if (preset.seqLen <= BENCH_PROMPT_TOKENS)
    throw new RangeError(`seqLen must exceed the ${BENCH_PROMPT_TOKENS}-token prompt, got ${preset.seqLen}`);
  const rng = new Rng(options.seed ?? 0);
  const timed = options.profile === true ? new TimedKernels(kernels) : undefined;
  const model = new LlamaModel(benchConfig(preset), timed ?? kernels);
  model.initRandom(rng.fork("weights"));
  const optimizer = new AdamW(model.numParams, {
    weightDecay: 0.1,
    decayMask: decayMaskFromSpecs(model.specs),
    kernels: timed ?? kernels,
  });

  const { batch: B, seqLen: T, vocab: V } = preset;
  const ids = new Int32Array(B * T);
  const data = rng.fork("ids");
  for (let i = 0; i < ids.length; i++) ids[i] = data.int(V);
  const lossMask = new Uint8Array(B * T);
  for (let b = 0; b < B; b++) lossMask.fill(1, b * T + 1, (b + 1) * T);
  const trainBatch: TokenBatch = { ids, batch: B, seqLen: T, lengths: new Int32Array(B).fill(T), lossMask };
  const scored = B * (T - 1);
  const dTokenLogprobs = new Float32Array(B * T);
  for (let i = 0; i < dTokenLogprobs.length; i++) if (lossMask[i] === 1) dTokenLogprobs[i] = -1 / scored;
  model.reserve(B, T);

  const stepMs: number[] = [];
  const phases: TrainPhases[] = [];
  const profiles: { forward: PhaseProfile; backward: PhaseProfile; optimizer: PhaseProfile }[] = [];
  /** The time since `start` split by what the timed kernels counted meanwhile. */
  const split = (start: number, end: number): PhaseProfile => {
    const t = timed as TimedKernels;
    const profile = {
      total: end - start,
      matmul: t.matmulMs,
      attentionProducts: t.batchMs,
      elementwise: t.elementwiseMs,
      other: end - start - t.matmulMs - t.batchMs - t.elementwiseMs,
    };
    t.reset();
    return profile;
  };
  let finalLoss = Number.NaN;
  for (let i = 0; i < warmup + steps; i++) {
    timed?.reset();
    const t0 = performance.now();
    model.zeroGrad();
    const { seqLogprobs } = model.forward(trainBatch);
    const t1 = performance.now();
    const forward = timed === undefined ? undefined : split(t0, t1);
    model.backward(dTokenLogprobs);
    const t2 = performance.now();
    const backward = timed === undefined ? undefined : split(t1, t2);
    optimizer.step(model.params, model.grads, 1e-4);
    const t3 = performance.now();
    const optim = timed === undefined ? undefined : split(t2, t3);
    let sum = 0;
    for (let b = 0; b < B; b++) sum += seqLogprobs[b];
    finalLoss = -sum / scored;
    if (i >= warmup) {
      stepMs.push(t3 - t0);
      phases.push({ forward: t1 - t0, backward: t2 - t1, optimizer: t3 - t2 });
      if (forward !== undefined && backward !== undefined && optim !== undefined)
        profiles.push({ forward, backward, optimizer: optim });
    }
  }

  const trainPeakRssMB = round(process.resourceUsage().maxRSS / 1024, 1);
  const prompts: number[][] = [];
  const promptRng = rng.fork("prompts");
  for (let b = 0; b < B; b++)
    prompts.push(Array.from({ length: BENCH_PROMPT_TOKENS }, () => promptRng.int(V)));
  const newTokens = T - BENCH_PROMPT_TOKENS;
  /** Best time of greedy decoding `rows` to the preset's length. */
  const generate = (rows: number[][]): number => {
    let best = Number.POSITIVE_INFINITY;
    for (let r = 0; r < runs; r++) {
      const t0 = performance.now();
      const out = generateTokens(model, rows, {
        maxNewTokens: newTokens,
        temperature: 0,
        seeds: rows.map((_, b) => b),
        maxBatch: rows.length,
      });
      const ms = performance.now() - t0;
      for (const o of out)
        if (o.ids.length !== newTokens)
          throw new Error(`generated ${o.ids.length} tokens, expected ${newTokens}`);
      best = Math.min(best, ms);
    }
    return best;
  };
  const bestMs = generate(prompts);

  let profile: BenchProfile | undefined;
  if (timed !== undefined) {
    const phase = (pick: (p: (typeof profiles)[number]) => PhaseProfile): PhaseProfile => {
      const all = profiles.map(pick);
      return {
        total: round(median(all.map((p) => p.total)), 2),
        matmul: round(median(all.map((p) => p.matmul)), 2),
        attentionProducts: round(median(all.map((p) => p.attentionProducts)), 2),
        elementwise: round(median(all.map((p) => p.elementwise)), 2),
        other: round(median(all.map((p) => p.other)), 2),
      };
    };
    const forward = phase((p) => p.forward);
    const backward = phase((p) => p.backward);
    const optim = phase((p) => p.optimizer);
    const total = forward.total + backward.total + optim.total;
    const products =
      forward.matmul + forward.attentionProducts + backward.matmul + backward.attentionProducts;
    const singleMs = generate(prompts.slice(0, 1));
    profile = {
      forward,
      backward,
      optimizer: optim,
      outsideProductsShare: round(1 - products / total, 3),
      decodeSingle: decodeFigures(model, preset, 1, singleMs),
      decodeBatched: decodeFigures(model, preset, B, bestMs),
    };
  }

  const stepMedian = median(stepMs);
  return {
    batch: B,
    seqLen: T,
    parameters: model.numParams,
    trainTokensPerSec: round((B * T) / (stepMedian / 1000), 1),
    trainStepMs: round(stepMedian, 2),
    trainPhasesMs: {
      forward: round(median(phases.map((p) => p.forward)), 2),
      backward: round(median(phases.map((p) => p.backward)), 2),
      optimizer: round(median(phases.map((p) => p.optimizer)), 2),
    },
    generateTokensPerSec: round((B * newTokens) / (bestMs / 1000), 1),
    generateMs: round(bestMs, 2),
    trainPeakRssMB,
    finalLoss: round(finalLoss, 4),
    ...(profile === undefined ? {} : { profile }),
  };
}

/**
 * Decode figures of `sequences` greedy sequences generated in `ms`: every step reads each weight it
 * multiplies by once (all of them but the input embedding, which is only gathered, unless tied to the
 * LM head) and each sequence's KV cache (at its average length over the run).
 */
function decodeFigures(model: LlamaModel, preset: BenchPreset, sequences: number, ms: number): DecodeFigures {
  const { vocab: V, hidden: C, layers, kvHeads, heads, seqLen: T } = preset;
  const headDim = C / heads;
  const weights = model.numParams - (preset.tied === true ? 0 : V * C);
  const averageLength = (BENCH_PROMPT_TOKENS + T) / 2;
  const kvPerSequence = layers * 2 * kvHeads * headDim * averageLength;
  const bytesPerStep = 4 * (weights + sequences * kvPerSequence);
  const steps = T - BENCH_PROMPT_TOKENS;
  const stepsPerSec = steps / (ms / 1000);
  return {
    sequences,
    tokensPerSec: round(sequences * stepsPerSec, 1),
    bytesPerStep,
    impliedGBPerSec: round((bytesPerStep * stepsPerSec) / 1e9, 2),
  };
}

/**
 * The machine's memory bandwidth as one thread's large copy sees it: GB/s of bytes read plus bytes
 * written by TypedArray.set over 256 MiB (far beyond any cache), best of `runs`. The bound a decode
 * step that streams every weight can approach.
 */
export function measureCopyBandwidth(runs = 5, bytes = 256 * 1024 * 1024): number {
  const src = new Float32Array(bytes / 4);
  const dst = new Float32Array(bytes / 4);
  for (let i = 0; i < src.length; i += 1024) src[i] = i;
  dst.set(src);
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    dst.set(src);
    best = Math.min(best, performance.now() - t0);
  }
  return round((2 * bytes) / (best / 1000) / 1e9, 2);
}
