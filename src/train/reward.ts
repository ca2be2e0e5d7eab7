/**
 * Reward models: scoring with a Llama backbone and a score head, and its Bradley-Terry training. The
 * pairs come from src/sso/pairs.ts; RewardBench-style reports are src/eval/rewardbench.ts's.
 *
 * A response is scored as the chat-formatted conversation (prompt turns, then the response as the
 * assistant turn) and the score is read at its last token, the response's closing end-of-turn token
 * (<|im_end|> in ChatML); what the template puts after it is not part of the scored sequence, so the score sits on the token
 * that ends the answer and a response cut by the length limit is scored where it was cut.
 */
import { scoreByLength } from "../engine/batches.js";
import type { LlamaModel } from "../engine/model.js";
import type { AdamW } from "../engine/optim.js";
import type { BpeTokenizer } from "../engine/tokenizer.js";
import { btLoss } from "../sso/objective.js";
import type { PreferencePair, ScoreItem } from "../sso/pairs.js";
import type { RunHooks, StepFunction, StepRecord, TrainRunResult } from "./loop.js";
import { loopOptions, METRIC, runSteps, trainRun } from "./loop.js";
import { type CheckpointMeta, RunDirectory, weightsDigest } from "./run-dir.js";
import {
  type EncodedSequence,
  encodeResponse,
  type Message,
  packBatch,
  systemCutWarning,
} from "./sequences.js";

// ---------------------------------------------------------------------------------------------------
// Sequences and scores

/**
 * Token ids of a scored response: the chat-formatted conversation ending at the response's
 * end-of-turn token (or where the length limit cut the response), at most maxLen tokens; the score is
 * read at the last one.
 */
export function encodeScored(
  tokenizer: BpeTokenizer,
  prompt: Message[],
  response: string,
  maxLen: number,
): number[] {
  return encodeScoredSequence(tokenizer, prompt, response, maxLen).ids;
}

/** encodeScored's ids, and whether the length limit cut the system prompt (EncodedSequence.systemCut). */
function encodeScoredSequence(
  tokenizer: BpeTokenizer,
  prompt: Message[],
  response: string,
  maxLen: number,
): { ids: number[]; systemCut: boolean } {
  if (!(Number.isInteger(maxLen) && maxLen >= 2)) throw new RangeError(`maxLen must be >= 2, got ${maxLen}`);
  const endAtResponse = (seq: EncodedSequence) => ({
    ids: seq.ids.slice(0, seq.mask.lastIndexOf(1) + 1),
    systemCut: seq.systemCut === true,
  });
  // ChatML's trailing newline is dropped, so a response that fits without it must not be cut for it.
  const roomy = endAtResponse(encodeResponse(tokenizer, prompt, response, maxLen + 1));
  if (roomy.ids.length <= maxLen) return roomy;
  return endAtResponse(encodeResponse(tokenizer, prompt, response, maxLen));
}

/** Both sides of a pair as scored token sequences. */
export interface EncodedPair {
  chosen: number[];
  rejected: number[];
  /** How many of the two lost part of their system prompt to the length limit. */
  systemCuts: number;
}

/** Encodes both responses of a pair. */
export function encodePair(tokenizer: BpeTokenizer, pair: PreferencePair, maxLen: number): EncodedPair {
  const chosen = encodeScoredSequence(tokenizer, pair.prompt, pair.chosen, maxLen);
  const rejected = encodeScoredSequence(tokenizer, pair.prompt, pair.rejected, maxLen);
  return {
    chosen: chosen.ids,
    rejected: rejected.ids,
    systemCuts: (chosen.systemCut ? 1 : 0) + (rejected.systemCut ? 1 : 0),
  };
}

function asBatchRows(seqs: readonly number[][]): EncodedSequence[] {
  return seqs.map((ids) => ({ ids, mask: new Array<number>(ids.length).fill(0) }));
}

/**
 * Scores of token sequences, in input order. Sequences are sorted by length and grouped so that a
 * forward pass holds at most `maxBatchTokens` padded tokens (always at least one sequence).
 */
export function scoreSequences(
  model: LlamaModel,
  seqs: readonly number[][],
  padId: number,
  maxBatchTokens: number,
): number[] {
  return scoreByLength(
    seqs.map((ids) => ids.length),
    { maxTokens: maxBatchTokens },
    (group) => model.forwardScores(packBatch(asBatchRows(group.map((i) => seqs[i])), padId), { keep: false }),
  );
}

/** The scores a model gives both sides of a pair. */
export interface PairScore {
  chosenScore: number;
  rejectedScore: number;
}

/** Options of scoring. */
export interface ScoreOptions {
  maxLen: number;
  /** Padded tokens per forward pass. */
  maxBatchTokens: number;
}

