import type { LlamaModel } from "../engine/model.js";
import type { AdamW } from "../engine/optim.js";
import type { BpeTokenizer } from "../engine/tokenizer.js";
import type { RunHooks, StepFunction, StepRecord, TrainRunResult } from "./loop.js";
import { loopOptions, METRIC, runSteps, trainRun } from "./loop.js";
import { checkpointMeta, type Fingerprint, RunDirectory, weightsDigest } from "./run-dir.js";
import {
  type EncodedSequence,
  encodeConversation,
  type Message,
  packBatch,
  systemCutWarning,
} from "./sequences.js";

/** A supervised example: a conversation whose assistant turns are learned, or raw text (all tokens). */
export type SftExample = { messages: Message[] } | { text: string };

/** Options of supervised fine-tuning (next-token loss). */
export interface SftOptions {
  /** Sequences per optimizer step. */
  batchSize: number;
  /** Most sequences per forward pass; a step accumulates gradients over its micro-batches. */
  microBatch: number;
  epochs: number;
  peakLr: number;
  warmupRatio: number;
  maxGradNorm: number;
  maxLen: number;
  seed: number;
  /** Steps already done by an interrupted run with the same data and seed: they are skipped. */
  startStep?: number;
}

/** The data-order label of SFT runs (the seed is forked with it). */
export const SFT_ORDER = "sft-order";

/** Tokenises an SFT example: chat examples score assistant turns, raw text scores every token. */
export function encodeSftExample(
  tokenizer: BpeTokenizer,
  example: SftExample,
  maxLen: number,
): EncodedSequence {
  if ("messages" in example) return encodeConversation(tokenizer, example.messages, maxLen);
  const ids = [...tokenizer.encode(example.text, { allowSpecial: false }), tokenizer.endOfTextId].slice(
    0,
    maxLen,
  );
  return { ids, mask: ids.map((_, t) => (t > 0 ? 1 : 0)) };
}

/**
 * The SFT step: the loss is the mean negative log-likelihood over all scored tokens of the batch's
 * sequences, accumulated over micro-batches of similar lengths; reports the token count as `tokens`.
 */
export function sftStepFunction(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  encoded: readonly EncodedSequence[],
  microBatch: number,
): StepFunction {
  return (batch) => {
    const idx = batch.slice();
    // Similar lengths in a micro-batch waste little on padding.
    idx.sort((a, b) => encoded[a].ids.length - encoded[b].ids.length);
    let tokens = 0;
    for (const i of idx) for (let t = 1; t < encoded[i].ids.length; t++) tokens += encoded[i].mask[t];
    model.zeroGrad();
    let nll = 0;
    for (let m = 0; m < idx.length; m += microBatch) {
      const packed = packBatch(
        idx.slice(m, m + microBatch).map((i) => encoded[i]),
        tokenizer.padId,
      );
      const res = model.forward(packed);
      const d = new Float32Array(packed.batch * packed.seqLen);
      for (let k = 0; k < d.length; k++) {
        if (packed.lossMask[k] === 1) {
          d[k] = -1 / Math.max(1, tokens);
          nll -= res.tokenLogprobs[k];
        }
      }
      model.backward(d);
    }
    return { loss: nll / Math.max(1, tokens), metrics: { [METRIC.tokens]: tokens } };
  };
}

/** Next-token training without a run directory (sftStepFunction in the shared loop). */
export function trainSft(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  optimizer: AdamW,
  examples: readonly SftExample[],
  options: SftOptions,
  onStep?: (record: StepRecord) => void,
): StepRecord[] {
  const encoded = examples.map((e) => encodeSftExample(tokenizer, e, options.maxLen));
  return runSteps(
    model,
    optimizer,
    { ...loopOptions(encoded.length, options, SFT_ORDER), startStep: options.startStep ?? 0 },
    sftStepFunction(model, tokenizer, encoded, options.microBatch),
    onStep,
  );
}

