/**
 * The compute kernels the engine runs on. Two backends implement this: `plain.ts` (TypeScript, the
 * reference every test compares against) and `wasm.ts` (AssemblyScript WASM SIMD on a worker pool).
 *
 * Memory rule: every Float32Array handed to a kernel must come from `alloc()` of the same Kernels
 * (or be a subarray of one), because the WASM backend reads it in place from its shared memory.
 * All matrices are row-major.
 */
export interface Kernels {
  /** Backend name for logs and benchmarks ("plain", "wasm-simd x2 threads", ...). */
  readonly name: string;

  /** Allocates a zero-filled fp32 buffer that kernels can read and write in place. */
  alloc(length: number): Float32Array;

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

  /** Releases worker threads (no-op for the plain backend). */
  dispose(): void;
}
