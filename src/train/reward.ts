/**
 * Reward models: preference pairs read from three file formats, Bradley-Terry training of a Llama
 * backbone with a score head, scoring, and RewardBench-style reports.
 *
 * A response is scored as the chat-formatted conversation (prompt turns, then the response as the
 * assistant turn) and the score is read at its last token, the response's closing <|im_end|>; the
 * newline ChatML puts after it is not part of the scored sequence, so the score sits on the token
 * that ends the answer and a response cut by the length limit is scored where it was cut.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { z } from "zod";
import type { LlamaModel } from "../engine/model.js";
import { type AdamW, clipGradNorm, cosineLr } from "../engine/optim.js";
import type { BpeTokenizer } from "../engine/tokenizer.js";
import { btLoss } from "../sso/objective.js";
import { formatPath, UserError } from "../util/errors.js";
import { Rng } from "../util/rng.js";
import { type EncodedSequence, encodeResponse, type Message, packBatch } from "./sequences.js";

// ---------------------------------------------------------------------------------------------------
// Pairs and their file formats

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
  prompt: Message[];
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

/** A problem with one field of a line; callers add the file and line. */
class FieldProblem extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

function parseWith<T>(schema: z.ZodType<T>, value: unknown): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new FieldProblem(formatPath(issue.path), issue.message);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A text field (a string) or a conversation (a list of messages), validated with its field name. */
function textOrTurns(value: unknown, field: string): string | Message[] {
  if (typeof value === "string") return value;
  if (!Array.isArray(value))
    throw new FieldProblem(
      field,
      value === undefined ? "missing" : "expected a string or a list of {role, content} messages",
    );
  return value.map((m, i) => {
    const parsed = MessageSchema.safeParse(m);
    if (parsed.success) return parsed.data;
    const issue = parsed.error.issues[0];
    throw new FieldProblem(`${field}${formatPath([i, ...issue.path])}`, issue.message);
  });
}

function sameTurns(a: readonly Message[], b: readonly Message[]): boolean {
  return a.length === b.length && a.every((m, i) => m.role === b[i].role && m.content === b[i].content);
}

/** Splits a response given as a conversation into the turns before it and its final assistant text. */
function splitResponse(turns: Message[], field: string): { before: Message[]; answer: string } {
  if (turns.length === 0) throw new FieldProblem(field, "an empty conversation has no response to score");
  const last = turns[turns.length - 1];
  if (last.role !== "assistant")
    throw new FieldProblem(
      `${field}[${turns.length - 1}].role`,
      `the last message must be the assistant's response, got "${last.role}"`,
    );
  return { before: turns.slice(0, -1), answer: last.content };
}

function pairFromPromptLine(value: unknown, line: number): PreferencePair {
  const row = parseWith(PromptLineSchema, value);
  const chosen = textOrTurns(row.chosen, "chosen");
  const rejected = textOrTurns(row.rejected, "rejected");
  let prompt: Message[];
  let chosenText: string;
  let rejectedText: string;
  if (typeof chosen === "string" && typeof rejected === "string") {
    if (row.prompt === undefined) throw new FieldProblem("prompt", "missing");
    const p = textOrTurns(row.prompt, "prompt");
    prompt = typeof p === "string" ? [{ role: "user", content: p }] : p;
    chosenText = chosen;
    rejectedText = rejected;
  } else if (typeof chosen !== "string" && typeof rejected !== "string") {
    const c = splitResponse(chosen, "chosen");
    const r = splitResponse(rejected, "rejected");
    if (!sameTurns(c.before, r.before))
      throw new FieldProblem(
        "rejected",
        "the turns before the response differ from chosen's (a pair answers one conversation)",
      );
    const p = row.prompt === undefined ? [] : textOrTurns(row.prompt, "prompt");
    prompt = [...(typeof p === "string" ? [{ role: "user" as const, content: p }] : p), ...c.before];
    chosenText = c.answer;
    rejectedText = r.answer;
  } else {
    throw new FieldProblem(
      typeof chosen === "string" ? "rejected" : "chosen",
      "chosen and rejected must both be strings or both be conversations",
    );
  }
  if (prompt.length === 0)
    throw new FieldProblem("prompt", "missing (a pair needs the conversation its responses answer)");
  const pair: PreferencePair = {
    id: row.id === undefined ? `line-${line}` : String(row.id),
    prompt,
    chosen: chosenText,
    rejected: rejectedText,
    subset: row.subset ?? DEFAULT_SUBSET,
    format: row.subset === undefined ? "trl" : "rewardbench",
    line,
  };
  if (row.section !== undefined) pair.section = row.section;
  return pair;
}

