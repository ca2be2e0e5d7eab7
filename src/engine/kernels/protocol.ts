/**
 * The layout of the control SharedArrayBuffer through which the main thread hands sgemm jobs to the
 * worker threads, and the exports of build/kernels.wasm. Shared by pool.ts (main side) and worker.ts.
 *
 * Int32 words: GEN (job generation, bumped once per parallel call), DONE (participants finished),
 * STOP (set once by dispose), then one SLOT_WORDS slot per worker. A worker runs its slot only when the
 * slot's GEN word equals the generation it woke up for; the main thread writes that word last, after
 * every other field, so a worker never reads a half-written job.
 */
export const CONTROL = { GEN: 0, DONE: 1, STOP: 2, HEADER_WORDS: 4 } as const;

/** Word offsets inside a worker's slot. alpha and beta are stored as fp32 bits, addresses as uint32. */
export const SLOT = {
  GEN: 0,
  READY: 1,
  FAILED: 2,
  KIND: 3,
  TRANS_A: 4,
  TRANS_B: 5,
  M: 6,
  N: 7,
  K: 8,
  ALPHA: 9,
  A: 10,
  LDA: 11,
  B: 12,
  LDB: 13,
  BETA: 14,
  C: 15,
  LDC: 16,
  WORK: 17,
  WORDS: 20,
} as const;

/** Job kinds: which wasm entry point a slot runs. */
export const JOB_KIND = { PACKED: 0, SMALL: 1 } as const;

/** Byte length of the control buffer for a pool of `workers` workers. */
export function controlBytes(workers: number): number {
  return (CONTROL.HEADER_WORDS + workers * SLOT.WORDS) * 4;
}

/** Word index of field `field` in worker `index`'s slot. */
export function slotWord(index: number, field: number): number {
  return CONTROL.HEADER_WORDS + index * SLOT.WORDS + field;
}

/** The functions build/kernels.wasm exports (see assembly/kernels.ts). */
export interface KernelExports {
  packedWorkspaceFloats(): number;
  tileRows(): number;
  tileCols(): number;
  sgemmPacked(
    transA: number,
    transB: number,
    M: number,
    N: number,
    K: number,
    alpha: number,
    a: number,
    lda: number,
    b: number,
    ldb: number,
    beta: number,
    c: number,
    ldc: number,
    work: number,
  ): void;
  sgemmSmall(
    transA: number,
    transB: number,
    M: number,
    N: number,
    K: number,
    alpha: number,
    a: number,
    lda: number,
    b: number,
    ldb: number,
    beta: number,
    c: number,
    ldc: number,
  ): void;
}

/** One thread's share of an sgemm: the wasm call's arguments (addresses in bytes, strides in floats). */
export interface GemmJob {
  kind: number;
  transA: boolean;
  transB: boolean;
  M: number;
  N: number;
  K: number;
  alpha: number;
  a: number;
  lda: number;
  b: number;
  ldb: number;
  beta: number;
  c: number;
  ldc: number;
  work: number;
}

/** Runs one job on an instance of the kernels module. */
export function runJob(exports: KernelExports, job: GemmJob): void {
  const tA = job.transA ? 1 : 0;
  const tB = job.transB ? 1 : 0;
  if (job.kind === JOB_KIND.SMALL) {
    exports.sgemmSmall(
      tA,
      tB,
      job.M,
      job.N,
      job.K,
      job.alpha,
      job.a,
      job.lda,
      job.b,
      job.ldb,
      job.beta,
      job.c,
      job.ldc,
    );
  } else {
    exports.sgemmPacked(
      tA,
      tB,
      job.M,
      job.N,
      job.K,
      job.alpha,
      job.a,
      job.lda,
      job.b,
      job.ldb,
      job.beta,
      job.c,
      job.ldc,
      job.work,
    );
  }
}
