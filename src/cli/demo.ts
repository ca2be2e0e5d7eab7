import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer demo` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("demo")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'demo' is not implemented yet");
    });
}
