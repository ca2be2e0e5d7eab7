/**
 * Online SSO with external components (docs/architecture.md, run layer): each iteration serves the
 * current policy behind an OpenAI-compatible endpoint (a server started from a command template, or
 * one the user runs), builds SSO records with it, exports them in the trainer's format, runs a training
 * command template whose output directory becomes the next policy, and evaluates every policy with the
 * world's gold judge or an LLM judge. Every stage is resumable: finished stages are listed in
 * stages.jsonl and skipped on rerun, records and answers are appended by id, judgments are cached, and
 * every command run is logged in commands.jsonl.
 *
 * Order for K iterations (model m = the policy after m trainings; model 0 is the base):
 *   for k = 1 .. K + 1, with model m = k - 1 served once:
 *     answer  the evaluation prompts with model m              (if evaluation is on)
 *     build   SSO records for iteration k with model m         (k <= K)
 *     judge   model m's answers (and the signal of iteration k's pairs, LLM judge)
 *     export  iteration k's records in the trainer's format    (k <= K)
 *     train   the trainer command: model m -> model k          (k <= K)
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { z } from "zod";
import { type AnswerEntry, readAnswerFile } from "../eval/answer-files.js";
import type { BatchJudge, CompareItem, GradeItem } from "../eval/judge.js";
import { evaluateJudged, type JudgedReport, type SignalReport, signalAccuracy } from "../eval/judged.js";
import { JudgmentCache, LlmJudge, type LlmJudgeStats } from "../eval/llm-judge.js";
import { OpenAIPolicy } from "../policy/openai.js";
import { BuildInterruptedError, buildRecords } from "../sso/builder.js";
import { type BundleFormat, type TrainerSettings, writeBundle } from "../sso/bundle.js";
import { DEFAULT_CATALOG } from "../sso/catalog.js";
import { dropLogPath, openDropLog, openRecordWriter, type QueryPrompt, readRecords } from "../sso/records.js";
import { UserError } from "../util/errors.js";
import { writeFileAtomic, writeJsonAtomic } from "../util/fsio.js";
import { ResumableJsonlWriter, readJsonl } from "../util/jsonl.js";
import { worldJudge } from "../world/judge.js";
import { evalQueries, type WorldQuery } from "../world/tasks.js";
import {
  fillTemplate,
  freePort,
  ManagedServer,
  ProcessBook,
  runCommand,
  StageError,
} from "./external-process.js";

/** How the policy is reached each iteration: a server started from a template, or a fixed endpoint. */
export interface PolicyServing {
  /** Command template ({model}, {gguf}, {port}, {iteration}, {seed}, {selfsteer}); null with `endpoint`. */
  serve: string | null;
  /** A fixed endpoint instead (the same server every iteration); null with `serve`. */
  endpoint: string | null;
  /** Model name sent in requests (default: the first id the server lists). */
  modelName: string | null;
  apiKey?: string;
}

/** The LLM judge: a server started from a template, or a fixed endpoint. */
export interface JudgeServing {
  serve: string | null;
  /** The judge model's path for {model} in `serve`. */
  model: string | null;
  endpoint: string | null;
  modelName: string | null;
  apiKey?: string;
  /** Most new judge requests per run (the rest are reported missing). */
  maxRequests?: number;
  /** SSO pairs of each iteration whose signal the judge checks (0: none). */
  signalPairs: number;
  /** Token limit of one judgment. */
  maxTokens: number;
}

/** One evaluation prompt, with a gold answer when it is verifiable. */
export interface EvalPrompt {
  id: string;
  prompt: string;
  gold?: string;
  line: number;
}

