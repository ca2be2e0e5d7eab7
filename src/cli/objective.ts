import type { Command } from "commander";
import { objectiveInputSchema, ssoObjective } from "../sso/objective.js";
import { readJsonFile } from "../util/fsio.js";
import { printJson } from "./common.js";

// Enough to fix several fields in one go without burying the first, most relevant one.
const MAX_ISSUES_SHOWN = 5;

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
      const input = readJsonFile(opts.input, objectiveInputSchema, MAX_ISSUES_SHOWN);
      const { records, ...config } = input;
      printJson(ssoObjective(config, records), opts.pretty === true);
    });
}
