import { type Command, Option } from "commander";
import { offlineTable, rewardModelTable } from "../run/tables.js";
import { openKernels, parseIntFlag, parseNumberFlag } from "./common.js";
import { checkOutputPath } from "./output.js";

function seedsOf(flag: string): number[] {
  return flag.split(",").map((s) => parseIntFlag("--seeds", s.trim(), 0));
}

/** Registers `selfsteer tables offline|rm`: the paper's Tables 3 and 4 in the principle world. */
export function register(program: Command): void {
  const tables = program
    .command("tables")
    .description("the paper's offline (Table 3) and reward-model (Table 4) claims");

  tables
    .command("offline")
    .description("offline: train the base on SSO records it built vs on gold off-policy pairs, then evaluate")
    .option("--base <dir>", "base checkpoint", "assets/world-base")
    .option("--out <dir>", "run directory", "runs/offline")
    .option("--seeds <list>", "comma-separated seeds", "1,2,3")
    .option("--queries <n>", "training queries (SSO records and the same number of gold pairs)", "96")
    .addOption(new Option("--loss <name>", "base loss").choices(["ipo", "dpo"]).default("ipo"))
    .option("--lr <x>", "peak learning rate", "5e-4")
    .option("--epochs <n>", "epochs", "1")
    .option("--eval-queries <n>", "held-out queries", "70")
    .option("--backend <name>", "kernels: auto, wasm or plain", "auto")
    .action(async (o: Record<string, string>) => {
      checkOutputPath("--out", o.out, "dir");
      const kernels = openKernels(o.backend);
      try {
        await offlineTable(
          {
            baseModel: o.base,
            runDir: o.out,
            seeds: seedsOf(o.seeds),
            queries: parseIntFlag("--queries", o.queries, 1),
            maxTokens: 96,
            maxLen: 384,
            microBatch: 16,
            genBatch: 48,
            loss: o.loss as "ipo" | "dpo",
            beta: 0.2,
            epochs: parseIntFlag("--epochs", o.epochs, 1),
            batchSize: 8,
            peakLr: parseNumberFlag("--lr", o.lr, 0),
            evalQueries: parseIntFlag("--eval-queries", o.evalQueries, 1),
          },
          kernels,
          (l) => process.stderr.write(`${l}\n`),
        );
        process.stdout.write(`${o.out}/offline.md\n`);
      } finally {
        kernels.dispose();
      }
    });

  tables
    .command("rm")
    .description(
      "reward models: gold off-policy pairs vs gold + SSO pairs, on the world's RewardBench-style suite",
    )
    .option("--base <dir>", "base checkpoint (initialises the reward models)", "assets/world-base")
    .option("--out <dir>", "run directory", "runs/rm")
    .option("--seeds <list>", "comma-separated seeds", "1,2,3")
    .option("--queries <n>", "training queries for the base policy's SSO pairs", "96")
    .option("--gold-pairs <n>", "gold off-policy pairs", "192")
    .option("--lr <x>", "peak learning rate", "1e-3")
    .option("--epochs <n>", "epochs", "2")
    .option("--per-subset <n>", "suite rows per subset", "40")
    .option("--backend <name>", "kernels: auto, wasm or plain", "auto")
    .action(async (o: Record<string, string>) => {
      checkOutputPath("--out", o.out, "dir");
      const kernels = openKernels(o.backend);
      try {
        await rewardModelTable(
          {
            baseModel: o.base,
            runDir: o.out,
            seeds: seedsOf(o.seeds),
            queries: parseIntFlag("--queries", o.queries, 1),
            maxTokens: 96,
            maxLen: 384,
            microBatch: 8,
            genBatch: 48,
            goldPairs: parseIntFlag("--gold-pairs", o.goldPairs, 1),
            epochs: parseIntFlag("--epochs", o.epochs, 1),
            batchSize: 16,
            peakLr: parseNumberFlag("--lr", o.lr, 0),
            perSubset: parseIntFlag("--per-subset", o.perSubset, 1),
          },
          kernels,
          (l) => process.stderr.write(`${l}\n`),
        );
        process.stdout.write(`${o.out}/rm.md\n`);
      } finally {
        kernels.dispose();
      }
    });
}
