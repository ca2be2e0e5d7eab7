/**
 * The training side of `selfsteer sft`, on a worker thread. Training runs synchronously, so on the
 * main thread a SIGINT would wait until training ended; here the main thread stays free to receive
 * signals and raises a shared flag that this thread checks after every step, then saves and stops.
 * --out is a run directory (src/train/run-dir.ts): checkpoint-N/ while training, metrics.jsonl, and the
 * final model in HF layout with its trainer state at the end.
 */
import { parentPort, workerData } from "node:worker_threads";
import { type BackendChoice, createKernels } from "../engine/kernels/index.js";
import { loadModelDir } from "../engine/load.js";
import type { StepRecord } from "../train/loop.js";
import { runSftTraining, type SftExample, type SftRunSettings } from "../train/sft.js";
import { UserError } from "../util/errors.js";

/** What the main thread hands the worker. */
export interface SftWorkerData {
  out: string;
  /** Absolute path of the base checkpoint. */
  modelDir: string;
  examples: SftExample[];
  settings: SftRunSettings;
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
  | { type: "step"; info: StepRecord }
  | { type: "saved"; step: number; dir: string }
  | { type: "done"; step: number; complete: boolean; alreadyComplete: boolean }
  | { type: "error"; message: string; user: boolean; exitCode: number };

function post(message: SftWorkerMessage): void {
  parentPort?.postMessage(message);
}

function run(data: SftWorkerData): void {
  const stopFlag = new Int32Array(data.stop);
  let kernels: ReturnType<typeof createKernels>;
  try {
    kernels = createKernels({ backend: data.backend });
  } catch (error) {
    post({
      type: "error",
      message: `--backend ${data.backend}: ${(error as Error).message}`,
      user: true,
      exitCode: 2,
    });
    return;
  }
  if (kernels.warning) post({ type: "warning", message: kernels.warning });
  try {
    const { settings, modelDir } = data;
    const { model, tokenizer, config } = loadModelDir(modelDir, { kernels, scoreHead: false });
    if (!model.hasLmHead)
      throw new UserError(`--model ${modelDir}: is a reward model (no LM head); sft needs a causal LM`);
    if (settings.maxLen > config.max_position_embeddings)
      throw new UserError(
        `--max-len: ${settings.maxLen} exceeds max_position_embeddings ${config.max_position_embeddings} of ${modelDir}`,
      );
    const result = runSftTraining(
      {
        out: data.out,
        restart: data.force,
        model,
        tokenizer,
        examples: data.examples,
        settings,
        saveEvery: data.saveEvery,
        onWarning: (line) => post({ type: "warning", message: line }),
      },
      {
        onStart: ({ startStep, totalSteps, resumedFrom }) =>
          post({
            type: "start",
            startStep,
            totalSteps,
            maxLen: settings.maxLen,
            parameters: model.numParams,
            resumedFrom,
          }),
        onStep: (record) => {
          post({ type: "step", info: record });
          if (data.throttleMs > 0)
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, data.throttleMs);
        },
        onSaved: (step, dir) => post({ type: "saved", step, dir }),
        shouldStop: () => Atomics.load(stopFlag, 0) !== 0,
      },
    );
    post({
      type: "done",
      step: result.step,
      complete: result.complete,
      alreadyComplete: result.alreadyComplete,
    });
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
