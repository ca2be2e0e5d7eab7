/**
 * Hand-off bundles: a directory with SSO data plus everything a trainer needs to run it with the
 * paper's hyperparameters (docs/algorithm.md, "Reference training defaults").
 *
 * - `llamafactory-sso`: for the authors' LlamaFactory fork. The field names were checked against the
 *   fork's code: `hparams/finetuning_args.py` (RLHFArguments: SSO, W_function, W_alpha, G_function,
 *   G_beta, pref_beta, pref_loss, pref_ftx), `data/parser.py` (DatasetAttr: formatting "sso", ranking,
 *   columns prompt/system/history/chosen/rejected/raw/p_system/n_system), `data/aligner.py`
 *   (convert_sso reads exactly those columns) and `train/dpo/workflow.py` (`SSO: true` selects the SSO
 *   data stage and trainer). Files: sso.json, dataset_info.json, train_sso.yaml (for
 *   `llamafactory-cli train`), ds_z2_config.json (DeepSpeed ZeRO-2), README.md.
 * - `trl`: for TRL's DPOTrainer, which has no SSO loss: only the main pair (plain query, y+ over y-)
 *   trains. Files: train.jsonl (prompt/chosen/rejected), sso_records.jsonl (every field, for an
 *   SSO-aware trainer such as integrations/trl_sso_loss.py), dpo_config.yaml (DPOConfig fields, for
 *   TRL's `--config`), ds_z2_config.json, README.md saying what is lost.
 * - `records`: the records JSONL as is (what `selfsteer train --sso` reads).
 */
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { UserError } from "../util/errors.js";
import { writeFileAtomic } from "../util/fsio.js";
import { toLlamaFactorySso, toTrl } from "./export.js";
import type { LossName } from "./objective.js";
import type { SsoRecord } from "./records.js";

/** Bundle formats. */
export const BUNDLE_FORMATS = ["llamafactory-sso", "trl", "records"] as const;

/** One bundle format. */
export type BundleFormat = (typeof BUNDLE_FORMATS)[number];

/** What goes into the trainer's configuration. Defaults are the paper's (7-8B models, 8 GPUs). */
export interface TrainerSettings {
  /** Model to start from (also the frozen reference): model_name_or_path. */
  model: string;
  /** Where the trainer writes the trained model: output_dir. */
  outputDir: string;
  /** LlamaFactory chat template name (qwen, llama3, ...; default "default"). */
  template?: string;
  /** Base loss (default ipo). */
  loss?: LossName;
  /** Preference beta (default 0.2). */
  beta?: number;
  /** Steering weight G_beta (default 0.1). */
  gBeta?: number;
  /** W's weight alpha on the chosen answer (default 0.66). */
  wAlpha?: number;
  /** Whether the W weight and the G steering term are on (default true: full SSO). */
  useW?: boolean;
  useG?: boolean;
  /** SFT coefficient pref_ftx (default 0). */
  ftx?: number;
  /** Peak learning rate (default 5e-7; scale it to your model). */
  learningRate?: number;
  /** Epochs (default 1). */
  epochs?: number;
  /** Per-device batch size (default 1) and gradient accumulation (default 16). */
  perDeviceBatchSize?: number;
  gradientAccumulation?: number;
  /** Longest sequence in tokens (default 2048). */
  cutoffLen?: number;
  /** Warmup share of steps (default 0.1). */
  warmupRatio?: number;
}

/** The paper's settings. */
export const PAPER_TRAINER_SETTINGS = {
  template: "default",
  loss: "ipo" as LossName,
  beta: 0.2,
  gBeta: 0.1,
  wAlpha: 0.66,
  useW: true,
  useG: true,
  ftx: 0,
  learningRate: 5e-7,
  epochs: 1,
  perDeviceBatchSize: 1,
  gradientAccumulation: 16,
  cutoffLen: 2048,
  warmupRatio: 0.1,
};

/** LlamaFactory's pref_loss / TRL's loss_type name of our loss (null: that trainer has no such loss). */
export function trainerLossName(loss: LossName, trainer: "llamafactory" | "trl"): string | null {
  const names: Record<LossName, [string | null, string | null]> = {
    dpo: ["sigmoid", "sigmoid"],
    ipo: ["ipo", "ipo"],
    hinge: ["hinge", "hinge"],
    simpo: ["simpo", null],
    orpo: ["orpo", null],
    bt: [null, null],
  };
  return names[loss][trainer === "llamafactory" ? 0 : 1];
}

/** A YAML scalar: numbers and booleans bare, strings JSON-quoted (a JSON string is a YAML string). */
function yamlValue(v: string | number | boolean): string {
  return typeof v === "string" ? JSON.stringify(v) : String(v);
}

