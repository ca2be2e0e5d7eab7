/**
 * The layers of a Llama decoder, each as a forward and a backward function over flat fp32 buffers
 * (llm.c style). Shapes are written above each function; all matrices are row-major. Token rows are
 * indexed n = b*T + t for a right-padded batch [B, T]; row b holds real tokens at t < lengths[b].
 * Backward functions say whether they overwrite or accumulate into each gradient buffer.
 * Matrix products go through `Kernels.sgemm`, so every buffer given to them must come from that
 * backend's `alloc()` (or be a subarray of such a buffer).
 */

import type { RopeScaling } from "./config.js";
import type { GemmBatchItem, Kernels } from "./kernels/types.js";

/** 2^k for k in [-150, 149], indexed k + 150. */
const POW2 = Float64Array.from({ length: 300 }, (_, i) => 2 ** (i - 150));
/** 1.5 * 2^52: adding then subtracting it rounds a double to the nearest integer. */
const ROUND_TO_INT = 6755399441055744;

/**
 * exp(x) with relative error below 1e-8 (far under fp32 resolution), about 3x faster than Math.exp
 * in V8; the softmax and SiLU loops spend most of their time here. exp(x) = 2^k * e^r with
 * |r| <= ln2/2, e^r by its degree-7 Taylor polynomial.
 */
export function fastExp(x: number): number {
  if (!(x > -103)) return Number.isNaN(x) ? x : 0;
  if (x > 88.7) return Number.POSITIVE_INFINITY;
  const k = x * Math.LOG2E + ROUND_TO_INT - ROUND_TO_INT;
  const r = x - k * 0.6931471803691238 - k * 1.9082149292705877e-10;
  const p =
    1 + r * (1 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (1 / 5040)))))));
  return p * POW2[(k | 0) + 150];
}

/**
 * Rotary position embedding tables, computed the way Hugging Face's Llama rotary embedding does in
 * fp32 (inv_freq = 1 / theta^(2i/D), angle = position * inv_freq), so positions agree with
 * transformers to the last bit of the angle. cos and sin are [positions, D/2]. RoPE scaling changes
 * only inv_freq (transformers' modeling_rope_utils):
 * - linear: inv_freq / factor;
 * - llama3 (Llama 3.1 / 3.2): with wavelength w = 2 pi / inv_freq and L = original_max_position_embeddings,
 *   w < L / high_freq_factor keeps inv_freq, w > L / low_freq_factor divides it by factor, and in between
 *   s = (L / w - low_freq_factor) / (high_freq_factor - low_freq_factor) blends the two:
 *   (1 - s) * inv_freq / factor + s * inv_freq.
 * Both leave the attention scale at 1.
 */
export class RopeTable {
  readonly half: number;
  cos: Float32Array = new Float32Array(0);
  sin: Float32Array = new Float32Array(0);
  /** The per-pair inverse frequencies after scaling, [D/2]. */
  readonly invFreq: Float32Array;

  /** Tables for one head size, base and scaling; they grow on demand with `ensure`. */
  constructor(headDim: number, theta: number, scaling: RopeScaling = { type: "none" }) {
    this.half = headDim / 2;
    this.invFreq = new Float32Array(this.half);
    const f = Math.fround;
    for (let i = 0; i < this.half; i++) {
      const exponent = f((2 * i) / headDim);
      const plain = f(1 / f(theta ** exponent));
      this.invFreq[i] = scaledInvFreq(plain, scaling);
    }
  }

  /** Number of positions the tables currently cover. */
  get positions(): number {
    return this.cos.length / this.half;
  }

  /** Makes the tables cover positions 0..count-1. */
  ensure(count: number): void {
    if (count <= this.positions) return;
    const grown = Math.max(count, 2 * this.positions, 64);
    const cos = new Float32Array(grown * this.half);
    const sin = new Float32Array(grown * this.half);
    for (let p = 0; p < grown; p++) {
      for (let i = 0; i < this.half; i++) {
        const angle = Math.fround(p * this.invFreq[i]);
        cos[p * this.half + i] = Math.cos(angle);
        sin[p * this.half + i] = Math.sin(angle);
      }
    }
    this.cos = cos;
    this.sin = sin;
  }
}

