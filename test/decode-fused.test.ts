// The fused decode attention (ElementwiseKernels.cachedAttention) on each fast backend: KV-cache logits
// against a full forward of the plain TypeScript model with the same weights, for head sizes that take
// each of the kernel's code paths, GQA and a sliding window; the kernel against a direct computation;
// and the thread count changes no byte.
import assert from "node:assert/strict";
import { test } from "node:test";
import { type LlamaConfig, LlamaConfigSchema } from "../src/engine/config.js";
import { createKvCache } from "../src/engine/decode.js";
import { createKernels, type Kernels, PlainKernels } from "../src/engine/kernels/index.js";
import { LlamaModel } from "../src/engine/model.js";
import { generateTokens } from "../src/engine/sampler.js";
import { Rng } from "../src/util/rng.js";
import { FAST_BACKENDS, HEAP_BLAS, kernelsOf } from "./helpers/backends.js";
import { singleBatch } from "./helpers/batches.js";

const V = 41;

function config(overrides: Record<string, unknown>): LlamaConfig {
  return LlamaConfigSchema.parse({
    vocab_size: V,
    hidden_size: 24,
    intermediate_size: 40,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    rope_theta: 500,
    ...overrides,
  });
}

/** A random model on `kernels` and the same weights on the plain kernels. */
function twins(cfg: LlamaConfig, kernels: Kernels, seed: number): { fast: LlamaModel; plain: LlamaModel } {
  const plain = new LlamaModel(cfg, new PlainKernels());
  plain.initRandom(new Rng(seed), 0.3);
  const fast = new LlamaModel(cfg, kernels);
  fast.loadTensors(plain.namedTensors());
  return { fast, plain };
}

function prompt(rng: Rng, len: number): number[] {
  return Array.from({ length: len }, () => rng.int(V));
}

const SHAPES = [
  ["head_dim 16 (16-float groups), GQA 2:1", {}],
  [
    "head_dim 12 (4-float groups), sliding window 5",
    { head_dim: 12, model_type: "mistral", sliding_window: 5 },
  ],
  ["head_dim 6 (scalar tail), multi-head", { head_dim: 6, num_key_value_heads: 4 }],
] as const;

for (const backend of [...FAST_BACKENDS, HEAP_BLAS]) {
  for (const [shape, overrides] of SHAPES) {
    test(`${backend.label ?? backend.name}: fused KV-cache decoding equals a plain full forward, ${shape}`, {
      skip: backend.skip,
    }, () => {
      for (const threads of [1, 2]) {
        const kernels = kernelsOf(backend, threads);
        try {
          // on the JS heap there are no compiled loops: decoding takes the per-head products instead
          if (backend.memory !== "heap")
            assert.ok(kernels.elementwise !== undefined, "build/kernels.wasm lacks the element-wise loops");
          else assert.equal(kernels.elementwise, undefined);
          const { fast, plain } = twins(config(overrides), kernels, 3);
          const rng = new Rng(4);
          const prompts = [prompt(rng, 9), prompt(rng, 1), prompt(rng, 4)];
          const seqs = prompts.map((p) => p.slice());
          const cache = createKvCache(fast, prompts.length, 24);
          let logits = cache.prefill(prompts).slice();
          let worst = 0;
          for (let step = 0; step < 8; step++) {
            seqs.forEach((seq, row) => {
              const full = plain.forwardLogits(singleBatch(seq));
              const last = full.subarray((seq.length - 1) * V);
              for (let j = 0; j < V; j++) worst = Math.max(worst, Math.abs(logits[row * V + j] - last[j]));
            });
            const tokens = seqs.map((_, slot) => (slot * 5 + step * 3 + 1) % V);
            for (const [slot, t] of tokens.entries()) seqs[slot].push(t);
            logits = cache.decodeStep(Int32Array.from([0, 1, 2]), Int32Array.from(tokens)).slice();
          }
          assert.ok(worst < 5e-5, `${threads} threads: max |cached - recomputed| logit = ${worst}`);
        } finally {
          kernels.dispose();
        }
      }
    });
  }
}

