import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer logprobs` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("logprobs")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'logprobs' is not implemented yet");
    });
}