// One inverse frequency after RoPE scaling, each step rounded to fp32 as torch computes it.
function scaledInvFreq(invFreq: number, scaling: RopeScaling): number {
  const f = Math.fround;
  if (scaling.type === "none") return invFreq;
  if (scaling.type === "linear") return f(invFreq / scaling.factor);
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositions } = scaling;
  const wavelength = f((2 * Math.PI) / invFreq);
  if (wavelength < originalMaxPositions / highFreqFactor) return invFreq;
  if (wavelength > originalMaxPositions / lowFreqFactor) return f(invFreq / factor);
  const smooth = f((f(originalMaxPositions / wavelength) - lowFreqFactor) / (highFreqFactor - lowFreqFactor));
  return f(f(f(f(1 - smooth) * invFreq) / factor) + f(smooth * invFreq));
}

// ---------------------------------------------------------------------------------------------
// Embedding
// ---------------------------------------------------------------------------------------------

// ids [B, T], wte [V, C] -> out [B*T, C]; padding rows (t >= lengths[b]) are zero so they stay finite
// and can never leak into real rows.
/** Looks up token embeddings. */
export function embeddingForward(
  out: Float32Array,
  ids: Int32Array,
  lengths: Int32Array,
  B: number,
  T: number,
  wte: Float32Array,
  C: number,
): void {
  for (let b = 0; b < B; b++) {
    const len = lengths[b];
    for (let t = 0; t < T; t++) {
      const n = b * T + t;
      if (t < len) out.set(wte.subarray(ids[n] * C, ids[n] * C + C), n * C);
      else out.fill(0, n * C, n * C + C);
    }
  }
}

