import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer iterate` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("iterate")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'iterate' is not implemented yet");
    });
}
