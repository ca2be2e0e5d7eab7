import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Worker } from "node:worker_threads";
import { type Command, Option } from "commander";
import { z } from "zod";
import { CHECKPOINT_FILES } from "../engine/checkpoint.js";
import { LlamaConfigSchema } from "../engine/config.js";
import { METRIC } from "../train/loop.js";
import type { SftExample, SftRunSettings } from "../train/sft.js";
import { UserError } from "../util/errors.js";
import { readJsonFile } from "../util/fsio.js";
import { readJsonl } from "../util/jsonl.js";
import {
  BACKEND_HELP,
  parseBackend,
  parseIntFlag,
  parseNumberFlag,
  printJson,
  progressBar,
} from "./common.js";
import { checkOutputPath } from "./output.js";
import type { SftWorkerData, SftWorkerMessage } from "./sft-worker.js";

interface SftFlags {
  model: string;
  data: string;
  out: string;
  epochs: string;
  lr: string;
  batchSize: string;
  microBatch?: string;
  maxLen?: string;
  warmupRatio: string;
  weightDecay: string;
  maxGradNorm: string;
  seed: string;
  saveEvery: string;
  backend: string;
  force?: boolean;
  restart?: boolean;
  progress?: boolean;
  throttleMs: string;
}

const MessageSchema = z.object({
  role: z.enum(["system", "user", "assistant"]),
  content: z.string(),
});

/** One line of an SFT data file: {"messages": [...]} (loss on assistant turns) or {"text": "..."}. */
const SftLineSchema = z
  .object({ messages: z.array(MessageSchema).optional(), text: z.string().optional() })
  .passthrough()
  .superRefine((line, ctx) => {
    if (line.messages === undefined && line.text === undefined)
      ctx.addIssue({ code: "custom", path: ["messages"], message: 'expected "messages" (a chat) or "text"' });
    else if (line.messages !== undefined && line.text !== undefined)
      ctx.addIssue({ code: "custom", path: ["text"], message: 'give "messages" or "text", not both' });
    else if (line.messages !== undefined && !line.messages.some((m) => m.role === "assistant"))
      ctx.addIssue({ code: "custom", path: ["messages"], message: "no assistant turn to learn from" });
    else if (line.text !== undefined && line.text === "")
      ctx.addIssue({ code: "custom", path: ["text"], message: "empty text" });
  });

/** Reads and checks the data file; errors name file:line:field. */
function readExamples(path: string): { examples: SftExample[]; sha256: string } {
  const { rows } = readJsonl(path, SftLineSchema);
  if (rows.length === 0) throw new UserError(`${path}: no examples`);
  const examples: SftExample[] = rows.map(({ value }) =>
    value.messages !== undefined ? { messages: value.messages } : { text: value.text ?? "" },
  );
  const sha256 = createHash("sha256").update(readFileSync(path)).digest("hex");
  return { examples, sha256 };
}

/** Mean of the last k values. */
function tailMean(values: readonly number[], k: number): number {
  const tail = values.slice(-k);
  return tail.reduce((a, b) => a + b, 0) / Math.max(1, tail.length);
}