/** YAML lines from [key, value] pairs; a string entry alone is a comment line. */
function yaml(entries: Array<[string, string | number | boolean] | string>): string {
  return `${entries.map((e) => (typeof e === "string" ? `# ${e}` : `${e[0]}: ${yamlValue(e[1])}`)).join("\n")}\n`;
}

/** DeepSpeed ZeRO stage 2 with "auto" values filled in by the HF Trainer from its own arguments. */
export function deepSpeedZero2Config(): Record<string, unknown> {
  return {
    train_batch_size: "auto",
    train_micro_batch_size_per_gpu: "auto",
    gradient_accumulation_steps: "auto",
    gradient_clipping: "auto",
    zero_allow_untested_optimizer: true,
    fp16: {
      enabled: "auto",
      loss_scale: 0,
      loss_scale_window: 1000,
      initial_scale_power: 16,
      hysteresis: 2,
      min_loss_scale: 1,
    },
    bf16: { enabled: "auto" },
    zero_optimization: {
      stage: 2,
      allgather_partitions: true,
      allgather_bucket_size: 5e8,
      overlap_comm: true,
      reduce_scatter: true,
      reduce_bucket_size: 5e8,
      contiguous_gradients: true,
      round_robin_gradients: true,
    },
  };
}

/** The dataset registration entry of the fork's data/dataset_info.json for a file of SSO examples. */
export function llamaFactoryDatasetInfo(
  fileName: string,
  datasetName = "selfsteer_sso",
): Record<string, unknown> {
  return {
    [datasetName]: {
      file_name: fileName,
      formatting: "sso",
      ranking: true,
      columns: {
        prompt: "instruction",
        system: "system",
        history: "history",
        chosen: "chosen",
        rejected: "rejected",
        raw: "raw",
        p_system: "p_system",
        n_system: "n_system",
      },
    },
  };
}

function settingsWithDefaults(s: TrainerSettings): Required<TrainerSettings> {
  const defined = Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined));
  return { ...PAPER_TRAINER_SETTINGS, ...defined } as Required<TrainerSettings>;
}

/** The `llamafactory-cli train` YAML of the fork: SSO with the paper's hyperparameters. */
export function llamaFactoryTrainYaml(
  settings: TrainerSettings,
  datasetDir: string,
  deepspeedPath: string,
): string {
  const s = settingsWithDefaults(settings);
  const prefLoss = trainerLossName(s.loss, "llamafactory");
  if (prefLoss === null) throw new UserError(`--loss ${s.loss}: the LlamaFactory SSO fork has no such loss`);
  return yaml([
    "Written by selfsteer export --format llamafactory-sso; run: llamafactory-cli train train_sso.yaml",
    "Field names as the authors' LlamaFactory SSO fork reads them (hparams/finetuning_args.py).",
    ["model_name_or_path", s.model],
    ["stage", "dpo"],
    ["do_train", true],
    ["finetuning_type", "full"],
    ["deepspeed", deepspeedPath],
    ["pref_loss", prefLoss],
    ["pref_beta", s.beta],
    ["pref_ftx", s.ftx],
    ["SSO", true],
    ["W_function", s.useW],
    ["W_alpha", s.wAlpha],
    ["G_function", s.useG],
    ["G_beta", s.gBeta],
    ["dataset", "selfsteer_sso"],
    ["dataset_dir", datasetDir],
    ["template", s.template],
    ["cutoff_len", s.cutoffLen],
    ["overwrite_cache", true],
    ["preprocessing_num_workers", 16],
    ["output_dir", s.outputDir],
    ["overwrite_output_dir", true],
    ["save_only_model", true],
    ["logging_steps", 1],
    ["plot_loss", true],
    ["per_device_train_batch_size", s.perDeviceBatchSize],
    ["gradient_accumulation_steps", s.gradientAccumulation],
    "The paper's learning rate is for 7-8B models; scale it to yours.",
    ["learning_rate", s.learningRate],
    ["num_train_epochs", s.epochs],
    ["lr_scheduler_type", "cosine"],
    ["warmup_ratio", s.warmupRatio],
    ["adam_beta1", 0.9],
    ["adam_beta2", 0.95],
    ["weight_decay", 0.1],
    ["bf16", true],
    ["ddp_timeout", 180000000],
  ]);
}