// dout [B*T, C] -> dwte [V, C] (accumulated at the ids of real positions)
/** Scatters embedding gradients back to the rows of the table. */
export function embeddingBackward(
  dwte: Float32Array,
  dout: Float32Array,
  ids: Int32Array,
  lengths: Int32Array,
  B: number,
  T: number,
  C: number,
): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < lengths[b]; t++) {
      const n = b * T + t;
      const dst = ids[n] * C;
      const src = n * C;
      for (let i = 0; i < C; i++) dwte[dst + i] += dout[src + i];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm: y = x * rsqrt(mean(x^2) + eps) * w
// ---------------------------------------------------------------------------------------------

// x [N, C], w [C] -> out [N, C], rstd [N]. Given kernels with element-wise loops, every buffer must
// come from their alloc(); rows are then shared out over their threads.
/** RMS-normalises each row and scales it by w. */
export function rmsnormForward(
  out: Float32Array,
  rstd: Float32Array,
  x: Float32Array,
  w: Float32Array,
  N: number,
  C: number,
  eps: number,
  kernels?: Kernels,
): void {
  const simd = kernels?.elementwise;
  if (simd !== undefined) {
    simd.rmsnormForward(out, rstd, x, w, N, C, eps);
    return;
  }
  for (let n = 0; n < N; n++) {
    const off = n * C;
    let ss = 0;
    for (let i = 0; i < C; i++) ss += x[off + i] * x[off + i];
    const r = Math.fround(1 / Math.sqrt(ss / C + eps));
    rstd[n] = r;
    for (let i = 0; i < C; i++) out[off + i] = x[off + i] * r * w[i];
  }
}

// dout [N, C] -> dx [N, C] (accumulated), dw [C] (accumulated). With kernels as rmsnormForward (dw
// then sums fixed row chunks in a fixed order, so the bytes do not depend on the thread count).
/** Backward of rmsnormForward: dx_j = r*g_j - r^3 * x_j * sum_i(g_i x_i) / C with g = dout * w. */
export function rmsnormBackward(
  dx: Float32Array,
  dw: Float32Array,
  dout: Float32Array,
  x: Float32Array,
  w: Float32Array,
  rstd: Float32Array,
  N: number,
  C: number,
  kernels?: Kernels,
): void {
  const simd = kernels?.elementwise;
  if (simd !== undefined) {
    simd.rmsnormBackward(dx, dw, dout, x, w, rstd, N, C);
    return;
  }
  for (let n = 0; n < N; n++) {
    const off = n * C;
    const r = rstd[n];
    let dot = 0;
    for (let i = 0; i < C; i++) dot += dout[off + i] * w[i] * x[off + i];
    const coef = (r * r * r * dot) / C;
    for (let i = 0; i < C; i++) {
      const g = dout[off + i];
      const xi = x[off + i];
      dx[off + i] += r * g * w[i] - coef * xi;
      dw[i] += g * xi * r;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Linear (no bias, HF layout): y = x W^T
// ---------------------------------------------------------------------------------------------

// x [N, in], w [out, in] -> y [N, out] (overwritten, or accumulated when `accumulate`: the residual add)
/** A bias-free linear layer. */
export function linearForward(
  kernels: Kernels,
  y: Float32Array,
  x: Float32Array,
  w: Float32Array,
  N: number,
  inDim: number,
  outDim: number,
  accumulate = false,
): void {
  kernels.sgemm(false, true, N, outDim, inDim, 1, x, w, accumulate ? 1 : 0, y);
}

// dy [N, out] -> dx [N, in] (overwritten, or accumulated when `accumulateDx`), dw [out, in] (accumulated)
/** Backward of linearForward: dx = dy W, dW += dy^T x. */
export function linearBackward(
  kernels: Kernels,
  dx: Float32Array,
  dw: Float32Array,
  dy: Float32Array,
  x: Float32Array,
  w: Float32Array,
  N: number,
  inDim: number,
  outDim: number,
  accumulateDx = false,
): void {
  kernels.sgemm(false, false, N, inDim, outDim, 1, dy, w, accumulateDx ? 1 : 0, dx);
  kernels.sgemm(true, false, outDim, inDim, N, 1, dy, x, 1, dw);
}

// y [N, out] += b [out] on every row (the bias of a linear layer, added after its matmul)
/** Adds a bias vector to every row. */
export function biasForward(y: Float32Array, b: Float32Array, N: number, outDim: number): void {
  for (let n = 0; n < N; n++) {
    const off = n * outDim;
    for (let j = 0; j < outDim; j++) y[off + j] += b[j];
  }
}

// dy [N, out] -> db [out] (accumulated): db_j += sum_n dy[n, j]
/** Backward of biasForward. */
export function biasBackward(db: Float32Array, dy: Float32Array, N: number, outDim: number): void {
  for (let n = 0; n < N; n++) {
    const off = n * outDim;
    for (let j = 0; j < outDim; j++) db[j] += dy[off + j];
  }
}

// ---------------------------------------------------------------------------------------------
// Head split/merge with rotate-half RoPE
// ---------------------------------------------------------------------------------------------

// The one RoPE rotation every path uses. A head vector x at position p is rotated on the pairs
// (i, i + D/2) by the angles of table row p:
//   out_i = x_i cos - x_{i+D/2} sin,  out_{i+D/2} = x_{i+D/2} cos + x_i sin      (sign = 1)
// sign = -1 applies the inverse rotation (the transpose), which is also RoPE's backward:
//   dx_i = dy_i cos + dy_{i+D/2} sin,  dx_{i+D/2} = dy_{i+D/2} cos - dy_i sin.
// dst may be src at the same offset (in place).
/** Rotates one head vector src[sOff, sOff + D) into dst[dOff, dOff + D) by RoPE at `position`. */
export function ropeRotate(
  dst: Float32Array,
  dOff: number,
  src: Float32Array,
  sOff: number,
  rope: RopeTable,
  position: number,
  sign: 1 | -1,
): void {
  const half = rope.half;
  const cs = position * half;
  const cos = rope.cos;
  const sin = rope.sin;
  for (let i = 0; i < half; i++) {
    const x1 = src[sOff + i];
    const x2 = src[sOff + half + i];
    const c = cos[cs + i];
    const sn = sign * sin[cs + i];
    dst[dOff + i] = x1 * c - x2 * sn;
    dst[dOff + half + i] = x2 * c + x1 * sn;
  }
}

// src [B*T, srcStride] holding `heads` heads at columns [col, col + heads*D) -> dst [B, heads, T, D],
// each head vector at position t rotated by RoPE when a table is given. Given kernels with element-wise
// loops (dst and src from their alloc()), rows are shared out over their threads; same bytes either way.
/** Scatters heads into head-major layout, applying RoPE when `rope` is given. */
export function splitHeads(
  dst: Float32Array,
  src: Float32Array,
  srcStride: number,
  col: number,
  B: number,
  T: number,
  heads: number,
  D: number,
  rope: RopeTable | null,
  kernels?: Kernels,
): void {
  const simd = kernels?.elementwise;
  if (simd !== undefined) {
    simd.splitHeads(dst, src, srcStride, col, B, T, heads, D, rope);
    return;
  }
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const rowOff = (b * T + t) * srcStride + col;
      for (let h = 0; h < heads; h++) {
        const s = rowOff + h * D;
        const d = ((b * heads + h) * T + t) * D;
        if (rope === null) for (let i = 0; i < D; i++) dst[d + i] = src[s + i];
        else ropeRotate(dst, d, src, s, rope, t, 1);
      }
    }
  }
}

// src [B, heads, T, D] -> dst [B*T, dstStride] at columns [col, col + heads*D) (overwritten).
// With a rope table this applies the inverse rotation, which is exactly the backward of splitHeads
// with RoPE.
/** Gathers head-major vectors back into flat rows (also the backward of splitHeads). */
export function mergeHeads(
  dst: Float32Array,
  dstStride: number,
  col: number,
  src: Float32Array,
  B: number,
  T: number,
  heads: number,
  D: number,
  ropeInverse: RopeTable | null,
  kernels?: Kernels,
): void {
  const simd = kernels?.elementwise;
  if (simd !== undefined) {
    simd.mergeHeads(dst, dstStride, col, src, B, T, heads, D, ropeInverse);
    return;
  }
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const rowOff = (b * T + t) * dstStride + col;
      for (let h = 0; h < heads; h++) {
        const d = rowOff + h * D;
        const s = ((b * heads + h) * T + t) * D;
        if (ropeInverse === null) for (let i = 0; i < D; i++) dst[d + i] = src[s + i];
        else ropeRotate(dst, d, src, s, ropeInverse, t, -1);
      }
    }
  }
}