/** Everything the external loop needs; the CLI fills it from flags. */
export interface ExternalConfig {
  runDir: string;
  /** The base policy (model 0): a directory, or whatever {model} means to the serve template. */
  baseModel: string;
  promptsPath: string;
  prompts: QueryPrompt[];
  iterations: number;
  queriesPerIteration: number;
  seed: number;
  /** How `selfsteer` itself is run in templates ({selfsteer}). */
  selfsteer: string;
  build: {
    featureCount: number;
    concisionRate: number;
    principles: "catalog" | "generated";
    temperature: number;
    topP: number;
    maxTokens: number;
    concurrency: number;
    timeoutMs: number;
    retries: number;
  };
  policy: PolicyServing;
  train: {
    /** Command template ({data}, {data_dir}, {config}, {model}, {base}, {output}, {iteration}, {seed}, {selfsteer}, {loss}, {beta}, {lr}, {epochs}). */
    command: string;
    format: BundleFormat;
    settings: Omit<TrainerSettings, "model" | "outputDir">;
  };
  eval: null | {
    promptsPath: string;
    prompts: EvalPrompt[];
    judge: "gold" | "llm";
    maxTokens: number;
    /** Reference answers for the win rate (default: the base model's own answers). */
    referencesPath: string | null;
  };
  judge: JudgeServing | null;
  /** Seconds to wait for a server's health check; grace between SIGTERM and SIGKILL. */
  healthTimeoutMs: number;
  stopGraceMs: number;
}

/** What one model's evaluation gave. */
export interface ModelEvaluation {
  model: number;
  path: string;
  report: JudgedReport;
  /** Signal accuracy of the pairs this model built (iteration model + 1); null when not judged. */
  signal: SignalReport | null;
  /** The LLM judge's counters for this evaluation (cached, requested, skipped by the cap, unparsed). */
  judge: LlmJudgeStats | null;
}

/** What one iteration's build gave (counted from its files, so a resumed build reports all of it). */
export interface IterationBuild {
  iteration: number;
  kept: number;
  dropped: number;
  /** Dropped queries by filter reason. */
  drops: Record<string, number>;
  /** Kept records whose features were chosen at random (the policy's answer was unusable). */
  featureFallbacks: number;
  /** Answers of kept records that stopped at --max-tokens. */
  truncated: number;
}

/** The run's report (report.json). */
export interface ExternalReport {
  runDir: string;
  iterations: number;
  builds: IterationBuild[];
  evaluations: ModelEvaluation[];
  finalModel: string;
}

/** Events for the CLI's progress lines. */
export type ExternalEvent =
  | { type: "stage"; stage: string; iteration: number; state: "start" | "done" | "skipped"; detail?: string }
  | { type: "note"; text: string };

const EvalLineSchema = z
  .object({
    id: z.union([z.string().min(1), z.number().int()]).optional(),
    prompt: z.string().optional(),
    instruction: z.string().optional(),
    question: z.string().optional(),
    problem: z.string().optional(),
    answer: z.union([z.string(), z.number()]).optional(),
    solution: z.string().optional(),
  })
  .passthrough();

/**
 * Reads evaluation prompts: {id?, prompt | instruction | question | problem, answer? | solution?}.
 * GSM8K and MATH test files work as they are; a line with an answer is also scored by exact match.
 */
export function readEvalPrompts(path: string): EvalPrompt[] {
  const { rows } = readJsonl(path, EvalLineSchema);
  const seen = new Map<string, number>();
  return rows.map(({ line, value }) => {
    const prompt = value.prompt ?? value.instruction ?? value.question ?? value.problem;
    if (prompt === undefined || prompt.trim() === "")
      throw new UserError(
        `${path}:${line}: field prompt: missing (give prompt, instruction, question or problem)`,
      );
    const id =
      value.id === undefined
        ? `e-${createHash("sha256").update(prompt).digest("hex").slice(0, 16)}`
        : String(value.id);
    const earlier = seen.get(id);
    if (earlier !== undefined)
      throw new UserError(`${path}:${line}: field id: '${id}' already appears on line ${earlier}`);
    seen.set(id, line);
    const gold = value.solution ?? (value.answer === undefined ? undefined : String(value.answer));
    return { id, prompt, line, ...(gold === undefined ? {} : { gold }) };
  });
}

