import assert from "node:assert/strict";
import { test } from "node:test";
import { type LlamaConfig, LlamaConfigSchema } from "../src/engine/config.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import {
  attentionBackward,
  attentionForward,
  biasBackward,
  biasForward,
  embeddingBackward,
  embeddingForward,
  linearBackward,
  linearForward,
  mergeHeads,
  RopeTable,
  rmsnormBackward,
  rmsnormForward,
  ropeHeadsInPlace,
  splitHeads,
  swigluBackward,
  swigluForward,
  swigluRecompute,
  tokenLogprobsBackward,
  tokenLogprobsForward,
} from "../src/engine/layers.js";
import { LlamaModel, type TokenBatch } from "../src/engine/model.js";
import { Rng } from "../src/util/rng.js";

const kernels = new PlainKernels();

function randn(rng: Rng, n: number, std = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal() * std;
  return out;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>, n = a.length): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

interface Tolerance {
  eps: number;
  /** Per coordinate: |fd - analytic| <= atol + rtol * max(|fd|, |analytic|). */
  atol: number;
  rtol: number;
}

/**
 * Central finite differences of `loss` with respect to x[i] for the given coordinates, compared with
 * `analytic`. The step actually taken is measured after fp32 rounding of the perturbed entry.
 * Returns the relative error of the whole checked sub-vector, which callers bound too.
 */
function checkGrad(
  label: string,
  loss: () => number,
  x: Float32Array,
  analytic: ArrayLike<number>,
  coords: Iterable<number>,
  tol: Tolerance,
): number {
  let diff2 = 0;
  let norm2 = 0;
  for (const i of coords) {
    const orig = x[i];
    x[i] = orig + tol.eps;
    const up = x[i];
    const fUp = loss();
    x[i] = orig - tol.eps;
    const down = x[i];
    const fDown = loss();
    x[i] = orig;
    const fd = (fUp - fDown) / (up - down);
    const an = analytic[i];
    const bound = tol.atol + tol.rtol * Math.max(Math.abs(fd), Math.abs(an));
    assert.ok(Math.abs(fd - an) <= bound, `${label}[${i}]: finite difference ${fd}, analytic ${an}`);
    diff2 += (fd - an) ** 2;
    norm2 += an * an;
  }
  return Math.sqrt(diff2 / Math.max(norm2, 1e-30));
}

