import type { GemmBatchItem, Kernels } from "./types.js";

/** The plain TypeScript kernels: simple, obviously correct loops; the reference for the fast path. */
export class PlainKernels implements Kernels {
  readonly name: string = "plain";
  readonly backend = "plain";
  readonly threads = 1;

  /** Allocates a zero-filled buffer on the JS heap. */
  alloc(length: number): Float32Array {
    return new Float32Array(length);
  }

  /** Nothing to do: the garbage collector frees JS heap buffers. */
  release(_view: Float32Array): void {}

  /** C = alpha * op(A) * op(B) + beta * C (see Kernels.sgemm). */
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
  ): void {
    plainSgemm(transA, transB, M, N, K, alpha, A, B, beta, C);
  }

  /** One sgemm per item (see Kernels.sgemmBatch). */
  sgemmBatch(
    transA: boolean,
    transB: boolean,
    alpha: number,
    beta: number,
    items: readonly GemmBatchItem[],
  ): void {
    for (const { M, N, K, A, B, C } of items) plainSgemm(transA, transB, M, N, K, alpha, A, B, beta, C);
  }

  /** No helper threads: always ready. */
  waitForWorkers(_timeoutMs?: number): boolean {
    return true;
  }

  /** Nothing to release. */
  dispose(): void {}
}

/** Reference sgemm in plain TypeScript, with loop orders that keep the inner loop contiguous. */
export function plainSgemm(
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
): void {
  const row = new Float64Array(N);
  for (let i = 0; i < M; i++) {
    row.fill(0);
    if (!transB) {
      // row += a_ik * B[k, :]
      for (let k = 0; k < K; k++) {
        const a = transA ? A[k * M + i] : A[i * K + k];
        if (a === 0) continue;
        const bOff = k * N;
        for (let j = 0; j < N; j++) row[j] += a * B[bOff + j];
      }
    } else {
      // row[j] = dot(A[i, :], B[j, :])
      for (let j = 0; j < N; j++) {
        let s = 0;
        const bOff = j * K;
        if (transA) for (let k = 0; k < K; k++) s += A[k * M + i] * B[bOff + k];
        else {
          const aOff = i * K;
          for (let k = 0; k < K; k++) s += A[aOff + k] * B[bOff + k];
        }
        row[j] = s;
      }
    }
    const cOff = i * N;
    if (beta === 0) for (let j = 0; j < N; j++) C[cOff + j] = alpha * row[j];
    else for (let j = 0; j < N; j++) C[cOff + j] = alpha * row[j] + beta * C[cOff + j];
  }
}
