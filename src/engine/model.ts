/**
 * A Llama decoder (Hugging Face LlamaForCausalLM semantics, fp32) with hand-written forward and
 * backward passes over whole batches, for scoring and training; with a score head it is the reward
 * model (LlamaForSequenceClassification). Incremental decoding with a KV cache lives in decode.ts and
 * runs on this model's weights.
 *
 * Memory: parameters live in one big buffer laid out in `llamaParamSpecs` order, gradients in a second
 * buffer with the same layout, activations in one arena (arena.ts) planned for the largest batch seen
 * so far (`reserve` grows it only when needed). All of them come from `kernels.alloc`, so a WASM
 * backend computes on them in place. The q/k/v and the gate/up projections are adjacent in the
 * parameter order, so each pair runs as one fused matmul.
 */
import type { Rng } from "../util/rng.js";
import { KernelArena } from "./arena.js";
import { type LlamaConfig, type ModelDims, modelDims } from "./config.js";
import type { Kernels } from "./kernels/types.js";
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
} from "./layers.js";
import { isBias, llamaParamSpecs, type NamedTensor, numel, type ParamSpec } from "./params.js";

/**
 * A right-padded batch of token sequences. ids is row-major [batch, seqLen]; row b holds real tokens
 * at t < lengths[b]. lossMask[b*seqLen + t] = 1 when token t (t >= 1) is scored as predicted from the
 * tokens before it (a response mask over target positions); padding positions are never scored.
 */
export interface TokenBatch {
  ids: Int32Array;
  batch: number;
  seqLen: number;
  lengths: Int32Array;
  lossMask: Uint8Array;
}

/** What `forward` returns. */
export interface ForwardResult {
  /** [batch*seqLen]: entry t = log p(ids[t] | ids[<t]); 0 at t = 0 and at padding. */
  tokenLogprobs: Float32Array;
  /** [batch]: sum of tokenLogprobs over the loss mask. */
  seqLogprobs: Float64Array;
  /** [batch]: number of scored tokens. */
  tokenCounts: Int32Array;
}

/** Options of a model instance. */
export interface LlamaModelOptions {
  /** Add `score.weight` [1, hidden] (reward model) instead of an untied `lm_head.weight`. */
  scoreHead?: boolean;
}

/** Options of `loadTensors`. */
export interface LoadTensorsOptions {
  /** Parameters that may be absent (they keep their current values), e.g. a fresh score head. */
  allowMissing?: readonly string[];
}

/**
 * Views into one layer's weights (or gradients); qkv and gu are the fused adjacent projections (and
 * qkvBias, guBias their fused biases). Tensors the family does not have are null.
 */
export interface LayerWeights {
  ln1: Float32Array; // [C]
  qkv: Float32Array; // [qDim + 2*kvDim, C]
  qkvBias: Float32Array | null; // [qDim + 2*kvDim]
  o: Float32Array; // [C, qDim]
  oBias: Float32Array | null; // [C]
  qNorm: Float32Array | null; // [D]
  kNorm: Float32Array | null; // [D]
  ln2: Float32Array; // [C]
  gu: Float32Array; // [2I, C]
  guBias: Float32Array | null; // [2I]
  down: Float32Array; // [C, I]
  downBias: Float32Array | null; // [C]
}

/** What one layer keeps from forward for backward. */
interface LayerActivations {
  ln1: Float32Array; // [N, C]
  rstd1: Float32Array; // [N]
  q: Float32Array; // [B, H, T, D] after RoPE
  k: Float32Array; // [B, KVH, T, D] after RoPE
  qRaw: Float32Array; // [B, H, T, D] before the q norm (empty without q/k norms)
  kRaw: Float32Array; // [B, KVH, T, D] before the k norm (empty without q/k norms)
  qRstd: Float32Array; // [B*H*T] (empty without q/k norms)
  kRstd: Float32Array; // [B*KVH*T] (empty without q/k norms)
  v: Float32Array; // [B, KVH, T, D]
  probs: Float32Array; // [B, H, T*T]
  attn: Float32Array; // [N, qDim] attention output before o_proj
  xMid: Float32Array; // [N, C] residual after attention
  ln2: Float32Array; // [N, C]
  rstd2: Float32Array; // [N]
  gu: Float32Array; // [N, 2I] gate | up
  sig: Float32Array; // [N, I] sigmoid(gate)
}

