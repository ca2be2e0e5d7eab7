import { createHash } from "node:crypto";
import { scoreByLength } from "../engine/batches.js";
import type { LlamaModel } from "../engine/model.js";
import type { AdamW } from "../engine/optim.js";
import type { BpeTokenizer } from "../engine/tokenizer.js";
import {
  type ObjectiveConfig,
  type ObjectiveRecord,
  type SeqKey,
  type SeqValues,
  sequencesRead,
  ssoObjective,
} from "../sso/objective.js";
import type { PreferenceRecord } from "../sso/pairs.js";
import type { RunHooks, StepFunction, StepRecord, TrainRunResult } from "./loop.js";
import { loopOptions, runSteps, trainRun } from "./loop.js";
import { checkpointMeta, type Fingerprint, RunDirectory, weightsDigest } from "./run-dir.js";
import {
  type EncodedSequence,
  encodeResponse,
  type Message,
  packBatch,
  systemCutWarning,
} from "./sequences.js";

/** The prompt and response of each of the six sequences of a record (docs/algorithm.md, "The six sequences and three pairs"): the neg pair prefers y0 over y+. */
export function sequenceFor(record: PreferenceRecord, key: SeqKey): { prompt: Message[]; response: string } {
  const user: Message = { role: "user", content: record.instruction };
  const pos: Message[] = [{ role: "system", content: record.p_system }, user];
  const neg: Message[] = [{ role: "system", content: record.n_system }, user];
  switch (key) {
    case "chosen":
      return { prompt: [user], response: record.chosen };
    case "rejected":
      return { prompt: [user], response: record.rejected };
    case "posChosen":
      return { prompt: pos, response: record.chosen };
    case "posRejected":
      return { prompt: pos, response: record.rejected };
    case "negChosen":
      return { prompt: neg, response: record.raw };
    case "negRejected":
      return { prompt: neg, response: record.chosen };
  }
}

/** The sequences an objective reads: all six with steering, the steering pairs for the generator, else the main pair. */
export function requiredKeys(config: ObjectiveConfig): SeqKey[] {
  return sequencesRead(config);
}

/** Summed response log-probs and token counts of a record's sequences. */
export interface RecordScores {
  values: SeqValues;
  tokens: SeqValues;
}

/** Settings shared by scoring and training. */
export interface SequenceOptions {
  /** Longest sequence in tokens (the reference's cutoff length, scaled to our models). */
  maxLen: number;
  /** Most sequences in one forward pass (bounds activation memory). */
  microBatch: number;
}

/** A prompt and a response to score. */
export interface ResponseItem {
  prompt: Message[];
  response: string;
}

/** Summed log-prob and token count of one scored response. */
export interface ResponseScore {
  logprob: number;
  tokens: number;
}

/** Forward-only scoring of (prompt, response) items under the model as it is now. */
export function scoreResponses(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  items: readonly ResponseItem[],
  options: SequenceOptions,
): ResponseScore[] {
  const seqs = items.map((it) => encodeResponse(tokenizer, it.prompt, it.response, options.maxLen));
  return scoreByLength(
    seqs.map((s) => s.ids.length),
    { maxRows: options.microBatch },
    (group) => {
      const res = model.forward(
        packBatch(
          group.map((i) => seqs[i]),
          tokenizer.padId,
        ),
        { keep: false },
      );
      return group.map((_, b) => ({ logprob: res.seqLogprobs[b], tokens: res.tokenCounts[b] }));
    },
  );
}

/**
 * Forward-only scoring of records' sequences: used for the frozen reference at the start of an
 * iteration (docs/algorithm.md, "The online loop": the reference log-probs are computed once per iteration).
 */
export function scoreRecords(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  records: readonly PreferenceRecord[],
  keys: readonly SeqKey[],
  options: SequenceOptions,
): RecordScores[] {
  const slots = records.flatMap((r, i) => keys.map((key) => ({ record: i, key, item: sequenceFor(r, key) })));
  const scores = scoreResponses(
    model,
    tokenizer,
    slots.map((s) => s.item),
    options,
  );
  const out: RecordScores[] = records.map(() => ({ values: {}, tokens: {} }));
  slots.forEach(({ record, key }, i) => {
    out[record].values[key] = scores[i].logprob;
    out[record].tokens[key] = scores[i].tokens;
  });
  return out;
}

/** Options of a preference training run over a fixed record set. */
export interface PreferenceTrainOptions extends SequenceOptions {
  objective: ObjectiveConfig;
  /** Records per optimizer step. */
  batchSize: number;
  epochs: number;
  peakLr: number;
  warmupRatio: number;
  maxGradNorm: number;
  seed: number;
  /** Steps already done by an interrupted run with the same data and seed: they are skipped. */
  startStep?: number;
}

