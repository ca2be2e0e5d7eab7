/**
 * Incremental decoding with a KV cache: prefill prompts into cache slots, then append one token per
 * slot per step, getting next-token logits without recomputing the prefix. It runs the same decoder
 * as LlamaModel's training forward (the same layer functions from layers.ts, the same weights and RoPE
 * table), on row chunks against cached keys and values; test/sampler.test.ts checks that its logits
 * equal a full forward at every step.
 *
 * Memory: each model has one decode arena (cache plus scratch) in kernel memory. A new createKvCache
 * call for the same model re-carves that arena, which makes earlier caches of the model stale.
 */
import { KernelArena } from "./arena.js";
import type { CachedAttentionJob } from "./kernels/types.js";
import {
  biasForward,
  firstVisibleKey,
  linearForward,
  rmsnormForward,
  ropeRowInPlace,
  softmaxSpanInPlace,
  swigluForward,
} from "./layers.js";
import type { LlamaModel } from "./model.js";

/** Rows in one chunk of cache extension; bounds decode scratch memory independently of prompt sizes. */
const DECODE_CHUNK_ROWS = 256;

/** Scratch for extending a cache, sized for `rows` token rows per chunk. */
interface DecodeWorkspace {
  rows: number;
  x: Float32Array; // [R, C] residual stream
  xn: Float32Array; // [R, C] normed
  rstd: Float32Array; // [R]
  headRstd: Float32Array; // [H] per-head rstd of the q/k norms (discarded)
  qkv: Float32Array; // [R, qkvDim]
  attn: Float32Array; // [R, qDim]
  gu: Float32Array; // [R, 2I]
  h: Float32Array; // [R, I]
  sig: Float32Array; // [R, I]
  qBlock: Float32Array; // [R*rep, D] queries of one slot and kv head
  oBlock: Float32Array; // [R*rep, D]
  scores: Float32Array; // [R*rep, maxLen]
  items: Int32Array; // fused attention's items, 6 ints per (row, kv head)
  xf: Float32Array; // [R, C] final-normed rows that want logits
  logits: Float32Array; // [slots, V]
}

/** One model's decode arena and the generation number that tells current caches from stale ones. */
class Decoder {
  readonly arena: KernelArena;
  generation = 0;
  work: DecodeWorkspace | null = null;

  constructor(readonly model: LlamaModel) {
    this.arena = new KernelArena(model.kernels);
  }
}

const decoders = new WeakMap<LlamaModel, Decoder>();

function decoderOf(model: LlamaModel): Decoder {
  let decoder = decoders.get(model);
  if (decoder === undefined) {
    decoder = new Decoder(model);
    decoders.set(model, decoder);
  }
  return decoder;
}

/**
 * A KV cache for `slots` sequences of up to `maxLen` tokens each, on `model`. Its memory is reused by
 * the next createKvCache call for the same model (kernel memory is recycled, not garbage-collected),
 * which makes this cache stale.
 */
export function createKvCache(model: LlamaModel, slots: number, maxLen: number): KvCache {
  if (!Number.isInteger(slots) || slots < 1 || !Number.isInteger(maxLen) || maxLen < 1)
    throw new Error(`KV cache needs positive integer slots and maxLen, got ${slots} and ${maxLen}`);
  const decoder = decoderOf(model);
  const d = model.dims;
  const { hidden: C, intermediate: I, headDim: D, kvHeads: KVH } = d;
  const qDim = d.heads * D;
  const qkvDim = qDim + 2 * KVH * D;
  const R = DECODE_CHUNK_ROWS;
  const rep = d.heads / KVH;
  const perCache = slots * KVH * maxLen * D;
  const layout = decoder.arena.carve((take) => ({
    keys: Array.from({ length: d.layers }, () => take(perCache)),
    values: Array.from({ length: d.layers }, () => take(perCache)),
    work: {
      rows: R,
      x: take(R * C),
      xn: take(R * C),
      rstd: take(R),
      headRstd: take(d.heads),
      qkv: take(R * qkvDim),
      attn: take(R * qDim),
      gu: take(R * 2 * I),
      h: take(R * I),
      sig: take(R * I),
      qBlock: take(R * rep * D),
      oBlock: take(R * rep * D),
      scores: take(R * rep * maxLen),
      items: new Int32Array(6 * R * KVH),
      xf: take(R * C),
      logits: take(slots * (model.hasLmHead ? d.vocab : 0)),
    } satisfies DecodeWorkspace,
  }));
  decoder.work = layout.work;
  model.rope.ensure(maxLen);
  decoder.generation++;
  return new KvCache(decoder, slots, maxLen, layout.keys, layout.values, decoder.generation);
}