/** The activation arena: per-layer state plus forward and backward scratch. */
interface Activations {
  /** Every layer has its own buffers (training); false: one set shared by all layers (scoring only). */
  keepsAll: boolean;
  tokens: number; // capacity in token rows N = B*T
  probsPerLayer: number; // capacity B*H*T*T
  scoresSquare: number; // capacity T*T
  resid: Float32Array[]; // L+1 of [N, C]: input of each layer, then the last layer's output
  layers: LayerActivations[];
  lnf: Float32Array; // [N, C]
  rstdf: Float32Array; // [N]
  logits: Float32Array; // [N, V] (empty without an LM head)
  probs: Float32Array; // [N, V] softmax of the rows that predict a token
  h: Float32Array; // [N, I] silu(gate) * up of the current layer
  qkvFlat: Float32Array; // [N, qkvDim]; also dqkv in backward
  heads: Float32Array; // [B, H, T, D] attention output; also d(attention output) in backward
  dResid: Float32Array; // [N, C]
  dLn: Float32Array; // [N, C]
  dq: Float32Array; // [B, H, T, D]
  dk: Float32Array; // [B, KVH, T, D]
  dv: Float32Array; // [B, KVH, T, D]
  dAttn: Float32Array; // [N, qDim]
  dScores: Float32Array; // [B, H, T*T] like probs
  dGu: Float32Array; // [N, 2I]
  dH: Float32Array; // [N, I]
  dLogits: Float32Array; // [N, V]
}

/** Options of a forward pass. */
export interface ForwardOptions {
  /** Keep every layer's activations for a backward pass (default true); false: scoring only. */
  keep?: boolean;
}

/** The batch whose activations are held for backward. */
interface Pending {
  kind: "lm" | "score";
  ids: Int32Array;
  lengths: Int32Array;
  lossMask: Uint8Array;
  B: number;
  T: number;
}

/** A Llama decoder with parameters, gradients and activations in kernel memory. */
export class LlamaModel {
  readonly config: LlamaConfig;
  readonly dims: ModelDims;
  readonly specs: ParamSpec[];
  readonly params: Float32Array;
  readonly hasScoreHead: boolean;
  /** True when next-token log-probs are available (lm_head.weight or tied embeddings). */
  readonly hasLmHead: boolean;

  /** The kernels every buffer of this model was allocated from. */
  readonly kernels: Kernels;
  /** The RoPE table of this model's head size and base (decode.ts grows it for its caches). */
  readonly rope: RopeTable;
  private readonly index = new Map<string, { offset: number; shape: number[] }>();
  private readonly qDim: number;
  private readonly kvDim: number;
  private readonly qkvDim: number;
  private readonly weights: LayerWeights[];
  /** Gradients and their per-layer views: allocated by the first use, so inference never pays for them. */
  private gradBuffer: Float32Array | null = null;
  private gradWeights: LayerWeights[] = [];
  private readonly paramCount: number;
  private acts: Activations | null = null;
  /** The one kernel buffer all activations are carved from (regrown as batches grow). */
  private readonly actsArena: KernelArena;
  private pending: Pending | null = null;

  /** Allocates parameters and gradients (zero) for a config; fill them with initRandom or loadTensors. */
  constructor(config: LlamaConfig, kernels: Kernels, options: LlamaModelOptions = {}) {
    this.config = config;
    this.kernels = kernels;
    this.actsArena = new KernelArena(kernels);
    this.dims = modelDims(config);
    this.hasScoreHead = options.scoreHead === true;
    this.hasLmHead = !this.hasScoreHead || this.dims.tied;
    this.specs = llamaParamSpecs(config, { scoreHead: this.hasScoreHead });
    let total = 0;
    for (const spec of this.specs) {
      this.index.set(spec.name, { offset: total, shape: spec.shape });
      total += numel(spec.shape);
    }
    this.params = kernels.alloc(total);
    this.paramCount = total;
    const d = this.dims;
    this.qDim = d.heads * d.headDim;
    this.kvDim = d.kvHeads * d.headDim;
    this.qkvDim = this.qDim + 2 * this.kvDim;
    this.rope = new RopeTable(d.headDim, d.ropeTheta, d.ropeScaling);
    this.weights = [];
    for (let l = 0; l < d.layers; l++) {
      this.weights.push(this.layerViews(this.params, l));
    }
  }

