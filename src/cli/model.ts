import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { tokenizerConfigJson } from "../engine/chat.js";
import { CHECKPOINT_FILES, loadCheckpoint, saveCheckpoint } from "../engine/checkpoint.js";
import { architectureName, LlamaConfigSchema } from "../engine/config.js";
import { DEFAULT_INIT_STD, initLlamaTensors } from "../engine/init.js";
import { autoBackend } from "../engine/kernels/index.js";
import {
  LIKE_MODELS,
  likeConfig,
  likeGenerationConfig,
  likeSource,
  likeTokenizerConfig,
  likeTokenizerJson,
  parseLikeModel,
} from "../engine/like.js";
import { numel } from "../engine/params.js";
import { BpeTokenizer } from "../engine/tokenizer.js";
import { checkConfigLimits, countNonFinite } from "../engine/validate.js";
import { UserError } from "../util/errors.js";
import { readJsonFile } from "../util/fsio.js";
import { parseIntFlag, parseNumberFlag, printJson } from "./common.js";
import { registerExport } from "./model-export.js";
import { checkOutputPath } from "./output.js";

interface InitOptions {
  config?: string;
  like?: string;
  layers?: string;
  seed: string;
  out: string;
  tokenizer?: string;
  scoreHead?: boolean;
  std?: string;
  force?: boolean;
}

/** `model init`: a randomly initialised checkpoint directory in the HF layout. */
function initModel(opts: InitOptions): void {
  checkOutputPath("--out", opts.out, "dir");
  const seed = parseIntFlag("--seed", opts.seed, 0);
  if ((opts.config === undefined) === (opts.like === undefined))
    throw new UserError("model init: give exactly one of --config <file> and --like <model>");
  if (opts.like !== undefined) {
    initLikeModel(opts.like, opts, seed);
    return;
  }
  if (opts.layers !== undefined) throw new UserError("--layers: only with --like (edit the config instead)");
  const configPath = opts.config as string;
  const config = readJsonFile(configPath, LlamaConfigSchema);
  checkConfigLimits(configPath, config);
  const std = initStd(opts.std, config);
  refuseExisting(opts);
  const tokenizer = opts.tokenizer ? BpeTokenizer.fromFile(opts.tokenizer) : BpeTokenizer.byteLevel();
  const tokenizerSource = opts.tokenizer ?? "the byte-level tokenizer";
  if (config.vocab_size < tokenizer.vocabSize)
    throw new UserError(
      `${configPath}: field vocab_size: ${config.vocab_size} is smaller than the ${tokenizer.vocabSize} tokens of ${tokenizerSource}`,
    );
  // HF falls back to LlamaConfig's bos 1 / eos 2 when these are absent, which are bytes in our vocabulary.
  const hasEndOfText = tokenizer.hasSpecial("<|endoftext|>");
  if (config.bos_token_id === undefined) config.bos_token_id = hasEndOfText ? tokenizer.endOfTextId : null;
  if (config.eos_token_id === undefined) config.eos_token_id = tokenizer.eosId;
  if (config.pad_token_id === undefined) config.pad_token_id = tokenizer.padId;
  for (const field of ["bos_token_id", "pad_token_id"] as const) {
    const id = config[field];
    if (typeof id === "number" && (id < 0 || id >= config.vocab_size))
      throw new UserError(`${configPath}: field ${field}: ${id} is outside [0, ${config.vocab_size})`);
  }
  const scoreHead = opts.scoreHead === true;
  const tensors = initLlamaTensors(config, seed, { scoreHead, std });
  saveCheckpoint(opts.out, {
    config,
    tensors,
    tokenizerJson: tokenizer.toJSON(),
    tokenizerConfigJson: tokenizerConfigJson(tokenizer),
  });
  let parameters = 0;
  for (const t of tensors) parameters += numel(t.shape);
  printJson({
    out: opts.out,
    architecture: architectureName(config.model_type, scoreHead),
    parameters,
    vocab_size: config.vocab_size,
    tokenizer_vocab: tokenizer.vocabSize,
    seed,
  });
}

/** The init standard deviation: --std, else the config's initializer_range (as HF's _init_weights), else 0.02. */
function initStd(flag: string | undefined, config: Record<string, unknown>): number {
  if (flag !== undefined) return parseNumberFlag("--std", flag, 0);
  const range = config.initializer_range;
  return typeof range === "number" && range > 0 ? range : DEFAULT_INIT_STD;
}

function refuseExisting(opts: InitOptions): void {
  if (existsSync(join(opts.out, CHECKPOINT_FILES.config)) && opts.force !== true)
    throw new UserError(`--out ${opts.out}: already holds a checkpoint; pass --force to overwrite it`);
}