// x [B, heads, T, D] -> rotated in place at each vector's position t (sign -1: the inverse, i.e. the
// backward). Used when something must happen between the head split and RoPE (Qwen3's q/k norms).
/** Applies RoPE (or its inverse) to head-major vectors in place. */
export function ropeHeadsInPlace(
  x: Float32Array,
  B: number,
  heads: number,
  T: number,
  D: number,
  rope: RopeTable,
  sign: 1 | -1,
): void {
  for (let bh = 0; bh < B * heads; bh++)
    for (let t = 0; t < T; t++) {
      const off = (bh * T + t) * D;
      ropeRotate(x, off, x, off, rope, t, sign);
    }
}

// x [heads*D] at offset `off`, one token at position `pos` -> rotated in place (decode path).
/** Applies RoPE to the heads of a single token row in place. */
export function ropeRowInPlace(
  x: Float32Array,
  off: number,
  heads: number,
  D: number,
  rope: RopeTable,
  pos: number,
): void {
  for (let h = 0; h < heads; h++) ropeRotate(x, off + h * D, x, off + h * D, rope, pos, 1);
}

// ---------------------------------------------------------------------------------------------
// Causal grouped-query attention
// ---------------------------------------------------------------------------------------------

// q [B, H, T, D], k, v [B, KVH, T, D] (RoPE already applied) -> out [B, H, T, D], probs [B, H, T*T].
// Query head h reads kv head floor(h / (H/KVH)) (HF repeat_kv). Row b attends only within its first
// len = lengths[b] positions; probs of (b, h) is a dense [len, len] block at offset (b*H + h)*T*T with
// zeros above the diagonal; out rows t >= len are zero. With a sliding window W > 0, query i sees keys
// i - W < j <= i (transformers' sliding_window_overlay); the masked probabilities are zero, so
// attentionBackward needs no window of its own. The (b, h) products of a layer are small
// (len x len x D), so each of the two products runs as one batch the kernel threads share.
/** softmax(q k^T / sqrt(D) + causal mask) v, per batch row and head. */
export function attentionForward(
  kernels: Kernels,
  out: Float32Array,
  probs: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  B: number,
  T: number,
  H: number,
  KVH: number,
  D: number,
  lengths: Int32Array,
  window = 0,
): void {
  const rep = H / KVH;
  const scale = 1 / Math.sqrt(D);
  const scores: GemmBatchItem[] = [];
  const weighted: GemmBatchItem[] = [];
  for (let b = 0; b < B; b++) {
    const len = lengths[b];
    for (let h = 0; h < H; h++) {
      const qOff = (b * H + h) * T * D;
      const kvOff = (b * KVH + Math.floor(h / rep)) * T * D;
      const pOff = (b * H + h) * T * T;
      out.fill(0, qOff + len * D, qOff + T * D);
      if (len === 0) continue;
      const p = probs.subarray(pOff, pOff + len * len);
      scores.push({ M: len, N: len, K: D, A: q.subarray(qOff), B: k.subarray(kvOff), C: p });
      weighted.push({ M: len, N: D, K: len, A: p, B: v.subarray(kvOff), C: out.subarray(qOff) });
    }
  }
  kernels.sgemmBatch(false, true, scale, 0, scores);
  const simd = kernels.elementwise;
  if (simd !== undefined)
    simd.causalSoftmax(
      scores.map((item) => ({ scores: item.C, len: item.M })),
      window,
    );
  else for (const item of scores) causalSoftmaxInPlace(item.C, item.M, window);
  kernels.sgemmBatch(false, false, 1, 0, weighted);
}

