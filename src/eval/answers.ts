/**
 * Objective benchmarks: final-answer extraction and exact-match scoring for GSM8K- and MATH-style
 * data (docs/judge.md, "Objective benchmarks"). A model's free-text answer is reduced to one final
 * answer, both sides are normalised the same way, and the strings are compared.
 *
 * Extraction, first rule that applies:
 *   1. the last `\boxed{...}` (or `\fbox{...}`), braces matched so `\boxed{\frac{1}{2}}` is whole;
 *   2. the text after the last `####` (GSM8K's reference marker), up to the end of that line;
 *   3. the text after the last "answer is" / "Answer:" phrase, up to the end of that sentence;
 *   4. the last number in the text (integers, decimals, thousands separators, simple fractions a/b).
 * Normalisation: trims, drops `$`, `\$`, `\(`/`\)`, `\text{...}` wrappers (keeping their content),
 * `\left`/`\right`, `\!`, trailing units words and a trailing period; `\frac{a}{b}`, `\dfrac`, `\tfrac`
 * and `a/b` become a/b; thousands separators go; numbers are compared by value (so 0.5 = 1/2 = .50).
 */

/** The benchmark styles: how a reference answer is read. */
export const ANSWER_STYLES = ["gsm8k", "math", "auto"] as const;

/** One of ANSWER_STYLES. */
export type AnswerStyle = (typeof ANSWER_STYLES)[number];

/** The content of the last `\boxed{...}` / `\fbox{...}` with nested braces matched, or null. */
export function lastBoxed(text: string): string | null {
  const re = /\\(?:boxed|fbox)\s*\{/g;
  let start = -1;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) start = m.index + m[0].length;
  if (start < 0) {
    // "\boxed 5" (no braces) is legal LaTeX for a single token.
    const bare = /\\boxed\s+([^\s$]+)/g;
    let last: string | null = null;
    for (let m = bare.exec(text); m !== null; m = bare.exec(text)) last = m[1];
    return last;
  }
  let depth = 1;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (c === "{") depth++;
    else if (c === "}") {
      depth--;
      if (depth === 0) return text.slice(start, i);
    }
  }
  return null; // unbalanced: no usable box
}

const numberPattern = /-?\d[\d,]*(?:\.\d+)?(?:\s*\/\s*\d+)?|-?\.\d+/g;

/** The last number in a text (with thousands separators, decimals or a simple fraction), or null. */
export function lastNumber(text: string): string | null {
  let last: string | null = null;
  for (const m of text.matchAll(numberPattern)) last = m[0];
  return last === null ? null : last.replace(/,(?=\d{3}(\D|$))/g, "").replace(/\s+/g, "");
}

/** A model's final answer (see the module comment for the rules), or null when it has none. */
export function extractFinalAnswer(text: string): string | null {
  const boxed = lastBoxed(text);
  if (boxed !== null) return boxed.trim();
  const hashes = text.lastIndexOf("####");
  if (hashes >= 0) {
    const rest = text
      .slice(hashes + 4)
      .split("\n")[0]
      .trim();
    if (rest !== "") return rest;
  }
  const phrase = /(?:the (?:final )?answer is|final answer:|answer:)\s*/gi;
  let after: string | null = null;
  for (let m = phrase.exec(text); m !== null; m = phrase.exec(text))
    after = text.slice(m.index + m[0].length);
  if (after !== null) {
    // Up to the end of the sentence: a period followed by a space or the end, or a new line.
    const sentence = after.split(/\n|\.(?:\s|$)/)[0].trim();
    if (sentence !== "") return sentence;
  }
  return lastNumber(text);
}

/** The reference answer of a benchmark line: after `####` (GSM8K), else its box (MATH), else the text. */
export function referenceAnswer(reference: string, style: AnswerStyle = "auto"): string {
  if (style === "gsm8k" || (style === "auto" && reference.includes("####"))) {
    const i = reference.lastIndexOf("####");
    if (i >= 0) return reference.slice(i + 4).trim();
    return reference.trim();
  }
  if (style === "math" || style === "auto") {
    const boxed = lastBoxed(reference);
    if (boxed !== null) return boxed.trim();
  }
  return reference.trim();
}

