/**
 * One way to open a checkpoint directory for use: read config and weights (loadCheckpoint checks
 * every tensor), build the model on the given kernels, and read the tokenizer shipped with it.
 */
import { join } from "node:path";
import { UserError } from "../util/errors.js";
import { loadChatFormat } from "./chat-format.js";
import { CHECKPOINT_FILES, type LoadedCheckpoint, loadCheckpoint } from "./checkpoint.js";
import type { LlamaConfig } from "./config.js";
import type { Kernels } from "./kernels/types.js";
import { LlamaModel } from "./model.js";
import { BpeTokenizer } from "./tokenizer.js";

/** Options of loadModelDir. */
export interface LoadModelDirOptions {
  /** Where the model computes (createKernels() in the CLI, PlainKernels in tests). */
  kernels: Kernels;
  /** Load as a reward model with a score head (default: what the checkpoint is). */
  scoreHead?: boolean;
  /** "required" (default) fails naming the directory when tokenizer.json is absent; "optional" gives null. */
  tokenizer?: "required" | "optional";
  /** Load weights with NaN or infinite values (for inspection) instead of refusing them. */
  allowNonFinite?: boolean;
}

/** A checkpoint opened for use. */
export interface LoadedModelDir<T extends BpeTokenizer | null = BpeTokenizer> {
  model: LlamaModel;
  tokenizer: T;
  config: LlamaConfig;
  dir: string;
  /** The raw tokenizer_config.json, if the directory has one. */
  tokenizerConfigJson?: unknown;
}

/** Opens a checkpoint directory with its tokenizer (required unless options.tokenizer is "optional"). */
export function loadModelDir(
  dir: string,
  options: LoadModelDirOptions & { tokenizer?: "required" },
): LoadedModelDir<BpeTokenizer>;
/** Opens a checkpoint directory; tokenizer is null when the directory has no tokenizer.json. */
export function loadModelDir(
  dir: string,
  options: LoadModelDirOptions & { tokenizer: "optional" },
): LoadedModelDir<BpeTokenizer | null>;
export function loadModelDir(dir: string, options: LoadModelDirOptions): LoadedModelDir<BpeTokenizer | null> {
  const checkpoint: LoadedCheckpoint = loadCheckpoint(dir, {
    ...(options.scoreHead === undefined ? {} : { scoreHead: options.scoreHead }),
    allowNonFinite: options.allowNonFinite === true,
  });
  const tokenizerPath = join(dir, CHECKPOINT_FILES.tokenizer);
  let tokenizer: BpeTokenizer | null = null;
  if (checkpoint.tokenizerJson !== undefined)
    tokenizer = BpeTokenizer.fromJSON(checkpoint.tokenizerJson, tokenizerPath);
  else if (options.tokenizer !== "optional")
    throw new UserError(`${dir}: no ${CHECKPOINT_FILES.tokenizer} (this command needs the tokenizer)`);
  if (tokenizer !== null && tokenizer.vocabSize > checkpoint.config.vocab_size)
    throw new UserError(
      `${tokenizerPath}: has ${tokenizer.vocabSize} tokens but ${join(dir, CHECKPOINT_FILES.config)} says vocab_size ${checkpoint.config.vocab_size}`,
    );
  // The model's own chat template and end-of-turn ids, checked now so a bad template fails before work.
  if (tokenizer !== null)
    tokenizer.chat = loadChatFormat(
      dir,
      tokenizer,
      checkpoint.tokenizerConfigJson,
      checkpoint.config.eos_token_id,
    );
  const model = new LlamaModel(checkpoint.config, options.kernels, { scoreHead: checkpoint.scoreHead });
  model.loadTensors(checkpoint.tensors.values());
  const loaded: LoadedModelDir<BpeTokenizer | null> = { model, tokenizer, config: checkpoint.config, dir };
  if (checkpoint.tokenizerConfigJson !== undefined)
    loaded.tokenizerConfigJson = checkpoint.tokenizerConfigJson;
  return loaded;
}
