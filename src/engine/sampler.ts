/**
 * Batched sampling with a KV cache. Prompts of different lengths are prefilled together, then every
 * step decodes one token for each unfinished request as one M = batch pass through the model.
 * Each request draws from its own Rng(seed), one uniform per sampled token, and the model computes
 * each row independently, so a request's output depends on its prompt, settings and seed only, not on
 * what else is in the batch.
 */
import { Rng } from "../util/rng.js";
import { createKvCache } from "./decode.js";
import { logSumExp } from "./layers.js";
import type { LlamaModel } from "./model.js";

/** Token filtering for one request. */
export interface SamplingSettings {
  /** Softmax temperature; 0 (or below) means greedy argmax. */
  temperature: number;
  /** Nucleus sampling: keep the most likely tokens up to this cumulative probability (1 = off). */
  topP: number;
  /** Keep only the k most likely tokens (0 = off). */
  topK: number;
}

/** A setting shared by all requests or given per request. */
export type PerRequest<T> = T | readonly T[];

/** Options of `generateTokens`. */
export interface GenerateOptions {
  maxNewTokens: PerRequest<number>;
  /** Default 1. */
  temperature?: PerRequest<number>;
  /** Default 1 (off). */
  topP?: PerRequest<number>;
  /** Default 0 (off). */
  topK?: PerRequest<number>;
  /** Token ids that end a request (e.g. <|im_end|>, EOS); the stop token is included in the output. */
  stopIds?: readonly number[];
  /** One seed per request: the same seed, prompt and settings give the same tokens. */
  seeds: readonly number[];
  /** Requests decoded together at most (bounds KV-cache memory); default 64. */
  maxBatch?: number;
  /** Called for every sampled token (streaming). */
  onToken?: (request: number, id: number, logprob: number) => void;
}

/** One request's output. */
export interface SampledSequence {
  /** Sampled ids, ending with the stop id when finishReason is "stop". */
  ids: number[];
  /** log p(id) under the model's unmodified softmax (temperature 1, no filtering), per sampled id. */
  logprobs: number[];
  finishReason: "stop" | "length";
}

/** Reusable scratch for sampling over a vocabulary. */
export class SamplerScratch {
  readonly probs: Float64Array;
  readonly order: Int32Array;

  /** Scratch for a vocabulary of `vocab` tokens. */
  constructor(readonly vocab: number) {
    this.probs = new Float64Array(vocab);
    this.order = new Int32Array(vocab);
  }
}

/** True when token a ranks above token b: higher logit, ties broken towards the lower id. */
function ranksAbove(logits: Float32Array, offset: number, a: number, b: number): boolean {
  const la = logits[offset + a];
  const lb = logits[offset + b];
  return la > lb || (la === lb && a < b);
}

/** Index of the largest logit (the lowest id among ties). */
export function argmax(logits: Float32Array, offset: number, vocab: number): number {
  let best = 0;
  for (let j = 1; j < vocab; j++) if (logits[offset + j] > logits[offset + best]) best = j;
  return best;
}

/**
 * The k best-ranked token ids, best first, written to order[0..k) (a bounded min-heap: O(V log k)).
 */
function topKIds(logits: Float32Array, offset: number, vocab: number, k: number, order: Int32Array): void {
  // heap[0] is the worst of the k kept so far
  const heap = order;
  let size = 0;
  const worse = (a: number, b: number) => ranksAbove(logits, offset, b, a);
  const siftDown = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < size && worse(heap[l], heap[m])) m = l;
      if (r < size && worse(heap[r], heap[m])) m = r;
      if (m === i) return;
      const t = heap[i];
      heap[i] = heap[m];
      heap[m] = t;
      i = m;
    }
  };
  for (let j = 0; j < vocab; j++) {
    if (size < k) {
      let i = size++;
      heap[i] = j;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (!worse(heap[i], heap[p])) break;
        const t = heap[i];
        heap[i] = heap[p];
        heap[p] = t;
        i = p;
      }
    } else if (ranksAbove(logits, offset, j, heap[0])) {
      heap[0] = j;
      siftDown(0);
    }
  }
  // pop worst-first into the tail, leaving the best first
  for (let end = size - 1; end > 0; end--) {
    const t = heap[0];
    heap[0] = heap[end];
    heap[end] = t;
    size = end;
    siftDown(0);
  }
}

/**
 * Draws a token from one logits row: temperature, then top-k, then top-p (the order HF applies them),
 * then a single uniform draw from `rng`. Greedy (no draw) when temperature <= 0 or topK = 1.
 */