/** Row-wise softmax of a [len, len] score block over the visible keys of each row, zeroing the rest. */
function causalSoftmaxInPlace(p: Float32Array, len: number, window: number): void {
  for (let i = 0; i < len; i++) softmaxSpanInPlace(p, i * len, firstVisibleKey(i, window), i + 1, len);
}

/** The first key position query position i attends to: 0, or i - W + 1 under a sliding window W. */
export function firstVisibleKey(i: number, window: number): number {
  return window > 0 && i >= window ? i - window + 1 : 0;
}

// x[row + j] for j in [from, to) -> softmax over that span (max-subtracted, so any finite scores work);
// j in [0, from) and [to, width) are set to 0 (masked keys). The one attention softmax of the engine:
// training attention and KV-cache decoding both call it.
/** Softmax over a visible span of one score row, zeroing the masked rest of the row. */
export function softmaxSpanInPlace(
  x: Float32Array,
  row: number,
  from: number,
  to: number,
  width: number,
): void {
  let max = Number.NEGATIVE_INFINITY;
  for (let j = from; j < to; j++) if (x[row + j] > max) max = x[row + j];
  let sum = 0;
  for (let j = from; j < to; j++) {
    const e = fastExp(x[row + j] - max);
    x[row + j] = e;
    sum += e;
  }
  const inv = 1 / sum;
  for (let j = from; j < to; j++) x[row + j] *= inv;
  for (let j = 0; j < from; j++) x[row + j] = 0;
  for (let j = to; j < width; j++) x[row + j] = 0;
}