  /** Views of layer l's weights in `buffer`, checking that the fused pairs really are adjacent. */
  private layerViews(buffer: Float32Array, l: number): LayerWeights {
    const p = `model.layers.${l}`;
    const d = this.dims;
    const I = d.intermediate;
    // A fused view starting at `first` whose last part must be `last`, `lastSize` floats long.
    const fused = (first: string, last: string, total: number, lastSize: number): Float32Array => {
      const start = this.offsetOf(first);
      if (this.offsetOf(last) !== start + total - lastSize)
        throw new Error(`llamaParamSpecs order changed: ${first} .. ${last} must stay adjacent`);
      return buffer.subarray(start, start + total);
    };
    const optional = (name: string): Float32Array | null =>
      this.index.has(name) ? this.view(buffer, name) : null;
    const attn = `${p}.self_attn`;
    return {
      ln1: this.view(buffer, `${p}.input_layernorm.weight`),
      qkv: fused(
        `${attn}.q_proj.weight`,
        `${attn}.v_proj.weight`,
        this.qkvDim * d.hidden,
        this.kvDim * d.hidden,
      ),
      qkvBias: d.qkvBias
        ? fused(`${attn}.q_proj.bias`, `${attn}.v_proj.bias`, this.qkvDim, this.kvDim)
        : null,
      o: this.view(buffer, `${attn}.o_proj.weight`),
      oBias: optional(`${attn}.o_proj.bias`),
      qNorm: optional(`${attn}.q_norm.weight`),
      kNorm: optional(`${attn}.k_norm.weight`),
      ln2: this.view(buffer, `${p}.post_attention_layernorm.weight`),
      gu: fused(`${p}.mlp.gate_proj.weight`, `${p}.mlp.up_proj.weight`, 2 * I * d.hidden, I * d.hidden),
      guBias: d.mlpBias ? fused(`${p}.mlp.gate_proj.bias`, `${p}.mlp.up_proj.bias`, 2 * I, I) : null,
      down: this.view(buffer, `${p}.mlp.down_proj.weight`),
      downBias: optional(`${p}.mlp.down_proj.bias`),
    };
  }

  // Views of layer l's gradients (allocating the gradient buffer if this is its first use).
  private gradLayer(l: number): LayerWeights {
    if (this.gradBuffer === null) void this.grads;
    return this.gradWeights[l];
  }

  private view(buffer: Float32Array, name: string): Float32Array {
    const entry = this.entry(name);
    return buffer.subarray(entry.offset, entry.offset + numel(entry.shape));
  }

  private entry(name: string): { offset: number; shape: number[] } {
    const entry = this.index.get(name);
    if (entry === undefined) throw new Error(`unknown parameter "${name}"`);
    return entry;
  }

  /** The LM head weight [V, C] (the embedding when tied), or null for a pure reward model. */
  private lmHead(buffer: Float32Array): Float32Array | null {
    if (!this.hasLmHead) return null;
    return this.view(buffer, this.dims.tied ? "model.embed_tokens.weight" : "lm_head.weight");
  }

  /** Views of layer l's weights (q/k/v and gate/up fused), for code that runs the decoder (decode.ts). */
  layerWeights(l: number): LayerWeights {
    return this.weights[l];
  }

  /** The LM head weight [V, C] (the embedding when tied), or null for a pure reward model. */
  lmHeadWeights(): Float32Array | null {
    return this.lmHead(this.params);
  }

  /** A view of one parameter tensor. */
  tensor(name: string): Float32Array {
    return this.view(this.params, name);
  }

  /** A view of one parameter's gradient. */
  gradTensor(name: string): Float32Array {
    return this.view(this.grads, name);
  }

  /**
   * The gradient buffer, same layout as `params` (zero when first allocated). Allocated on first access
   * (a backward pass, zeroGrad, an optimizer step), so a model that only scores or samples holds one
   * copy of the weights, not two.
   */
  get grads(): Float32Array {
    if (this.gradBuffer === null) {
      this.gradBuffer = this.kernels.alloc(this.paramCount);
      this.gradWeights = Array.from({ length: this.dims.layers }, (_, l) =>
        this.layerViews(this.gradBuffer!, l),
      );
    }
    return this.gradBuffer;
  }

