import assert from "node:assert/strict";
import { test } from "node:test";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { AdamW, clipGradNorm, cosineLr, decayMaskFromSpecs } from "../src/engine/optim.js";
import { llamaParamSpecs, numel } from "../src/engine/params.js";
import { Rng } from "../src/util/rng.js";

function close(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} vs ${expected}`);
}

test("AdamW matches three hand-computed steps (defaults: betas 0.9/0.95, eps 1e-8, wd 0.1)", () => {
  const opt = new AdamW(1);
  const p = new Float32Array([1]);
  // Step 1, g = 0.5: p = 1*(1 - 0.1*0.1) = 0.99; m = 0.05; v = 0.0125; m_hat = 0.5, v_hat = 0.25;
  // p -= 0.1 * 0.5 / (0.5 + 1e-8) -> 0.890000002.
  opt.step(p, new Float32Array([0.5]), 0.1);
  close(p[0], 0.890000002, 1e-7, "step 1");
  // Step 2, g = -1: p = 0.890000002*0.99; m = -0.055; v = 0.061875; bc1 = 0.19, bc2 = 0.0975.
  opt.step(p, new Float32Array([-1]), 0.1);
  const p2 = 0.890000002 * 0.99 + ((0.1 / 0.19) * 0.055) / (Math.sqrt(0.061875 / 0.0975) + 1e-8);
  close(p2, 0.9174373965715928, 1e-9, "hand value of step 2");
  close(p[0], p2, 1e-6, "step 2");
  opt.step(p, new Float32Array([0.25]), 0.1);
  close(p[0], 0.9219853370539607, 1e-6, "step 3");
  assert.equal(opt.stepCount, 3);
});

// A direct transcription of torch.optim.AdamW's update, in float64, for comparison.
function referenceAdamW(
  p0: Float64Array,
  gradsPerStep: Float64Array[],
  lrs: number[],
  o: { b1: number; b2: number; eps: number; wd: number; mask: Uint8Array },
): Float64Array {
  const p = p0.slice();
  const m = new Float64Array(p.length);
  const v = new Float64Array(p.length);
  gradsPerStep.forEach((g, s) => {
    const t = s + 1;
    for (let i = 0; i < p.length; i++) {
      if (o.mask[i]) p[i] -= lrs[s] * o.wd * p[i];
      m[i] = o.b1 * m[i] + (1 - o.b1) * g[i];
      v[i] = o.b2 * v[i] + (1 - o.b2) * g[i] * g[i];
      const mHat = m[i] / (1 - o.b1 ** t);
      const vHat = v[i] / (1 - o.b2 ** t);
      p[i] -= (lrs[s] * mHat) / (Math.sqrt(vHat) + o.eps);
    }
  });
  return p;
}

test("AdamW agrees with a straightforward re-implementation over many steps, with a decay mask", () => {
  const rng = new Rng(7);
  const n = 257;
  const mask = new Uint8Array(n).map((_, i) => (i % 3 === 0 ? 0 : 1));
  const o = { b1: 0.8, b2: 0.99, eps: 1e-6, wd: 0.05, mask };
  const p0 = Float64Array.from({ length: n }, () => Math.fround(rng.normal()));
  const grads = Array.from({ length: 20 }, () =>
    Float64Array.from({ length: n }, () => Math.fround(rng.normal() * 0.1)),
  );
  const lrs = grads.map((_, s) => 0.01 * (1 + (s % 4)));
  const expected = referenceAdamW(p0, grads, lrs, o);
  const opt = new AdamW(n, { beta1: o.b1, beta2: o.b2, eps: o.eps, weightDecay: o.wd, decayMask: mask });
  const p = Float32Array.from(p0);
  grads.forEach((g, s) => {
    opt.step(p, Float32Array.from(g), lrs[s]);
  });
  for (let i = 0; i < n; i++) close(p[i], expected[i], 2e-6 * (1 + Math.abs(expected[i])), `param ${i}`);
});

test("weight decay is decoupled and skipped where the mask says so", () => {
  const opt = new AdamW(2, { weightDecay: 0.5, decayMask: new Uint8Array([1, 0]) });
  const p = new Float32Array([2, 2]);
  opt.step(p, new Float32Array([0, 0]), 0.1);
  // Zero gradient: Adam's term is 0/(0+eps) = 0, so only the decay moves the decayed weight.
  assert.equal(p[0], Math.fround(2 * (1 - 0.05)));
  assert.equal(p[1], 2);
});

test("decay mask from specs: matrices decay, RMSNorm weights do not", () => {
  const config = LlamaConfigSchema.parse({
    vocab_size: 11,
    hidden_size: 8,
    intermediate_size: 12,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 1,
  });
  const specs = llamaParamSpecs(config);
  const mask = decayMaskFromSpecs(specs);
  let offset = 0;
  for (const s of specs) {
    const n = numel(s.shape);
    const expected = s.name.endsWith("norm.weight") ? 0 : 1;
    for (let i = offset; i < offset + n; i++) assert.equal(mask[i], expected, s.name);
    offset += n;
  }
  assert.equal(mask.length, offset);
});

test("export/import resumes with bit-identical next steps", () => {
  const rng = new Rng(3);
  const n = 64;
  const grads = Array.from({ length: 6 }, () => Float32Array.from({ length: n }, () => rng.normal()));
  const p = Float32Array.from({ length: n }, () => rng.normal());
  const a = new AdamW(n);
  for (let s = 0; s < 3; s++) a.step(p, grads[s], 1e-3);
  const saved = a.exportState();
  const pResumed = p.slice();
  const b = new AdamW(n);
  b.importState(saved);
  saved.m.fill(123); // the optimiser must hold its own copy
  for (let s = 3; s < 6; s++) {
    a.step(p, grads[s], 1e-3);
    b.step(pResumed, grads[s], 1e-3);
  }
  assert.deepEqual(new Uint32Array(pResumed.buffer), new Uint32Array(p.buffer));
  assert.equal(b.stepCount, 6);
  assert.throws(
    () => b.importState({ step: 1, m: new Float32Array(3), v: new Float32Array(3) }),
    /3\/3 moments/,
  );
});

test("cosine schedule: linear warmup from 0, cosine to the floor, flat past the end", () => {
  const o = { peakLr: 2e-5 };
  assert.equal(cosineLr(0, 100, o), 0);
  close(cosineLr(5, 100, o), 1e-5, 1e-18, "mid-warmup");
  close(cosineLr(10, 100, o), 2e-5, 1e-18, "end of warmup");
  close(cosineLr(55, 100, o), 1e-5, 1e-18, "half-way down");
  close(cosineLr(100, 100, o), 0, 1e-18, "end");
  close(cosineLr(150, 100, o), 0, 1e-18, "past the end");
  const floor = { peakLr: 1, minLrRatio: 0.1 };
  close(cosineLr(100, 100, floor), 0.1, 1e-15, "floor");
  close(cosineLr(55, 100, floor), 0.55, 1e-15, "floor half-way");
  assert.equal(cosineLr(0, 100, { peakLr: 1, warmupRatio: 0 }), 1);
  // HF rounds the warmup up: 1 of 3 steps warms up.
  assert.equal(cosineLr(0, 3, { peakLr: 1 }), 0);
  assert.equal(cosineLr(1, 3, { peakLr: 1 }), 1);
  let prev = Infinity;
  for (let s = 10; s <= 100; s++) {
    const lr = cosineLr(s, 100, o);
    assert.ok(lr <= prev, `non-increasing after warmup at ${s}`);
    prev = lr;
  }
});

test("clipGradNorm scales to maxNorm, leaves small and non-finite gradients alone", () => {
  const g = new Float32Array([3, 4]);
  assert.equal(clipGradNorm(g, 1), 5);
  close(g[0], 0.6, 1e-6, "g0");
  close(g[1], 0.8, 1e-6, "g1");
  close(Math.hypot(g[0], g[1]), 1, 1e-6, "clipped norm");
  const small = new Float32Array([0.3, 0.4]);
  close(clipGradNorm(small, 1), 0.5, 1e-7, "small norm");
  assert.deepEqual(small, new Float32Array([0.3, 0.4]));
  const bad = new Float32Array([1, Number.NaN]);
  assert.ok(Number.isNaN(clipGradNorm(bad, 1)));
  assert.equal(bad[0], 1);
  const inf = new Float32Array([Infinity, 1]);
  assert.equal(clipGradNorm(inf, 1), Infinity);
  assert.equal(inf[1], 1);
});
