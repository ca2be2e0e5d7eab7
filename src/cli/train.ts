import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer train` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("train")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'train' is not implemented yet");
    });
}
