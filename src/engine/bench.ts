/**
 * The engine benchmark, measured the way bench/torch_peer.py measures PyTorch on the same presets:
 * training tokens/s (forward + backward + AdamW, next-token loss on every token of random ids, median
 * step after warm-up) and generation tokens/s (batch B, a 16-token random prompt, greedy decoding with
 * the KV cache up to the preset's sequence length, best of a few runs, prefill included).
 */
import { Rng } from "../util/rng.js";
import { type LlamaConfig, LlamaConfigSchema } from "./config.js";
import type { Kernels } from "./kernels/types.js";
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
}

/** The presets of the engine issue (untied, rope_theta 10000, eps 1e-5), same as bench/torch_peer.py. */
export const BENCH_PRESETS = {
  S: { vocab: 512, hidden: 128, intermediate: 512, layers: 4, heads: 4, kvHeads: 4, seqLen: 64, batch: 8 },
  M: { vocab: 2048, hidden: 256, intermediate: 1024, layers: 4, heads: 4, kvHeads: 4, seqLen: 128, batch: 8 },
  L: { vocab: 4096, hidden: 512, intermediate: 2048, layers: 6, heads: 8, kvHeads: 8, seqLen: 128, batch: 8 },
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
    tie_word_embeddings: false,
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
  /** The final training loss (about ln(vocab) on random ids: a check that the step computed something). */
  finalLoss: number;
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
  const model = new LlamaModel(benchConfig(preset), kernels);
  model.initRandom(rng.fork("weights"));
  const optimizer = new AdamW(model.numParams, {
    weightDecay: 0.1,
    decayMask: decayMaskFromSpecs(model.specs),
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
  let finalLoss = Number.NaN;
  for (let i = 0; i < warmup + steps; i++) {
    const t0 = performance.now();
    model.zeroGrad();
    const { seqLogprobs } = model.forward(trainBatch);
    const t1 = performance.now();
    model.backward(dTokenLogprobs);
    const t2 = performance.now();
    optimizer.step(model.params, model.grads, 1e-4);
    const t3 = performance.now();
    let sum = 0;
    for (let b = 0; b < B; b++) sum += seqLogprobs[b];
    finalLoss = -sum / scored;
    if (i >= warmup) {
      stepMs.push(t3 - t0);
      phases.push({ forward: t1 - t0, backward: t2 - t1, optimizer: t3 - t2 });
    }
  }

  const prompts: number[][] = [];
  const promptRng = rng.fork("prompts");
  for (let b = 0; b < B; b++)
    prompts.push(Array.from({ length: BENCH_PROMPT_TOKENS }, () => promptRng.int(V)));
  const newTokens = T - BENCH_PROMPT_TOKENS;
  let bestMs = Number.POSITIVE_INFINITY;
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    const out = generateTokens(model, prompts, {
      maxNewTokens: newTokens,
      temperature: 0,
      seeds: prompts.map((_, b) => b),
      maxBatch: B,
    });
    const ms = performance.now() - t0;
    for (const o of out)
      if (o.ids.length !== newTokens)
        throw new Error(`generated ${o.ids.length} tokens, expected ${newTokens}`);
    bestMs = Math.min(bestMs, ms);
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
    finalLoss: round(finalLoss, 4),
  };
}
