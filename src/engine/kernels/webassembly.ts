/**
 * The slice of the WebAssembly JS API the kernels use, typed here because the project compiles against
 * lib ES2022 + @types/node 20, which declare no `WebAssembly` global (it lives in lib.dom).
 */

/** A compiled module; opaque, but structured-cloneable to worker threads. */
export interface WasmModule {
  readonly __brand?: "WebAssembly.Module";
}

/** A linear memory; a shared one hands out SharedArrayBuffers (a new one after each grow). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  grow(deltaPages: number): number;
}

/** An instantiated module. */
export interface WasmInstance {
  readonly exports: Record<string, unknown>;
}

interface WebAssemblyApi {
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: Record<string, Record<string, unknown>>) => WasmInstance;
  Memory: new (descriptor: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory;
}

/** The runtime's WebAssembly object, or undefined where the runtime has none. */
export const webAssembly: WebAssemblyApi | undefined = (globalThis as { WebAssembly?: WebAssemblyApi })
  .WebAssembly;

/** The runtime's WebAssembly object; throws where there is none. */
export function requireWebAssembly(): WebAssemblyApi {
  if (webAssembly === undefined) throw new Error("this JavaScript runtime has no WebAssembly");
  return webAssembly;
}