function allCoords(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** Some random coordinates plus the one with the largest analytic gradient. */
function someCoords(rng: Rng, analytic: ArrayLike<number>, count: number): number[] {
  const n = analytic.length;
  const picked = new Set<number>();
  let best = 0;
  for (let i = 1; i < n; i++) if (Math.abs(analytic[i]) > Math.abs(analytic[best])) best = i;
  picked.add(best);
  while (picked.size < Math.min(count + 1, n)) picked.add(rng.int(n));
  return [...picked];
}

const LAYER_TOL: Tolerance = { eps: 1e-3, atol: 2e-4, rtol: 5e-3 };

// ------------------------------------------------------------------------------------------------
// Individual layers: loss = sum(out * R) for a fixed random R, so d(loss)/d(out) = R.
// ------------------------------------------------------------------------------------------------

test("rmsnorm backward matches finite differences", () => {
  const rng = new Rng(1);
  const N = 3;
  const C = 8;
  const x = randn(rng, N * C);
  const w = randn(rng, C, 0.5).map((v) => v + 1);
  const R = randn(rng, N * C);
  const out = new Float32Array(N * C);
  const rstd = new Float32Array(N);
  const loss = () => {
    rmsnormForward(out, rstd, x, w, N, C, 1e-5);
    return dot(out, R);
  };
  loss();
  const dx = new Float32Array(N * C).fill(0.5); // accumulates on top of what is there
  const dw = new Float32Array(C);
  rmsnormBackward(dx, dw, R, x, w, rstd, N, C);
  for (let i = 0; i < dx.length; i++) dx[i] -= 0.5;
  assert.ok(checkGrad("dx", loss, x, dx, allCoords(N * C), LAYER_TOL) < 1e-3);
  assert.ok(checkGrad("dw", loss, w, dw, allCoords(C), LAYER_TOL) < 1e-3);
});

test("linear backward matches finite differences and accumulates dW", () => {
  const rng = new Rng(2);
  const [N, inDim, outDim] = [4, 5, 3];
  const x = randn(rng, N * inDim);
  const w = randn(rng, outDim * inDim);
  const R = randn(rng, N * outDim);
  const y = new Float32Array(N * outDim);
  const loss = () => {
    linearForward(kernels, y, x, w, N, inDim, outDim);
    return dot(y, R);
  };
  const dx = new Float32Array(N * inDim);
  const dw = new Float32Array(outDim * inDim);
  linearBackward(kernels, dx, dw, R, x, w, N, inDim, outDim);
  assert.ok(checkGrad("dx", loss, x, dx, allCoords(dx.length), LAYER_TOL) < 1e-3);
  assert.ok(checkGrad("dw", loss, w, dw, allCoords(dw.length), LAYER_TOL) < 1e-3);
  const before = dw.slice();
  linearBackward(kernels, dx, dw, R, x, w, N, inDim, outDim);
  for (let i = 0; i < dw.length; i++) assert.ok(Math.abs(dw[i] - 2 * before[i]) < 1e-5);
});

test("bias backward matches finite differences and accumulates (q/k/v, o and MLP biases)", () => {
  const rng = new Rng(31);
  const [N, outDim] = [4, 5];
  const base = randn(rng, N * outDim);
  const b = randn(rng, outDim);
  const R = randn(rng, N * outDim);
  const y = new Float32Array(N * outDim);
  const loss = () => {
    y.set(base);
    biasForward(y, b, N, outDim);
    return dot(y, R);
  };
  const db = new Float32Array(outDim).fill(0.25);
  biasBackward(db, R, N, outDim);
  for (let i = 0; i < outDim; i++) db[i] -= 0.25;
  assert.ok(checkGrad("db", loss, b, db, allCoords(outDim), LAYER_TOL) < 1e-3);
});

const LLAMA3_SCALING = {
  type: "llama3",
  factor: 8,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositions: 64,
} as const;

test("scaled RoPE tables: linear divides every frequency, llama3 keeps, blends and divides bands", () => {
  const D = 8;
  const theta = 1000;
  const plain = new RopeTable(D, theta).invFreq;
  const linear = new RopeTable(D, theta, { type: "linear", factor: 4 }).invFreq;
  const llama3 = new RopeTable(D, theta, LLAMA3_SCALING).invFreq;
  for (let i = 0; i < D / 2; i++) assert.ok(Math.abs(linear[i] - plain[i] / 4) < 1e-7 * plain[i]);
  // wavelengths 2 pi / inv_freq are 6.3, 35, 199 and 1117 against bands at 64/4 and 64/1
  const wavelengths = Array.from(plain, (f) => (2 * Math.PI) / f);
  for (let i = 0; i < D / 2; i++) {
    const w = wavelengths[i];
    let expected: number;
    if (w < 64 / 4) expected = plain[i];
    else if (w > 64 / 1) expected = plain[i] / 8;
    else {
      const s = (64 / w - 1) / (4 - 1);
      expected = ((1 - s) * plain[i]) / 8 + s * plain[i];
    }
    assert.ok(Math.abs(llama3[i] - expected) < 1e-6 * expected, `band ${i}: ${llama3[i]} vs ${expected}`);
  }
  // a band in the blended middle too: D = 16 puts wavelength ~ 36 between 16 and 64
  const wide = new RopeTable(16, theta, LLAMA3_SCALING).invFreq;
  const widePlain = new RopeTable(16, theta).invFreq;
  const blended = Array.from(widePlain, (f, i) => wide[i] / f).filter((r) => r > 0.13 && r < 0.99);
  assert.ok(blended.length > 0, "some frequency is blended between kept and divided");
});

for (const scaling of [{ type: "linear", factor: 4 } as const, LLAMA3_SCALING]) {
  test(`${scaling.type}-scaled RoPE: the inverse rotation in place is the exact backward`, () => {
    const rng = new Rng(32);
    const [B, heads, T, D] = [2, 3, 7, 8];
    const rope = new RopeTable(D, 1000, scaling);
    rope.ensure(T);
    const x = randn(rng, B * heads * T * D);
    const R = randn(rng, B * heads * T * D);
    const y = new Float32Array(x.length);
    const loss = () => {
      y.set(x);
      ropeHeadsInPlace(y, B, heads, T, D, rope, 1);
      return dot(y, R);
    };
    const dx = R.slice();
    ropeHeadsInPlace(dx, B, heads, T, D, rope, -1);
    assert.ok(checkGrad("dx", loss, x, dx, allCoords(x.length), LAYER_TOL) < 1e-3);
    // the head-major in-place rotation is the split's rotation
    const flat = randn(rng, B * T * heads * D);
    const viaSplit = new Float32Array(flat.length);
    splitHeads(viaSplit, flat, heads * D, 0, B, T, heads, D, rope);
    const inPlace = new Float32Array(flat.length);
    splitHeads(inPlace, flat, heads * D, 0, B, T, heads, D, null);
    ropeHeadsInPlace(inPlace, B, heads, T, D, rope, 1);
    assert.deepEqual(inPlace, viaSplit);
  });
}

test("RoPE head split: mergeHeads with the inverse rotation is its exact backward", () => {
  const rng = new Rng(3);
  const [B, T, heads, D, stride, col] = [2, 5, 3, 6, 23, 4];
  const rope = new RopeTable(D, 10);
  rope.ensure(T);
  const src = randn(rng, B * T * stride);
  const R = randn(rng, B * heads * T * D);
  const dst = new Float32Array(B * heads * T * D);
  const loss = () => {
    splitHeads(dst, src, stride, col, B, T, heads, D, rope);
    return dot(dst, R);
  };
  const dsrc = new Float32Array(B * T * stride);
  mergeHeads(dsrc, stride, col, R, B, T, heads, D, rope);
  // columns outside the heads are untouched by both
  assert.ok(checkGrad("dsrc", loss, src, dsrc, allCoords(src.length), LAYER_TOL) < 1e-3);
  // rotation preserves norms: |split(x)| = |x| per head vector
  loss();
  let a = 0;
  let b = 0;
  for (let n = 0; n < B * T; n++) for (let i = 0; i < heads * D; i++) a += src[n * stride + col + i] ** 2;
  for (const v of dst) b += v * v;
  assert.ok(Math.abs(a - b) < 1e-3 * a);
});

test("causal GQA attention backward matches finite differences, with padded rows", () => {
  const rng = new Rng(4);
  const [B, T, H, KVH, D] = [2, 5, 4, 2, 4];
  const lengths = Int32Array.from([5, 3]);
  const q = randn(rng, B * H * T * D);
  const k = randn(rng, B * KVH * T * D);
  const v = randn(rng, B * KVH * T * D);
  const R = randn(rng, B * H * T * D);
  const out = new Float32Array(B * H * T * D);
  const probs = new Float32Array(B * H * T * T);
  const loss = () => {
    attentionForward(kernels, out, probs, q, k, v, B, T, H, KVH, D, lengths);
    return dot(out, R);
  };
  loss();
  // padding rows produce zeros and each probability row sums to one over the causal prefix
  for (let h = 0; h < H; h++)
    for (let t = 3; t < T; t++) for (let i = 0; i < D; i++) assert.equal(out[((H + h) * T + t) * D + i], 0);
  for (let r = 0; r < 5; r++)
    assert.ok(Math.abs(dot(probs.subarray(r * 5, r * 5 + 5), [1, 1, 1, 1, 1]) - 1) < 1e-6);
  assert.equal(probs[1], 0); // row 0 sees only position 0
  const dq = new Float32Array(q.length);
  const dk = new Float32Array(k.length).fill(9); // overwritten, not accumulated
  const dv = new Float32Array(v.length).fill(9);
  const dscores = new Float32Array(T * T);
  attentionBackward(kernels, dq, dk, dv, dscores, R, q, k, v, probs, B, T, H, KVH, D, lengths);
  assert.ok(checkGrad("dq", loss, q, dq, allCoords(q.length), LAYER_TOL) < 1e-3);
  assert.ok(checkGrad("dk", loss, k, dk, allCoords(k.length), LAYER_TOL) < 1e-3);
  assert.ok(checkGrad("dv", loss, v, dv, allCoords(v.length), LAYER_TOL) < 1e-3);
});

test("sliding-window attention: keys older than the window get zero weight; backward matches", () => {
  const rng = new Rng(33);
  const [B, T, H, KVH, D, W] = [2, 6, 2, 1, 4, 3];
  const lengths = Int32Array.from([6, 4]);
  const q = randn(rng, B * H * T * D);
  const k = randn(rng, B * KVH * T * D);
  const v = randn(rng, B * KVH * T * D);
  const R = randn(rng, B * H * T * D);
  const out = new Float32Array(B * H * T * D);
  const probs = new Float32Array(B * H * T * T);
  const loss = () => {
    attentionForward(kernels, out, probs, q, k, v, B, T, H, KVH, D, lengths, W);
    return dot(out, R);
  };
  loss();
  // row 0, head 0 is a dense [6, 6] block: query i sees keys i - 2 .. i
  for (let i = 0; i < T; i++)
    for (let j = 0; j < T; j++) {
      const visible = j <= i && j > i - W;
      assert.equal(probs[i * T + j] > 0, visible, `probs[${i}, ${j}]`);
    }
  const dq = new Float32Array(q.length);
  const dk = new Float32Array(k.length);
  const dv = new Float32Array(v.length);
  const dscores = new Float32Array(B * H * T * T);
  attentionBackward(kernels, dq, dk, dv, dscores, R, q, k, v, probs, B, T, H, KVH, D, lengths);
  assert.ok(checkGrad("dq", loss, q, dq, allCoords(q.length), LAYER_TOL) < 1e-3);
  assert.ok(checkGrad("dk", loss, k, dk, allCoords(k.length), LAYER_TOL) < 1e-3);
  assert.ok(checkGrad("dv", loss, v, dv, allCoords(v.length), LAYER_TOL) < 1e-3);
});

test("SwiGLU backward matches finite differences", () => {
  const rng = new Rng(5);
  const [N, I] = [3, 7];
  const gu = randn(rng, N * 2 * I, 2);
  const R = randn(rng, N * I);
  const h = new Float32Array(N * I);
  const sig = new Float32Array(N * I);
  const loss = () => {
    swigluForward(h, sig, gu, N, I);
    return dot(h, R);
  };
  loss();
  const rebuilt = new Float32Array(N * I);
  swigluRecompute(rebuilt, gu, sig, N, I);
  assert.deepEqual(rebuilt, h);
  const dgu = new Float32Array(N * 2 * I);
  swigluBackward(dgu, R, gu, sig, N, I);
  assert.ok(checkGrad("dgu", loss, gu, dgu, allCoords(gu.length), LAYER_TOL) < 1e-3);
});

test("embedding backward scatters into the rows of real tokens only", () => {
  const rng = new Rng(6);
  const [B, T, V, C] = [2, 4, 5, 3];
  const ids = Int32Array.from([1, 3, 1, 0, 4, 2, 2, 2]);
  const lengths = Int32Array.from([3, 2]);
  const wte = randn(rng, V * C);
  const R = randn(rng, B * T * C);
  const out = new Float32Array(B * T * C);
  const loss = () => {
    embeddingForward(out, ids, lengths, B, T, wte, C);
    return dot(out, R);
  };
  const dwte = new Float32Array(V * C);
  embeddingBackward(dwte, R, ids, lengths, B, T, C);
  assert.ok(checkGrad("dwte", loss, wte, dwte, allCoords(wte.length), LAYER_TOL) < 1e-3);
  for (let i = 0; i < C; i++) assert.equal(dwte[0 * C + i], 0); // id 0 only appears in padding
});

test("next-token log-softmax backward matches finite differences", () => {
  const rng = new Rng(7);
  const [B, T, V] = [2, 4, 6];
  const ids = Int32Array.from([1, 5, 0, 2, 3, 3, 4, 4]);
  const lengths = Int32Array.from([4, 3]);
  const logits = randn(rng, B * T * V, 2);
  const c = randn(rng, B * T);
  const lp = new Float32Array(B * T);
  const probs = new Float32Array(B * T * V);
  const loss = () => {
    tokenLogprobsForward(lp, probs, logits, ids, lengths, B, T, V);
    return dot(lp, c);
  };
  loss();
  const dlogits = new Float32Array(B * T * V);
  tokenLogprobsBackward(dlogits, c, probs, ids, lengths, B, T, V);
  assert.ok(checkGrad("dlogits", loss, logits, dlogits, allCoords(logits.length), LAYER_TOL) < 1e-3);
});

// ------------------------------------------------------------------------------------------------
// The whole model
// ------------------------------------------------------------------------------------------------

function tinyConfig(overrides: Record<string, unknown> = {}): LlamaConfig {
  return LlamaConfigSchema.parse({
    vocab_size: 11,
    hidden_size: 8,
    intermediate_size: 12,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 4,
    rope_theta: 100,
    ...overrides,
  });
}

function randomModel(config: LlamaConfig, seed: number, scoreHead = false): LlamaModel {
  const model = new LlamaModel(config, kernels, { scoreHead });
  const rng = new Rng(seed);
  model.initRandom(rng, 0.4);
  for (const spec of model.specs)
    if (spec.shape.length === 1) {
      const w = model.tensor(spec.name);
      for (let i = 0; i < w.length; i++) w[i] = 1 + 0.3 * rng.normal();
    }
  return model;
}

/** Three rows of different lengths with a response mask that skips some positions. */
function paddedBatch(rng: Rng, vocab: number): TokenBatch {
  const B = 3;
  const T = 6;
  const lengths = Int32Array.from([6, 4, 2]);
  const ids = new Int32Array(B * T);
  const lossMask = new Uint8Array(B * T);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      ids[b * T + t] = t < lengths[b] ? rng.int(vocab) : vocab - 1;
      lossMask[b * T + t] = t >= 1 && t < lengths[b] && (t + b) % 4 !== 1 ? 1 : 0;
    }
  return { ids, batch: B, seqLen: T, lengths, lossMask };
}