function pairFromSsoRecord(value: unknown, line: number): PreferencePair {
  const rec = parseWith(SsoLineSchema, value);
  const prompt: Message[] = [];
  // The authors' format: an optional base system prompt and earlier [user, assistant] turns.
  if (rec.system !== undefined && rec.system !== "") prompt.push({ role: "system", content: rec.system });
  for (const [user, assistant] of rec.history ?? [])
    prompt.push({ role: "user", content: user }, { role: "assistant", content: assistant });
  prompt.push({ role: "user", content: rec.instruction });
  const pair: PreferencePair = {
    id: rec.id === undefined ? `line-${line}` : String(rec.id),
    prompt,
    chosen: rec.chosen,
    rejected: rec.rejected,
    subset: rec.subset ?? "sso",
    format: "sso",
    line,
  };
  if (rec.section !== undefined) pair.section = rec.section;
  return pair;
}

/**
 * Parses one pair line (any of PAIR_FORMATS; a line with `instruction` and no `prompt` is an SSO
 * record). Errors are UserErrors naming `file:line: field F`.
 */
export function parsePair(value: unknown, file: string, line: number): PreferencePair {
  try {
    if (!isObject(value)) throw new FieldProblem("(root)", "expected a JSON object");
    if ("instruction" in value && !("prompt" in value)) return pairFromSsoRecord(value, line);
    return pairFromPromptLine(value, line);
  } catch (err) {
    if (err instanceof FieldProblem)
      throw new UserError(`${file}:${line}: field ${err.field}: ${err.message}`);
    throw err;
  }
}

