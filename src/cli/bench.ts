import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer bench` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("bench")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'bench' is not implemented yet");
    });
}