const MODEL_TOL: Tolerance = { eps: 3e-3, atol: 5e-4, rtol: 2e-2 };

/** Checks every parameter tensor of the model against finite differences of `loss`. */
function checkAllTensors(model: LlamaModel, loss: () => number, rng: Rng): void {
  for (const spec of model.specs) {
    const offset = model.offsetOf(spec.name);
    const grad = model.gradTensor(spec.name);
    const coords = someCoords(rng, grad, 5).map((i) => offset + i);
    const analytic = model.grads;
    const rel = checkGrad(spec.name, loss, model.params, analytic, coords, MODEL_TOL);
    assert.ok(rel < 5e-3, `${spec.name}: relative error ${rel}`);
    assert.ok(
      grad.some((g) => g !== 0),
      `${spec.name} gets a gradient`,
    );
  }
}

test("whole model (GQA, untied): token-level backward matches finite differences, padding ignored", () => {
  const rng = new Rng(21);
  const model = randomModel(tinyConfig(), 1);
  const batch = paddedBatch(rng, 11);
  // weights on every position, including t = 0 and padding, which have no log-prob to differentiate
  const c = randn(rng, batch.batch * batch.seqLen);
  const loss = () => dot(model.forward(batch).tokenLogprobs, c);
  model.zeroGrad();
  loss();
  model.backward(c);
  checkAllTensors(model, loss, rng);
});