test("wasm: generation is the same bytes at 1 and 2 threads, the fused attention split over the pool", () => {
  const one = createKernels({ backend: "wasm", threads: 1 });
  const two = createKernels({ backend: "wasm", threads: 2 });
  try {
    const cfg = config({ num_attention_heads: 8, num_key_value_heads: 4, head_dim: 64, hidden_size: 32 });
    const a = twins(cfg, one, 8).fast;
    const b = twins(cfg, two, 8).fast;
    assert.ok(two.waitForWorkers());
    const rng = new Rng(9);
    // 16 rows x 4 kv heads x ~270 keys: past the size where the fused job is split over the pool
    const prompts = Array.from({ length: 16 }, (_, i) => prompt(rng, 262 + i));
    const options = { maxNewTokens: 4, temperature: 1, seeds: prompts.map((_, i) => i) };
    const x = generateTokens(a, prompts, options);
    const before = two.poolStatistics?.()?.parallelCalls ?? 0;
    assert.deepEqual(generateTokens(b, prompts, options), x);
    assert.ok((two.poolStatistics?.()?.parallelCalls ?? 0) > before, "the pool took no job");
  } finally {
    one.dispose();
    two.dispose();
  }
});

test("wasm: cachedAttention equals scores, softmax and weighted values computed directly; bad offsets throw", () => {
  const kernels = createKernels({ backend: "wasm", threads: 1 });
  try {
    const fused = kernels.elementwise;
    assert.ok(fused !== undefined);
    const rng = new Rng(12);
    const rep = 3;
    const D = 20;
    const maxLen = 11;
    const fill = (n: number): Float32Array => {
      const out = kernels.alloc(n);
      for (let i = 0; i < n; i++) out[i] = rng.normal();
      return out;
    };
    const q = fill(2 * rep * D);
    const keys = fill(2 * maxLen * D);
    const values = fill(2 * maxLen * D);
    const out = kernels.alloc(2 * rep * D).fill(9); // overwritten
    const scores = kernels.alloc(2 * rep * maxLen);
    // item 0: all 7 keys of cache 0; item 1: keys [3, 11) of cache 1 (a window)
    const items = Int32Array.from([0, 0, 0, 0, 0, 7, rep * D, rep * D, maxLen * D, rep * 7, 3, 11]);
    const scale = 1 / Math.sqrt(D);
    fused.cachedAttention({ q, out, keys, values, scores, items, count: 2, rep, headDim: D, scale });
    let worst = 0;
    for (let item = 0; item < 2; item++) {
      const [qAt, outAt, kvAt, , from, len] = items.subarray(6 * item, 6 * item + 6);
      for (let r = 0; r < rep; r++) {
        const s: number[] = [];
        for (let j = from; j < len; j++) {
          let dot = 0;
          for (let c = 0; c < D; c++) dot += q[qAt + r * D + c] * keys[kvAt + j * D + c];
          s.push(dot * scale);
        }
        const max = Math.max(...s);
        const e = s.map((x) => Math.exp(x - max));
        const total = e.reduce((x, y) => x + y, 0);
        for (let c = 0; c < D; c++) {
          let want = 0;
          for (let j = from; j < len; j++) want += (e[j - from] / total) * values[kvAt + j * D + c];
          worst = Math.max(worst, Math.abs(out[outAt + r * D + c] - want));
        }
      }
    }
    assert.ok(worst < 1e-5, `max |fused - direct| = ${worst}`);
    const job = { q, out, keys, values, scores, rep, headDim: D, scale, count: 1 };
    assert.throws(
      () => fused.cachedAttention({ ...job, items: Int32Array.from([0, 0, maxLen * D, 0, 0, maxLen + 1]) }),
      /exceed the cache/,
    );
    assert.throws(
      () => fused.cachedAttention({ ...job, items: Int32Array.from([0, 0, 0, 0, 5, 5]) }),
      /empty/,
    );
    assert.throws(
      () => fused.cachedAttention({ ...job, items: Int32Array.from([0, 0, 0, 0, 0, 3]), out: q }),
      /overlap/,
    );
  } finally {
    kernels.dispose();
  }
});
