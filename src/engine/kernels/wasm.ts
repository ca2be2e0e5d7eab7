import { readFileSync } from "node:fs";
import { checkBatch, checkDim, checkLength, checkNoOverlap, type SpaceOf } from "./checks.js";
import { KernelPool } from "./pool.js";
import { type GemmJob, JOB_KIND, type KernelExports, runChunk } from "./protocol.js";
import type {
  AdamWScalars,
  CachedAttentionJob,
  ElementwiseKernels,
  GemmBatchItem,
  Kernels,
  PoolStats,
  RopeTables,
  SoftmaxBackwardBlock,
  SoftmaxBlock,
} from "./types.js";
import { requireWebAssembly, type WasmMemory, type WasmModule } from "./webassembly.js";

/** Options of the WebAssembly backend. */
export interface WasmKernelsOptions {
  /** Threads that share an sgemm, the main thread included (1: no workers). */
  threads?: number;
  /** Microseconds a thread busy-waits before sleeping on a futex between back-to-back calls (50). */
  spinMicros?: number;
  /** false: the main thread only waits while workers compute (to test the workers; default true). */
  mainThreadWorks?: boolean;
  /** Upper bound of the shared memory in 64 KiB pages (default: the wasm32 limit, 4 GiB). */
  maxPages?: number;
}

const PAGE_BYTES = 65536;
/** The first page is never handed out, so address 0 is never a valid buffer. */
const HEAP_BASE = PAGE_BYTES;
/** Cache-line alignment; the kernels only need 16 bytes for their vectors. */
const ALIGN = 64;
/**
 * At most this many rows of C take the unpacked path (decode steps with a few sequences); measured
 * break-even against packing: about 16-24 rows for A B^T (dot products), about 8 for B untransposed.
 */
const SMALL_M_NT = 16;
const SMALL_M_NN = 8;

/** Whether the WASM kernels take their unpacked small-row path for this product (see SMALL_M_NT). */
export function isSmallProduct(transA: boolean, transB: boolean, M: number): boolean {
  return transB ? !transA && M <= SMALL_M_NT : M <= SMALL_M_NN;
}
/** Below this many multiply-adds, waking workers costs more than it saves. */
const PARALLEL_MIN_MACS = 1 << 18;
/**
 * The unpacked path (decode: a few rows against a weight matrix) streams memory more than it computes,
 * and a helper preempted by another process stalls the whole call: below this it runs on the main
 * thread alone (preset S greedy generation: ~4500 -> ~6500 tokens/s on a loaded 2-core machine).
 */
const SMALL_PARALLEL_MIN_MACS = 1 << 21;

/** Element-wise operations of assembly/kernels.ts elementwiseChunk (word 0 of its argument table). */
const OP = {
  SOFTMAX: 1,
  SOFTMAX_BACKWARD: 2,
  RMSNORM: 3,
  RMSNORM_BACKWARD: 4,
  ADAMW: 5,
  SOFTMAX_ROWS: 6,
  SOFTMAX_ROWS_BACKWARD: 7,
  SPLIT_HEADS: 8,
  MERGE_HEADS: 9,
  CACHED_ATTENTION: 10,
} as const;
/** Byte offset of the records (and AdamW's float64 scalars) in an element-wise argument table. */
const ARGS_RECORDS = 64;
/**
 * Floats per element-wise chunk: rows per chunk follow from the shape alone (never from the thread
 * count), so a partial sum always covers the same rows and results are the same bytes at any count.
 */
const ELEMENTWISE_CHUNK_FLOATS = 1 << 14;
/** AdamW's elements per chunk. */
const ADAMW_CHUNK = 1 << 16;
/** Below this many floats of work an element-wise job runs on the main thread alone. */
const ELEMENTWISE_PARALLEL_MIN = 1 << 16;
/**
 * Decode attention stays on the main thread below this many multiply-adds: at the M preset (8 rows,
 * 72 keys on average, about 3e5) waking a helper cost more than it saved (generation 0.96x), since
 * the rows' keys and values come from DRAM either way.
 */
const CACHED_ATTENTION_PARALLEL_MIN = 1 << 22;

/** Reads and compiles a kernels module; throws if the file is missing or the engine lacks SIMD/threads. */
export function loadKernelsModule(path: string): WasmModule {
  return new (requireWebAssembly().Module)(readFileSync(path));
}

