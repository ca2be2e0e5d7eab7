/**
 * The paper's offline claims in the principle world.
 * - Table 3 analog (`offlineTable`): from the base, one training run on SSO records built once by the
 *   base policy against one on the world's gold-labelled off-policy pairs (our UltraFeedback), same
 *   number of pairs, loss and schedule; evaluated like the online runs.
 * - Table 4 analog (`rewardModelTable`): a Bradley-Terry reward model trained on gold off-policy pairs
 *   (our Skywork) against one trained on those plus SSO pairs built by the base policy; evaluated on the
 *   held-out RewardBench-style suite.
 * Every stage is written under the run directory and reused when present, so a rerun resumes.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Kernels } from "../engine/kernels/types.js";
import { LlamaModel } from "../engine/model.js";
import { AdamW, decayMaskFromSpecs } from "../engine/optim.js";
import { evaluateAnswers } from "../eval/evaluate.js";
import { mean, stddev } from "../eval/metrics.js";
import { rewardBenchReport } from "../eval/rewardbench.js";
import { markdownTable } from "../eval/table.js";
import { objectiveConfigSchema } from "../sso/objective.js";
import {
  type PreferencePair,
  type PreferenceRecord,
  pairFromRecord,
  pairFromText,
  recordFromPair,
} from "../sso/pairs.js";
import { requiredKeys, scoreRecords, trainPreference } from "../train/preference.js";
import { scorePairs, trainRewardModel } from "../train/reward.js";
import { writeFileAtomic, writeJsonAtomic } from "../util/fsio.js";
import { Rng } from "../util/rng.js";
import { offPolicyPairs } from "../world/corpus.js";
import { worldJudge } from "../world/judge.js";
import { buildRewardBench, REWARDBENCH_SECTIONS } from "../world/rewardbench.js";
import { evalQueries, trainQueries, type WorldQuery } from "../world/tasks.js";
import { answerQueries, buildPolicyRecords, OnlineSession } from "./online.js";

/** Settings shared by both tables. */
export interface TableConfig {
  baseModel: string;
  runDir: string;
  seeds: number[];
  /** Training queries the SSO data (and the matching off-policy pairs) are built from. */
  queries: number;
  maxTokens: number;
  maxLen: number;
  microBatch: number;
  genBatch: number;
}

/** Settings of the offline table. */
export interface OfflineTableConfig extends TableConfig {
  loss: "ipo" | "dpo";
  beta: number;
  epochs: number;
  batchSize: number;
  peakLr: number;
  evalQueries: number;
}

/** Settings of the reward-model table. */
export interface RewardTableConfig extends TableConfig {
  /** Gold off-policy pairs (our Skywork). */
  goldPairs: number;
  epochs: number;
  batchSize: number;
  peakLr: number;
  perSubset: number;
}

/** SSO records built once by the base policy from `queries` training queries (resumable JSONL). */
async function baseRecords(
  session: OnlineSession,
  config: TableConfig,
  seed: number,
  dir: string,
): Promise<{ records: Array<PreferenceRecord & { id: string }>; queries: WorldQuery[] }> {
  const queries = trainQueries(new Rng(seed).fork("table-queries"), config.queries);
  if (!existsSync(join(dir, "sso-records.done.json"))) session.loadBase();
  const { records } = await buildPolicyRecords(session, queries, {
    dir,
    stem: "sso-records",
    dropLogName: "sso-drops.jsonl",
    seed,
    policySeed: seed,
    temperature: 0.7,
    topP: 0.8,
    maxTokens: config.maxTokens,
    genBatch: config.genBatch,
  });
  return { records, queries };
}

/** Off-policy gold pairs on the given queries, as records with the main pair only. */
function goldRecords(seed: number, queries: readonly WorldQuery[], count: number): PreferenceRecord[] {
  return offPolicyPairs(new Rng(seed).fork("table-gold"), queries)
    .slice(0, count)
    .map((p) => recordFromPair(p));
}

/** One row of the offline table. */
export interface OfflineRow {
  data: string;
  seed: number;
  pairs: number;
  goldScore: number;
  winRate: number;
  winRateLC: number;
  exactMatch: number | null;
  meanLength: number;
}