/** A JSONL file's non-blank lines, parsed; invalid JSON is an error naming the file and line. */
export function readJsonLines(path: string): { line: number; value: unknown }[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new UserError(`${path}: cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  const out: { line: number; value: unknown }[] = [];
  // Files saved by some editors start with a byte-order mark, which JSON.parse rejects.
  const lines = text.replace(/^\uFEFF/, "").split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].trim();
    if (raw === "") continue;
    try {
      out.push({ line: i + 1, value: JSON.parse(raw) });
    } catch (err) {
      throw new UserError(`${path}:${i + 1}: invalid JSON (${(err as Error).message})`);
    }
  }
  return out;
}

/** Reads a pair file (JSONL, formats mixed freely); an empty file is an error. */
export function readPairs(path: string): PreferencePair[] {
  const pairs = readJsonLines(path).map(({ line, value }) => parsePair(value, path, line));
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

// ---------------------------------------------------------------------------------------------------
// Items to score (selfsteer rm score)

/** Something to score: a conversation and the response that ends it. */
export interface ScoreItem {
  id?: string;
  prompt: Message[];
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
 * whose last message is the assistant's response. Errors name `file:line: field F`.
 */
export function parseScoreItem(value: unknown, file: string, line: number): ScoreItem {
  try {
    if (!isObject(value)) throw new FieldProblem("(root)", "expected a JSON object");
    const row = parseWith(ScoreLineSchema, value);
    let prompt: Message[];
    let response: string;
    if (row.messages !== undefined) {
      if (row.prompt !== undefined || row.response !== undefined)
        throw new FieldProblem("messages", "give either messages or prompt and response, not both");
      const turns = textOrTurns(row.messages, "messages");
      if (typeof turns === "string") throw new FieldProblem("messages", "expected a list of messages");
      const split = splitResponse(turns, "messages");
      prompt = split.before;
      response = split.answer;
    } else {
      if (row.prompt === undefined)
        throw new FieldProblem("prompt", "missing (give prompt and response, or messages)");
      if (row.response === undefined) throw new FieldProblem("response", "missing");
      const p = textOrTurns(row.prompt, "prompt");
      prompt = typeof p === "string" ? [{ role: "user", content: p }] : p;
      response = row.response;
    }
    const item: ScoreItem = { prompt, response, line };
    if (row.id !== undefined) item.id = String(row.id);
    return item;
  } catch (err) {
    if (err instanceof FieldProblem)
      throw new UserError(`${file}:${line}: field ${err.field}: ${err.message}`);
    throw err;
  }
}

/** Reads a file of items to score. */
export function readScoreItems(path: string): ScoreItem[] {
  return readJsonLines(path).map(({ line, value }) => parseScoreItem(value, path, line));
}

// ---------------------------------------------------------------------------------------------------
// Sequences and scores

/**
 * Token ids of a scored response: the ChatML conversation ending at the response's <|im_end|> (or
 * where the length limit cut the response), at most maxLen tokens; the score is read at the last one.
 */
export function encodeScored(
  tokenizer: BpeTokenizer,
  prompt: Message[],
  response: string,
  maxLen: number,
): number[] {
  if (!(Number.isInteger(maxLen) && maxLen >= 2)) throw new RangeError(`maxLen must be >= 2, got ${maxLen}`);
  const endAtResponse = (seq: EncodedSequence): number[] => seq.ids.slice(0, seq.mask.lastIndexOf(1) + 1);
  // ChatML's trailing newline is dropped, so a response that fits without it must not be cut for it.
  const roomy = endAtResponse(encodeResponse(tokenizer, prompt, response, maxLen + 1));
  if (roomy.length <= maxLen) return roomy;
  return endAtResponse(encodeResponse(tokenizer, prompt, response, maxLen));
}

/** Both sides of a pair as scored token sequences. */
export interface EncodedPair {
  chosen: number[];
  rejected: number[];
}

/** Encodes both responses of a pair. */
export function encodePair(tokenizer: BpeTokenizer, pair: PreferencePair, maxLen: number): EncodedPair {
  return {
    chosen: encodeScored(tokenizer, pair.prompt, pair.chosen, maxLen),
    rejected: encodeScored(tokenizer, pair.prompt, pair.rejected, maxLen),
  };
}

function asBatchRows(seqs: readonly number[][]): EncodedSequence[] {
  return seqs.map((ids) => ({ ids, mask: new Array<number>(ids.length).fill(0) }));
}

/**
 * Scores of token sequences, in input order. Sequences are sorted by length and grouped so that a
 * forward pass holds at most `maxBatchTokens` padded tokens (always at least one sequence).
 */
export function scoreSequences(
  model: LlamaModel,
  seqs: readonly number[][],
  padId: number,
  maxBatchTokens: number,
): number[] {
  const order = seqs.map((_, i) => i).sort((a, b) => seqs[a].length - seqs[b].length);
  const scores = new Array<number>(seqs.length).fill(0);
  let start = 0;
  while (start < order.length) {
    let end = start + 1;
    // Sorted ascending, so the group's padded length is that of its last member.
    while (end < order.length && (end - start + 1) * seqs[order[end]].length <= maxBatchTokens) end++;
    const group = order.slice(start, end);
    const batch = packBatch(asBatchRows(group.map((i) => seqs[i])), padId);
    const out = model.forwardScores(batch);
    group.forEach((i, k) => {
      scores[i] = out[k];
    });
    start = end;
  }
  return scores;
}

/** The scores a model gives both sides of a pair. */
export interface PairScore {
  chosenScore: number;
  rejectedScore: number;
}

/** Options of scoring. */
export interface ScoreOptions {
  maxLen: number;
  /** Padded tokens per forward pass. */
  maxBatchTokens: number;
}

/** Scores both responses of every pair, in input order. */
export function scorePairs(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  pairs: readonly PreferencePair[],
  options: ScoreOptions,
): PairScore[] {
  const seqs: number[][] = [];
  for (const p of pairs) {
    const e = encodePair(tokenizer, p, options.maxLen);
    seqs.push(e.chosen, e.rejected);
  }
  const s = scoreSequences(model, seqs, tokenizer.padId, options.maxBatchTokens);
  return pairs.map((_, i) => ({ chosenScore: s[2 * i], rejectedScore: s[2 * i + 1] }));
}

/** Scores the response of every item, in input order. */
export function scoreItems(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  items: readonly ScoreItem[],
  options: ScoreOptions,
): number[] {
  const seqs = items.map((it) => encodeScored(tokenizer, it.prompt, it.response, options.maxLen));
  return scoreSequences(model, seqs, tokenizer.padId, options.maxBatchTokens);
}

// ---------------------------------------------------------------------------------------------------
// Bradley-Terry training

/** Summed statistics of a set of pairs under the Bradley-Terry loss. */
export interface BtSums {
  /** Sum over pairs of -log sigmoid(r_chosen - r_rejected). */
  loss: number;
  /** Pairs with r_chosen > r_rejected. */
  correct: number;
  /** Sum over pairs of r_chosen - r_rejected. */
  margin: number;
}

/**
 * Forward and backward of the Bradley-Terry loss over `pairs`, `microBatch` pairs (2 * microBatch
 * sequences) per forward pass, accumulating d(sum of losses / divisor)/d(params) into model.grads
 * (callers zero them). With divisor = the pairs of an optimizer step, the step's gradient is that of
 * the mean loss over its pairs.
 */
export function accumulateBtGradients(
  model: LlamaModel,
  pairs: readonly EncodedPair[],
  padId: number,
  microBatch: number,
  divisor: number,
): BtSums {
  const sums: BtSums = { loss: 0, correct: 0, margin: 0 };
  for (let m = 0; m < pairs.length; m += microBatch) {
    const group = pairs.slice(m, m + microBatch);
    const seqs: number[][] = [];
    for (const p of group) seqs.push(p.chosen, p.rejected);
    const scores = model.forwardScores(packBatch(asBatchRows(seqs), padId));
    const dScores = new Float32Array(scores.length);
    for (let i = 0; i < group.length; i++) {
      const chosen = scores[2 * i];
      const rejected = scores[2 * i + 1];
      const bt = btLoss(chosen, rejected);
      sums.loss += bt.loss;
      sums.margin += chosen - rejected;
      if (chosen > rejected) sums.correct++;
      dScores[2 * i] = bt.dChosen / divisor;
      dScores[2 * i + 1] = bt.dRejected / divisor;
    }
    model.backwardScores(dScores);
  }
  return sums;
}

/** Options of reward-model training. */
export interface RewardTrainOptions {
  /** Pairs per optimizer step. */
  batchSize: number;
  /** Most pairs per forward pass (two sequences each); a step accumulates over its micro-batches. */
  microBatch: number;
  epochs: number;
  peakLr: number;
  warmupRatio: number;
  maxGradNorm: number;
  maxLen: number;
  seed: number;
  /** Steps already done by an interrupted run with the same pairs and seed: they are skipped. */
  startStep?: number;
  /** Stop before this step (exclusive; default: the end of the last epoch), e.g. to time-box a run. */
  endStep?: number;
}

/** What one training step reports. */
export interface RewardStepInfo {
  /** 0-based index of the update just taken. */
  step: number;
  totalSteps: number;
  epoch: number;
  lr: number;
  /** Mean Bradley-Terry loss over the step's pairs (before the update). */
  loss: number;
  /** Fraction of the step's pairs with the chosen response scored higher (before the update). */
  accuracy: number;
  /** Mean r_chosen - r_rejected. */
  margin: number;
  /** Global gradient norm before clipping; the update is skipped when it is not finite. */
  gradNorm: number;
  pairs: number;
}

/** Optimizer steps of a run: ceil(pairs / batchSize) per epoch. */
export function rewardTotalSteps(pairCount: number, batchSize: number, epochs: number): number {
  return Math.ceil(pairCount / batchSize) * epochs;
}

/**
 * Trains a reward model (a model with a score head) with the Bradley-Terry loss
 * -log sigmoid(r(x, y_w) - r(x, y_l)), averaged over each step's pairs, with clipped AdamW on the cosine
 * schedule. Pairs are reshuffled every epoch from `seed`, so a run resumed at `startStep` takes exactly
 * the steps the uninterrupted run would have.
 */
export function trainRewardModel(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  optimizer: AdamW,
  pairs: readonly PreferencePair[],
  options: RewardTrainOptions,
  onStep?: (info: RewardStepInfo) => void,
): RewardStepInfo[] {
  if (!model.hasScoreHead) throw new Error("trainRewardModel: the model has no score head");
  if (pairs.length === 0) throw new Error("trainRewardModel: no pairs");
  const encoded = pairs.map((p) => encodePair(tokenizer, p, options.maxLen));
  const stepsPerEpoch = Math.ceil(encoded.length / options.batchSize);
  const totalSteps = stepsPerEpoch * options.epochs;
  const rng = new Rng(options.seed).fork("reward-order");
  const startStep = options.startStep ?? 0;
  const endStep = Math.min(options.endStep ?? totalSteps, totalSteps);
  const lengthOf = (i: number) => Math.max(encoded[i].chosen.length, encoded[i].rejected.length);
  const log: RewardStepInfo[] = [];
  let step = 0;
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    const order = rng.shuffle(encoded.map((_, i) => i));
    for (let s = 0; s < stepsPerEpoch; s++, step++) {
      if (step < startStep) continue;
      if (step >= endStep) return log;
      const idx = order.slice(s * options.batchSize, (s + 1) * options.batchSize);
      // Similar lengths in a micro-batch waste little on padding; the step's sum does not depend on it.
      idx.sort((a, b) => lengthOf(a) - lengthOf(b));
      model.zeroGrad();
      const sums = accumulateBtGradients(
        model,
        idx.map((i) => encoded[i]),
        tokenizer.padId,
        options.microBatch,
        idx.length,
      );
      const gradNorm = clipGradNorm(model.grads, options.maxGradNorm);
      const lr = cosineLr(step, totalSteps, { peakLr: options.peakLr, warmupRatio: options.warmupRatio });
      if (Number.isFinite(gradNorm)) optimizer.step(model.params, model.grads, lr);
      const info: RewardStepInfo = {
        step,
        totalSteps,
        epoch,
        lr,
        loss: sums.loss / idx.length,
        accuracy: sums.correct / idx.length,
        margin: sums.margin / idx.length,
        gradNorm,
        pairs: idx.length,
      };
      log.push(info);
      onStep?.(info);
    }
  }
  return log;
}

// ---------------------------------------------------------------------------------------------------
// RewardBench-style reports

/** RewardBench's leaderboard sections, in its order. */
export const REWARDBENCH_SECTION_NAMES = ["Chat", "Chat Hard", "Safety", "Reasoning"] as const;

/**
 * RewardBench's subsets per section (allenai/reward-bench, rewardbench/constants.py SUBSET_MAPPING),
 * plus one subset of our own per section named after it (chat, chat-hard, safety, reasoning).
 */
export const REWARDBENCH_SECTIONS: Readonly<Record<string, readonly string[]>> = {
  Chat: ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med", "chat"],
  "Chat Hard": [
    "mt-bench-hard",
    "llmbar-natural",
    "llmbar-adver-neighbor",
    "llmbar-adver-GPTInst",
    "llmbar-adver-GPTOut",
    "llmbar-adver-manual",
    "chat-hard",
  ],
  Safety: [
    "refusals-dangerous",
    "refusals-offensive",
    "xstest-should-refuse",
    "xstest-should-respond",
    "donotanswer",
    "safety",
  ],
  Reasoning: ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust", "reasoning"],
};

/**
 * The per-subset weights RewardBench uses inside a section (rewardbench/constants.py EXAMPLE_COUNTS,
 * copied as published): the subset sizes, except math-prm, weighted 984 (its real size is 447) so that
 * PRM math and the six HumanEvalPack languages (6 x 164) each make half of Reasoning. The published
 * table gives xstest-should-refuse 250 and xstest-should-respond 154, the reverse of the filtered
 * split's sizes; we keep the published numbers so our section scores equal the leaderboard's.
 */
export const REWARDBENCH_EXAMPLE_COUNTS: Readonly<Record<string, number>> = {
  "alpacaeval-easy": 100,
  "alpacaeval-length": 95,
  "alpacaeval-hard": 95,
  "mt-bench-easy": 28,
  "mt-bench-med": 40,
  "mt-bench-hard": 37,
  "math-prm": 984,
  "refusals-dangerous": 100,
  "refusals-offensive": 100,
  "llmbar-natural": 100,
  "llmbar-adver-neighbor": 134,
  "llmbar-adver-GPTInst": 92,
  "llmbar-adver-GPTOut": 47,
  "llmbar-adver-manual": 46,
  "xstest-should-refuse": 250,
  "xstest-should-respond": 154,
  donotanswer: 136,
  "hep-cpp": 164,
  "hep-go": 164,
  "hep-java": 164,
  "hep-js": 164,
  "hep-python": 164,
  "hep-rust": 164,
};

/** One scored pair, as a report reads it. */
export interface PairResult {
  subset: string;
  /** A section named by the pair itself (see PreferencePair.section). */
  section?: string;
  chosenScore: number;
  rejectedScore: number;
}

/** Accuracy on one subset. */
export interface SubsetReport {
  subset: string;
  /** Its section, or null for a subset no section claims (reported on its own). */
  section: string | null;
  n: number;
  correct: number;
  /** Pairs whose two scores are equal (counted wrong, as RewardBench does). */
  ties: number;
  accuracy: number;
  /** Its weight within the section: RewardBench's published count, else the number of pairs. */
  weight: number;
}

/** A section's score: the weighted mean accuracy of its subsets. */
export interface SectionReport {
  section: string;
  subsets: string[];
  n: number;
  score: number;
}

/** A RewardBench-style report; accuracies and scores are fractions in [0, 1]. */
export interface RewardBenchReport {
  subsets: SubsetReport[];
  sections: SectionReport[];
  /** Mean of the section scores and of the accuracies of subsets in no section. */
  overall: number;
  /** Pairs overall, and the plain fraction of them scored right (every pair weighs the same). */
  n: number;
  correct: number;
  accuracy: number;
}

/** Options of rewardBenchReport. */
export interface ReportOptions {
  /** Section -> subsets; replaces the built-in mapping for the subsets it names. */
  sections?: Readonly<Record<string, readonly string[]>>;
}

/**
 * Accuracy per subset and RewardBench's section and overall scores. A pair is right when its chosen
 * response scores strictly higher (ties are wrong), as in RewardBench's run_rm.py. A section's score
 * is the mean of its subsets' accuracies weighted as calculate_scores_per_section in
 * rewardbench/utils.py does it: by REWARDBENCH_EXAMPLE_COUNTS for RewardBench's subsets (so Reasoning
 * is half PRM math, half code), by the pairs present for any other subset. Only subsets present in
 * the results count. The overall score is the plain mean of the section scores (the leaderboard's
 * average over Chat, Chat Hard, Safety and Reasoning), with each subset that no section claims
 * counted as one more "section" on its own. A subset's section is, first, the one `options.sections`
 * gives it, then the one its pairs name, then the built-in mapping.
 */
export function rewardBenchReport(
  results: readonly PairResult[],
  options: ReportOptions = {},
): RewardBenchReport {
  const builtIn = sectionLookup(REWARDBENCH_SECTIONS);
  const explicit = sectionLookup(options.sections ?? {});
  const bySubset = new Map<string, { n: number; correct: number; ties: number; named?: string }>();
  for (const r of results) {
    let s = bySubset.get(r.subset);
    if (s === undefined) {
      s = { n: 0, correct: 0, ties: 0 };
      bySubset.set(r.subset, s);
    }
    s.n++;
    if (r.chosenScore > r.rejectedScore) s.correct++;
    else if (r.chosenScore === r.rejectedScore) s.ties++;
    if (r.section !== undefined) {
      if (s.named !== undefined && s.named !== r.section)
        throw new UserError(
          `subset "${r.subset}": its pairs name two sections ("${s.named}" and "${r.section}")`,
        );
      s.named = r.section;
    }
  }
  const subsets: SubsetReport[] = [...bySubset.entries()].map(([subset, s]) => ({
    subset,
    section: explicit.get(subset) ?? s.named ?? builtIn.get(subset) ?? null,
    n: s.n,
    correct: s.correct,
    ties: s.ties,
    accuracy: s.correct / s.n,
    weight: REWARDBENCH_EXAMPLE_COUNTS[subset] ?? s.n,
  }));
  const sectionOrder = [
    ...REWARDBENCH_SECTION_NAMES,
    ...Object.keys(options.sections ?? {}),
    ...subsets.map((s) => s.section ?? ""),
  ];
  const rank = (section: string) => sectionOrder.indexOf(section);
  const sections: SectionReport[] = [];
  for (const name of new Set(subsets.map((s) => s.section).filter((s) => s !== null))) {
    const members = subsets.filter((s) => s.section === name);
    let weighted = 0;
    let weights = 0;
    for (const m of members) {
      weighted += m.weight * m.accuracy;
      weights += m.weight;
    }
    sections.push({
      section: name,
      subsets: members.map((m) => m.subset),
      n: members.reduce((a, m) => a + m.n, 0),
      score: weighted / weights,
    });
  }
  sections.sort((a, b) => rank(a.section) - rank(b.section));
  subsets.sort(
    (a, b) =>
      (a.section === null ? Infinity : rank(a.section)) - (b.section === null ? Infinity : rank(b.section)) ||
      a.subset.localeCompare(b.subset),
  );
  const parts = [
    ...sections.map((s) => s.score),
    ...subsets.filter((s) => s.section === null).map((s) => s.accuracy),
  ];
  const n = results.length;
  const correct = subsets.reduce((a, s) => a + s.correct, 0);
  return {
    subsets,
    sections,
    overall: parts.length === 0 ? 0 : parts.reduce((a, b) => a + b, 0) / parts.length,
    n,
    correct,
    accuracy: n === 0 ? 0 : correct / n,
  };
}

function sectionLookup(mapping: Readonly<Record<string, readonly string[]>>): Map<string, string> {
  const out = new Map<string, string>();
  for (const [section, subsets] of Object.entries(mapping))
    for (const subset of subsets) if (!out.has(subset)) out.set(subset, section);
  return out;
}
