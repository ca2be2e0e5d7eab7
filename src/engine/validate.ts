/**
 * Checks that keep bad models out before any work starts: weights with NaN or infinite values, configs
 * with absurd sizes, and sequences longer than the model's context. Each failure is a UserError that
 * names the file and the tensor, field or row.
 */
import { UserError } from "../util/errors.js";
import type { LlamaConfig } from "./config.js";

/**
 * The most positions a config may declare. Published Llama-family models stay below 2^24 (about 16.8M);
 * a larger value is a typo or corruption, and would make "generate to the end of the context" endless.
 */
export const MAX_POSITION_EMBEDDINGS_LIMIT = 2 ** 24;

/** Refuses config values that are valid JSON numbers but no model has (max_position_embeddings 1e10). */
export function checkConfigLimits(configPath: string, config: LlamaConfig): void {
  const positions = config.max_position_embeddings;
  if (!Number.isInteger(positions) || positions < 1 || positions > MAX_POSITION_EMBEDDINGS_LIMIT)
    throw new UserError(
      `${configPath}: field max_position_embeddings: expected an integer in [1, ${MAX_POSITION_EMBEDDINGS_LIMIT}], got ${positions}`,
    );
}

/** Index of the first NaN or infinite value of `data`, or -1 when every value is finite. */
export function firstNonFinite(data: Float32Array): number {
  // x - x is 0 for finite x and NaN for NaN and +-Infinity: one subtraction per value, no branches.
  let acc = 0;
  for (let i = 0; i < data.length; i++) acc += data[i] - data[i];
  if (acc === 0) return -1;
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) return i;
  return -1;
}

/** How many values of `data` are NaN or infinite. */
export function countNonFinite(data: Float32Array): number {
  let count = 0;
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) count++;
  return count;
}

/**
 * Refuses weights with a NaN or infinite value, naming the file (sourceOf), the tensor and the first
 * bad element. `allowNonFinite` (the CLI's --allow-nonfinite) lets such a checkpoint load for inspection.
 */
export function checkFiniteTensors(
  tensors: Iterable<{ name: string; shape: readonly number[]; data: Float32Array }>,
  sourceOf: (name: string) => string,
  allowNonFinite = false,
): void {
  if (allowNonFinite) return;
  for (const t of tensors) {
    const at = firstNonFinite(t.data);
    if (at < 0) continue;
    throw new UserError(
      `${sourceOf(t.name)}: tensor ${t.name} holds ${countNonFinite(t.data)} non-finite value(s) (first: ${t.data[at]} at flat index ${at} of shape [${t.shape.join(", ")}]); the model is broken (pass --allow-nonfinite to load it anyway for inspection)`,
    );
  }
}

/**
 * Refuses a sequence longer than the model's context (max_position_embeddings), naming its row:
 * positions past the context were never trained, so their scores would mean nothing.
 */
export function checkSequenceLengths(
  source: string,
  field: string,
  sequences: readonly (readonly unknown[])[],
  maxPositions: number,
  modelDir: string,
): void {
  sequences.forEach((seq, i) => {
    if (seq.length > maxPositions)
      throw new UserError(
        `${source}: ${field}[${i}]: ${seq.length} tokens exceed max_position_embeddings ${maxPositions} of ${modelDir}`,
      );
  });
}
