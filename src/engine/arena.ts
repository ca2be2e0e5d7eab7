/**
 * Kernel-memory arenas: many fp32 buffers carved out of one `kernels.alloc` piece. The model keeps its
 * activations in one and the KV-cache decoder its cache and scratch in another, so a WASM backend
 * computes on them in place and the heap is not fragmented by many small allocations.
 */
import type { Kernels } from "./kernels/types.js";

/** Sub-buffers start on 64-byte boundaries, so SIMD kernels see aligned rows where they can. */
const ALIGN = 16;

/** Carves sub-buffers out of one allocation; a dry run (no buffer) only measures. */
class Carver {
  offset = 0;
  constructor(private readonly buffer: Float32Array | null) {}

  /** The next `length` floats. */
  take(length: number): Float32Array {
    const start = this.offset;
    this.offset += Math.ceil(length / ALIGN) * ALIGN;
    return this.buffer === null ? new Float32Array(0) : this.buffer.subarray(start, start + length);
  }
}

/** A function that lays out buffers by calling `take(length)` once per buffer, in a fixed order. */
export type ArenaPlan<T> = (take: (length: number) => Float32Array) => T;

/**
 * One kernel buffer re-carved by each `carve` call. It is reallocated only when a plan needs more
 * than it holds, and the piece it replaces goes back to the kernels, so an arena that grows step by
 * step (longer and longer batches) does not pile up kernel memory. A freshly allocated arena is zero;
 * a reused one keeps whatever the previous layout wrote.
 */
export class KernelArena {
  private buffer: Float32Array | null = null;

  /** An empty arena on these kernels; nothing is allocated before the first carve. */
  constructor(private readonly kernels: Kernels) {}

  /** Floats the arena holds now. */
  get capacity(): number {
    return this.buffer?.length ?? 0;
  }

  /** Lays out `plan` in the arena (growing it if needed) and returns the carved buffers. */
  carve<T>(plan: ArenaPlan<T>): T {
    const dry = new Carver(null);
    plan((n) => dry.take(n));
    const needed = Math.max(dry.offset, 1);
    if (this.buffer === null || needed > this.buffer.length) {
      if (this.buffer !== null) this.kernels.release(this.buffer);
      this.buffer = null;
      this.buffer = this.kernels.alloc(needed);
    }
    const real = new Carver(this.buffer);
    return plan((n) => real.take(n));
  }
}