/** Scores both responses of every pair, in input order. */
export function scorePairs(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  pairs: readonly PreferencePair[],
  options: ScoreOptions,
): PairScore[] {
  const seqs: number[][] = [];
  for (const p of pairs) {
    const e = encodePair(tokenizer, p, options.maxLen);
    seqs.push(e.chosen, e.rejected);
  }
  const s = scoreSequences(model, seqs, tokenizer.padId, options.maxBatchTokens);
  return pairs.map((_, i) => ({ chosenScore: s[2 * i], rejectedScore: s[2 * i + 1] }));
}

/** Scores the response of every item, in input order. */
export function scoreItems(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  items: readonly ScoreItem[],
  options: ScoreOptions,
): number[] {
  const seqs = items.map((it) => encodeScored(tokenizer, it.prompt, it.response, options.maxLen));
  return scoreSequences(model, seqs, tokenizer.padId, options.maxBatchTokens);
}

// ---------------------------------------------------------------------------------------------------
// Bradley-Terry training

/** Summed statistics of a set of pairs under the Bradley-Terry loss. */
export interface BtSums {
  /** Sum over pairs of -log sigmoid(r_chosen - r_rejected). */
  loss: number;
  /** Pairs with r_chosen > r_rejected. */
  correct: number;
  /** Sum over pairs of r_chosen - r_rejected. */
  margin: number;
}

/**
 * Forward and backward of the Bradley-Terry loss over `pairs`, `microBatch` pairs (2 * microBatch
 * sequences) per forward pass, accumulating d(sum of losses / divisor)/d(params) into model.grads
 * (callers zero them). With divisor = the pairs of an optimizer step, the step's gradient is that of
 * the mean loss over its pairs.
 */
export function accumulateBtGradients(
  model: LlamaModel,
  pairs: readonly EncodedPair[],
  padId: number,
  microBatch: number,
  divisor: number,
): BtSums {
  const sums: BtSums = { loss: 0, correct: 0, margin: 0 };
  for (let m = 0; m < pairs.length; m += microBatch) {
    const group = pairs.slice(m, m + microBatch);
    const seqs: number[][] = [];
    for (const p of group) seqs.push(p.chosen, p.rejected);
    const scores = model.forwardScores(packBatch(asBatchRows(seqs), padId));
    const dScores = new Float32Array(scores.length);
    for (let i = 0; i < group.length; i++) {
      const chosen = scores[2 * i];
      const rejected = scores[2 * i + 1];
      const bt = btLoss(chosen, rejected);
      sums.loss += bt.loss;
      sums.margin += chosen - rejected;
      if (chosen > rejected) sums.correct++;
      dScores[2 * i] = bt.dChosen / divisor;
      dScores[2 * i + 1] = bt.dRejected / divisor;
    }
    model.backwardScores(dScores);
  }
  return sums;
}

/** Options of reward-model training. */
export interface RewardTrainOptions {
  /** Pairs per optimizer step. */
  batchSize: number;
  /** Most pairs per forward pass (two sequences each); a step accumulates over its micro-batches. */
  microBatch: number;
  epochs: number;
  peakLr: number;
  warmupRatio: number;
  maxGradNorm: number;
  maxLen: number;
  seed: number;
  /** Steps already done by an interrupted run with the same pairs and seed: they are skipped. */
  startStep?: number;
  /** Stop before this step (exclusive; default: the end of the last epoch), e.g. to time-box a run. */
  endStep?: number;
}

/** The data-order label of reward-model runs (the seed is forked with it). */
export const REWARD_ORDER = "reward-order";

/**
 * The Bradley-Terry step: -log sigmoid(r(x, y_w) - r(x, y_l)) averaged over the batch's pairs, in
 * micro-batches of similar lengths; reports accuracy (chosen scored higher) and the mean margin.
 */
export function rewardStepFunction(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  encoded: readonly EncodedPair[],
  microBatch: number,
): StepFunction {
  if (!model.hasScoreHead) throw new Error("reward training: the model has no score head");
  const lengthOf = (i: number) => Math.max(encoded[i].chosen.length, encoded[i].rejected.length);
  return (batch) => {
    const idx = batch.slice();
    // Similar lengths in a micro-batch waste little on padding; the step's sum does not depend on it.
    idx.sort((a, b) => lengthOf(a) - lengthOf(b));
    model.zeroGrad();
    const sums = accumulateBtGradients(
      model,
      idx.map((i) => encoded[i]),
      tokenizer.padId,
      microBatch,
      idx.length,
    );
    return {
      loss: sums.loss / idx.length,
      metrics: { [METRIC.accuracy]: sums.correct / idx.length, [METRIC.margin]: sums.margin / idx.length },
    };
  };
}

