import { resolve } from "node:path";
import type { Command } from "commander";
import { EXPORT_FORMATS, type ExportFormat, exportFile } from "../sso/export.js";
import { UserError } from "../util/errors.js";
import { printJson } from "./common.js";
import { checkOutputs } from "./output.js";

interface ExportFlags {
  format: string;
  in: string;
  out: string;
  subset: string;
  badLinesTo?: string;
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
    .requiredOption("--out <file>", "output file (written atomically)")
    .option("--subset <name>", "subset name of rewardbench pairs", "sso")
    .option("--bad-lines-to <file>", "set bad record lines aside in this JSONL file instead of stopping")
    .addHelpText(
      "after",
      `
Formats:
  trl               JSONL {prompt, chosen, rejected}: the plain query, y+ preferred over y-
  llamafactory-sso  JSON array {instruction, p_system, n_system, system, chosen, rejected, raw, history,
                    principles}: the authors' LlamaFactory online-data format (all three SSO pairs)
  rewardbench       JSONL {prompt, chosen, rejected, subset, id}

Example:
  selfsteer export --format trl --in records.jsonl --out records.trl.jsonl`,
    )
    .action((flags: ExportFlags) => {
      checkOutputs(
        { flag: "--out", path: flags.out, kind: "file" },
        { flag: "--bad-lines-to", path: flags.badLinesTo, kind: "file" },
      );
      if (!isExportFormat(flags.format))
        throw new UserError(`--format: expected one of ${EXPORT_FORMATS.join(", ")}, got '${flags.format}'`);
      if (flags.subset.trim() === "") throw new UserError("--subset: must not be empty");
      if (resolve(flags.in) === resolve(flags.out))
        throw new UserError("--out: must differ from --in (the records would be overwritten)");
      const result = exportFile(flags.in, flags.out, flags.format, {
        subset: flags.subset,
        badLinesTo: flags.badLinesTo,
      });
      if (result.skipped > 0)
        process.stderr.write(`export: set ${result.skipped} bad line(s) aside in ${flags.badLinesTo}\n`);
      printJson(result);
    });
}
