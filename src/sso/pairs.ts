/**
 * Preference data: the shapes a pair takes and the files they are read from.
 *
 * - TextPair: a prompt string with a chosen and a rejected answer (TRL's standard format, the rows of
 *   RewardBench and of our world's suites);
 * - PreferencePair: a pair on a whole conversation, with where it came from (what reward models
 *   train and are evaluated on);
 * - PreferenceRecord: the fields of an SSO record that preference training reads (all six sequences
 *   of docs/algorithm.md); a plain pair is a record with empty principles and no y0.
 *
 * Every reader goes through the shared JSONL reader, so a bad line names file, line and field.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import type { ChatMessage } from "../policy/types.js";
import { FieldError, formatPath, UserError } from "../util/errors.js";
import { type LineParser, parseFields, readJsonl } from "../util/jsonl.js";
import type { SsoRecord } from "./records.js";

// ---------------------------------------------------------------------------------------------------
// Shapes

/** A prompt with a preferred and a dispreferred answer (TRL's standard preference format). */
export interface TextPair {
  prompt: string;
  chosen: string;
  rejected: string;
}

/** A RewardBench row: a text pair with its id and subset (RewardBench's field names). */
export interface RewardBenchRow<Subset extends string = string> extends TextPair {
  id: string;
  subset: Subset;
}

/** The fields of an SSO record that preference training reads (docs/algorithm.md, "the six sequences"). */
export type PreferenceRecord = Pick<
  SsoRecord,
  "instruction" | "p_system" | "n_system" | "chosen" | "rejected" | "raw"
>;

/**
 * The formats a pair line may take, detected line by line:
 * - "rewardbench": {prompt, chosen, rejected, subset, id?} (RewardBench's filtered split and our export;
 *   extra fields such as chosen_model are ignored);
 * - "trl": {prompt?, chosen, rejected} where each may be a string or a list of chat messages (TRL's
 *   conversational format; without a prompt, the turns before the last are the shared prompt);
 * - "sso": an SSO record (instruction, chosen, rejected, ...): its main pair, y+ over y- on the plain query.
 */
export const PAIR_FORMATS = ["rewardbench", "trl", "sso"] as const;

/** One pair format. */
export type PairFormat = (typeof PAIR_FORMATS)[number];

/** A preference pair: `chosen` should score higher than `rejected` as answers to `prompt`. */
export interface PreferencePair {
  /** The line's id, or `line-N` when it has none. */
  id: string;
  /** The conversation before the answer (system, user and earlier assistant turns). */
  prompt: ChatMessage[];
  chosen: string;
  rejected: string;
  /** The line's subset; "sso" for SSO records; DEFAULT_SUBSET when a line names none. */
  subset: string;
  /** The line's own section (optional "section" field), which report grouping honours. */
  section?: string;
  format: PairFormat;
  /** 1-based line in its file. */
  line: number;
}

/** The subset of pairs whose line names none. */
export const DEFAULT_SUBSET = "pairs";

// ---------------------------------------------------------------------------------------------------
// Conversions

/**
 * A plain pair as a preference record: the prompt is the query, no principles, and `raw` (y0) is
 * whatever the caller has (empty when there is none, which only the main pair tolerates).
 */
export function recordFromPair(pair: TextPair, raw = ""): PreferenceRecord {
  return {
    instruction: pair.prompt,
    p_system: "",
    n_system: "",
    chosen: pair.chosen,
    rejected: pair.rejected,
    raw,
  };
}

/** Where a pair came from: the fields of PreferencePair that are not its texts. */
export type PairOrigin = Pick<PreferencePair, "id" | "subset" | "format" | "line" | "section">;

function withOrigin(
  prompt: ChatMessage[],
  chosen: string,
  rejected: string,
  origin: PairOrigin,
): PreferencePair {
  const pair: PreferencePair = {
    id: origin.id,
    prompt,
    chosen,
    rejected,
    subset: origin.subset,
    format: origin.format,
    line: origin.line,
  };
  if (origin.section !== undefined) pair.section = origin.section;
  return pair;
}

/** A text pair as a conversation pair: the prompt becomes the user turn. */
export function pairFromText(pair: TextPair, origin: PairOrigin): PreferencePair {
  return withOrigin([{ role: "user", content: pair.prompt }], pair.chosen, pair.rejected, origin);
}

/**
 * The main pair of a record (y+ over y- on the plain query). The authors' format may add a base system
 * prompt and earlier [user, assistant] turns; they come before the query.
 */
export function pairFromRecord(
  record: Pick<SsoRecord, "instruction" | "chosen" | "rejected"> &
    Partial<Pick<SsoRecord, "system" | "history">>,
  origin: PairOrigin,
): PreferencePair {
  const prompt: ChatMessage[] = [];
  if (record.system !== undefined && record.system !== "")
    prompt.push({ role: "system", content: record.system });
  for (const [user, assistant] of record.history ?? [])
    prompt.push({ role: "user", content: user }, { role: "assistant", content: assistant });
  prompt.push({ role: "user", content: record.instruction });
  return withOrigin(prompt, record.chosen, record.rejected, origin);
}