/**
 * Trains a reward model (a model with a score head) with the Bradley-Terry loss in the shared loop,
 * without a run directory. Pairs are reshuffled every epoch from `seed`, so a run resumed at
 * `startStep` takes exactly the steps the uninterrupted run would have.
 */
export function trainRewardModel(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  optimizer: AdamW,
  pairs: readonly PreferencePair[],
  options: RewardTrainOptions,
  onStep?: (record: StepRecord) => void,
): StepRecord[] {
  if (pairs.length === 0) throw new Error("trainRewardModel: no pairs");
  const encoded = pairs.map((p) => encodePair(tokenizer, p, options.maxLen));
  return runSteps(
    model,
    optimizer,
    {
      ...loopOptions(encoded.length, options, REWARD_ORDER),
      startStep: options.startStep ?? 0,
      ...(options.endStep !== undefined ? { endStep: options.endStep } : {}),
    },
    rewardStepFunction(model, tokenizer, encoded, options.microBatch),
    onStep,
  );
}

/** A reward-model run into a run directory (what `selfsteer rm train` trains). */
export interface RewardRunInput {
  out: string;
  /** Discard what an earlier run left in `out`. */
  restart?: boolean;
  /** The starting reward model (score head initialised; its weights are part of the fingerprint). */
  model: LlamaModel;
  tokenizer: BpeTokenizer;
  /** Config and tokenizer files written with the weights. */
  meta: CheckpointMeta;
  pairs: readonly PreferencePair[];
  /** A digest of the pairs' contents (names the data in the fingerprint). */
  pairsDigest: string;
  options: Omit<RewardTrainOptions, "startStep" | "endStep">;
  weightDecay: number;
  /** Commit a checkpoint every this many steps (0: only when stopped early). */
  saveEvery: number;
  /** Run at most this many steps now, commit and return (rerun to continue). */
  maxStepsNow?: number;
  /**
   * Told, before training starts, of pairs whose prompts lose part of their system prompt to
   * --max-len (one line); not called when there are none or the run is already finished.
   */
  onWarning?: (line: string) => void;
}

/**
 * Reward-model training in a run directory: refuses changed inputs, resumes from the last checkpoint,
 * recognises a finished run, and writes the final reward model.
 */
export function runRewardTraining(input: RewardRunInput, hooks: RunHooks = {}): TrainRunResult {
  const { model, tokenizer, options } = input;
  if (input.pairs.length === 0) throw new Error("runRewardTraining: no pairs");
  const entry = (label: string, value: string | number) => ({ label, value });
  const run = RunDirectory.open(input.out, {
    kind: "reward-model",
    fingerprint: {
      pairs: entry("--pairs (sha256 of its pairs)", input.pairsDigest),
      pairCount: entry("--pairs (pairs)", input.pairs.length),
      batchSize: entry("--batch-size", options.batchSize),
      epochs: entry("--epochs", options.epochs),
      lr: entry("--lr", options.peakLr),
      warmupRatio: entry("--warmup-ratio", options.warmupRatio),
      weightDecay: entry("--weight-decay", input.weightDecay),
      maxGradNorm: entry("--max-grad-norm", options.maxGradNorm),
      maxLen: entry("--max-len", options.maxLen),
      microBatch: entry("--micro-batch", options.microBatch),
      seed: entry("--seed", options.seed),
      // Last: a changed --seed also changes a new score head, and the message should name --seed.
      startWeights: entry(
        "--model (sha256 of its weights and the score head's seeded init)",
        weightsDigest(model),
      ),
    },
    restart: input.restart === true,
    restartHint: "pass --restart",
  });
  const encoded = input.pairs.map((p) => encodePair(tokenizer, p, options.maxLen));
  if (input.onWarning !== undefined && run.finished() === null) {
    const cut = encoded.flatMap((pair, i) => (pair.systemCuts > 0 ? [`pair ${i + 1}`] : []));
    const sequences = encoded.reduce((sum, pair) => sum + pair.systemCuts, 0);
    if (cut.length > 0)
      input.onWarning(systemCutWarning("pair", "system prompt", cut, sequences, options.maxLen));
  }
  return trainRun({
    run,
    model,
    weightDecay: input.weightDecay,
    meta: input.meta,
    loop: loopOptions(encoded.length, options, REWARD_ORDER),
    step: rewardStepFunction(model, tokenizer, encoded, options.microBatch),
    saveEvery: input.saveEvery,
    ...(input.maxStepsNow !== undefined ? { maxStepsNow: input.maxStepsNow } : {}),
    ...hooks,
  });
}
