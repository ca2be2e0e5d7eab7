import { type Command, Option } from "commander";
import { loadModelDir } from "../engine/load.js";
import { LOSS_NAMES, objectiveConfigSchema } from "../sso/objective.js";
import { readPreferenceRecords } from "../sso/pairs.js";
import { METRIC } from "../train/loop.js";
import { requiredKeys, runPreferenceTraining, scoreRecords } from "../train/preference.js";
import { UserError } from "../util/errors.js";
import {
  BACKEND_HELP,
  openKernels,
  parseIntFlag,
  parseNumberFlag,
  printJson,
  progressBar,
} from "./common.js";
import { checkOutputPath } from "./output.js";

/** Registers `selfsteer train`: offline preference training on a fixed file of records or pairs. */
export function register(program: Command): void {
  program
    .command("train")
    .description(
      "offline preference training on SSO records (or plain pairs): main pair, or the full SSO objective",
    )
    .requiredOption("--model <dir>", "policy checkpoint to start from (also the frozen reference)")
    .requiredOption("--data <file>", "records.jsonl (SSO records) or pairs (prompt, chosen, rejected)")
    .requiredOption("--out <dir>", "checkpoint directory to write")
    .addOption(
      new Option("--loss <name>", "base loss").choices(LOSS_NAMES.filter((l) => l !== "bt")).default("ipo"),
    )
    .option("--sso", "the full SSO objective (W and G) instead of the main pair only")
    .option("--beta <x>", "preference beta", "0.2")
    .option("--epochs <n>", "epochs", "1")
    .option("--lr <x>", "peak learning rate", "5e-4")
    .option("--batch-size <n>", "records per step", "8")
    .option("--micro-batch <n>", "sequences per forward pass", "16")
    .option("--max-len <n>", "longest sequence in tokens", "384")
    .option("--warmup-ratio <x>", "warmup share of steps", "0.1")
    .option("--weight-decay <x>", "AdamW weight decay", "0.1")
    .option("--max-grad-norm <x>", "gradient clipping", "1")
    .option("--seed <n>", "data order seed", "1")
    .option("--save-every <n>", "save a resumable state every n steps", "20")
    .option("--restart", "discard what --out holds from an earlier run and start over")
    .option("--backend <name>", BACKEND_HELP, "auto")
    .action((o: Record<string, string | boolean | undefined>) => {
      checkOutputPath("--out", String(o.out), "dir");
      const s = (k: string) => String(o[k]);
      const sso = o.sso === true;
      const objective = objectiveConfigSchema.parse({
        loss: s("loss"),
        beta: parseNumberFlag("--beta", s("beta"), 0),
        ...(sso ? { sso: {} } : {}),
      });
      const records = readPreferenceRecords(s("data"), sso);
      if (records.length === 0) throw new UserError(`${s("data")}: no records`);
      const out = s("out");
      const options = {
        maxLen: parseIntFlag("--max-len", s("maxLen"), 8),
        microBatch: parseIntFlag("--micro-batch", s("microBatch"), 1),
        objective,
        batchSize: parseIntFlag("--batch-size", s("batchSize"), 1),
        epochs: parseIntFlag("--epochs", s("epochs"), 1),
        peakLr: parseNumberFlag("--lr", s("lr"), 0),
        warmupRatio: parseNumberFlag("--warmup-ratio", s("warmupRatio"), 0, 1),
        maxGradNorm: parseNumberFlag("--max-grad-norm", s("maxGradNorm"), 0),
        seed: parseIntFlag("--seed", s("seed"), 0),
      };
      const weightDecay = parseNumberFlag("--weight-decay", s("weightDecay"), 0);
      const saveEvery = parseIntFlag("--save-every", s("saveEvery"), 1);
      const kernels = openKernels(s("backend"));
      try {
        const { model, tokenizer } = loadModelDir(s("model"), { kernels, scoreHead: false });
        const bar = progressBar();
        const result = runPreferenceTraining(
          {
            out,
            restart: o.restart === true,
            restartHint: "pass --restart",
            model,
            tokenizer,
            records,
            options,
            weightDecay,
            saveEvery,
            // The reference is the starting policy, scored once before any update.
            reference: () =>
              ["dpo", "ipo", "hinge"].includes(objective.loss)
                ? scoreRecords(model, tokenizer, records, requiredKeys(objective), options)
                : null,
            onWarning: (line) => process.stderr.write(`selfsteer: ${line}\n`),
          },
          {
            onStart: ({ startStep, totalSteps }) => {
              bar.start(totalSteps, "train");
              bar.update(startStep);
            },
            onStep: (info) =>
              bar.update(info.step + 1, {
                loss: info.loss.toFixed(4),
                acc: (info.metrics[METRIC.rewardsAccuracies] ?? 0).toFixed(2),
              }),
          },
        );
        bar.stop();
        if (result.alreadyComplete)
          process.stderr.write(
            `selfsteer: ${out} already complete; nothing to do (--restart trains again)\n`,
          );
        const last = result.records[result.records.length - 1];
        printJson({
          out,
          records: records.length,
          objective,
          steps: result.step,
          alreadyComplete: result.alreadyComplete,
          finalLoss: last?.loss ?? null,
          finalMetrics: last?.metrics ?? null,
        });
      } finally {
        kernels.dispose();
      }
    });
}
