/**
 * The one training loop of every trainer (SFT, preference/SSO, reward models): a trainer supplies a
 * step function that leaves the gradient of its batch loss in the model's gradient buffer; the loop
 * orders the data (reshuffled every epoch from the seed), clips, stops on a non-finite loss or
 * gradient, steps AdamW on the cosine schedule, and reports one record per step. trainRun adds the run
 * directory (run-dir.ts): resume, periodic crash-consistent checkpoints, metrics.jsonl, the final model.
 */
import type { LlamaModel } from "../engine/model.js";
import { AdamW, clipGradNorm, cosineLr, decayMaskFromSpecs } from "../engine/optim.js";
import { UserError } from "../util/errors.js";
import { Rng } from "../util/rng.js";
import type { CheckpointMeta, RunDirectory } from "./run-dir.js";

/**
 * Metric names of metrics.jsonl and step records: TRL's where TRL logs the same quantity (its trainer
 * log: loss, learning_rate, grad_norm, epoch; DPO's rewards/* and logps/*; the reward trainer's
 * accuracy and margin), our own otherwise.
 */
export const METRIC = {
  /** 0-based index of the optimizer update. */
  step: "step",
  /** Epochs done after this update (fractional, as the HF Trainer logs it). */
  epoch: "epoch",
  loss: "loss",
  learningRate: "learning_rate",
  /** Global gradient norm before clipping. */
  gradNorm: "grad_norm",
  /** SFT: tokens the step's loss scored. */
  tokens: "tokens",
  rewardsChosen: "rewards/chosen",
  rewardsRejected: "rewards/rejected",
  rewardsMargins: "rewards/margins",
  rewardsAccuracies: "rewards/accuracies",
  logpsChosen: "logps/chosen",
  logpsRejected: "logps/rejected",
  /** Reward models: share of pairs whose chosen response scored higher. */
  accuracy: "accuracy",
  /** Reward models: mean r(chosen) - r(rejected). */
  margin: "margin",
} as const;

/** What a step function returns; the gradient of `loss` is left in model.grads (overwritten). */
export interface StepOutput {
  loss: number;
  /** Trainer-specific metrics of the step, named with METRIC where one fits. */
  metrics: Record<string, number>;
}

/** A trainer's step: the loss of the items at `batch` (indices into its data) and its gradient. */
export type StepFunction = (batch: number[], step: number) => StepOutput;

/** One optimizer step as reported and logged. */
export interface StepRecord {
  step: number;
  totalSteps: number;
  epoch: number;
  lr: number;
  loss: number;
  gradNorm: number;
  metrics: Record<string, number>;
}

/** The schedule of a run over `items` examples. */
export interface LoopOptions {
  items: number;
  batchSize: number;
  epochs: number;
  /** Seed of the data order, forked with `orderLabel` (each trainer has its own label). */
  seed: number;
  orderLabel: string;
  peakLr: number;
  warmupRatio: number;
  maxGradNorm: number;
  /** Steps already done by an interrupted run with the same data and seed: they are skipped. */
  startStep?: number;
  /** Stop before this step (exclusive; default: the end of the last epoch). */
  endStep?: number;
}

/** The schedule settings every trainer's options carry. */
export type ScheduleOptions = Pick<
  LoopOptions,
  "batchSize" | "epochs" | "seed" | "peakLr" | "warmupRatio" | "maxGradNorm"
>;

/** The loop settings of a run over `items` examples, its data order forked from the seed by `orderLabel`. */
export function loopOptions(items: number, options: ScheduleOptions, orderLabel: string): LoopOptions {
  const { batchSize, epochs, seed, peakLr, warmupRatio, maxGradNorm } = options;
  return { items, batchSize, epochs, seed, orderLabel, peakLr, warmupRatio, maxGradNorm };
}

/** Optimizer steps of a run: ceil(items / batchSize) per epoch. */
export function totalSteps(items: number, batchSize: number, epochs: number): number {
  return Math.ceil(items / batchSize) * epochs;
}

