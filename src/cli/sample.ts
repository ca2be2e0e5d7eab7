import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer sample` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("sample")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'sample' is not implemented yet");
    });
}
