/**
 * Scoring token sequences by id: for each sequence, log p(ids[t+1] | ids[0..t]) for every t. Sequences
 * are sorted by length and packed into right-padded batches under a token budget, so padding and the
 * activation arena stay small however long and varied the input is.
 */
import type { LlamaModel } from "./model.js";

/** Options of nextTokenLogprobs. */
export interface NextTokenLogprobsOptions {
  /** Most padded tokens (batch * seqLen) in one forward; a longer single sequence runs alone. */
  maxBatchTokens?: number;
}

/**
 * Row i has length max(0, sequences[i].length - 1); entry t is log p(sequences[i][t+1] | prefix). Ids
 * must already be checked against the vocabulary (the model rejects out-of-range ids with an Error).
 */
export function nextTokenLogprobs(
  model: LlamaModel,
  sequences: readonly (readonly number[])[],
  options: NextTokenLogprobsOptions = {},
): Float32Array[] {
  const budget = options.maxBatchTokens ?? 4096;
  const rows: Float32Array[] = sequences.map((s) => new Float32Array(Math.max(0, s.length - 1)));
  // Longest first: each batch's padded length is set by its first member.
  const order = sequences
    .map((_, i) => i)
    .filter((i) => sequences[i].length >= 2)
    .sort((a, b) => sequences[b].length - sequences[a].length || a - b);
  let start = 0;
  while (start < order.length) {
    const T = sequences[order[start]].length;
    const B = Math.max(1, Math.min(order.length - start, Math.floor(budget / T)));
    const members = order.slice(start, start + B);
    const ids = new Int32Array(B * T);
    const lengths = new Int32Array(B);
    const lossMask = new Uint8Array(B * T);
    members.forEach((seqIndex, b) => {
      const s = sequences[seqIndex];
      lengths[b] = s.length;
      for (let t = 0; t < s.length; t++) {
        ids[b * T + t] = s[t];
        if (t >= 1) lossMask[b * T + t] = 1;
      }
    });
    const { tokenLogprobs } = model.forward({ ids, batch: B, seqLen: T, lengths, lossMask });
    members.forEach((seqIndex, b) => {
      rows[seqIndex].set(tokenLogprobs.subarray(b * T + 1, b * T + sequences[seqIndex].length));
    });
    start += B;
  }
  return rows;
}