/** The world's held-out queries by prompt text, for the gold judge on a user's prompt file. */
function worldEvalLookup(prompts: readonly EvalPrompt[], path: string): Map<string, WorldQuery> {
  const known = new Map(evalQueries(Math.max(1024, prompts.length * 2)).map((q) => [q.prompt, q]));
  for (const p of prompts)
    if (!known.has(p.prompt))
      throw new UserError(
        `${path}:${p.line}: field prompt: not one of the world's evaluation queries; the gold judge only ` +
          "knows those (write them with: selfsteer world queries --split eval --out FILE), or use --judge llm",
      );
  return known;
}

/** The world's gold judge in the BatchJudge shape (for world prompts looked up by text). */
function goldBatchJudge(lookup: Map<string, WorldQuery>): BatchJudge {
  const q = (instruction: string): WorldQuery => {
    const found = lookup.get(instruction);
    if (found === undefined) throw new Error(`gold judge: unknown query '${instruction.slice(0, 40)}'`);
    return found;
  };
  return {
    name: "world-gold",
    scoreAll: async (items: readonly GradeItem[]) =>
      items.map((it) => worldJudge.score(q(it.instruction), it.response)),
    preferAll: async (items: readonly CompareItem[]) =>
      items.map((it) => worldJudge.prefers(q(it.instruction), it.a, it.b)),
  };
}

/**
 * The settings a resumed run must share with the run it continues: whatever decides the data and the
 * evaluation. Commands (servers, trainer, judge) may change, so a broken one can be fixed and the run
 * continued; iterations may grow.
 */
function fingerprint(config: ExternalConfig): Record<string, unknown> {
  return {
    baseModel: config.baseModel,
    prompts: createHash("sha256").update(JSON.stringify(config.prompts)).digest("hex"),
    queriesPerIteration: config.queriesPerIteration,
    seed: config.seed,
    build: { ...config.build, concurrency: undefined, timeoutMs: undefined, retries: undefined },
    eval:
      config.eval === null
        ? null
        : {
            prompts: createHash("sha256").update(JSON.stringify(config.eval.prompts)).digest("hex"),
            judge: config.eval.judge,
            maxTokens: config.eval.maxTokens,
            referencesPath: config.eval.referencesPath,
          },
  };
}

function firstDifference(a: unknown, b: unknown, path = ""): string | null {
  if (JSON.stringify(a) === JSON.stringify(b)) return null;
  if (typeof a === "object" && a !== null && typeof b === "object" && b !== null && !Array.isArray(a)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) {
      const d = firstDifference(
        (a as Record<string, unknown>)[k],
        (b as Record<string, unknown>)[k],
        path === "" ? k : `${path}.${k}`,
      );
      if (d !== null) return d;
    }
  }
  return `${path || "(root)"}: was ${JSON.stringify(a)}, now ${JSON.stringify(b)}`;
}

/** Checks everything that can be checked before any process starts. */
export function validateExternalConfig(config: ExternalConfig): void {
  const need = config.iterations * config.queriesPerIteration;
  if (config.prompts.length < need)
    throw new UserError(
      `--prompts ${config.promptsPath}: ${config.iterations} iteration(s) of ${config.queriesPerIteration} fresh ` +
        `queries need ${need} prompts, the file has ${config.prompts.length}`,
    );
  if ((config.policy.serve === null) === (config.policy.endpoint === null))
    throw new UserError("give exactly one of --policy-serve and --policy-endpoint");
  if (config.eval?.judge === "llm" && config.judge === null)
    throw new UserError("--judge llm: give --judge-serve (with --judge-model) or --judge-endpoint");
  if (
    config.judge !== null &&
    config.judge.serve !== null &&
    config.judge.model === null &&
    config.judge.serve.includes("{model}")
  )
    throw new UserError("--judge-serve uses {model}: give --judge-model");
  // Every template is filled once with sample values, so a typo in a placeholder stops the run here.
  const serveValues = { model: "m", gguf: "g", port: "1", iteration: "1", seed: "1", selfsteer: "s" };
  for (const [flag, template] of [
    ["--policy-serve", config.policy.serve],
    ["--judge-serve", config.judge?.serve ?? null],
  ] as const) {
    if (template === null) continue;
    fillTemplate(template, serveValues, flag);
    if (!template.includes("{port}"))
      throw new UserError(`${flag}: the template must use {port} (the server is looked for on a free port)`);
  }
  fillTemplate(
    config.train.command,
    {
      data: "d",
      data_dir: "d",
      config: "c",
      model: "m",
      base: "b",
      output: "o",
      iteration: "1",
      seed: "1",
      selfsteer: "s",
      loss: "l",
      beta: "1",
      lr: "1",
      epochs: "1",
    },
    "--train",
  );
  if (config.train.format === "records" && config.train.command.includes("{config}"))
    throw new UserError(
      "--train uses {config}, but --train-format records has no training config (use llamafactory-sso or trl)",
    );
}

