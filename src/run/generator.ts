/**
 * The generator form of SSO in the online loop (docs/algorithm.md, "The generator form"): per iteration, a
 * copy of the policy (its iteration k-1 weights) trains on the SSO records' two steering pairs plus SFT
 * terms, then samples the policy's pairs: y+ under each record's p+ and y- under its p-. The policy
 * itself later trains with plain DPO on those pairs (src/run/online.ts). Every stage writes under
 * iter-k/ and is read back when present, so a kill at any point and the same command continue:
 *   generator-reference.json   the frozen reference of the generator (k-1 weights, pos and neg pairs)
 *   generator/                 the generator's training run (resumable at step boundaries)
 *   generated.jsonl            the generated pairs (appended per batch, resumable by record id)
 *   generated.drops.jsonl      records whose generated pair the filters dropped
 *   generated.done.json        written last: the generation is complete
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { LocalPolicy } from "../policy/local.js";
import { requestSeed } from "../sso/builder.js";
import { DROP_REASONS, type DropReason, emptyDropCounts, filterRecord } from "../sso/filters.js";
import { type ObjectiveConfig, objectiveConfigSchema } from "../sso/objective.js";
import { openDropLog, openRecordWriter, readRecords, type SsoRecord } from "../sso/records.js";
import { type RecordScores, requiredKeys, runPreferenceTraining, scoreRecords } from "../train/preference.js";
import { writeJsonAtomic } from "../util/fsio.js";
import type { OnlineConfig, OnlineSession } from "./online.js";
import { meanMetrics } from "./step-metrics.js";

/** The generator methods: the full form and its two ablations (docs/protocol.md, "What is compared"). */
export const GENERATOR_METHODS = ["generator", "generator-pos", "generator-neg"] as const;
/** One of GENERATOR_METHODS. */
export type GeneratorMethod = (typeof GENERATOR_METHODS)[number];

/** Whether a method name is one of the generator methods. */
export function isGeneratorMethod(method: string): method is GeneratorMethod {
  return (GENERATOR_METHODS as readonly string[]).includes(method);
}

/** The paper's settings of the generator form: DPO with beta 0.1 for both models, gamma 0.1. */
export const GENERATOR_BETA = 0.1;
/** gamma, the weight of the generator's SFT terms. */
export const GENERATOR_SFT_WEIGHT = 0.1;

/**
 * The generator's objective: L+ + L- (`generator`), L+ only (`generator-pos`) or L- only
 * (`generator-neg`), with B = DPO, beta 0.1 and gamma 0.1.
 */
export function generatorObjective(method: GeneratorMethod): ObjectiveConfig {
  return objectiveConfigSchema.parse({
    loss: "dpo",
    beta: GENERATOR_BETA,
    generator: {
      pos: method !== "generator-neg",
      neg: method !== "generator-pos",
      sftWeight: GENERATOR_SFT_WEIGHT,
    },
  });
}

/** Where and how generatePairs samples and writes. */
export interface GeneratePairsOptions {
  /** Directory of the files; `stem` names them: <stem>.jsonl, <stem>.drops.jsonl, <stem>.done.json. */
  dir: string;
  stem: string;
  /** Request seeds derive from (seed, record id, role), as the builder's do. */
  seed: number;
  policySeed: number;
  temperature: number;
  topP: number;
  maxTokens: number;
  genBatch: number;
}

/** What a finished generation holds. */
export interface GeneratedPairs {
  records: SsoRecord[];
  drops: Record<string, number>;
  path: string;
}

/**
 * Samples, with the model's current weights (the trained generator), a new y+ under each record's p+
 * and a new y- under its p-; y0 stays the record's own (the policy's plain answer, which the filters
 * and the on-policy gap compare with). The request seeds are the builder's for the same roles
 * ("chosen", "rejected"), so the generator and the policy that built the records draw with the same
 * random numbers. The filters of src/sso/filters.ts apply as in the builder; a dropped record is
 * logged by reason. Appended per batch and resumable by record id; once done, later calls read back.
 */
