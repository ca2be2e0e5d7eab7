/**
 * Paired comparison of two methods over seeds: the per-seed differences d_s = method_s - baseline_s
 * (every method of a seed shares its training queries, base policy and evaluation queries, so d_s
 * cancels what the seed alone decides), their mean, and a percentile-bootstrap 95% interval.
 */
import { Rng } from "../util/rng.js";

/** A mean paired difference with its 95% interval, over `seeds` seeds. */
export interface PairedDifference {
  diff: number;
  lo: number;
  hi: number;
  seeds: number;
}

/** How many bootstrap resamples an interval takes: enough that the 2.5% tails move < 0.001 between seeds. */
export const BOOTSTRAP_RESAMPLES = 10000;

/**
 * The percentile bootstrap over seeds: resample the n differences with replacement, take each
 * resample's mean, and read the 2.5% and 97.5% quantiles. With n seeds there are at most C(2n-1, n)
 * distinct resamples, so for n = 2 the interval is just [min, max]; it needs n >= 5 or so to mean much.
 * Deterministic: the resampling stream is seeded by `label`.
 */
export function pairedBootstrap(
  diffs: readonly number[],
  label: string,
  resamples = BOOTSTRAP_RESAMPLES,
): PairedDifference {
  const n = diffs.length;
  if (n === 0) throw new Error("pairedBootstrap: no paired seeds");
  const diff = diffs.reduce((s, d) => s + d, 0) / n;
  if (n === 1) return { diff, lo: diff, hi: diff, seeds: 1 };
  const rng = new Rng(`paired-bootstrap/${label}`);
  const means = new Float64Array(resamples);
  for (let r = 0; r < resamples; r++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += diffs[rng.int(n)];
    means[r] = sum / n;
  }
  means.sort();
  return { diff, lo: quantile(means, 0.025), hi: quantile(means, 0.975), seeds: n };
}

/** The q-quantile of sorted values, interpolating linearly between neighbours (numpy's default). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  const pos = q * (sorted.length - 1);
  const below = Math.floor(pos);
  const above = Math.min(below + 1, sorted.length - 1);
  return sorted[below] + (pos - below) * (sorted[above] - sorted[below]);
}