/** Strips `\cmd{...}` wrappers (keeping the content) for the given command names, braces matched. */
function unwrap(text: string, commands: string[]): string {
  let out = text;
  for (const cmd of commands) {
    const opener = `\\${cmd}{`;
    for (let i = out.indexOf(opener); i >= 0; i = out.indexOf(opener)) {
      let depth = 1;
      let j = i + opener.length;
      for (; j < out.length && depth > 0; j++) {
        if (out[j] === "{") depth++;
        else if (out[j] === "}") depth--;
      }
      if (depth !== 0) break;
      out = out.slice(0, i) + out.slice(i + opener.length, j - 1) + out.slice(j);
    }
  }
  return out;
}

/** `\frac{a}{b}` (also dfrac, tfrac, and `\frac12`) as a/b, innermost first. */
function fractionsToSlash(text: string): string {
  let out = text;
  for (let guard = 0; guard < 20; guard++) {
    const next = out
      .replace(/\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}/g, "($1)/($2)")
      .replace(/\\[dt]?frac\s*(\d)(\d)/g, "$1/$2");
    if (next === out) break;
    out = next;
  }
  // Parentheses around a plain number or word are only noise now: (3)/(4) -> 3/4.
  return out.replace(/\(([-\w.]+)\)/g, "$1");
}

/** Words that follow a number as units and do not change the answer. */
const unitWords =
  /\s*(?:dollars?|cents?|units?|meters?|metres?|cm|km|kg|grams?|g|hours?|hrs?|minutes?|mins?|seconds?|days?|weeks?|years?|miles?|feet|foot|inches?|pounds?|lbs?|degrees?|percent|people|students?|apples?|items?|points?)\b\.?$/i;

/** Normalises an answer for comparison (see the module comment). */
export function normalizeAnswer(answer: string): string {
  let s = answer.trim();
  s = unwrap(s, ["text", "textbf", "mathrm", "mbox", "boxed"]);
  s = s.replace(/\\left|\\right|\\!|\\,|\\;|\\ /g, "");
  s = s.replace(/\\\$|\$|\\\(|\\\)|\\\[|\\\]/g, "");
  s = s.replace(/\^\s*\{?\\circ\}?|°/g, "");
  s = s.replace(/\\%|%/g, "");
  s = fractionsToSlash(s);
  s = s.trim().replace(/[.。]+$/, "");
  s = s.replace(unitWords, "");
  // Thousands separators: 1,234,567 -> 1234567 (but a list "1, 2" keeps its comma and space).
  s = s.replace(/(\d),(?=\d{3}(?!\d))/g, "$1");
  s = s.replace(/\s+/g, " ").trim();
  if (/^[a-z]\s*=\s*/i.test(s)) s = s.replace(/^[a-z]\s*=\s*/i, ""); // "x = 5" -> "5"
  const value = numericValue(s);
  if (value !== null) return formatNumber(value);
  return s.toLowerCase().replace(/\s+/g, "");
}

/** The value of a plain number or a fraction a/b, or null. */
function numericValue(s: string): number | null {
  const plain = /^[-+]?(\d+(\.\d*)?|\.\d+)$/;
  if (plain.test(s)) return Number(s);
  const frac = /^([-+]?\d+(?:\.\d+)?)\s*\/\s*([-+]?\d+(?:\.\d+)?)$/.exec(s);
  if (frac !== null) {
    const d = Number(frac[2]);
    if (d === 0) return null;
    return Number(frac[1]) / d;
  }
  return null;
}

/** A number in a canonical form: 10 significant digits, no trailing zeros (0.1 + 0.2 = 0.3). */
function formatNumber(x: number): string {
  if (Number.isInteger(x)) return String(x);
  return String(Number(x.toPrecision(10)));
}

/** Whether a model's answer text matches a reference answer (already extracted or a full solution). */
export function isExactMatch(response: string, reference: string, style: AnswerStyle = "auto"): boolean {
  const predicted = extractFinalAnswer(response);
  if (predicted === null) return false;
  return normalizeAnswer(predicted) === normalizeAnswer(referenceAnswer(reference, style));
}