// ---------------------------------------------------------------------------------------------------
// Parsers

const MessageSchema = z.object({
  role: z.enum(["system", "user", "assistant"]),
  content: z.string(),
});

const IdSchema = z.union([z.string().min(1), z.number().int()], {
  error: "expected a non-empty string or an integer",
});

const PromptLineSchema = z.object({
  id: IdSchema.optional(),
  prompt: z.unknown().optional(),
  chosen: z.unknown().optional(),
  rejected: z.unknown().optional(),
  subset: z.string().min(1).optional(),
  section: z.string().min(1).optional(),
});

// SSO records carry more (principles, p_system, ...); the main pair needs only these.
const SsoLineSchema = z.object({
  id: IdSchema.optional(),
  instruction: z.string().min(1),
  chosen: z.string(),
  rejected: z.string(),
  system: z.string().optional(),
  history: z.array(z.tuple([z.string(), z.string()])).optional(),
  subset: z.string().min(1).optional(),
  section: z.string().min(1).optional(),
});

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A text field (a string) or a conversation (a list of messages), validated with its field name. */
function textOrTurns(value: unknown, field: string): string | ChatMessage[] {
  if (typeof value === "string") return value;
  if (!Array.isArray(value))
    throw new FieldError(
      field,
      value === undefined ? "missing" : "expected a string or a list of {role, content} messages",
    );
  return value.map((m, i) => {
    const parsed = MessageSchema.safeParse(m);
    if (parsed.success) return parsed.data;
    const issue = parsed.error.issues[0];
    throw new FieldError(`${field}${formatPath([i, ...issue.path])}`, issue.message);
  });
}

/** A prompt given as a string (one user turn) or as messages. */
function promptTurns(value: unknown, field: string): ChatMessage[] {
  const p = textOrTurns(value, field);
  return typeof p === "string" ? [{ role: "user", content: p }] : p;
}

function sameTurns(a: readonly ChatMessage[], b: readonly ChatMessage[]): boolean {
  return a.length === b.length && a.every((m, i) => m.role === b[i].role && m.content === b[i].content);
}

/** Splits a response given as a conversation into the turns before it and its final assistant text. */
function splitResponse(turns: ChatMessage[], field: string): { before: ChatMessage[]; answer: string } {
  if (turns.length === 0) throw new FieldError(field, "an empty conversation has no response to score");
  const last = turns[turns.length - 1];
  if (last.role !== "assistant")
    throw new FieldError(
      `${field}[${turns.length - 1}].role`,
      `the last message must be the assistant's response, got "${last.role}"`,
    );
  return { before: turns.slice(0, -1), answer: last.content };
}

function pairFromPromptLine(value: unknown, line: number): PreferencePair {
  const row = parseFields(PromptLineSchema, value);
  const chosen = textOrTurns(row.chosen, "chosen");
  const rejected = textOrTurns(row.rejected, "rejected");
  let prompt: ChatMessage[];
  let chosenText: string;
  let rejectedText: string;
  if (typeof chosen === "string" && typeof rejected === "string") {
    if (row.prompt === undefined) throw new FieldError("prompt", "missing");
    prompt = promptTurns(row.prompt, "prompt");
    chosenText = chosen;
    rejectedText = rejected;
  } else if (typeof chosen !== "string" && typeof rejected !== "string") {
    const c = splitResponse(chosen, "chosen");
    const r = splitResponse(rejected, "rejected");
    if (!sameTurns(c.before, r.before))
      throw new FieldError(
        "rejected",
        "the turns before the response differ from chosen's (a pair answers one conversation)",
      );
    prompt = [...(row.prompt === undefined ? [] : promptTurns(row.prompt, "prompt")), ...c.before];
    chosenText = c.answer;
    rejectedText = r.answer;
  } else {
    throw new FieldError(
      typeof chosen === "string" ? "rejected" : "chosen",
      "chosen and rejected must both be strings or both be conversations",
    );
  }
  if (prompt.length === 0)
    throw new FieldError("prompt", "missing (a pair needs the conversation its responses answer)");
  return withOrigin(prompt, chosenText, rejectedText, {
    id: row.id === undefined ? `line-${line}` : String(row.id),
    subset: row.subset ?? DEFAULT_SUBSET,
    format: row.subset === undefined ? "trl" : "rewardbench",
    line,
    section: row.section,
  });
}

/**
 * Parses one pair line (any of PAIR_FORMATS; a line with `instruction` and no `prompt` is an SSO
 * record). A bad field is a FieldError.
 */
export const parsePairLine: LineParser<PreferencePair> = (value, line) => {
  if (!isObject(value)) throw new FieldError("(root)", "expected a JSON object");
  const isRecord = "instruction" in value && !("prompt" in value);
  if (!isRecord) return pairFromPromptLine(value, line);
  const rec = parseFields(SsoLineSchema, value);
  return pairFromRecord(rec, {
    id: rec.id === undefined ? `line-${line}` : String(rec.id),
    subset: rec.subset ?? "sso",
    format: "sso",
    line,
    section: rec.section,
  });
};