// dout [B, H, T, D] -> dq [B, H, T, D] (overwritten), dk, dv [B, KVH, T, D] (overwritten; the query
// heads sharing a kv head are summed). dscores is a scratch of at least T*T floats; B*H*T*T lets every
// head of the layer run in one batch per product (smaller scratches run as many heads as fit).
//   dP = dO V^T,  dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik),  dQ = dS K / sqrt(D),
//   dK = dS^T Q / sqrt(D),  dV = P^T dO.
// dK and dV accumulate over the rep query heads of a kv head, so they run one batch per head index r
// within the group: no two items of a batch share an output.
/** Backward of attentionForward. */
export function attentionBackward(
  kernels: Kernels,
  dq: Float32Array,
  dk: Float32Array,
  dv: Float32Array,
  dscores: Float32Array,
  dout: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  probs: Float32Array,
  B: number,
  T: number,
  H: number,
  KVH: number,
  D: number,
  lengths: Int32Array,
): void {
  if (dscores.length < T * T) throw new Error(`dscores has ${dscores.length} floats, needs ${T * T}`);
  const rep = H / KVH;
  const scale = 1 / Math.sqrt(D);
  dk.fill(0, 0, B * KVH * T * D);
  dv.fill(0, 0, B * KVH * T * D);
  const dP: GemmBatchItem[] = [];
  const blocks: Float32Array[] = [];
  const dQ: GemmBatchItem[] = [];
  const dV: GemmBatchItem[][] = Array.from({ length: rep }, () => []);
  const dK: GemmBatchItem[][] = Array.from({ length: rep }, () => []);
  let used = 0;
  const flush = (): void => {
    kernels.sgemmBatch(false, true, 1, 0, dP);
    const simd = kernels.elementwise;
    if (simd !== undefined)
      simd.causalSoftmaxBackward(dP.map((item, i) => ({ ds: item.C, p: blocks[i], len: item.M })));
    else for (let i = 0; i < dP.length; i++) softmaxBackwardInPlace(dP[i].C, blocks[i], dP[i].M);
    for (let r = 0; r < rep; r++) kernels.sgemmBatch(true, false, 1, 1, dV[r]);
    kernels.sgemmBatch(false, false, scale, 0, dQ);
    for (let r = 0; r < rep; r++) kernels.sgemmBatch(true, false, scale, 1, dK[r]);
    dP.length = 0;
    blocks.length = 0;
    dQ.length = 0;
    for (let r = 0; r < rep; r++) {
      dV[r].length = 0;
      dK[r].length = 0;
    }
    used = 0;
  };
  for (let b = 0; b < B; b++) {
    const len = lengths[b];
    for (let h = 0; h < H; h++) {
      const qOff = (b * H + h) * T * D;
      const kvOff = (b * KVH + Math.floor(h / rep)) * T * D;
      const pOff = (b * H + h) * T * T;
      dq.fill(0, qOff + len * D, qOff + T * D);
      if (len === 0) continue;
      if (used + len * len > dscores.length) flush();
      const p = probs.subarray(pOff, pOff + len * len);
      const ds = dscores.subarray(used, used + len * len);
      used += len * len;
      const dO = dout.subarray(qOff);
      dP.push({ M: len, N: len, K: D, A: dO, B: v.subarray(kvOff), C: ds });
      blocks.push(p);
      dQ.push({ M: len, N: D, K: len, A: ds, B: k.subarray(kvOff), C: dq.subarray(qOff) });
      const r = h % rep;
      dV[r].push({ M: len, N: D, K: len, A: p, B: dO, C: dv.subarray(kvOff) });
      dK[r].push({ M: len, N: D, K: len, A: ds, B: q.subarray(qOff), C: dk.subarray(kvOff) });
    }
  }
  flush();
}

