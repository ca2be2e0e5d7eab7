import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer sft` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("sft")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'sft' is not implemented yet");
    });
}
