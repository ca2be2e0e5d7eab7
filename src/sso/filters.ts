/**
 * The reference post-filters of SSO data (docs/algorithm.md, "Filters"), plus our own drop of empty answers.
 * A pair with no gap (chosen equal to rejected) or no contrast with the plain answer teaches nothing,
 * so such records are dropped; every drop is counted by reason.
 */

/** Why a record was dropped. */
export type DropReason =
  | "empty_response"
  | "chosen_equals_rejected"
  | "chosen_equals_raw"
  | "rejected_equals_raw";

/** Every drop reason, in the order the filters test them. */
export const DROP_REASONS: readonly DropReason[] = [
  "empty_response",
  "chosen_equals_rejected",
  "chosen_equals_raw",
  "rejected_equals_raw",
];

/** The three answers the filters look at. */
export interface FilterableRecord {
  chosen: string;
  rejected: string;
  raw: string;
}

/** What the filters did with a record. */
export interface FilterResult<T extends FilterableRecord> {
  /** The record with cleaned chosen / rejected / raw, or null when dropped. */
  kept: T | null;
  /** Why it was dropped; null when kept. */
  reason: DropReason | null;
}

// Length above which both answers are treated as prose that should end with punctuation.
const periodMinLength = 20;

// "Helpful response:", "**Unhelpful and Dull Response:**", "Response:" and similar labels a model
// writes when it echoes the adjectives of its system prompt.
const responseLabel =
  /^\s*(?:\*\*|__)?\s*(?:[\p{L}-]+(?:\s*,\s*|\s+and\s+|\s+)){0,4}?response\s*(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*/iu;

/** Removes a leading "<Adjective> response:" or bare "Response:" label. */
export function stripResponseLabel(text: string): string {
  return text.replace(responseLabel, "");
}

function endsInLowercase(text: string): boolean {
  return /\p{Ll}$/u.test(text);
}

/**
 * Applies the reference filters in their order: when chosen and rejected are both longer than 20
 * characters, append "." to each that ends in a lowercase letter; strip a leading response label;
 * drop on an empty answer (ours), chosen == rejected, chosen == raw or rejected == raw (after trimming).
 */
export function filterRecord<T extends FilterableRecord>(record: T): FilterResult<T> {
  let chosen = record.chosen.trim();
  let rejected = record.rejected.trim();
  const raw = record.raw.trim();
  if (chosen.length > periodMinLength && rejected.length > periodMinLength) {
    if (endsInLowercase(chosen)) chosen += ".";
    if (endsInLowercase(rejected)) rejected += ".";
  }
  chosen = stripResponseLabel(chosen).trim();
  rejected = stripResponseLabel(rejected).trim();
  let reason: DropReason | null = null;
  if (chosen === "" || rejected === "" || raw === "") reason = "empty_response";
  else if (chosen === rejected) reason = "chosen_equals_rejected";
  else if (chosen === raw) reason = "chosen_equals_raw";
  else if (rejected === raw) reason = "rejected_equals_raw";
  if (reason !== null) return { kept: null, reason };
  return { kept: { ...record, chosen, rejected, raw }, reason: null };
}

/** Drop counts keyed by reason, every reason present (zero when unused). */
export type DropCounts = Record<DropReason, number>;

/** A fresh all-zero DropCounts. */
export function emptyDropCounts(): DropCounts {
  return Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as DropCounts;
}