/** A loss or gradient that is not finite: training stops before the update would write it. */
export class NonFiniteError extends Error {
  constructor(
    readonly step: number,
    readonly totalSteps: number,
    readonly what: string,
  ) {
    super(`step ${step + 1}/${totalSteps}: ${what}; training stopped before this update`);
    this.name = "NonFiniteError";
  }
}

/**
 * Runs the steps from startStep to endStep: per epoch a fresh shuffle of the item indices, per step
 * the batch's gradient from `step`, global-norm clipping, then AdamW at cosineLr. A non-finite loss or
 * gradient norm throws NonFiniteError before the optimizer touches the weights.
 */
export function runSteps(
  model: LlamaModel,
  optimizer: AdamW,
  options: LoopOptions,
  step: StepFunction,
  onStep?: (record: StepRecord) => void,
): StepRecord[] {
  const stepsPerEpoch = Math.ceil(options.items / options.batchSize);
  const total = stepsPerEpoch * options.epochs;
  const startStep = options.startStep ?? 0;
  const endStep = Math.min(options.endStep ?? total, total);
  const rng = new Rng(options.seed).fork(options.orderLabel);
  const indices = Array.from({ length: options.items }, (_, i) => i);
  const log: StepRecord[] = [];
  let index = 0;
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    // Shuffled even when skipped, so a resumed run draws the same orders as an uninterrupted one.
    const order = rng.shuffle(indices.slice());
    for (let s = 0; s < stepsPerEpoch; s++, index++) {
      if (index < startStep) continue;
      if (index >= endStep) return log;
      const out = step(order.slice(s * options.batchSize, (s + 1) * options.batchSize), index);
      const gradNorm = clipGradNorm(model.grads, options.maxGradNorm);
      if (!Number.isFinite(out.loss)) throw new NonFiniteError(index, total, `the loss is ${out.loss}`);
      if (!Number.isFinite(gradNorm))
        throw new NonFiniteError(index, total, `the gradient norm is ${gradNorm}`);
      const lr = cosineLr(index, total, { peakLr: options.peakLr, warmupRatio: options.warmupRatio });
      optimizer.step(model.params, model.grads, lr);
      const record: StepRecord = {
        step: index,
        totalSteps: total,
        epoch: (index + 1) / stepsPerEpoch,
        lr,
        loss: out.loss,
        gradNorm,
        metrics: out.metrics,
      };
      log.push(record);
      onStep?.(record);
    }
  }
  return log;
}

/** A step record as one line of metrics.jsonl. */
export function metricsLine(record: StepRecord): Record<string, number> {
  return {
    [METRIC.step]: record.step,
    [METRIC.epoch]: record.epoch,
    [METRIC.loss]: record.loss,
    [METRIC.learningRate]: record.lr,
    [METRIC.gradNorm]: record.gradNorm,
    ...record.metrics,
  };
}

/** A line of metrics.jsonl back as a step record. */
function recordOfLine(line: Record<string, number>, total: number): StepRecord {
  const { step, epoch, loss, learning_rate, grad_norm, ...metrics } = line;
  return { step, totalSteps: total, epoch, lr: learning_rate, loss, gradNorm: grad_norm, metrics };
}

/** A training run in a run directory. */
export interface TrainRunSpec {
  run: RunDirectory;
  model: LlamaModel;
  /** AdamW's decoupled weight decay (on matrices only, as the HF Trainer does). */
  weightDecay: number;
  /** Config and tokenizer files written with the weights. */
  meta: CheckpointMeta;
  loop: Omit<LoopOptions, "startStep" | "endStep">;
  step: StepFunction;
  /** Commit a checkpoint every this many steps (0: only when stopping early). */
  saveEvery: number;
  /** Run at most this many steps now, commit and return (rerun to continue). */
  maxStepsNow?: number;
  onStart?: (info: { startStep: number; totalSteps: number; resumedFrom: string | null }) => void;
  onStep?: (record: StepRecord) => void;
  onSaved?: (step: number, dir: string) => void;
  /** Asked after every step: true commits a checkpoint and returns (e.g. a signal arrived). */
  shouldStop?: () => boolean;
  /** Files written beside the final model (name -> JSON value), from every step's record. */
  extraFiles?: (records: readonly StepRecord[]) => Record<string, unknown>;
}