export function sampleFromLogits(
  logits: Float32Array,
  offset: number,
  vocab: number,
  settings: SamplingSettings,
  rng: Rng,
  scratch: SamplerScratch = new SamplerScratch(vocab),
): number {
  const { temperature, topP, topK } = settings;
  if (temperature <= 0 || topK === 1) return argmax(logits, offset, vocab);
  const { probs, order } = scratch;
  const inv = 1 / temperature;
  let count = vocab;
  let sorted = false;
  if (topK > 0 && topK < vocab) {
    topKIds(logits, offset, vocab, topK, order);
    count = topK;
    sorted = true;
  } else for (let j = 0; j < vocab; j++) order[j] = j;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < count; i++) max = Math.max(max, logits[offset + order[i]]);
  let total = 0;
  for (let i = 0; i < count; i++) {
    const p = Math.exp((logits[offset + order[i]] - max) * inv);
    probs[i] = p;
    total += p;
  }
  if (topP < 1) {
    if (!sorted) {
      // Tokens below (1 - topP) / count of the mass hold less than 1 - topP together, so the nucleus
      // lies within the rest: sort only those.
      const floor = ((1 - topP) / count) * total;
      let kept = 0;
      for (let i = 0; i < count; i++)
        if (probs[i] >= floor) {
          order[kept] = order[i];
          probs[kept] = probs[i];
          kept++;
        }
      const ids = Array.from(order.subarray(0, kept));
      ids.sort((a, b) => (ranksAbove(logits, offset, a, b) ? -1 : ranksAbove(logits, offset, b, a) ? 1 : 0));
      count = kept;
      for (let i = 0; i < count; i++) {
        order[i] = ids[i];
        probs[i] = Math.exp((logits[offset + ids[i]] - max) * inv);
      }
    }
    const target = topP * total;
    let cum = 0;
    let n = 0;
    while (n < count) {
      cum += probs[n++];
      if (cum >= target) break;
    }
    count = n;
    total = cum;
  }
  let u = rng.next() * total;
  for (let i = 0; i < count; i++) {
    u -= probs[i];
    if (u < 0) return order[i];
  }
  return order[count - 1];
}

function perRequest<T>(value: PerRequest<T> | undefined, fallback: T, i: number, n: number, name: string): T {
  if (value === undefined) return fallback;
  if (!Array.isArray(value)) return value as T;
  const list = value as readonly T[];
  if (list.length !== n) throw new Error(`${name} has ${list.length} entries for ${n} prompts`);
  return list[i];
}

/** One request's resolved settings. */
interface Request {
  index: number;
  prompt: readonly number[];
  maxNew: number;
  settings: SamplingSettings;
  rng: Rng;
}

/**
 * Samples a continuation of every prompt (token ids) with a KV cache, batching up to maxBatch
 * requests per pass. Returns, per prompt, the sampled ids, their log-probs and why it stopped.
 */
export function generateTokens(
  model: LlamaModel,
  prompts: readonly (readonly number[])[],
  options: GenerateOptions,
): SampledSequence[] {
  const n = prompts.length;
  if (options.seeds.length !== n)
    throw new Error(`seeds has ${options.seeds.length} entries for ${n} prompts`);
  const V = model.dims.vocab;
  const requests: Request[] = prompts.map((prompt, i) => {
    const maxNew = perRequest(options.maxNewTokens, 0, i, n, "maxNewTokens");
    const settings: SamplingSettings = {
      temperature: perRequest(options.temperature, 1, i, n, "temperature"),
      topP: perRequest(options.topP, 1, i, n, "topP"),
      topK: perRequest(options.topK, 0, i, n, "topK"),
    };
    if (!Number.isInteger(maxNew) || maxNew < 0)
      throw new Error(`maxNewTokens must be an integer >= 0, got ${maxNew}`);
    if (!(settings.temperature >= 0))
      throw new Error(`temperature must be >= 0, got ${settings.temperature}`);
    if (!(settings.topP > 0 && settings.topP <= 1))
      throw new Error(`topP must be in (0, 1], got ${settings.topP}`);
    if (!Number.isInteger(settings.topK) || settings.topK < 0)
      throw new Error(`topK must be an integer >= 0, got ${settings.topK}`);
    if (prompt.length === 0) throw new Error(`prompt ${i} is empty`);
    return { index: i, prompt, maxNew, settings, rng: new Rng(options.seeds[i]) };
  });
  const results: SampledSequence[] = prompts.map(() => ({ ids: [], logprobs: [], finishReason: "length" }));
  const stop = new Set(options.stopIds ?? []);
  const maxBatch = options.maxBatch ?? 64;
  if (!Number.isInteger(maxBatch) || maxBatch < 1)
    throw new Error(`maxBatch must be a positive integer, got ${maxBatch}`);
  const pendingRequests = requests.filter((r) => r.maxNew > 0);
  const scratch = new SamplerScratch(V);
  for (let startAt = 0; startAt < pendingRequests.length; startAt += maxBatch) {
    const group = pendingRequests.slice(startAt, startAt + maxBatch);
    const maxLen = Math.max(...group.map((r) => r.prompt.length + r.maxNew));
    const cache = createKvCache(model, group.length, maxLen);
    let logits = cache.prefill(group.map((r) => r.prompt));
    let slots = group.map((_, i) => i);
    while (slots.length > 0) {
      const nextSlots: number[] = [];
      const nextTokens: number[] = [];
      slots.forEach((slot, row) => {
        const request = group[slot];
        const result = results[request.index];
        const offset = row * V;
        const id = sampleFromLogits(logits, offset, V, request.settings, request.rng, scratch);
        const logprob = logits[offset + id] - logSumExp(logits, offset, V);
        result.ids.push(id);
        result.logprobs.push(logprob);
        options.onToken?.(request.index, id, logprob);
        if (stop.has(id)) result.finishReason = "stop";
        else if (result.ids.length < request.maxNew) {
          nextSlots.push(slot);
          nextTokens.push(id);
        }
      });
      slots = nextSlots;
      if (slots.length > 0)
        logits = cache.decodeStep(Int32Array.from(nextSlots), Int32Array.from(nextTokens));
    }
  }
  return results;
}
