/**
 * The training side of `selfsteer sft`, on a worker thread. trainSft runs synchronously, so on the main
 * thread a SIGINT would wait until training ended; here the main thread stays free to receive signals
 * and raises a shared flag that this thread checks after every step, then saves and stops.
 *
 * Layout of --out: `sft_run.json` (the run's settings, written first), `checkpoint-N/` (full state
 * after N steps: HF files, trainer_state.json, optimizer.safetensors; trainer_state.json is written
 * last, so a directory without it is an interrupted save and is ignored), `sft_log.jsonl` (one line per
 * step), and at the end the final model in HF layout with its trainer state in --out itself.
 */
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parentPort, workerData } from "node:worker_threads";
import { z } from "zod";
import { tokenizerConfigJson } from "../engine/chat.js";
import {
  CHECKPOINT_FILES,
  loadCheckpoint,
  loadTrainerState,
  saveCheckpoint,
  saveTrainerState,
  type TrainerState,
} from "../engine/checkpoint.js";
import { type BackendChoice, createKernels } from "../engine/kernels/index.js";
import { loadModelDir } from "../engine/load.js";
import type { LlamaModel } from "../engine/model.js";
import { AdamW, decayMaskFromSpecs } from "../engine/optim.js";
import type { BpeTokenizer } from "../engine/tokenizer.js";
import { encodeSftExample, type SftExample, type SftStepInfo, trainSft } from "../train/sft.js";
import { UserError } from "../util/errors.js";
import { readJsonFile, writeJsonAtomic } from "../util/fsio.js";
import { ResumableJsonlWriter } from "../util/jsonl.js";

/** Settings that decide what training computes: a resumed run must use the same ones. */
export interface SftRunSettings {
  /** Absolute path of the base checkpoint. */
  model: string;
  /** sha256 of the data file's bytes. */
  dataSha256: string;
  examples: number;
  epochs: number;
  lr: number;
  batchSize: number;
  maxLen: number;
  warmupRatio: number;
  weightDecay: number;
  /** 0: no clipping. */
  maxGradNorm: number;
  seed: number;
}

/** What the main thread hands the worker. */
export interface SftWorkerData {
  out: string;
  examples: SftExample[];
  settings: SftRunSettings;
  microBatch: number;
  saveEvery: number;
  backend: BackendChoice;
  force: boolean;
  /** Sleep after each step (hidden test hook that widens the window for signals). */
  throttleMs: number;
  /** Int32Array[1]: the signal number once the main thread asks to stop. */
  stop: SharedArrayBuffer;
}

/** Messages from the worker to the main thread. */
export type SftWorkerMessage =
  | { type: "warning"; message: string }
  | {
      type: "start";
      startStep: number;
      totalSteps: number;
      maxLen: number;
      parameters: number;
      resumedFrom: string | null;
    }
  | { type: "step"; info: SftStepInfo }
  | { type: "saved"; step: number; dir: string }
  | { type: "done"; step: number; complete: boolean; alreadyComplete: boolean }
  | { type: "error"; message: string; user: boolean; exitCode: number };

const RUN_FILE = "sft_run.json";
const LOG_FILE = "sft_log.jsonl";
const RUN_FORMAT = "selfsteer-sft-run-v1";
const CHECKPOINT_DIR = /^checkpoint-(\d+)$/;

const RunFileSchema = z.object({
  format: z.literal(RUN_FORMAT),
  settings: z.record(z.string(), z.unknown()),
});

/** Thrown from the step callback to leave trainSft after a stop request. */
class StopRequested extends Error {}

function post(message: SftWorkerMessage): void {
  parentPort?.postMessage(message);
}

/** Fails unless --out is empty, ours with the same settings, or --force clears our files from it. */
function claimOutDir(data: SftWorkerData): void {
  const { out, settings } = data;
  const runPath = join(out, RUN_FILE);
  if (data.force) {
    for (const name of existsSync(out) ? readdirSync(out) : [])
      if (CHECKPOINT_DIR.test(name)) rmSync(join(out, name), { recursive: true, force: true });
    for (const name of [RUN_FILE, LOG_FILE, CHECKPOINT_FILES.trainerState, CHECKPOINT_FILES.optimizer])
      rmSync(join(out, name), { force: true });
  }
  if (existsSync(runPath)) {
    const previous = readJsonFile(runPath, RunFileSchema).settings;
    for (const [key, value] of Object.entries(settings))
      if (previous[key] !== value)
        throw new UserError(
          `--out ${out}: holds a run with ${key} ${JSON.stringify(previous[key])}, this command has ${JSON.stringify(value)}; rerun the same command to resume, or pass --force to start over`,
        );
    return;
  }
  if (existsSync(join(out, CHECKPOINT_FILES.config)))
    throw new UserError(
      `--out ${out}: already holds a checkpoint that is not from an sft run; choose another --out or pass --force to overwrite it`,
    );
  writeJsonAtomic(runPath, { format: RUN_FORMAT, settings });
}

/** The furthest complete saved state in --out (a checkpoint-N directory or the final files); removes torn saves. */
function latestState(out: string): { dir: string; state: TrainerState } | null {
  let best: { dir: string; state: TrainerState } | null = null;
  const consider = (dir: string): void => {
    const state = loadTrainerState(dir);
    if (state !== null && (best === null || state.step > best.state.step)) best = { dir, state };
  };
  if (!existsSync(out)) return null;
  for (const name of readdirSync(out)) {
    if (!CHECKPOINT_DIR.test(name)) continue;
    const dir = join(out, name);
    if (existsSync(join(dir, CHECKPOINT_FILES.trainerState))) consider(dir);
    else rmSync(dir, { recursive: true, force: true });
  }
  consider(out);
  return best;
}

