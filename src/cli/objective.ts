import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { objectiveInputSchema, ssoObjective } from "../sso/objective.js";
import { formatPath, UserError } from "../util/errors.js";
import { printJson } from "./common.js";

// Enough to fix several fields in one go without burying the first, most relevant one.
const MAX_ISSUES_SHOWN = 5;

/** Reads and validates an objective input file; every error names the file, and the record and field. */
function readObjectiveInput(path: string) {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new UserError(`${path}: cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new UserError(`${path}: invalid JSON (${(err as Error).message})`);
  }
  const parsed = objectiveInputSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues;
    const lines = issues
      .slice(0, MAX_ISSUES_SHOWN)
      .map((i) => `${path}: ${formatPath(i.path)}: ${i.message}`);
    if (issues.length > MAX_ISSUES_SHOWN) lines.push(`(${issues.length - MAX_ISSUES_SHOWN} more problems)`);
    throw new UserError(lines.join("\n"));
  }
  return parsed.data;
}

/** Registers `selfsteer objective --input F.json`: prints {loss, grad, metrics} for a batch of records. */
export function register(program: Command): void {
  program
    .command("objective")
    .description(
      "evaluate a preference / SSO objective on per-sequence log-probs; prints {loss, grad, metrics} as JSON",
    )
    .requiredOption(
      "--input <file>",
      "JSON: {loss, beta, labelSmoothing?, gamma?, sso? | generator?, records: [...]}",
    )
    .option("--pretty", "indent the JSON output")
    .addHelpText(
      "after",
      `
Losses: dpo, ipo, hinge (need reference values), simpo, orpo (no reference), bt (reward scores).
Each record: {"policy": {chosen, rejected, posChosen, posRejected, negChosen, negRejected},
              "reference": {same keys}, "tokens": {same keys: response token counts}}.
grad[i].policy[key] is d(mean loss)/d(record i's policy value).

Example:
  selfsteer objective --input test/fixtures/objective/sso-ipo.json --pretty`,
    )
    .action((opts: { input: string; pretty?: boolean }) => {
      const input = readObjectiveInput(opts.input);
      const { records, ...config } = input;
      printJson(ssoObjective(config, records), opts.pretty === true);
    });
}
