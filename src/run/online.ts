/**
 * Online (iterative) SSO in the principle world, and the baselines it is compared with.
 *
 * For iteration k = 1..K, per method: draw fresh training queries; build records with the current
 * policy (feature identification, catalog principles, y+ / y- / y0, reference filters) — or, for
 * `offpolicy`, gold-labelled pairs written by the world's generator; freeze the reference (score the
 * records once with the current weights); train one epoch with the method's objective; evaluate on the
 * held-out queries; checkpoint. The generator methods insert two stages before the policy's training
 * (src/run/generator.ts). Every stage writes its result atomically under the run directory, so an
 * interrupted run resumes at the stage (and training step) where it stopped.
 *
 * Iteration 1's records are the same for every method that builds them from the base (same queries,
 * seeds and weights), so they are built once per seed, in <runDir>/shared/iter-1/, and read by all.
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { CHECKPOINT_FILES, loadCheckpoint } from "../engine/checkpoint.js";
import type { Kernels } from "../engine/kernels/types.js";
import { LlamaModel } from "../engine/model.js";
import { BpeTokenizer } from "../engine/tokenizer.js";
import { type EvalResult, evaluateAnswers } from "../eval/evaluate.js";
import { mean } from "../eval/metrics.js";
import { LocalPolicy } from "../policy/local.js";
import { buildRecords } from "../sso/builder.js";
import { type ObjectiveConfig, objectiveConfigSchema } from "../sso/objective.js";
import { type PreferenceRecord, recordFromPair } from "../sso/pairs.js";
import { openDropLog, openRecordWriter, readRecords, type SsoRecord } from "../sso/records.js";
import {
  type RecordScores,
  requiredKeys,
  runPreferenceTraining,
  scoreRecords,
  scoreResponses,
} from "../train/preference.js";
import { removeTempLeftovers } from "../train/run-dir.js";
import { UserError } from "../util/errors.js";
import { writeJsonAtomic } from "../util/fsio.js";
import { Rng } from "../util/rng.js";
import { offPolicyPairs } from "../world/corpus.js";
import { worldJudge } from "../world/judge.js";
import { evalQueries, trainQueries, type WorldQuery } from "../world/tasks.js";
import { GENERATOR_BETA, isGeneratorMethod, runGeneratorStages } from "./generator.js";
import { baseFingerprint, recordRunSettings } from "./run-settings.js";
import { meanMetrics } from "./step-metrics.js";

/** The methods of the paper's comparisons, in our world (docs/protocol.md, "What is compared"). */
export const METHODS = [
  "sso",
  "pbaa",
  "no-weight",
  "no-steer",
  "offpolicy",
  "generator",
  "generator-pos",
  "generator-neg",
] as const;
/** One method. */
export type Method = (typeof METHODS)[number];

/** Base losses the online loop offers (docs/algorithm.md: IPO in the paper's main tables). */
export const ONLINE_LOSSES = ["ipo", "dpo", "simpo"] as const;
/** One of ONLINE_LOSSES. */
export type OnlineLoss = (typeof ONLINE_LOSSES)[number];

/** Settings of an online run (per method; the run directory holds one sub-directory per method). */
export interface OnlineConfig {
  /** Directory of the base checkpoint (iteration 0). */
  baseModel: string;
  /** Run directory: <runDir>/<label>/iter-<k>/, the shared base evaluation and <runDir>/shared/. */
  runDir: string;
  method: Method;
  /** The run's directory name and its name in events and reports (default: the method). */
  label?: string;
  loss: OnlineLoss;
  beta: number;
  /** G_beta, the scale of the steering pairs (`sso.steerBeta`; default: the objective's, 0.1). */
  steerBeta?: number;
  iterations: number;
  seed: number;
  /** Fresh training queries per iteration. */
  queriesPerIteration: number;
  /** Held-out evaluation queries. */
  evalQueries: number;
  /** Sampling of y+, y-, y0 (docs/algorithm.md: temperature 0.7, top-p 0.8). */
  temperature: number;
  topP: number;
  maxTokens: number;
  /** Evaluation answers are greedy, up to this many tokens. */
  evalMaxTokens: number;
  /** Records per optimizer step, epochs per iteration, peak learning rate and the rest of the schedule. */
  batchSize: number;
  epochs: number;
  peakLr: number;
  warmupRatio: number;
  weightDecay: number;
  maxGradNorm: number;
  maxLen: number;
  microBatch: number;
  /** Save trainer state every this many steps (step-level resume). */
  saveEvery: number;
  /** Samples decoded together by the local policy. */
  genBatch: number;
}