/** `sft`: supervised next-token training on a worker thread; signals save and stop it. */
async function sft(flags: SftFlags): Promise<void> {
  checkOutputPath("--out", flags.out, "dir");
  const epochs = parseIntFlag("--epochs", flags.epochs, 1);
  const lr = parseNumberFlag("--lr", flags.lr, 0);
  const batchSize = parseIntFlag("--batch-size", flags.batchSize, 1);
  const microBatch =
    flags.microBatch === undefined
      ? Math.min(batchSize, 8)
      : parseIntFlag("--micro-batch", flags.microBatch, 1);
  const warmupRatio = parseNumberFlag("--warmup-ratio", flags.warmupRatio, 0, 1);
  const weightDecay = parseNumberFlag("--weight-decay", flags.weightDecay, 0);
  const maxGradNormFlag = parseNumberFlag("--max-grad-norm", flags.maxGradNorm, 0);
  const seed = parseIntFlag("--seed", flags.seed, 0);
  const saveEvery = parseIntFlag("--save-every", flags.saveEvery, 0);
  const throttleMs = parseIntFlag("--throttle-ms", flags.throttleMs, 0);
  const backend = parseBackend(flags.backend);
  const modelDir = resolve(flags.model);
  const out = resolve(flags.out);
  if (out === modelDir)
    throw new UserError("--out: must differ from --model (the base checkpoint would be overwritten mid-run)");
  const config = readJsonFile(join(modelDir, CHECKPOINT_FILES.config), LlamaConfigSchema);
  const maxPositions = config.max_position_embeddings;
  const maxLen =
    flags.maxLen === undefined ? Math.min(512, maxPositions) : parseIntFlag("--max-len", flags.maxLen, 2);
  if (maxLen > maxPositions)
    throw new UserError(
      `--max-len: ${maxLen} exceeds max_position_embeddings ${maxPositions} of ${flags.model}`,
    );
  const { examples, sha256 } = readExamples(flags.data);
  const settings: SftRunSettings = {
    dataSha256: sha256,
    examples: examples.length,
    epochs,
    lr,
    batchSize,
    microBatch,
    maxLen,
    warmupRatio,
    weightDecay,
    // 0 turns clipping off; JSON cannot hold Infinity, so the settings keep the flag's value.
    maxGradNorm: maxGradNormFlag,
    seed,
  };
  const stop = new SharedArrayBuffer(4);
  const data: SftWorkerData = {
    out,
    modelDir,
    examples,
    settings,
    saveEvery,
    backend,
    force: flags.force === true || flags.restart === true,
    throttleMs,
    stop,
  };
  const worker = new Worker(new URL("./sft-worker.js", import.meta.url), { workerData: data });
  const bar = progressBar({ force: flags.progress === true });
  // A drawn bar leaves the cursor mid-line; plain progress lines end with a newline already.
  const lineBreak = flags.progress === true || process.stderr.isTTY === true ? "\n" : "";
  let signal: NodeJS.Signals | null = null;
  const onSignal = (name: NodeJS.Signals): void => {
    if (signal !== null) {
      // A second signal: leave now; the last completed save stays resumable.
      process.stderr.write(`${lineBreak}selfsteer: ${name} again, exiting without saving\n`);
      process.exit(name === "SIGINT" ? 130 : 143);
    }
    signal = name;
    Atomics.store(new Int32Array(stop), 0, name === "SIGINT" ? 2 : 15);
    process.stderr.write(
      `${lineBreak}selfsteer: ${name}: saving after the current step (send again to quit at once)\n`,
    );
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const losses: number[] = [];
  let tokens = 0;
  let startStep = 0;
  let totalSteps = 0;
  let lastStep = 0;
  let resumedFrom: string | null = null;
  let started = 0;
  let finished: Extract<SftWorkerMessage, { type: "done" }> | null = null;
  let failure: Extract<SftWorkerMessage, { type: "error" }> | null = null;
  try {
    await new Promise<void>((resolveRun, rejectRun) => {
      worker.on("message", (message: SftWorkerMessage) => {
        switch (message.type) {
          case "warning":
            process.stderr.write(`selfsteer: ${message.message}\n`);
            break;
          case "start":
            ({ startStep, totalSteps, resumedFrom } = message);
            lastStep = startStep;
            if (resumedFrom !== null && startStep < totalSteps)
              process.stderr.write(
                `selfsteer: resuming from ${resumedFrom} at step ${startStep}/${totalSteps}\n`,
              );
            started = performance.now();
            bar.start(totalSteps - startStep, "sft");
            break;
          case "step": {
            const { info } = message;
            losses.push(info.loss);
            tokens += info.metrics[METRIC.tokens] ?? 0;
            lastStep = info.step + 1;
            const seconds = (performance.now() - started) / 1000;
            bar.update(lastStep - startStep, {
              step: `${lastStep}/${totalSteps}`,
              loss: info.loss.toFixed(4),
              "tok/s": (tokens / Math.max(seconds, 1e-9)).toFixed(0),
              lr: info.lr.toExponential(2),
            });
            break;
          }
          case "saved":
            if (message.dir !== out)
              process.stderr.write(`${lineBreak}selfsteer: saved step ${message.step} to ${message.dir}\n`);
            break;
          case "done":
            finished = message;
            break;
          case "error":
            failure = message;
            break;
        }
      });
      worker.on("error", rejectRun);
      worker.on("exit", () => resolveRun());
    });
  } finally {
    bar.stop();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  const failed = failure as Extract<SftWorkerMessage, { type: "error" }> | null;
  if (failed !== null) {
    if (failed.user) throw new UserError(failed.message, failed.exitCode);
    throw new Error(failed.message);
  }
  const done = finished as Extract<SftWorkerMessage, { type: "done" }> | null;
  if (done === null) throw new Error("the training worker exited without a result");
  const seconds = started > 0 ? (performance.now() - started) / 1000 : 0;
  const interrupted = !done.complete;
  if (done.alreadyComplete)
    process.stderr.write(
      `selfsteer: ${flags.out} already complete (step ${done.step}/${totalSteps}); nothing to do (--restart trains again)\n`,
    );
  printJson({
    out: flags.out,
    model: flags.model,
    data: flags.data,
    examples: examples.length,
    complete: done.complete,
    alreadyComplete: done.alreadyComplete,
    interrupted,
    resumedFrom,
    startStep,
    step: done.step,
    totalSteps,
    stepsRun: lastStep - startStep,
    tokens,
    seconds: Number(seconds.toFixed(3)),
    tokensPerSec: seconds > 0 ? Number((tokens / seconds).toFixed(1)) : 0,
    lastLoss: losses.length > 0 ? losses[losses.length - 1] : null,
    meanLossLast10: losses.length > 0 ? tailMean(losses, 10) : null,
  });
  if (interrupted) {
    process.stderr.write(
      `selfsteer: stopped at step ${done.step}/${totalSteps}; rerun the same command to resume\n`,
    );
    process.exitCode = signal === "SIGTERM" ? 143 : 130;
  }
}

/** Registers `selfsteer sft`: supervised fine-tuning (next-token loss) with exact resume. */
export function register(program: Command): void {
  program
    .command("sft")
    .description("supervised fine-tuning on chat examples or raw text; Ctrl-C saves, rerunning resumes")
    .requiredOption("--model <dir>", "base checkpoint directory (with tokenizer.json)")
    .requiredOption(
      "--data <file>",
      'JSONL: {"messages": [{"role", "content"}, ...]} or {"text": "..."} per line',
    )
    .requiredOption("--out <dir>", "output directory: checkpoints while training, the final model at the end")
    .option("--epochs <n>", "passes over the data", "1")
    .option("--lr <x>", "peak learning rate (cosine schedule with warmup)", "3e-4")
    .option("--batch-size <n>", "sequences per optimizer step", "16")
    .option(
      "--micro-batch <n>",
      "sequences per forward pass (gradients accumulate; default min(8, batch size))",
    )
    .option("--max-len <n>", "tokens per sequence at most (default min(512, max_position_embeddings))")
    .option("--warmup-ratio <x>", "fraction of steps warming up", "0.1")
    .option("--weight-decay <x>", "AdamW decoupled weight decay (matrices only)", "0.1")
    .option("--max-grad-norm <x>", "global gradient-norm clip (0: off)", "1")
    .option("--seed <n>", "data order seed", "0")
    .option(
      "--save-every <n>",
      "save a resumable checkpoint every n steps (0: only on signals and at the end)",
      "100",
    )
    .option("--backend <name>", BACKEND_HELP, "auto")
    .option("--restart", "start over in --out, discarding what an earlier run left there")
    .addOption(new Option("--force", "the same as --restart").hideHelp())
    .option("--progress", "draw the progress bar even when stderr is not a terminal")
    .addOption(new Option("--throttle-ms <n>", "sleep after each step (tests)").default("0").hideHelp())
    .addHelpText(
      "after",
      `
Chat examples learn the assistant turns and their end-of-turn tokens (the model's chat template, ChatML
when it has none; an empty system prompt adds no turn); raw text learns every token and ends with
<|endoftext|> (or the model's eos_token). Loss = mean next-token NLL over a step's scored tokens.
SIGINT/SIGTERM save model + optimizer state after the current step into --out/checkpoint-N and exit
(130/143); --save-every does the same periodically. Rerunning the same command resumes at the next
step and ends with the same weights, bit for bit, as an uninterrupted run on the same backend.

Example:
  selfsteer sft --model runs/init --data runs/world/sft.jsonl --out runs/base --epochs 3 --lr 1e-3`,
    )
    .action((flags: SftFlags) => sft(flags));
}