  /** Offset of a parameter in `params` and `grads`. */
  offsetOf(name: string): number {
    return this.entry(name).offset;
  }

  /** Number of parameters. */
  get numParams(): number {
    return this.params.length;
  }

  /**
   * Copies tensors into the parameters by name, checking shapes. Unknown names are ignored (HF
   * checkpoints may carry e.g. lm_head.weight next to tied embeddings); a missing tensor is an error
   * naming it unless listed in allowMissing.
   */
  loadTensors(tensors: Iterable<NamedTensor>, options: LoadTensorsOptions = {}): void {
    const seen = new Set<string>();
    for (const t of tensors) {
      const entry = this.index.get(t.name);
      if (entry === undefined) continue;
      if (t.shape.length !== entry.shape.length || t.shape.some((s, i) => s !== entry.shape[i]))
        throw new Error(
          `tensor "${t.name}" has shape [${t.shape.join(", ")}], expected [${entry.shape.join(", ")}]`,
        );
      const n = numel(entry.shape);
      if (t.data.length !== n)
        throw new Error(`tensor "${t.name}" has ${t.data.length} values, expected ${n}`);
      this.params.set(t.data, entry.offset);
      seen.add(t.name);
    }
    const allowed = new Set(options.allowMissing ?? []);
    for (const spec of this.specs)
      if (!seen.has(spec.name) && !allowed.has(spec.name)) throw new Error(`missing tensor "${spec.name}"`);
  }

  /** Views of all parameters in spec order (for checkpoints). */
  namedTensors(): NamedTensor[] {
    return this.specs.map((s) => ({ name: s.name, shape: s.shape.slice(), data: this.tensor(s.name) }));
  }

  /** HF-style init: matrices ~ normal(0, std), biases 0, norm weights 1. */
  initRandom(rng: Rng, std = 0.02): void {
    for (const spec of this.specs) {
      const data = this.tensor(spec.name);
      if (isBias(spec.name)) data.fill(0);
      else if (spec.shape.length === 1) data.fill(1);
      else for (let i = 0; i < data.length; i++) data[i] = rng.normal() * std;
    }
  }

  /** Sets all gradients to zero (allocating them, zero, if this is their first use). */
  zeroGrad(): void {
    if (this.gradBuffer === null) void this.grads;
    else this.gradBuffer.fill(0);
  }

  /**
   * Makes sure activations fit a [batch, seqLen] batch; grows (never shrinks) the arena. `keep` false
   * plans for forwards that keep nothing for backward (scoring): one layer's buffers shared by every
   * layer and no backward scratch, so a 24-layer model's activations take about 1/24 of the memory.
   */
  reserve(batch: number, seqLen: number, keep = true): void {
    const d = this.dims;
    const tokens = batch * seqLen;
    const probs = batch * d.heads * seqLen * seqLen;
    const square = seqLen * seqLen;
    const a = this.acts;
    if (
      a !== null &&
      (a.keepsAll || !keep) &&
      tokens <= a.tokens &&
      probs <= a.probsPerLayer &&
      square <= a.scoresSquare
    )
      return;
    // Growing a scoring layout keeps it one; a training layout stays one (it serves scoring too).
    const keepsAll = keep || (a?.keepsAll ?? false);
    const N = Math.max(tokens, a?.tokens ?? 0);
    const P = Math.max(probs, a?.probsPerLayer ?? 0);
    const S = Math.max(square, a?.scoresSquare ?? 0);
    const { hidden: C, intermediate: I, vocab: V } = d;
    const V_ = this.hasLmHead ? V : 0;
    // Scoring: every layer reads resid[l] and writes resid[l + 1], so two buffers alternate.
    const residCount = keepsAll ? d.layers + 1 : 2;
    const layerCount = keepsAll ? d.layers : 1;
    const back = keepsAll ? 1 : 0;
    this.acts = this.actsArena.carve((take) => {
      const resid = Array.from({ length: residCount }, () => take(N * C));
      const layers = Array.from({ length: layerCount }, () => ({
        ln1: take(N * C),
        rstd1: take(N),
        q: take(N * this.qDim),
        k: take(N * this.kvDim),
        qRaw: take(d.qkNorm ? N * this.qDim : 0),
        kRaw: take(d.qkNorm ? N * this.kvDim : 0),
        qRstd: take(d.qkNorm ? N * d.heads : 0),
        kRstd: take(d.qkNorm ? N * d.kvHeads : 0),
        v: take(N * this.kvDim),
        probs: take(P),
        attn: take(N * this.qDim),
        xMid: take(N * C),
        ln2: take(N * C),
        rstd2: take(N),
        gu: take(N * 2 * I),
        sig: take(N * I),
      }));
      return {
        keepsAll,
        tokens: N,
        probsPerLayer: P,
        scoresSquare: S,
        resid: Array.from({ length: d.layers + 1 }, (_, l) => resid[l % residCount]),
        layers: Array.from({ length: d.layers }, (_, l) => layers[l % layerCount]),
        lnf: take(N * C),
        rstdf: take(N),
        logits: take(N * V_),
        probs: take(N * V_),
        h: take(N * I),
        qkvFlat: take(N * this.qkvDim),
        heads: take(N * this.qDim),
        dResid: take(back * N * C),
        dLn: take(back * N * C),
        dq: take(back * N * this.qDim),
        dk: take(back * N * this.kvDim),
        dv: take(back * N * this.kvDim),
        dAttn: take(back * N * this.qDim),
        dScores: take(back * P),
        dGu: take(back * N * 2 * I),
        dH: take(back * N * I),
        dLogits: take(back * N * V_),
      };
    });
    this.pending = null;
  }