export async function generatePairs(
  session: OnlineSession,
  records: readonly SsoRecord[],
  o: GeneratePairsOptions,
  onProgress?: (done: number, total: number) => void,
): Promise<GeneratedPairs> {
  const path = join(o.dir, `${o.stem}.jsonl`);
  const dropsPath = join(o.dir, `${o.stem}.drops.jsonl`);
  const donePath = join(o.dir, `${o.stem}.done.json`);
  if (!existsSync(donePath)) {
    mkdirSync(o.dir, { recursive: true });
    const writer = openRecordWriter(path);
    const dropLog = openDropLog(dropsPath);
    try {
      const pending = records.filter((r) => !writer.has(r.id) && !dropLog.has(r.id));
      let done = records.length - pending.length;
      onProgress?.(done, records.length);
      const policy = new LocalPolicy(session.model, session.tokenizer, {
        maxBatch: o.genBatch,
        seed: o.policySeed,
      });
      const request = (r: SsoRecord, role: "chosen" | "rejected") => ({
        messages: [
          { role: "system" as const, content: role === "chosen" ? r.p_system : r.n_system },
          { role: "user" as const, content: r.instruction },
        ],
        temperature: o.temperature,
        topP: o.topP,
        maxTokens: o.maxTokens,
        n: 1,
        seed: requestSeed(o.seed, r.id, role),
      });
      for (let start = 0; start < pending.length; start += o.genBatch) {
        const batch = pending.slice(start, start + o.genBatch);
        const answers = await policy.generate(
          batch.flatMap((r) => [request(r, "chosen"), request(r, "rejected")]),
        );
        batch.forEach((r, i) => {
          const { kept, reason } = filterRecord({
            ...r,
            chosen: answers[2 * i]?.[0]?.text ?? "",
            rejected: answers[2 * i + 1]?.[0]?.text ?? "",
          });
          if (kept !== null) writer.append(kept);
          else if (reason !== null) dropLog.append({ id: r.id, reason });
        });
        done += batch.length;
        onProgress?.(done, records.length);
      }
    } finally {
      writer.close();
      dropLog.close();
    }
    writeJsonAtomic(donePath, { total: records.length, drops: countDrops(dropsPath) });
  }
  const summary = JSON.parse(readFileSync(donePath, "utf8")) as { drops?: Record<string, number> };
  const kept = existsSync(path) ? readRecords(path).rows.map((r) => r.value) : [];
  return { records: kept, drops: summary.drops ?? {}, path };
}

/** Drops by reason in a drop log (every reason present, zero when unused). */
function countDrops(path: string): Record<string, number> {
  const counts: Record<string, number> = emptyDropCounts();
  if (!existsSync(path)) return counts;
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (line.trim() === "") continue;
    const reason = (JSON.parse(line) as { reason: string }).reason;
    if ((DROP_REASONS as readonly string[]).includes(reason)) counts[reason as DropReason]++;
  }
  return counts;
}

/** Progress of the generator stages, as the online loop reports it. */
export type GeneratorProgress = (stage: string, done?: number, total?: number) => void;

/** What the generator stages of one iteration produced. */
export interface GeneratorStageResult {
  /** The generated pairs the policy trains on. */
  pairs: GeneratedPairs;
  /** Mean of the generator's per-step training metrics (its loss/steer, loss/sft, p_/n_ rewards). */
  train: Record<string, number> | null;
}

/**
 * The generator stages of iteration k, entered with the policy's iteration k-1 weights in the session
 * and leaving the generator's weights there (the caller reloads k-1 before training the policy):
 * freeze the reference of the generator on the records' steering pairs, train the generator into
 * `<dir>/generator`, then sample the pairs into `<dir>/generated.jsonl`. `warn` hears of records
 * whose sequences lose part of their system prompt to --max-len.
 */
export async function runGeneratorStages(
  session: OnlineSession,
  config: OnlineConfig & { method: GeneratorMethod },
  k: number,
  dir: string,
  records: readonly SsoRecord[],
  progress: GeneratorProgress,
  warn?: (line: string) => void,
): Promise<GeneratorStageResult> {
  const objective = generatorObjective(config.method);
  const seqOptions = { maxLen: config.maxLen, microBatch: config.microBatch };
  const refPath = join(dir, "generator-reference.json");
  const frozenReference = (): RecordScores[] => {
    if (existsSync(refPath)) return JSON.parse(readFileSync(refPath, "utf8")) as RecordScores[];
    progress("generator-reference");
    const scores = scoreRecords(
      session.model,
      session.tokenizer,
      records,
      requiredKeys(objective),
      seqOptions,
    );
    writeJsonAtomic(refPath, scores);
    return scores;
  };
  // Called with the k-1 weights in the model (they are part of the run's fingerprint); a finished run
  // only loads its final weights, an interrupted one resumes from its last checkpoint.
  const trained = runPreferenceTraining(
    {
      out: join(dir, "generator"),
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
      reference: frozenReference,
      ...(warn === undefined ? {} : { onWarning: warn }),
    },
    {
      onStart: () => progress("generator-train"),
      onStep: (info) => progress("generator-train", info.step + 1, info.totalSteps),
    },
  );
  progress("generate");
  const pairs = await generatePairs(
    session,
    records,
    {
      dir,
      stem: "generated",
      seed: config.seed * 1000 + k,
      policySeed: config.seed + k,
      temperature: config.temperature,
      topP: config.topP,
      maxTokens: config.maxTokens,
      genBatch: config.genBatch,
    },
    (done, total) => progress("generate", done, total),
  );
  return {
    pairs,
    train: meanMetrics(trained.records.map((r) => ({ loss: r.loss, gradNorm: r.gradNorm, ...r.metrics }))),
  };
}
