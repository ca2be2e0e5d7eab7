/**
 * The platform's BLAS through FFI: `cblas_sgemm` of OpenBLAS, BLIS, MKL or Accelerate, found at run
 * time by its usual library names and called through koffi (prebuilt binaries, nothing compiled at
 * install) directly on Float32Array views of the kernels' memory: no copy in or out. Everything else
 * (the memory, element-wise loops, the worker pool) is the host backend's, normally WASM, so the WASM
 * element-wise kernels work on the very buffers BLAS writes. No BLAS on the machine is never an error:
 * findBlas says why and createKernels falls back to WASM.
 */
import { createRequire } from "node:module";
import { checkBatch, checkDim, checkLength, checkNoOverlap, type SpaceOf } from "./checks.js";
import type { ElementwiseKernels, GemmBatchItem, Kernels, PoolStats } from "./types.js";

/** Which BLAS implementation a library is (found from the symbols it exports). */
export type BlasVendor = "openblas" | "blis" | "mkl" | "accelerate" | "generic";

/** A loaded BLAS: its sgemm and its thread control. */
export interface BlasLibrary {
  readonly vendor: BlasVendor;
  /** The name or path it was loaded from. */
  readonly path: string;
  /** For logs: vendor, version and core type where the library says them ("OpenBLAS 0.3.21 Zen"). */
  readonly description: string;
  /** false for a reference (netlib) BLAS, which is slower than the WASM kernels: `auto` skips it. */
  readonly optimized: boolean;
  /** Whether setThreads has an effect (Accelerate and a reference BLAS have no such call). */
  readonly threadControl: boolean;
  /** cblas_sgemm, row-major, on fp32 views (see BlasKernels.sgemm for the argument rules). */
  sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: Float32Array,
    lda: number,
    B: Float32Array,
    ldb: number,
    beta: number,
    C: Float32Array,
    ldc: number,
  ): void;
  /**
   * cblas_sgemv, row-major: y = alpha * op(A) x + beta * y with A [rows, cols] (op: A^T when trans);
   * undefined when the library lacks it.
   */
  sgemv?(
    trans: boolean,
    rows: number,
    cols: number,
    alpha: number,
    A: Float32Array,
    lda: number,
    x: Float32Array,
    beta: number,
    y: Float32Array,
  ): void;
  /** Sets the library's thread count (process-wide; skipped when it already has this count). */
  setThreads(threads: number): void;
}

/** Environment variable: "none" disables BLAS; a library name or path is tried instead of the usual names. */
export const BLAS_ENV = "SELFSTEER_BLAS";

const CBLAS_ROW_MAJOR = 101;
const CBLAS_NO_TRANS = 111;
const CBLAS_TRANS = 112;

/** Library names tried in order on this platform: optimized implementations first, reference last. */
export function blasCandidates(platform: NodeJS.Platform = process.platform): string[] {
  if (platform === "darwin") {
    return [
      "/System/Library/Frameworks/Accelerate.framework/Accelerate",
      "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
      "/usr/local/opt/openblas/lib/libopenblas.dylib",
      "libopenblas.dylib",
    ];
  }
  if (platform === "win32") return ["libopenblas.dll", "openblas.dll", "mkl_rt.2.dll", "mkl_rt.dll"];
  return [
    // OpenBLAS: Debian/Ubuntu (libopenblas0-pthread/-openmp/-serial), Fedora (pthreads, OpenMP, serial).
    "libopenblas.so.0",
    "libopenblasp.so.0",
    "libopenblaso.so.0",
    "libopenblas.so",
    // BLIS: Debian/Ubuntu (libblis4-*), Fedora (pthreads, OpenMP, serial).
    "libblis.so.4",
    "libblisp.so.4",
    "libbliso.so.4",
    "libblis.so.3",
    "libblis.so",
    // MKL's single dynamic library (oneAPI, Debian's intel-mkl).
    "libmkl_rt.so.2",
    "libmkl_rt.so.1",
    "libmkl_rt.so",
    // Whatever the system's generic names point to (Debian's alternatives often choose OpenBLAS).
    "libcblas.so.3",
    "libblas.so.3",
  ];
}

