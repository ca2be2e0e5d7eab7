/**
 * Checkpoint directories in the Hugging Face layout (docs/architecture.md): config.json,
 * model.safetensors, tokenizer.json and tokenizer_config.json, so transformers, llama.cpp converters
 * and vLLM load what we save, and we load small Llama, Qwen2, Mistral and Qwen3 models they publish
 * (F32, BF16 or F16, one file of any size read tensor by tensor, or sharded with
 * model.safetensors.index.json). Training state lives beside them in
 * trainer_state.json + optimizer.safetensors, which inference tools ignore.
 */
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { UserError } from "../util/errors.js";
import { readJsonFile, writeFileAtomic, writeJsonAtomic } from "../util/fsio.js";
import { architectureName, isScoreArchitecture, type LlamaConfig, LlamaConfigSchema } from "./config.js";
import type { AdamWState } from "./optim.js";
import { llamaParamSpecs, type NamedTensor, numel } from "./params.js";
import { readSafetensorsFile, safetensorsParts } from "./safetensors.js";
import { checkConfigLimits, checkFiniteTensors } from "./validate.js";

/** File names inside a checkpoint directory. */
export const CHECKPOINT_FILES = {
  config: "config.json",
  weights: "model.safetensors",
  weightsIndex: "model.safetensors.index.json",
  tokenizer: "tokenizer.json",
  tokenizerConfig: "tokenizer_config.json",
  generationConfig: "generation_config.json",
  trainerState: "trainer_state.json",
  optimizer: "optimizer.safetensors",
} as const;

/** What a checkpoint holds. Tokenizer files are optional: a model scored by token ids needs none. */
export interface CheckpointContents {
  config: LlamaConfig;
  tensors: readonly NamedTensor[];
  tokenizerJson?: unknown;
  tokenizerConfigJson?: unknown;
  /** generation_config.json (end-of-turn ids, sampling defaults), written when given. */
  generationConfigJson?: unknown;
}

/**
 * Weights above this many bytes are written as shards (model-00001-of-0000N.safetensors plus
 * model.safetensors.index.json, as transformers' save_pretrained does), so the writer never builds
 * more than one shard's file in memory. Loading takes either layout, a single file of any size included.
 */
export const MAX_SHARD_BYTES = 1 << 30;

/** A loaded checkpoint: tensors keyed by HF name, in llamaParamSpecs order. */
export interface LoadedCheckpoint {
  config: LlamaConfig;
  tensors: Map<string, NamedTensor>;
  /** Whether this is a reward model (score.weight instead of lm_head). */
  scoreHead: boolean;
  tokenizerJson?: unknown;
  tokenizerConfigJson?: unknown;
}

/**
 * Writes a checkpoint directory, each file atomically. The tensors must be exactly those of
 * llamaParamSpecs for the config (a reward model when score.weight is among them); architectures
 * (the family's causal LM or sequence classifier), model_type and torch_dtype in config.json are set to
 * match what is written.
 */
export function saveCheckpoint(
  dir: string,
  contents: CheckpointContents,
  options: { maxShardBytes?: number } = {},
): void {
  const scoreHead = contents.tensors.some((t) => t.name === "score.weight");
  checkTensorsMatchSpecs(contents.config, contents.tensors, scoreHead);
  const config: Record<string, unknown> = {
    ...contents.config,
    architectures: [architectureName(contents.config.model_type, scoreHead)],
    model_type: contents.config.model_type,
    torch_dtype: "float32",
    // Spelled out (HF would default it to num_attention_heads) so every reader sees the attention layout.
    num_key_value_heads: contents.config.num_key_value_heads ?? contents.config.num_attention_heads,
  };
  if (scoreHead && config.num_labels === undefined) config.num_labels = 1;
  writeWeights(dir, contents.tensors, options.maxShardBytes ?? MAX_SHARD_BYTES);
  if (contents.tokenizerJson !== undefined)
    writeJsonAtomic(join(dir, CHECKPOINT_FILES.tokenizer), contents.tokenizerJson);
  if (contents.tokenizerConfigJson !== undefined)
    writeJsonAtomic(join(dir, CHECKPOINT_FILES.tokenizerConfig), contents.tokenizerConfigJson);
  if (contents.generationConfigJson !== undefined)
    writeJsonAtomic(join(dir, CHECKPOINT_FILES.generationConfig), contents.generationConfigJson);
  // config.json last: a directory with a config is one whose weights were written first.
  writeJsonAtomic(join(dir, CHECKPOINT_FILES.config), config);
}

