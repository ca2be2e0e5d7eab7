/**
 * The one length-sorted batch scorer: sequences are sorted by length and grouped so that little of a
 * batch is padding, each group goes through one forward pass, and the results come back in input order.
 */

/** How big one forward pass may be; a single sequence over the limits still runs alone. */
export interface BatchLimits {
  /** Most padded tokens in a group: members times the group's longest length. */
  maxTokens?: number;
  /** Most sequences in a group. */
  maxRows?: number;
  /** Visit the longest sequences first (default: shortest first). */
  longestFirst?: boolean;
}

/**
 * Groups of indices into `lengths`, sorted by length (ties keep input order) and filled greedily up to
 * the limits; every group holds at least one index.
 */
export function lengthSortedGroups(lengths: readonly number[], limits: BatchLimits): number[][] {
  const sign = limits.longestFirst ? -1 : 1;
  const order = lengths.map((_, i) => i).sort((a, b) => sign * (lengths[a] - lengths[b]) || a - b);
  const maxTokens = limits.maxTokens ?? Infinity;
  const maxRows = limits.maxRows ?? Infinity;
  const groups: number[][] = [];
  let start = 0;
  while (start < order.length) {
    let end = start + 1;
    let longest = lengths[order[start]];
    while (end < order.length && end - start < maxRows) {
      const padded = Math.max(longest, lengths[order[end]]);
      if ((end - start + 1) * padded > maxTokens) break;
      longest = padded;
      end++;
    }
    groups.push(order.slice(start, end));
    start = end;
  }
  return groups;
}

/**
 * Scores sequences of the given lengths in length-sorted groups: `scoreGroup` gets a group's indices
 * and returns one result per member, in the group's order; the results are returned in input order.
 */
export function scoreByLength<T>(
  lengths: readonly number[],
  limits: BatchLimits,
  scoreGroup: (group: readonly number[]) => ArrayLike<T>,
): T[] {
  const out = new Array<T>(lengths.length);
  for (const group of lengthSortedGroups(lengths, limits)) {
    const scores = scoreGroup(group);
    group.forEach((index, k) => {
      out[index] = scores[k];
    });
  }
  return out;
}
