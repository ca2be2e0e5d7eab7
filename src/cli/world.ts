import type { Command } from "commander";
import { UserError } from "../util/errors.js";

/** Registers `selfsteer world` (not implemented yet). */
export function register(program: Command): void {
  program
    .command("world")
    .description("(not implemented yet)")
    .allowUnknownOption()
    .action(() => {
      throw new UserError("'world' is not implemented yet");
    });
}
