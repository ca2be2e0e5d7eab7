/**
 * The compiled element-wise loops beyond SwiGLU (attention's softmax and its backward, RMSNorm, the
 * next-token softmax, head split/merge with RoPE, AdamW): each against the plain TypeScript loops of
 * layers.ts / optim.ts, and the same bytes whether the main thread runs every chunk alone or worker
 * threads share them (chunks are cut by shape, partial sums combined in a fixed order).
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { type Kernels, kernelsModule, WasmKernels } from "../src/engine/kernels/index.js";
import {
  attentionBackward,
  attentionForward,
  mergeHeads,
  RopeTable,
  rmsnormBackward,
  rmsnormForward,
  splitHeads,
  tokenLogprobsBackward,
  tokenLogprobsForward,
} from "../src/engine/layers.js";
import { AdamW } from "../src/engine/optim.js";
import { Rng } from "../src/util/rng.js";

const one = new WasmKernels(kernelsModule(), { threads: 1 });
// Workers only: every chunk of a parallel job runs off the main thread, in whatever order they claim.
const workers = new WasmKernels(kernelsModule(), { threads: 3, mainThreadWorks: false });
after(() => {
  one.dispose();
  workers.dispose();
});
workers.waitForWorkers();

/** A buffer of `kernels` holding normal(0, std) values drawn from a fresh Rng(seed). */
function randn(kernels: Kernels, seed: number, n: number, std = 1): Float32Array {
  const rng = new Rng(seed);
  const out = kernels.alloc(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal() * std;
  return out;
}

/** max |a - b| / (max |b| + floor). */
function scaledError(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-6): number {
  let diff = 0;
  let scale = floor;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

/** Bytes of a float array, for bit-for-bit comparisons. */
function bytes(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

// Shapes big enough that every job goes parallel (64K floats of work or more: wasm.ts
// ELEMENTWISE_PARALLEL_MIN) and has ragged tails (odd lengths, an odd RoPE half).
const B = 3;
const T = 140;
const H = 6;
const KVH = 3;
const D = 34;
const lengths = Int32Array.from([140, 97, 1]);

/** attention forward + backward on `kernels`: [out, probs, dq, dk, dv]. */
function attention(kernels: Kernels, window: number): Float32Array[] {
  const q = randn(kernels, 1, B * H * T * D);
  const k = randn(kernels, 2, B * KVH * T * D);
  const v = randn(kernels, 3, B * KVH * T * D);
  const out = kernels.alloc(B * H * T * D);
  const probs = kernels.alloc(B * H * T * T);
  attentionForward(kernels, out, probs, q, k, v, B, T, H, KVH, D, lengths, window);
  const dout = randn(kernels, 4, B * H * T * D);
  const dq = kernels.alloc(B * H * T * D);
  const dk = kernels.alloc(B * KVH * T * D);
  const dv = kernels.alloc(B * KVH * T * D);
  const scratch = kernels.alloc(B * H * T * T);
  attentionBackward(kernels, dq, dk, dv, scratch, dout, q, k, v, probs, B, T, H, KVH, D, lengths);
  return [out, probs, dq, dk, dv];
}

test("attention's compiled softmax and its backward agree with the plain loops, the same bytes on workers", () => {
  for (const window of [0, 7]) {
    const plain = attention(plainView(one), window);
    const fast = attention(one, window);
    const shared = attention(workers, window);
    for (let i = 0; i < plain.length; i++) {
      assert.ok(scaledError(fast[i], plain[i]) < 2e-5, `tensor ${i}, window ${window}`);
      assert.ok(bytes(shared[i]).equals(bytes(fast[i])), `tensor ${i} differs on workers`);
    }
  }
});

test("RMSNorm forward and backward agree with the plain loops; dw the same bytes on workers", () => {
  const N = 301;
  const C = 257;
  const run = (kernels: Kernels, compiled: boolean): Float32Array[] => {
    const x = randn(kernels, 5, N * C, 3);
    const w = randn(kernels, 6, C);
    const out = kernels.alloc(N * C);
    const rstd = kernels.alloc(N);
    rmsnormForward(out, rstd, x, w, N, C, 1e-5, compiled ? kernels : undefined);
    const dout = randn(kernels, 7, N * C);
    const dx = randn(kernels, 8, N * C); // accumulated into
    const dw = randn(kernels, 9, C);
    rmsnormBackward(dx, dw, dout, x, w, rstd, N, C, compiled ? kernels : undefined);
    return [out, rstd, dx, dw];
  };
  const plain = run(one, false);
  const fast = run(one, true);
  const shared = run(workers, true);
  for (let i = 0; i < plain.length; i++) {
    assert.ok(scaledError(fast[i], plain[i]) < 2e-5, `tensor ${i}: ${scaledError(fast[i], plain[i])}`);
    assert.ok(bytes(shared[i]).equals(bytes(fast[i])), `tensor ${i} differs on workers`);
  }
});

test("next-token log-probs and their backward agree with the plain loops, the same bytes on workers", () => {
  const V = 1031;
  const lens = Int32Array.from([140, 60, 0]);
  const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7919) % V);
  const run = (kernels: Kernels, compiled: boolean): Float32Array[] => {
    const logits = randn(kernels, 10, B * T * V, 4);
    logits[5] = 95; // a dominant logit: the max subtraction must keep it finite
    const probs = kernels.alloc(B * T * V);
    const lp = new Float32Array(B * T);
    tokenLogprobsForward(lp, probs, logits, ids, lens, B, T, V, compiled ? kernels : undefined);
    const g = Float32Array.from({ length: B * T }, (_, i) => (i % 5 === 0 ? 0 : 0.1 * ((i % 7) - 3)));
    const dlogits = kernels.alloc(B * T * V).fill(Number.NaN); // overwritten everywhere
    tokenLogprobsBackward(dlogits, g, probs, ids, lens, B, T, V, compiled ? kernels : undefined);
    return [lp, probs, dlogits];
  };
  const plain = run(one, false);
  const fast = run(one, true);
  const shared = run(workers, true);
  assert.ok(scaledError(fast[0], plain[0]) < 1e-6, `log-probs: ${scaledError(fast[0], plain[0])}`);
  // probs rows that predict nothing are left as they were (zero here) by both.
  assert.ok(scaledError(fast[1], plain[1]) < 2e-6, `probs: ${scaledError(fast[1], plain[1])}`);
  assert.ok(scaledError(fast[2], plain[2]) < 2e-6, `dlogits: ${scaledError(fast[2], plain[2])}`);
  for (let i = 0; i < plain.length; i++) assert.ok(bytes(shared[i]).equals(bytes(fast[i])), `tensor ${i}`);
});

test("head split and merge with RoPE give the plain loops' bytes exactly", () => {
  const rope = new RopeTable(D, 10000);
  rope.ensure(T);
  const stride = 3 * H * D + 5;
  for (const table of [null, rope]) {
    const run = (kernels: Kernels, compiled: boolean): Float32Array[] => {
      const src = randn(kernels, 11, B * T * stride);
      const heads = kernels.alloc(B * H * T * D);
      splitHeads(heads, src, stride, D + 1, B, T, H, D, table, compiled ? kernels : undefined);
      const back = randn(kernels, 12, B * T * stride);
      mergeHeads(back, stride, 2, heads, B, T, H, D, table, compiled ? kernels : undefined);
      return [heads, back];
    };
    const plain = run(one, false);
    const fast = run(one, true);
    const shared = run(workers, true);
    for (let i = 0; i < plain.length; i++) {
      assert.ok(bytes(fast[i]).equals(bytes(plain[i])), `tensor ${i}, rope ${table !== null}`);
      assert.ok(bytes(shared[i]).equals(bytes(plain[i])), `tensor ${i} on workers`);
    }
  }
});

test("AdamW on the kernels gives the TypeScript loop's bytes, state included, on workers too", () => {
  const size = 150_001;
  const mask = Uint8Array.from({ length: size }, (_, i) => (i % 3 === 0 ? 0 : 1));
  const run = (kernels: Kernels | undefined): Float32Array[] => {
    const host = kernels ?? one;
    const params = randn(host, 13, size);
    const opt = new AdamW(size, { weightDecay: 0.1, decayMask: mask, ...(kernels ? { kernels } : {}) });
    for (let s = 0; s < 3; s++) opt.step(params, randn(host, 20 + s, size, 0.01 * (s + 1)), 1e-3);
    const state = opt.exportState();
    return [params, state.m, state.v];
  };
  const plain = run(undefined);
  const fast = run(one);
  const shared = run(workers);
  for (let i = 0; i < plain.length; i++) {
    assert.ok(bytes(fast[i]).equals(bytes(plain[i])), `tensor ${i}`);
    assert.ok(bytes(shared[i]).equals(bytes(plain[i])), `tensor ${i} on workers`);
  }
  // Resuming: state saved by a TypeScript-loop optimiser, imported into one on the kernels.
  const params = randn(workers, 13, size);
  const first = new AdamW(size, { weightDecay: 0.1, decayMask: mask });
  for (let s = 0; s < 2; s++) first.step(params, randn(workers, 20 + s, size, 0.01 * (s + 1)), 1e-3);
  const resumed = new AdamW(size, { weightDecay: 0.1, decayMask: mask, kernels: workers });
  resumed.importState(first.exportState());
  resumed.step(params, randn(workers, 22, size, 0.03), 1e-3);
  const state = resumed.exportState();
  assert.ok(bytes(params).equals(bytes(plain[0])), "params after resuming");
  assert.ok(bytes(state.m).equals(bytes(plain[1])) && bytes(state.v).equals(bytes(plain[2])), "moments");
});

/** The same kernels without their element-wise loops: the layers then take the plain TypeScript paths. */
function plainView(kernels: Kernels): Kernels {
  return new Proxy(kernels, {
    get(target, key, receiver) {
      if (key === "elementwise") return undefined;
      const value = Reflect.get(target, key, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
