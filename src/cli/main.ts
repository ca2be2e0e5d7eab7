import { Command, CommanderError } from "commander";
import { UserError } from "../util/errors.js";

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

async function main(argv: string[]): Promise<void> {
  const program = new Command()
    .name("selfsteer")
    .description("Self-Steering Optimization: annotation-free alignment of language models")
    .showHelpAfterError()
    .exitOverride();
  for (const name of commandModules) {
    const mod = (await import(`./${name}.js`)) as CommandModule;
    mod.register(program);
  }
  await program.parseAsync(argv);
}

// A closed stdout (`selfsteer ... | head`) is not an error worth a stack trace.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

main(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : 2;
    return;
  }
  if (err instanceof UserError) {
    process.stderr.write(`selfsteer: ${err.message}\n`);
    process.exitCode = err.exitCode;
    return;
  }
  process.stderr.write(
    `selfsteer: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exitCode = 1;
});