/** Writes the model and its trainer state into `dir` (weights first, trainer_state.json last). */
function saveState(
  dir: string,
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  optimizer: AdamW,
  step: number,
  data: SftWorkerData,
): void {
  saveCheckpoint(dir, {
    config: model.config,
    tensors: model.namedTensors(),
    tokenizerJson: tokenizer.toJSON(),
    tokenizerConfigJson: tokenizerConfigJson(tokenizer, {
      modelMaxLength: model.config.max_position_embeddings,
    }),
  });
  saveTrainerState(dir, {
    step,
    optimizer: optimizer.exportState(),
    extra: { settings: data.settings, microBatch: data.microBatch },
  });
}

/** Removes checkpoint-N directories other than `keep`. */
function pruneCheckpoints(out: string, keep: string | null): void {
  for (const name of readdirSync(out))
    if (CHECKPOINT_DIR.test(name) && join(out, name) !== keep)
      rmSync(join(out, name), { recursive: true, force: true });
}

function run(data: SftWorkerData): void {
  const stopFlag = new Int32Array(data.stop);
  const kernels = createKernels({ backend: data.backend });
  if (kernels.warning) post({ type: "warning", message: kernels.warning });
  try {
    const { model, tokenizer, config } = loadModelDir(data.settings.model, { kernels, scoreHead: false });
    if (!model.hasLmHead)
      throw new UserError(
        `--model ${data.settings.model}: is a reward model (no LM head); sft needs a causal LM`,
      );
    if (data.settings.maxLen > config.max_position_embeddings)
      throw new UserError(
        `--max-len: ${data.settings.maxLen} exceeds max_position_embeddings ${config.max_position_embeddings} of ${data.settings.model}`,
      );
    claimOutDir(data);
    const optimizer = new AdamW(model.numParams, {
      weightDecay: data.settings.weightDecay,
      decayMask: decayMaskFromSpecs(model.specs),
    });
    const { settings } = data;
    const totalSteps = Math.ceil(settings.examples / settings.batchSize) * settings.epochs;
    let startStep = 0;
    const resumed = latestState(data.out);
    if (resumed !== null) {
      const weights = loadCheckpoint(resumed.dir, { scoreHead: false });
      model.loadTensors(weights.tensors.values());
      optimizer.importState(resumed.state.optimizer);
      startStep = resumed.state.step;
      if (startStep > totalSteps)
        throw new UserError(
          `${resumed.dir}: trainer state at step ${startStep} is past this run's ${totalSteps} steps`,
        );
    }
    post({
      type: "start",
      startStep,
      totalSteps,
      maxLen: settings.maxLen,
      parameters: model.numParams,
      resumedFrom: resumed?.dir ?? null,
    });
    if (startStep === totalSteps && resumed?.dir === data.out) {
      post({ type: "done", step: startStep, complete: true, alreadyComplete: true });
      return;
    }
    // Plan activations once for the largest micro-batch, so the arena is allocated once instead of
    // reallocated each time a longer batch comes along.
    let longest = 1;
    for (const example of data.examples)
      longest = Math.max(longest, encodeSftExample(tokenizer, example, settings.maxLen).ids.length);
    model.reserve(Math.min(data.microBatch, settings.batchSize, data.examples.length), longest);
    const log = new ResumableJsonlWriter<SftStepInfo>(join(data.out, LOG_FILE), (info) => String(info.step));
    let lastSaved = startStep;
    const checkpoint = (step: number): void => {
      const dir = join(data.out, `checkpoint-${step}`);
      saveState(dir, model, tokenizer, optimizer, step, data);
      pruneCheckpoints(data.out, dir);
      lastSaved = step;
      post({ type: "saved", step, dir });
    };
    try {
      trainSft(
        model,
        tokenizer,
        optimizer,
        data.examples,
        {
          batchSize: settings.batchSize,
          microBatch: data.microBatch,
          epochs: settings.epochs,
          peakLr: settings.lr,
          warmupRatio: settings.warmupRatio,
          maxGradNorm: settings.maxGradNorm > 0 ? settings.maxGradNorm : Number.POSITIVE_INFINITY,
          maxLen: settings.maxLen,
          seed: settings.seed,
          startStep,
        },
        (info) => {
          log.append(info);
          post({ type: "step", info });
          const done = info.step + 1;
          if (done < totalSteps && data.saveEvery > 0 && done % data.saveEvery === 0) checkpoint(done);
          if (data.throttleMs > 0)
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, data.throttleMs);
          if (done < totalSteps && Atomics.load(stopFlag, 0) !== 0) {
            if (lastSaved !== done) checkpoint(done);
            throw new StopRequested();
          }
        },
      );
    } catch (error) {
      log.close();
      if (error instanceof StopRequested) {
        post({ type: "done", step: lastSaved, complete: false, alreadyComplete: false });
        return;
      }
      throw error;
    }
    log.close();
    // The final model goes to --out itself; checkpoint directories go once it is complete.
    saveState(data.out, model, tokenizer, optimizer, totalSteps, data);
    pruneCheckpoints(data.out, null);
    post({ type: "saved", step: totalSteps, dir: data.out });
    post({ type: "done", step: totalSteps, complete: true, alreadyComplete: false });
  } finally {
    kernels.dispose();
  }
}

try {
  run(workerData as SftWorkerData);
} catch (error) {
  if (error instanceof UserError)
    post({ type: "error", message: error.message, user: true, exitCode: error.exitCode });
  else
    post({
      type: "error",
      message: error instanceof Error ? (error.stack ?? error.message) : String(error),
      user: false,
      exitCode: 1,
    });
}