/** Runs (or resumes) the external online loop; returns the report (also written to report.json/md). */
export async function runExternal(
  config: ExternalConfig,
  onEvent: (e: ExternalEvent) => void = () => {},
): Promise<ExternalReport> {
  validateExternalConfig(config);
  const runDir = config.runDir;
  mkdirSync(runDir, { recursive: true });
  const lookup =
    config.eval?.judge === "gold" ? worldEvalLookup(config.eval.prompts, config.eval.promptsPath) : null;
  const references = config.eval?.referencesPath != null ? readAnswerFile(config.eval.referencesPath) : null;
  const configPath = join(runDir, "config.json");
  const print = fingerprint(config);
  if (existsSync(configPath)) {
    const before = (JSON.parse(readFileSync(configPath, "utf8")) as { fingerprint?: unknown }).fingerprint;
    const diff = firstDifference(before, print);
    if (diff !== null)
      throw new UserError(
        `${runDir}: this run was started with other settings (${diff}); rerun with the same flags to resume, or use a new --out`,
      );
  } else
    writeJsonAtomic(configPath, {
      fingerprint: print,
      config: {
        ...config,
        prompts: undefined,
        eval: config.eval === null ? null : { ...config.eval, prompts: undefined },
      },
    });

  const book = new ProcessBook(runDir);
  const stages = new ResumableJsonlWriter<{ key: string; at: string; result?: unknown }>(
    join(runDir, "stages.jsonl"),
    (s) => s.key,
  );
  const stageResults = loadStageResults(join(runDir, "stages.jsonl"));
  const judgeCache = config.judge === null ? null : new JudgmentCache(join(runDir, "judgments.jsonl"));
  // Interrupted by a signal: stop the children first, then let the signal end this process as usual.
  const onSignal = (signal: NodeJS.Signals) => {
    book.signalAll("SIGTERM");
    setTimeout(
      () => {
        book.signalAll("SIGKILL");
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
        process.kill(process.pid, signal);
      },
      Math.min(config.stopGraceMs, 5000),
    );
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    if (config.policy.endpoint !== null && config.iterations > 1)
      onEvent({
        type: "note",
        text: `--policy-endpoint is fixed: every iteration samples ${config.policy.endpoint}; unless that server loads each trained model itself, use --policy-serve`,
      });
    const orphans = await book.reapOrphans(config.stopGraceMs);
    for (const c of orphans)
      onEvent({ type: "note", text: `stopped a process left by an interrupted run: ${c}` });
    const done = (key: string) => stages.has(key);
    const finish = (key: string, stage: string, iteration: number, result?: unknown) => {
      stages.append({ key, at: new Date().toISOString(), ...(result === undefined ? {} : { result }) });
      if (result !== undefined) stageResults.set(key, result);
      onEvent({ type: "stage", stage, iteration, state: "done" });
    };
    const skipped = (stage: string, iteration: number) =>
      onEvent({ type: "stage", stage, iteration, state: "skipped" });
    const modelPath = (m: number) => (m === 0 ? config.baseModel : resolve(runDir, `iter-${m}`, "model"));
    const answersPath = (m: number) => join(runDir, "eval", `model-${m}`, "answers.jsonl");

    for (let k = 1; k <= config.iterations + 1; k++) {
      const m = k - 1;
      const model = modelPath(m);
      const wantAnswers = config.eval !== null && !done(`answer:${m}`);
      const wantBuild = k <= config.iterations && !done(`build:${k}`);
      if (wantAnswers || wantBuild) {
        await withPolicy(config, book, k, model, onEvent, async (policy) => {
          if (wantAnswers && config.eval !== null) {
            onEvent({ type: "stage", stage: "answer", iteration: k, state: "start", detail: `model ${m}` });
            await answerPrompts(policy, config, config.eval.prompts, answersPath(m), k);
            finish(`answer:${m}`, "answer", k);
          } else if (config.eval !== null) skipped("answer", k);
          if (wantBuild) {
            onEvent({ type: "stage", stage: "build", iteration: k, state: "start" });
            const summary = await buildIteration(policy, config, k);
            finish(`build:${k}`, "build", k, summary);
          } else if (k <= config.iterations) skipped("build", k);
        });
      } else {
        if (config.eval !== null) skipped("answer", k);
        if (k <= config.iterations) skipped("build", k);
      }

      if (config.eval !== null) {
        if (!done(`judge:${m}`)) {
          onEvent({ type: "stage", stage: "judge", iteration: k, state: "start", detail: `model ${m}` });
          const evaluation = await withJudge(config, book, k, judgeCache, lookup, (judge) =>
            judgeModel(judge, config, m, answersPath, references, lookup),
          );
          finish(`judge:${m}`, "judge", k, evaluation);
        } else skipped("judge", k);
      }

      if (k > config.iterations) break;
      const bundleDir = join(runDir, `iter-${k}`, "train-data");
      const output = resolve(runDir, `iter-${k}`, "model");
      if (!done(`export:${k}`)) {
        onEvent({ type: "stage", stage: "export", iteration: k, state: "start" });
        const records = readRecords(join(runDir, `iter-${k}`, "records.jsonl")).rows.map((r) => r.value);
        if (records.length === 0)
          throw new StageError(
            "export",
            k,
            "the filters dropped every record of this iteration; nothing to train on",
          );
        const bundle = writeBundle(records, bundleDir, config.train.format, {
          ...config.train.settings,
          model,
          outputDir: output,
        });
        finish(`export:${k}`, "export", k, {
          data: bundle.data,
          config: bundle.config,
          records: bundle.records,
        });
      } else skipped("export", k);
      if (!done(`train:${k}`)) {
        const bundle = stageResults.get(`export:${k}`) as { data: string; config: string | null };
        const command = fillTemplate(
          config.train.command,
          {
            data: resolve(bundle.data),
            data_dir: resolve(bundleDir),
            config: bundle.config === null ? "" : resolve(bundle.config),
            model,
            base: config.baseModel,
            output,
            iteration: String(k),
            seed: String(config.seed + k),
            selfsteer: config.selfsteer,
            loss: config.train.settings.loss ?? "ipo",
            beta: String(config.train.settings.beta ?? 0.2),
            lr: String(config.train.settings.learningRate ?? 5e-7),
            epochs: String(config.train.settings.epochs ?? 1),
          },
          "--train",
        );
        onEvent({ type: "stage", stage: "train", iteration: k, state: "start", detail: command });
        await runCommand(book, "train", k, command);
        if (!existsSync(output) || readdirSync(output).length === 0)
          throw new StageError(
            "train",
            k,
            `the trainer exited 0 but wrote nothing to ${output} ({output}): ${command}`,
          );
        finish(`train:${k}`, "train", k, { output });
      } else skipped("train", k);
    }

    const report: ExternalReport = {
      runDir,
      iterations: config.iterations,
      builds: Array.from(
        { length: config.iterations },
        (_, i) => stageResults.get(`build:${i + 1}`) as IterationBuild,
      ).filter((b) => b !== undefined),
      evaluations:
        config.eval === null
          ? []
          : Array.from(
              { length: config.iterations + 1 },
              (_, m) => stageResults.get(`judge:${m}`) as ModelEvaluation,
            ),
      finalModel: modelPath(config.iterations),
    };
    writeJsonAtomic(join(runDir, "report.json"), report);
    writeFileAtomic(join(runDir, "report.md"), reportMarkdown(report));
    return report;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    stages.close();
    judgeCache?.close();
    book.close();
  }
}