/** The callbacks of a run that its caller (a CLI, the online loop) supplies. */
export type RunHooks = Pick<TrainRunSpec, "onStart" | "onStep" | "onSaved" | "shouldStop">;

/** How a training run ended. */
export interface TrainRunResult {
  startStep: number;
  /** Steps done and committed. */
  step: number;
  totalSteps: number;
  complete: boolean;
  /** The directory held the finished run already; nothing was trained. */
  alreadyComplete: boolean;
  resumedFrom: string | null;
  /** Every step's record, earlier runs' ones included (read back from metrics.jsonl). */
  records: StepRecord[];
}

/**
 * Runs (or resumes, or recognises as finished) a training run: restores the latest committed state
 * into the model and optimizer, runs the remaining steps with a checkpoint every saveEvery steps, and
 * publishes the final model. A non-finite loss or gradient becomes a UserError naming the step and the
 * checkpoint that stays good.
 */
export function trainRun(spec: TrainRunSpec): TrainRunResult {
  const { run, model } = spec;
  const optimizer = new AdamW(model.numParams, {
    weightDecay: spec.weightDecay,
    decayMask: decayMaskFromSpecs(model.specs),
    kernels: model.kernels,
  });
  const total = totalSteps(spec.loop.items, spec.loop.batchSize, spec.loop.epochs);
  const saved = run.latest();
  if (saved !== null && saved.totalSteps !== total)
    throw new UserError(`${saved.dir}: saved for a run of ${saved.totalSteps} steps, this one has ${total}`);
  const startStep = run.restore(model, optimizer);
  const records = run.readMetrics().map((line) => recordOfLine(line, total));
  const resumedFrom = saved?.dir ?? null;
  spec.onStart?.({ startStep, totalSteps: total, resumedFrom });
  const result = (step: number, complete: boolean, alreadyComplete: boolean): TrainRunResult => ({
    startStep,
    step,
    totalSteps: total,
    complete,
    alreadyComplete,
    resumedFrom,
    records,
  });
  if (saved?.complete === true) {
    run.removeCheckpoints(); // a kill may have come between the final commit and this cleanup
    return result(total, true, true);
  }
  let committed = startStep;
  let stopped = false;
  const commit = (step: number) => {
    run.commitCheckpoint(step, total, model, optimizer, spec.meta);
    committed = step;
    spec.onSaved?.(step, `${run.dir}/checkpoint-${step}`);
  };
  const endStep = Math.min(spec.maxStepsNow === undefined ? total : startStep + spec.maxStepsNow, total);
  class Stop extends Error {}
  try {
    runSteps(model, optimizer, { ...spec.loop, startStep, endStep }, spec.step, (record) => {
      run.appendMetrics(metricsLine(record));
      records.push(record);
      const done = record.step + 1;
      if (done < total && spec.saveEvery > 0 && done % spec.saveEvery === 0) commit(done);
      spec.onStep?.(record);
      if (done < endStep && spec.shouldStop?.() === true) throw new Stop();
    });
  } catch (error) {
    run.closeMetrics();
    if (error instanceof Stop) stopped = true;
    else if (error instanceof NonFiniteError)
      throw new UserError(
        `${error.message}. ${
          committed > 0
            ? `${run.dir}/checkpoint-${committed} keeps the last good state (step ${committed})`
            : "No checkpoint was saved"
        }; the same inputs fail the same way: lower the learning rate or fix the data, and ${run.restartHint} to train again`,
      );
    else throw error;
  }
  const reached = stopped ? records.length : endStep;
  if (reached < total) {
    if (committed !== reached) commit(reached);
    run.closeMetrics();
    return result(reached, false, false);
  }
  run.publish(total, model, optimizer, spec.meta, spec.extraFiles?.(records) ?? {});
  spec.onSaved?.(total, run.dir);
  return result(total, true, false);
}
