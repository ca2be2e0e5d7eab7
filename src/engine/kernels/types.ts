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

/**
 * SwiGLU compiled for a backend (see layers.ts swigluForward for shapes); every buffer from alloc().
 * Results differ from the plain loops by fp32 rounding only; forward and recompute agree bit for bit.
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
}

/** Pool counters: parallel calls, those that stalled on a preempted helper, calls run solo as a result. */
export interface PoolStats {
  parallelCalls: number;
  stalledCalls: number;
  soloCalls: number;
  /** Total time the main thread waited for helpers after finishing its own chunks. */
  waitMs: number;
}
