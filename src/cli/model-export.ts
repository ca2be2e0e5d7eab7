import type { Command } from "commander";
import { writeGgufFile } from "../engine/gguf.js";
import { checkpointToGguf, GGUF_EXPORT_TYPES, type GgufExportType } from "../engine/gguf-export.js";
import { UserError } from "../util/errors.js";
import { printJson } from "./common.js";
import { checkOutputPath } from "./output.js";

interface ExportOptions {
  model: string;
  format: string;
  out: string;
  type: string;
  name?: string;
}

/** `model export`: a checkpoint directory as one GGUF file for llama.cpp, Ollama and LM Studio. */
function exportModel(opts: ExportOptions): void {
  checkOutputPath("--out", opts.out, "file");
  if (opts.format !== "gguf") throw new UserError(`--format: expected gguf, got '${opts.format}'`);
  if (!(GGUF_EXPORT_TYPES as readonly string[]).includes(opts.type))
    throw new UserError(`--type: expected one of ${GGUF_EXPORT_TYPES.join(", ")}, got '${opts.type}'`);
  if (!opts.out.endsWith(".gguf"))
    throw new UserError(`--out: expected a file name ending in .gguf, got '${opts.out}'`);
  const started = performance.now();
  const contents = checkpointToGguf(opts.model, {
    type: opts.type as GgufExportType,
    ...(opts.name === undefined ? {} : { name: opts.name }),
  });
  const bytes = writeGgufFile(opts.out, contents);
  printJson({
    out: opts.out,
    format: "gguf",
    type: opts.type,
    architecture: contents.metadata.get("general.architecture")?.value,
    tokenizer: contents.metadata.get("tokenizer.ggml.model")?.value,
    pre_tokenizer: contents.metadata.get("tokenizer.ggml.pre")?.value,
    tensors: contents.tensors.length,
    bytes,
    seconds: Number(((performance.now() - started) / 1000).toFixed(3)),
  });
}

/** Registers `selfsteer model export` under the `model` command. */
export function registerExport(model: Command): void {
  model
    .command("export")
    .description(
      "write a checkpoint as one GGUF file (llama.cpp, Ollama, LM Studio), tokenizer and chat template inside",
    )
    .requiredOption("--model <dir>", "checkpoint directory (llama, mistral, qwen2 or qwen3)")
    .requiredOption("--out <file>", "the .gguf file to write (atomically)")
    .option("--format <name>", "output format: gguf", "gguf")
    .option(
      "--type <t>",
      `weight encoding: ${GGUF_EXPORT_TYPES.join(", ")} (norms and biases stay f32)`,
      "f16",
    )
    .option("--name <text>", "general.name inside the file (default: the directory's name)")
    .addHelpText(
      "after",
      `
Example:
  selfsteer model export --model assets/world-base --format gguf --out world-base.gguf --type f32
  llama-cli -m world-base.gguf -cnv        # or: ollama create world-base -f Modelfile`,
    )
    .action((opts: ExportOptions) => exportModel(opts));
}