/** One row of the report: the policy after `iteration` iterations (0 = the base). */
export interface IterationMetrics extends EvalResult {
  iteration: number;
  /** Share of this iteration's records where the gold judge prefers y+ to y- (null at iteration 0). */
  signalAccuracy: number | null;
  /** Mean per-token log-prob of y+ and y- under the plain prompt minus that of y0 (null at iteration 0). */
  onPolicyGap: number | null;
  onPolicyGapChosen: number | null;
  onPolicyGapRejected: number | null;
  /** Records trained on, and drops by reason. */
  records: number | null;
  drops: Record<string, number> | null;
  /** Mean training metrics of the objective over the iteration's steps (rewards/*, loss/*, sso/weight). */
  train: Record<string, number> | null;
  /**
   * Generator methods only: the SSO records the generator trained on (count, drops, signal accuracy)
   * and the mean of its own training metrics. The fields above then describe the generated pairs.
   */
  generator?: {
    records: number;
    drops: Record<string, number>;
    signalAccuracy: number;
    train: Record<string, number> | null;
  };
}

/** Progress events for the CLI; `method` is the run's label (the method, or a grid cell's name). */
export type OnlineEvent =
  | { type: "stage"; method: string; iteration: number; stage: string }
  | { type: "progress"; method: string; iteration: number; stage: string; done: number; total: number }
  | { type: "iteration"; method: string; metrics: IterationMetrics }
  /** Something the run goes on with but a user should know (a system prompt cut by --max-len). */
  | { type: "warning"; method: string; iteration: number; text: string };

/**
 * The policy's objective under each method (docs/algorithm.md, "Ablations" and "The generator form").
 * `steerBeta` sets G_beta where the method steers (sso, no-weight); undefined keeps the objective's
 * default. The generator methods' policy trains with plain DPO, beta 0.1, whatever `loss` and `beta`.
 */
export function objectiveFor(
  method: Method,
  loss: OnlineLoss,
  beta: number,
  steerBeta?: number,
): ObjectiveConfig {
  const g = steerBeta === undefined ? {} : { steerBeta };
  switch (method) {
    case "sso":
      return objectiveConfigSchema.parse({ loss, beta, sso: { weight: "sigmoid", steer: true, ...g } });
    case "no-weight":
      return objectiveConfigSchema.parse({ loss, beta, sso: { weight: "none", steer: true, ...g } });
    case "no-steer":
      return objectiveConfigSchema.parse({ loss, beta, sso: { weight: "sigmoid", steer: false } });
    case "pbaa":
    case "offpolicy":
      return objectiveConfigSchema.parse({ loss, beta });
    case "generator":
    case "generator-pos":
    case "generator-neg":
      return objectiveConfigSchema.parse({ loss: "dpo", beta: GENERATOR_BETA });
  }
}

/** Shared state of a process running online iterations: one model whose weights are swapped in. */
export class OnlineSession {
  readonly model: LlamaModel;
  readonly tokenizer: BpeTokenizer;
  /** Hash of the base's config and weights, and the kernel backend: what every run's settings name. */
  readonly baseFingerprint: string;
  readonly backend: string;
  private readonly baseTensors: ReturnType<typeof loadCheckpoint>["tensors"];