type KoffiModule = typeof import("koffi");
type KoffiLibrary = ReturnType<KoffiModule["load"]>;

let koffiModule: KoffiModule | string | undefined;

/** koffi, loaded on first use (its native module may be missing on an unusual platform). */
function koffi(): KoffiModule | string {
  if (koffiModule === undefined) {
    try {
      koffiModule = createRequire(import.meta.url)("koffi") as KoffiModule;
    } catch (error) {
      koffiModule = `the FFI module koffi cannot load: ${error instanceof Error ? error.message : String(error)}`;
    }
  }
  return koffiModule;
}

/** A function of `lib` declared by its C prototype, or undefined when the library lacks the symbol. */
function optionalFunc(lib: KoffiLibrary, prototype: string): ((...args: unknown[]) => unknown) | undefined {
  try {
    return lib.func(prototype) as (...args: unknown[]) => unknown;
  } catch {
    return undefined;
  }
}

/** Loads one library and identifies it; throws with a reason when it cannot be used. */
export function loadBlas(path: string): BlasLibrary {
  const ffi = koffi();
  if (typeof ffi === "string") throw new Error(ffi);
  const lib = ffi.load(path);
  const cblas = optionalFunc(
    lib,
    "void cblas_sgemm(int order, int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)",
  );
  if (cblas === undefined) throw new Error(`${path} has no cblas_sgemm`);
  const gemv = optionalFunc(
    lib,
    "void cblas_sgemv(int order, int trans, int M, int N, float alpha, const float *A, int lda, const float *X, int incX, float beta, float *Y, int incY)",
  );
  let vendor: BlasVendor = "generic";
  let description = `BLAS (${path})`;
  let setThreadsRaw: ((threads: number) => void) | undefined;
  const openblasConfig = optionalFunc(lib, "const char *openblas_get_config()");
  const blisVersion = optionalFunc(lib, "const char *bli_info_get_version_str()");
  const mklVersion = optionalFunc(lib, "void MKL_Get_Version_String(_Out_ char *buf, int len)");
  if (openblasConfig !== undefined) {
    vendor = "openblas";
    const config = String(openblasConfig());
    const core = optionalFunc(lib, "const char *openblas_get_corename()");
    // The config starts "OpenBLAS 0.3.21 ..." and names the build; the core type is what runs here.
    const version = /OpenBLAS\s+\S+/.exec(config)?.[0] ?? "OpenBLAS";
    description = `${version} ${core === undefined ? "" : String(core())}`.trim();
    const set = optionalFunc(lib, "void openblas_set_num_threads(int n)");
    if (set !== undefined) setThreadsRaw = (n) => set(n);
  } else if (blisVersion !== undefined) {
    vendor = "blis";
    description = `BLIS ${String(blisVersion())}`;
    const set = optionalFunc(lib, "void bli_thread_set_num_threads(int64_t n)");
    if (set !== undefined) setThreadsRaw = (n) => set(n);
  } else if (mklVersion !== undefined) {
    vendor = "mkl";
    const buffer = Buffer.alloc(256);
    mklVersion(buffer, buffer.length);
    const text = buffer.toString("latin1").replace(/\0.*$/s, "").trim();
    description = /Version\s+\S+/.exec(text) === null ? "MKL" : `MKL ${/Version\s+(\S+)/.exec(text)?.[1]}`;
    const set = optionalFunc(lib, "void MKL_Set_Num_Threads(int n)");
    if (set !== undefined) setThreadsRaw = (n) => set(n);
  } else if (path.includes("Accelerate.framework")) {
    vendor = "accelerate";
    description = "Accelerate";
  }
  let current = 0;
  return {
    vendor,
    path,
    description,
    optimized: vendor !== "generic",
    threadControl: setThreadsRaw !== undefined,
    sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) {
      cblas(
        CBLAS_ROW_MAJOR,
        transA ? CBLAS_TRANS : CBLAS_NO_TRANS,
        transB ? CBLAS_TRANS : CBLAS_NO_TRANS,
        M,
        N,
        K,
        alpha,
        A,
        lda,
        B,
        ldb,
        beta,
        C,
        ldc,
      );
    },
    ...(gemv === undefined
      ? {}
      : {
          sgemv(
            trans: boolean,
            rows: number,
            cols: number,
            alpha: number,
            A: Float32Array,
            lda: number,
            x: Float32Array,
            beta: number,
            y: Float32Array,
          ) {
            gemv(
              CBLAS_ROW_MAJOR,
              trans ? CBLAS_TRANS : CBLAS_NO_TRANS,
              rows,
              cols,
              alpha,
              A,
              lda,
              x,
              1,
              beta,
              y,
              1,
            );
          },
        }),
    setThreads(threads) {
      if (setThreadsRaw === undefined || threads === current) return;
      setThreadsRaw(threads);
      current = threads;
    },
  };
}