/** Per-slot key/value storage for incremental decoding; create with `createKvCache`. */
export class KvCache {
  /** Tokens stored so far in each slot (the position of the next token). */
  readonly lengths: Int32Array;

  /** Use `createKvCache`. */
  constructor(
    private readonly decoder: Decoder,
    readonly slots: number,
    readonly maxLen: number,
    /** Per layer [slots, KVH, maxLen, D], RoPE applied. */
    readonly keys: Float32Array[],
    /** Per layer [slots, KVH, maxLen, D]. */
    readonly values: Float32Array[],
    readonly generation: number,
  ) {
    this.lengths = new Int32Array(slots);
  }

  /**
   * Appends prompt i to slot i (after what the slot holds) and returns logits [prompts.length, vocab]
   * for each prompt's last token: a view valid until the next call on a cache of this model.
   */
  prefill(prompts: readonly ArrayLike<number>[]): Float32Array {
    if (prompts.length > this.slots)
      throw new Error(`${prompts.length} prompts do not fit a cache of ${this.slots} slots`);
    let rows = 0;
    for (let i = 0; i < prompts.length; i++) {
      if (prompts[i].length < 1) throw new Error(`prompt ${i} is empty`);
      rows += prompts[i].length;
    }
    const rowSlot = new Int32Array(rows);
    const rowToken = new Int32Array(rows);
    const wantLogits = new Uint8Array(rows);
    let r = 0;
    for (let i = 0; i < prompts.length; i++) {
      const prompt = prompts[i];
      for (let t = 0; t < prompt.length; t++, r++) {
        rowSlot[r] = i;
        rowToken[r] = prompt[t];
      }
      wantLogits[r - 1] = 1;
    }
    return this.extend(rowSlot, rowToken, wantLogits);
  }

  /**
   * Appends tokens[i] to slot slots[i] for i < slots.length (distinct slots) and returns logits
   * [slots.length, vocab] for each: a view valid until the next call on a cache of this model.
   */
  decodeStep(slots: Int32Array, tokens: Int32Array): Float32Array {
    if (tokens.length !== slots.length)
      throw new Error(`decodeStep got ${slots.length} slots and ${tokens.length} tokens`);
    if (slots.length > this.slots)
      throw new Error(`decodeStep got ${slots.length} rows for a cache of ${this.slots} slots`);
    return this.extend(slots, tokens, new Uint8Array(slots.length).fill(1));
  }

  // Rows (slot, token) in order: each slot's rows consecutive and in sequence order -> logits of the
  // flagged rows [count, V]. Processes rows in chunks of DECODE_CHUNK_ROWS; K/V of a chunk are written
  // to the cache before its attention, so later rows of a slot see earlier ones.
  private extend(rowSlot: Int32Array, rowToken: Int32Array, wantLogits: Uint8Array): Float32Array {
    const decoder = this.decoder;
    if (this.generation !== decoder.generation || decoder.work === null)
      throw new Error("this KV cache is stale: a newer createKvCache call reused its memory");
    const model = decoder.model;
    const lmHead = model.lmHeadWeights();
    if (lmHead === null) throw new Error("this reward model has no LM head to decode with");
    const V = model.dims.vocab;
    const total = rowSlot.length;
    const positions = new Int32Array(total);
    const next = this.lengths.slice();
    for (let r = 0; r < total; r++) {
      const slot = rowSlot[r];
      if (!(slot >= 0 && slot < this.slots)) throw new Error(`slot ${slot} is outside [0, ${this.slots})`);
      const id = rowToken[r];
      if (!(id >= 0 && id < V)) throw new Error(`token id ${id} is outside [0, ${V})`);
      if (next[slot] >= this.maxLen) throw new Error(`slot ${slot} is full (${this.maxLen} tokens)`);
      positions[r] = next[slot]++;
    }
    const w = decoder.work;
    let produced = 0;
    for (let start = 0; start < total; start += w.rows) {
      const end = Math.min(total, start + w.rows);
      const rows: ChunkRows = { rowSlot, rowToken, positions, wantLogits, start, end };
      produced = extendChunk(model, this, w, rows, lmHead, produced);
    }
    this.lengths.set(next);
    return w.logits.subarray(0, produced * V);
  }
}

