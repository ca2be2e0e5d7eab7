import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { PlainKernels } from "./plain.js";
import type { Kernels } from "./types.js";
import { type ElementwiseKernels, type GemmBatchItem, loadKernelsModule, WasmKernels } from "./wasm.js";
import type { WasmModule } from "./webassembly.js";

export { PlainKernels, plainSgemm } from "./plain.js";
export type { PoolStats } from "./pool.js";
export type { Kernels } from "./types.js";
export type { ElementwiseKernels, GemmBatchItem, KernelsExtras, WasmKernelsOptions } from "./wasm.js";
export { WasmKernels } from "./wasm.js";

/** Options of createKernels. */
export interface CreateKernelsOptions {
  /** "auto": WASM SIMD when build/kernels.wasm loads here, else plain; "wasm" fails if it cannot. */
  backend?: "auto" | "wasm" | "plain";
  /** Threads for the WASM backend, the main thread included (default: every core). */
  threads?: number;
  /** Path of the compiled kernels (default: build/kernels.wasm at the package root). */
  wasmPath?: string;
}

/** Kernels as createKernels returns them: `warning` says why "auto" fell back to plain, if it did. */
export type CreatedKernels = Kernels & { readonly warning?: string };

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

/** Creates the engine's kernels: WASM SIMD on a worker pool when available, the plain reference otherwise. */
export function createKernels(options: CreateKernelsOptions = {}): CreatedKernels {
  const backend = options.backend ?? "auto";
  if (backend === "plain") return new PlainKernels();
  const threads = options.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1) {
    throw new RangeError(`threads must be a positive integer, got ${threads}`);
  }
  try {
    return new WasmKernels(kernelsModule(options.wasmPath ?? defaultWasmPath()), { threads });
  } catch (error) {
    // A missing build, a runtime without SIMD or without shared WebAssembly memory.
    const reason = error instanceof Error ? error.message : String(error);
    if (backend === "wasm") throw new Error(`WASM kernels unavailable: ${reason}`);
    return new FallbackKernels(`using plain kernels (slow): ${reason}`);
  }
}

/**
 * Runs independent products that share transposes and scalars: one thread-pool job on the WASM
 * backend (see KernelsExtras.sgemmBatch), one sgemm per item on any other. Results are the same.
 */
export function sgemmBatch(
  kernels: Kernels,
  transA: boolean,
  transB: boolean,
  alpha: number,
  beta: number,
  items: readonly GemmBatchItem[],
): void {
  if (kernels instanceof WasmKernels) {
    kernels.sgemmBatch(transA, transB, alpha, beta, items);
    return;
  }
  for (const { M, N, K, A, B, C } of items) kernels.sgemm(transA, transB, M, N, K, alpha, A, B, beta, C);
}

/** The kernels' WASM SwiGLU loops when the backend has them (WASM), undefined for the plain loops. */
export function elementwiseKernels(kernels: Kernels | undefined): ElementwiseKernels | undefined {
  return kernels instanceof WasmKernels && kernels.hasElementwise() ? kernels : undefined;
}
