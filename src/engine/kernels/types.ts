/**
 * The compute kernels the engine runs on: this interface is the whole contract between the kernels and
 * the layers/model above them; nothing above checks which class it got. Three backends implement it:
 * `plain.ts` (TypeScript, the reference every test compares against), `wasm.ts` (AssemblyScript WASM
 * SIMD on a worker pool) and `blas.ts` (the platform's BLAS through FFI, on the WASM backend's memory).
 *
 * Memory rule: every Float32Array handed to a kernel must come from `alloc()` of the same Kernels
 * (or be a subarray of one), because the WASM and BLAS backends read it in place from their memory.
 * All matrices are row-major.
 */
export interface Kernels {
  /** Name for logs and benchmarks ("plain", "wasm-simd x2 threads", "blas OpenBLAS 0.3.21 Zen x2 threads"). */
  readonly name: string;
  /** Which implementation computes the products. */
  readonly backend: KernelBackend;
  /** Threads a product may use, the main thread included (1 for plain). */
  readonly threads: number;

  /** Allocates a zero-filled fp32 buffer that kernels can read and write in place. */
  alloc(length: number): Float32Array;

  /**
   * Returns a buffer from alloc() for reuse; the view (and subarrays of it) must not be used again.
   * Backends whose memory the garbage collector frees (plain) do nothing.
   */
  release(view: Float32Array): void;

  /**
   * C = alpha * op(A) * op(B) + beta * C, where op(A) is [M, K] and op(B) is [K, N], C is [M, N].
   * transA: A is stored [K, M]. transB: B is stored [N, K] (the usual linear layer: x @ W^T with W [out, in]).
   * beta = 0 overwrites C (C may hold garbage, even NaN); beta = 1 accumulates (gradients).
   */
  sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: Float32Array,
    B: Float32Array,
    beta: number,
    C: Float32Array,
  ): void;

  /**
   * Runs independent products sharing transposes and scalars (e.g. every attention head of a layer); a
   * backend may share them out over its threads. Each item's C equals what sgemm gives within fp32
   * rounding (bit for bit on the WASM backend). No item's C may overlap another item's A, B or C.
   */
  sgemmBatch(
    transA: boolean,
    transB: boolean,
    alpha: number,
    beta: number,
    items: readonly GemmBatchItem[],
  ): void;

  /**
   * Optional capability: element-wise loops compiled for this backend (SwiGLU); absent where only the
   * plain TypeScript loops in layers.ts exist.
   */
  readonly elementwise?: ElementwiseKernels;

  /** Blocks until helper threads can take work (a product never waits for them); false on timeout. */
  waitForWorkers(timeoutMs?: number): boolean;

  /** Optional diagnostics: bytes of kernel memory reserved now (its high-water mark). */
  heapBytes?(): number;

  /** Optional diagnostics: the thread pool's counters; undefined without workers. */
  poolStatistics?(): PoolStats | undefined;

  /** Releases threads and libraries; the kernels still compute afterwards, on the main thread. */
  dispose(): void;
}

/** The backends: the plain reference, WASM SIMD, and the platform BLAS (with WASM for the rest). */
export type KernelBackend = "plain" | "wasm" | "blas";

/** One product of a batch: C = alpha * op(A) * op(B) + beta * C with this item's shape and buffers. */
export interface GemmBatchItem {
  M: number;
  N: number;
  K: number;
  A: Float32Array;
  B: Float32Array;
  C: Float32Array;
}

/** One head's causal score block of attention: `scores` holds [len, len] floats (softmaxed in place). */
export interface SoftmaxBlock {
  scores: Float32Array;
  len: number;
}

/** One head's block for the softmax backward: ds [len, len] holds dP on entry, dS on return; p is P. */
export interface SoftmaxBackwardBlock {
  ds: Float32Array;
  p: Float32Array;
  len: number;
}

/**
 * Decoding rows' attention against a KV cache, one item per (row, kv head): its rep query heads
 * q[qAt + r D, +D) attend the keys [from, len) of keys/values[kvAt, + len D) (rows from position 0),
 * with scratch scores[scoresAt, + rep len); out[outAt + r D, +D) is overwritten. Offsets are in floats.
 */
export interface CachedAttentionJob {
  q: Float32Array;
  out: Float32Array;
  keys: Float32Array;
  values: Float32Array;
  scores: Float32Array;
  /** 6 ints per item: qAt, outAt, kvAt, scoresAt, from, len. */
  items: Int32Array;
  count: number;
  rep: number;
  headDim: number;
  /** Score scale, 1 / sqrt(headDim) for Llama. */
  scale: number;
}

/** RoPE's tables as layers.ts RopeTable holds them: cos and sin [positions, half] (any memory). */
export interface RopeTables {
  readonly half: number;
  readonly cos: Float32Array;
  readonly sin: Float32Array;
}

