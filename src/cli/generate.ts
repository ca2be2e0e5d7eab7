import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer generate` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("generate")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'generate' is not implemented yet");
    });
}