  private checkBatch(batch: TokenBatch): void {
    const { batch: B, seqLen: T, ids, lengths, lossMask } = batch;
    if (!Number.isInteger(B) || B < 1 || !Number.isInteger(T) || T < 1)
      throw new Error(`batch shape must be positive integers, got [${B}, ${T}]`);
    if (ids.length !== B * T) throw new Error(`ids has ${ids.length} entries, expected ${B * T}`);
    if (lengths.length !== B) throw new Error(`lengths has ${lengths.length} entries, expected ${B}`);
    if (lossMask.length !== B * T)
      throw new Error(`lossMask has ${lossMask.length} entries, expected ${B * T}`);
    const V = this.dims.vocab;
    for (let b = 0; b < B; b++) {
      const len = lengths[b];
      if (!(len >= 0 && len <= T)) throw new Error(`lengths[${b}] = ${len} is outside [0, ${T}]`);
      for (let t = 0; t < len; t++) {
        const id = ids[b * T + t];
        if (!(id >= 0 && id < V))
          throw new Error(`token id ${id} at row ${b}, position ${t} is outside [0, ${V})`);
      }
    }
  }

  // ids [B, T] -> acts.lnf [N, C] (final-normed hidden states), keeping every layer's activations.
  private backboneForward(
    ids: Int32Array,
    lengths: Int32Array,
    B: number,
    T: number,
    keep: boolean,
  ): Activations {
    this.reserve(B, T, keep);
    // Without keep, the shared buffers are about to be overwritten: no backward may follow.
    if (!keep) this.pending = null;
    this.rope.ensure(T);
    const a = this.acts!;
    const d = this.dims;
    const k = this.kernels;
    const { hidden: C, intermediate: I, heads: H, kvHeads: KVH, headDim: D, eps } = d;
    const N = B * T;
    const qDim = this.qDim;
    const kvDim = this.kvDim;
    embeddingForward(a.resid[0], ids, lengths, B, T, this.tensor("model.embed_tokens.weight"), C);
    for (let l = 0; l < d.layers; l++) {
      const w = this.weights[l];
      const s = a.layers[l];
      const x = a.resid[l];
      const out = a.resid[l + 1];
      rmsnormForward(s.ln1, s.rstd1, x, w.ln1, N, C, eps, k);
      linearForward(k, a.qkvFlat, s.ln1, w.qkv, N, C, this.qkvDim);
      if (w.qkvBias !== null) biasForward(a.qkvFlat, w.qkvBias, N, this.qkvDim);
      if (w.qNorm !== null && w.kNorm !== null) {
        // Qwen3: q and k are RMS-normalised per head, then rotated
        splitHeads(s.qRaw, a.qkvFlat, this.qkvDim, 0, B, T, H, D, null, k);
        rmsnormForward(s.q, s.qRstd, s.qRaw, w.qNorm, B * H * T, D, eps, k);
        ropeHeadsInPlace(s.q, B, H, T, D, this.rope, 1);
        splitHeads(s.kRaw, a.qkvFlat, this.qkvDim, qDim, B, T, KVH, D, null, k);
        rmsnormForward(s.k, s.kRstd, s.kRaw, w.kNorm, B * KVH * T, D, eps, k);
        ropeHeadsInPlace(s.k, B, KVH, T, D, this.rope, 1);
      } else {
        splitHeads(s.q, a.qkvFlat, this.qkvDim, 0, B, T, H, D, this.rope, k);
        splitHeads(s.k, a.qkvFlat, this.qkvDim, qDim, B, T, KVH, D, this.rope, k);
      }
      splitHeads(s.v, a.qkvFlat, this.qkvDim, qDim + kvDim, B, T, KVH, D, null, k);
      attentionForward(k, a.heads, s.probs, s.q, s.k, s.v, B, T, H, KVH, D, lengths, d.slidingWindow);
      mergeHeads(s.attn, qDim, 0, a.heads, B, T, H, D, null, k);
      s.xMid.set(x.subarray(0, N * C));
      linearForward(k, s.xMid, s.attn, w.o, N, qDim, C, true);
      if (w.oBias !== null) biasForward(s.xMid, w.oBias, N, C);
      rmsnormForward(s.ln2, s.rstd2, s.xMid, w.ln2, N, C, eps, k);
      linearForward(k, s.gu, s.ln2, w.gu, N, C, 2 * I);
      if (w.guBias !== null) biasForward(s.gu, w.guBias, N, 2 * I);
      swigluForward(a.h, s.sig, s.gu, N, I, k);
      out.set(s.xMid.subarray(0, N * C));
      linearForward(k, out, a.h, w.down, N, I, C, true);
      if (w.downBias !== null) biasForward(out, w.downBias, N, C);
    }
    rmsnormForward(a.lnf, a.rstdf, a.resid[d.layers], this.tensor("model.norm.weight"), N, C, eps, k);
    return a;
  }