function loadStageResults(path: string): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (!existsSync(path)) return out;
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (line.trim() === "") continue;
    try {
      const s = JSON.parse(line) as { key: string; result?: unknown };
      if (s.result !== undefined) out.set(s.key, s.result);
    } catch {
      // A torn last line: the writer drops it; that stage is redone.
    }
  }
  return out;
}

/** Serves model `model` for iteration k (or uses the fixed endpoint), runs `work`, stops the server. */
async function withPolicy(
  config: ExternalConfig,
  book: ProcessBook,
  k: number,
  model: string,
  onEvent: (e: ExternalEvent) => void,
  work: (policy: OpenAIPolicy) => Promise<void>,
): Promise<void> {
  let server: ManagedServer | null = null;
  let endpoint = config.policy.endpoint;
  if (config.policy.serve !== null) {
    const port = await freePort();
    const command = fillTemplate(
      config.policy.serve,
      {
        model,
        gguf: join(model, "model.gguf"),
        port: String(port),
        iteration: String(k),
        seed: String(config.seed),
        selfsteer: config.selfsteer,
      },
      "--policy-serve",
    );
    onEvent({ type: "stage", stage: "serve-policy", iteration: k, state: "start", detail: command });
    server = await ManagedServer.start(
      book,
      "serve-policy",
      k,
      command,
      `http://127.0.0.1:${port}/v1`,
      config.healthTimeoutMs,
      config.stopGraceMs,
    );
    endpoint = server.url;
  }
  try {
    const modelName = config.policy.modelName ?? (server !== null ? await server.modelName() : null);
    if (modelName === null) throw new UserError("--policy-model-name: required with --policy-endpoint");
    const policy = new OpenAIPolicy({
      endpoints: [endpoint ?? ""],
      model: modelName,
      apiKey: config.policy.apiKey,
      concurrency: config.build.concurrency,
      timeoutMs: config.build.timeoutMs,
      maxRetries: config.build.retries,
      jitterSeed: config.seed,
    });
    await work(policy);
  } finally {
    await server?.stop(config.stopGraceMs);
  }
}

