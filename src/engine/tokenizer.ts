/**
 * Byte-level BPE tokenizer (GPT-2 style): text is cut into words by a regex, each word's UTF-8 bytes
 * become byte tokens, and learned merges join adjacent tokens in rank order. Reads and writes Hugging
 * Face `tokenizer.json`, so HF loads ours and we load published byte-level BPE tokenizers (GPT-2,
 * Qwen2, Llama-3 style).
 *
 * Id layout of the tokenizers we build: ids 0..255 are the single bytes (id = byte value), the special
 * tokens follow at 256, 257, ... in the order given, then one id per learned merge. Special ids thus do
 * not move when a tokenizer is trained to a larger vocabulary, and a byte-level tokenizer with no
 * merges shares its ids with every tokenizer trained with the same special tokens. Loaded tokenizers
 * keep whatever ids their file gives.
 */
import { readFileSync } from "node:fs";
import { z } from "zod";
import { formatPath, UserError } from "../util/errors.js";
import type { ChatFormat } from "./chat-format.js";
import { buildDecoder, byteFallbackToken, type TokenDecoder } from "./decoders.js";
import {
  GPT2_SPLIT_PATTERN,
  type SplitBehavior,
  splitByPattern,
  translateSplitPattern,
} from "./pretokenize.js";

/** The special tokens of our chat format, in id order (256, 257, 258 in tokenizers we build). */
export const DEFAULT_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] as const;

/** A token matched in the raw text before pre-tokenization (HF "added token"). */
export interface AddedToken {
  id: number;
  content: string;
  /** Special tokens can be skipped when decoding and are only matched when allowSpecial is set. */
  special: boolean;
}

/** Options for encode. */
export interface EncodeOptions {
  /** Match special tokens in the text as single ids (default true); false encodes them as plain text. */
  allowSpecial?: boolean;
  /** Character ranges [start, end) where added tokens are not matched (untrusted message contents). */
  plainRanges?: readonly (readonly [number, number])[];
}

/** Options for decode. */
export interface DecodeOptions {
  /** Leave special tokens out of the text (default false). */
  skipSpecial?: boolean;
}

/** Options for BpeTokenizer.train. */
export interface TrainOptions {
  /** The special tokens, in id order after the 256 bytes; default DEFAULT_SPECIAL_TOKENS. */
  specialTokens?: readonly string[];
  /** Stop merging when the most frequent pair occurs fewer times than this (default 2). */
  minFrequency?: number;
}

// ---------------------------------------------------------------------------------------------------
// The GPT-2 byte <-> unicode mapping: every byte gets a printable character so tokens are readable
// strings in tokenizer.json. Printable Latin-1 bytes map to themselves, the rest to U+0100 onwards.

const BYTE_TO_CHAR: string[] = [];
const CHAR_TO_BYTE = new Map<number, number>();
{
  let next = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const code = printable ? b : 256 + next++;
    BYTE_TO_CHAR.push(String.fromCharCode(code));
    CHAR_TO_BYTE.set(code, b);
  }
}

/** The byte-level character that stands for byte `b` in vocab strings. */
export function byteToChar(b: number): string {
  return BYTE_TO_CHAR[b];
}

/** Maps a byte-level vocab string back to its bytes (characters outside the mapping as UTF-8). */
function tokenStringToBytes(token: string): Uint8Array {
  const out: number[] = [];
  for (const ch of token) {
    const code = ch.codePointAt(0) ?? 0;
    const b = CHAR_TO_BYTE.get(code);
    if (b !== undefined) out.push(b);
    else for (const x of Buffer.from(ch, "utf8")) out.push(x);
  }
  return Uint8Array.from(out);
}

/** Appends the UTF-8 bytes of `text` to `out`; lone surrogates become U+FFFD as TextEncoder does. */
function pushUtf8(text: string, out: number[]): void {
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else c = 0xfffd;
    }
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
}

// Merge pairs are keyed by one number: left id * 2^21 + right id (ids below 2M, exact in a double).
const PAIR_SHIFT = 2 ** 21;
const pairKey = (a: number, b: number): number => a * PAIR_SHIFT + b;

