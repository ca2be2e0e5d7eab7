import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer export` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("export")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'export' is not implemented yet");
    });
}