test("whole model (tied embeddings, multi-head): sequence-level backward matches finite differences", () => {
  const rng = new Rng(22);
  const model = randomModel(tinyConfig({ tie_word_embeddings: true, num_key_value_heads: 4 }), 2);
  assert.ok(!model.specs.some((s) => s.name === "lm_head.weight"));
  const batch = paddedBatch(rng, 11);
  const dSeq = [0.7, -1.3, 2.1];
  const loss = () => dot(model.forward(batch).seqLogprobs, dSeq);
  model.zeroGrad();
  loss();
  model.backwardSeq(dSeq);
  checkAllTensors(model, loss, rng);
});

test("reward model (score head, GQA): backwardScores matches finite differences", () => {
  const rng = new Rng(23);
  const model = randomModel(tinyConfig({ num_key_value_heads: 1 }), 3, true);
  assert.equal(model.specs.at(-1)?.name, "score.weight");
  const batch = paddedBatch(rng, 11);
  const dScores = [1.1, -0.4, 0.9];
  const loss = () => dot(model.forwardScores(batch), dScores);
  model.zeroGrad();
  loss();
  model.backwardScores(dScores);
  checkAllTensors(model, loss, rng);
});

/** Each family's new pieces, in a tiny config: every tensor (biases, q/k norms too) is checked. */
const FAMILY_CONFIGS: { name: string; overrides: Record<string, unknown>; expect: string[] }[] = [
  {
    name: "llama: attention and MLP biases, llama3 RoPE, head_dim 6",
    overrides: {
      head_dim: 6,
      attention_bias: true,
      mlp_bias: true,
      rope_scaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 16,
      },
    },
    expect: ["self_attn.q_proj.bias", "self_attn.o_proj.bias", "mlp.gate_proj.bias", "mlp.down_proj.bias"],
  },
  {
    name: "llama: linear RoPE scaling",
    overrides: { rope_scaling: { type: "linear", factor: 3 } },
    expect: [],
  },
  {
    name: "qwen2: q/k/v biases, tied",
    overrides: { model_type: "qwen2", tie_word_embeddings: true },
    expect: ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"],
  },
  {
    name: "mistral: sliding window 3",
    overrides: { model_type: "mistral", sliding_window: 3 },
    expect: [],
  },
  {
    name: "qwen3: per-head q/k norms, head_dim 6",
    overrides: { model_type: "qwen3", head_dim: 6 },
    expect: ["self_attn.q_norm.weight", "self_attn.k_norm.weight"],
  },
];