  /** Opens the base checkpoint once; every method and iteration reuses the same model buffers. */
  constructor(
    readonly baseModel: string,
    kernels: Kernels,
  ) {
    const ckpt = loadCheckpoint(baseModel, { scoreHead: false });
    if (ckpt.tokenizerJson === undefined)
      throw new UserError(`${baseModel}: no ${CHECKPOINT_FILES.tokenizer}`);
    this.tokenizer = BpeTokenizer.fromJSON(ckpt.tokenizerJson, join(baseModel, CHECKPOINT_FILES.tokenizer));
    this.model = new LlamaModel(ckpt.config, kernels);
    this.baseTensors = ckpt.tensors;
    this.model.loadTensors(this.baseTensors.values());
    this.baseFingerprint = baseFingerprint(this.model); // after loading: it hashes the weights held
    this.backend = kernels.backend;
  }

  /** Puts the base weights back. */
  loadBase(): void {
    this.model.loadTensors(this.baseTensors.values());
  }

  /** Loads the weights of a checkpoint written by this loop. */
  loadWeights(dir: string): void {
    this.model.loadTensors(loadCheckpoint(dir, { scoreHead: false }).tensors.values());
  }
}

/** Greedy answers of the current weights to held-out queries, without any system prompt. */
export async function answerQueries(
  session: OnlineSession,
  queries: readonly WorldQuery[],
  options: { genBatch: number; maxTokens: number },
): Promise<string[]> {
  const policy = new LocalPolicy(session.model, session.tokenizer, { maxBatch: options.genBatch });
  const out = await policy.generate(
    queries.map((q, i) => ({
      messages: [{ role: "user" as const, content: q.prompt }],
      temperature: 0,
      topP: 1,
      maxTokens: options.maxTokens,
      seed: i,
    })),
  );
  return out.map((g) => g[0].text);
}

/** Where and how buildPolicyRecords samples and writes. */
export interface PolicyRecordsOptions {
  /** Directory of the files; `stem` names them: <stem>.jsonl, <stem>.done.json, and the drop log. */
  dir: string;
  stem: string;
  dropLogName: string;
  seed: number;
  policySeed: number;
  temperature: number;
  topP: number;
  maxTokens: number;
  genBatch: number;
}

/**
 * SSO records built by the current weights for `queries` (docs/algorithm.md, "One record per query"), appended to a
 * resumable JSONL file; once finished, the summary is saved beside it and later calls only read back.
 */
export async function buildPolicyRecords(
  session: OnlineSession,
  queries: readonly WorldQuery[],
  o: PolicyRecordsOptions,
  onProgress?: (done: number, total: number) => void,
): Promise<{ records: SsoRecord[]; drops: Record<string, number>; path: string }> {
  const path = join(o.dir, `${o.stem}.jsonl`);
  const donePath = join(o.dir, `${o.stem}.done.json`);
  if (!existsSync(donePath)) {
    mkdirSync(o.dir, { recursive: true });
    const writer = openRecordWriter(path);
    const dropLog = openDropLog(join(o.dir, o.dropLogName));
    try {
      const { summary } = await buildRecords(
        new LocalPolicy(session.model, session.tokenizer, { maxBatch: o.genBatch, seed: o.policySeed }),
        queries.map((q) => ({ id: q.id, prompt: q.prompt })),
        {
          seed: o.seed,
          temperature: o.temperature,
          topP: o.topP,
          maxTokens: o.maxTokens,
          featureMaxTokens: 16,
          batchSize: o.genBatch,
          writer,
          dropLog,
        },
        onProgress ? { onProgress: (done, total) => onProgress(done, total) } : {},
      );
      writeJsonAtomic(donePath, summary);
    } finally {
      writer.close();
      dropLog.close();
    }
  }
  const summary = JSON.parse(readFileSync(donePath, "utf8")) as { drops?: Record<string, number> };
  const records = existsSync(path) ? readRecords(path).rows.map((r) => r.value) : [];
  return { records, drops: summary.drops ?? {}, path };
}