/** The rows [start, end) of one extension and where each goes. */
interface ChunkRows {
  rowSlot: Int32Array;
  rowToken: Int32Array;
  positions: Int32Array;
  wantLogits: Uint8Array;
  start: number;
  end: number;
}

// One chunk of rows: the decoder on M = end - start rows, attention against the cache. Writes the
// logits of flagged rows after the `produced` rows already written and returns the new count.
function extendChunk(
  model: LlamaModel,
  cache: KvCache,
  w: DecodeWorkspace,
  rows: ChunkRows,
  lmHead: Float32Array,
  produced: number,
): number {
  const k = model.kernels;
  const d = model.dims;
  const { hidden: C, intermediate: I, heads: H, kvHeads: KVH, headDim: D, eps, vocab: V } = d;
  const { rowSlot, rowToken, positions, wantLogits, start, end } = rows;
  const M = end - start;
  const qDim = H * D;
  const kvDim = KVH * D;
  const qkvDim = qDim + 2 * kvDim;
  const embed = model.tensor("model.embed_tokens.weight");
  for (let i = 0; i < M; i++)
    w.x.set(embed.subarray(rowToken[start + i] * C, rowToken[start + i] * C + C), i * C);
  for (let l = 0; l < d.layers; l++) {
    const lw = model.layerWeights(l);
    const keys = cache.keys[l];
    const values = cache.values[l];
    rmsnormForward(w.xn, w.rstd, w.x, lw.ln1, M, C, eps);
    linearForward(k, w.qkv, w.xn, lw.qkv, M, C, qkvDim);
    if (lw.qkvBias !== null) biasForward(w.qkv, lw.qkvBias, M, qkvDim);
    for (let i = 0; i < M; i++) {
      const pos = positions[start + i];
      const slot = rowSlot[start + i];
      const row = i * qkvDim;
      if (lw.qNorm !== null && lw.kNorm !== null) {
        // Qwen3: per-head RMSNorm of q and k (in place: each head is D contiguous floats) before RoPE
        const q = w.qkv.subarray(row, row + qDim);
        const kk = w.qkv.subarray(row + qDim, row + qDim + kvDim);
        rmsnormForward(q, w.headRstd, q, lw.qNorm, H, D, eps);
        rmsnormForward(kk, w.headRstd, kk, lw.kNorm, KVH, D, eps);
      }
      ropeRowInPlace(w.qkv, row, H, D, model.rope, pos);
      ropeRowInPlace(w.qkv, row + qDim, KVH, D, model.rope, pos);
      for (let kh = 0; kh < KVH; kh++) {
        const dst = ((slot * KVH + kh) * cache.maxLen + pos) * D;
        keys.set(w.qkv.subarray(row + qDim + kh * D, row + qDim + kh * D + D), dst);
        values.set(w.qkv.subarray(row + qDim + kvDim + kh * D, row + qDim + kvDim + kh * D + D), dst);
      }
    }
    cachedAttention(model, cache, w, l, rowSlot, positions, start, M);
    linearForward(k, w.x, w.attn, lw.o, M, qDim, C, true);
    if (lw.oBias !== null) biasForward(w.x, lw.oBias, M, C);
    rmsnormForward(w.xn, w.rstd, w.x, lw.ln2, M, C, eps);
    linearForward(k, w.gu, w.xn, lw.gu, M, C, 2 * I);
    if (lw.guBias !== null) biasForward(w.gu, lw.guBias, M, 2 * I);
    swigluForward(w.h, w.sig, w.gu, M, I, k);
    linearForward(k, w.x, w.h, lw.down, M, I, C, true);
    if (lw.downBias !== null) biasForward(w.x, lw.downBias, M, C);
  }
  let m = 0;
  for (let i = 0; i < M; i++) {
    if (wantLogits[start + i] === 0) continue;
    w.xf.set(w.x.subarray(i * C, i * C + C), m * C);
    m++;
  }
  if (m === 0) return produced;
  rmsnormForward(w.xf, w.rstd, w.xf, model.tensor("model.norm.weight"), m, C, eps);
  linearForward(k, w.logits.subarray(produced * V), w.xf, lmHead, m, C, V);
  return produced + m;
}

