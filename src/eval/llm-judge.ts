/**
 * An LLM judge over any OpenAI-compatible endpoint (docs/judge.md): pairwise comparison in both
 * orders (AlpacaEval 2 style), single-answer grading on a 1-10 scale (MT-Bench style) and the signal
 * accuracy of SSO pairs. Every judgment is cached in a JSONL file keyed by a hash of the judge model
 * and the exact prompt, so a rerun resumes without asking again; new requests are capped.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import type { ChatMessage, Policy } from "../policy/types.js";
import { ResumableJsonlWriter } from "../util/jsonl.js";
import { hashString } from "../util/rng.js";
import type { BatchJudge, CompareItem, GradeItem } from "./judge.js";

/** System prompt of the pairwise comparison (docs/judge.md, "Pairwise"). */
export const PAIRWISE_SYSTEM =
  "You are a careful, impartial evaluator. You will see a user's instruction and two candidate " +
  "answers, A and B. Decide which answer serves the user better: consider whether it does what was " +
  "asked, whether it is correct, how useful and clear it is, and whether it is safe. Length is not a " +
  "merit in itself; a longer answer wins only if the extra text helps. The order in which the answers " +
  "are shown means nothing. Explain your reasoning in at most a few sentences, then give the verdict " +
  'on the last line exactly as "[[A]]" if A is better, "[[B]]" if B is better, or "[[C]]" for a tie.';

/** The user message of one pairwise comparison. */
export function pairwiseMessages(instruction: string, a: string, b: string): ChatMessage[] {
  return [
    { role: "system", content: PAIRWISE_SYSTEM },
    {
      role: "user",
      content:
        `[Instruction]\n${instruction}\n\n[Answer A]\n${a}\n[End of answer A]\n\n` +
        `[Answer B]\n${b}\n[End of answer B]`,
    },
  ];
}

/** System prompt of single-answer grading (docs/judge.md, "Grading"). */
export const GRADE_SYSTEM =
  "You are a careful, impartial evaluator. You will see a user's instruction and one answer. Judge how " +
  "well the answer serves the user: whether it does what was asked, whether it is correct, how useful, " +
  "clear and appropriately detailed it is, and whether it is safe. Write a short justification, then " +
  'give a score from 1 (useless or harmful) to 10 (excellent) on the last line exactly as "Rating: [[N]]".';

/** The messages of one grading request. */
export function gradeMessages(instruction: string, answer: string): ChatMessage[] {
  return [
    { role: "system", content: GRADE_SYSTEM },
    { role: "user", content: `[Instruction]\n${instruction}\n\n[Answer]\n${answer}\n[End of answer]` },
  ];
}

/** A pairwise verdict as read from a judge's text. */
export type PairwiseVerdict = "A" | "B" | "tie";

/**
 * Reads a pairwise verdict: the last `[[A]]`, `[[B]]` or `[[C]]` / `[[tie]]`; failing that, a final
 * line that is only "A", "B", "Answer A", "Output (b)" and the like. Null when nothing is clear.
 */
export function parsePairwiseVerdict(text: string): PairwiseVerdict | null {
  let last: PairwiseVerdict | null = null;
  for (const m of text.matchAll(/\[\[\s*(A|B|C|tie)\s*\]\]/gi)) {
    const v = m[1].toUpperCase();
    last = v === "A" ? "A" : v === "B" ? "B" : "tie";
  }
  if (last !== null) return last;
  const lines = text
    .trim()
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  const final = lines[lines.length - 1] ?? "";
  const m = /^(?:verdict:\s*)?(?:answer|output)?\s*\(?\s*([AB])\s*\)?\s*(?:is better)?[.!]?$/i.exec(final);
  if (m !== null) return m[1].toUpperCase() === "A" ? "A" : "B";
  if (/^(?:verdict:\s*)?tie[.!]?$/i.test(final)) return "tie";
  return null;
}

/**
 * Reads a 1-10 rating: the last `[[N]]` (N may be a decimal), else "Rating: N", "Score: N" or "N/10".
 * Null when none is found or the number is outside [1, 10].
 */
