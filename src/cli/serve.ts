import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer serve` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("serve")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'serve' is not implemented yet");
    });
}