  // dLnf [N, C] (gradient of the final-normed hidden states) -> accumulates every parameter gradient.
  private backboneBackward(dLnf: Float32Array, p: Pending): void {
    const a = this.acts!;
    const d = this.dims;
    const k = this.kernels;
    const { hidden: C, intermediate: I, heads: H, kvHeads: KVH, headDim: D } = d;
    const { B, T, ids, lengths } = p;
    const N = B * T;
    const qDim = this.qDim;
    const kvDim = this.kvDim;
    const dResid = a.dResid;
    dResid.fill(0, 0, N * C);
    rmsnormBackward(
      dResid,
      this.gradTensor("model.norm.weight"),
      dLnf,
      a.resid[d.layers],
      this.tensor("model.norm.weight"),
      a.rstdf,
      N,
      C,
      k,
    );
    for (let l = d.layers - 1; l >= 0; l--) {
      const w = this.weights[l];
      const g = this.gradLayer(l);
      const s = a.layers[l];
      // MLP: out = xMid + down(swiglu(gu(rmsnorm(xMid))))
      swigluRecompute(a.h, s.gu, s.sig, N, I, k);
      if (g.downBias !== null) biasBackward(g.downBias, dResid, N, C);
      linearBackward(k, a.dH, g.down, dResid, a.h, w.down, N, I, C);
      swigluBackward(a.dGu, a.dH, s.gu, s.sig, N, I, k);
      if (g.guBias !== null) biasBackward(g.guBias, a.dGu, N, 2 * I);
      linearBackward(k, a.dLn, g.gu, a.dGu, s.ln2, w.gu, N, C, 2 * I);
      rmsnormBackward(dResid, g.ln2, a.dLn, s.xMid, w.ln2, s.rstd2, N, C, k);
      // attention: xMid = x + o(attention(rope(q), rope(k), v))
      if (g.oBias !== null) biasBackward(g.oBias, dResid, N, C);
      linearBackward(k, a.dAttn, g.o, dResid, s.attn, w.o, N, qDim, C);
      splitHeads(a.heads, a.dAttn, qDim, 0, B, T, H, D, null, k);
      attentionBackward(
        k,
        a.dq,
        a.dk,
        a.dv,
        a.dScores,
        a.heads,
        s.q,
        s.k,
        s.v,
        s.probs,
        B,
        T,
        H,
        KVH,
        D,
        lengths,
      );
      if (w.qNorm !== null && w.kNorm !== null && g.qNorm !== null && g.kNorm !== null) {
        // undo RoPE, then the per-head norms (a.heads is free scratch once attention's backward ran)
        ropeHeadsInPlace(a.dq, B, H, T, D, this.rope, -1);
        a.heads.fill(0, 0, N * qDim);
        rmsnormBackward(a.heads, g.qNorm, a.dq, s.qRaw, w.qNorm, s.qRstd, B * H * T, D, k);
        mergeHeads(a.qkvFlat, this.qkvDim, 0, a.heads, B, T, H, D, null, k);
        ropeHeadsInPlace(a.dk, B, KVH, T, D, this.rope, -1);
        a.heads.fill(0, 0, N * kvDim);
        rmsnormBackward(a.heads, g.kNorm, a.dk, s.kRaw, w.kNorm, s.kRstd, B * KVH * T, D, k);
        mergeHeads(a.qkvFlat, this.qkvDim, qDim, a.heads, B, T, KVH, D, null, k);
      } else {
        mergeHeads(a.qkvFlat, this.qkvDim, 0, a.dq, B, T, H, D, this.rope, k);
        mergeHeads(a.qkvFlat, this.qkvDim, qDim, a.dk, B, T, KVH, D, this.rope, k);
      }
      mergeHeads(a.qkvFlat, this.qkvDim, qDim + kvDim, a.dv, B, T, KVH, D, null, k);
      if (g.qkvBias !== null) biasBackward(g.qkvBias, a.qkvFlat, N, this.qkvDim);
      linearBackward(k, a.dLn, g.qkv, a.qkvFlat, s.ln1, w.qkv, N, C, this.qkvDim);
      rmsnormBackward(dResid, g.ln1, a.dLn, a.resid[l], w.ln1, s.rstd1, N, C, k);
    }
    embeddingBackward(this.gradTensor("model.embed_tokens.weight"), dResid, ids, lengths, B, T, C);
  }

