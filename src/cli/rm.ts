import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer rm` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("rm")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'rm' is not implemented yet");
    });
}
