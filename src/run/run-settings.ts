/**
 * The settings a run directory was made with, so that resuming never mixes two settings silently.
 *
 * runOnline reads finished stages back (records, reference scores, a whole iteration's metrics.json)
 * instead of recomputing them. That is only right when the command asks for what the directory holds.
 * Each run therefore records its result-shaping settings once, before its first stage: the seed
 * directory's in settings.json (what every method of the seed shares: the base, the queries, the
 * sampling, the evaluation) and each method's in <label>/settings.json (its objective and schedule).
 * A later command with other values stops before any work with the field, both values and the flag
 * that restores the old one. Left out on purpose: the run directory and label (where, not what),
 * `iterations` (a run may be extended) and `saveEvery` (resume points; the result is the same).
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { LlamaModel } from "../engine/model.js";
import { ssoOptionsSchema } from "../sso/objective.js";
import { weightsDigest } from "../train/run-dir.js";
import { UserError } from "../util/errors.js";
import { writeJsonAtomic } from "../util/fsio.js";
import type { OnlineConfig } from "./online.js";

/** A run's settings, as stored: flat, JSON-comparable values. */
export type RunSettings = Record<string, string | number | boolean>;

/** The command-line flag that sets each stored field, for the message that says how to resume. */
const FLAG_OF: Record<string, string> = {
  backend: "--backend",
  seed: "--seeds",
  queriesPerIteration: "--queries",
  evalQueries: "--eval-queries",
  maxTokens: "--max-tokens",
  evalMaxTokens: "--max-tokens",
  method: "--methods",
  loss: "--loss",
  beta: "--beta",
  steerBeta: "--steer-beta",
  peakLr: "--lr",
  batchSize: "--batch-size",
  epochs: "--epochs",
  maxLen: "--max-len",
};

/**
 * The base's identity: its config and the run directories' own weights digest (weightsDigest) of the
 * weights just loaded, so a retrained base at the same path is told apart (the path alone would not)
 * without reading its files a second time.
 */
export function baseFingerprint(model: LlamaModel): string {
  return createHash("sha256")
    .update(JSON.stringify(model.config))
    .update(weightsDigest(model))
    .digest("hex")
    .slice(0, 16);
}

/** What every method of one seed directory shares: the base evaluation and iteration 1's records. */
export function sharedSettings(config: OnlineConfig, baseFingerprint: string, backend: string): RunSettings {
  return {
    base: baseFingerprint,
    backend,
    seed: config.seed,
    queriesPerIteration: config.queriesPerIteration,
    evalQueries: config.evalQueries,
    temperature: config.temperature,
    topP: config.topP,
    maxTokens: config.maxTokens,
    evalMaxTokens: config.evalMaxTokens,
    genBatch: config.genBatch,
  };
}

/** One method's own settings: its objective and training schedule. */
export function methodSettings(config: OnlineConfig): RunSettings {
  return {
    method: config.method,
    loss: config.loss,
    beta: config.beta,
    // Unset means the objective's default; stored resolved, so `--steer-beta 0.1` equals leaving it out.
    steerBeta: config.steerBeta ?? ssoOptionsSchema.parse({}).steerBeta,
    batchSize: config.batchSize,
    epochs: config.epochs,
    peakLr: config.peakLr,
    warmupRatio: config.warmupRatio,
    weightDecay: config.weightDecay,
    maxGradNorm: config.maxGradNorm,
    maxLen: config.maxLen,
    microBatch: config.microBatch,
  };
}

/**
 * The two settings files of a run: the seed directory's and the method's, each with the outputs it
 * vouches for (a file is only written while none of those exist yet; see recordRunSettings).
 */
function settingsFiles(config: OnlineConfig, baseFingerprint: string, backend: string) {
  const methodDir = join(config.runDir, config.label ?? config.method);
  return [
    {
      path: join(config.runDir, "settings.json"),
      settings: sharedSettings(config, baseFingerprint, backend),
      outputs: [join(config.runDir, "base-eval.json"), join(config.runDir, "shared")],
    },
    {
      path: join(methodDir, "settings.json"),
      settings: methodSettings(config),
      outputs: existsSync(methodDir)
        ? readdirSync(methodDir)
            .filter((f) => !f.startsWith("settings.json"))
            .map((f) => join(methodDir, f))
        : [],
    },
  ];
}

/**
 * Throws a UserError if a settings file of this run exists and disagrees with `config`; writes nothing.
 * Runs without the files (made before they existed) pass: there is nothing to compare.
 */
export function checkRunSettings(config: OnlineConfig, baseFingerprint: string, backend: string): void {
  for (const { path, settings } of settingsFiles(config, baseFingerprint, backend)) {
    if (!existsSync(path)) continue;
    let stored: RunSettings;
    try {
      stored = JSON.parse(readFileSync(path, "utf8")) as RunSettings;
    } catch (e) {
      throw new UserError(
        `${path}: not valid JSON (${(e as Error).message}); delete it to accept the run as it is`,
      );
    }
    for (const [field, value] of Object.entries(settings)) {
      if (!(field in stored) || stored[field] === value) continue;
      if (field === "base")
        throw new UserError(
          `${path}: field base: the base checkpoint's config or weights are not the ones this run started ` +
            `from (hash ${String(stored.base)}, now ${value}); put them back, or give another --out`,
        );
      const flag = FLAG_OF[field];
      throw new UserError(
        `${path}: field ${field}: this run was made with ${JSON.stringify(stored[field])}, the command asks for ` +
          `${JSON.stringify(value)}; resume it with the old value${flag === undefined ? "" : ` (${flag})`}, ` +
          "or give another --out",
      );
    }
  }
}

/**
 * Checks the run's settings files and writes the missing ones (atomically) before the run's first
 * stage. A run made before these files existed keeps none: its settings are unknown, and writing this
 * command's would vouch for outputs they may not have made (its training stages still check theirs).
 */
export function recordRunSettings(config: OnlineConfig, baseFingerprint: string, backend: string): void {
  checkRunSettings(config, baseFingerprint, backend);
  for (const { path, settings, outputs } of settingsFiles(config, baseFingerprint, backend))
    if (!existsSync(path) && !outputs.some((o) => existsSync(o))) writeJsonAtomic(path, settings);
}
