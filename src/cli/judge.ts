import { resolve } from "node:path";
import type { Command } from "commander";
import { type AnswerEntry, matchEntries, readAnswerFile } from "../eval/answer-files.js";
import { ANSWER_STYLES, type AnswerStyle, extractFinalAnswer, isExactMatch } from "../eval/answers.js";
import { evaluateJudged, signalAccuracy } from "../eval/judged.js";
import { JudgmentCache, LlmJudge } from "../eval/llm-judge.js";
import { OpenAIPolicy } from "../policy/openai.js";
import { readRecords } from "../sso/records.js";
import { UserError } from "../util/errors.js";
import { writeJsonAtomic } from "../util/fsio.js";
import { parseIntFlag, parseNumberFlag, printJson } from "./common.js";
import { checkOutputs } from "./output.js";

/** Flags every LLM-judged subcommand takes. */
interface JudgeFlags {
  endpoint?: string;
  model?: string;
  apiKey?: string;
  cache: string;
  seed: string;
  judgeMaxRequests?: string;
  temperature: string;
  maxTokens: string;
  concurrency: string;
  timeoutMs: string;
  retries: string;
  out?: string;
}

function env(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v.trim() === "" ? undefined : v.trim();
}

function addJudgeFlags(cmd: Command): Command {
  return cmd
    .option("--endpoint <url>", "judge's OpenAI-compatible base URL (env JUDGE_BASE_URL)")
    .option("--model <name>", "judge model name (env JUDGE_MODEL)")
    .option("--api-key <key>", "bearer token (env JUDGE_API_KEY)")
    .option("--cache <file>", "judgments cache JSONL; reruns reuse it", "judgments.jsonl")
    .option("--seed <n>", "seed of every judge request", "0")
    .option("--judge-max-requests <n>", "most new judge requests; the rest are reported missing")
    .option("--temperature <t>", "judge sampling temperature", "0")
    .option("--max-tokens <n>", "token limit of one judgment", "512")
    .option("--concurrency <n>", "judge requests in flight", "8")
    .option("--timeout-ms <n>", "per-request timeout", "120000")
    .option("--retries <n>", "retries per request on 429, 5xx, timeouts", "5")
    .option("--out <file>", "also write the report here (atomically)");
}

/** Builds the judge the flags describe; every flag is checked before any request. */
export function judgeFromFlags(flags: JudgeFlags): { judge: LlmJudge; cache: JudgmentCache } {
  checkOutputs(
    { flag: "--out", path: flags.out, kind: "file" },
    { flag: "--cache", path: flags.cache, kind: "file" },
  );
  const endpoint = flags.endpoint ?? env("JUDGE_BASE_URL");
  if (endpoint === undefined) throw new UserError("--endpoint: required (or set JUDGE_BASE_URL)");
  const model = flags.model ?? env("JUDGE_MODEL");
  if (model === undefined || model.trim() === "")
    throw new UserError("--model: required (or set JUDGE_MODEL)");
  const seed = parseIntFlag("--seed", flags.seed, 0);
  const maxRequests =
    flags.judgeMaxRequests === undefined
      ? undefined
      : parseIntFlag("--judge-max-requests", flags.judgeMaxRequests, 0);
  const temperature = parseNumberFlag("--temperature", flags.temperature, 0, 10);
  const maxTokens = parseIntFlag("--max-tokens", flags.maxTokens, 1);
  const policy = new OpenAIPolicy({
    endpoints: [endpoint],
    model,
    apiKey: flags.apiKey ?? env("JUDGE_API_KEY"),
    concurrency: parseIntFlag("--concurrency", flags.concurrency, 1),
    timeoutMs: parseIntFlag("--timeout-ms", flags.timeoutMs, 1),
    maxRetries: parseIntFlag("--retries", flags.retries, 0),
  });
  const cache = new JudgmentCache(flags.cache);
  const judge = new LlmJudge({ policy, model, seed, temperature, maxTokens, maxRequests, cache });
  return { judge, cache };
}

function parseStyle(value: string): AnswerStyle {
  if (!(ANSWER_STYLES as readonly string[]).includes(value))
    throw new UserError(`--style: expected one of ${ANSWER_STYLES.join(", ")}, got '${value}'`);
  return value as AnswerStyle;
}

function finish(report: Record<string, unknown>, judge: LlmJudge | null, out: string | undefined): void {
  const full = judge === null ? report : { ...report, judge: { name: judge.name, ...judge.stats() } };
  if (judge !== null && judge.stats().skippedByCap > 0)
    process.stderr.write(
      `judge: --judge-max-requests reached: ${judge.stats().skippedByCap} judgment(s) missing; ` +
        "rerun with a higher cap to complete them (cached ones are not asked again)\n",
    );
  if (out !== undefined) writeJsonAtomic(out, full);
  printJson(full);
}

function goldFor(answers: AnswerEntry[], answersPath: string, goldPath: string | undefined) {
  if (goldPath === undefined) return answers.map(() => undefined);
  return matchEntries(answers, answersPath, readAnswerFile(goldPath, "gold"), goldPath, true).map(
    (g) => g?.text,
  );
}

