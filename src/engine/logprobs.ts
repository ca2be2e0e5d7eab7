/**
 * Scoring token sequences by id: for each sequence, log p(ids[t+1] | ids[0..t]) for every t. Sequences
 * are sorted by length and packed into right-padded batches under a token budget, so padding and the
 * activation arena stay small however long and varied the input is.
 */
import { scoreByLength } from "./batches.js";
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
  const rows: Float32Array[] = sequences.map((s) => new Float32Array(Math.max(0, s.length - 1)));
  const scored = sequences.map((_, i) => i).filter((i) => sequences[i].length >= 2);
  const limits = { maxTokens: options.maxBatchTokens ?? 4096, longestFirst: true };
  const results = scoreByLength(
    scored.map((i) => sequences[i].length),
    limits,
    (group) => {
      // Longest first, so the group's padded length is that of its first member.
      const T = sequences[scored[group[0]]].length;
      const B = group.length;
      const ids = new Int32Array(B * T);
      const lengths = new Int32Array(B);
      const lossMask = new Uint8Array(B * T);
      group.forEach((g, b) => {
        const s = sequences[scored[g]];
        lengths[b] = s.length;
        for (let t = 0; t < s.length; t++) {
          ids[b * T + t] = s[t];
          if (t >= 1) lossMask[b * T + t] = 1;
        }
      });
      const { tokenLogprobs } = model.forward(
        { ids, batch: B, seqLen: T, lengths, lossMask },
        { keep: false },
      );
      return group.map((g, b) => tokenLogprobs.slice(b * T + 1, b * T + sequences[scored[g]].length));
    },
  );
  scored.forEach((i, k) => {
    rows[i] = results[k];
  });
  return rows;
}
