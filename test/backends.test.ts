/**
 * Every fast backend present (WASM always, the platform BLAS when found) against the plain reference
 * kernels, at the layer and the model level: attention (batched products) and the whole model's
 * forward and backward agree with the plain kernels within fp32 tolerance, and their gradients match
 * finite differences computed on that backend itself. The kernel-level checks are in kernels.test.ts;
 * the numpy reference runs per backend in reference.test.ts.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type LlamaConfig, LlamaConfigSchema } from "../src/engine/config.js";
import { createKernels, type Kernels, MEMORY_ENV, PlainKernels } from "../src/engine/kernels/index.js";
import { attentionBackward, attentionForward } from "../src/engine/layers.js";
import { LlamaModel, type TokenBatch } from "../src/engine/model.js";
import { Rng } from "../src/util/rng.js";
import { FAST_BACKENDS, HEAP_BLAS, kernelsOf } from "./helpers/backends.js";
import { fails, ok } from "./helpers/cli.js";

const plain = new PlainKernels();
const opened: Kernels[] = [];
after(() => {
  for (const kernels of opened) kernels.dispose();
});

function open(backend: (typeof FAST_BACKENDS)[number], threads: number): Kernels {
  const kernels = kernelsOf(backend, threads);
  opened.push(kernels);
  return kernels;
}

/** A buffer of `kernels` holding normal(0, std) values drawn from `rng`. */
function randn(kernels: Kernels, rng: Rng, n: number, std = 1): Float32Array {
  const out = kernels.alloc(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal() * std;
  return out;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** max |a - b| / (max |b| + floor): the error relative to the tensor's scale. */
function scaledError(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-6): number {
  let diff = 0;
  let scale = floor;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

function config(overrides: Record<string, unknown> = {}): LlamaConfig {
  // Big enough that the WASM kernels take their packed and their small-row paths and BLAS its blocking.
  return LlamaConfigSchema.parse({
    vocab_size: 97,
    hidden_size: 48,
    intermediate_size: 80,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 12,
    rope_theta: 1000,
    ...overrides,
  });
}

function randomModel(cfg: LlamaConfig, kernels: Kernels, seed: number): LlamaModel {
  const model = new LlamaModel(cfg, kernels);
  const rng = new Rng(seed);
  model.initRandom(rng, 0.3);
  for (const spec of model.specs)
    if (spec.shape.length === 1) {
      const w = model.tensor(spec.name);
      for (let i = 0; i < w.length; i++) w[i] = 1 + 0.3 * rng.normal();
    }
  return model;
}

/** Rows of different lengths (one padded to T), loss on most positions. */
function batchOf(rng: Rng, vocab: number, lengths: number[], T: number): TokenBatch {
  const B = lengths.length;
  const ids = new Int32Array(B * T);
  const lossMask = new Uint8Array(B * T);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      ids[b * T + t] = t < lengths[b] ? rng.int(vocab) : 0;
      lossMask[b * T + t] = t >= 1 && t < lengths[b] && (t + b) % 5 !== 2 ? 1 : 0;
    }
  return { ids, batch: B, seqLen: T, lengths: Int32Array.from(lengths), lossMask };
}

for (const backend of [...FAST_BACKENDS, HEAP_BLAS]) {
  test(`${backend.label ?? backend.name}: causal GQA attention forward and backward agree with the plain kernels`, {
    skip: backend.skip,
  }, () => {
    const kernels = open(backend, 2);
    const [B, T, H, KVH, D] = [3, 37, 4, 2, 16];
    const lengths = Int32Array.from([37, 20, 1]);
    const sides = [plain, kernels].map((k) => {
      const rng = new Rng(5);
      const q = randn(k, rng, B * H * T * D);
      const kk = randn(k, rng, B * KVH * T * D);
      const v = randn(k, rng, B * KVH * T * D);
      const dout = randn(k, rng, B * H * T * D);
      const out = k.alloc(B * H * T * D);
      const probs = k.alloc(B * H * T * T);
      attentionForward(k, out, probs, q, kk, v, B, T, H, KVH, D, lengths);
      const dq = k.alloc(q.length);
      const dk = k.alloc(kk.length).fill(9);
      const dv = k.alloc(v.length).fill(9);
      const dscores = k.alloc(T * T);
      attentionBackward(k, dq, dk, dv, dscores, dout, q, kk, v, probs, B, T, H, KVH, D, lengths);
      return { out, probs, dq, dk, dv };
    });
    const [ref, fast] = sides;
    for (const key of ["out", "probs", "dq", "dk", "dv"] as const) {
      const error = scaledError(fast[key], ref[key]);
      assert.ok(error < 2e-5, `${key}: error ${error} relative to the tensor's scale`);
    }
  });

  test(`${backend.label ?? backend.name}: the whole model's log-probs and gradients agree with the plain kernels`, {
    skip: backend.skip,
  }, () => {
    const kernels = open(backend, 2);
    const cfg = config();
    const rng = new Rng(31);
    const batch = batchOf(rng, cfg.vocab_size, [40, 23, 7, 40], 40);
    const dTok = Array.from({ length: batch.batch * batch.seqLen }, () => rng.normal());
    const run = (k: Kernels) => {
      const model = randomModel(cfg, k, 3);
      model.zeroGrad();
      const { tokenLogprobs } = model.forward(batch);
      model.backward(dTok);
      return { model, tokenLogprobs: Float32Array.from(tokenLogprobs) };
    };
    const ref = run(plain);
    const fast = run(kernels);
    const lp = scaledError(fast.tokenLogprobs, ref.tokenLogprobs);
    assert.ok(lp < 1e-5, `token log-probs: error ${lp}`);
    for (const spec of ref.model.specs) {
      const error = scaledError(fast.model.gradTensor(spec.name), ref.model.gradTensor(spec.name));
      assert.ok(error < 1e-4, `${spec.name} gradient: error ${error} relative to its scale`);
    }
  });

  test(`${backend.label ?? backend.name}: whole-model gradients match finite differences on this backend`, {
    skip: backend.skip,
  }, () => {
    const kernels = open(backend, 1);
    const cfg = config({ hidden_size: 16, intermediate_size: 24, head_dim: 4, vocab_size: 23 });
    const rng = new Rng(41);
    const model = randomModel(cfg, kernels, 4);
    const batch = batchOf(rng, cfg.vocab_size, [9, 5, 9], 9);
    const c = Array.from({ length: batch.batch * batch.seqLen }, () => rng.normal());
    const loss = (): number => dot(model.forward(batch).tokenLogprobs, c);
    model.zeroGrad();
    loss();
    model.backward(c);
    const eps = 3e-3;
    for (const spec of model.specs) {
      const offset = model.offsetOf(spec.name);
      const grad = model.gradTensor(spec.name);
      // The largest gradient entry and a few random ones.
      let best = 0;
      for (let i = 1; i < grad.length; i++) if (Math.abs(grad[i]) > Math.abs(grad[best])) best = i;
      const coords = new Set([best, rng.int(grad.length), rng.int(grad.length), rng.int(grad.length)]);
      for (const i of coords) {
        const at = offset + i;
        const orig = model.params[at];
        model.params[at] = orig + eps;
        const up = model.params[at];
        const fUp = loss();
        model.params[at] = orig - eps;
        const down = model.params[at];
        const fDown = loss();
        model.params[at] = orig;
        const fd = (fUp - fDown) / (up - down);
        const an = grad[i];
        const bound = 5e-4 + 2e-2 * Math.max(Math.abs(fd), Math.abs(an));
        assert.ok(Math.abs(fd - an) <= bound, `${spec.name}[${i}]: finite difference ${fd}, analytic ${an}`);
      }
    }
  });
}

test("model info says what --backend auto computes on; --backend names a backend or exits 2", () => {
  const base = fileURLToPath(new URL("../../assets/world-base", import.meta.url));
  const info = JSON.parse(ok("model", "info", "--model", base));
  const blas = FAST_BACKENDS.find((b) => b.name === "blas");
  assert.equal(info.kernels.backend, blas?.skip === false ? "blas" : "wasm");
  assert.equal(typeof info.kernels.description, "string");
  fails(
    ["--backend", "auto, blas, wasm, plain", "'gpu'"],
    "logprobs",
    "--model",
    base,
    "--ids",
    base,
    "--backend",
    "gpu",
  );
});

test("SELFSTEER_MEMORY picks where buffers live; the wasm backend cannot run on the heap; bad values are refused", {
  skip: HEAP_BLAS.skip,
}, () => {
  const heap = createKernels({ backend: "blas", threads: 1, memory: "heap" });
  opened.push(heap);
  assert.equal(heap.backend, "blas");
  assert.equal(heap.elementwise, undefined);
  assert.match(heap.note ?? "", /JS heap/);
  assert.ok(!(heap.alloc(4).buffer instanceof SharedArrayBuffer));
  assert.throws(
    () => createKernels({ backend: "wasm", memory: "heap" }),
    /SELFSTEER_MEMORY=heap.*blas or plain/,
  );
  const saved = process.env[MEMORY_ENV];
  try {
    process.env[MEMORY_ENV] = "heap";
    const fromEnv = createKernels({ backend: "blas", threads: 1 });
    opened.push(fromEnv);
    assert.equal(fromEnv.elementwise, undefined);
    process.env[MEMORY_ENV] = "disk";
    assert.throws(
      () => createKernels({ backend: "blas", threads: 1 }),
      /SELFSTEER_MEMORY must be "wasm" or "heap", got "disk"/,
    );
  } finally {
    if (saved === undefined) delete process.env[MEMORY_ENV];
    else process.env[MEMORY_ENV] = saved;
  }
});
