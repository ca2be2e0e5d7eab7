import type { LlamaModel } from "../engine/model.js";
import { type AdamW, clipGradNorm, cosineLr } from "../engine/optim.js";
import type { BpeTokenizer } from "../engine/tokenizer.js";
import { Rng } from "../util/rng.js";
import { type EncodedSequence, encodeConversation, type Message, packBatch } from "./sequences.js";

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

/** What one SFT step reports. */
export interface SftStepInfo {
  step: number;
  totalSteps: number;
  lr: number;
  /** Mean next-token negative log-likelihood over the step's scored tokens. */
  loss: number;
  tokens: number;
  gradNorm: number;
}

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
 * Next-token training: the loss of a step is the mean negative log-likelihood over all scored tokens
 * of its sequences, accumulated over micro-batches, then clipped AdamW with the cosine schedule.
 */
export function trainSft(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  optimizer: AdamW,
  examples: readonly SftExample[],
  options: SftOptions,
  onStep?: (info: SftStepInfo) => void,
): SftStepInfo[] {
  const encoded = examples.map((e) => encodeSftExample(tokenizer, e, options.maxLen));
  const stepsPerEpoch = Math.ceil(encoded.length / options.batchSize);
  const totalSteps = stepsPerEpoch * options.epochs;
  const rng = new Rng(options.seed).fork("sft-order");
  const log: SftStepInfo[] = [];
  let step = 0;
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    const order = rng.shuffle(encoded.map((_, i) => i));
    for (let s = 0; s < stepsPerEpoch; s++, step++) {
      if (step < (options.startStep ?? 0)) continue;
      const idx = order.slice(s * options.batchSize, (s + 1) * options.batchSize);
      // Similar lengths in a micro-batch waste little on padding.
      idx.sort((a, b) => encoded[a].ids.length - encoded[b].ids.length);
      let tokens = 0;
      for (const i of idx) for (let t = 1; t < encoded[i].ids.length; t++) tokens += encoded[i].mask[t];
      model.zeroGrad();
      let nll = 0;
      for (let m = 0; m < idx.length; m += options.microBatch) {
        const batch = packBatch(
          idx.slice(m, m + options.microBatch).map((i) => encoded[i]),
          tokenizer.padId,
        );
        const res = model.forward(batch);
        const d = new Float32Array(batch.batch * batch.seqLen);
        for (let k = 0; k < d.length; k++) {
          if (batch.lossMask[k] === 1) {
            d[k] = -1 / Math.max(1, tokens);
            nll -= res.tokenLogprobs[k];
          }
        }
        model.backward(d);
      }
      const gradNorm = clipGradNorm(model.grads, options.maxGradNorm);
      const lr = cosineLr(step, totalSteps, { peakLr: options.peakLr, warmupRatio: options.warmupRatio });
      if (Number.isFinite(gradNorm)) optimizer.step(model.params, model.grads, lr);
      const info: SftStepInfo = { step, totalSteps, lr, loss: nll / Math.max(1, tokens), tokens, gradNorm };
      log.push(info);
      onStep?.(info);
    }
  }
  return log;
}