/** Creates the shared memory, retrying smaller maxima where the platform refuses 4 GiB. */
function createSharedMemory(
  initialPages: number,
  maxPages: number,
): { memory: WasmMemory; maxPages: number } {
  let lastError: unknown;
  for (let max = maxPages; max >= Math.max(initialPages, 256); max = Math.floor(max / 2)) {
    try {
      return {
        memory: new (requireWebAssembly().Memory)({ initial: initialPages, maximum: max, shared: true }),
        maxPages: max,
      };
    } catch (error) {
      lastError = error;
    }
  }
  throw new Error(`cannot create the kernels' shared WebAssembly memory: ${String(lastError)}`);
}

interface FreeBlock {
  offset: number;
  bytes: number;
}

/**
 * Kernels on AssemblyScript WASM SIMD: one shared WebAssembly.Memory that alloc() carves buffers from,
 * sgemm run in place on those buffers by the main thread plus a pool of worker threads.
 */
export class WasmKernels implements Kernels, ElementwiseKernels {
  readonly name: string;
  readonly backend = "wasm";
  readonly threads: number;
  /** The SwiGLU loops, when the loaded build/kernels.wasm has them (a build older than them does not). */
  readonly elementwise: ElementwiseKernels | undefined;
  /** Every view of this memory is in one address space, whichever growth's buffer it was made on. */
  readonly spaceOf: SpaceOf = () => this.memory;
  private readonly memory: WasmMemory;
  private readonly kernels: KernelExports;
  private pool: KernelPool | undefined;
  private readonly mainThreadWorks: boolean;
  private readonly maxBytes: number;
  private readonly tileRows: number;
  private readonly tileCols: number;
  /** Every SharedArrayBuffer this memory has shown us: views over them are ours. */
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  private currentBuffer: SharedArrayBuffer;
  private top = HEAP_BASE;
  /** Everything at or above this address has never been handed out, so it is still zero. */
  private highWater = HEAP_BASE;
  private readonly freeBlocks: FreeBlock[] = [];
  private readonly live = new Map<number, number>();
  /** Batch table in the shared memory (grown on demand) and its record size in bytes. */
  private batchTable: Float32Array | undefined;
  private readonly batchItemBytes: number;
  /** Element-wise argument table in the shared memory (grown on demand). */
  private argsTable: Float32Array | undefined;
  /** The RoPE tables last used, copied into the shared memory (cos then sin), and their source. */
  private ropeCopy: { source: Float32Array; length: number; tables: Float32Array } | undefined;
  /** Scratch for RMSNorm backward's per-chunk dw partial sums (grown on demand). */
  private partials: Float32Array | undefined;
  /** Packing workspace per participating thread (index 0: the main thread). */
  private readonly workspaces: number[] = [];

  /** Instantiates `module` (build/kernels.wasm) on a new shared memory and starts threads - 1 workers. */
  constructor(module: WasmModule, options: WasmKernelsOptions = {}) {
    const threads = options.threads ?? 1;
    if (!Number.isInteger(threads) || threads < 1) {
      throw new RangeError(`threads must be a positive integer, got ${threads}`);
    }
    const shared = createSharedMemory(64, options.maxPages ?? 65536);
    this.memory = shared.memory;
    this.maxBytes = shared.maxPages * PAGE_BYTES;
    this.currentBuffer = this.memory.buffer as SharedArrayBuffer;
    this.buffers.add(this.currentBuffer);
    const instance = new (requireWebAssembly().Instance)(module, { env: { memory: this.memory } });
    this.kernels = instance.exports as unknown as KernelExports;
    this.tileRows = this.kernels.tileRows();
    this.tileCols = this.kernels.tileCols();
    this.batchItemBytes = this.kernels.batchItemBytes();
    const workBytes = roundUp(this.kernels.packedWorkspaceFloats() * 4, ALIGN);
    for (let t = 0; t < threads; t++) this.workspaces.push(this.reserve(workBytes));
    this.highWater = this.top;
    this.threads = threads;
    this.mainThreadWorks = options.mainThreadWorks ?? true;
    this.pool =
      threads > 1
        ? new KernelPool(module, this.memory, this.workspaces.slice(1), options.spinMicros ?? 50)
        : undefined;
    this.name = `wasm-simd x${threads} thread${threads === 1 ? "" : "s"}`;
    this.elementwise =
      typeof this.kernels.swigluForward === "function" && typeof this.kernels.elementwiseChunk === "function"
        ? this
        : undefined;
  }

  /** Allocates a zero-filled, 64-byte aligned buffer in the shared memory (grows it when needed). */
  alloc(length: number): Float32Array {
    if (!Number.isInteger(length) || length < 0) {
      throw new RangeError(`alloc length must be a non-negative integer, got ${length}`);
    }
    const bytes = roundUp(Math.max(length * 4, 1), ALIGN);
    const offset = this.takeFree(bytes) ?? this.reserve(bytes);
    this.live.set(offset, bytes);
    const view = new Float32Array(this.refreshBuffer(), offset, length);
    // Never-used pages are zero already; anything below the high-water mark held someone's numbers.
    if (offset < this.highWater) view.subarray(0, Math.min(length, (this.highWater - offset) / 4)).fill(0);
    this.highWater = Math.max(this.highWater, offset + bytes);
    return view;
  }