function escapeRegExp(text: string): string {
  // Only syntax characters: unicode-mode regexes reject needless escapes such as \-.
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

// ---------------------------------------------------------------------------------------------------
// tokenizer.json schemas. We validate what we use and keep the rest as given.

const ByteLevelSchema = z.looseObject({
  type: z.literal("ByteLevel"),
  add_prefix_space: z.boolean().default(false),
  use_regex: z.boolean().default(true),
});
const SplitSchema = z.looseObject({
  type: z.literal("Split"),
  pattern: z.union([z.strictObject({ Regex: z.string() }), z.strictObject({ String: z.string() })]),
  behavior: z.enum(["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]),
  invert: z.boolean().default(false),
});
const DigitsSchema = z.looseObject({
  type: z.literal("Digits"),
  individual_digits: z.boolean().default(false),
});
const SequenceSchema = z.looseObject({ type: z.literal("Sequence"), pretokenizers: z.array(z.unknown()) });

const NORMALIZER_FORMS = ["NFC", "NFD", "NFKC", "NFKD"] as const;

const AddedTokenSchema = z.looseObject({
  id: z.number().int().min(0),
  content: z.string().min(1),
  special: z.boolean().default(false),
  single_word: z.boolean().optional(),
  lstrip: z.boolean().optional(),
  rstrip: z.boolean().optional(),
  normalized: z.boolean().optional(),
});

const NullableString = z.string().nullable().optional();
const ModelSchema = z.looseObject({
  type: z.literal("BPE", { error: "only BPE models are supported" }),
  vocab: z.record(z.string(), z.number().int().min(0)),
  merges: z.array(z.union([z.string(), z.tuple([z.string(), z.string()])])),
  dropout: z.number().nullable().optional(),
  unk_token: NullableString,
  continuing_subword_prefix: NullableString,
  end_of_word_suffix: NullableString,
  fuse_unk: z.boolean().optional(),
  byte_fallback: z.boolean().optional(),
  ignore_merges: z.boolean().optional(),
});

const TokenizerFileSchema = z.looseObject({
  model: ModelSchema,
  version: z.string().optional(),
  added_tokens: z.array(AddedTokenSchema).nullable().default([]),
  normalizer: z.unknown().optional(),
  pre_tokenizer: z.unknown().optional(),
  post_processor: z.unknown().optional(),
  decoder: z.unknown().optional(),
});

function parseOrThrow<T>(schema: z.ZodType<T>, value: unknown, source: string, base: PropertyKey[]): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new UserError(`${source}: field ${formatPath([...base, ...issue.path])}: ${issue.message}`);
}

/**
 * A pre-tokenizer step: pieces in, pieces out. `atStart` says the text being split begins the input
 * (no added token before it), which Metaspace's prepend_scheme "first" asks.
 */
type PreTokenizeStep = (pieces: string[], atStart: boolean) => string[];

const GPT2_SPLIT = new RegExp(GPT2_SPLIT_PATTERN, "gu");

function gpt2Split(pieces: string[]): string[] {
  const out: string[] = [];
  for (const piece of pieces) {
    // The GPT-2 pattern covers every character, so its matches alone are the split.
    GPT2_SPLIT.lastIndex = 0;
    for (let m = GPT2_SPLIT.exec(piece); m !== null; m = GPT2_SPLIT.exec(piece)) out.push(m[0]);
  }
  return out;
}

interface Pipeline {
  normalize: (text: string) => string;
  preTokenize: PreTokenizeStep;
}

const MetaspaceSchema = z.looseObject({
  type: z.literal("Metaspace"),
  replacement: z.string().refine((r) => [...r].length === 1, { error: "expected one character" }),
  prepend_scheme: z.enum(["always", "first", "never"]).optional(),
  add_prefix_space: z.boolean().optional(),
  split: z.boolean().optional(),
});

/**
 * HF's Metaspace: spaces become the replacement character (U+2581 "▁"); a replacement is put in front
 * unless the piece already starts with one (prepend_scheme "always", or "first" only where the input
 * begins); with split (the default of files that predate the field) each replacement starts a new word.
 */
function metaspaceStep(
  cfg: z.infer<typeof MetaspaceSchema>,
  source: string,
  path: PropertyKey[],
): PreTokenizeStep {
  // Files written before prepend_scheme existed say add_prefix_space; false means "never".
  let scheme = cfg.prepend_scheme ?? "always";
  if (cfg.add_prefix_space === false) {
    if (cfg.prepend_scheme !== undefined && cfg.prepend_scheme !== "never")
      throw new UserError(
        `${source}: field ${formatPath([...path, "add_prefix_space"])}: false does not match prepend_scheme "${cfg.prepend_scheme}"`,
      );
    scheme = "never";
  }
  const mark = cfg.replacement;
  const split = cfg.split ?? true;
  return (pieces, atStart) =>
    pieces.flatMap((piece, i) => {
      let text = piece.replaceAll(" ", mark);
      const prepend = scheme === "always" || (scheme === "first" && atStart && i === 0);
      if (prepend && !text.startsWith(mark)) text = mark + text;
      if (!split) return [text];
      // MergedWithNext: every replacement character begins a new word.
      const words: string[] = [];
      let start = 0;
      for (let at = text.indexOf(mark, 1); at >= 0; at = text.indexOf(mark, at + mark.length)) {
        words.push(text.slice(start, at));
        start = at;
      }
      if (start < text.length) words.push(text.slice(start));
      return words;
    });
}

function buildPreTokenizer(
  node: unknown,
  source: string,
  path: PropertyKey[],
  warnings: string[],
  state: { byteLevel: boolean; metaspace: boolean },
): PreTokenizeStep {
  if (node === null || node === undefined) return (pieces) => pieces;
  const type = (node as { type?: unknown }).type;
  if (type === "Metaspace") {
    state.metaspace = true;
    return metaspaceStep(parseOrThrow(MetaspaceSchema, node, source, path), source, path);
  }
  if (type === "ByteLevel") {
    const cfg = parseOrThrow(ByteLevelSchema, node, source, path);
    state.byteLevel = true;
    return (pieces) => {
      const spaced = cfg.add_prefix_space ? pieces.map((p) => (p.startsWith(" ") ? p : ` ${p}`)) : pieces;
      return cfg.use_regex ? gpt2Split(spaced) : spaced;
    };
  }
  if (type === "Split") {
    const cfg = parseOrThrow(SplitSchema, node, source, path);
    let re: RegExp;
    if ("String" in cfg.pattern) re = new RegExp(escapeRegExp(cfg.pattern.String), "gu");
    else {
      const translated = translateSplitPattern(cfg.pattern.Regex);
      if (translated === null) {
        warnings.push(
          `${source}: ${formatPath([...path, "pattern", "Regex"])} does not compile as a JavaScript regex; ` +
            "using the GPT-2 split instead, so some texts may tokenize differently from HF",
        );
        re = new RegExp(GPT2_SPLIT_PATTERN, "gu");
      } else re = translated;
    }
    const behavior: SplitBehavior = cfg.behavior;
    return (pieces) => pieces.flatMap((p) => splitByPattern(p, re, behavior, cfg.invert));
  }
  if (type === "Digits") {
    const cfg = parseOrThrow(DigitsSchema, node, source, path);
    const re = cfg.individual_digits ? /\p{N}/gu : /\p{N}+/gu;
    return (pieces) => pieces.flatMap((p) => splitByPattern(p, re, "Isolated"));
  }
  if (type === "Sequence") {
    const cfg = parseOrThrow(SequenceSchema, node, source, path);
    const steps = cfg.pretokenizers.map((child, i) =>
      buildPreTokenizer(child, source, [...path, "pretokenizers", i], warnings, state),
    );
    return (pieces, atStart) => steps.reduce((acc, step) => step(acc, atStart), pieces);
  }
  throw new UserError(
    `${source}: field ${formatPath([...path, "type"])}: unsupported pre-tokenizer ${JSON.stringify(type ?? null)} ` +
      "(supported: null, ByteLevel, Metaspace, Split, Digits, Sequence)",
  );
}

const ReplaceSchema = z.looseObject({
  type: z.literal("Replace"),
  pattern: z.union([z.strictObject({ String: z.string().min(1) }), z.strictObject({ Regex: z.string() })]),
  content: z.string(),
});

/** The global regex of a Replace pattern (a literal String, or a Regex in HF's Oniguruma syntax). */
export function replacePattern(
  pattern: { String: string } | { Regex: string },
  source: string,
  path: PropertyKey[],
): RegExp {
  if ("String" in pattern) return new RegExp(escapeRegExp(pattern.String), "gu");
  const translated = translateSplitPattern(pattern.Regex);
  if (translated === null)
    throw new UserError(
      `${source}: field ${formatPath([...path, "Regex"])}: does not compile as a JavaScript regex`,
    );
  return translated;
}

function buildNormalizer(node: unknown, source: string, path: PropertyKey[]): (text: string) => string {
  if (node === null || node === undefined) return (t) => t;
  const type = (node as { type?: unknown }).type;
  if (typeof type === "string" && (NORMALIZER_FORMS as readonly string[]).includes(type))
    return (t) => t.normalize(type as (typeof NORMALIZER_FORMS)[number]);
  if (type === "Lowercase") return (t) => t.toLowerCase();
  if (type === "Prepend") {
    // HF prepends to non-empty text only (each piece between added tokens is normalized on its own).
    const prepend = (node as { prepend?: unknown }).prepend;
    if (typeof prepend !== "string")
      throw new UserError(`${source}: field ${formatPath([...path, "prepend"])}: expected a string`);
    return (t) => (t === "" ? t : prepend + t);
  }
  if (type === "Replace") {
    const cfg = parseOrThrow(ReplaceSchema, node, source, path);
    const re = replacePattern(cfg.pattern, source, [...path, "pattern"]);
    return (t) => t.replace(re, () => cfg.content);
  }
  if (type === "Sequence") {
    const children = (node as { normalizers?: unknown }).normalizers;
    if (!Array.isArray(children))
      throw new UserError(`${source}: field ${formatPath([...path, "normalizers"])}: expected an array`);
    const steps = children.map((c, i) => buildNormalizer(c, source, [...path, "normalizers", i]));
    return (t) => steps.reduce((acc, step) => step(acc), t);
  }
  throw new UserError(
    `${source}: field ${formatPath([...path, "type"])}: unsupported normalizer ${JSON.stringify(type ?? null)} ` +
      "(supported: null, NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Sequence)",
  );
}

/** What a tokenizer carries from (or for) tokenizer.json besides vocab, merges and added tokens. */
interface JsonExtras {
  normalizer: unknown;
  preTokenizer: unknown;
  postProcessor: unknown;
  decoder: unknown;
  ignoreMerges: boolean;
  addedTokenFlags: Map<number, Record<string, unknown>>;
  /** The model fields of a SentencePiece-style (non-byte-level) BPE, written back as loaded. */
  unkToken: string | null;
  fuseUnk: boolean;
  byteFallback: boolean;
}

const OUR_PRE_TOKENIZER = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
const OUR_DECODER = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true };

function defaultExtras(): JsonExtras {
  return {
    normalizer: null,
    preTokenizer: OUR_PRE_TOKENIZER,
    postProcessor: null,
    decoder: OUR_DECODER,
    ignoreMerges: false,
    addedTokenFlags: new Map(),
    unkToken: null,
    fuseUnk: false,
    byteFallback: false,
  };
}

// ignoreBOM keeps a leading U+FEFF that is part of the text, as HF does; invalid bytes become U+FFFD.
const UTF8_DECODER = new TextDecoder("utf-8", { ignoreBOM: true });

// A word cache bounded so a long-running server cannot grow it without limit: so many words, each at
// most so long (a SentencePiece-style file without a pre-tokenizer makes a whole text one "word").
const CACHE_LIMIT = 200_000;
const CACHE_WORD_LIMIT = 256;

/** A byte-level BPE tokenizer. Build one with `train`, `byteLevel`, `fromJSON` or `fromFile`. */
export class BpeTokenizer {
  /** Problems met while loading that did not stop it (e.g. a Split regex we could not compile). */
  readonly warnings: readonly string[];
  /** One more than the largest id: the embedding rows a model needs. */
  readonly vocabSize: number;
  /**
   * The chat format of the model directory this tokenizer came from (its own template and stop ids;
   * set by loadModelDir). Undefined means the built-in ChatML.
   */
  chat: ChatFormat | undefined = undefined;

  private readonly tokens: (string | undefined)[];
  private readonly tokenIds: Map<string, number>;
  private readonly merges: readonly (readonly [number, number])[];
  private readonly mergeRank = new Map<number, number>();
  private readonly mergeResult: Int32Array;
  /** Byte-level vocabularies: the id of each byte's character; null for SentencePiece-style ones. */
  private readonly byteIds: Int32Array | null;
  /** SentencePiece-style vocabularies: the ids of <0x00>..<0xFF> (-1 where absent), the unknown id. */
  private readonly fallbackIds: Int32Array;
  private readonly unkId: number | null;
  private readonly decoder: TokenDecoder | null;
  private readonly added: readonly AddedToken[];
  private readonly addedById = new Map<number, AddedToken>();
  private readonly addedByContent = new Map<string, AddedToken>();
  private readonly splitAll: RegExp | null;
  private readonly splitNonSpecial: RegExp | null;
  private readonly pipeline: Pipeline;
  private readonly extras: JsonExtras;
  private readonly cache = new Map<string, readonly number[]>();
  private readonly bytesById: (Uint8Array | undefined)[] = [];

  private constructor(init: {
    tokens: (string | undefined)[];
    merges: (readonly [number, number])[];
    added: AddedToken[];
    pipeline: Pipeline;
    extras: JsonExtras;
    warnings: string[];
    /** A SentencePiece-style vocabulary: tokens are text (▁ for spaces), decoded by this decoder chain. */
    unicode?: { decoder: TokenDecoder };
  }) {
    this.tokens = init.tokens;
    this.merges = init.merges;
    this.added = init.added;
    this.pipeline = init.pipeline;
    this.extras = init.extras;
    this.warnings = init.warnings;
    this.tokenIds = new Map();
    init.tokens.forEach((t, id) => {
      if (t !== undefined && !this.tokenIds.has(t)) this.tokenIds.set(t, id);
    });
    let maxId = init.tokens.length - 1;
    for (const a of init.added) {
      this.addedById.set(a.id, a);
      this.addedByContent.set(a.content, a);
      maxId = Math.max(maxId, a.id);
    }
    this.vocabSize = maxId + 1;
    this.fallbackIds = new Int32Array(256).fill(-1);
    if (init.unicode === undefined) {
      this.decoder = null;
      this.byteIds = new Int32Array(256);
      for (let b = 0; b < 256; b++) {
        const id = this.tokenIds.get(BYTE_TO_CHAR[b]);
        if (id === undefined) throw new Error(`byte token for 0x${b.toString(16)} missing`);
        this.byteIds[b] = id;
      }
    } else {
      this.decoder = init.unicode.decoder;
      this.byteIds = null;
      if (init.extras.byteFallback)
        for (let b = 0; b < 256; b++) this.fallbackIds[b] = this.tokenIds.get(byteFallbackToken(b)) ?? -1;
    }
    const unk = init.extras.unkToken;
    this.unkId = unk === null ? null : (this.tokenIds.get(unk) ?? null);
    this.mergeResult = new Int32Array(init.merges.length);
    init.merges.forEach(([a, b], rank) => {
      const key = pairKey(a, b);
      // A repeated merge keeps its first (highest-priority) rank, as HF does.
      if (!this.mergeRank.has(key)) this.mergeRank.set(key, rank);
      const joined = (this.tokens[a] ?? "") + (this.tokens[b] ?? "");
      const id = this.tokenIds.get(joined);
      if (id === undefined) throw new Error(`merge result '${joined}' missing from the vocabulary`);
      this.mergeResult[rank] = id;
    });
    const byLength = (list: AddedToken[]) =>
      list.length === 0
        ? null
        : new RegExp(
            // Longest first, so a token that is a prefix of another never wins over it.
            [...list]
              .sort((x, y) => y.content.length - x.content.length)
              .map((a) => escapeRegExp(a.content))
              .join("|"),
            "gu",
          );
    this.splitAll = byLength(init.added);
    this.splitNonSpecial = byLength(init.added.filter((a) => !a.special));
  }

  // -------------------------------------------------------------------------------------------------
  // Construction

  /** A tokenizer with only the 256 byte tokens and the given special tokens (ids 256, 257, ...). */
  static byteLevel(specialTokens: readonly string[] = DEFAULT_SPECIAL_TOKENS): BpeTokenizer {
    return BpeTokenizer.build(specialTokens, []);
  }

  private static build(specialTokens: readonly string[], mergeStrings: [string, string][]): BpeTokenizer {
    checkSpecialTokens(specialTokens);
    const tokens: string[] = [...BYTE_TO_CHAR];
    const added = specialTokens.map((content, i) => ({ id: 256 + i, content, special: true }));
    for (const a of added) tokens.push(a.content);
    const ids = new Map(tokens.map((t, i) => [t, i]));
    const merges: [number, number][] = [];
    for (const [a, b] of mergeStrings) {
      const joined = a + b;
      if (!ids.has(joined)) {
        ids.set(joined, tokens.length);
        tokens.push(joined);
      }
      merges.push([ids.get(a) as number, ids.get(b) as number]);
    }
    return new BpeTokenizer({
      tokens,
      merges,
      added,
      pipeline: { normalize: (t) => t, preTokenize: gpt2Split },
      extras: defaultExtras(),
      warnings: [],
    });
  }

  /**
   * Learns merges from `texts` until the vocabulary (256 bytes + special tokens + merges) reaches
   * `vocabSize` or no pair occurs `minFrequency` times. Special tokens inside the texts are cut out
   * and never merged with their neighbours. Deterministic: ties go to the pair with smaller ids.
   */
  static train(texts: readonly string[], vocabSize: number, options: TrainOptions = {}): BpeTokenizer {
    const specialTokens = options.specialTokens ?? DEFAULT_SPECIAL_TOKENS;
    checkSpecialTokens(specialTokens);
    const minFrequency = options.minFrequency ?? 2;
    const base = 256 + specialTokens.length;
    if (!Number.isInteger(vocabSize) || vocabSize < base)
      throw new UserError(
        `vocab size must be an integer >= ${base} (256 bytes + ${specialTokens.length} special)`,
      );
    const specialSplit =
      specialTokens.length === 0
        ? null
        : new RegExp(
            [...specialTokens]
              .sort((x, y) => y.length - x.length)
              .map(escapeRegExp)
              .join("|"),
            "gu",
          );

    const wordCounts = new Map<string, number>();
    for (const text of texts) {
      const parts = specialSplit === null ? [text] : text.split(specialSplit);
      for (const word of gpt2Split(parts)) wordCounts.set(word, (wordCounts.get(word) ?? 0) + 1);
    }
    const mergeStrings = learnMerges(wordCounts, vocabSize - base, minFrequency, specialTokens);
    return BpeTokenizer.build(specialTokens, mergeStrings);
  }

  /**
   * Loads a Hugging Face tokenizer.json (already parsed). Errors name `source` and the field. Supports
   * BPE models with a ByteLevel pre-tokenizer, alone or in a Sequence with Split/Digits (Split
   * patterns are translated to JavaScript; one that cannot be falls back to the GPT-2 split and adds a
   * warning), normalizers null/NFC/NFD/NFKC/NFKD/Lowercase, merges as "a b" or ["a", "b"]. Post-
   * processors are kept for writing but not applied: encode never adds BOS/EOS by itself.
   */
  static fromJSON(json: unknown, source = "tokenizer.json"): BpeTokenizer {
    const file = parseOrThrow(TokenizerFileSchema, json, source, []);
    const model = file.model;
    const warnings: string[] = [];
    if (model.continuing_subword_prefix || model.end_of_word_suffix)
      throw new UserError(
        `${source}: field model.continuing_subword_prefix/end_of_word_suffix: not supported`,
      );
    if (typeof model.dropout === "number" && model.dropout > 0)
      warnings.push(`${source}: model.dropout ${model.dropout} ignored (encoding is deterministic)`);

    // A ByteLevel pre-tokenizer makes a byte-level BPE (GPT-2 style); without one the vocabulary is
    // text, SentencePiece style (Llama 2, Mistral): characters, "▁" for spaces, <0xXX> byte fallback.
    const state = { byteLevel: false, metaspace: false };
    const preTokenize = buildPreTokenizer(file.pre_tokenizer, source, ["pre_tokenizer"], warnings, state);
    if (state.byteLevel && state.metaspace)
      throw new UserError(
        `${source}: field pre_tokenizer: ByteLevel and Metaspace together are not supported`,
      );
    if (state.byteLevel && model.byte_fallback === true)
      throw new UserError(
        `${source}: field model.byte_fallback: byte fallback with a ByteLevel pre-tokenizer is not supported ` +
          "(a byte-level vocabulary covers every byte already)",
      );
    const normalize = buildNormalizer(file.normalizer, source, ["normalizer"]);
    let decoder: TokenDecoder | null = null;
    if (state.byteLevel) {
      const decoderType = (file.decoder as { type?: unknown } | null | undefined)?.type;
      if (decoderType !== "ByteLevel")
        warnings.push(`${source}: decoder ${JSON.stringify(decoderType ?? null)} treated as ByteLevel`);
    } else decoder = buildDecoder(file.decoder, source, ["decoder"]);

    // zod's record drops a "__proto__" key, so the vocabulary is read from the raw object.
    const rawVocab = (json as { model: { vocab: Record<string, unknown> } }).model.vocab;
    const tokens: (string | undefined)[] = [];
    for (const [token, id] of Object.entries(rawVocab)) {
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= PAIR_SHIFT)
        throw new UserError(
          `${source}: field model.vocab[${JSON.stringify(token)}]: bad id ${JSON.stringify(id)}`,
        );
      if (tokens[id] !== undefined)
        throw new UserError(
          `${source}: field model.vocab[${JSON.stringify(token)}]: id ${id} already used by ${JSON.stringify(tokens[id])}`,
        );
      tokens[id] = token;
    }
    const vocabIds = new Map<string, number>();
    tokens.forEach((t, i) => {
      if (t !== undefined) vocabIds.set(t, i);
    });
    if (model.unk_token && !vocabIds.has(model.unk_token))
      throw new UserError(
        `${source}: field model.unk_token: ${JSON.stringify(model.unk_token)} is not in model.vocab`,
      );
    for (let b = 0; b < 256 && state.byteLevel; b++)
      if (!vocabIds.has(BYTE_TO_CHAR[b]))
        throw new UserError(
          `${source}: field model.vocab: no token for byte 0x${b.toString(16).padStart(2, "0")} ` +
            `(${JSON.stringify(BYTE_TO_CHAR[b])}), so not a byte-level vocabulary`,
        );

    const merges: [number, number][] = [];
    model.merges.forEach((m, i) => {
      const pair = typeof m === "string" ? m.split(" ") : m;
      if (pair.length !== 2)
        throw new UserError(
          `${source}: field model.merges[${i}]: expected "left right", got ${JSON.stringify(m)}`,
        );
      const [a, b] = pair;
      const ia = vocabIds.get(a);
      const ib = vocabIds.get(b);
      if (ia === undefined || ib === undefined)
        throw new UserError(
          `${source}: field model.merges[${i}]: ${JSON.stringify(ia === undefined ? a : b)} is not in model.vocab`,
        );
      if (!vocabIds.has(a + b))
        throw new UserError(
          `${source}: field model.merges[${i}]: result ${JSON.stringify(a + b)} is not in model.vocab`,
        );
      merges.push([ia, ib]);
    });

    const added: AddedToken[] = [];
    const addedTokenFlags = new Map<number, Record<string, unknown>>();
    (file.added_tokens ?? []).forEach((a, i) => {
      if (tokens[a.id] !== undefined && tokens[a.id] !== a.content)
        throw new UserError(
          `${source}: field added_tokens[${i}].id: id ${a.id} is ${JSON.stringify(tokens[a.id])} in model.vocab, ` +
            `not ${JSON.stringify(a.content)}`,
        );
      if (a.lstrip || a.rstrip || a.single_word)
        warnings.push(`${source}: added_tokens[${i}]: lstrip/rstrip/single_word are not applied`);
      added.push({ id: a.id, content: a.content, special: a.special });
      const { id: _id, content: _content, special: _special, ...flags } = a;
      addedTokenFlags.set(a.id, flags);
    });
    return new BpeTokenizer({
      tokens,
      merges,
      added,
      pipeline: { normalize, preTokenize },
      extras: {
        normalizer: file.normalizer ?? null,
        preTokenizer: file.pre_tokenizer,
        postProcessor: file.post_processor ?? null,
        decoder: file.decoder ?? null,
        ignoreMerges: model.ignore_merges === true,
        addedTokenFlags,
        unkToken: model.unk_token ?? null,
        fuseUnk: model.fuse_unk === true,
        byteFallback: model.byte_fallback === true,
      },
      warnings,
      ...(decoder === null ? {} : { unicode: { decoder } }),
    });
  }

  /** Reads and loads a tokenizer.json file; errors name the file. */
  static fromFile(path: string): BpeTokenizer {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      throw new UserError(
        `${path}: cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
      );
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new UserError(`${path}: invalid JSON (${(err as Error).message})`);
    }
    return BpeTokenizer.fromJSON(json, path);
  }

  /** The HF tokenizers `tokenizer.json` object for this tokenizer (write it with JSON.stringify). */
  toJSON(): Record<string, unknown> {
    const vocab: Record<string, number> = Object.create(null);
    this.tokens.forEach((t, id) => {
      if (t !== undefined && vocab[t] === undefined) vocab[t] = id;
    });
    const pairs = this.merges.map(([a, b]) => [this.tokens[a] ?? "", this.tokens[b] ?? ""] as const);
    // The "a b" form is the widely read one; a token with a space in it needs the newer pair form.
    const needPairs = pairs.some(([a, b]) => a.includes(" ") || b.includes(" "));
    return {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: this.added.map((a) => ({
        id: a.id,
        content: a.content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        ...this.extras.addedTokenFlags.get(a.id),
        special: a.special,
      })),
      normalizer: this.extras.normalizer,
      pre_tokenizer: this.extras.preTokenizer,
      post_processor: this.extras.postProcessor,
      decoder: this.extras.decoder,
      model: {
        type: "BPE",
        dropout: null,
        unk_token: this.extras.unkToken,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: this.extras.fuseUnk,
        byte_fallback: this.extras.byteFallback,
        // Written only when set: older HF releases predate the field.
        ...(this.extras.ignoreMerges ? { ignore_merges: true } : {}),
        vocab,
        merges: needPairs ? pairs.map(([a, b]) => [a, b]) : pairs.map(([a, b]) => `${a} ${b}`),
      },
    };
  }

  // -------------------------------------------------------------------------------------------------
  // Vocabulary

  /** The added tokens (special ones and others), in file order. */
  get addedTokens(): readonly AddedToken[] {
    return this.added;
  }

  /** Number of merges. */
  get mergeCount(): number {
    return this.merges.length;
  }

  /** The id of an added token such as "<|im_end|>"; a UserError when the tokenizer has none. */
  specialId(content: string): number {
    const a = this.addedByContent.get(content);
    if (a === undefined) throw new UserError(`tokenizer has no token ${JSON.stringify(content)}`);
    return a.id;
  }

  /** Whether an added token with this content exists. */
  hasSpecial(content: string): boolean {
    return this.addedByContent.has(content);
  }

  /**
   * The end of a chat turn: <|im_end|>, or <|endoftext|> for tokenizers without chat tokens, else the
   * first end-of-turn id of the model's own chat format (Llama's <|eot_id|> or </s>).
   */
  get eosId(): number {
    if (this.hasSpecial("<|im_end|>")) return this.specialId("<|im_end|>");
    if (this.hasSpecial("<|endoftext|>")) return this.specialId("<|endoftext|>");
    const own = this.chat?.stopIds[0];
    if (own !== undefined) return own;
    throw new UserError(
      "tokenizer has no end-of-turn token (<|im_end|>, <|endoftext|>, or eos_token in tokenizer_config.json)",
    );
  }

  /** <|im_start|>. */
  get imStartId(): number {
    return this.specialId("<|im_start|>");
  }

  /** <|im_end|>. */
  get imEndId(): number {
    return this.specialId("<|im_end|>");
  }

  /**
   * What ends raw-text documents: <|endoftext|>, else the eos_token of the model's tokenizer_config.json
   * (Llama's </s> or <|end_of_text|>), else its first end-of-turn id.
   */
  get endOfTextId(): number {
    if (this.hasSpecial("<|endoftext|>") || this.chat === undefined) return this.specialId("<|endoftext|>");
    const own = this.chat.eosTokenId ?? this.chat.stopIds[0];
    if (own === undefined) return this.specialId("<|endoftext|>");
    return own;
  }

  /** The id used to pad batches: <|endoftext|> if present, else the EOS id (padding is masked out). */
  get padId(): number {
    return this.hasSpecial("<|endoftext|>") ? this.specialId("<|endoftext|>") : this.eosId;
  }

  /** Whether `id` is a special token. */
  isSpecial(id: number): boolean {
    return this.addedById.get(id)?.special === true;
  }

  /** The vocab string of an id (byte-level characters; added tokens as written). */
  idToToken(id: number): string | undefined {
    return this.addedById.get(id)?.content ?? this.tokens[id];
  }

  /** The id of a vocab string, if any. */
  tokenToId(token: string): number | undefined {
    return this.addedByContent.get(token)?.id ?? this.tokenIds.get(token);
  }

  /** The bytes a token decodes to (for incremental decoding). */
  tokenBytes(id: number): Uint8Array {
    let bytes = this.bytesById[id];
    if (bytes === undefined) {
      const added = this.addedById.get(id);
      if (added !== undefined) bytes = new Uint8Array(Buffer.from(added.content, "utf8"));
      else {
        const token = Number.isInteger(id) ? this.tokens[id] : undefined;
        if (token === undefined) throw new RangeError(`token id ${id} is not in the vocabulary`);
        if (this.decoder === null) bytes = tokenStringToBytes(token);
        else {
          const b = this.decoder.byteOf(token);
          bytes =
            b === null ? new Uint8Array(Buffer.from(this.decoder.piece(token), "utf8")) : Uint8Array.of(b);
        }
      }
      this.bytesById[id] = bytes;
    }
    return bytes;
  }

  // -------------------------------------------------------------------------------------------------
  // Encoding and decoding

  /** Encodes text to ids. Special tokens in the text become single ids unless allowSpecial is false. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const splitter = options.allowSpecial === false ? this.splitNonSpecial : this.splitAll;
    const ids: number[] = [];
    if (splitter === null) {
      this.encodeOrdinary(text, ids, true);
      return ids;
    }
    splitter.lastIndex = 0;
    const plain = options.plainRanges ?? [];
    let last = 0;
    for (const m of text.matchAll(splitter)) {
      const end = m.index + m[0].length;
      if (plain.some(([s, e]) => m.index < e && end > s)) continue;
      if (m.index > last) this.encodeOrdinary(text.slice(last, m.index), ids, last === 0);
      ids.push((this.addedByContent.get(m[0]) as AddedToken).id);
      last = m.index + m[0].length;
    }
    if (last < text.length) this.encodeOrdinary(text.slice(last), ids, last === 0);
    return ids;
  }

  /** Decodes ids to text; byte sequences that are not valid UTF-8 become U+FFFD, as in HF. */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    if (this.decoder === null) return UTF8_DECODER.decode(this.decodeBytes(ids, options));
    // SentencePiece style: the file's decoder chain over the token strings, as HF runs it.
    const strings: string[] = [];
    for (const id of ids) {
      if (options.skipSpecial === true && this.isSpecial(id)) continue;
      const token = Number.isInteger(id) ? this.idToToken(id) : undefined;
      if (token === undefined) throw new RangeError(`token id ${id} is not in the vocabulary`);
      strings.push(token);
    }
    return this.decoder.decode(strings);
  }

  /** The raw bytes of a sequence of ids. */
  decodeBytes(ids: readonly number[], options: DecodeOptions = {}): Uint8Array {
    const parts: Uint8Array[] = [];
    let length = 0;
    for (const id of ids) {
      if (options.skipSpecial === true && this.isSpecial(id)) continue;
      const bytes = this.tokenBytes(id);
      parts.push(bytes);
      length += bytes.length;
    }
    const out = new Uint8Array(length);
    let offset = 0;
    for (const p of parts) {
      out.set(p, offset);
      offset += p.length;
    }
    return out;
  }

  /** Encodes text between added tokens; `atStart` when it begins the input (Metaspace "first"). */
  private encodeOrdinary(text: string, ids: number[], atStart: boolean): void {
    // Like HF, an empty piece (before or after normalization) gives no tokens, not even a "▁".
    if (text === "") return;
    const normalized = this.pipeline.normalize(text);
    if (normalized === "") return;
    for (const word of this.pipeline.preTokenize([normalized], atStart)) {
      if (word.length > CACHE_WORD_LIMIT) {
        for (const id of this.encodeWord(word)) ids.push(id);
        continue;
      }
      let encoded = this.cache.get(word);
      if (encoded === undefined) {
        encoded = this.encodeWord(word);
        if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
        this.cache.set(word, encoded);
      }
      for (const id of encoded) ids.push(id);
    }
  }

  private encodeWord(word: string): number[] {
    if (this.byteIds === null) return this.encodeTextWord(word);
    const byteIds = this.byteIds;
    const bytes: number[] = [];
    pushUtf8(word, bytes);
    if (this.extras.ignoreMerges) {
      // Llama-3 style: a word that is itself in the vocabulary is one token, whatever the merges say.
      const whole = this.tokenIds.get(bytes.map((b) => BYTE_TO_CHAR[b]).join(""));
      if (whole !== undefined) return [whole];
    }
    return this.applyMerges(bytes.map((b) => byteIds[b]));
  }

  /**
   * A word of a SentencePiece-style vocabulary, as HF's BPE: each character is its vocab token, else
   * its UTF-8 bytes as <0xXX> tokens (byte_fallback, when all exist), else the unknown token (runs of
   * them fused into one with fuse_unk), else nothing; then the merges.
   */
  private encodeTextWord(raw: string): number[] {
    // Lone surrogates cannot be in a Rust string; HF sees U+FFFD there.
    const word = raw.replace(LONE_SURROGATE, "\uFFFD");
    if (this.extras.ignoreMerges) {
      const whole = this.tokenIds.get(word);
      if (whole !== undefined) return [whole];
    }
    const symbols: number[] = [];
    const utf8: number[] = [];
    let lastWasUnk = false;
    for (const ch of word) {
      const id = this.tokenIds.get(ch);
      if (id !== undefined) {
        symbols.push(id);
        lastWasUnk = false;
        continue;
      }
      if (this.extras.byteFallback) {
        utf8.length = 0;
        pushUtf8(ch, utf8);
        if (utf8.every((b) => this.fallbackIds[b] >= 0)) {
          for (const b of utf8) symbols.push(this.fallbackIds[b]);
          lastWasUnk = false;
          continue;
        }
      }
      if (this.unkId === null) continue;
      if (!(lastWasUnk && this.extras.fuseUnk)) symbols.push(this.unkId);
      lastWasUnk = true;
    }
    return this.applyMerges(symbols);
  }

  /**
   * Applies merges as HF does: always the lowest-ranked mergeable pair next, leftmost first among
   * equals, over a linked list of symbols with a heap of candidate merges, so a long word costs
   * O(n log n) rather than O(n^2).
   */
  private applyMerges(symbols: number[]): number[] {
    const n = symbols.length;
    if (n < 2) return symbols;
    const id = Int32Array.from(symbols);
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    // Candidates are rank * 2^26 + position: ordered by rank, then by position.
    const heap = new MinHeap();
    const consider = (pos: number) => {
      const after = next[pos];
      if (after < 0) return;
      const rank = this.mergeRank.get(pairKey(id[pos], id[after]));
      if (rank !== undefined) heap.push(rank * POSITION_LIMIT + pos);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.size > 0) {
      const top = heap.pop();
      const rank = Math.floor(top / POSITION_LIMIT);
      const pos = top - rank * POSITION_LIMIT;
      const after = next[pos];
      // Stale: the symbol was absorbed, lost its right neighbour, or the pair there changed.
      if (id[pos] < 0 || after < 0 || this.mergeRank.get(pairKey(id[pos], id[after])) !== rank) continue;
      id[pos] = this.mergeResult[rank];
      id[after] = -1;
      next[pos] = next[after];
      if (next[pos] >= 0) prev[next[pos]] = pos;
      if (prev[pos] >= 0) consider(prev[pos]);
      consider(pos);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(id[i]);
    return out;
  }
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

// Word positions must stay below this for heap keys (rank * limit + position) to be exact doubles.
const POSITION_LIMIT = 2 ** 26;

/** A binary min-heap of numbers. */
class MinHeap {
  private items: number[] = [];

  get size(): number {
    return this.items.length;
  }

  push(value: number): void {
    const items = this.items;
    items.push(value);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent] <= value) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = value;
  }

  pop(): number {
    const items = this.items;
    const top = items[0];
    const last = items.pop() as number;
    const n = items.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const child = r < n && items[r] < items[l] ? r : l;
        if (items[child] >= last) break;
        items[i] = items[child];
        i = child;
      }
      items[i] = last;
    }
    return top;
  }
}

function checkSpecialTokens(specialTokens: readonly string[]): void {
  const seen = new Set<string>();
  for (const s of specialTokens) {
    if (s.length === 0) throw new UserError("special tokens must not be empty");
    if (seen.has(s)) throw new UserError(`special token ${JSON.stringify(s)} given twice`);
    if (CHAR_TO_BYTE.has(s.codePointAt(0) ?? -1) && [...s].length === 1)
      throw new UserError(`special token ${JSON.stringify(s)} would shadow a byte token`);
    seen.add(s);
  }
}

// ---------------------------------------------------------------------------------------------------
// Training: counts of distinct words, pair counts updated incrementally per merge, a lazy max-heap.

/** A max-heap of (count, pair key) with lazy deletion: stale entries are skipped when popped. */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  get size(): number {
    return this.keys.length;
  }

  // Higher count first; among equal counts the smaller pair key (smaller left id, then right id).
  private above(i: number, j: number): boolean {
    return (
      this.counts[i] > this.counts[j] || (this.counts[i] === this.counts[j] && this.keys[i] < this.keys[j])
    );
  }

  private swap(i: number, j: number): void {
    const c = this.counts[i];
    this.counts[i] = this.counts[j];
    this.counts[j] = c;
    const k = this.keys[i];
    this.keys[i] = this.keys[j];
    this.keys[j] = k;
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.keys.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.above(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): { count: number; key: number } | null {
    const n = this.keys.length;
    if (n === 0) return null;
    const top = { count: this.counts[0], key: this.keys[0] };
    this.swap(0, n - 1);
    this.counts.pop();
    this.keys.pop();
    let i = 0;
    const m = n - 1;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < m && this.above(l, best)) best = l;
      if (r < m && this.above(r, best)) best = r;
      if (best === i) break;
      this.swap(i, best);
      i = best;
    }
    return top;
  }
}

/**
 * Learns up to `maxNewTokens` new vocabulary entries from word frequencies. Symbols are numbered as
 * in the built tokenizer (bytes, then special tokens, then merges), so a merge that spells a special
 * token reuses its id there and here alike. Returns the merges as byte-level string pairs, in rank order.
 */
function learnMerges(
  wordCounts: Map<string, number>,
  maxNewTokens: number,
  minFrequency: number,
  specialTokens: readonly string[],
): [string, string][] {
  const symbolStrings: string[] = [...BYTE_TO_CHAR, ...specialTokens];
  const stringIds = new Map<string, number>(symbolStrings.map((s, i) => [s, i]));
  let nextId = symbolStrings.length;
  const words: number[][] = [];
  const freqs: number[] = [];
  for (const [word, count] of wordCounts) {
    const bytes: number[] = [];
    pushUtf8(word, bytes);
    // A one-byte word has no pairs to merge.
    if (bytes.length < 2) continue;
    words.push(bytes);
    freqs.push(count);
  }

  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, number[]>();
  for (let w = 0; w < words.length; w++) {
    const sym = words[w];
    for (let i = 0; i + 1 < sym.length; i++) {
      const key = pairKey(sym[i], sym[i + 1]);
      pairCounts.set(key, (pairCounts.get(key) ?? 0) + freqs[w]);
      const list = pairWords.get(key);
      if (list === undefined) pairWords.set(key, [w]);
      else if (list[list.length - 1] !== w) list.push(w);
    }
  }
  const heap = new PairHeap();
  for (const [key, count] of pairCounts) heap.push(count, key);

  const merges: [string, string][] = [];
  const visited = new Int32Array(words.length).fill(-1);
  let added = 0;
  while (added < maxNewTokens) {
    let best: { count: number; key: number } | null = null;
    while (heap.size > 0) {
      const top = heap.pop() as { count: number; key: number };
      if (pairCounts.get(top.key) === top.count) {
        best = top;
        break;
      }
    }
    if (best === null || best.count < minFrequency) break;
    const a = Math.floor(best.key / PAIR_SHIFT);
    const b = best.key - a * PAIR_SHIFT;
    const joined = symbolStrings[a] + symbolStrings[b];
    let merged = stringIds.get(joined);
    if (merged === undefined) {
      // Two different pairs can spell the same string; they share one id, like HF's trainer.
      merged = nextId++;
      symbolStrings[merged] = joined;
      stringIds.set(joined, merged);
      added++;
    }
    merges.push([symbolStrings[a], symbolStrings[b]]);

    const before = new Map<number, number>();
    const touch = (key: number, delta: number) => {
      const old = pairCounts.get(key) ?? 0;
      if (!before.has(key)) before.set(key, old);
      pairCounts.set(key, old + delta);
    };
    const mergeIndex = merges.length - 1;
    for (const w of pairWords.get(best.key) ?? []) {
      if (visited[w] === mergeIndex) continue;
      visited[w] = mergeIndex;
      const sym = words[w];
      let present = false;
      for (let i = 0; i + 1 < sym.length; i++)
        if (sym[i] === a && sym[i + 1] === b) {
          present = true;
          break;
        }
      if (!present) continue;
      // Words are short, so recounting a touched word's pairs is simpler than patching neighbours.
      const f = freqs[w];
      for (let i = 0; i + 1 < sym.length; i++) touch(pairKey(sym[i], sym[i + 1]), -f);
      const next: number[] = [];
      for (let i = 0; i < sym.length; i++) {
        if (i + 1 < sym.length && sym[i] === a && sym[i + 1] === b) {
          next.push(merged);
          i++;
        } else next.push(sym[i]);
      }
      words[w] = next;
      for (let i = 0; i + 1 < next.length; i++) {
        const key = pairKey(next[i], next[i + 1]);
        touch(key, f);
        if (next[i] === merged || next[i + 1] === merged) {
          const list = pairWords.get(key);
          if (list === undefined) pairWords.set(key, [w]);
          else if (list[list.length - 1] !== w) list.push(w);
        }
      }
    }
    pairWords.delete(best.key);
    for (const [key, old] of before) {
      const now = pairCounts.get(key) ?? 0;
      if (now <= 0) {
        pairCounts.delete(key);
        pairWords.delete(key);
      } else if (now !== old) heap.push(now, key);
    }
  }
  return merges;
}