/** The data-order label of preference runs (the seed is forked with it). */
export const PREFERENCE_ORDER = "preference-order";

/**
 * Everything a preference run's result depends on: the starting weights, the records, the objective
 * and the schedule (labelled with the flags of `selfsteer train` and `iterate`).
 */
export function preferenceFingerprint(
  startWeights: string,
  records: readonly PreferenceRecord[],
  options: PreferenceTrainOptions & { weightDecay: number },
): Fingerprint {
  const fields = records.map((r) => [r.instruction, r.p_system, r.n_system, r.chosen, r.rejected, r.raw]);
  const entry = (label: string, value: string | number) => ({ label, value });
  return {
    records: entry(
      "--data (sha256 of its records)",
      createHash("sha256").update(JSON.stringify(fields)).digest("hex"),
    ),
    recordCount: entry("--data (records)", records.length),
    objective: entry("the objective (--loss, --beta, --sso)", JSON.stringify(options.objective)),
    batchSize: entry("--batch-size", options.batchSize),
    epochs: entry("--epochs", options.epochs),
    lr: entry("--lr", options.peakLr),
    warmupRatio: entry("--warmup-ratio", options.warmupRatio),
    weightDecay: entry("--weight-decay", options.weightDecay),
    maxGradNorm: entry("--max-grad-norm", options.maxGradNorm),
    maxLen: entry("--max-len", options.maxLen),
    microBatch: entry("--micro-batch", options.microBatch),
    seed: entry("--seed", options.seed),
    startWeights: entry("--model (sha256 of its weights)", startWeights),
  };
}

/**
 * Trains `model` on preference records with the SSO objective (or a plain preference loss when the
 * objective has no `sso` block), without a run directory. `reference` holds the frozen reference's
 * scores per record (from scoreRecords before training), or null for reference-free losses.
 */
export function trainPreference(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  optimizer: AdamW,
  records: readonly PreferenceRecord[],
  reference: readonly RecordScores[] | null,
  options: PreferenceTrainOptions,
  onStep?: (record: StepRecord) => void,
): StepRecord[] {
  return runSteps(
    model,
    optimizer,
    { ...loopOptions(records.length, options, PREFERENCE_ORDER), startStep: options.startStep ?? 0 },
    preferenceStepFunction(model, tokenizer, records, reference, options),
    onStep,
  );
}

/**
 * The preference step: forward the batch's sequences, evaluate the objective on their summed
 * log-probs, and spread d(loss)/d(log-prob) back through the model; the objective's metrics (TRL's
 * rewards/* and logps/* names, loss/*, sso/weight) are the step's metrics.
 */
export function preferenceStepFunction(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  records: readonly PreferenceRecord[],
  reference: readonly RecordScores[] | null,
  options: SequenceOptions & { objective: ObjectiveConfig },
): StepFunction {
  const keys = requiredKeys(options.objective);
  return (batchIdx) => {
    const items = batchIdx.flatMap((r, slot) =>
      keys.map((key) => ({ slot, key, seq: encodeSeq(tokenizer, records[r], key, options) })),
    );
    const chunks: number[][] = [];
    for (let i = 0; i < items.length; i += options.microBatch)
      chunks.push(items.slice(i, i + options.microBatch).map((_, j) => i + j));
    const values: SeqValues[] = batchIdx.map(() => ({}));
    const tokens: SeqValues[] = batchIdx.map(() => ({}));
    const collect = (chunk: number[], seqLogprobs: Float64Array, tokenCounts: Int32Array) =>
      chunk.forEach((itemIndex, b) => {
        const { slot, key } = items[itemIndex];
        values[slot][key] = seqLogprobs[b];
        tokens[slot][key] = tokenCounts[b];
      });
    // One chunk: a single forward keeps the activations for backward. Several chunks: a scoring pass
    // first (the loss couples all six sequences of a record), then forward + backward chunk by chunk.
    const single = chunks.length === 1;
    for (const chunk of chunks) {
      const res = model.forward(
        packBatch(
          chunk.map((i) => items[i].seq),
          tokenizer.padId,
        ),
      );
      collect(chunk, res.seqLogprobs, res.tokenCounts);
    }
    const objectiveRecords: ObjectiveRecord[] = batchIdx.map((r, slot) => ({
      policy: values[slot],
      tokens: tokens[slot],
      ...(reference ? { reference: pick(reference[r].values, keys) } : {}),
    }));
    const result = ssoObjective(options.objective, objectiveRecords);
    model.zeroGrad();
    for (const chunk of chunks) {
      if (!single)
        model.forward(
          packBatch(
            chunk.map((i) => items[i].seq),
            tokenizer.padId,
          ),
        );
      const dSeq = chunk.map((itemIndex) => {
        const { slot, key } = items[itemIndex];
        return result.grad[slot].policy[key] ?? 0;
      });
      model.backwardSeq(dSeq);
    }
    return { loss: result.loss, metrics: result.metrics };
  };
}

