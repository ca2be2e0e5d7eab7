import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer objective` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("objective")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'objective' is not implemented yet");
    });
}
