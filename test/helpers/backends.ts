/**
 * The fast kernel backends present on this machine, for suites that must pass on each: WASM always
 * (build/kernels.wasm is part of the build), BLAS when the platform has one. A missing BLAS skips its
 * tests with a message saying how to enable them, never fails them.
 */
import {
  type BackendChoice,
  createKernels,
  findBlas,
  type KernelMemory,
  type Kernels,
} from "../../src/engine/kernels/index.js";

/** A backend to run a suite on: its name, and a skip reason (false: it runs). */
export interface BackendUnderTest {
  name: Exclude<BackendChoice, "auto" | "plain">;
  skip: string | false;
  /** Where its buffers live (default: the WASM memory). */
  memory?: KernelMemory;
  /** For test titles (default: name). */
  label?: string;
}

const blas = findBlas();

/** WASM, and BLAS (skipped with the reason when the machine has none). */
export const FAST_BACKENDS: readonly BackendUnderTest[] = [
  { name: "wasm", skip: false },
  {
    name: "blas",
    skip:
      blas.library === undefined
        ? `no BLAS here (${blas.reason}); apt-get install libopenblas0-pthread (Debian/Ubuntu) enables these tests`
        : false,
  },
];

/** BLAS with every buffer on the JS heap (SELFSTEER_MEMORY=heap): plain element-wise loops, no 4 GiB limit. */
export const HEAP_BLAS: BackendUnderTest = {
  name: "blas",
  memory: "heap",
  label: "blas on the JS heap",
  skip: FAST_BACKENDS[1].skip,
};

/** Kernels of a backend under test (call only when it is not skipped). */
export function kernelsOf(backend: BackendUnderTest, threads = 1): Kernels {
  return createKernels({ backend: backend.name, threads, memory: backend.memory ?? "wasm" });
}