// p, ds [len, len] (ds holds dP) -> ds = P (dP - rowsum(P dP)) below the diagonal, 0 above.
/** The causal softmax's backward, in place on one head's block. */
function softmaxBackwardInPlace(ds: Float32Array, p: Float32Array, len: number): void {
  for (let i = 0; i < len; i++) {
    const row = i * len;
    let dot = 0;
    for (let j = 0; j <= i; j++) dot += p[row + j] * ds[row + j];
    for (let j = 0; j <= i; j++) ds[row + j] = p[row + j] * (ds[row + j] - dot);
    for (let j = i + 1; j < len; j++) ds[row + j] = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// SiLU-gated MLP activation
// ---------------------------------------------------------------------------------------------

// gu [N, 2I] (gate in columns [0, I), up in [I, 2I)) -> h [N, I] = silu(gate) * up, sig [N, I] =
// sigmoid(gate). Keeping sig spares backward an exp per element, and h can be rebuilt from it.
// Given kernels with element-wise loops (WASM, BLAS on WASM), the three SwiGLU functions run there (same formulas in fp32; pass
// the same kernels to forward and recompute so they agree bit for bit).
/** The SwiGLU nonlinearity between the fused gate/up projection and the down projection. */
export function swigluForward(
  h: Float32Array,
  sig: Float32Array,
  gu: Float32Array,
  N: number,
  I: number,
  kernels?: Kernels,
): void {
  const simd = kernels?.elementwise;
  if (simd !== undefined) {
    simd.swigluForward(h, sig, gu, N, I);
    return;
  }
  for (let n = 0; n < N; n++) {
    const g0 = n * 2 * I;
    const h0 = n * I;
    for (let i = 0; i < I; i++) {
      const g = gu[g0 + i];
      // rounded as stored, so swigluRecompute rebuilds h bit for bit
      const s = Math.fround(1 / (1 + fastExp(-g)));
      sig[h0 + i] = s;
      h[h0 + i] = g * s * gu[g0 + I + i];
    }
  }
}

// gu [N, 2I], sig [N, I] -> h [N, I] (the forward output again, without exp)
/** Rebuilds swigluForward's output from its saved sigmoid. */
export function swigluRecompute(
  h: Float32Array,
  gu: Float32Array,
  sig: Float32Array,
  N: number,
  I: number,
  kernels?: Kernels,
): void {
  const simd = kernels?.elementwise;
  if (simd !== undefined) {
    simd.swigluRecompute(h, gu, sig, N, I);
    return;
  }
  for (let n = 0; n < N; n++) {
    const g0 = n * 2 * I;
    const h0 = n * I;
    for (let i = 0; i < I; i++) h[h0 + i] = gu[g0 + i] * sig[h0 + i] * gu[g0 + I + i];
  }
}

// dh [N, I] -> dgu [N, 2I] (overwritten). silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g).
/** Backward of swigluForward. */
export function swigluBackward(
  dgu: Float32Array,
  dh: Float32Array,
  gu: Float32Array,
  sig: Float32Array,
  N: number,
  I: number,
  kernels?: Kernels,
): void {
  const simd = kernels?.elementwise;
  if (simd !== undefined) {
    simd.swigluBackward(dgu, dh, gu, sig, N, I);
    return;
  }
  for (let n = 0; n < N; n++) {
    const g0 = n * 2 * I;
    const h0 = n * I;
    for (let i = 0; i < I; i++) {
      const g = gu[g0 + i];
      const u = gu[g0 + I + i];
      const s = sig[h0 + i];
      const d = dh[h0 + i];
      dgu[g0 + i] = d * u * s * (1 + g * (1 - s));
      dgu[g0 + I + i] = d * g * s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Log-softmax and gather of the next token
// ---------------------------------------------------------------------------------------------

// logits [B*T, V], ids [B, T] -> tokenLogprobs [B*T], probs [B*T, V].
// Row b*T + t - 1 predicts ids[b*T + t]; entry t of tokenLogprobs is log p(ids[t] | ids[<t]) for
// 1 <= t < lengths[b] and 0 elsewhere. probs holds the softmax of the rows that predict something (the
// rest is left as it was), so backward needs no exp. Given kernels with element-wise loops (probs and
// logits from their alloc()), the rows are shared out over their threads.
/** Next-token log-probabilities of a batch. */
export function tokenLogprobsForward(
  tokenLogprobs: Float32Array,
  probs: Float32Array,
  logits: Float32Array,
  ids: Int32Array,
  lengths: Int32Array,
  B: number,
  T: number,
  V: number,
  kernels?: Kernels,
): void {
  tokenLogprobs.fill(0, 0, B * T);
  const simd = kernels?.elementwise;
  if (simd !== undefined) {
    const { rows, targets, positions } = predictingRows(ids, lengths, B, T);
    const max = new Float32Array(rows.length);
    const sum = new Float64Array(rows.length);
    simd.softmaxRows(probs, logits, rows, V, max, sum);
    for (let i = 0; i < rows.length; i++)
      tokenLogprobs[positions[i]] = logits[rows[i] * V + targets[i]] - max[i] - Math.log(sum[i]);
    return;
  }
  for (let b = 0; b < B; b++) {
    for (let t = 1; t < lengths[b]; t++) {
      const off = (b * T + t - 1) * V;
      let max = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < V; j++) if (logits[off + j] > max) max = logits[off + j];
      let sum = 0;
      for (let j = 0; j < V; j++) {
        const e = fastExp(logits[off + j] - max);
        probs[off + j] = e;
        sum += e;
      }
      const inv = 1 / sum;
      for (let j = 0; j < V; j++) probs[off + j] *= inv;
      tokenLogprobs[b * T + t] = logits[off + ids[b * T + t]] - max - Math.log(sum);
    }
  }
}

/** The rows b*T + t - 1 that predict a token (1 <= t < lengths[b]), their targets ids[b*T + t] and positions b*T + t. */
function predictingRows(
  ids: Int32Array,
  lengths: Int32Array,
  B: number,
  T: number,
): { rows: Int32Array; targets: Int32Array; positions: Int32Array } {
  let count = 0;
  for (let b = 0; b < B; b++) count += Math.max(0, lengths[b] - 1);
  const rows = new Int32Array(count);
  const targets = new Int32Array(count);
  const positions = new Int32Array(count);
  let i = 0;
  for (let b = 0; b < B; b++)
    for (let t = 1; t < lengths[b]; t++, i++) {
      rows[i] = b * T + t - 1;
      positions[i] = b * T + t;
      targets[i] = ids[b * T + t];
    }
  return { rows, targets, positions };
}

// dTokenLogprobs [B*T] -> dlogits [B*T, V] (overwritten). For the row predicting token t:
//   dlogits_j = g_t (1[j = ids[t]] - softmax_j).  Rows that predict nothing are zero.
// Kernels as for tokenLogprobsForward (dlogits from their alloc(); g is rounded to fp32 there).
/** Backward of tokenLogprobsForward. */
export function tokenLogprobsBackward(
  dlogits: Float32Array,
  dTokenLogprobs: ArrayLike<number>,
  probs: Float32Array,
  ids: Int32Array,
  lengths: Int32Array,
  B: number,
  T: number,
  V: number,
  kernels?: Kernels,
): void {
  const simd = kernels?.elementwise;
  if (simd !== undefined) {
    const all = predictingRows(ids, lengths, B, T);
    const keep: number[] = [];
    for (let i = 0; i < all.rows.length; i++) if (dTokenLogprobs[all.positions[i]] !== 0) keep.push(i);
    const rows = Int32Array.from(keep, (i) => all.rows[i]);
    const written = new Uint8Array(B * T);
    for (const r of rows) written[r] = 1;
    // Zero only the rows the kernel does not overwrite (at large vocabularies, most of the bytes).
    for (let r = 0; r < B * T; r++) if (written[r] === 0) dlogits.fill(0, r * V, (r + 1) * V);
    simd.softmaxRowsBackward(
      dlogits,
      probs,
      rows,
      Int32Array.from(keep, (i) => all.targets[i]),
      Float32Array.from(keep, (i) => dTokenLogprobs[all.positions[i]]),
      V,
    );
    return;
  }
  dlogits.fill(0, 0, B * T * V);
  for (let b = 0; b < B; b++) {
    for (let t = 1; t < lengths[b]; t++) {
      const g = dTokenLogprobs[b * T + t];
      if (g === 0) continue;
      const off = (b * T + t - 1) * V;
      for (let j = 0; j < V; j++) dlogits[off + j] = -g * probs[off + j];
      dlogits[off + ids[b * T + t]] += g;
    }
  }
}

/** log(sum_j exp(x[off + j])) over V entries, stable. */
export function logSumExp(x: Float32Array, off: number, V: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let j = 0; j < V; j++) if (x[off + j] > max) max = x[off + j];
  let sum = 0;
  for (let j = 0; j < V; j++) sum += fastExp(x[off + j] - max);
  return max + Math.log(sum);
}
