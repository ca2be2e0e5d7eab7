/**
 * Argument checks shared by the in-place backends (WASM, BLAS): shapes, view lengths and aliasing.
 * They throw before any native or WASM code touches memory, so a wrong call is an error, not garbage.
 */
import type { GemmBatchItem } from "./types.js";

/** Throws unless `value` is a non-negative int32 (a matrix dimension). */
export function checkDim(label: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0x7fffffff) {
    throw new RangeError(`sgemm: ${label} must be a non-negative integer, got ${value}`);
  }
}

/** Throws unless `view` is a Float32Array with at least `needed` floats. */
export function checkLength(label: string, view: Float32Array, needed: number): void {
  if (!(view instanceof Float32Array)) throw new TypeError(`sgemm: ${label} must be a Float32Array`);
  if (view.length < needed) {
    throw new RangeError(`sgemm: ${label} has ${view.length} floats, the shape needs ${needed}`);
  }
}

/**
 * Which address space a view lives in: views of one space alias when their byte ranges overlap. A
 * WebAssembly memory is one space whatever SharedArrayBuffer object (one per growth) a view was made
 * on; elsewhere each ArrayBuffer is its own space.
 */
export type SpaceOf = (view: Float32Array) => unknown;

/** Each ArrayBuffer its own space (memory on the JS heap). */
export const bufferSpace: SpaceOf = (view) => view.buffer;

/** Whether two views share an address space and their first `xLen` / `yLen` floats overlap. */
function overlaps(X: Float32Array, xLen: number, Y: Float32Array, yLen: number, spaceOf: SpaceOf): boolean {
  if (xLen === 0 || yLen === 0 || spaceOf(X) !== spaceOf(Y)) return false;
  const x0 = X.byteOffset;
  const y0 = Y.byteOffset;
  return x0 < y0 + yLen * 4 && y0 < x0 + xLen * 4;
}

/** Throws if C's first cLen floats overlap X's first xLen floats (the output must be separate). */
export function checkNoOverlap(
  label: string,
  X: Float32Array,
  xLen: number,
  C: Float32Array,
  cLen: number,
  spaceOf: SpaceOf,
): void {
  if (overlaps(X, xLen, C, cLen, spaceOf)) {
    throw new Error(`sgemm: C overlaps ${label}; the output must be a separate buffer`);
  }
}

interface Range {
  space: unknown;
  start: number;
  end: number;
  item: number;
}

/**
 * Checks a batch's shapes and lengths (through `checkOperand`, which may add a backend's own rule) and
 * throws if two outputs overlap or an output overlaps any input (of its own item or another).
 * Returns the total multiply-adds.
 */
export function checkBatch(
  items: readonly GemmBatchItem[],
  checkOperand: (label: string, view: Float32Array, needed: number) => void,
  spaceOf: SpaceOf,
): number {
  const reads: Range[] = [];
  const writes: Range[] = [];
  let macs = 0;
  for (let i = 0; i < items.length; i++) {
    const { M, N, K, A, B, C } = items[i];
    const where = `item ${i}: `;
    checkDim(`${where}M`, M);
    checkDim(`${where}N`, N);
    checkDim(`${where}K`, K);
    checkOperand(`${where}A`, A, M * K);
    checkOperand(`${where}B`, B, K * N);
    checkOperand(`${where}C`, C, M * N);
    macs += M * N * K;
    if (M * N > 0) {
      writes.push({ space: spaceOf(C), start: C.byteOffset, end: C.byteOffset + M * N * 4, item: i });
      if (M * K > 0)
        reads.push({ space: spaceOf(A), start: A.byteOffset, end: A.byteOffset + M * K * 4, item: i });
      if (K * N > 0)
        reads.push({ space: spaceOf(B), start: B.byteOffset, end: B.byteOffset + K * N * 4, item: i });
    }
  }
  checkDisjoint(writes, reads);
  return macs;
}

/** Throws if two outputs overlap, or an output overlaps an input (addresses compared per space). */
function checkDisjoint(writes: Range[], reads: Range[]): void {
  // Views of different spaces never alias; in the common case every view is in one space.
  const spaces = new Map<unknown, number>();
  const key = (r: Range): number => {
    let id = spaces.get(r.space);
    if (id === undefined) {
      id = spaces.size;
      spaces.set(r.space, id);
    }
    return id;
  };
  const byStart = (x: Range, y: Range): number => key(x) - key(y) || x.start - y.start;
  writes.sort(byStart);
  for (let i = 1; i < writes.length; i++) {
    if (writes[i].space === writes[i - 1].space && writes[i].start < writes[i - 1].end) {
      throw new Error(`sgemmBatch: C of item ${writes[i].item} overlaps C of item ${writes[i - 1].item}`);
    }
  }
  for (const read of reads) {
    // The last output (of the same space) starting before this input ends is the only one that can overlap it.
    const readKey = key(read);
    let lo = 0;
    let hi = writes.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const w = writes[mid];
      const wKey = key(w);
      if (wKey < readKey || (wKey === readKey && w.start < read.end)) lo = mid + 1;
      else hi = mid;
    }
    const candidate = writes[lo - 1];
    if (candidate !== undefined && candidate.space === read.space && candidate.end > read.start) {
      throw new Error(`sgemmBatch: C of item ${candidate.item} overlaps an input of item ${read.item}`);
    }
  }
}