/** TRL DPOConfig fields (for `--config dpo_config.yaml` of TRL's scripts): the main pair only. */
export function trlDpoConfigYaml(settings: TrainerSettings, deepspeedPath: string): string {
  const s = settingsWithDefaults(settings);
  const lossType = trainerLossName(s.loss, "trl");
  if (lossType === null) throw new UserError(`--loss ${s.loss}: TRL's DPOTrainer has no such loss_type`);
  return yaml([
    "Written by selfsteer export --format trl. TRL has no SSO loss: only the main pair trains (see README.md).",
    ["model_name_or_path", s.model],
    ["output_dir", s.outputDir],
    ["loss_type", lossType],
    ["beta", s.beta],
    ["max_length", s.cutoffLen],
    ["per_device_train_batch_size", s.perDeviceBatchSize],
    ["gradient_accumulation_steps", s.gradientAccumulation],
    "The paper's learning rate is for 7-8B models; scale it to yours.",
    ["learning_rate", s.learningRate],
    ["num_train_epochs", s.epochs],
    ["lr_scheduler_type", "cosine"],
    ["warmup_ratio", s.warmupRatio],
    ["adam_beta1", 0.9],
    ["adam_beta2", 0.95],
    ["weight_decay", 0.1],
    ["bf16", true],
    ["logging_steps", 1],
    ["save_only_model", true],
    ["deepspeed", deepspeedPath],
  ]);
}

const llamaFactoryReadme = (n: number) => `# SSO data for the authors' LlamaFactory fork

${n} SSO example(s) in sso.json, registered as \`selfsteer_sso\` in dataset_info.json (formatting "sso",
ranking, columns instruction/system/history/chosen/rejected/raw/p_system/n_system), a training
configuration with the paper's hyperparameters (train_sso.yaml: IPO, pref_beta 0.2, SSO with W_alpha
0.66 and G_beta 0.1, one epoch, cosine, warmup 0.1, bf16, DeepSpeed ZeRO-2 from ds_z2_config.json).

Run it from the fork's checkout (dataset_dir in the YAML points here):

    FORCE_TORCHRUN=1 llamafactory-cli train train_sso.yaml

Set \`template\` to your model's chat template (qwen, llama3, ...) and scale \`learning_rate\` and the
batch settings to your model and GPUs.
`;

const trlReadme = (n: number) => `# SSO data for TRL

${n} example(s). TRL's DPOTrainer has no SSO loss, so with train.jsonl and dpo_config.yaml only the main
pair trains: the plain query x with y+ (chosen) preferred over y- (rejected). What is lost:

- the steering pair under the good principles (p+ x: y+ over y-) and the one under the bad principles
  (p- x: y0 over y+), i.e. the G term weighted by G_beta;
- the weight W = sigmoid(-(alpha a(x, y+) + (1 - alpha) a(x, y-))) on the steering term;
- the raw answer y0, which only the negative steering pair uses.

That is the paper's "modified PBAA" baseline, not SSO. For the full objective, sso_records.jsonl keeps
every field (instruction, p_system, n_system, chosen, rejected, raw), and selfsteer's
integrations/trl_sso_loss.py computes the SSO loss from the policy's and the reference's log-probs of
the three pairs, for a DPOTrainer subclass that scores them.

    accelerate launch --config_file <your accelerate config> <your TRL DPO script> --config dpo_config.yaml
`;

/** What writeBundle wrote. */
export interface BundleResult {
  format: BundleFormat;
  dir: string;
  records: number;
  /** The data file a trainer reads. */
  data: string;
  /** The training configuration, when the format has one. */
  config: string | null;
  files: string[];
}

/** Writes a bundle for `records` into `dir` (each file atomically). */
export function writeBundle(
  records: readonly SsoRecord[],
  dir: string,
  format: BundleFormat,
  settings: TrainerSettings,
): BundleResult {
  mkdirSync(dir, { recursive: true });
  const abs = resolve(dir);
  const files: string[] = [];
  const put = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileAtomic(path, text);
    files.push(path);
    return path;
  };
  const jsonl = (rows: readonly unknown[]) => rows.map((r) => `${JSON.stringify(r)}\n`).join("");
  switch (format) {
    case "records": {
      const data = put("records.jsonl", jsonl(records));
      return { format, dir, records: records.length, data, config: null, files };
    }
    case "llamafactory-sso": {
      const data = put("sso.json", `${JSON.stringify(records.map(toLlamaFactorySso), null, 2)}\n`);
      put("dataset_info.json", `${JSON.stringify(llamaFactoryDatasetInfo("sso.json"), null, 2)}\n`);
      const ds = put("ds_z2_config.json", `${JSON.stringify(deepSpeedZero2Config(), null, 2)}\n`);
      const config = put("train_sso.yaml", llamaFactoryTrainYaml(settings, abs, resolve(ds)));
      put("README.md", llamaFactoryReadme(records.length));
      return { format, dir, records: records.length, data, config, files };
    }
    case "trl": {
      const data = put("train.jsonl", jsonl(records.map(toTrl)));
      put("sso_records.jsonl", jsonl(records.map(toLlamaFactorySso)));
      const ds = put("ds_z2_config.json", `${JSON.stringify(deepSpeedZero2Config(), null, 2)}\n`);
      const config = put("dpo_config.yaml", trlDpoConfigYaml(settings, resolve(ds)));
      put("README.md", trlReadme(records.length));
      return { format, dir, records: records.length, data, config, files };
    }
  }
}