// One model.safetensors, or shards of at most maxShardBytes of tensor data (a larger single tensor gets
// a shard of its own) and their index. The layout not written is removed afterwards, so a directory
// never offers the loader a stale file of the other kind.
function writeWeights(dir: string, tensors: readonly NamedTensor[], maxShardBytes: number): void {
  let total = 0;
  for (const t of tensors) total += 4 * t.data.length;
  const single = join(dir, CHECKPOINT_FILES.weights);
  const indexPath = join(dir, CHECKPOINT_FILES.weightsIndex);
  if (total <= maxShardBytes) {
    writeFileAtomic(single, safetensorsParts(tensors));
    removeShards(dir, indexPath);
    return;
  }
  const groups: NamedTensor[][] = [[]];
  let groupBytes = 0;
  for (const t of tensors) {
    const bytes = 4 * t.data.length;
    if (groupBytes > 0 && groupBytes + bytes > maxShardBytes) {
      groups.push([]);
      groupBytes = 0;
    }
    groups[groups.length - 1].push(t);
    groupBytes += bytes;
  }
  const pad = (n: number): string => String(n).padStart(5, "0");
  const weightMap: Record<string, string> = {};
  const written = new Set<string>();
  groups.forEach((group, i) => {
    const file = `model-${pad(i + 1)}-of-${pad(groups.length)}.safetensors`;
    writeFileAtomic(join(dir, file), safetensorsParts(group));
    written.add(file);
    for (const t of group) weightMap[t.name] = file;
  });
  // Shards of an earlier save with a different count go before the index that would not name them.
  for (const name of readdirSync(dir))
    if (/^model-\d{5}-of-\d{5}\.safetensors$/.test(name) && !written.has(name)) rmSync(join(dir, name));
  writeJsonAtomic(indexPath, { metadata: { total_size: total }, weight_map: weightMap });
  rmSync(single, { force: true });
}

// Removes a sharded layout (index first, so a half-removed one is never read as complete).
function removeShards(dir: string, indexPath: string): void {
  if (!existsSync(indexPath)) return;
  rmSync(indexPath);
  for (const name of readdirSync(dir))
    if (/^model-\d{5}-of-\d{5}\.safetensors$/.test(name)) rmSync(join(dir, name));
}