/** Runs the Table 3 analog; returns its rows and writes offline.json / offline.md under runDir. */
export async function offlineTable(
  config: OfflineTableConfig,
  kernels: Kernels,
  log: (line: string) => void = () => {},
): Promise<OfflineRow[]> {
  const session = new OnlineSession(config.baseModel, kernels);
  const held = evalQueries(config.evalQueries);
  const greedy = () =>
    answerQueries(session, held, { genBatch: config.genBatch, maxTokens: config.maxTokens });
  session.loadBase();
  const baseAnswers = await greedy();
  const rows: OfflineRow[] = [];
  const baseEval = evaluateAnswers(worldJudge, held, baseAnswers, baseAnswers);
  rows.push({ data: "base (no training)", seed: 0, pairs: 0, ...baseEval });
  for (const seed of config.seeds) {
    const dir = join(config.runDir, `seed-${seed}`);
    const { records, queries } = await baseRecords(session, config, seed, dir);
    const gold = goldRecords(seed, queries, records.length);
    for (const [name, data] of [
      ["SSO records (base policy)", records],
      ["off-policy gold pairs", gold],
    ] as const) {
      const resultPath = join(dir, `${name.startsWith("SSO") ? "sso" : "gold"}-result.json`);
      if (existsSync(resultPath)) {
        rows.push(JSON.parse(readFileSync(resultPath, "utf8")) as OfflineRow);
        continue;
      }
      session.loadBase();
      const objective = objectiveConfigSchema.parse({ loss: config.loss, beta: config.beta });
      const seqOptions = { maxLen: config.maxLen, microBatch: config.microBatch };
      const reference = scoreRecords(
        session.model,
        session.tokenizer,
        data,
        requiredKeys(objective),
        seqOptions,
      );
      const optimizer = new AdamW(session.model.params.length, {
        decayMask: decayMaskFromSpecs(session.model.specs),
      });
      trainPreference(session.model, session.tokenizer, optimizer, data, reference, {
        ...seqOptions,
        objective,
        batchSize: config.batchSize,
        epochs: config.epochs,
        peakLr: config.peakLr,
        warmupRatio: 0.1,
        maxGradNorm: 1,
        seed,
      });
      const answers = await greedy();
      const row: OfflineRow = {
        data: name,
        seed,
        pairs: data.length,
        ...evaluateAnswers(worldJudge, held, answers, baseAnswers),
      };
      writeJsonAtomic(resultPath, row);
      rows.push(row);
      log(`${name} seed ${seed}: gold ${row.goldScore.toFixed(3)} LC ${row.winRateLC.toFixed(3)}`);
    }
  }
  writeJsonAtomic(join(config.runDir, "offline.json"), { config, rows });
  writeFileAtomic(join(config.runDir, "offline.md"), offlineMarkdown(rows));
  return rows;
}

function meanStd(xs: number[], digits = 3): string {
  if (xs.length === 0) return "—";
  return xs.length > 1
    ? `${mean(xs).toFixed(digits)} ± ${stddev(xs).toFixed(digits)}`
    : mean(xs).toFixed(digits);
}

/** A Markdown table with one line per data source: its name, runs, mean ± std of pairs, then `cells`. */
function perDataTable<R extends { data: string; pairs: number }>(
  rows: readonly R[],
  header: string[],
  cells: (runs: R[]) => string[],
): string {
  const body = [...new Set(rows.map((r) => r.data))].map((g) => {
    const rs = rows.filter((r) => r.data === g);
    return [
      g,
      String(rs.length),
      meanStd(
        rs.map((r) => r.pairs),
        0,
      ),
      ...cells(rs),
    ];
  });
  return `${markdownTable(header, body)}\n`;
}

/** The offline table in Markdown: one line per data source, mean ± std over seeds. */
export function offlineMarkdown(rows: readonly OfflineRow[]): string {
  return perDataTable(
    rows,
    ["training data", "runs", "pairs", "gold", "win vs base", "LC win", "exact", "length"],
    (rs) => [
      meanStd(rs.map((r) => r.goldScore)),
      meanStd(rs.map((r) => r.winRate)),
      meanStd(rs.map((r) => r.winRateLC)),
      meanStd(rs.flatMap((r) => (r.exactMatch === null ? [] : [r.exactMatch]))),
      meanStd(
        rs.map((r) => r.meanLength),
        0,
      ),
    ],
  );
}