/** Registers `selfsteer judge ...`: an LLM judge and exact-match scoring over answer files. */
export function register(program: Command): void {
  const judge = program
    .command("judge")
    .description("judge answer files with any LLM behind an OpenAI-compatible endpoint, or by exact match");

  addJudgeFlags(
    judge
      .command("pairwise")
      .description(
        "AlpacaEval-2-style: answers against reference answers, both orders, win rate and LC win rate",
      )
      .requiredOption("--answers <file>", "JSONL or JSON array of {id?, instruction, output}")
      .requiredOption("--references <file>", "reference answers, same shape; matched by id, else instruction")
      .option("--gold <file>", "gold answers (GSM8K/MATH style) to add exact match to the report")
      .option("--style <name>", `how gold answers are read: ${ANSWER_STYLES.join(", ")}`, "auto"),
  ).action(
    async (flags: JudgeFlags & { answers: string; references: string; gold?: string; style: string }) => {
      const style = parseStyle(flags.style);
      const answers = readAnswerFile(flags.answers);
      const refs = matchEntries(answers, flags.answers, readAnswerFile(flags.references), flags.references);
      const gold = goldFor(answers, flags.answers, flags.gold);
      const { judge: j, cache } = judgeFromFlags(flags);
      try {
        const report = await evaluateJudged(
          j,
          answers.map((a, i) => ({
            instruction: a.instruction,
            answer: a.text,
            reference: refs[i]?.text,
            gold: gold[i],
          })),
          { grade: false, answerStyle: style },
        );
        finish(
          { mode: "pairwise", answers: flags.answers, references: flags.references, ...report },
          j,
          flags.out,
        );
      } finally {
        cache.close();
      }
    },
  );

  addJudgeFlags(
    judge
      .command("grade")
      .description("MT-Bench-style: each answer rated 1-10 on its own")
      .requiredOption("--answers <file>", "JSONL or JSON array of {id?, instruction, output}")
      .option("--gold <file>", "gold answers (GSM8K/MATH style) to add exact match to the report")
      .option("--style <name>", `how gold answers are read: ${ANSWER_STYLES.join(", ")}`, "auto"),
  ).action(async (flags: JudgeFlags & { answers: string; gold?: string; style: string }) => {
    const style = parseStyle(flags.style);
    const answers = readAnswerFile(flags.answers);
    const gold = goldFor(answers, flags.answers, flags.gold);
    const { judge: j, cache } = judgeFromFlags(flags);
    try {
      const report = await evaluateJudged(
        j,
        answers.map((a, i) => ({ instruction: a.instruction, answer: a.text, gold: gold[i] })),
        { answerStyle: style },
      );
      finish(
        {
          mode: "grade",
          answers: flags.answers,
          // The judge's 1-10 scale, back from the [0, 1] score: r = 1 + 9 * score.
          meanRating: report.score === null ? null : 1 + 9 * report.score,
          ...report,
        },
        j,
        flags.out,
      );
    } finally {
      cache.close();
    }
  });

  addJudgeFlags(
    judge
      .command("pairs")
      .description(
        "signal accuracy of SSO records: does the judge prefer y+ to y- on the plain query, both orders",
      )
      .requiredOption("--records <file>", "SSO records JSONL (selfsteer generate)")
      .option("--limit <n>", "judge only the first n records"),
  ).action(async (flags: JudgeFlags & { records: string; limit?: string }) => {
    const limit = flags.limit === undefined ? undefined : parseIntFlag("--limit", flags.limit, 1);
    const records = readRecords(flags.records).rows.map((r) => r.value);
    const { judge: j, cache } = judgeFromFlags(flags);
    try {
      const report = await signalAccuracy(j, records.slice(0, limit));
      finish({ mode: "pairs", records: flags.records, ...report }, j, flags.out);
    } finally {
      cache.close();
    }
  });

  judge
    .command("exact")
    .description("exact match of final answers against GSM8K- or MATH-style references (no LLM)")
    .requiredOption("--answers <file>", "JSONL or JSON array of {id?, instruction, output}")
    .requiredOption(
      "--gold <file>",
      "GSM8K {question, answer: '... #### 42'} or MATH {problem, solution: '\\boxed{}'}",
    )
    .option("--style <name>", `how gold answers are read: ${ANSWER_STYLES.join(", ")}`, "auto")
    .option("--out <file>", "also write the report (with per-item extractions) here")
    .addHelpText(
      "after",
      `
Extraction (docs/judge.md): the last \\boxed{...}, else the text after the last ####, else after
"the answer is", else the last number; fractions, thousands separators, $ and units are normalised.

Examples:
  selfsteer judge exact --answers answers.jsonl --gold gsm8k-test.jsonl
  selfsteer judge grade --endpoint http://127.0.0.1:8001/v1 --model judge --answers answers.jsonl \\
    --gold gsm8k-test.jsonl --cache judgments.jsonl --judge-max-requests 2000`,
    )
    .action((flags: { answers: string; gold: string; style: string; out?: string }) => {
      if (flags.out !== undefined && resolve(flags.out) === resolve(flags.answers))
        throw new UserError("--out: must differ from --answers");
      const style = parseStyle(flags.style);
      const answers = readAnswerFile(flags.answers);
      const gold = matchEntries(answers, flags.answers, readAnswerFile(flags.gold, "gold"), flags.gold);
      const items = answers.map((a, i) => {
        const ref = gold[i]?.text ?? "";
        return { id: a.id, extracted: extractFinalAnswer(a.text), correct: isExactMatch(a.text, ref, style) };
      });
      const correct = items.filter((it) => it.correct).length;
      const report = {
        mode: "exact",
        answers: flags.answers,
        gold: flags.gold,
        count: items.length,
        correct,
        exactMatch: items.length > 0 ? correct / items.length : null,
      };
      if (flags.out !== undefined) writeJsonAtomic(flags.out, { ...report, items });
      printJson(report);
    });
}
