import { readFileSync } from "node:fs";
import { checkBatch, checkDim, checkLength, checkNoOverlap, type SpaceOf } from "./checks.js";
import { KernelPool } from "./pool.js";
import { type GemmJob, JOB_KIND, type KernelExports, runChunk } from "./protocol.js";
import type { ElementwiseKernels, GemmBatchItem, Kernels, PoolStats } from "./types.js";
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
    this.elementwise = typeof this.kernels.swigluForward === "function" ? this : undefined;
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

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}
