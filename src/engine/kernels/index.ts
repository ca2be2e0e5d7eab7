import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { BlasKernels, findBlas } from "./blas.js";
import { PlainKernels } from "./plain.js";
import type { KernelBackend, Kernels } from "./types.js";
import { loadKernelsModule, WasmKernels } from "./wasm.js";
import type { WasmModule } from "./webassembly.js";

export type { BlasLibrary, BlasSearch, BlasVendor } from "./blas.js";
export { BLAS_ENV, BlasKernels, blasCandidates, findBlas } from "./blas.js";
export { PlainKernels, plainSgemm } from "./plain.js";
export type {
  AdamWScalars,
  CachedAttentionJob,
  ElementwiseKernels,
  GemmBatchItem,
  KernelBackend,
  Kernels,
  PoolStats,
  RopeTables,
  SoftmaxBackwardBlock,
  SoftmaxBlock,
} from "./types.js";
export type { WasmKernelsOptions } from "./wasm.js";
export { WasmKernels } from "./wasm.js";

/** The kernel backends a caller may ask for: auto picks BLAS, else WASM, else plain. */
export const KERNEL_BACKENDS = ["auto", "blas", "wasm", "plain"] as const;
/** One of KERNEL_BACKENDS. */
export type BackendChoice = (typeof KERNEL_BACKENDS)[number];

/** Where the kernels' buffers live: the shared WASM memory (at most 4 GiB) or the JS heap. */
export type KernelMemory = "wasm" | "heap";
/** Environment variable naming the default KernelMemory ("heap": BLAS on the JS heap, no 4 GiB limit). */
export const MEMORY_ENV = "SELFSTEER_MEMORY";
/** What kernels on the JS heap say of themselves (createKernels' note, autoBackend's). */
const HEAP_NOTE = `kernel memory on the JS heap (${MEMORY_ENV}=heap): no 4 GiB limit, element-wise loops in plain TypeScript`;

/** Options of createKernels. */
export interface CreateKernelsOptions {
  /**
   * "auto": the platform BLAS (an optimized one) on the WASM memory when both are found, WASM SIMD
   * when only it loads, the plain loops otherwise; "blas" and "wasm" fail when they cannot load.
   */
  backend?: BackendChoice;
  /**
   * Threads, the main thread included (default: every core). One setting for everything: the BLAS
   * library's threads and the WASM worker pool alike, so they never oversubscribe the cores.
   */
  threads?: number;
  /** Path of the compiled kernels (default: build/kernels.wasm at the package root). */
  wasmPath?: string;
  /** BLAS library name or path to load instead of the usual ones ("none": no BLAS; default $SELFSTEER_BLAS). */
  blasLibrary?: string;
  /**
   * "wasm" (default, or $SELFSTEER_MEMORY): BLAS and the compiled element-wise loops share the WASM
   * memory, which stops at 4 GiB. "heap": every buffer is an ordinary JS typed array, so a model of any
   * size fits (a 0.5B model's training step needs about 8 GB); BLAS still computes the products, the
   * element-wise work runs in the plain TypeScript loops. The wasm backend cannot run on the heap.
   */
  memory?: KernelMemory;
}

/**
 * Kernels as createKernels returns them: `warning` says why "auto" fell back to the slow plain loops;
 * `note` says why a faster backend was not used when that is worth a line in a report (no BLAS found).
 */
export type CreatedKernels = Kernels & { readonly warning?: string; readonly note?: string };

/** Where `npm run build:wasm` writes the kernels: the package root's build/ (this file is in dist/src/engine/kernels/). */
export function defaultWasmPath(): string {
  return fileURLToPath(new URL("../../../../build/kernels.wasm", import.meta.url));
}

/** Plain kernels that carry the reason the WASM backend was not used. */
class FallbackKernels extends PlainKernels {
  /** Sets the one-line reason. */
  constructor(readonly warning: string) {
    super();
  }
}

let cachedModule: { path: string; module: WasmModule } | undefined;

/** Compiles build/kernels.wasm (or `path`) once per path; throws with a one-line reason if impossible. */
export function kernelsModule(path: string = defaultWasmPath()): WasmModule {
  if (cachedModule?.path === path) return cachedModule.module;
  if (!existsSync(path)) throw new Error(`${path} not found (run npm run build:wasm)`);
  if (typeof SharedArrayBuffer === "undefined") throw new Error("SharedArrayBuffer is not available");
  let module: WasmModule;
  try {
    module = loadKernelsModule(path);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`cannot compile ${path} (WebAssembly SIMD and threads needed): ${reason}`);
  }
  cachedModule = { path, module };
  return module;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** $SELFSTEER_MEMORY as a KernelMemory ("wasm" when unset); anything else is an error naming it. */
export function memoryFromEnv(): KernelMemory {
  const value = process.env[MEMORY_ENV];
  if (value === undefined || value === "" || value === "wasm") return "wasm";
  if (value === "heap") return "heap";
  throw new Error(`${MEMORY_ENV} must be "wasm" or "heap", got "${value}"`);
}

