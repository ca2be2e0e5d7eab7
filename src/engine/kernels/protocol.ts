/**
 * How the main thread and the worker threads share an sgemm: the job's parameters and a chunk counter
 * live in a small control SharedArrayBuffer; C is cut into a grid of chunks, and every thread (the main
 * one included) claims chunks one at a time until none is left. A thread that the OS deschedules simply
 * claims fewer chunks, so a busy core slows a call down instead of stalling it.
 *
 * Claiming is race-free across calls: NEXT holds CLOSED while the main thread writes a job, then
 * (tag << TAG_SHIFT) | index, where the tag comes from the job's generation. A thread compare-exchanges
 * NEXT from the value it read to value + 1, so a late thread holding an old value cannot claim a chunk
 * of a newer job, and it reads the job's fields only after its claim succeeded, while the main thread is
 * still waiting for that chunk and so cannot rewrite them.
 */
export const CONTROL = {
  GEN: 0,
  STOP: 1,
  NEXT: 2,
  COMPLETED: 3,
  FAILED: 4,
  KIND: 5,
  TRANS_A: 6,
  TRANS_B: 7,
  M: 8,
  N: 9,
  K: 10,
  ALPHA: 11,
  A: 12,
  LDA: 13,
  B: 14,
  LDB: 15,
  BETA: 16,
  C: 17,
  LDC: 18,
  ROW_CHUNK: 19,
  COL_CHUNK: 20,
  COL_CHUNKS: 21,
  CHUNKS: 22,
  /** First of one READY word per worker. */
  READY: 24,
} as const;

/** NEXT while no job is open. */
export const CLOSED = -1;
const TAG_SHIFT = 20;
const INDEX_MASK = (1 << TAG_SHIFT) - 1;
/** Most chunks one job may have. */
export const MAX_CHUNKS = INDEX_MASK;

/** The NEXT value that opens job `generation` at chunk 0. */
export function openValue(generation: number): number {
  return (generation & 0x7ff) << TAG_SHIFT;
}

/**
 * Job kinds: which wasm entry point a chunk runs. BATCH: `a` is a batch table, chunk i its record i.
 * ELEMENTWISE: `a` is an element-wise argument table (see assembly/kernels.ts elementwiseChunk).
 */
export const JOB_KIND = { PACKED: 0, SMALL: 1, BATCH: 2, ELEMENTWISE: 3 } as const;

/** Byte length of the control buffer for a pool of `workers` workers. */
export function controlBytes(workers: number): number {
  return (CONTROL.READY + workers) * 4;
}

/** The functions build/kernels.wasm exports (see assembly/kernels.ts). */
export interface KernelExports {
  packedWorkspaceFloats(): number;
  elementwiseChunk(table: number, index: number): void;
  swigluForward(h: number, sig: number, gu: number, N: number, I: number): void;
  swigluRecompute(h: number, gu: number, sig: number, N: number, I: number): void;
  swigluBackward(dgu: number, dh: number, gu: number, sig: number, N: number, I: number): void;
  tileRows(): number;
  tileCols(): number;
  batchItemBytes(): number;
  sgemmBatchItem(
    table: number,
    index: number,
    transA: number,
    transB: number,
    alpha: number,
    beta: number,
    work: number,
  ): void;
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

/** An sgemm as the wasm entry points take it (addresses in bytes, strides in floats), cut into chunks. */
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
  /** Rows and columns of C per chunk; chunk i covers row block floor(i / colChunks), column block i % colChunks. */
  rowChunk: number;
  colChunk: number;
  colChunks: number;
  chunks: number;
}

/** Runs chunk `index` of `job` on an instance of the kernels module with the thread's workspace. */
export function runChunk(exports: KernelExports, job: GemmJob, index: number, work: number): void {
  if (job.kind === JOB_KIND.ELEMENTWISE) {
    exports.elementwiseChunk(job.a, index);
    return;
  }
  if (job.kind === JOB_KIND.BATCH) {
    const tA = job.transA ? 1 : 0;
    const tB = job.transB ? 1 : 0;
    exports.sgemmBatchItem(job.a, index, tA, tB, job.alpha, job.beta, work);
    return;
  }
  const r0 = Math.floor(index / job.colChunks) * job.rowChunk;
  const c0 = (index % job.colChunks) * job.colChunk;
  const M = Math.min(job.rowChunk, job.M - r0);
  const N = Math.min(job.colChunk, job.N - c0);
  const a = job.transA ? job.a + r0 * 4 : job.a + r0 * job.lda * 4;
  const b = job.transB ? job.b + c0 * job.ldb * 4 : job.b + c0 * 4;
  const c = job.c + (r0 * job.ldc + c0) * 4;
  const tA = job.transA ? 1 : 0;
  const tB = job.transB ? 1 : 0;
  if (job.kind === JOB_KIND.SMALL) {
    exports.sgemmSmall(tA, tB, M, N, job.K, job.alpha, a, job.lda, b, job.ldb, job.beta, c, job.ldc);
  } else {
    exports.sgemmPacked(tA, tB, M, N, job.K, job.alpha, a, job.lda, b, job.ldb, job.beta, c, job.ldc, work);
  }
}

