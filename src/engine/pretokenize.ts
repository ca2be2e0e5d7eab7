/**
 * Pre-tokenization for byte-level BPE: the regex split that cuts text into words before merges, the
 * Hugging Face split behaviours, and a translator that turns the Oniguruma-flavoured Split patterns of
 * published tokenizer.json files into JavaScript regular expressions.
 */

// Unicode White_Space, which is what Oniguruma's \s means in HF tokenizers. JavaScript's \s differs
// (it adds U+FEFF and lacks U+0085), and a different split would give different token ids.
const WHITESPACE_CLASS_BODY =
  "\\t\\n\\v\\f\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000";

/**
 * The GPT-2 pre-tokenizer split (what HF's ByteLevel pre-tokenizer uses when use_regex is true):
 * English contractions, letter runs and digit runs each with at most one leading space, runs of other
 * symbols likewise, then whitespace runs that leave their last space to the following word.
 */
export const GPT2_SPLIT_PATTERN =
  `'(?:[sdmt]|ll|ve|re)` +
  `| ?\\p{L}+` +
  `| ?\\p{N}+` +
  `| ?[^${WHITESPACE_CLASS_BODY}\\p{L}\\p{N}]+` +
  `|[${WHITESPACE_CLASS_BODY}]+(?![^${WHITESPACE_CLASS_BODY}])` +
  `|[${WHITESPACE_CLASS_BODY}]+`;

/** How a Split pre-tokenizer treats the pieces its pattern matches (HF SplitDelimiterBehavior). */
export type SplitBehavior = "Removed" | "Isolated" | "MergedWithPrevious" | "MergedWithNext" | "Contiguous";

interface Segment {
  text: string;
  delimiter: boolean;
}

/**
 * Splits `text` by the matches of `re` (a global, unicode RegExp). Matches are delimiters (or, with
 * `invert`, the text between them is), and `behavior` says where delimiters go. Empty pieces vanish.
 */
export function splitByPattern(text: string, re: RegExp, behavior: SplitBehavior, invert = false): string[] {
  const segments: Segment[] = [];
  re.lastIndex = 0;
  let last = 0;
  for (;;) {
    const m = re.exec(text);
    if (m === null) break;
    if (m[0].length === 0) {
      // A pattern that can match nothing would loop forever; step over one code point.
      const code = text.codePointAt(re.lastIndex);
      re.lastIndex += code !== undefined && code > 0xffff ? 2 : 1;
      if (re.lastIndex > text.length) break;
      continue;
    }
    if (m.index > last) segments.push({ text: text.slice(last, m.index), delimiter: invert });
    segments.push({ text: m[0], delimiter: !invert });
    last = m.index + m[0].length;
  }
  if (last < text.length) segments.push({ text: text.slice(last), delimiter: invert });
  return applyBehavior(segments, behavior);
}

function applyBehavior(segments: Segment[], behavior: SplitBehavior): string[] {
  switch (behavior) {
    case "Isolated":
      return segments.map((s) => s.text);
    case "Removed":
      return segments.filter((s) => !s.delimiter).map((s) => s.text);
    case "Contiguous": {
      const out: string[] = [];
      let previousDelimiter = false;
      for (const s of segments) {
        if (s.delimiter && previousDelimiter) out[out.length - 1] += s.text;
        else out.push(s.text);
        previousDelimiter = s.delimiter;
      }
      return out;
    }
    case "MergedWithPrevious": {
      // A delimiter joins the piece before it unless that piece was itself a delimiter.
      const out: string[] = [];
      let previousDelimiter = false;
      for (const s of segments) {
        if (s.delimiter && !previousDelimiter && out.length > 0) out[out.length - 1] += s.text;
        else out.push(s.text);
        previousDelimiter = s.delimiter;
      }
      return out;
    }
    case "MergedWithNext": {
      // The mirror image: walk backwards, a delimiter joins the piece after it.
      const out: string[] = [];
      let nextDelimiter = false;
      for (let i = segments.length - 1; i >= 0; i--) {
        const s = segments[i];
        if (s.delimiter && !nextDelimiter && out.length > 0)
          out[out.length - 1] = s.text + out[out.length - 1];
        else out.push(s.text);
        nextDelimiter = s.delimiter;
      }
      return out.reverse();
    }
  }
}

/**
 * Translates an Oniguruma-style pattern from a tokenizer.json Split into JavaScript syntax:
 * `(?i:...)` groups (unsupported by Node 20) become explicit case classes, `\s`/`\S` become Unicode
 * White_Space classes, and possessive quantifiers (`x?+`, `x++`, `x*+`, `x{n,m}+`) become the
 * equivalent atomic lookahead-and-backreference. Returns null when the result does not compile.
 */
export function translateSplitPattern(pattern: string): RegExp | null {
  try {
    return new RegExp(translate(pattern), "gu");
  } catch {
    return null;
  }
}

function caseVariants(ch: string): string[] {
  const lower = ch.toLowerCase();
  const upper = ch.toUpperCase();
  const out = new Set([ch]);
  // Only single-code-point case partners fit in a character class.
  if ([...lower].length === 1) out.add(lower);
  if ([...upper].length === 1) out.add(upper);
  return [...out];
}

function escapeInClass(ch: string): string {
  return /[\\\]^-]/.test(ch) ? `\\${ch}` : ch;
}

