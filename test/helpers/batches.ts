/** Token batches for model tests. */
import type { TokenBatch } from "../../src/engine/model.js";

/** One sequence as a batch of one, every position after the first scored. */
export function singleBatch(seq: readonly number[]): TokenBatch {
  return {
    ids: Int32Array.from(seq),
    batch: 1,
    seqLen: seq.length,
    lengths: Int32Array.from([seq.length]),
    lossMask: new Uint8Array(seq.length).fill(1),
  };
}