/** What findBlas returns: the library, or why there is none (and what was tried). */
export type BlasSearch = { library: BlasLibrary } | { library?: undefined; reason: string };

let cachedSearch: { key: string; result: BlasSearch } | undefined;

/**
 * Finds the platform's BLAS once per process: `library` (or $SELFSTEER_BLAS) if given, else the first
 * of blasCandidates() that loads and has cblas_sgemm, preferring an optimized one over a reference one.
 */
export function findBlas(library?: string): BlasSearch {
  const requested = library ?? process.env[BLAS_ENV];
  const key = requested ?? "";
  if (cachedSearch?.key === key) return cachedSearch.result;
  const result = search(requested);
  cachedSearch = { key, result };
  return result;
}

function search(requested: string | undefined): BlasSearch {
  if (requested !== undefined && requested.trim().toLowerCase() === "none") {
    return { reason: `disabled by ${BLAS_ENV}=none` };
  }
  const ffi = koffi();
  if (typeof ffi === "string") return { reason: ffi };
  const names = requested !== undefined && requested.trim() !== "" ? [requested.trim()] : blasCandidates();
  const failures: string[] = [];
  let reference: BlasLibrary | undefined;
  for (const name of names) {
    try {
      const found = loadBlas(name);
      if (found.optimized) return { library: found };
      reference ??= found;
    } catch (error) {
      failures.push(`${name}: ${firstLine(error)}`);
    }
  }
  if (reference !== undefined) return { library: reference };
  const tried =
    names.length === 1 ? names[0] : `${names.length} library names (${names.slice(0, 3).join(", ")}, ...)`;
  const detail = names.length === 1 && failures.length > 0 ? `: ${failures[0]}` : "";
  return { reason: `no BLAS with cblas_sgemm found (tried ${tried})${detail}` };
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0];
}

/**
 * What BlasKernels needs from the backend whose memory it computes on: the Kernels themselves plus,
 * optionally, the rules of that memory (WASM: every operand inside its one WebAssembly.Memory).
 */
export type HostKernels = Kernels & {
  checkOperand?(label: string, view: Float32Array, needed: number): void;
  readonly spaceOf?: SpaceOf;
  /**
   * Products the host computes better than BLAS: a few rows against a weight matrix (decoding), which
   * only stream memory; BLAS would first copy (pack) the whole weight matrix, reading it twice.
   */
  prefersSmallProduct?(transA: boolean, transB: boolean, M: number): boolean;
};

/**
 * Kernels whose products run in the platform BLAS, on the memory of a host backend (WASM normally, so
 * the WASM element-wise loops and worker pool work on the same buffers; plain where WASM is missing).
 * One thread count governs both the BLAS threads and the host's pool: the two never run at once (every
 * call is synchronous), so together they use `threads` cores.
 */
export class BlasKernels implements Kernels {
  readonly name: string;
  readonly backend = "blas";
  readonly threads: number;
  readonly elementwise: ElementwiseKernels | undefined;
  /** The host memory's high-water mark (see Kernels.heapBytes), where the host measures it. */
  readonly heapBytes?: () => number;
  private readonly spaceOf: SpaceOf;