// Oniguruma lets any punctuation be escaped; JavaScript's unicode mode only syntax characters.
function identityEscape(esc: string, inClass: boolean): string {
  const ch = esc.slice(1);
  if (ch.length !== 1 || /[\p{L}\p{N}]/u.test(ch)) return esc;
  if ("^$\\.*+?()[]{}|/".includes(ch) || (inClass && ch === "-")) return esc;
  return ch;
}

function translate(src: string): string {
  let out = "";
  // Output offsets where each open group started, and whether it turned on case-insensitivity.
  const groupStack: { start: number; kind: "plain" | "caseless" | "atomic" }[] = [];
  let caseless = 0;
  let lastAtomStart = -1;
  let atomicCount = 0;
  let i = 0;
  const readEscape = (): string => {
    // Returns the full escape sequence starting at src[i] === "\\" and advances i past it.
    const start = i;
    i += 2;
    const kind = src[start + 1];
    if ((kind === "p" || kind === "P") && src[i] === "{") {
      const close = src.indexOf("}", i);
      i = close < 0 ? src.length : close + 1;
    } else if (kind === "x" && src[i] === "{") {
      const close = src.indexOf("}", i);
      i = close < 0 ? src.length : close + 1;
    } else if (kind === "x") i += 2;
    else if (kind === "u") i += 4;
    return src.slice(start, i);
  };
  while (i < src.length) {
    const ch = src[i];
    if (ch === "\\") {
      const esc = readEscape();
      lastAtomStart = out.length;
      if (esc === "\\s") out += `[${WHITESPACE_CLASS_BODY}]`;
      else if (esc === "\\S") out += `[^${WHITESPACE_CLASS_BODY}]`;
      else if (esc.startsWith("\\x{")) out += `\\u{${esc.slice(3, -1)}}`;
      else out += identityEscape(esc, false);
      continue;
    }
    if (ch === "[") {
      lastAtomStart = out.length;
      out += "[";
      i++;
      if (src[i] === "^") {
        out += "^";
        i++;
      }
      // A ']' right after '[' or '[^' is a literal in Oniguruma.
      if (src[i] === "]") {
        out += "\\]";
        i++;
      }
      while (i < src.length && src[i] !== "]") {
        if (src[i] === "\\") {
          const esc = readEscape();
          if (esc === "\\s") out += WHITESPACE_CLASS_BODY;
          else if (esc.startsWith("\\x{")) out += `\\u{${esc.slice(3, -1)}}`;
          else out += identityEscape(esc, true);
          continue;
        }
        const cp = String.fromCodePoint(src.codePointAt(i) ?? 0);
        i += cp.length;
        if (caseless > 0 && /\p{L}/u.test(cp)) out += caseVariants(cp).map(escapeInClass).join("");
        else out += cp === "[" ? "\\[" : cp;
      }
      out += "]";
      i++;
      continue;
    }
    if (ch === "(") {
      const prefix =
        /^\((\?i:|\?>|\?:|\?=|\?!|\?<=|\?<!|\?<[A-Za-z_][A-Za-z0-9_]*>)?/.exec(src.slice(i))?.[0] ?? "(";
      const kind = prefix === "(?i:" ? "caseless" : prefix === "(?>" ? "atomic" : "plain";
      groupStack.push({ start: out.length, kind });
      if (kind === "caseless") caseless++;
      out += kind === "plain" ? prefix : "(?:";
      i += prefix.length;
      lastAtomStart = -1;
      continue;
    }
    if (ch === ")") {
      const group = groupStack.pop();
      if (group?.kind === "caseless") caseless--;
      out += ")";
      i++;
      lastAtomStart = group ? group.start : -1;
      if (group?.kind === "atomic") {
        // Oniguruma's atomic group (?>x) is (?=(?<n>x))\k<n> in JavaScript.
        const name = `atomic${atomicCount++}`;
        out = `${out.slice(0, group.start)}(?=(?<${name}>${out.slice(group.start)}))\\k<${name}>`;
      }
      continue;
    }
    if (ch === "?" || ch === "*" || ch === "+" || ch === "{") {
      let quantifier = ch;
      if (ch === "{") {
        const close = src.indexOf("}", i);
        if (close < 0 || !/^\{\d*(,\d*)?\}$/.test(src.slice(i, close + 1))) {
          out += "\\{";
          i++;
          continue;
        }
        quantifier = src.slice(i, close + 1);
      }
      i += quantifier.length;
      if (src[i] === "+" && lastAtomStart >= 0) {
        // Possessive: match greedily and never give back, which JS expresses as (?=(?<n>x*))\k<n>.
        const name = `possessive${atomicCount++}`;
        const atom = out.slice(lastAtomStart);
        out = `${out.slice(0, lastAtomStart)}(?=(?<${name}>${atom}${quantifier}))\\k<${name}>`;
        i++;
      } else {
        out += quantifier;
        if (src[i] === "?") {
          out += "?";
          i++;
        }
      }
      lastAtomStart = -1;
      continue;
    }
    const cp = String.fromCodePoint(src.codePointAt(i) ?? 0);
    i += cp.length;
    lastAtomStart = out.length;
    // Oniguruma's dot excludes only \n; JavaScript's also \r, U+2028 and U+2029.
    if (cp === ".") out += "[^\\n]";
    else if (caseless > 0 && /\p{L}/u.test(cp)) {
      const variants = caseVariants(cp);
      out += variants.length > 1 ? `[${variants.map(escapeInClass).join("")}]` : cp;
    } else out += cp;
  }
  return out;
}