// w.qkv rows of the chunk (RoPE applied, K/V already in the cache) -> w.attn [M, qDim]. Consecutive
// rows of one slot form a block; per kv head, its rep query heads of all block rows are one matmul
// against the slot's cached keys, masked causally by position (and by the sliding window, if any).
// Blocks of a single row (every row of a decode step) go to the backend's fused kernel when it has
// one: one call for all of them instead of two small products and a softmax per row and kv head.
function cachedAttention(
  model: LlamaModel,
  cache: KvCache,
  w: DecodeWorkspace,
  layer: number,
  rowSlot: Int32Array,
  positions: Int32Array,
  start: number,
  M: number,
): void {
  const k = model.kernels;
  const fused = k.elementwise;
  const { heads: H, kvHeads: KVH, headDim: D, slidingWindow } = model.dims;
  const rep = H / KVH;
  const qDim = H * D;
  const qkvDim = qDim + 2 * KVH * D;
  const scale = 1 / Math.sqrt(D);
  const keys = cache.keys[layer];
  const values = cache.values[layer];
  const job: CachedAttentionJob = {
    q: w.qkv,
    out: w.attn,
    keys,
    values,
    scores: w.scores,
    items: w.items,
    count: 0,
    rep,
    headDim: D,
    scale,
  };
  let scoresUsed = 0;
  let i0 = 0;
  while (i0 < M) {
    const slot = rowSlot[start + i0];
    let i1 = i0 + 1;
    while (i1 < M && rowSlot[start + i1] === slot && positions[start + i1] === positions[start + i1 - 1] + 1)
      i1++;
    const n = i1 - i0;
    const p0 = positions[start + i0];
    const keyLen = p0 + n;
    if (fused !== undefined && n === 1) {
      const from = firstVisibleKey(p0, slidingWindow);
      for (let kh = 0; kh < KVH; kh++) {
        // the scores scratch holds every pending item's [rep, keyLen]: run what is queued when full
        if (scoresUsed + rep * keyLen > w.scores.length || job.count === w.items.length / 6) {
          fused.cachedAttention(job);
          job.count = 0;
          scoresUsed = 0;
        }
        const at = 6 * job.count++;
        w.items[at] = i0 * qkvDim + kh * rep * D;
        w.items[at + 1] = i0 * qDim + kh * rep * D;
        w.items[at + 2] = (slot * KVH + kh) * cache.maxLen * D;
        w.items[at + 3] = scoresUsed;
        w.items[at + 4] = from;
        w.items[at + 5] = keyLen;
        scoresUsed += rep * keyLen;
      }
      i0 = i1;
      continue;
    }
    const rowsQ = n * rep;
    for (let kh = 0; kh < KVH; kh++) {
      const kvOff = (slot * KVH + kh) * cache.maxLen * D;
      // a single row's rep query heads are already contiguous: skip the gather
      const q = n === 1 ? w.qkv.subarray(i0 * qkvDim + kh * rep * D) : w.qBlock;
      const o = n === 1 ? w.attn.subarray(i0 * qDim + kh * rep * D) : w.oBlock;
      if (n > 1)
        for (let i = 0; i < n; i++)
          w.qBlock.set(
            w.qkv.subarray((i0 + i) * qkvDim + kh * rep * D, (i0 + i) * qkvDim + (kh + 1) * rep * D),
            i * rep * D,
          );
      const s = w.scores;
      k.sgemm(false, true, rowsQ, keyLen, D, scale, q, keys.subarray(kvOff), 0, s);
      for (let i = 0; i < n; i++) {
        const from = firstVisibleKey(p0 + i, slidingWindow);
        const visible = p0 + i + 1;
        for (let r = 0; r < rep; r++) softmaxSpanInPlace(s, (i * rep + r) * keyLen, from, visible, keyLen);
      }
      k.sgemm(false, false, rowsQ, D, keyLen, 1, s, values.subarray(kvOff), 0, o);
      if (n > 1)
        for (let i = 0; i < n; i++)
          w.attn.set(w.oBlock.subarray(i * rep * D, (i + 1) * rep * D), (i0 + i) * qDim + kh * rep * D);
    }
    i0 = i1;
  }
  if (fused !== undefined && job.count > 0) fused.cachedAttention(job);
}
