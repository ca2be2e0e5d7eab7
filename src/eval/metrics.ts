/** Arithmetic mean (0 for an empty list). */
export function mean(xs: ArrayLike<number>): number {
  if (xs.length === 0) return 0;
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i];
  return s / xs.length;
}

/** Sample standard deviation (0 for fewer than two values). */
export function stddev(xs: ArrayLike<number>): number {
  if (xs.length < 2) return 0;
  const m = mean(xs);
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += (xs[i] - m) ** 2;
  return Math.sqrt(s / (xs.length - 1));
}

/** Outcome of one head-to-head comparison: 1 policy wins, 0 base wins, 0.5 tie. */
export function compareScores(policy: number, base: number, tieEpsilon = 1e-9): number {
  if (Math.abs(policy - base) <= tieEpsilon) return 0.5;
  return policy > base ? 1 : 0;
}

/** Raw win rate of policy answers against base answers (ties count half), in [0, 1]. */
export function winRate(policyScores: ArrayLike<number>, baseScores: ArrayLike<number>): number {
  if (policyScores.length !== baseScores.length)
    throw new RangeError("winRate: score lists differ in length");
  const outcomes = Array.from(policyScores, (p, i) => compareScores(p, baseScores[i]));
  return mean(outcomes);
}

/**
 * Length-controlled win rate, the idea of AlpacaEval 2 LC: fit a logistic model of the win outcome on
 * the (squashed) length difference between the two answers, then report the predicted win rate when
 * both answers have the same length. A policy that wins only by writing longer answers gets no credit.
 * Model: P(win) = sigmoid(b0 + b1 * tanh((lenP - lenB) / scale)), scale = std of the length differences.
 * Fitted by Newton's method with a small L2 penalty (keeps it finite when outcomes are separable).
 */
export function lengthControlledWinRate(
  policyScores: ArrayLike<number>,
  baseScores: ArrayLike<number>,
  policyLengths: ArrayLike<number>,
  baseLengths: ArrayLike<number>,
): number {
  const outcomes = Array.from(policyScores, (p, i) => compareScores(p, baseScores[i]));
  return lengthControlledWinRateFromOutcomes(outcomes, policyLengths, baseLengths);
}

/**
 * The same length-controlled win rate from outcomes already decided (1 win, 0 loss, 0.5 tie, or any
 * soft value in between, such as the mean of a judge's two verdicts in swapped orders).
 */
export function lengthControlledWinRateFromOutcomes(
  outcomes: ArrayLike<number>,
  policyLengths: ArrayLike<number>,
  baseLengths: ArrayLike<number>,
): number {
  const n = outcomes.length;
  if (n === 0) return 0.5;
  if (policyLengths.length !== n || baseLengths.length !== n)
    throw new RangeError("lengthControlledWinRate: outcome and length lists differ in length");
  const diffs = Array.from(policyLengths, (l, i) => l - baseLengths[i]);
  const scale = stddev(diffs) || 1;
  const xs = diffs.map((d) => Math.tanh(d / scale));
  const { b0 } = fitLogistic(xs, Array.from(outcomes), 1e-2);
  return sigmoid(b0);
}

/** Fits P(y=1) = sigmoid(b0 + b1 x) to soft labels y in [0, 1] by penalised Newton iterations. */
export function fitLogistic(xs: number[], ys: number[], l2: number): { b0: number; b1: number } {
  let b0 = 0;
  let b1 = 0;
  for (let iter = 0; iter < 100; iter++) {
    let g0 = -l2 * b0;
    let g1 = -l2 * b1;
    let h00 = l2;
    let h01 = 0;
    let h11 = l2;
    for (let i = 0; i < xs.length; i++) {
      const p = sigmoid(b0 + b1 * xs[i]);
      const r = ys[i] - p;
      const w = p * (1 - p);
      g0 += r;
      g1 += r * xs[i];
      h00 += w;
      h01 += w * xs[i];
      h11 += w * xs[i] * xs[i];
    }
    const det = h00 * h11 - h01 * h01;
    if (!(Math.abs(det) > 1e-12)) break;
    const d0 = (h11 * g0 - h01 * g1) / det;
    const d1 = (h00 * g1 - h01 * g0) / det;
    b0 += d0;
    b1 += d1;
    if (Math.abs(d0) + Math.abs(d1) < 1e-10) break;
  }
  return { b0, b1 };
}

/** The logistic function. */
export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}