export function parseRating(text: string): number | null {
  const candidates: string[] = [];
  for (const m of text.matchAll(/\[\[\s*(\d+(?:\.\d+)?)\s*(?:\/\s*10\s*)?\]\]/g)) candidates.push(m[1]);
  if (candidates.length === 0)
    for (const m of text.matchAll(/(?:rating|score)\s*[:=]?\s*\**\s*\[?\s*(\d+(?:\.\d+)?)/gi))
      candidates.push(m[1]);
  if (candidates.length === 0)
    for (const m of text.matchAll(/(\d+(?:\.\d+)?)\s*\/\s*10\b/g)) candidates.push(m[1]);
  if (candidates.length === 0) return null;
  const value = Number(candidates[candidates.length - 1]);
  return Number.isFinite(value) && value >= 1 && value <= 10 ? value : null;
}

/** One cached judgment: the key, the judge model and what it answered. */
export interface CachedJudgment {
  key: string;
  model: string;
  text: string;
}

/**
 * Judgments on disk: one JSONL line per (judge model, prompt). Opening an existing file loads it (a
 * torn last line from a killed run is dropped and asked again), so reruns never pay twice.
 */
export class JudgmentCache {
  private readonly entries = new Map<string, string>();
  private readonly writer: ResumableJsonlWriter<CachedJudgment> | null;

  constructor(readonly path: string | null) {
    if (path === null) {
      this.writer = null;
      return;
    }
    // The writer repairs a torn tail first; then every line left is a whole JSON object.
    this.writer = new ResumableJsonlWriter<CachedJudgment>(path, (j) => j.key);
    if (existsSync(path))
      for (const line of readFileSync(path, "utf8").split("\n")) {
        if (line.trim() === "") continue;
        const j = JSON.parse(line) as CachedJudgment;
        if (typeof j.key === "string" && typeof j.text === "string") this.entries.set(j.key, j.text);
      }
  }

  /** The cached text for a key. */
  get(key: string): string | undefined {
    return this.entries.get(key);
  }

  /** Stores a judgment (appended at once, so a kill loses at most the requests in flight). */
  put(entry: CachedJudgment): void {
    this.entries.set(entry.key, entry.text);
    this.writer?.append(entry);
  }

  /** Number of cached judgments. */
  get size(): number {
    return this.entries.size;
  }

  /** Closes the file. */
  close(): void {
    this.writer?.close();
  }
}

/** The cache key of a prompt for a judge model: sha256 of both, so any change in either asks again. */
export function judgmentKey(model: string, messages: readonly ChatMessage[]): string {
  return createHash("sha256")
    .update(JSON.stringify([model, messages]), "utf8")
    .digest("hex");
}

/** Settings of an LLM judge. */
export interface LlmJudgeOptions {
  /** The judge model behind an endpoint (an OpenAIPolicy, or anything with the Policy interface). */
  policy: Policy;
  /** The judge model's name: part of every cache key. */
  model: string;
  /** Seed of every judge request (each request's seed derives from it and its key). */
  seed: number;
  /** Sampling temperature (default 0: judges should be as deterministic as the server allows). */
  temperature?: number;
  /** Token limit of one judgment (default 512). */
  maxTokens?: number;
  /** Most new (uncached) requests this judge may send; beyond it judgments are missing (null). */
  maxRequests?: number;
  /** Where judgments are cached (default: in memory only). */
  cache?: JudgmentCache;
  /** Requests sent per round; each round's answers are cached before the next starts (default 32). */
  chunkSize?: number;
}

/** What one pairwise comparison in both orders gave. */
export interface PairwiseJudgment {
  /** Verdict with `a` shown first. */
  forward: PairwiseVerdict | null;
  /** Verdict with `b` shown first (already mapped back: "A" still means `a`). */
  backward: PairwiseVerdict | null;
  /** Preference for `a` in [0, 1]: the mean of both orders (win 1, tie 0.5, loss 0); null if either is missing. */
  outcome: number | null;
  /** Whether both orders gave a verdict and they agree. */
  consistent: boolean;
}

/** Counters of a judge's lifetime. */
export interface LlmJudgeStats {
  /** Judgments answered from the cache. */
  cached: number;
  /** New requests sent. */
  requested: number;
  /** Judgments not asked because the request cap was reached. */
  skippedByCap: number;
  /** Answers whose verdict could not be read. */
  unparsed: number;
}

function verdictValue(v: PairwiseVerdict): number {
  return v === "A" ? 1 : v === "B" ? 0 : 0.5;
}

function swapVerdict(v: PairwiseVerdict | null): PairwiseVerdict | null {
  return v === "A" ? "B" : v === "B" ? "A" : v;
}

/** An LLM judge over a Policy (an OpenAI-compatible endpoint). */
export class LlmJudge implements BatchJudge {
  readonly name: string;
  private readonly o: Required<Omit<LlmJudgeOptions, "maxRequests" | "cache">> &
    Pick<LlmJudgeOptions, "maxRequests">;
  private readonly cache: JudgmentCache;
  private readonly counters: LlmJudgeStats = { cached: 0, requested: 0, skippedByCap: 0, unparsed: 0 };

  constructor(options: LlmJudgeOptions) {
    if (
      options.maxRequests !== undefined &&
      !(Number.isInteger(options.maxRequests) && options.maxRequests >= 0)
    )
      throw new RangeError(`LlmJudge: maxRequests must be an integer >= 0, got ${options.maxRequests}`);
    this.o = {
      temperature: 0,
      maxTokens: 512,
      chunkSize: 32,
      ...options,
    };
    this.cache = options.cache ?? new JudgmentCache(null);
    this.name = `llm:${options.model}`;
  }

  /** Counters so far. */
  stats(): LlmJudgeStats {
    return { ...this.counters };
  }

  /**
   * The judge's raw answers to many prompts, in order: cached ones at once, new ones in rounds of
   * `chunkSize`, each round cached before the next. Null where the request cap left a prompt unasked.
   */
  async ask(prompts: readonly ChatMessage[][]): Promise<Array<string | null>> {
    const out: Array<string | null> = new Array(prompts.length).fill(null);
    const todo: Array<{ index: number; key: string }> = [];
    const firstIndexOfKey = new Map<string, number>();
    prompts.forEach((messages, index) => {
      const key = judgmentKey(this.o.model, messages);
      const hit = this.cache.get(key);
      if (hit !== undefined) {
        out[index] = hit;
        this.counters.cached++;
      } else if (!firstIndexOfKey.has(key)) {
        firstIndexOfKey.set(key, index);
        todo.push({ index, key });
      }
    });
    if (this.o.maxRequests !== undefined) {
      const allowed = Math.max(0, this.o.maxRequests - this.counters.requested);
      if (todo.length > allowed) {
        this.counters.skippedByCap += todo.length - allowed;
        todo.length = allowed;
      }
    }
    for (let start = 0; start < todo.length; start += this.o.chunkSize) {
      const chunk = todo.slice(start, start + this.o.chunkSize);
      const answers = await this.o.policy.generate(
        chunk.map(({ index, key }) => ({
          messages: prompts[index],
          temperature: this.o.temperature,
          topP: 1,
          maxTokens: this.o.maxTokens,
          n: 1,
          seed: hashString(`${this.o.seed}|${key}`),
        })),
      );
      this.counters.requested += chunk.length;
      chunk.forEach(({ index, key }, i) => {
        const text = answers[i]?.[0]?.text ?? "";
        this.cache.put({ key, model: this.o.model, text });
        out[index] = text;
      });
    }
    // Repeated prompts share one request.
    prompts.forEach((messages, index) => {
      if (out[index] === null) {
        const first = firstIndexOfKey.get(judgmentKey(this.o.model, messages));
        if (first !== undefined && first !== index) out[index] = out[first];
      }
    });
    return out;
  }

  /** Pairwise comparisons, each in both orders (a first, then b first), so position bias cancels. */
  async compareAll(items: readonly CompareItem[]): Promise<PairwiseJudgment[]> {
    const prompts = items.flatMap((it) => [
      pairwiseMessages(it.instruction, it.a, it.b),
      pairwiseMessages(it.instruction, it.b, it.a),
    ]);
    const texts = await this.ask(prompts);
    return items.map((_, i) => {
      const read = (t: string | null): PairwiseVerdict | null => {
        if (t === null) return null;
        const v = parsePairwiseVerdict(t);
        if (v === null) this.counters.unparsed++;
        return v;
      };
      const forward = read(texts[2 * i]);
      const backward = swapVerdict(read(texts[2 * i + 1]));
      const outcome =
        forward === null || backward === null ? null : (verdictValue(forward) + verdictValue(backward)) / 2;
      return { forward, backward, outcome, consistent: forward !== null && forward === backward };
    });
  }

  /** 1-10 ratings of single answers; null where missing or unreadable. */
  async gradeAll(items: readonly GradeItem[]): Promise<Array<number | null>> {
    const texts = await this.ask(items.map((it) => gradeMessages(it.instruction, it.response)));
    return texts.map((t) => {
      if (t === null) return null;
      const r = parseRating(t);
      if (r === null) this.counters.unparsed++;
      return r;
    });
  }

  /** BatchJudge: a rating mapped to [0, 1] as (rating - 1) / 9. */
  async scoreAll(items: readonly GradeItem[]): Promise<Array<number | null>> {
    return (await this.gradeAll(items)).map((r) => (r === null ? null : (r - 1) / 9));
  }

  /** BatchJudge: the both-orders outcome. */
  async preferAll(items: readonly CompareItem[]): Promise<Array<number | null>> {
    return (await this.compareAll(items)).map((j) => j.outcome);
  }
}