function encodeSeq(
  tokenizer: BpeTokenizer,
  record: PreferenceRecord,
  key: SeqKey,
  options: SequenceOptions,
): EncodedSequence {
  const { prompt, response } = sequenceFor(record, key);
  return encodeResponse(tokenizer, prompt, response, options.maxLen);
}

/** A sequence of a record that lost part of its system prompt to the length limit. */
export interface SystemCut {
  /** Index of the record in the list given. */
  record: number;
  key: SeqKey;
}

/**
 * The sequences of `records` (those of `keys` that have a system prompt) too long to keep their
 * system prompt whole at `maxLen` (docs/algorithm.md, "Length limits and truncation"): their steering
 * pair trains partly as a plain one.
 */
export function systemPromptCuts(
  tokenizer: BpeTokenizer,
  records: readonly PreferenceRecord[],
  keys: readonly SeqKey[],
  maxLen: number,
): SystemCut[] {
  const cuts: SystemCut[] = [];
  records.forEach((record, i) => {
    for (const key of keys) {
      const { prompt, response } = sequenceFor(record, key);
      if (!prompt.some((m) => m.role === "system" && m.content !== "")) continue;
      if (encodeResponse(tokenizer, prompt, response, maxLen).systemCut) cuts.push({ record: i, key });
    }
  });
  return cuts;
}

/**
 * One warning line for system-prompt cuts, naming the records by id (or 1-based position), the first
 * few of them.
 */
export function describeSystemCuts(
  records: readonly PreferenceRecord[],
  cuts: readonly SystemCut[],
  maxLen: number,
): string {
  const names = cuts.map((c) => recordName(records, c.record));
  return systemCutWarning("record", "principle system prompt", names, cuts.length, maxLen);
}

function recordName(records: readonly PreferenceRecord[], index: number): string {
  const id = (records[index] as { id?: unknown }).id;
  return typeof id === "string" ? id : `record ${index + 1}`;
}

function pick(values: SeqValues, keys: readonly SeqKey[]): SeqValues {
  const out: SeqValues = {};
  for (const k of keys) out[k] = values[k];
  return out;
}

/** A preference run into a run directory (`selfsteer train`, and each online iteration's training). */
export interface PreferenceRunInput {
  out: string;
  /** Discard what an earlier run left in `out`. */
  restart?: boolean;
  /** How users start over, for messages. */
  restartHint: string;
  /** The starting policy (its weights are part of the fingerprint) and its tokenizer. */
  model: LlamaModel;
  tokenizer: BpeTokenizer;
  records: readonly PreferenceRecord[];
  options: Omit<PreferenceTrainOptions, "startStep">;
  weightDecay: number;
  /** Commit a checkpoint every this many steps (0: only when stopped early). */
  saveEvery: number;
  /**
   * The frozen reference's scores under the starting weights (null for reference-free losses); called
   * before any update, and not at all for a finished run.
   */
  reference: () => readonly RecordScores[] | null;
  /**
   * Told, before training starts, of records whose sequences lose part of their system prompt to
   * --max-len (one line, see describeSystemCuts); not called when there are none.
   */
  onWarning?: (line: string) => void;
}

/**
 * Preference training in a run directory: refuses changed inputs, resumes from the last checkpoint,
 * recognises a finished run, and writes the final model.
 */
export function runPreferenceTraining(input: PreferenceRunInput, hooks: RunHooks = {}): TrainRunResult {
  const { model, tokenizer, records, options } = input;
  const run = RunDirectory.open(input.out, {
    kind: "preference",
    fingerprint: preferenceFingerprint(weightsDigest(model), records, {
      ...options,
      weightDecay: input.weightDecay,
    }),
    restart: input.restart === true,
    restartHint: input.restartHint,
  });
  const finished = run.finished() !== null;
  if (!finished && input.onWarning !== undefined) {
    const cuts = systemPromptCuts(tokenizer, records, requiredKeys(options.objective), options.maxLen);
    if (cuts.length > 0) input.onWarning(describeSystemCuts(records, cuts, options.maxLen));
  }
  const reference = finished ? null : input.reference();
  return trainRun({
    run,
    model,
    weightDecay: input.weightDecay,
    meta: checkpointMeta(model, tokenizer),
    loop: loopOptions(records.length, options, PREFERENCE_ORDER),
    step: preferenceStepFunction(model, tokenizer, records, reference, options),
    saveEvery: input.saveEvery,
    ...hooks,
  });
}
