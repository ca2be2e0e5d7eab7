/**
 * Small text helpers shared by the world's scorers. They accept any string a model may emit (empty,
 * garbage, cut off mid-word) and never throw.
 */

/** Lower-cases, turns curly quotes straight and collapses whitespace. */
export function normalize(text: string): string {
  return text
    .toLowerCase()
    .replace(/[\u2018\u2019]/g, "'")
    .replace(/[\u201c\u201d]/g, '"')
    .replace(/\s+/g, " ")
    .trim();
}

/** Sentences split after `.`, `!` or `?` (and at line breaks); the last one may be unterminated. */
export function sentences(text: string): string[] {
  return text
    .split(/(?<=[.!?])\s+|\n+/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** The sentences that ask something (end with a question mark). */
export function questions(text: string): string[] {
  return sentences(text).filter((s) => s.endsWith("?"));
}

/** The text without its questions: where a response states its answer. */
export function statements(text: string): string {
  return sentences(text)
    .filter((s) => !s.endsWith("?"))
    .join(" ");
}

/** Lower-case word tokens (letters, digits and apostrophes). */
export function words(text: string): string[] {
  return normalize(text).match(/[a-z0-9']+/g) ?? [];
}

/** Every integer written with digits, in order of appearance. */
export function numbers(text: string): number[] {
  return (text.match(/-?\d+/g) ?? []).map(Number);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Whether `phrase` occurs as whole words in `text` (case-insensitive), allowing a plural `s`/`es` on
 * its last word, so "break" matches "breaks" but "grass" does not match "grassland".
 */
export function hasPhrase(text: string, phrase: string): boolean {
  return phraseIndex(text, phrase) >= 0;
}

/** Position of the first whole-word occurrence of `phrase` in the normalized text, or -1. */
export function phraseIndex(text: string, phrase: string): number {
  const body = normalize(phrase).split(" ").map(escapeRegExp).join("\\s+");
  const re = new RegExp(`(?<![a-z0-9'])${body}(?:s|es)?(?![a-z0-9'])`);
  const match = re.exec(normalize(text));
  return match ? match.index : -1;
}

/** How many of the phrases occur in the text (each counted once). */
export function countPhrases(text: string, phrases: readonly string[]): number {
  let n = 0;
  for (const p of phrases) if (hasPhrase(text, p)) n++;
  return n;
}

/** Clamps to [0, 1]; NaN becomes 0 so a broken computation can never inflate a score. */
export function clamp01(x: number): number {
  if (!(x > 0)) return 0;
  return Math.min(x, 1);
}