// A bug in our own code (not bad input) if a save does not match the config.
function checkTensorsMatchSpecs(
  config: LlamaConfig,
  tensors: readonly NamedTensor[],
  scoreHead: boolean,
): void {
  const specs = llamaParamSpecs(config, { scoreHead });
  const byName = new Map(tensors.map((t) => [t.name, t]));
  for (const spec of specs) {
    const t = byName.get(spec.name);
    if (!t) throw new Error(`saveCheckpoint: missing tensor ${spec.name}`);
    if (!sameShape(t.shape, spec.shape))
      throw new Error(
        `saveCheckpoint: tensor ${spec.name} has shape [${t.shape.join(", ")}], expected [${spec.shape.join(", ")}]`,
      );
    if (t.data.length !== numel(spec.shape))
      throw new Error(
        `saveCheckpoint: tensor ${spec.name} has ${t.data.length} values for shape [${spec.shape}]`,
      );
  }
  if (byName.size !== tensors.length) throw new Error("saveCheckpoint: duplicate tensor names");
  const expected = new Set(specs.map((s) => s.name));
  for (const t of tensors)
    if (!expected.has(t.name)) throw new Error(`saveCheckpoint: unexpected tensor ${t.name} for this config`);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Loads a checkpoint directory. Only config.json and the weights are required. Every parameter of
 * the config must be present with its exact shape; an extra tensor is an error (it means the config
 * and the weights disagree), except rotary inv_freq buffers that older HF exports carry, and an
 * lm_head.weight equal to the embedding in a tied model. `scoreHead` defaults to what the checkpoint
 * is (LlamaForSequenceClassification, or a score.weight present). Weights with a NaN or infinite value
 * are refused unless `allowNonFinite` (for inspecting a broken model).
 */
export function loadCheckpoint(
  dir: string,
  options: { scoreHead?: boolean; allowNonFinite?: boolean } = {},
): LoadedCheckpoint {
  const configPath = join(dir, CHECKPOINT_FILES.config);
  if (!existsSync(configPath))
    throw new UserError(`${dir}: not a checkpoint directory (no ${CHECKPOINT_FILES.config})`);
  const config = readJsonFile(configPath, LlamaConfigSchema);
  checkConfigLimits(configPath, config);

  const { tensors: raw, sourceOf } = readWeights(dir);
  const scoreHead =
    options.scoreHead ?? ((config.architectures ?? []).some(isScoreArchitecture) || raw.has("score.weight"));
  const specs = llamaParamSpecs(config, { scoreHead });
  const tensors = new Map<string, NamedTensor>();
  for (const spec of specs) {
    const t = raw.get(spec.name);
    if (!t)
      throw new UserError(
        `${dir}: missing tensor ${spec.name} (expected shape [${spec.shape.join(", ")}] for this config${
          spec.name === "score.weight" ? "; a causal LM has no score head" : ""
        })`,
      );
    if (!sameShape(t.shape, spec.shape))
      throw new UserError(
        `${sourceOf(spec.name)}: tensor ${spec.name} has shape [${t.shape.join(", ")}], expected [${spec.shape.join(", ")}] from ${configPath}`,
      );
    tensors.set(spec.name, { name: spec.name, shape: spec.shape.slice(), data: t.data });
  }
  for (const [name, t] of raw) {
    if (tensors.has(name) || name.endsWith(".rotary_emb.inv_freq")) continue;
    if (name === "lm_head.weight" && config.tie_word_embeddings && !scoreHead) {
      const embed = tensors.get("model.embed_tokens.weight")!;
      if (sameShape(t.shape, embed.shape) && t.data.every((x, i) => Object.is(x, embed.data[i]))) continue;
      throw new UserError(
        `${sourceOf(name)}: tensor lm_head.weight differs from model.embed_tokens.weight but ${configPath} says tie_word_embeddings: true`,
      );
    }
    throw new UserError(
      `${sourceOf(name)}: unexpected tensor ${name} (shape [${t.shape.join(", ")}]) not in a ${config.model_type} model with this config${
        name === "score.weight" ? " (a reward model loaded as a causal LM?)" : ""
      }`,
    );
  }

  checkFiniteTensors(tensors.values(), sourceOf, options.allowNonFinite);
  const result: LoadedCheckpoint = { config, tensors, scoreHead };
  const tokenizerJson = readOptionalJson(join(dir, CHECKPOINT_FILES.tokenizer));
  if (tokenizerJson !== undefined) result.tokenizerJson = tokenizerJson;
  const tokenizerConfigJson = readOptionalJson(join(dir, CHECKPOINT_FILES.tokenizerConfig));
  if (tokenizerConfigJson !== undefined) result.tokenizerConfigJson = tokenizerConfigJson;
  return result;
}

interface RawWeights {
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
  sourceOf: (name: string) => string;
}

function readWeights(dir: string): RawWeights {
  const single = join(dir, CHECKPOINT_FILES.weights);
  if (existsSync(single)) {
    const tensors = readSafetensorsFile(single).tensors;
    return { tensors, sourceOf: () => single };
  }
  const indexPath = join(dir, CHECKPOINT_FILES.weightsIndex);
  if (!existsSync(indexPath))
    throw new UserError(`${dir}: no ${CHECKPOINT_FILES.weights} (nor ${CHECKPOINT_FILES.weightsIndex})`);
  const index = readJsonFile(indexPath, ShardIndexSchema);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const origin = new Map<string, string>();
  const shards = [...new Set(Object.values(index.weight_map))];
  for (const shard of shards) {
    if (shard.includes("/") || shard.includes("\\") || shard.startsWith("."))
      throw new UserError(
        `${indexPath}: field weight_map: shard '${shard}' must be a file name in the directory`,
      );
    const path = join(dir, shard);
    for (const [name, t] of readSafetensorsFile(path).tensors) {
      if (index.weight_map[name] !== shard)
        throw new UserError(`${path}: tensor ${name} is not mapped to this shard in ${indexPath}`);
      tensors.set(name, t);
      origin.set(name, path);
    }
  }
  for (const [name, shard] of Object.entries(index.weight_map))
    if (!tensors.has(name))
      throw new UserError(`${join(dir, shard)}: tensor ${name} listed in ${indexPath} is missing`);
  return { tensors, sourceOf: (name) => origin.get(name) ?? indexPath };
}

const ShardIndexSchema = z.object({ weight_map: z.record(z.string(), z.string()) });

function readOptionalJson(path: string): unknown {
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new UserError(`${path}: invalid JSON (${(err as Error).message})`);
  }
}

