import type { Judge } from "./judge.js";
import { lengthControlledWinRate, mean, winRate } from "./metrics.js";

/** The held-out evaluation of one policy, mirroring the paper's measures in our world. */
export interface EvalResult {
  /** Mean judge score (our MT-Bench). */
  goldScore: number;
  /** Win rate against the base policy's answers (our AlpacaEval 2 raw win rate). */
  winRate: number;
  /** Length-controlled win rate (our AlpacaEval 2 LC). */
  winRateLC: number;
  /** Exact-match accuracy on verifiable queries (our GSM8K); null when none is verifiable. */
  exactMatch: number | null;
  /** Mean response length in characters. */
  meanLength: number;
  /** Number of evaluation queries. */
  count: number;
}

/**
 * Scores a policy's answers on held-out queries and compares them with the base policy's answers to
 * the same queries (same order). With `baseAnswers` equal to `answers` the win rates are 0.5.
 */
export function evaluateAnswers<Q>(
  judge: Judge<Q>,
  queries: Q[],
  answers: string[],
  baseAnswers: string[],
): EvalResult {
  if (answers.length !== queries.length || baseAnswers.length !== queries.length)
    throw new RangeError("evaluateAnswers: queries, answers and baseAnswers must have the same length");
  const scores = queries.map((q, i) => judge.score(q, answers[i]));
  const baseScores = queries.map((q, i) => judge.score(q, baseAnswers[i]));
  const lengths = answers.map((a) => a.length);
  const baseLengths = baseAnswers.map((a) => a.length);
  const exact: number[] = [];
  queries.forEach((q, i) => {
    const em = judge.exactMatch(q, answers[i]);
    if (em !== null) exact.push(em ? 1 : 0);
  });
  return {
    goldScore: mean(scores),
    winRate: winRate(scores, baseScores),
    winRateLC: lengthControlledWinRate(scores, baseScores, lengths, baseLengths),
    exactMatch: exact.length > 0 ? mean(exact) : null,
    meanLength: mean(lengths),
    count: queries.length,
  };
}