  /** Returns a buffer from alloc() for reuse (see Kernels.release). */
  release(view: Float32Array): void {
    const bytes = this.live.get(view.byteOffset);
    if (!this.buffers.has(view.buffer) || bytes === undefined) {
      throw new Error("release: the view was not returned by alloc() of these kernels (or was released)");
    }
    this.live.delete(view.byteOffset);
    this.addFree(view.byteOffset, bytes);
  }

  /** C = alpha * op(A) * op(B) + beta * C (see Kernels.sgemm), in place in the shared memory. */
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
    checkDim("M", M);
    checkDim("N", N);
    checkDim("K", K);
    this.checkOperand("A", A, M * K);
    this.checkOperand("B", B, K * N);
    this.checkOperand("C", C, M * N);
    if (M === 0 || N === 0) return;
    checkNoOverlap("A", A, M * K, C, M * N, this.spaceOf);
    checkNoOverlap("B", B, K * N, C, M * N, this.spaceOf);
    const small = isSmallProduct(transA, transB, M);
    const job: GemmJob = {
      kind: small ? JOB_KIND.SMALL : JOB_KIND.PACKED,
      transA,
      transB,
      M,
      N,
      K,
      alpha,
      a: A.byteOffset,
      lda: transA ? M : K,
      b: B.byteOffset,
      ldb: transB ? K : N,
      beta,
      c: C.byteOffset,
      ldc: N,
      rowChunk: M,
      colChunk: N,
      colChunks: 1,
      chunks: 1,
    };
    const pool = this.pool;
    // Without main-thread work (a test mode) every product goes to the workers, to exercise them.
    const minMacs = small && this.mainThreadWorks ? SMALL_PARALLEL_MIN_MACS : PARALLEL_MIN_MACS;
    const helpers = pool !== undefined && M * N * K >= minMacs && pool.useHelpers() ? pool.readyCount() : 0;
    if (pool === undefined || helpers === 0) {
      runChunk(this.kernels, job, 0, this.workspaces[0]);
      return;
    }
    // About four chunks per thread balances a busy core; chunks stay big enough that packing is cheap.
    const target = 4 * (1 + helpers);
    let rowChunk = small ? M : roundUp(Math.min(M, 24 * this.tileRows), this.tileRows);
    let colChunk = Math.min(roundUp(N, this.tileCols), 512);
    const count = (): number => Math.ceil(M / rowChunk) * Math.ceil(N / colChunk);
    while (count() < target && colChunk > 64) colChunk = roundUp(colChunk / 2, this.tileCols);
    while (!small && count() < target && rowChunk > 32) rowChunk = roundUp(rowChunk / 2, this.tileRows);
    job.rowChunk = rowChunk;
    job.colChunk = colChunk;
    job.colChunks = Math.ceil(N / colChunk);
    job.chunks = count();
    if (job.chunks === 1) runChunk(this.kernels, job, 0, this.workspaces[0]);
    else pool.run(this.kernels, job, this.workspaces[0], this.mainThreadWorks);
  }

  /** Runs a batch of independent products as one pool job, bit for bit as sgemm (see Kernels.sgemmBatch). */
  sgemmBatch(
    transA: boolean,
    transB: boolean,
    alpha: number,
    beta: number,
    items: readonly GemmBatchItem[],
  ): void {
    const count = items.length;
    if (count === 0) return;
    const macs = checkBatch(
      items,
      (label, view, needed) => this.checkOperand(label, view, needed),
      this.spaceOf,
    );
    const words = this.batchTableFor(count);
    for (let i = 0; i < count; i++) {
      const { M, N, K, A, B, C } = items[i];
      const small = isSmallProduct(transA, transB, M);
      const w = i * (this.batchItemBytes / 4);
      words[w] = small ? JOB_KIND.SMALL : JOB_KIND.PACKED;
      words[w + 1] = M;
      words[w + 2] = N;
      words[w + 3] = K;
      words[w + 4] = A.byteOffset;
      words[w + 5] = transA ? M : K;
      words[w + 6] = B.byteOffset;
      words[w + 7] = transB ? K : N;
      words[w + 8] = C.byteOffset;
      words[w + 9] = N;
    }
    const job: GemmJob = {
      kind: JOB_KIND.BATCH,
      transA,
      transB,
      M: 0,
      N: 0,
      K: 0,
      alpha,
      a: words.byteOffset,
      lda: 0,
      b: 0,
      ldb: 0,
      beta,
      c: 0,
      ldc: 0,
      rowChunk: 0,
      colChunk: 0,
      colChunks: 0,
      chunks: count,
    };
    const pool = this.pool;
    const parallel = pool !== undefined && count > 1 && macs >= PARALLEL_MIN_MACS && pool.useHelpers();
    if (parallel && pool.readyCount() > 0) {
      pool.run(this.kernels, job, this.workspaces[0], this.mainThreadWorks);
    } else {
      for (let i = 0; i < count; i++) runChunk(this.kernels, job, i, this.workspaces[0]);
    }
  }

  /** SwiGLU forward in WASM SIMD (see ElementwiseKernels; use it through `elementwise`). */
  swigluForward(h: Float32Array, sig: Float32Array, gu: Float32Array, N: number, I: number): void {
    this.checkOperand("h", h, N * I);
    this.checkOperand("sig", sig, N * I);
    this.checkOperand("gu", gu, N * 2 * I);
    this.kernels.swigluForward(h.byteOffset, sig.byteOffset, gu.byteOffset, N, I);
  }

  /** SwiGLU output from the saved sigmoid (see ElementwiseKernels). */
  swigluRecompute(h: Float32Array, gu: Float32Array, sig: Float32Array, N: number, I: number): void {
    this.checkOperand("h", h, N * I);
    this.checkOperand("sig", sig, N * I);
    this.checkOperand("gu", gu, N * 2 * I);
    this.kernels.swigluRecompute(h.byteOffset, gu.byteOffset, sig.byteOffset, N, I);
  }

  /** SwiGLU backward in WASM SIMD (see ElementwiseKernels). */
  swigluBackward(
    dgu: Float32Array,
    dh: Float32Array,
    gu: Float32Array,
    sig: Float32Array,
    N: number,
    I: number,
  ): void {
    this.checkOperand("dgu", dgu, N * 2 * I);
    this.checkOperand("dh", dh, N * I);
    this.checkOperand("sig", sig, N * I);
    this.checkOperand("gu", gu, N * 2 * I);
    this.kernels.swigluBackward(dgu.byteOffset, dh.byteOffset, gu.byteOffset, sig.byteOffset, N, I);
  }

  /** Flat rows to head-major vectors with RoPE, in fixed row chunks (see ElementwiseKernels). */
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
  ): void {
    this.checkOperand("src", src, B * T * srcStride);
    this.checkOperand("dst", dst, B * heads * T * D);
    this.moveHeads(OP.SPLIT_HEADS, src, srcStride, col, dst, B, T, heads, D, rope, 1);
  }

  /** Head-major vectors back to flat rows with RoPE's inverse, in fixed row chunks (see ElementwiseKernels). */
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
  ): void {
    this.checkOperand("dst", dst, B * T * dstStride);
    this.checkOperand("src", src, B * heads * T * D);
    this.moveHeads(OP.MERGE_HEADS, dst, dstStride, col, src, B, T, heads, D, ropeInverse, -1);
  }

  /** Causal softmax of attention's score blocks, one chunk per block (see ElementwiseKernels). */
  causalSoftmax(blocks: readonly SoftmaxBlock[], window: number): void {
    let work = 0;
    for (const { scores, len } of blocks) {
      this.checkOperand("scores", scores, len * len);
      work += len * len;
    }
    const t = this.argsFor(blocks.length * 2);
    t.words[0] = OP.SOFTMAX;
    t.words[3] = window;
    for (let i = 0; i < blocks.length; i++) {
      t.words[16 + 2 * i] = blocks[i].scores.byteOffset;
      t.words[17 + 2 * i] = blocks[i].len;
    }
    this.runElementwise(t.table, blocks.length, work);
  }

  /** The causal softmax's backward per block, one chunk per block (see ElementwiseKernels). */
  causalSoftmaxBackward(blocks: readonly SoftmaxBackwardBlock[]): void {
    let work = 0;
    for (const { ds, p, len } of blocks) {
      this.checkOperand("ds", ds, len * len);
      this.checkOperand("p", p, len * len);
      work += len * len;
    }
    const t = this.argsFor(blocks.length * 3);
    t.words[0] = OP.SOFTMAX_BACKWARD;
    for (let i = 0; i < blocks.length; i++) {
      t.words[16 + 3 * i] = blocks[i].ds.byteOffset;
      t.words[17 + 3 * i] = blocks[i].p.byteOffset;
      t.words[18 + 3 * i] = blocks[i].len;
    }
    this.runElementwise(t.table, blocks.length, work);
  }

  /** RMSNorm forward in fixed row chunks (see ElementwiseKernels). */
  rmsnormForward(
    out: Float32Array,
    rstd: Float32Array,
    x: Float32Array,
    w: Float32Array,
    N: number,
    C: number,
    eps: number,
  ): void {
    this.checkOperand("out", out, N * C);
    this.checkOperand("rstd", rstd, N);
    this.checkOperand("x", x, N * C);
    this.checkOperand("w", w, C);
    const per = rowsPerChunk(C);
    const t = this.argsFor(0);
    t.words[0] = OP.RMSNORM;
    t.words[1] = per;
    t.words[2] = N;
    t.words[3] = out.byteOffset;
    t.words[4] = rstd.byteOffset;
    t.words[5] = x.byteOffset;
    t.words[6] = w.byteOffset;
    t.words[7] = C;
    t.floats[8] = eps;
    this.runElementwise(t.table, Math.ceil(N / per), N * C);
  }

  /**
   * RMSNorm backward: dx rows in fixed chunks, each chunk's dw contribution into its own partial row,
   * the partials then added to dw in chunk order (see ElementwiseKernels).
   */
  rmsnormBackward(
    dx: Float32Array,
    dw: Float32Array,
    dout: Float32Array,
    x: Float32Array,
    w: Float32Array,
    rstd: Float32Array,
    N: number,
    C: number,
  ): void {
    this.checkOperand("dx", dx, N * C);
    this.checkOperand("dw", dw, C);
    this.checkOperand("dout", dout, N * C);
    this.checkOperand("x", x, N * C);
    this.checkOperand("w", w, C);
    this.checkOperand("rstd", rstd, N);
    if (N === 0) return;
    const per = rowsPerChunk(C);
    const chunks = Math.ceil(N / per);
    if (this.partials === undefined || this.partials.length < chunks * C) {
      if (this.partials !== undefined) this.release(this.partials);
      this.partials = this.alloc(chunks * C);
    }
    const part = this.partials;
    const t = this.argsFor(0);
    t.words[0] = OP.RMSNORM_BACKWARD;
    t.words[1] = per;
    t.words[2] = N;
    t.words[3] = dx.byteOffset;
    t.words[4] = part.byteOffset;
    t.words[5] = dout.byteOffset;
    t.words[6] = x.byteOffset;
    t.words[7] = w.byteOffset;
    t.words[8] = rstd.byteOffset;
    t.words[9] = C;
    this.runElementwise(t.table, chunks, N * C);
    for (let c = 0; c < chunks; c++) {
      const off = c * C;
      for (let i = 0; i < C; i++) dw[i] += part[off + i];
    }
  }

  /** Softmax of listed rows with each row's max and sum of exponentials (see ElementwiseKernels). */
  softmaxRows(
    probs: Float32Array,
    logits: Float32Array,
    rows: Int32Array,
    V: number,
    max: Float32Array,
    sum: Float64Array,
  ): void {
    const count = rows.length;
    let last = -1;
    for (let i = 0; i < count; i++) last = Math.max(last, rows[i]);
    this.checkOperand("probs", probs, (last + 1) * V);
    this.checkOperand("logits", logits, (last + 1) * V);
    if (count === 0) return;
    const out = this.alloc(4 * count);
    try {
      const t = this.argsFor(count * 2);
      t.words[0] = OP.SOFTMAX_ROWS;
      t.words[1] = 1;
      t.words[2] = count;
      t.words[3] = logits.byteOffset;
      t.words[4] = probs.byteOffset;
      t.words[5] = out.byteOffset;
      t.words[6] = V;
      for (let i = 0; i < count; i++) {
        t.words[16 + 2 * i] = rows[i];
        t.words[17 + 2 * i] = 0;
      }
      this.runElementwise(t.table, count, count * V);
      const sums = new Float64Array(out.buffer, out.byteOffset, 2 * count);
      for (let i = 0; i < count; i++) {
        max[i] = out[4 * i];
        sum[i] = sums[2 * i + 1];
      }
    } finally {
      this.release(out);
    }
  }

  /** Backward of the listed rows' log-softmax (see ElementwiseKernels). */
  softmaxRowsBackward(
    dlogits: Float32Array,
    probs: Float32Array,
    rows: Int32Array,
    targets: Int32Array,
    g: Float32Array,
    V: number,
  ): void {
    const count = rows.length;
    let last = -1;
    for (let i = 0; i < count; i++) {
      last = Math.max(last, rows[i]);
      if (!(targets[i] >= 0 && targets[i] < V))
        throw new RangeError(`target ${targets[i]} outside [0, ${V})`);
    }
    this.checkOperand("dlogits", dlogits, (last + 1) * V);
    this.checkOperand("probs", probs, (last + 1) * V);
    if (count === 0) return;
    const t = this.argsFor(count * 3);
    t.words[0] = OP.SOFTMAX_ROWS_BACKWARD;
    t.words[1] = 1;
    t.words[2] = count;
    t.words[3] = dlogits.byteOffset;
    t.words[4] = probs.byteOffset;
    t.words[6] = V;
    for (let i = 0; i < count; i++) {
      t.words[16 + 3 * i] = rows[i];
      t.words[17 + 3 * i] = targets[i];
      t.floats[18 + 3 * i] = g[i];
    }
    this.runElementwise(t.table, count, count * V);
  }

  /** One AdamW update in fixed element chunks, float64 as optim.ts (see ElementwiseKernels). */
  adamw(
    params: Float32Array,
    grads: Float32Array,
    m: Float32Array,
    v: Float32Array,
    mask: Uint8Array | null,
    scalars: AdamWScalars,
  ): void {
    const size = params.length;
    this.checkOperand("params", params, size);
    this.checkOperand("grads", grads, size);
    this.checkOperand("m", m, size);
    this.checkOperand("v", v, size);
    if (mask !== null && (!this.buffers.has(mask.buffer) || mask.length < size)) {
      throw new Error("adamw: mask was not allocated by these kernels or is too short");
    }
    if (size === 0) return;
    const t = this.argsFor(12);
    t.words[0] = OP.ADAMW;
    t.words[1] = ADAMW_CHUNK;
    t.words[2] = size;
    t.words[3] = params.byteOffset;
    t.words[4] = grads.byteOffset;
    t.words[5] = m.byteOffset;
    t.words[6] = v.byteOffset;
    t.words[7] = mask === null ? 0 : mask.byteOffset;
    const f = new Float64Array(t.table.buffer, t.table.byteOffset + ARGS_RECORDS, 6);
    f[0] = scalars.stepSize;
    f[1] = scalars.sqrtBc2;
    f[2] = scalars.decay;
    f[3] = scalars.beta1;
    f[4] = scalars.beta2;
    f[5] = scalars.eps;
    this.runElementwise(t.table, Math.ceil(size / ADAMW_CHUNK), size);
  }

  /** Decoding rows' attention against a KV cache, one chunk per (row, kv head) item (see ElementwiseKernels). */
  cachedAttention(job: CachedAttentionJob): void {
    const { q, out, keys, values, scores, items, count, rep, headDim: D, scale } = job;
    if (!(Number.isInteger(rep) && rep >= 1 && Number.isInteger(D) && D >= 1))
      throw new RangeError(`cachedAttention needs positive integer rep and headDim, got ${rep} and ${D}`);
    if (!(Number.isInteger(count) && count >= 0 && items.length >= 6 * count))
      throw new RangeError(`cachedAttention: ${count} items need ${6 * count} ints, got ${items.length}`);
    this.checkOperand("q", q, 0);
    this.checkOperand("out", out, 0);
    this.checkOperand("keys", keys, 0);
    this.checkOperand("values", values, 0);
    this.checkOperand("scores", scores, 0);
    checkNoOverlap("q", q, q.length, out, out.length, this.spaceOf);
    checkNoOverlap("keys", keys, keys.length, out, out.length, this.spaceOf);
    checkNoOverlap("values", values, values.length, out, out.length, this.spaceOf);
    checkNoOverlap("scores", scores, scores.length, out, out.length, this.spaceOf);
    if (count === 0) return;
    const inside = (at: number, floats: number, view: Float32Array): boolean =>
      at >= 0 && at + floats <= view.length;
    const t = this.argsFor(count * 7);
    t.words[0] = OP.CACHED_ATTENTION;
    t.words[3] = rep;
    t.words[4] = D;
    t.floats[5] = scale;
    let work = 0;
    for (let i = 0; i < count; i++) {
      const at = 6 * i;
      const qAt = items[at];
      const outAt = items[at + 1];
      const kvAt = items[at + 2];
      const scoresAt = items[at + 3];
      const from = items[at + 4];
      const len = items[at + 5];
      if (!(len >= 1 && from >= 0 && from < len))
        throw new RangeError(
          `cachedAttention item ${i}: visible keys [${from}, ${len}) are empty or negative`,
        );
      if (!inside(qAt, rep * D, q) || !inside(outAt, rep * D, out) || !inside(scoresAt, rep * len, scores))
        throw new RangeError(`cachedAttention item ${i}: q, out or scores offset outside its buffer`);
      if (!inside(kvAt, len * D, keys) || !inside(kvAt, len * D, values))
        throw new RangeError(`cachedAttention item ${i}: ${len} cached rows at ${kvAt} exceed the cache`);
      const r = 16 + 7 * i;
      t.words[r] = q.byteOffset + 4 * qAt;
      t.words[r + 1] = out.byteOffset + 4 * outAt;
      t.words[r + 2] = keys.byteOffset + 4 * kvAt;
      t.words[r + 3] = values.byteOffset + 4 * kvAt;
      t.words[r + 4] = scores.byteOffset + 4 * scoresAt;
      t.words[r + 5] = from;
      t.words[r + 6] = len;
      work += 2 * rep * (len - from) * D;
    }
    this.runElementwise(t.table, count, work >= CACHED_ATTENTION_PARALLEL_MIN ? work : 0);
  }

  /** Blocks until every worker can take jobs; false on timeout (see Kernels.waitForWorkers). */
  waitForWorkers(timeoutMs = 10000): boolean {
    return this.pool === undefined ? true : this.pool.waitUntilReady(timeoutMs);
  }

  /** Thread pool counters (see Kernels.poolStatistics); undefined without workers. */
  poolStatistics(): PoolStats | undefined {
    return this.pool?.statistics();
  }

  /** Bytes reserved by allocations now (see Kernels.heapBytes). */
  heapBytes(): number {
    return this.top;
  }

  /** Terminates the workers; sgemm keeps working on the main thread alone. */
  dispose(): void {
    this.pool?.dispose();
    this.pool = undefined;
  }

  /** A table for `count` batch records (Uint32 words, since addresses may exceed 2 GiB). */
  private batchTableFor(count: number): Uint32Array {
    const floats = (count * this.batchItemBytes) / 4;
    if (this.batchTable === undefined || this.batchTable.length < floats) {
      if (this.batchTable !== undefined) this.release(this.batchTable);
      this.batchTable = this.alloc(Math.max(floats, 2 * (this.batchTable?.length ?? 0)));
    }
    const table = this.batchTable;
    return new Uint32Array(table.buffer, table.byteOffset, floats);
  }

  private moveHeads(
    op: number,
    flat: Float32Array,
    stride: number,
    col: number,
    heads: Float32Array,
    B: number,
    T: number,
    H: number,
    D: number,
    rope: RopeTables | null,
    sign: number,
  ): void {
    if (col + H * D > stride) throw new RangeError(`heads at column ${col} overrun rows of ${stride}`);
    if (rope !== null && (rope.half * 2 !== D || rope.cos.length < T * rope.half)) {
      throw new RangeError(
        `RoPE tables of ${rope.cos.length / rope.half} positions, ${2 * rope.half} wide, for ${T} x ${D}`,
      );
    }
    const tables = rope === null ? undefined : this.ropeTables(rope);
    const N = B * T;
    const per = rowsPerChunk(H * D);
    const t = this.argsFor(0);
    t.words[0] = op;
    t.words[1] = per;
    t.words[2] = N;
    t.words[3] = flat.byteOffset;
    t.words[4] = stride;
    t.words[5] = col;
    t.words[6] = heads.byteOffset;
    t.words[7] = T;
    t.words[8] = H;
    t.words[9] = D;
    t.words[10] = tables === undefined ? 0 : tables.byteOffset;
    t.words[11] = tables === undefined ? 0 : tables.byteOffset + 4 * rope!.cos.length;
    t.floats[12] = sign;
    this.runElementwise(t.table, Math.ceil(N / per), N * H * D);
  }

  /** cos then sin of `rope` in the shared memory, copied again only when the tables changed. */
  private ropeTables(rope: RopeTables): Float32Array {
    const copy = this.ropeCopy;
    if (copy !== undefined && copy.source === rope.cos && copy.length === rope.cos.length) return copy.tables;
    if (copy !== undefined) this.release(copy.tables);
    const tables = this.alloc(2 * rope.cos.length);
    tables.set(rope.cos);
    tables.set(rope.sin, rope.cos.length);
    this.ropeCopy = { source: rope.cos, length: rope.cos.length, tables };
    return tables;
  }

  /** An argument table with room for `recordWords` words of records, and its word and float views. */
  private argsFor(recordWords: number): { table: Float32Array; words: Uint32Array; floats: Float32Array } {
    const floats = ARGS_RECORDS / 4 + recordWords;
    if (this.argsTable === undefined || this.argsTable.length < floats) {
      if (this.argsTable !== undefined) this.release(this.argsTable);
      this.argsTable = this.alloc(Math.max(floats, 2 * (this.argsTable?.length ?? 0), 64));
    }
    const table = this.argsTable;
    return { table, words: new Uint32Array(table.buffer, table.byteOffset, floats), floats: table };
  }

  /** Runs `chunks` chunks of the element-wise job in `table`, on the pool when `work` floats merit it. */
  private runElementwise(table: Float32Array, chunks: number, work: number): void {
    if (chunks === 0) return;
    const pool = this.pool;
    const job: GemmJob = {
      kind: JOB_KIND.ELEMENTWISE,
      transA: false,
      transB: false,
      M: 0,
      N: 0,
      K: 0,
      alpha: 0,
      a: table.byteOffset,
      lda: 0,
      b: 0,
      ldb: 0,
      beta: 0,
      c: 0,
      ldc: 0,
      rowChunk: 0,
      colChunk: 0,
      colChunks: 0,
      chunks,
    };
    const parallel =
      pool !== undefined && chunks > 1 && work >= ELEMENTWISE_PARALLEL_MIN && pool.useHelpers();
    if (parallel && pool.readyCount() > 0) {
      pool.run(this.kernels, job, this.workspaces[0], this.mainThreadWorks);
    } else {
      for (let i = 0; i < chunks; i++) this.kernels.elementwiseChunk(table.byteOffset, i);
    }
  }

  /** Whether this backend's unpacked small-row path takes the product (BLAS hands those to it). */
  prefersSmallProduct(transA: boolean, transB: boolean, M: number): boolean {
    return isSmallProduct(transA, transB, M);
  }

  /** Throws unless `view` lies in this memory (from alloc) and holds `needed` floats. */
  checkOperand(label: string, view: Float32Array, needed: number): void {
    if (!(view instanceof Float32Array) || !this.buffers.has(view.buffer)) {
      throw new Error(`sgemm: ${label} was not allocated by these kernels (use kernels.alloc)`);
    }
    checkLength(label, view, needed);
  }

  private refreshBuffer(): SharedArrayBuffer {
    const buffer = this.memory.buffer as SharedArrayBuffer;
    if (buffer !== this.currentBuffer) {
      this.buffers.add(buffer);
      this.currentBuffer = buffer;
    }
    return buffer;
  }

  /** Takes bytes from the end of the heap, growing the memory by at least a quarter at a time. */
  private reserve(bytes: number): number {
    const offset = this.top;
    const end = offset + bytes;
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      if (end > this.maxBytes) {
        throw new RangeError(
          `kernels memory exhausted: ${end} bytes needed, the shared memory is limited to ${this.maxBytes}`,
        );
      }
      const havePages = have / PAGE_BYTES;
      const needPages = Math.ceil(end / PAGE_BYTES);
      const maxPages = this.maxBytes / PAGE_BYTES;
      const target = Math.min(maxPages, Math.max(needPages, Math.ceil(havePages * 1.25)));
      this.memory.grow(target - havePages);
      this.refreshBuffer();
    }
    this.top = end;
    return offset;
  }

  private takeFree(bytes: number): number | undefined {
    const blocks = this.freeBlocks;
    for (let i = 0; i < blocks.length; i++) {
      const block = blocks[i];
      if (block.bytes < bytes) continue;
      const offset = block.offset;
      if (block.bytes === bytes) blocks.splice(i, 1);
      else {
        block.offset += bytes;
        block.bytes -= bytes;
      }
      return offset;
    }
    return undefined;
  }

  /** Inserts a block into the address-ordered free list, merging neighbours and trimming the top. */
  private addFree(offset: number, bytes: number): void {
    const blocks = this.freeBlocks;
    let i = 0;
    while (i < blocks.length && blocks[i].offset < offset) i++;
    blocks.splice(i, 0, { offset, bytes });
    if (i + 1 < blocks.length && offset + bytes === blocks[i + 1].offset) {
      blocks[i].bytes += blocks[i + 1].bytes;
      blocks.splice(i + 1, 1);
    }
    if (i > 0 && blocks[i - 1].offset + blocks[i - 1].bytes === blocks[i].offset) {
      blocks[i - 1].bytes += blocks[i].bytes;
      blocks.splice(i, 1);
      i--;
    }
    const last = blocks[blocks.length - 1];
    if (last !== undefined && last.offset + last.bytes === this.top) {
      this.top = last.offset;
      blocks.pop();
    }
  }
}

/** Rows of C floats per element-wise chunk: a fixed function of C, so chunks never depend on threads. */
function rowsPerChunk(C: number): number {
  return Math.max(1, Math.floor(ELEMENTWISE_CHUNK_FLOATS / Math.max(1, C)));
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}
