/**
 * What evaluation needs from a judge. The principle world's gold scorer is one judge; an LLM judge over
 * HTTP would be another. eval/ never imports world/: it only sees this interface.
 */
export interface Judge<Q> {
  /** Quality of a response to a query, in [0, 1]. */
  score(query: Q, response: string): number;
  /** Whether the response solves a verifiable task exactly; null when the query has no exact answer. */
  exactMatch(query: Q, response: string): boolean | null;
}

/** One answer to judge on its own. */
export interface GradeItem {
  instruction: string;
  response: string;
}

/** Two answers to the same instruction, compared. */
export interface CompareItem {
  instruction: string;
  a: string;
  b: string;
}

/**
 * A judge that works in batches and may fail to give a verdict (an LLM over HTTP, with a request cap;
 * the gold judge wrapped into it never does). Evaluation of real models goes through this interface.
 */
export interface BatchJudge {
  /** A short name for reports. */
  readonly name: string;
  /** Quality of each response in [0, 1]; null where the judge gave no usable verdict. */
  scoreAll(items: readonly GradeItem[]): Promise<Array<number | null>>;
  /** Preference for `a` over `b` per item in [0, 1] (0.5 a tie); null where there is no verdict. */
  preferAll(items: readonly CompareItem[]): Promise<Array<number | null>>;
}