/** Attaches a one-line note to kernels (see CreatedKernels). */
function withNote<T extends Kernels>(kernels: T, note: string): T & { readonly note: string } {
  return Object.defineProperty(kernels, "note", { value: note, enumerable: true }) as T & { note: string };
}

/**
 * Creates the engine's kernels: the platform BLAS on the WASM memory when found, WASM SIMD on a worker
 * pool otherwise, the plain reference as the last resort (see CreateKernelsOptions.backend).
 */
export function createKernels(options: CreateKernelsOptions = {}): CreatedKernels {
  const backend = options.backend ?? "auto";
  if (!(KERNEL_BACKENDS as readonly string[]).includes(backend)) {
    throw new RangeError(`backend must be one of ${KERNEL_BACKENDS.join(", ")}, got ${String(backend)}`);
  }
  if (backend === "plain") return new PlainKernels();
  const threads = options.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1) {
    throw new RangeError(`threads must be a positive integer, got ${threads}`);
  }
  const memory = options.memory ?? memoryFromEnv();
  if (memory === "heap" && backend === "wasm")
    throw new Error(
      `${MEMORY_ENV}=heap keeps buffers out of the WASM memory the wasm backend computes in: use blas or plain`,
    );
  const blas = backend === "wasm" ? undefined : findBlas(options.blasLibrary);
  if (backend === "blas" && blas?.library === undefined) {
    throw new Error(`BLAS unavailable: ${blas?.reason ?? "not searched"}`);
  }
  // auto skips a reference BLAS: the WASM kernels are faster than it.
  const useBlas =
    blas?.library !== undefined && (backend === "blas" || blas.library.optimized) ? blas.library : undefined;
  if (memory === "heap") {
    if (useBlas !== undefined)
      return withNote(new BlasKernels(new PlainKernels(), useBlas, threads), HEAP_NOTE);
    return withNote(
      new PlainKernels(),
      `${HEAP_NOTE}; ${blas?.library === undefined ? `no BLAS (${blas?.reason ?? "not searched"})` : `${blas.library.description} is a reference BLAS`}, so plain products too`,
    );
  }
  let wasm: WasmKernels | undefined;
  let wasmFailure = "";
  try {
    wasm = new WasmKernels(kernelsModule(options.wasmPath ?? defaultWasmPath()), { threads });
  } catch (error) {
    // A missing build, a runtime without SIMD or without shared WebAssembly memory.
    wasmFailure = message(error);
    if (backend === "wasm") throw new Error(`WASM kernels unavailable: ${wasmFailure}`);
  }
  if (useBlas !== undefined) {
    if (wasm !== undefined) return new BlasKernels(wasm, useBlas);
    // BLAS on JS-heap memory: the element-wise work takes the plain loops.
    return withNote(
      new BlasKernels(new PlainKernels(), useBlas, threads),
      `WASM kernels unavailable (${wasmFailure}): element-wise loops in plain TypeScript`,
    );
  }
  if (wasm !== undefined) {
    const why =
      blas?.library !== undefined
        ? `${blas.library.description} is a reference BLAS, slower than WASM (--backend blas uses it anyway)`
        : `no BLAS: ${blas?.reason ?? "not searched"}`;
    return backend === "auto" ? withNote(wasm, why) : wasm;
  }
  return new FallbackKernels(`using plain kernels (slow): ${wasmFailure}`);
}

/** What `--backend auto` computes on here: the backend, its library or build, and why not a faster one. */
export interface AutoBackend {
  backend: KernelBackend;
  /** "OpenBLAS 0.3.21 Zen (libopenblas.so.0)", "WASM SIMD (build/kernels.wasm)" or "plain TypeScript". */
  description: string;
  note?: string;
}

/** Says what createKernels({ backend: "auto" }) would pick, without starting any thread (for reports). */
export function autoBackend(
  options: Pick<CreateKernelsOptions, "wasmPath" | "blasLibrary"> = {},
): AutoBackend {
  const blas = findBlas(options.blasLibrary);
  let wasmFailure: string | undefined;
  try {
    kernelsModule(options.wasmPath ?? defaultWasmPath());
  } catch (error) {
    wasmFailure = message(error);
  }
  if (blas.library?.optimized === true && memoryFromEnv() === "heap")
    return {
      backend: "blas",
      description: `${blas.library.description} (${blas.library.path})`,
      note: HEAP_NOTE,
    };
  if (blas.library?.optimized === true) {
    const description = `${blas.library.description} (${blas.library.path})`;
    return wasmFailure === undefined
      ? { backend: "blas", description }
      : { backend: "blas", description, note: `WASM kernels unavailable (${wasmFailure})` };
  }
  if (wasmFailure === undefined) {
    const note =
      blas.library !== undefined
        ? `${blas.library.description} is a reference BLAS, slower than WASM`
        : `no BLAS: ${blas.reason}`;
    return { backend: "wasm", description: "WASM SIMD (build/kernels.wasm)", note };
  }
  return { backend: "plain", description: "plain TypeScript", note: `no BLAS, and ${wasmFailure}` };
}