/** Starts the judge (if it has a template), runs `work` with it, stops it. */
async function withJudge<T>(
  config: ExternalConfig,
  book: ProcessBook,
  k: number,
  cache: JudgmentCache | null,
  lookup: Map<string, WorldQuery> | null,
  work: (judge: BatchJudge) => Promise<T>,
): Promise<T> {
  if (config.eval?.judge === "gold" && lookup !== null) return work(goldBatchJudge(lookup));
  const j = config.judge as JudgeServing;
  let server: ManagedServer | null = null;
  let endpoint = j.endpoint;
  if (j.serve !== null) {
    const port = await freePort();
    const command = fillTemplate(
      j.serve,
      {
        model: j.model ?? "",
        gguf: join(j.model ?? "", "model.gguf"),
        port: String(port),
        iteration: String(k),
        seed: String(config.seed),
        selfsteer: config.selfsteer,
      },
      "--judge-serve",
    );
    server = await ManagedServer.start(
      book,
      "serve-judge",
      k,
      command,
      `http://127.0.0.1:${port}/v1`,
      config.healthTimeoutMs,
      config.stopGraceMs,
    );
    endpoint = server.url;
  }
  try {
    const modelName = j.modelName ?? (server !== null ? await server.modelName() : null);
    if (modelName === null) throw new UserError("--judge-model-name: required with --judge-endpoint");
    const policy = new OpenAIPolicy({
      endpoints: [endpoint ?? ""],
      model: modelName,
      apiKey: j.apiKey,
      concurrency: config.build.concurrency,
      timeoutMs: config.build.timeoutMs,
      maxRetries: config.build.retries,
      jitterSeed: config.seed,
    });
    const judge = new LlmJudge({
      policy,
      model: modelName,
      seed: config.seed,
      maxRequests: j.maxRequests,
      maxTokens: j.maxTokens,
      ...(cache === null ? {} : { cache }),
    });
    return await work(judge);
  } catch (err) {
    if (err instanceof StageError) throw err;
    throw new StageError("judge", k, `judge endpoint ${endpoint}: ${(err as Error).message}`);
  } finally {
    await server?.stop(config.stopGraceMs);
  }
}