/** `model init --like`: a published model's exact config (or fewer layers) with random weights. */
function initLikeModel(name: string, opts: InitOptions, seed: number): void {
  const like = parseLikeModel(name);
  if (opts.tokenizer !== undefined)
    throw new UserError("--tokenizer: not with --like (the checkpoint gets a tokenizer of the model's kind)");
  const layers = opts.layers === undefined ? undefined : parseIntFlag("--layers", opts.layers, 1);
  const config = likeConfig(like, layers === undefined ? {} : { layers });
  const std = initStd(opts.std, config);
  refuseExisting(opts);
  const tokenizerJson = likeTokenizerJson(like);
  // Loading it here proves the file is one we (and HF's tokenizers, by construction) can read.
  const tokenizer = BpeTokenizer.fromJSON(tokenizerJson, `the ${like} tokenizer`);
  const scoreHead = opts.scoreHead === true;
  const tensors = initLlamaTensors(config, seed, { scoreHead, std });
  saveCheckpoint(opts.out, {
    config,
    tensors,
    tokenizerJson,
    tokenizerConfigJson: likeTokenizerConfig(like),
    generationConfigJson: likeGenerationConfig(like),
  });
  let parameters = 0;
  for (const t of tensors) parameters += numel(t.shape);
  printJson({
    out: opts.out,
    like: like,
    source: likeSource(like),
    architecture: architectureName(config.model_type, scoreHead),
    parameters,
    num_hidden_layers: config.num_hidden_layers,
    vocab_size: config.vocab_size,
    tokenizer_vocab: tokenizer.vocabSize,
    seed,
  });
}

/** `model info`: what a checkpoint directory holds (loading checks every tensor's shape and values). */
function modelInfo(opts: { model: string; allowNonfinite?: boolean }): void {
  const ckpt = loadCheckpoint(opts.model, { allowNonFinite: opts.allowNonfinite === true });
  let parameters = 0;
  const nonFinite: Record<string, number> = {};
  for (const t of ckpt.tensors.values()) {
    parameters += numel(t.shape);
    const bad = countNonFinite(t.data);
    if (bad > 0) nonFinite[t.name] = bad;
  }
  const c = ckpt.config;
  printJson(
    {
      model: opts.model,
      architecture: architectureName(c.model_type, ckpt.scoreHead),
      model_type: c.model_type,
      parameters,
      vocab_size: c.vocab_size,
      hidden_size: c.hidden_size,
      intermediate_size: c.intermediate_size,
      num_hidden_layers: c.num_hidden_layers,
      num_attention_heads: c.num_attention_heads,
      num_key_value_heads: c.num_key_value_heads ?? c.num_attention_heads,
      tie_word_embeddings: c.tie_word_embeddings,
      tokenizer: ckpt.tokenizerJson !== undefined,
      tokenizer_config: ckpt.tokenizerConfigJson !== undefined,
      // Only with --allow-nonfinite can a checkpoint with such values get this far.
      ...(opts.allowNonfinite === true ? { non_finite_values: nonFinite } : {}),
      // What --backend auto computes on here (the platform BLAS when found).
      kernels: autoBackend(),
    },
    true,
  );
}

/** Registers `selfsteer model init` and `selfsteer model info`. */
export function register(program: Command): void {
  const model = program
    .command("model")
    .description("create and inspect checkpoints (Hugging Face layout: llama, qwen2, mistral, qwen3)");
  model
    .command("init")
    .description("write a randomly initialised checkpoint: config.json, model.safetensors, tokenizer files")
    .option("--config <file>", "JSON with HF config fields (model_type, vocab_size, hidden_size, ...)")
    .option(
      "--like <model>",
      `a published model's exact config and a tokenizer of its kind: ${LIKE_MODELS.join(", ")}`,
    )
    .option("--layers <n>", "with --like: this many decoder layers instead of the model's own")
    .requiredOption("--seed <n>", "random seed: the same seed writes the same bytes")
    .requiredOption("--out <dir>", "checkpoint directory to write")
    .option("--tokenizer <file>", "HF tokenizer.json to ship (default: byte-level, no merges, ChatML tokens)")
    .option("--score-head", "a reward model (...ForSequenceClassification) with score.weight")
    .option(
      "--std <x>",
      "standard deviation of the normal init of weight matrices (default: the config's initializer_range, else 0.02)",
    )
    .option("--force", "overwrite a checkpoint already in --out")
    .addHelpText(
      "after",
      `
Weight matrices are drawn from N(0, std^2), biases set to 0 and RMSNorm weights to 1, as transformers
does. vocab_size must be at least the tokenizer's vocabulary (259 for the default byte-level one).

--like writes the model's config.json (bf16 there, F32 here), generation_config.json (its end-of-turn
ids) and a byte-level BPE tokenizer of its kind: the family's pre-tokenizer, its special tokens at their
real ids, the vocabulary padded to the real size, and a chat template rendering the model's format. The
merges come from a small built-in corpus, so texts take more tokens than with the real tokenizer.
Weights over 1 GiB are written as shards (model-00001-of-0000N.safetensors + index).

Examples:
  echo '{"vocab_size": 512, "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
         "num_attention_heads": 4}' > c.json
  selfsteer model init --config c.json --seed 1 --out runs/init
  selfsteer model init --like qwen2.5-0.5b --seed 1 --out runs/qwen2.5-0.5b-random
  selfsteer model init --like llama-3.2-1b --layers 2 --seed 1 --out runs/llama-3.2-2l`,
    )
    .action((opts: InitOptions) => initModel(opts));
  model
    .command("info")
    .description("print what a checkpoint directory holds (validates every tensor)")
    .requiredOption("--model <dir>", "checkpoint directory")
    .option(
      "--allow-nonfinite",
      "load weights holding NaN or infinite values and count them per tensor (default: refuse them)",
    )
    .action((opts: { model: string; allowNonfinite?: boolean }) => modelInfo(opts));
  registerExport(model);
}
