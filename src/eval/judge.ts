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