  private remember(kind: "lm" | "score", batch: TokenBatch): Pending {
    this.pending = {
      kind,
      ids: batch.ids.slice(),
      lengths: batch.lengths.slice(),
      lossMask: batch.lossMask.slice(),
      B: batch.batch,
      T: batch.seqLen,
    };
    return this.pending;
  }

  private requirePending(kind: "lm" | "score"): Pending {
    const p = this.pending;
    if (p === null || p.kind !== kind)
      throw new Error(
        `backward needs the activations of a preceding ${kind === "lm" ? "forward" : "forwardScores"} call`,
      );
    return p;
  }

  /**
   * Next-token log-probs of a batch; keeps activations for backward unless `keep` is false (scoring
   * only: far less memory, and backward then throws). Both give the same bytes.
   */
  forward(batch: TokenBatch, options: ForwardOptions = {}): ForwardResult {
    const keep = options.keep ?? true;
    const lmHead = this.lmHead(this.params);
    if (lmHead === null) throw new Error("this reward model has no LM head; use forwardScores");
    this.checkBatch(batch);
    const { batch: B, seqLen: T, ids, lengths, lossMask } = batch;
    const N = B * T;
    const V = this.dims.vocab;
    const a = this.backboneForward(ids, lengths, B, T, keep);
    linearForward(this.kernels, a.logits, a.lnf, lmHead, N, this.dims.hidden, V);
    const tokenLogprobs = new Float32Array(N);
    tokenLogprobsForward(tokenLogprobs, a.probs, a.logits, ids, lengths, B, T, V, this.kernels);
    const seqLogprobs = new Float64Array(B);
    const tokenCounts = new Int32Array(B);
    for (let b = 0; b < B; b++) {
      for (let t = 1; t < lengths[b]; t++) {
        if (lossMask[b * T + t] === 0) continue;
        seqLogprobs[b] += tokenLogprobs[b * T + t];
        tokenCounts[b]++;
      }
    }
    if (keep) this.remember("lm", batch);
    return { tokenLogprobs, seqLogprobs, tokenCounts };
  }

