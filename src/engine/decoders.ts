/**
 * Hugging Face tokenizer decoders for SentencePiece-style vocabularies (Llama 2, Mistral, TinyLlama),
 * whose tokens are text with "▁" for spaces and <0xXX> tokens for bytes no other token covers. Each
 * decoder maps a list of token strings to a list of strings (HF's decode_chain), so a Sequence runs
 * them one after another and the result is joined: Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)
 * turns ["▁Hello", "▁world", "<0x21>"] into "Hello world!".
 */
import { z } from "zod";
import { formatPath, UserError } from "../util/errors.js";
import { translateSplitPattern } from "./pretokenize.js";

/** A decoder chain: token strings to text, and one token's text for streaming. */
export interface TokenDecoder {
  /** The text of a whole sequence of token strings (special tokens already left out when asked). */
  decode(tokens: readonly string[]): string;
  /**
   * One token's text without the sequence-level steps (no strip of a leading space): the replacement
   * character as a space; a byte-fallback token gives its byte, which `byteOf` reports.
   */
  piece(token: string): string;
  /** The byte a <0xXX> token stands for when the chain has ByteFallback, else null. */
  byteOf(token: string): number | null;
}

type Chain = (tokens: string[]) => string[];

/** The byte of a token spelled like <0x41> (exactly six characters, two hex digits), else null. */
export function parseByteToken(token: string): number | null {
  if (token.length !== 6 || !token.startsWith("<0x") || token[5] !== ">") return null;
  const hex = token.slice(3, 5);
  return /^[0-9a-fA-F]{2}$/.test(hex) ? Number.parseInt(hex, 16) : null;
}

/** The vocabulary spelling of byte `b` in SentencePiece-style vocabularies: <0x0A>. */
export function byteFallbackToken(b: number): string {
  return `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

const PatternSchema = z.union([
  z.strictObject({ String: z.string().min(1) }),
  z.strictObject({ Regex: z.string() }),
]);
const ReplaceSchema = z.looseObject({
  type: z.literal("Replace"),
  pattern: PatternSchema,
  content: z.string(),
});
const StripSchema = z.looseObject({
  type: z.literal("Strip"),
  content: z.string().refine((c) => [...c].length === 1, { error: "expected one character" }),
  start: z.number().int().min(0),
  stop: z.number().int().min(0),
});
const MetaspaceSchema = z.looseObject({
  type: z.literal("Metaspace"),
  replacement: z.string().refine((r) => [...r].length === 1, { error: "expected one character" }),
  prepend_scheme: z.enum(["always", "first", "never"]).optional(),
  add_prefix_space: z.boolean().optional(),
});

function parse<T>(schema: z.ZodType<T>, node: unknown, source: string, path: PropertyKey[]): T {
  const parsed = schema.safeParse(node);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new UserError(`${source}: field ${formatPath([...path, ...issue.path])}: ${issue.message}`);
}

/** What the per-token view (`piece`) needs from the chain: its replacements and whether bytes fall back. */
interface PieceSteps {
  replaces: ((token: string) => string)[];
  byteFallback: boolean;
}

function buildChain(node: unknown, source: string, path: PropertyKey[], steps: PieceSteps): Chain {
  const type = (node as { type?: unknown } | null)?.type;
  if (type === "Sequence") {
    const children = (node as { decoders?: unknown }).decoders;
    if (!Array.isArray(children))
      throw new UserError(`${source}: field ${formatPath([...path, "decoders"])}: expected an array`);
    const chains = children.map((c, i) => buildChain(c, source, [...path, "decoders", i], steps));
    return (tokens) => chains.reduce((acc, chain) => chain(acc), tokens);
  }
  if (type === "Replace") {
    const cfg = parse(ReplaceSchema, node, source, path);
    let re: RegExp;
    if ("String" in cfg.pattern)
      re = new RegExp(cfg.pattern.String.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&"), "gu");
    else {
      const translated = translateSplitPattern(cfg.pattern.Regex);
      if (translated === null)
        throw new UserError(
          `${source}: field ${formatPath([...path, "pattern", "Regex"])}: does not compile as a JavaScript regex`,
        );
      re = translated;
    }
    const replace = (t: string) => t.replace(re, () => cfg.content);
    steps.replaces.push(replace);
    return (tokens) => tokens.map(replace);
  }
  if (type === "ByteFallback") {
    steps.byteFallback = true;
    return byteFallbackChain;
  }
  if (type === "Fuse") return (tokens) => [tokens.join("")];
  if (type === "Strip") {
    const cfg = parse(StripSchema, node, source, path);
    return (tokens) => tokens.map((t) => stripChars(t, cfg.content, cfg.start, cfg.stop));
  }
  if (type === "Metaspace") {
    const cfg = parse(MetaspaceSchema, node, source, path);
    const never = cfg.add_prefix_space === false || cfg.prepend_scheme === "never";
    const mark = cfg.replacement;
    steps.replaces.push((t) => t.replaceAll(mark, " "));
    // The first token loses its replacement characters (the prefix the pre-tokenizer added).
    return (tokens) => tokens.map((t, i) => t.replaceAll(mark, i === 0 && !never ? "" : " "));
  }
  throw new UserError(
    `${source}: field ${formatPath([...path, "type"])}: unsupported decoder ${JSON.stringify(type ?? null)} ` +
      "for a SentencePiece-style vocabulary (supported: Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)",
  );
}

/** <0xXX> runs become their UTF-8 text, or one U+FFFD per byte when they are not valid UTF-8 (as HF). */
function byteFallbackChain(tokens: string[]): string[] {
  const out: string[] = [];
  let bytes: number[] = [];
  const flush = () => {
    if (bytes.length === 0) return;
    try {
      out.push(STRICT_UTF8.decode(Uint8Array.from(bytes)));
    } catch {
      for (let i = 0; i < bytes.length; i++) out.push("\uFFFD");
    }
    bytes = [];
  };
  for (const t of tokens) {
    const b = parseByteToken(t);
    if (b !== null) bytes.push(b);
    else {
      flush();
      out.push(t);
    }
  }
  flush();
  return out;
}

/** Removes up to `start` leading and `stop` trailing copies of `content` (HF's Strip decoder). */
function stripChars(token: string, content: string, start: number, stop: number): string {
  const chars = [...token];
  let from = 0;
  while (from < start && from < chars.length && chars[from] === content) from++;
  let to = chars.length;
  while (chars.length - to < stop && to > from && chars[to - 1] === content) to--;
  return chars.slice(from, to).join("");
}

/**
 * Builds the decoder of a SentencePiece-style tokenizer.json. With no decoder, HF joins the tokens
 * with spaces; so do we. Errors name `source` and the field.
 */
export function buildDecoder(node: unknown, source: string, path: PropertyKey[]): TokenDecoder {
  if (node === null || node === undefined)
    return { decode: (tokens) => tokens.join(" "), piece: (t) => t, byteOf: () => null };
  const steps: PieceSteps = { replaces: [], byteFallback: false };
  const chain = buildChain(node, source, path, steps);
  return {
    decode: (tokens) => chain([...tokens]).join(""),
    piece: (token) => steps.replaces.reduce((t, replace) => replace(t), token),
    byteOf: (token) => (steps.byteFallback ? parseByteToken(token) : null),
  };
}