for (const [i, family] of FAMILY_CONFIGS.entries()) {
  test(`whole model (${family.name}): backward matches finite differences`, () => {
    const rng = new Rng(40 + i);
    const model = randomModel(tinyConfig(family.overrides), 10 + i);
    for (const name of family.expect)
      assert.ok(
        model.specs.some((s) => s.name === `model.layers.0.${name}`),
        `has ${name}`,
      );
    const batch = paddedBatch(rng, 11);
    const c = randn(rng, batch.batch * batch.seqLen);
    const loss = () => dot(model.forward(batch).tokenLogprobs, c);
    model.zeroGrad();
    loss();
    model.backward(c);
    checkAllTensors(model, loss, rng);
  });
}

test("reward model of a qwen3 checkpoint: backwardScores matches finite differences", () => {
  const rng = new Rng(49);
  const model = randomModel(tinyConfig({ model_type: "qwen3", head_dim: 4, attention_bias: true }), 9, true);
  const batch = paddedBatch(rng, 11);
  const dScores = [0.6, -1.2, 0.8];
  const loss = () => dot(model.forwardScores(batch), dScores);
  model.zeroGrad();
  loss();
  model.backwardScores(dScores);
  checkAllTensors(model, loss, rng);
});

test("gradients accumulate over micro-batches and repeated backward calls", () => {
  const rng = new Rng(24);
  const model = randomModel(tinyConfig(), 4);
  const a = paddedBatch(rng, 11);
  const b = paddedBatch(rng, 11);
  const da = [1, -2, 0.5];
  const db = [0.3, 0.3, -1];
  const gradOf = (batch: TokenBatch, d: number[]) => {
    model.zeroGrad();
    model.forward(batch);
    model.backwardSeq(d);
    return model.grads.slice();
  };
  const ga = gradOf(a, da);
  const gb = gradOf(b, db);
  model.zeroGrad();
  model.forward(a);
  model.backwardSeq(da);
  model.forward(b);
  model.backwardSeq(db);
  model.backwardSeq(db);
  let worst = 0;
  for (let i = 0; i < ga.length; i++) worst = Math.max(worst, Math.abs(model.grads[i] - (ga[i] + 2 * gb[i])));
  assert.ok(worst < 1e-5, `accumulation error ${worst}`);
});

test("backward without a matching forward is an error", () => {
  const model = randomModel(tinyConfig(), 5);
  assert.throws(() => model.backwardSeq([1]), /preceding forward/);
  const rm = randomModel(tinyConfig(), 5, true);
  const batch = paddedBatch(new Rng(1), 11);
  rm.forwardScores(batch);
  assert.throws(() => rm.backwardSeq([1, 1, 1]), /preceding forward/);
  assert.throws(() => rm.backwardScores([1]), /dScores has 1 entries, expected 3/);
});
