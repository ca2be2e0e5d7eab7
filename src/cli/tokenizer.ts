import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer tokenizer` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("tokenizer")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'tokenizer' is not implemented yet");
    });
}
