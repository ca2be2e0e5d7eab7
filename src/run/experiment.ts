/**
 * Several methods and seeds of online SSO from one base policy, into one run directory with one report.
 * Layout: <runDir>/seed-<s>/<method>/iter-<k>/ (one seed: <runDir>/<method>/...), report.{json,md}, plots/.
 */
import { join } from "node:path";
import type { Kernels } from "../engine/kernels/types.js";
import {
  type IterationMetrics,
  type Method,
  type OnlineConfig,
  type OnlineEvent,
  OnlineSession,
  runOnline,
} from "./online.js";
import { aggregateRuns, type RunReport, writeReport } from "./report.js";

/** Settings of an experiment: the online settings minus what varies (method, seed, directory). */
export interface ExperimentConfig extends Omit<OnlineConfig, "method" | "seed" | "runDir"> {
  name: string;
  runDir: string;
  methods: Method[];
  seeds: number[];
}

/** The demo's and experiments' defaults, sized for the world's base policy on 2 cores. */
export const ONLINE_DEFAULTS: Omit<ExperimentConfig, "name" | "runDir" | "methods" | "seeds" | "baseModel"> =
  {
    loss: "ipo",
    beta: 0.2,
    iterations: 3,
    queriesPerIteration: 96,
    evalQueries: 140,
    temperature: 0.7,
    topP: 0.8,
    maxTokens: 96,
    evalMaxTokens: 96,
    batchSize: 8,
    epochs: 1,
    peakLr: 5e-4,
    warmupRatio: 0.1,
    weightDecay: 0.1,
    maxGradNorm: 1,
    maxLen: 384,
    microBatch: 16,
    saveEvery: 2,
    genBatch: 48,
  };

/**
 * Runs every (seed, method) in turn — resuming whatever is already done — and writes the report after
 * each finished method, so a partial experiment still has a readable report.
 */
export async function runExperiment(
  config: ExperimentConfig,
  kernels: Kernels,
  provenance: Record<string, unknown>,
  onEvent: (event: OnlineEvent & { seed: number }) => void = () => {},
): Promise<RunReport> {
  const session = new OnlineSession(config.baseModel, kernels);
  const perMethod: Record<string, IterationMetrics[][]> = {};
  for (const m of config.methods) perMethod[m] = [];
  let report = aggregateRuns(config.name, config.seeds, perMethod, provenance);
  for (const seed of config.seeds) {
    const seedDir = config.seeds.length > 1 ? join(config.runDir, `seed-${seed}`) : config.runDir;
    for (const method of config.methods) {
      const rows = await runOnline(session, { ...config, method, seed, runDir: seedDir }, (e) =>
        onEvent({ ...e, seed }),
      );
      perMethod[method].push(rows);
      report = aggregateRuns(
        config.name,
        config.seeds,
        Object.fromEntries(Object.entries(perMethod).filter(([, runs]) => runs.length > 0)),
        provenance,
      );
      writeReport(config.runDir, report);
    }
  }
  return report;
}
