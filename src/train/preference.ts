import { scoreByLength } from "../engine/batches.js";
import type { LlamaModel } from "../engine/model.js";
import { type AdamW, clipGradNorm, cosineLr } from "../engine/optim.js";
import type { BpeTokenizer } from "../engine/tokenizer.js";
import {
  type ObjectiveConfig,
  type ObjectiveRecord,
  SEQ_KEYS,
  type SeqKey,
  type SeqValues,
  ssoObjective,
} from "../sso/objective.js";
import type { PreferenceRecord } from "../sso/pairs.js";
import { Rng } from "../util/rng.js";
import { type EncodedSequence, encodeResponse, type Message, packBatch } from "./sequences.js";

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

/** The sequences an objective reads: all six with steering, else the main pair only. */
export function requiredKeys(config: ObjectiveConfig): SeqKey[] {
  return config.sso?.steer ? [...SEQ_KEYS] : ["chosen", "rejected"];
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

/** What one optimizer step reports. */
export interface StepInfo {
  step: number;
  totalSteps: number;
  lr: number;
  loss: number;
  gradNorm: number;
  skipped: boolean;
  metrics: Record<string, number>;
}

/**
 * Trains `model` on preference records with the SSO objective (or a plain preference loss when the
 * objective has no `sso` block). `reference` holds the frozen reference's scores per record (from
 * scoreRecords before training), or null for reference-free losses (simpo, orpo).
 * Each step: forward the batch's sequences, evaluate the objective on their summed log-probs, spread
 * d(loss)/d(log-prob) back through the model, clip, AdamW with the cosine schedule.
 */
export function trainPreference(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  optimizer: AdamW,
  records: readonly PreferenceRecord[],
  reference: readonly RecordScores[] | null,
  options: PreferenceTrainOptions,
  onStep?: (info: StepInfo) => void,
): StepInfo[] {
  const keys = requiredKeys(options.objective);
  const stepsPerEpoch = Math.ceil(records.length / options.batchSize);
  const totalSteps = stepsPerEpoch * options.epochs;
  const log: StepInfo[] = [];
  const rng = new Rng(options.seed).fork("preference-order");
  let step = 0;
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    const order = rng.shuffle(records.map((_, i) => i));
    for (let s = 0; s < stepsPerEpoch; s++) {
      const batchIdx = order.slice(s * options.batchSize, (s + 1) * options.batchSize);
      if (step < (options.startStep ?? 0)) {
        step++;
        continue;
      }
      const lr = cosineLr(step, totalSteps, { peakLr: options.peakLr, warmupRatio: options.warmupRatio });
      const info = preferenceStep(
        model,
        tokenizer,
        optimizer,
        records,
        reference,
        batchIdx,
        keys,
        lr,
        options,
      );
      const full: StepInfo = { ...info, step, totalSteps, lr };
      log.push(full);
      onStep?.(full);
      step++;
    }
  }
  return log;
}

function preferenceStep(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  optimizer: AdamW,
  records: readonly PreferenceRecord[],
  reference: readonly RecordScores[] | null,
  batchIdx: number[],
  keys: readonly SeqKey[],
  lr: number,
  options: PreferenceTrainOptions,
): Omit<StepInfo, "step" | "totalSteps" | "lr"> {
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
  const gradNorm = clipGradNorm(model.grads, options.maxGradNorm);
  const skipped = !Number.isFinite(gradNorm);
  if (!skipped) optimizer.step(model.params, model.grads, lr);
  return { loss: result.loss, gradNorm, skipped, metrics: result.metrics };
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

function pick(values: SeqValues, keys: readonly SeqKey[]): SeqValues {
  const out: SeqValues = {};
  for (const k of keys) out[k] = values[k];
  return out;
}
