import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { tokenizerConfigJson } from "../engine/chat.js";
import { CHECKPOINT_FILES, loadCheckpoint, saveCheckpoint } from "../engine/checkpoint.js";
import { architectureName, LlamaConfigSchema } from "../engine/config.js";
import { DEFAULT_INIT_STD, initLlamaTensors } from "../engine/init.js";
import { numel } from "../engine/params.js";
import { BpeTokenizer } from "../engine/tokenizer.js";
import { checkConfigLimits, countNonFinite } from "../engine/validate.js";
import { UserError } from "../util/errors.js";
import { readJsonFile } from "../util/fsio.js";
import { parseIntFlag, parseNumberFlag, printJson } from "./common.js";
import { registerExport } from "./model-export.js";
import { checkOutputPath } from "./output.js";

interface InitOptions {
  config: string;
  seed: string;
  out: string;
  tokenizer?: string;
  scoreHead?: boolean;
  std: string;
  force?: boolean;
}

/** `model init`: a randomly initialised checkpoint directory in the HF Llama layout. */
function initModel(opts: InitOptions): void {
  checkOutputPath("--out", opts.out, "dir");
  const seed = parseIntFlag("--seed", opts.seed, 0);
  const std = parseNumberFlag("--std", opts.std, 0);
  const config = readJsonFile(opts.config, LlamaConfigSchema);
  checkConfigLimits(opts.config, config);
  if (existsSync(join(opts.out, CHECKPOINT_FILES.config)) && opts.force !== true)
    throw new UserError(`--out ${opts.out}: already holds a checkpoint; pass --force to overwrite it`);
  const tokenizer = opts.tokenizer ? BpeTokenizer.fromFile(opts.tokenizer) : BpeTokenizer.byteLevel();
  const tokenizerSource = opts.tokenizer ?? "the byte-level tokenizer";
  if (config.vocab_size < tokenizer.vocabSize)
    throw new UserError(
      `${opts.config}: field vocab_size: ${config.vocab_size} is smaller than the ${tokenizer.vocabSize} tokens of ${tokenizerSource}`,
    );
  // HF falls back to LlamaConfig's bos 1 / eos 2 when these are absent, which are bytes in our vocabulary.
  const hasEndOfText = tokenizer.hasSpecial("<|endoftext|>");
  if (config.bos_token_id === undefined) config.bos_token_id = hasEndOfText ? tokenizer.endOfTextId : null;
  if (config.eos_token_id === undefined) config.eos_token_id = tokenizer.eosId;
  if (config.pad_token_id === undefined) config.pad_token_id = tokenizer.padId;
  for (const field of ["bos_token_id", "pad_token_id"] as const) {
    const id = config[field];
    if (typeof id === "number" && (id < 0 || id >= config.vocab_size))
      throw new UserError(`${opts.config}: field ${field}: ${id} is outside [0, ${config.vocab_size})`);
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
    },
    true,
  );
}

/** Registers `selfsteer model init` and `selfsteer model info`. */
export function register(program: Command): void {
  const model = program
    .command("model")
    .description("create and inspect checkpoints (Hugging Face Llama layout)");
  model
    .command("init")
    .description("write a randomly initialised checkpoint: config.json, model.safetensors, tokenizer files")
    .requiredOption("--config <file>", "JSON with HF LlamaConfig fields (vocab_size, hidden_size, ...)")
    .requiredOption("--seed <n>", "random seed: the same seed writes the same bytes")
    .requiredOption("--out <dir>", "checkpoint directory to write")
    .option("--tokenizer <file>", "HF tokenizer.json to ship (default: byte-level, no merges, ChatML tokens)")
    .option("--score-head", "a reward model (LlamaForSequenceClassification) with score.weight")
    .option("--std <x>", "standard deviation of the normal init of weight matrices", String(DEFAULT_INIT_STD))
    .option("--force", "overwrite a checkpoint already in --out")
    .addHelpText(
      "after",
      `
Weight matrices are drawn from N(0, std^2) and RMSNorm weights set to 1, as transformers does.
vocab_size must be at least the tokenizer's vocabulary (259 for the default byte-level one).

Example:
  echo '{"vocab_size": 512, "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
         "num_attention_heads": 4}' > c.json
  selfsteer model init --config c.json --seed 1 --out runs/init`,
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