/** Typed views of one control buffer. */
export class ControlBlock {
  readonly words: Int32Array;
  private readonly uwords: Uint32Array;
  private readonly floats: Float32Array;

  /** Wraps `buffer` (controlBytes long). */
  constructor(buffer: SharedArrayBuffer) {
    this.words = new Int32Array(buffer);
    this.uwords = new Uint32Array(buffer);
    this.floats = new Float32Array(buffer);
  }

  /** Writes a job's fields (NEXT must be CLOSED meanwhile). */
  writeJob(job: GemmJob): void {
    const w = this.words;
    w[CONTROL.KIND] = job.kind;
    w[CONTROL.TRANS_A] = job.transA ? 1 : 0;
    w[CONTROL.TRANS_B] = job.transB ? 1 : 0;
    w[CONTROL.M] = job.M;
    w[CONTROL.N] = job.N;
    w[CONTROL.K] = job.K;
    this.floats[CONTROL.ALPHA] = job.alpha;
    this.uwords[CONTROL.A] = job.a;
    w[CONTROL.LDA] = job.lda;
    this.uwords[CONTROL.B] = job.b;
    w[CONTROL.LDB] = job.ldb;
    this.floats[CONTROL.BETA] = job.beta;
    this.uwords[CONTROL.C] = job.c;
    w[CONTROL.LDC] = job.ldc;
    w[CONTROL.ROW_CHUNK] = job.rowChunk;
    w[CONTROL.COL_CHUNK] = job.colChunk;
    w[CONTROL.COL_CHUNKS] = job.colChunks;
    w[CONTROL.CHUNKS] = job.chunks;
  }

  /** Reads the open job's fields (call only while holding a claimed chunk). */
  readJob(): GemmJob {
    const w = this.words;
    return {
      kind: w[CONTROL.KIND],
      transA: w[CONTROL.TRANS_A] !== 0,
      transB: w[CONTROL.TRANS_B] !== 0,
      M: w[CONTROL.M],
      N: w[CONTROL.N],
      K: w[CONTROL.K],
      alpha: this.floats[CONTROL.ALPHA],
      a: this.uwords[CONTROL.A],
      lda: w[CONTROL.LDA],
      b: this.uwords[CONTROL.B],
      ldb: w[CONTROL.LDB],
      beta: this.floats[CONTROL.BETA],
      c: this.uwords[CONTROL.C],
      ldc: w[CONTROL.LDC],
      rowChunk: w[CONTROL.ROW_CHUNK],
      colChunk: w[CONTROL.COL_CHUNK],
      colChunks: w[CONTROL.COL_CHUNKS],
      chunks: w[CONTROL.CHUNKS],
    };
  }

  /**
   * Claims and runs chunks of the open job until none is left. `job` is the caller's copy when it is
   * the main thread (which wrote it and drains only while it is open); workers pass undefined and read
   * the fields after each claim, since consecutive claims may belong to consecutive jobs.
   * Errors are recorded (FAILED) and returned, never thrown, so every claimed chunk is counted complete.
   */
  drain(exports: KernelExports, work: number, job: GemmJob | undefined): string | undefined {
    const w = this.words;
    let failure: string | undefined;
    for (;;) {
      const next = Atomics.load(w, CONTROL.NEXT);
      if (next === CLOSED) return failure;
      const index = next & INDEX_MASK;
      if (index >= w[CONTROL.CHUNKS]) return failure;
      if (Atomics.compareExchange(w, CONTROL.NEXT, next, next + 1) !== next) continue;
      const current = job ?? this.readJob();
      try {
        runChunk(exports, current, index, work);
      } catch (error) {
        failure = error instanceof Error ? error.message : String(error);
        Atomics.store(w, CONTROL.FAILED, 1);
      }
      if (Atomics.add(w, CONTROL.COMPLETED, 1) + 1 === current.chunks) Atomics.notify(w, CONTROL.COMPLETED);
    }
  }
}
