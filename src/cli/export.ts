import { existsSync, statSync } from "node:fs";
import { extname, resolve } from "node:path";
import type { Command } from "commander";
import { type BundleFormat, PAPER_TRAINER_SETTINGS, writeBundle } from "../sso/bundle.js";
import { EXPORT_FORMATS, type ExportFormat, exportFile } from "../sso/export.js";
import { LOSS_NAMES, type LossName } from "../sso/objective.js";
import { readRecords } from "../sso/records.js";
import { UserError } from "../util/errors.js";
import { parseIntFlag, parseNumberFlag, printJson } from "./common.js";
import { checkOutputs } from "./output.js";

interface ExportFlags {
  format: string;
  in: string;
  out: string;
  subset: string;
  badLinesTo?: string;
  model: string;
  outputDir: string;
  template: string;
  loss: string;
  beta: string;
  lr: string;
  epochs: string;
}

/** `--out` names a bundle directory unless it ends in .json or .jsonl (today's single file). */
function isBundleOut(out: string): boolean {
  if (existsSync(out) && statSync(out).isDirectory()) return true;
  if (out.endsWith("/")) return true;
  const ext = extname(out).toLowerCase();
  return ext !== ".json" && ext !== ".jsonl";
}

function isExportFormat(value: string): value is ExportFormat {
  return (EXPORT_FORMATS as readonly string[]).includes(value);
}

/** Registers `selfsteer export`: SSO records to TRL, LlamaFactory (SSO online data) or RewardBench files. */
export function register(program: Command): void {
  program
    .command("export")
    .description("convert SSO records (JSONL from 'selfsteer generate') for other trainers")
    .requiredOption("--format <format>", `one of ${EXPORT_FORMATS.join(", ")}`)
    .requiredOption("--in <file>", "SSO records JSONL")
    .requiredOption("--out <path>", "output file (.json/.jsonl, written atomically) or bundle directory")
    .option("--subset <name>", "subset name of rewardbench pairs", "sso")
    .option("--bad-lines-to <file>", "set bad record lines aside in this JSONL file instead of stopping")
    .option("--model <path>", "bundle: model to train (model_name_or_path)", "MODEL_NAME_OR_PATH")
    .option("--output-dir <dir>", "bundle: where the trainer writes the model", "saves/selfsteer-sso")
    .option(
      "--template <name>",
      "bundle (LlamaFactory): the model's chat template",
      PAPER_TRAINER_SETTINGS.template,
    )
    .option("--loss <name>", "bundle: base loss", PAPER_TRAINER_SETTINGS.loss)
    .option("--beta <x>", "bundle: preference beta", String(PAPER_TRAINER_SETTINGS.beta))
    .option("--lr <x>", "bundle: peak learning rate", String(PAPER_TRAINER_SETTINGS.learningRate))
    .option("--epochs <n>", "bundle: epochs", String(PAPER_TRAINER_SETTINGS.epochs))
    .addHelpText(
      "after",
      `
Formats:
  trl               JSONL {prompt, chosen, rejected}: the plain query, y+ preferred over y-
  llamafactory-sso  JSON array {instruction, p_system, n_system, system, chosen, rejected, raw, history,
                    principles}: the authors' LlamaFactory online-data format (all three SSO pairs)
  rewardbench       JSONL {prompt, chosen, rejected, subset, id}

With --out ending in .json or .jsonl the data alone is written to that file. Any other --out is a
bundle directory with the data and what the trainer needs (llamafactory-sso and trl only):
  llamafactory-sso  sso.json, dataset_info.json (dataset "selfsteer_sso"), train_sso.yaml for
                    llamafactory-cli (SSO, IPO, pref_beta 0.2, W_alpha 0.66, G_beta 0.1, one epoch,
                    cosine, warmup 0.1, bf16), ds_z2_config.json (DeepSpeed ZeRO-2), README.md
  trl               train.jsonl, sso_records.jsonl, dpo_config.yaml (DPOConfig), ds_z2_config.json,
                    README.md (what TRL loses: only the main pair trains)

Examples:
  selfsteer export --format trl --in records.jsonl --out records.trl.jsonl
  selfsteer export --format llamafactory-sso --in records.jsonl --out bundle/ \\
    --model Qwen/Qwen2-7B-Instruct --template qwen --output-dir saves/qwen2-sso-it1`,
    )
    .action((flags: ExportFlags) => {
      checkOutputs(
        { flag: "--out", path: flags.out, kind: isBundleOut(flags.out) ? "dir" : "file" },
        { flag: "--bad-lines-to", path: flags.badLinesTo, kind: "file" },
      );
      if (!isExportFormat(flags.format))
        throw new UserError(`--format: expected one of ${EXPORT_FORMATS.join(", ")}, got '${flags.format}'`);
      if (flags.subset.trim() === "") throw new UserError("--subset: must not be empty");
      if (resolve(flags.in) === resolve(flags.out))
        throw new UserError("--out: must differ from --in (the records would be overwritten)");
      if (isBundleOut(flags.out)) {
        if (flags.format === "rewardbench")
          throw new UserError(
            `--out ${flags.out}: a bundle directory is written for llamafactory-sso and trl only ` +
              "(give a .json or .jsonl file for this format)",
          );
        if (!(LOSS_NAMES as readonly string[]).includes(flags.loss))
          throw new UserError(`--loss: expected one of ${LOSS_NAMES.join(", ")}, got '${flags.loss}'`);
        const settings = {
          model: flags.model,
          outputDir: flags.outputDir,
          template: flags.template,
          loss: flags.loss as LossName,
          beta: parseNumberFlag("--beta", flags.beta, 0),
          learningRate: parseNumberFlag("--lr", flags.lr, 0),
          epochs: parseIntFlag("--epochs", flags.epochs, 1),
        };
        const { rows, skipped } = readRecords(flags.in, { badLinesTo: flags.badLinesTo });
        const result = writeBundle(
          rows.map((r) => r.value),
          flags.out,
          flags.format as BundleFormat,
          settings,
        );
        if (skipped > 0)
          process.stderr.write(`export: set ${skipped} bad line(s) aside in ${flags.badLinesTo}\n`);
        printJson({ ...result, skipped });
        return;
      }
      const result = exportFile(flags.in, flags.out, flags.format, {
        subset: flags.subset,
        badLinesTo: flags.badLinesTo,
      });
      if (result.skipped > 0)
        process.stderr.write(`export: set ${result.skipped} bad line(s) aside in ${flags.badLinesTo}\n`);
      printJson(result);
    });
}
