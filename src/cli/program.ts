import { Command } from "commander";
import { checkAllOptions } from "./flags.js";

// One small file per command; each exports `register(program)`. Keep this list sorted.
const commandModules = [
  "bench",
  "demo",
  "experiment",
  "export",
  "generate",
  "iterate",
  "judge",
  "logprobs",
  "model",
  "objective",
  "rm",
  "sample",
  "serve",
  "sft",
  "tables",
  "tokenizer",
  "train",
  "world",
] as const;

/** A CLI command module. */
export interface CommandModule {
  register(program: Command): void;
}

/** The program and the options that have no parse-time rule (the tests require there be none). */
export interface BuiltProgram {
  program: Command;
  unruled: string[];
}

/** The `selfsteer` program with every command registered and every option's value checked at parse time. */
export async function buildProgram(): Promise<BuiltProgram> {
  const program = new Command()
    .name("selfsteer")
    .description("Self-Steering Optimization: annotation-free alignment of language models")
    .showHelpAfterError()
    .exitOverride();
  for (const name of commandModules) {
    const mod = (await import(`./${name}.js`)) as CommandModule;
    mod.register(program);
  }
  const unruled = checkAllOptions(program);
  return { program, unruled };
}
