import { CommanderError } from "commander";
import { memoryFromEnv } from "../engine/kernels/index.js";
import { UserError } from "../util/errors.js";
import { buildProgram } from "./program.js";

async function main(argv: string[]): Promise<void> {
  // Checked before any command starts work (the kernels read it wherever they are created).
  try {
    memoryFromEnv();
  } catch (err) {
    throw new UserError((err as Error).message);
  }
  const { program } = await buildProgram();
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
