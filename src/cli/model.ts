import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer model` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("model")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'model' is not implemented yet");
    });
}
