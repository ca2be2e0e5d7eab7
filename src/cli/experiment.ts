import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer experiment` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("experiment")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'experiment' is not implemented yet");
    });
}