  /** Computes products with `library` on the memory of `host`, on `threads` threads (default: the host's). */
  constructor(
    private readonly host: HostKernels,
    readonly library: BlasLibrary,
    threads: number = host.threads,
  ) {
    if (!Number.isInteger(threads) || threads < 1) {
      throw new RangeError(`threads must be a positive integer, got ${threads}`);
    }
    this.threads = threads;
    this.elementwise = host.elementwise;
    this.spaceOf = host.spaceOf ?? ((view) => view.buffer);
    const threadNote =
      library.threadControl || this.threads === 1 ? "" : " (thread count: the library's own)";
    this.name = `blas ${library.description} x${this.threads} thread${this.threads === 1 ? "" : "s"}${threadNote}`;
    library.setThreads(this.threads);
    const heapBytes = host.heapBytes?.bind(host);
    if (heapBytes !== undefined) this.heapBytes = heapBytes;
  }

  /** Allocates in the host's memory (see Kernels.alloc). */
  alloc(length: number): Float32Array {
    return this.host.alloc(length);
  }

  /** Returns a buffer to the host's memory (see Kernels.release). */
  release(view: Float32Array): void {
    this.host.release(view);
  }

  /** C = alpha * op(A) * op(B) + beta * C through cblas_sgemm (see Kernels.sgemm). */
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
    this.run(transA, transB, M, N, K, alpha, A, B, beta, C);
  }

  /** One cblas_sgemm per item (see Kernels.sgemmBatch); each item's C equals sgemm's bit for bit. */
  sgemmBatch(
    transA: boolean,
    transB: boolean,
    alpha: number,
    beta: number,
    items: readonly GemmBatchItem[],
  ): void {
    if (items.length === 0) return;
    checkBatch(items, (label, view, needed) => this.checkOperand(label, view, needed), this.spaceOf);
    for (const { M, N, K, A, B, C } of items) {
      if (M > 0 && N > 0) this.run(transA, transB, M, N, K, alpha, A, B, beta, C);
    }
  }

  /** Waits for the host's worker pool (see Kernels.waitForWorkers). */
  waitForWorkers(timeoutMs?: number): boolean {
    return this.host.waitForWorkers(timeoutMs);
  }

  /** The host pool's counters (see Kernels.poolStatistics). */
  poolStatistics(): PoolStats | undefined {
    return this.host.poolStatistics?.();
  }

  /** Stops the host's workers; products keep running in BLAS. */
  dispose(): void {
    this.host.dispose();
  }

  private checkOperand(label: string, view: Float32Array, needed: number): void {
    if (this.host.checkOperand !== undefined) this.host.checkOperand(label, view, needed);
    else checkLength(label, view, needed);
  }

  private run(
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
    if (K === 0) {
      // BLAS rejects a zero leading dimension; with nothing to sum, C = beta * C (beta 0: zeros, even over NaN).
      const out = C.subarray(0, M * N);
      if (beta === 0) out.fill(0);
      else if (beta !== 1) for (let i = 0; i < out.length; i++) out[i] *= beta;
      return;
    }
    // Another BlasKernels of this process may have set the library's (process-wide) count.
    this.library.setThreads(this.threads);
    const gemv = this.library.sgemv;
    if (M === 1 && gemv !== undefined) {
      // One row (single-stream decoding): sgemm would first copy (pack) the whole of B, reading it
      // twice; sgemv streams it once. op(A) is then K contiguous floats however A is stored.
      // beta 0 must overwrite garbage, NaN included, which a library may scale instead of ignore.
      if (beta === 0) C.fill(0, 0, N);
      if (transB) gemv.call(this.library, false, N, K, alpha, B, K, A, beta, C);
      else gemv.call(this.library, true, K, N, alpha, B, N, A, beta, C);
      return;
    }
    this.library.sgemm(transA, transB, M, N, K, alpha, A, transA ? M : K, B, transB ? K : N, beta, C, N);
  }
}