  /** Full logits [batch*seqLen, vocab] (row b*T + t scores the token after position t); a fresh copy. */
  forwardLogits(batch: TokenBatch, options: ForwardOptions = {}): Float32Array {
    this.forward(batch, options);
    return this.acts!.logits.slice(0, batch.batch * batch.seqLen * this.dims.vocab);
  }

  /**
   * Backward from d(loss)/d(tokenLogprobs) [batch*seqLen] of the last forward; ACCUMULATES into grads.
   * Entries at t = 0 and padding are ignored. May be called more than once per forward.
   */
  backward(dTokenLogprobs: ArrayLike<number>): void {
    const p = this.requirePending("lm");
    const { B, T, ids, lengths } = p;
    const N = B * T;
    if (dTokenLogprobs.length !== N)
      throw new Error(`dTokenLogprobs has ${dTokenLogprobs.length} entries, expected ${N}`);
    const a = this.acts!;
    const { vocab: V, hidden: C } = this.dims;
    tokenLogprobsBackward(a.dLogits, dTokenLogprobs, a.probs, ids, lengths, B, T, V, this.kernels);
    linearBackward(
      this.kernels,
      a.dLn,
      this.lmHead(this.grads)!,
      a.dLogits,
      a.lnf,
      this.lmHead(this.params)!,
      N,
      C,
      V,
    );
    this.backboneBackward(a.dLn, p);
  }

  /** Backward from d(loss)/d(seqLogprobs) [batch], spread over each row's loss mask; accumulates. */
  backwardSeq(dSeqLogprobs: ArrayLike<number>): void {
    const p = this.requirePending("lm");
    if (dSeqLogprobs.length !== p.B)
      throw new Error(`dSeqLogprobs has ${dSeqLogprobs.length} entries, expected ${p.B}`);
    const dTok = new Float32Array(p.B * p.T);
    for (let b = 0; b < p.B; b++) {
      const g = dSeqLogprobs[b];
      for (let t = 1; t < p.lengths[b]; t++) if (p.lossMask[b * p.T + t] !== 0) dTok[b * p.T + t] = g;
    }
    this.backward(dTok);
  }

  /**
   * Reward scores [batch]: score.weight . (final-normed hidden state at the last real token), as HF
   * LlamaForSequenceClassification. Every row needs at least one token. Keeps activations for backward
   * unless `keep` is false (see forward).
   */
  forwardScores(batch: TokenBatch, options: ForwardOptions = {}): Float32Array {
    const keep = options.keep ?? true;
    if (!this.hasScoreHead) throw new Error("this model has no score head (construct with scoreHead: true)");
    this.checkBatch(batch);
    const { batch: B, seqLen: T, ids, lengths } = batch;
    for (let b = 0; b < B; b++)
      if (lengths[b] < 1) throw new Error(`row ${b} is empty: a score needs a token`);
    const a = this.backboneForward(ids, lengths, B, T, keep);
    const w = this.tensor("score.weight");
    const C = this.dims.hidden;
    const scores = new Float32Array(B);
    for (let b = 0; b < B; b++) {
      const off = (b * T + lengths[b] - 1) * C;
      let s = 0;
      for (let i = 0; i < C; i++) s += w[i] * a.lnf[off + i];
      scores[b] = s;
    }
    if (keep) this.remember("score", batch);
    return scores;
  }

  /** Backward from d(loss)/d(scores) [batch] of the last forwardScores; accumulates into grads. */
  backwardScores(dScores: ArrayLike<number>): void {
    const p = this.requirePending("score");
    if (dScores.length !== p.B) throw new Error(`dScores has ${dScores.length} entries, expected ${p.B}`);
    const a = this.acts!;
    const C = this.dims.hidden;
    const w = this.tensor("score.weight");
    const dw = this.gradTensor("score.weight");
    const dLnf = a.dLn;
    dLnf.fill(0, 0, p.B * p.T * C);
    for (let b = 0; b < p.B; b++) {
      const g = dScores[b];
      const off = (b * p.T + p.lengths[b] - 1) * C;
      for (let i = 0; i < C; i++) {
        dLnf[off + i] = g * w[i];
        dw[i] += g * a.lnf[off + i];
      }
    }
    this.backboneBackward(dLnf, p);
  }
}