/** Base answers and metrics, shared by every method of a run (computed once, then read back). */
async function baseEvaluation(
  session: OnlineSession,
  config: OnlineConfig,
  queries: readonly WorldQuery[],
): Promise<{ answers: string[]; metrics: IterationMetrics }> {
  const path = join(config.runDir, "base-eval.json");
  removeTempLeftovers(config.runDir);
  if (existsSync(path))
    return JSON.parse(readFileSync(path, "utf8")) as { answers: string[]; metrics: IterationMetrics };
  session.loadBase();
  const answers = await answerQueries(session, queries, {
    genBatch: config.genBatch,
    maxTokens: config.evalMaxTokens,
  });
  const metrics: IterationMetrics = {
    iteration: 0,
    ...evaluateAnswers(worldJudge, [...queries], answers, answers),
    signalAccuracy: null,
    onPolicyGap: null,
    onPolicyGapChosen: null,
    onPolicyGapRejected: null,
    records: null,
    drops: null,
    train: null,
  };
  writeJsonAtomic(path, { answers, metrics });
  return { answers, metrics };
}

/**
 * Runs (or resumes) one method's iterations and returns its metrics per iteration, iteration 0 being
 * the base. The caller owns the session (one per process), so several methods share its buffers.
 */
export async function runOnline(
  session: OnlineSession,
  config: OnlineConfig,
  onEvent: (event: OnlineEvent) => void = () => {},
): Promise<IterationMetrics[]> {
  const objective = objectiveFor(config.method, config.loss, config.beta, config.steerBeta);
  const label = config.label ?? config.method;
  // Before anything is read back: a finished stage counts only if it was made with these settings.
  recordRunSettings(config, session.baseFingerprint, session.backend);
  const held = evalQueries(config.evalQueries);
  const base = await baseEvaluation(session, config, held);
  const rows: IterationMetrics[] = [base.metrics];
  onEvent({ type: "iteration", method: label, metrics: base.metrics });
  const methodDir = join(config.runDir, label);
  let weightsAt = -1; // which iteration's weights the model holds (-1: unknown)
  const loadIteration = (j: number) => {
    if (j === 0) session.loadBase();
    else session.loadWeights(join(methodDir, `iter-${j}`, "model"));
    weightsAt = j;
  };
  for (let k = 1; k <= config.iterations; k++) {
    const dir = join(methodDir, `iter-${k}`);
    const metricsPath = join(dir, "metrics.json");
    if (existsSync(metricsPath)) {
      const done = JSON.parse(readFileSync(metricsPath, "utf8")) as IterationMetrics;
      rows.push(done);
      onEvent({ type: "iteration", method: label, metrics: done });
      continue;
    }
    // Start from the previous iteration's weights.
    if (weightsAt !== k - 1) loadIteration(k - 1);
    mkdirSync(dir, { recursive: true });
    removeTempLeftovers(dir); // of an interrupted run's atomic writes
    const queries = trainQueries(new Rng(config.seed).fork(`iteration-${k}`), config.queriesPerIteration);
    const byId = new Map(queries.map((q) => [q.id, q]));
    const signalOf = (pairs: ReadonlyArray<PreferenceRecord & { id?: string }>) =>
      mean(
        pairs.map((r) => {
          const q = byId.get(recordQueryId(r));
          return q ? worldJudge.prefers(q, r.chosen, r.rejected) : 0.5;
        }),
      );

    // 1. Data from the current policy (or the world's generator for offpolicy).
    onEvent({ type: "stage", method: label, iteration: k, stage: "build" });
    const built = await iterationRecords(session, config, k, dir, queries, onEvent);
    let { records, drops } = built;

    // 1b. Generator methods: a copy of the policy trains on the records' steering pairs and writes the
    // pairs the policy trains on; then the policy's k-1 weights come back.
    let generator: IterationMetrics["generator"];
    if (isGeneratorMethod(config.method)) {
      const stage = await runGeneratorStages(
        session,
        { ...config, method: config.method },
        k,
        dir,
        built.records as SsoRecord[], // policy-built records: the generator methods never use offpolicy's
        (name, done, total) =>
          onEvent(
            done === undefined || total === undefined
              ? { type: "stage", method: label, iteration: k, stage: name }
              : { type: "progress", method: label, iteration: k, stage: name, done, total },
          ),
        (text) => onEvent({ type: "warning", method: label, iteration: k, text: `generator: ${text}` }),
      );
      if (stage.pairs.records.length === 0)
        throw new UserError(
          `${stage.pairs.path}: iteration ${k} kept no generated pairs (see ${join(dir, "generated.drops.jsonl")})`,
        );
      generator = {
        records: built.records.length,
        drops: built.drops,
        signalAccuracy: signalOf(built.records),
        train: stage.train,
      };
      records = stage.pairs.records;
      drops = stage.pairs.drops;
      loadIteration(k - 1);
    }

    // 2. The frozen reference and the signal diagnostics, computed with the weights of iteration k-1.
    const seqOptions = { maxLen: config.maxLen, microBatch: config.microBatch };
    const keys = requiredKeys(objective);
    const refPath = join(dir, "reference.json");
    let reference: RecordScores[];
    let gap: { chosen: number; rejected: number; all: number };
    // For the generator methods these are the generated pairs: signal accuracy and the on-policy gap
    // are measured on the pairs the policy trains on (y0 is still the policy's own plain answer).
    if (existsSync(refPath)) {
      const saved = JSON.parse(readFileSync(refPath, "utf8")) as {
        reference: RecordScores[];
        gap: typeof gap;
      };
      reference = saved.reference;
      gap = saved.gap;
    } else {
      onEvent({ type: "stage", method: label, iteration: k, stage: "reference" });
      reference = scoreRecords(session.model, session.tokenizer, records, keys, seqOptions);
      gap = onPolicyGap(session, records, reference, seqOptions);
      writeJsonAtomic(refPath, { reference, gap });
    }
    const signal = signalOf(records);

    // 3. One epoch of training in a run directory (iter-k/model), resumable at step boundaries.
    onEvent({ type: "stage", method: label, iteration: k, stage: "train" });
    const trained = runPreferenceTraining(
      {
        out: join(dir, "model"),
        restartHint: `remove ${dir} to redo iteration ${k}`,
        model: session.model,
        tokenizer: session.tokenizer,
        records,
        options: {
          ...seqOptions,
          objective,
          batchSize: config.batchSize,
          epochs: config.epochs,
          peakLr: config.peakLr,
          warmupRatio: config.warmupRatio,
          maxGradNorm: config.maxGradNorm,
          seed: config.seed + k,
        },
        weightDecay: config.weightDecay,
        saveEvery: config.saveEvery,
        reference: () => reference,
        onWarning: (text) => onEvent({ type: "warning", method: label, iteration: k, text }),
      },
      {
        onStep: (info) =>
          onEvent({
            type: "progress",
            method: label,
            iteration: k,
            stage: "train",
            done: info.step + 1,
            total: info.totalSteps,
          }),
      },
    );
    const trainLog = trained.records.map((r) => ({ loss: r.loss, gradNorm: r.gradNorm, ...r.metrics }));
    weightsAt = k;

    // 4. Evaluation on the held-out queries.
    onEvent({ type: "stage", method: label, iteration: k, stage: "eval" });
    const answers = await answerQueries(session, held, {
      genBatch: config.genBatch,
      maxTokens: config.evalMaxTokens,
    });
    writeJsonAtomic(join(dir, "answers.json"), answers);
    const metrics: IterationMetrics = {
      iteration: k,
      ...evaluateAnswers(worldJudge, held, answers, base.answers),
      signalAccuracy: signal,
      onPolicyGap: gap?.all ?? null,
      onPolicyGapChosen: gap?.chosen ?? null,
      onPolicyGapRejected: gap?.rejected ?? null,
      records: records.length,
      drops,
      train: meanMetrics(trainLog),
      ...(generator === undefined ? {} : { generator }),
    };
    writeJsonAtomic(metricsPath, metrics);
    rows.push(metrics);
    onEvent({ type: "iteration", method: label, metrics });
  }
  return rows;
}

