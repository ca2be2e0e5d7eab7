import assert from "node:assert/strict";
import { test } from "node:test";
import { createKernels } from "../src/engine/kernels/index.js";
import { swigluBackward, swigluForward, swigluRecompute } from "../src/engine/layers.js";
import { Rng } from "../src/util/rng.js";

const kernels = createKernels({ backend: "wasm", threads: 1 });

/** A kernel buffer of normal(0, scale) values. */
function randn(rng: Rng, length: number, scale: number): Float32Array {
  const out = kernels.alloc(length);
  for (let i = 0; i < length; i++) out[i] = rng.normal() * scale;
  return out;
}

/** Largest |a - b| / (|b| + floor) over the entries. */
function maxRelative(a: Float32Array, b: Float32Array, floor: number): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++)
    worst = Math.max(worst, Math.abs(a[i] - b[i]) / (Math.abs(b[i]) + floor));
  return worst;
}

test("WASM SwiGLU equals the plain loops up to fp32 rounding; recompute rebuilds forward bit for bit", () => {
  assert.ok(kernels.elementwise !== undefined, "build/kernels.wasm lacks the SwiGLU loops");
  const rng = new Rng(11);
  for (const [N, I] of [
    [3, 7],
    [4, 64],
  ]) {
    const gu = randn(rng, N * 2 * I, 4);
    // saturated gates: sigmoid underflows to 0 or rounds to 1, exp overflows; NaN must propagate
    gu.set([120, -120, 88.5, -88.5, Number.NaN]);
    const hPlain = kernels.alloc(N * I);
    const sigPlain = kernels.alloc(N * I);
    const h = kernels.alloc(N * I);
    const sig = kernels.alloc(N * I);
    swigluForward(hPlain, sigPlain, gu, N, I);
    swigluForward(h, sig, gu, N, I, kernels);
    assert.ok(Number.isNaN(h[4]) && Number.isNaN(sig[4]));
    const again = kernels.alloc(N * I);
    swigluRecompute(again, gu, sig, N, I, kernels);
    assert.deepEqual(again, h);
    hPlain[4] = sigPlain[4] = h[4] = sig[4] = gu[4] = 0;
    assert.ok(maxRelative(sig, sigPlain, 1e-30) < 1e-6);
    assert.ok(maxRelative(h, hPlain, 1e-6) < 1e-6);
    const dh = randn(rng, N * I, 1);
    const dguPlain = kernels.alloc(N * 2 * I);
    const dgu = kernels.alloc(N * 2 * I).fill(7); // overwritten
    swigluBackward(dguPlain, dh, gu, sig, N, I);
    swigluBackward(dgu, dh, gu, sig, N, I, kernels);
    assert.ok(maxRelative(dgu, dguPlain, 1e-3) < 1e-5);
  }
});

test.after(() => kernels.dispose());
