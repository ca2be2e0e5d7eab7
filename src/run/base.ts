/**
 * The base policy of the principle world: a tokenizer trained on the world's SFT corpus and a small
 * Llama model trained on it by supervised fine-tuning. Imperfect on purpose: it follows principles in
 * the system prompt about as often as the corpus does, and without one it behaves well only at the
 * corpus's base rate, which is what SSO has to improve without seeing the gold scores.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { tokenizerConfigJson } from "../engine/chat.js";
import { loadCheckpoint, loadTrainerState, saveCheckpoint, saveTrainerState } from "../engine/checkpoint.js";
import { LlamaConfigSchema } from "../engine/config.js";
import type { Kernels } from "../engine/kernels/types.js";
import { LlamaModel } from "../engine/model.js";
import { AdamW, decayMaskFromSpecs } from "../engine/optim.js";
import { BpeTokenizer } from "../engine/tokenizer.js";
import { type SftStepInfo, trainSft } from "../train/sft.js";
import { writeJsonAtomic } from "../util/fsio.js";
import { Rng } from "../util/rng.js";
import { buildSftCorpus } from "../world/corpus.js";

/** Settings of the base policy (defaults sized so the demo fits 10 minutes on 2 cores). */
export interface WorldBaseOptions {
  out: string;
  seed: number;
  corpusSize: number;
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  maxLen: number;
  epochs: number;
  peakLr: number;
  batchSize: number;
  microBatch: number;
  warmupRatio: number;
  weightDecay: number;
  maxGradNorm: number;
  saveEvery: number;
}

/** The defaults of `selfsteer world sft`. */
export const WORLD_BASE_DEFAULTS: Omit<WorldBaseOptions, "out"> = {
  seed: 1,
  corpusSize: 6000,
  vocab: 1024,
  hidden: 128,
  intermediate: 384,
  layers: 4,
  heads: 4,
  kvHeads: 2,
  maxLen: 384,
  epochs: 4,
  peakLr: 3e-3,
  batchSize: 32,
  microBatch: 8,
  warmupRatio: 0.05,
  weightDecay: 0.1,
  maxGradNorm: 1,
  saveEvery: 50,
};

/**
 * Builds the corpus, trains the tokenizer, initialises and trains the model, and saves the checkpoint
 * to `out` (HF layout). Interrupted runs resume from `<out>/partial` at the step where they stopped.
 */
export function trainWorldBase(
  options: WorldBaseOptions,
  kernels: Kernels,
  onStep?: (info: SftStepInfo) => void,
): { steps: number; finalLoss: number; parameters: number } {
  const corpus = buildSftCorpus({ seed: options.seed, size: options.corpusSize });
  const texts = corpus.map((e) => e.messages.map((m) => m.content).join("\n"));
  const tokenizer = BpeTokenizer.train(texts, options.vocab);
  const config = LlamaConfigSchema.parse({
    vocab_size: tokenizer.vocabSize,
    hidden_size: options.hidden,
    intermediate_size: options.intermediate,
    num_hidden_layers: options.layers,
    num_attention_heads: options.heads,
    num_key_value_heads: options.kvHeads,
    max_position_embeddings: Math.max(512, options.maxLen),
    tie_word_embeddings: true,
    bos_token_id: tokenizer.endOfTextId,
    eos_token_id: tokenizer.eosId,
    pad_token_id: tokenizer.padId,
  });
  const model = new LlamaModel(config, kernels);
  model.initRandom(new Rng(options.seed).fork("init"));
  const optimizer = new AdamW(model.params.length, {
    weightDecay: options.weightDecay,
    decayMask: decayMaskFromSpecs(model.specs),
  });
  const partial = join(options.out, "partial");
  let startStep = 0;
  const state = existsSync(partial) ? loadTrainerState(partial) : null;
  if (state !== null) {
    model.loadTensors(loadCheckpoint(partial, { scoreHead: false }).tensors.values());
    optimizer.importState(state.optimizer);
    startStep = state.step;
  }
  const save = (dir: string) =>
    saveCheckpoint(dir, {
      config,
      tensors: model.namedTensors(),
      tokenizerJson: tokenizer.toJSON(),
      tokenizerConfigJson: tokenizerConfigJson(tokenizer),
    });
  model.reserve(options.microBatch, options.maxLen);
  const log = trainSft(
    model,
    tokenizer,
    optimizer,
    corpus.map((e) => ({ messages: e.messages })),
    {
      batchSize: options.batchSize,
      microBatch: options.microBatch,
      epochs: options.epochs,
      peakLr: options.peakLr,
      warmupRatio: options.warmupRatio,
      maxGradNorm: options.maxGradNorm,
      maxLen: options.maxLen,
      seed: options.seed,
      startStep,
    },
    (info) => {
      onStep?.(info);
      if ((info.step + 1) % options.saveEvery === 0 && info.step + 1 < info.totalSteps) {
        save(partial);
        saveTrainerState(partial, { step: info.step + 1, optimizer: optimizer.exportState() });
      }
    },
  );
  save(options.out);
  const finalLoss = log.length > 0 ? log[log.length - 1].loss : Number.NaN;
  writeJsonAtomic(join(options.out, "world_base.json"), {
    options: { ...options, out: undefined },
    steps: log.length + startStep,
    finalLoss,
    parameters: model.params.length,
  });
  return { steps: log.length + startStep, finalLoss, parameters: model.params.length };
}