/** The policy's answers to the evaluation prompts (greedy, no system prompt), appended by id. */
async function answerPrompts(
  policy: OpenAIPolicy,
  config: ExternalConfig,
  prompts: readonly EvalPrompt[],
  path: string,
  k: number,
): Promise<void> {
  mkdirSync(join(path, ".."), { recursive: true });
  const writer = new ResumableJsonlWriter<{ id: string; instruction: string; output: string }>(
    path,
    (a) => a.id,
  );
  try {
    const todo = prompts.filter((p) => !writer.has(p.id));
    const chunk = Math.max(1, config.build.concurrency * 2);
    for (let i = 0; i < todo.length; i += chunk) {
      const batch = todo.slice(i, i + chunk);
      const answers = await policy.generate(
        batch.map((p) => ({
          messages: [{ role: "user" as const, content: p.prompt }],
          temperature: 0,
          topP: 1,
          maxTokens: config.eval?.maxTokens ?? 256,
          n: 1,
          seed: config.seed,
        })),
      );
      batch.forEach((p, j) => {
        writer.append({ id: p.id, instruction: p.prompt, output: answers[j]?.[0]?.text ?? "" });
      });
    }
  } catch (err) {
    throw new StageError("answer", k, `policy endpoint: ${(err as Error).message}`);
  } finally {
    writer.close();
  }
}

/** Builds iteration k's records with `policy` on its slice of the prompts (resumable by query id). */
async function buildIteration(
  policy: OpenAIPolicy,
  config: ExternalConfig,
  k: number,
): Promise<IterationBuild> {
  const dir = join(config.runDir, `iter-${k}`);
  mkdirSync(dir, { recursive: true });
  const out = join(dir, "records.jsonl");
  const queries = config.prompts.slice((k - 1) * config.queriesPerIteration, k * config.queriesPerIteration);
  const writer = openRecordWriter(out);
  const dropLog = openDropLog(dropLogPath(out));
  try {
    await buildRecords(policy, queries, {
      seed: config.seed + 1000 * k,
      catalog: DEFAULT_CATALOG,
      featureCount: config.build.featureCount,
      concisionRate: config.build.concisionRate,
      principles: config.build.principles,
      temperature: config.build.temperature,
      topP: config.build.topP,
      maxTokens: config.build.maxTokens,
      batchSize: config.build.concurrency,
      parallelBatches: 2,
      writer,
      dropLog,
    });
  } catch (err) {
    const cause = err instanceof BuildInterruptedError ? err.cause : err;
    throw new StageError("build", k, `policy endpoint: ${(cause as Error).message}`);
  } finally {
    writer.close();
    dropLog.close();
  }
  // Counted from the files, so a resumed build reports the whole iteration, not only its last part.
  const records = readRecords(out).rows.map((r) => r.value);
  const drops = existsSync(dropLogPath(out))
    ? readFileSync(dropLogPath(out), "utf8")
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as { reason: string })
    : [];
  const counts: Record<string, number> = {};
  for (const d of drops) counts[d.reason] = (counts[d.reason] ?? 0) + 1;
  return {
    iteration: k,
    kept: records.length,
    dropped: drops.length,
    drops: counts,
    featureFallbacks: records.filter((r) => r.meta?.featureSource === "random").length,
    truncated: records.reduce((n, r) => n + (r.meta?.truncated.length ?? 0), 0),
  };
}