/** AdamW's per-step scalars (see optim.ts AdamW.step for the update they define). */
export interface AdamWScalars {
  stepSize: number;
  sqrtBc2: number;
  decay: number;
  beta1: number;
  beta2: number;
  eps: number;
}

/**
 * Element-wise loops compiled for a backend (shapes as the same-named functions of layers.ts); every
 * buffer from alloc(). Results differ from the plain loops by fp32 rounding only (AdamW: not at all),
 * SwiGLU's forward and recompute agree bit for bit, and every result is the same bytes at any thread
 * count: the work is cut into chunks by shape alone and partial sums are combined in a fixed order.
 */
export interface ElementwiseKernels {
  /** h [N, I] = silu(gate) * up, sig [N, I] = sigmoid(gate) from gu [N, 2I]. */
  swigluForward(h: Float32Array, sig: Float32Array, gu: Float32Array, N: number, I: number): void;
  /** h [N, I] rebuilt from gu and the saved sigmoid. */
  swigluRecompute(h: Float32Array, gu: Float32Array, sig: Float32Array, N: number, I: number): void;
  /** dgu [N, 2I] (overwritten) from dh [N, I]. */
  swigluBackward(
    dgu: Float32Array,
    dh: Float32Array,
    gu: Float32Array,
    sig: Float32Array,
    N: number,
    I: number,
  ): void;
  /**
   * Flat rows [B*T, srcStride] (heads at columns [col, col + heads*D)) -> dst [B, heads, T, D], each
   * vector rotated by RoPE at its position t when `rope` is given (the same bytes as layers.ts).
   */
  splitHeads(
    dst: Float32Array,
    src: Float32Array,
    srcStride: number,
    col: number,
    B: number,
    T: number,
    heads: number,
    D: number,
    rope: RopeTables | null,
  ): void;
  /** The reverse of splitHeads into dst's columns (overwritten), RoPE's inverse when `ropeInverse` is given. */
  mergeHeads(
    dst: Float32Array,
    dstStride: number,
    col: number,
    src: Float32Array,
    B: number,
    T: number,
    heads: number,
    D: number,
    ropeInverse: RopeTables | null,
  ): void;
  /** Causal softmax of each block in place, rows over their visible keys (window > 0: the last `window`). */
  causalSoftmax(blocks: readonly SoftmaxBlock[], window: number): void;
  /** dS = P (dP - rowsum(P dP)) on and below each block's diagonal, 0 above, in place of dP. */
  causalSoftmaxBackward(blocks: readonly SoftmaxBackwardBlock[]): void;
  /** out [N, C] = x * rstd * w, rstd [N] = 1 / sqrt(mean(x^2) + eps) per row. */
  rmsnormForward(
    out: Float32Array,
    rstd: Float32Array,
    x: Float32Array,
    w: Float32Array,
    N: number,
    C: number,
    eps: number,
  ): void;
  /** dx [N, C] and dw [C] accumulate RMSNorm's backward (see layers.ts rmsnormBackward). */
  rmsnormBackward(
    dx: Float32Array,
    dw: Float32Array,
    dout: Float32Array,
    x: Float32Array,
    w: Float32Array,
    rstd: Float32Array,
    N: number,
    C: number,
  ): void;
  /**
   * probs[r] = softmax(logits[r]) over V for each listed row r = rows[i]; max[i] and sum[i] get the row's
   * largest logit and sum of exp(logit - max), from which log-softmax follows (logit - max - log sum).
   */
  softmaxRows(
    probs: Float32Array,
    logits: Float32Array,
    rows: Int32Array,
    V: number,
    max: Float32Array,
    sum: Float64Array,
  ): void;
  /** dlogits[rows[i]] = g[i] (onehot(targets[i]) - probs[rows[i]]) over V (other rows untouched). */
  softmaxRowsBackward(
    dlogits: Float32Array,
    probs: Float32Array,
    rows: Int32Array,
    targets: Int32Array,
    g: Float32Array,
    V: number,
  ): void;
  /** Single-row attention against a KV cache (see CachedAttentionJob), one chunk per item. */
  cachedAttention(job: CachedAttentionJob): void;
  /**
   * One AdamW update of params in place (m, v, params and grads from alloc(); mask: one byte per
   * parameter in alloc() memory, or null), the same float64 arithmetic as optim.ts, so the same bytes.
   */
  adamw(
    params: Float32Array,
    grads: Float32Array,
    m: Float32Array,
    v: Float32Array,
    mask: Uint8Array | null,
    scalars: AdamWScalars,
  ): void;
}

/** Pool counters: parallel calls, those that stalled on a preempted helper, calls run solo as a result. */
export interface PoolStats {
  parallelCalls: number;
  stalledCalls: number;
  soloCalls: number;
  /** Total time the main thread waited for helpers after finishing its own chunks. */
  waitMs: number;
}