/** The query id a record was built for (records carry the world query id as their id). */
function recordQueryId(record: PreferenceRecord & { id?: string }): string {
  return record.id ?? "";
}

/** Records of iteration k: built by the policy (resumable JSONL), or the world's off-policy pairs. */
async function iterationRecords(
  session: OnlineSession,
  config: OnlineConfig,
  k: number,
  dir: string,
  queries: readonly WorldQuery[],
  onEvent: (event: OnlineEvent) => void,
): Promise<{ records: Array<PreferenceRecord & { id: string }>; drops: Record<string, number> }> {
  if (config.method === "offpolicy") {
    // Gold-labelled pairs written by the world's generator; y0 is still the policy's own plain answer,
    // so the on-policy gap of these pairs can be compared with SSO's.
    const pairs = offPolicyPairs(new Rng(config.seed).fork(`offpolicy-${k}`), queries);
    const policy = new LocalPolicy(session.model, session.tokenizer, {
      maxBatch: config.genBatch,
      seed: config.seed + k,
    });
    const raw = await policy.generate(
      pairs.map((p, i) => ({
        messages: [{ role: "user" as const, content: p.prompt }],
        temperature: config.temperature,
        topP: config.topP,
        maxTokens: config.maxTokens,
        seed: config.seed * 1000 + k * 100003 + i,
      })),
    );
    return {
      records: pairs.map((p, i) => ({ id: p.queryId, ...recordFromPair(p, raw[i][0].text) })),
      drops: {},
    };
  }
  // Iteration 1 starts from the base for every method: one build per seed, shared. A run directory
  // from before the sharing keeps reading its own copy.
  const own = k !== 1 || existsSync(join(dir, "records.done.json"));
  const recordsDir = own ? dir : join(config.runDir, "shared", "iter-1");
  removeTempLeftovers(recordsDir);
  const {
    records,
    drops,
    path: recordsPath,
  } = await buildPolicyRecords(
    session,
    queries,
    {
      dir: recordsDir,
      stem: "records",
      dropLogName: "drops.jsonl",
      seed: config.seed * 1000 + k,
      policySeed: config.seed + k,
      temperature: config.temperature,
      topP: config.topP,
      maxTokens: config.maxTokens,
      genBatch: config.genBatch,
    },
    (done, total) =>
      onEvent({
        type: "progress",
        method: config.label ?? config.method,
        iteration: k,
        stage: "build",
        done,
        total,
      }),
  );
  if (records.length === 0)
    throw new UserError(
      `${recordsPath}: iteration ${k} kept no records (see ${join(recordsDir, "drops.jsonl")})`,
    );
  return { records, drops };
}

/**
 * On-policy-ness of the pairs (the paper's Figure 4): per-token log-prob of y+ and y- under the plain
 * prompt, minus that of the policy's own plain answer y0, all under the weights that generated them.
 */
function onPolicyGap(
  session: OnlineSession,
  records: readonly PreferenceRecord[],
  reference: readonly RecordScores[],
  options: { maxLen: number; microBatch: number },
): { chosen: number; rejected: number; all: number } {
  const raw = scoreResponses(
    session.model,
    session.tokenizer,
    records.map((r) => ({ prompt: [{ role: "user" as const, content: r.instruction }], response: r.raw })),
    options,
  );
  const avg = (lp: number | undefined, n: number | undefined) => (lp ?? 0) / Math.max(1, n ?? 1);
  const dChosen = reference.map(
    (s, i) => avg(s.values.chosen, s.tokens.chosen) - raw[i].logprob / Math.max(1, raw[i].tokens),
  );
  const dRejected = reference.map(
    (s, i) => avg(s.values.rejected, s.tokens.rejected) - raw[i].logprob / Math.max(1, raw[i].tokens),
  );
  return { chosen: mean(dChosen), rejected: mean(dRejected), all: (mean(dChosen) + mean(dRejected)) / 2 };
}
