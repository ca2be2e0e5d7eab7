/**
 * Per-step training metrics of the online loop: the means an iteration row keeps, and the series the
 * report plots per step (docs/protocol.md, "Metrics": loss/main, loss/steer, sso/weight and the
 * reward margins of the three pairs, so a reader can see that the losses train).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { mean } from "../eval/metrics.js";
import { RUN_FILES } from "../train/run-dir.js";

/** The per-step metrics the report plots and averages per iteration (objective.ts's TRL names). */
export const STEP_METRICS = [
  "loss/main",
  "loss/steer",
  "sso/weight",
  "rewards/margins",
  "p_rewards/margins",
  "n_rewards/margins",
] as const;

/** The generator's own per-step metrics (its objective has no main pair and no W). */
export const GENERATOR_STEP_METRICS = [
  "loss/steer",
  "loss/sft",
  "p_rewards/margins",
  "n_rewards/margins",
] as const;

/** Mean of every metric over a training run's steps (null for a run without steps). */
export function meanMetrics(log: ReadonlyArray<Record<string, number>>): Record<string, number> | null {
  if (log.length === 0) return null;
  const out: Record<string, number> = {};
  for (const key of Object.keys(log[0])) out[key] = mean(log.map((row) => row[key] ?? 0));
  return out;
}

/**
 * The lines of a run directory's metrics.jsonl (src/train/loop.ts), in step order; [] when the run has
 * none yet. A torn last line (a run killed while appending) ends the list.
 */
export function readStepMetrics(runDir: string): Array<Record<string, number>> {
  const path = join(runDir, RUN_FILES.metrics);
  if (!existsSync(path)) return [];
  const out: Array<Record<string, number>> = [];
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (line.trim() === "") continue;
    try {
      out.push(JSON.parse(line) as Record<string, number>);
    } catch {
      break;
    }
  }
  return out;
}

/**
 * One method's per-step series over its iterations: for each seed, the steps of iteration 1, then 2,
 * ... concatenated (the run directories `iterDirs(seed)` in order), then averaged over seeds step by
 * step (a seed whose run is shorter leaves its missing steps out of the mean). Keys absent from every
 * seed's steps give no series.
 */
export function stepSeries(
  runsPerSeed: ReadonlyArray<ReadonlyArray<string>>,
  keys: readonly string[],
): Record<string, (number | null)[]> {
  const perSeed = runsPerSeed.map((dirs) => dirs.flatMap((dir) => readStepMetrics(dir)));
  const length = Math.max(0, ...perSeed.map((s) => s.length));
  const out: Record<string, (number | null)[]> = {};
  for (const key of keys) {
    const values: (number | null)[] = [];
    let any = false;
    for (let i = 0; i < length; i++) {
      const xs = perSeed
        .map((steps) => steps[i]?.[key])
        .filter((v): v is number => typeof v === "number" && Number.isFinite(v));
      if (xs.length > 0) any = true;
      values.push(xs.length > 0 ? mean(xs) : null);
    }
    if (any) out[key] = values;
  }
  return out;
}
