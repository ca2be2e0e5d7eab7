/**
 * The engine's library entry point (`import ... from "selfsteer/engine"`): Llama-family models on the
 * CPU (forward, backward, KV-cache sampling), kernels, tokenizers, chat formatting, AdamW and
 * checkpoints in the Hugging Face layout. It knows nothing of SSO (docs/architecture.md).
 */
export { type ChatOptions, type ChatTurn, encodeChat, renderChat } from "./chat.js";
export {
  CHECKPOINT_FILES,
  type LoadedCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
} from "./checkpoint.js";
export { type LlamaConfig, LlamaConfigSchema } from "./config.js";
export { createKvCache, type KvCache } from "./decode.js";
export { type CreatedKernels, type CreateKernelsOptions, createKernels } from "./kernels/index.js";
export type { Kernels } from "./kernels/types.js";
export { type LoadedModelDir, type LoadModelDirOptions, loadModelDir } from "./load.js";
export { nextTokenLogprobs } from "./logprobs.js";
export {
  type ForwardOptions,
  type ForwardResult,
  LlamaModel,
  type LlamaModelOptions,
  type TokenBatch,
} from "./model.js";
export { AdamW, type AdamWOptions, clipGradNorm, cosineLr, decayMaskFromSpecs } from "./optim.js";
export {
  type GenerateOptions,
  generateTokens,
  type SampledSequence,
  type SamplingSettings,
} from "./sampler.js";
export { BpeTokenizer } from "./tokenizer.js";
