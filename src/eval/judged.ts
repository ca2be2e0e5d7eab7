/**
 * Evaluation of real models' answers through a BatchJudge (an LLM judge, or the gold judge wrapped):
 * a mean judged score (MT-Bench style), a win rate and a length-controlled win rate against reference
 * answers (AlpacaEval 2 style), exact match against gold answers (GSM8K / MATH style) and the signal
 * accuracy of SSO pairs. Judgments a capped judge did not give are counted as missing, never guessed.
 */
import { type AnswerStyle, isExactMatch } from "./answers.js";
import type { BatchJudge } from "./judge.js";
import { LlmJudge } from "./llm-judge.js";
import { lengthControlledWinRateFromOutcomes, mean } from "./metrics.js";

/** One answer to evaluate. */
export interface JudgedItem {
  instruction: string;
  answer: string;
  /** A reference answer to compare against (the base model's, or a strong model's). */
  reference?: string;
  /** A gold final answer or full solution (GSM8K "#### 42", MATH "\boxed{...}") for exact match. */
  gold?: string;
}

/** The evaluation of one set of answers. */
export interface JudgedReport {
  /** Answers given. */
  count: number;
  /** Mean judged score in [0, 1] (an LLM's 1-10 rating r maps to (r - 1) / 9); null if none scored. */
  score: number | null;
  /** Answers the judge scored. */
  scored: number;
  /** Win rate against the references (ties half); null when nothing was compared. */
  winRate: number | null;
  /** Length-controlled win rate against the references; null when nothing was compared. */
  winRateLC: number | null;
  /** Comparisons the judge decided. */
  compared: number;
  /** Exact-match accuracy over the items with a gold answer; null when none has one. */
  exactMatch: number | null;
  /** Items with a gold answer. */
  exactCount: number;
  /** Mean answer length in characters. */
  meanLength: number;
  /** Mean reference length in characters (of the compared items); null when nothing was compared. */
  referenceMeanLength: number | null;
}

/** Options of evaluateJudged. */
export interface EvaluateJudgedOptions {
  /** Ask the judge for single-answer scores (default true). */
  grade?: boolean;
  /** How gold answers are read (default "auto"). */
  answerStyle?: AnswerStyle;
}

/** Judges answers: scores, comparisons with references (where given) and exact match (where gold is given). */
export async function evaluateJudged(
  judge: BatchJudge,
  items: readonly JudgedItem[],
  options: EvaluateJudgedOptions = {},
): Promise<JudgedReport> {
  const scores =
    options.grade === false
      ? []
      : (
          await judge.scoreAll(items.map((it) => ({ instruction: it.instruction, response: it.answer })))
        ).filter((s): s is number => s !== null);
  const withReference = items.filter((it) => it.reference !== undefined);
  const outcomes = await judge.preferAll(
    withReference.map((it) => ({ instruction: it.instruction, a: it.answer, b: it.reference ?? "" })),
  );
  const decided = withReference.flatMap((it, i) => {
    const o = outcomes[i];
    return o === null
      ? []
      : [{ outcome: o, length: it.answer.length, refLength: (it.reference ?? "").length }];
  });
  const withGold = items.filter((it) => it.gold !== undefined);
  const exact = withGold.map((it) => (isExactMatch(it.answer, it.gold ?? "", options.answerStyle) ? 1 : 0));
  return {
    count: items.length,
    score: scores.length > 0 ? mean(scores) : null,
    scored: scores.length,
    winRate: decided.length > 0 ? mean(decided.map((d) => d.outcome)) : null,
    winRateLC:
      decided.length > 0
        ? lengthControlledWinRateFromOutcomes(
            decided.map((d) => d.outcome),
            decided.map((d) => d.length),
            decided.map((d) => d.refLength),
          )
        : null,
    compared: decided.length,
    exactMatch: withGold.length > 0 ? mean(exact) : null,
    exactCount: withGold.length,
    meanLength: mean(items.map((it) => it.answer.length)),
    referenceMeanLength: decided.length > 0 ? mean(decided.map((d) => d.refLength)) : null,
  };
}

/** One SSO pair to check: does the judge prefer y+ (chosen) to y- (rejected) on the plain query? */
export interface SignalPair {
  instruction: string;
  chosen: string;
  rejected: string;
}

/** The judged signal accuracy of SSO pairs. */
export interface SignalReport {
  pairs: number;
  /** Pairs with a verdict. */
  judged: number;
  /** Mean preference for y+ over y- (both orders averaged for an LLM judge; ties half); null if none judged. */
  accuracy: number | null;
  /** LLM judges only: share of judged pairs where both orders preferred y+ (the strict reading). */
  strictAccuracy: number | null;
  /** LLM judges only: share of judged pairs where both orders agreed (a measure of position bias). */
  consistency: number | null;
}

/** The share of SSO pairs whose y+ the judge prefers, asked in both orders when the judge is an LLM. */
export async function signalAccuracy(judge: BatchJudge, pairs: readonly SignalPair[]): Promise<SignalReport> {
  const items = pairs.map((p) => ({ instruction: p.instruction, a: p.chosen, b: p.rejected }));
  if (judge instanceof LlmJudge) {
    const js = (await judge.compareAll(items)).filter((j) => j.outcome !== null);
    return {
      pairs: pairs.length,
      judged: js.length,
      accuracy: js.length > 0 ? mean(js.map((j) => j.outcome ?? 0)) : null,
      strictAccuracy:
        js.length > 0 ? mean(js.map((j) => (j.forward === "A" && j.backward === "A" ? 1 : 0))) : null,
      consistency: js.length > 0 ? mean(js.map((j) => (j.consistent ? 1 : 0))) : null,
    };
  }
  const outcomes = (await judge.preferAll(items)).filter((o): o is number => o !== null);
  return {
    pairs: pairs.length,
    judged: outcomes.length,
    accuracy: outcomes.length > 0 ? mean(outcomes) : null,
    strictAccuracy: null,
    consistency: null,
  };
}
