/**
 * The world's gold judge, in the shape evaluation expects (eval/ only sees the Judge interface). It is
 * pure: the same query and response always get the same verdict.
 */
import type { Judge } from "../eval/judge.js";
import { exactMatch, goldScore } from "./scorers.js";
import type { WorldQuery } from "./tasks.js";

/** A Judge that can also compare two responses. */
export interface PairJudge<Q> extends Judge<Q> {
  /** Preference for `a` over `b`: 1 when a scores higher, 0 when lower, 0.5 on a tie (a win-rate term). */
  prefers(query: Q, a: string, b: string): number;
}

/** Gold scores differing by less than this are a tie. */
export const TIE_EPSILON = 1e-9;

/** The gold judge of the principle world. */
export const worldJudge: PairJudge<WorldQuery> = {
  score: goldScore,
  exactMatch,
  prefers(query, a, b) {
    const diff = goldScore(query, a) - goldScore(query, b);
    if (Math.abs(diff) < TIE_EPSILON) return 0.5;
    return diff > 0 ? 1 : 0;
  },
};