/** One row of the reward-model table. */
export interface RewardRow {
  data: string;
  seed: number;
  pairs: number;
  sections: Record<string, number>;
  overall: number;
}

function toPairs(records: readonly PreferenceRecord[], subset: string): PreferencePair[] {
  return records.map((r, i) =>
    pairFromRecord(r, { id: `${subset}-${i}`, subset, format: "sso", line: i + 1 }),
  );
}

/** Runs the Table 4 analog; returns its rows and writes rm.json / rm.md under runDir. */
export async function rewardModelTable(
  config: RewardTableConfig,
  kernels: Kernels,
  log: (line: string) => void = () => {},
): Promise<RewardRow[]> {
  const session = new OnlineSession(config.baseModel, kernels);
  const suite = buildRewardBench({ seed: 0, perSubset: config.perSubset }).map((r, i) =>
    pairFromText(r, { id: r.id, subset: r.subset, format: "rewardbench", line: i + 1 }),
  );
  // One reward model's buffers, reused by every run: weights are reloaded from the base each time.
  const rm = new LlamaModel(session.model.config, kernels, { scoreHead: true });
  const rows: RewardRow[] = [];
  for (const seed of config.seeds) {
    const dir = join(config.runDir, `seed-${seed}`);
    const { records } = await baseRecords(session, config, seed, dir);
    const goldQueries = trainQueries(new Rng(seed).fork("rm-gold-queries"), config.goldPairs);
    const gold = toPairs(goldRecords(seed, goldQueries, config.goldPairs), "gold");
    const sso = toPairs(records, "sso");
    for (const [name, pairs] of [
      ["gold off-policy pairs", gold],
      ["gold + SSO pairs", [...gold, ...sso]],
    ] as const) {
      const resultPath = join(dir, `rm-${name.includes("SSO") ? "gold-sso" : "gold"}.json`);
      if (existsSync(resultPath)) {
        rows.push(JSON.parse(readFileSync(resultPath, "utf8")) as RewardRow);
        continue;
      }
      session.loadBase();
      rm.loadTensors(session.model.namedTensors(), { allowMissing: ["score.weight"] });
      const head = rm.tensor("score.weight");
      const rng = new Rng(seed).fork("score-head");
      for (let i = 0; i < head.length; i++) head[i] = 0.02 * rng.normal();
      const optimizer = new AdamW(rm.params.length, { decayMask: decayMaskFromSpecs(rm.specs) });
      trainRewardModel(rm, session.tokenizer, optimizer, pairs, {
        batchSize: config.batchSize,
        microBatch: config.microBatch,
        epochs: config.epochs,
        peakLr: config.peakLr,
        warmupRatio: 0.1,
        maxGradNorm: 1,
        maxLen: config.maxLen,
        seed,
      });
      const scores = scorePairs(rm, session.tokenizer, suite, {
        maxLen: config.maxLen,
        maxBatchTokens: 8192,
      });
      const report = rewardBenchReport(
        suite.map((p, i) => ({ subset: p.subset, ...scores[i] })),
        { sections: REWARDBENCH_SECTIONS },
      );
      const row: RewardRow = {
        data: name,
        seed,
        pairs: pairs.length,
        sections: Object.fromEntries(report.sections.map((s) => [s.section, s.score])),
        overall: report.overall,
      };
      writeJsonAtomic(resultPath, row);
      rows.push(row);
      log(`${name} seed ${seed}: overall ${row.overall.toFixed(3)}`);
    }
  }
  writeJsonAtomic(join(config.runDir, "rm.json"), { config, rows });
  writeFileAtomic(join(config.runDir, "rm.md"), rewardMarkdown(rows));
  return rows;
}

/** The reward-model table in Markdown: sections and overall, mean ± std over seeds. */
export function rewardMarkdown(rows: readonly RewardRow[]): string {
  const sections = Object.keys(REWARDBENCH_SECTIONS);
  return perDataTable(rows, ["reward-model data", "seeds", "pairs", ...sections, "overall"], (rs) => [
    ...sections.map((s) => meanStd(rs.map((r) => r.sections[s] ?? 0))),
    meanStd(rs.map((r) => r.overall)),
  ]);
}