/** Training progress saved beside a checkpoint so a run resumes exactly. */
export interface TrainerState {
  /** Optimizer updates the trainer has completed (HF's global_step). */
  step: number;
  optimizer: AdamWState;
  /** JSON-serialisable trainer bookkeeping (data position, schedule, seeds, metrics). */
  extra?: Record<string, unknown>;
}

const TRAINER_STATE_FORMAT = "selfsteer-trainer-state-v1";

const TrainerStateFileSchema = z.object({
  format: z.literal(TRAINER_STATE_FORMAT),
  global_step: z.number().int().nonnegative(),
  optimizer: z.object({
    type: z.literal("adamw"),
    step: z.number().int().nonnegative(),
    size: z.number().int().nonnegative(),
    file: z.string(),
  }),
  extra: z.record(z.string(), z.unknown()).optional(),
});

/**
 * The two files of a trainer state: optimizer.safetensors (Adam's exp_avg and exp_avg_sq as flat F32
 * tensors, the optimizer step in the metadata) and the trainer_state.json object naming that step.
 */
export function trainerStateFiles(state: TrainerState): {
  /** The file's pieces, in order (views of m and v themselves: write them before m and v change). */
  optimizerParts: ArrayBufferView[];
  stateJson: Record<string, unknown>;
} {
  const { m, v, step } = state.optimizer;
  if (m.length !== v.length)
    throw new Error(`saveTrainerState: m has ${m.length} entries, v has ${v.length}`);
  const optimizerParts = safetensorsParts(
    [
      { name: "exp_avg", shape: [m.length], data: m },
      { name: "exp_avg_sq", shape: [v.length], data: v },
    ],
    { step: String(step) },
  );
  const json: z.infer<typeof TrainerStateFileSchema> = {
    format: TRAINER_STATE_FORMAT,
    global_step: state.step,
    optimizer: { type: "adamw", step, size: m.length, file: CHECKPOINT_FILES.optimizer },
  };
  if (state.extra !== undefined) json.extra = state.extra;
  return { optimizerParts, stateJson: json };
}

/**
 * Writes trainer_state.json and optimizer.safetensors. The moments go first and the JSON last, and
 * each names the optimizer step, so a half-finished save is detected on load rather than resumed from
 * mismatched files.
 */
export function saveTrainerState(dir: string, state: TrainerState): void {
  const { optimizerParts, stateJson } = trainerStateFiles(state);
  writeFileAtomic(join(dir, CHECKPOINT_FILES.optimizer), optimizerParts);
  writeJsonAtomic(join(dir, CHECKPOINT_FILES.trainerState), stateJson);
}

/** Reads the state saveTrainerState wrote; null when the directory has none (a fresh start). */
export function loadTrainerState(dir: string): TrainerState | null {
  const jsonPath = join(dir, CHECKPOINT_FILES.trainerState);
  if (!existsSync(jsonPath)) return null;
  const json = readJsonFile(jsonPath, TrainerStateFileSchema);
  const optPath = join(dir, CHECKPOINT_FILES.optimizer);
  if (!existsSync(optPath))
    throw new UserError(`${jsonPath}: names ${CHECKPOINT_FILES.optimizer}, which is missing`);
  const file = readSafetensorsFile(optPath);
  const fileStep = file.metadata.step;
  if (fileStep !== String(json.optimizer.step))
    throw new UserError(
      `${optPath}: holds optimizer step ${fileStep ?? "(none)"} but ${jsonPath} says ${json.optimizer.step} (an interrupted save?)`,
    );
  const moment = (name: string): Float32Array => {
    const t = file.tensors.get(name);
    if (!t) throw new UserError(`${optPath}: missing tensor ${name}`);
    if (t.shape.length !== 1 || t.shape[0] !== json.optimizer.size)
      throw new UserError(
        `${optPath}: tensor ${name} has shape [${t.shape.join(", ")}], expected [${json.optimizer.size}] from ${jsonPath}`,
      );
    return t.data;
  };
  const state: TrainerState = {
    step: json.global_step,
    optimizer: { step: json.optimizer.step, m: moment("exp_avg"), v: moment("exp_avg_sq") },
  };
  if (json.extra !== undefined) state.extra = json.extra;
  return state;
}
