/**
 * Several methods and seeds of online SSO from one base policy, into one run directory with one report.
 * Layout: <runDir>/seed-<s>/<run>/iter-<k>/ (one seed: <runDir>/<run>/...), where <run> is a method or a
 * grid cell (src/run/grid.ts: `sso@steerBeta=0.3,loss=dpo`, `pbaa@loss=dpo`); iteration 1's shared
 * records in <runDir>/seed-<s>/shared/iter-1/; report.{json,md} and plots/ in <runDir>.
 */
import { join } from "node:path";
import type { Kernels } from "../engine/kernels/types.js";
import { ssoOptionsSchema } from "../sso/objective.js";
import { type GridAxis, gridUnits, type RunUnit } from "./grid.js";
import {
  type IterationMetrics,
  type Method,
  type OnlineConfig,
  type OnlineEvent,
  OnlineSession,
  runOnline,
} from "./online.js";
import { aggregateRuns, PAIRED_BASELINE, type RunReport, type StepCurves, writeReport } from "./report.js";
import { checkRunSettings } from "./run-settings.js";
import { GENERATOR_STEP_METRICS, STEP_METRICS, stepSeries } from "./step-metrics.js";

/** Settings of an experiment: the online settings minus what varies (method, seed, directory). */
export interface ExperimentConfig extends Omit<OnlineConfig, "method" | "seed" | "runDir" | "label"> {
  name: string;
  runDir: string;
  methods: Method[];
  seeds: number[];
  /** The steering study's grid: its cells run after `methods` (docs/protocol.md). */
  grid?: GridAxis[];
}

/**
 * The runs of an experiment: every method (paired against pbaa), then the grid's cells not already
 * there. A cell whose settings equal the experiment's own (its loss, beta and G_beta) shares the plain
 * method's run directory when that method is in the experiment, so it is not trained twice.
 */
export function experimentUnits(
  config: Pick<ExperimentConfig, "methods" | "grid" | "loss" | "beta" | "steerBeta">,
): RunUnit[] {
  const units: RunUnit[] = config.methods.map((method) => ({
    label: method,
    method,
    baseline: method === PAIRED_BASELINE ? null : PAIRED_BASELINE,
  }));
  const defaultSteerBeta = config.steerBeta ?? ssoOptionsSchema.parse({}).steerBeta;
  for (const unit of config.grid === undefined ? [] : gridUnits(config.grid)) {
    if (units.some((u) => u.label === unit.label)) continue;
    const same =
      (unit.loss ?? config.loss) === config.loss &&
      (unit.beta ?? config.beta) === config.beta &&
      (unit.method !== "sso" || (unit.steerBeta ?? defaultSteerBeta) === defaultSteerBeta);
    if (same && config.methods.includes(unit.method)) unit.dir = unit.method;
    units.push(unit);
  }
  return units;
}

/** The demo's and experiments' defaults, sized for the world's base policy on 2 cores. */
export const ONLINE_DEFAULTS: Omit<ExperimentConfig, "name" | "runDir" | "methods" | "seeds" | "baseModel"> =
  {
    loss: "ipo",
    beta: 0.2,
    iterations: 3,
    // docs/protocol.md's log: 16 steps of 8 records per iteration, 400 held-out queries (evaluation noise
    // small next to the paired differences), and lr 2e-4: at 5e-4 every method collapsed by iteration 3.
    queriesPerIteration: 128,
    evalQueries: 400,
    temperature: 0.7,
    topP: 0.8,
    maxTokens: 96,
    evalMaxTokens: 96,
    batchSize: 8,
    epochs: 1,
    peakLr: 2e-4,
    warmupRatio: 0.1,
    weightDecay: 0.1,
    maxGradNorm: 1,
    maxLen: 384,
    microBatch: 16,
    saveEvery: 2,
    genBatch: 48,
  };

/** The methods `npm run experiment` compares (docs/protocol.md); the generator's ablations run on request. */
export const EXPERIMENT_METHODS: readonly Method[] = [
  "sso",
  "pbaa",
  "no-weight",
  "no-steer",
  "offpolicy",
  "generator",
];

/** The seeds of the comparison (docs/protocol.md, "The test"). */
export const EXPERIMENT_SEEDS: readonly number[] = [1, 2, 3, 4, 5];

/** The demo's scale: the same comparison as the experiment, small enough for `npm start`'s 10 minutes. */
export const DEMO_SCALE: Partial<typeof ONLINE_DEFAULTS> = {
  queriesPerIteration: 48,
  evalQueries: 200,
  // 6 steps per iteration: at 5e-4 the demo's policies do not collapse (README, "The demo").
  peakLr: 5e-4,
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
  const units = experimentUnits(config);
  const perMethod: Record<string, IterationMetrics[][]> = {};
  for (const u of units) perMethod[u.label] = [];
  const { grid: _grid, methods: _methods, ...online } = config;
  const aggregate = () =>
    aggregateRuns(
      config.name,
      config.seeds,
      Object.fromEntries(Object.entries(perMethod).filter(([, runs]) => runs.length > 0)),
      provenance,
      { units, ...(config.grid === undefined ? {} : { grid: config.grid }) },
    );
  const seedDirOf = (seed: number) =>
    config.seeds.length > 1 ? join(config.runDir, `seed-${seed}`) : config.runDir;
  // Per-step curves of every run so far, from the training runs' metrics.jsonl, mean over its seeds.
  const curves = (): Record<string, StepCurves> =>
    Object.fromEntries(
      units
        .filter((u) => perMethod[u.label].length > 0)
        .map((u) => {
          const dirs = (run: string) =>
            config.seeds
              .slice(0, perMethod[u.label].length)
              .map((seed) =>
                Array.from({ length: config.iterations }, (_, i) =>
                  join(seedDirOf(seed), u.dir ?? u.label, `iter-${i + 1}`, run),
                ),
              );
          return [
            u.label,
            {
              policy: stepSeries(dirs("model"), STEP_METRICS),
              generator: stepSeries(dirs("generator"), GENERATOR_STEP_METRICS),
            },
          ];
        }),
    );
  const runConfig = (seed: number, unit: RunUnit): OnlineConfig => ({
    ...online,
    method: unit.method,
    label: unit.dir ?? unit.label,
    loss: unit.loss ?? config.loss,
    beta: unit.beta ?? config.beta,
    ...(unit.steerBeta === undefined ? {} : { steerBeta: unit.steerBeta }),
    seed,
    runDir: seedDirOf(seed),
  });
  // Every run's recorded settings are checked before the first one starts (src/run/run-settings.ts).
  for (const seed of config.seeds)
    for (const unit of units)
      checkRunSettings(runConfig(seed, unit), session.baseFingerprint, session.backend);
  let report = aggregate();
  for (const seed of config.seeds) {
    for (const unit of units) {
      const rows = await runOnline(session, runConfig(seed, unit), (e) => onEvent({ ...e, seed }));
      perMethod[unit.label].push(rows);
      report = aggregate();
      writeReport(config.runDir, report, curves());
    }
  }
  return report;
}