/** Settings that decide what an SFT run computes: a resumed run must use the same ones. */
export interface SftRunSettings {
  /** sha256 of the data file's bytes. */
  dataSha256: string;
  examples: number;
  epochs: number;
  lr: number;
  batchSize: number;
  microBatch: number;
  maxLen: number;
  warmupRatio: number;
  weightDecay: number;
  /** 0: no clipping. */
  maxGradNorm: number;
  seed: number;
}

/** The flag each setting comes from, for the message about a changed setting. */
const SFT_SETTING_FLAGS: Record<keyof SftRunSettings, string> = {
  dataSha256: "--data (sha256 of its bytes)",
  examples: "--data (examples)",
  epochs: "--epochs",
  lr: "--lr",
  batchSize: "--batch-size",
  microBatch: "--micro-batch",
  maxLen: "--max-len",
  warmupRatio: "--warmup-ratio",
  weightDecay: "--weight-decay",
  maxGradNorm: "--max-grad-norm",
  seed: "--seed",
};

/** An SFT run into a run directory (what `selfsteer sft` trains). */
export interface SftRunInput {
  out: string;
  /** Discard what an earlier run left in `out`. */
  restart?: boolean;
  /** The starting model (its weights are part of the fingerprint) and its tokenizer. */
  model: LlamaModel;
  tokenizer: BpeTokenizer;
  examples: readonly SftExample[];
  settings: SftRunSettings;
  /** Commit a checkpoint every this many steps (0: only when stopped early). */
  saveEvery: number;
  /**
   * Told, before training starts, of examples whose conversations lose part of their system prompt to
   * --max-len (one line); not called when there are none or the run is already finished.
   */
  onWarning?: (line: string) => void;
}

/**
 * Supervised fine-tuning in a run directory: refuses changed inputs, resumes from the last checkpoint,
 * recognises a finished run, and writes the final model with the model's own tokenizer files.
 */
export function runSftTraining(input: SftRunInput, hooks: RunHooks = {}): TrainRunResult {
  const { model, tokenizer, settings } = input;
  const fingerprint: Fingerprint = {};
  for (const [key, flag] of Object.entries(SFT_SETTING_FLAGS) as [keyof SftRunSettings, string][])
    fingerprint[key] = { label: flag, value: settings[key] };
  fingerprint.startWeights = { label: "--model (sha256 of its weights)", value: weightsDigest(model) };
  const run = RunDirectory.open(input.out, {
    kind: "sft",
    fingerprint,
    restart: input.restart === true,
    restartHint: "pass --restart",
  });
  const encoded = input.examples.map((e) => encodeSftExample(tokenizer, e, settings.maxLen));
  if (input.onWarning !== undefined && run.finished() === null) {
    const cut = encoded.flatMap((seq, i) => (seq.systemCut ? [`example ${i + 1}`] : []));
    if (cut.length > 0)
      input.onWarning(systemCutWarning("example", "system prompt", cut, cut.length, settings.maxLen));
  }
  // Plan activations once for the largest micro-batch, so the arena does not grow batch by batch.
  let longest = 1;
  for (const seq of encoded) longest = Math.max(longest, seq.ids.length);
  model.reserve(Math.min(settings.microBatch, settings.batchSize, encoded.length), longest);
  const options: SftOptions = {
    batchSize: settings.batchSize,
    microBatch: settings.microBatch,
    epochs: settings.epochs,
    peakLr: settings.lr,
    warmupRatio: settings.warmupRatio,
    maxGradNorm: settings.maxGradNorm > 0 ? settings.maxGradNorm : Number.POSITIVE_INFINITY,
    maxLen: settings.maxLen,
    seed: settings.seed,
  };
  return trainRun({
    run,
    model,
    weightDecay: settings.weightDecay,
    meta: checkpointMeta(model, tokenizer, { modelMaxLength: model.config.max_position_embeddings }),
    loop: loopOptions(encoded.length, options, SFT_ORDER),
    step: sftStepFunction(model, tokenizer, encoded, settings.microBatch),
    saveEvery: input.saveEvery,
    ...hooks,
  });
}