/** Parses one pair line; errors are UserErrors naming `file:line: field F`. */
export function parsePair(value: unknown, file: string, line: number): PreferencePair {
  try {
    return parsePairLine(value, line);
  } catch (err) {
    if (err instanceof FieldError) throw new UserError(`${file}:${line}: field ${err.field}: ${err.message}`);
    throw err;
  }
}

/** Reads a pair file (JSONL, formats mixed freely); an empty file is an error. */
export function readPairs(path: string): PreferencePair[] {
  const pairs = readJsonl(path, parsePairLine).rows.map((r) => r.value);
  if (pairs.length === 0) throw new UserError(`${path}: no pairs (the file has no non-blank lines)`);
  return pairs;
}

/** How many pairs of each format a list holds. */
export function countFormats(pairs: readonly PreferencePair[]): Record<PairFormat, number> {
  const counts: Record<PairFormat, number> = { rewardbench: 0, trl: 0, sso: 0 };
  for (const p of pairs) counts[p.format]++;
  return counts;
}

/** A stable digest of the pairs' contents (ids, texts and subsets), to tell a resumed run it has the same data. */
export function pairsDigest(pairs: readonly PreferencePair[]): string {
  const hash = createHash("sha256");
  for (const p of pairs)
    hash.update(JSON.stringify([p.id, p.prompt, p.chosen, p.rejected, p.subset])).update("\n");
  return hash.digest("hex");
}

const RecordLineSchema = z.object({
  instruction: z.string(),
  p_system: z.string(),
  n_system: z.string(),
  chosen: z.string(),
  rejected: z.string(),
  raw: z.string(),
});
const TextPairSchema = z.object({ prompt: z.string(), chosen: z.string(), rejected: z.string() });

/**
 * Reads preference records for training: SSO records or plain text pairs (TRL / RewardBench style with
 * a string prompt), one kind per line, told apart by `instruction`. `needSso` requires records: the
 * steering pairs need p+, p- and y0.
 */
export function readPreferenceRecords(path: string, needSso: boolean): PreferenceRecord[] {
  const parse: LineParser<PreferenceRecord> = (line) => {
    const value = parseFields(z.record(z.string(), z.unknown()), line);
    if ("instruction" in value) return parseFields(RecordLineSchema, value);
    if (needSso)
      throw new FieldError("instruction", "--sso needs SSO records (instruction, p_system, n_system, raw)");
    return recordFromPair(parseFields(TextPairSchema, value));
  };
  return readJsonl(path, parse).rows.map((r) => r.value);
}

// ---------------------------------------------------------------------------------------------------
// Responses to score (selfsteer rm score)

/** Something to score: a conversation and the response that ends it. */
export interface ScoreItem {
  id?: string;
  prompt: ChatMessage[];
  response: string;
  line: number;
}

const ScoreLineSchema = z.object({
  id: IdSchema.optional(),
  prompt: z.unknown().optional(),
  response: z.string().optional(),
  messages: z.unknown().optional(),
});

/**
 * Parses one line to score: {id?, prompt, response} (prompt a string or messages) or {id?, messages}
 * whose last message is the assistant's response. A bad field is a FieldError.
 */
export const parseScoreLine: LineParser<ScoreItem> = (value, line) => {
  if (!isObject(value)) throw new FieldError("(root)", "expected a JSON object");
  const row = parseFields(ScoreLineSchema, value);
  let prompt: ChatMessage[];
  let response: string;
  if (row.messages !== undefined) {
    if (row.prompt !== undefined || row.response !== undefined)
      throw new FieldError("messages", "give either messages or prompt and response, not both");
    const turns = textOrTurns(row.messages, "messages");
    if (typeof turns === "string") throw new FieldError("messages", "expected a list of messages");
    const split = splitResponse(turns, "messages");
    prompt = split.before;
    response = split.answer;
  } else {
    if (row.prompt === undefined)
      throw new FieldError("prompt", "missing (give prompt and response, or messages)");
    if (row.response === undefined) throw new FieldError("response", "missing");
    prompt = promptTurns(row.prompt, "prompt");
    response = row.response;
  }
  const item: ScoreItem = { prompt, response, line };
  if (row.id !== undefined) item.id = String(row.id);
  return item;
};

/** Parses one line to score; errors are UserErrors naming `file:line: field F`. */
export function parseScoreItem(value: unknown, file: string, line: number): ScoreItem {
  try {
    return parseScoreLine(value, line);
  } catch (err) {
    if (err instanceof FieldError) throw new UserError(`${file}:${line}: field ${err.field}: ${err.message}`);
    throw err;
  }
}

/** Reads a file of items to score. */
export function readScoreItems(path: string): ScoreItem[] {
  return readJsonl(path, parseScoreLine).rows.map((r) => r.value);
}