/** Judges model m: its answers against the references (or model 0's), scores, exact match, signal. */
async function judgeModel(
  judge: BatchJudge,
  config: ExternalConfig,
  m: number,
  answersPath: (m: number) => string,
  references: AnswerEntry[] | null,
  lookup: Map<string, WorldQuery> | null,
): Promise<ModelEvaluation> {
  const ev = config.eval;
  if (ev === null) throw new Error("judgeModel without evaluation");
  const read = (path: string) => new Map(readAnswerFile(path).map((a) => [a.id, a.text]));
  const answers = read(answersPath(m));
  const base = m === 0 ? null : read(answersPath(0));
  const refById = references === null ? null : new Map(references.map((r) => [r.id, r.text]));
  const refByInstruction =
    references === null ? null : new Map(references.map((r) => [r.instruction, r.text]));
  const items = ev.prompts.map((p) => {
    const answer = answers.get(p.id) ?? "";
    // Against the given references, else against the base model's answers (model 0 itself is not compared).
    const reference =
      refById !== null
        ? (refById.get(p.id) ?? refByInstruction?.get(p.prompt))
        : (base?.get(p.id) ?? undefined);
    return {
      instruction: p.prompt,
      answer,
      ...(reference === undefined ? {} : { reference }),
      ...(p.gold === undefined ? {} : { gold: p.gold }),
    };
  });
  const report = await evaluateJudged(judge, items);
  if (lookup !== null) {
    // The world knows its own exact answers; its verdict replaces text extraction.
    const exact = ev.prompts.flatMap((p) => {
      const q = lookup.get(p.prompt);
      const v = q === undefined ? null : worldJudge.exactMatch(q, answers.get(p.id) ?? "");
      return v === null ? [] : [v ? 1 : 0];
    });
    report.exactMatch = exact.length > 0 ? exact.reduce((s, x) => s + x, 0) / exact.length : null;
    report.exactCount = exact.length;
  }
  if (references === null && m === 0) {
    // Model 0 against its own answers: the win rates are 0.5 by definition.
    report.winRate = 0.5;
    report.winRateLC = 0.5;
  }
  let signal: SignalReport | null = null;
  const pairsPath = join(config.runDir, `iter-${m + 1}`, "records.jsonl");
  if (config.judge !== null && config.judge.signalPairs > 0 && ev.judge === "llm" && existsSync(pairsPath)) {
    const records = readRecords(pairsPath)
      .rows.map((r) => r.value)
      .slice(0, config.judge.signalPairs);
    signal = await signalAccuracy(judge, records);
  }
  return {
    judge: judge instanceof LlmJudge ? judge.stats() : null,
    model: m,
    path: m === 0 ? config.baseModel : resolve(config.runDir, `iter-${m}`, "model"),
    report,
    signal,
  };
}

function fmt(v: number | null | undefined, digits = 3): string {
  return v === null || v === undefined ? "—" : v.toFixed(digits);
}

/** The report as a Markdown table. */
export function reportMarkdown(report: ExternalReport): string {
  const lines = [
    `# External online SSO: ${report.runDir}`,
    "",
    "| model | score | win | LC win | exact | length | signal acc (its pairs) | records kept | judge answers (unreadable) |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  const rows = Math.max(report.evaluations.length, report.iterations + 1);
  for (let m = 0; m < rows; m++) {
    const e = report.evaluations[m];
    const b = report.builds[m];
    lines.push(
      `| ${m} | ${fmt(e?.report.score)} | ${fmt(e?.report.winRate)} | ${fmt(e?.report.winRateLC)} | ${fmt(e?.report.exactMatch)} | ` +
        `${e === undefined ? "—" : e.report.meanLength.toFixed(0)} | ${fmt(e?.signal?.accuracy)} | ${b === undefined ? "—" : b.kept} | ` +
        `${e?.judge == null ? "—" : `${e.judge.requested + e.judge.cached} (${e.judge.unparsed})`} |`,
    );
  }
  lines.push("", `Final model: ${report.finalModel}`, "");
  return lines.join("\n");
}
