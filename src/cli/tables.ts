import { type Command, Option } from "commander";
import type { Kernels } from "../engine/kernels/types.js";
import { offlineTable, rewardModelTable, type TableConfig } from "../run/tables.js";
import { BACKEND_HELP, openKernels, parseIntFlag, parseNumberFlag } from "./common.js";
import { checkOutputPath } from "./output.js";

/** The flags both tables take, with the help text and default run directory of one table. */
function addTableFlags(cmd: Command, defaults: { out: string; base: string; queries: string }): Command {
  return cmd
    .option("--base <dir>", defaults.base, "assets/world-base")
    .option("--out <dir>", "run directory", defaults.out)
    .option("--seeds <list>", "comma-separated seeds", "1,2,3")
    .option("--queries <n>", defaults.queries, "96");
}

/**
 * Runs one table: checks --out, opens the kernels, fills the settings both tables share from the
 * flags (and `microBatch`), and prints the Markdown file it wrote.
 */
async function runTable(
  o: Record<string, string>,
  microBatch: number,
  markdown: string,
  run: (shared: TableConfig, kernels: Kernels, log: (line: string) => void) => Promise<unknown>,
): Promise<void> {
  checkOutputPath("--out", o.out, "dir");
  const shared: TableConfig = {
    baseModel: o.base,
    runDir: o.out,
    seeds: o.seeds.split(",").map((s) => parseIntFlag("--seeds", s.trim(), 0)),
    queries: parseIntFlag("--queries", o.queries, 1),
    maxTokens: 96,
    maxLen: 384,
    microBatch,
    genBatch: 48,
  };
  const kernels = openKernels(o.backend);
  try {
    await run(shared, kernels, (l) => process.stderr.write(`${l}\n`));
    process.stdout.write(`${o.out}/${markdown}\n`);
  } finally {
    kernels.dispose();
  }
}

/** Registers `selfsteer tables offline|rm`: the paper's Tables 3 and 4 in the principle world. */
export function register(program: Command): void {
  const tables = program
    .command("tables")
    .description("the paper's offline (Table 3) and reward-model (Table 4) claims");

  addTableFlags(
    tables
      .command("offline")
      .description(
        "offline: train the base on SSO records it built vs on gold off-policy pairs, then evaluate",
      ),
    {
      base: "base checkpoint",
      out: "runs/offline",
      queries: "training queries (SSO records and the same number of gold pairs)",
    },
  )
    .addOption(new Option("--loss <name>", "base loss").choices(["ipo", "dpo"]).default("ipo"))
    .option("--lr <x>", "peak learning rate", "5e-4")
    .option("--epochs <n>", "epochs", "1")
    .option("--eval-queries <n>", "held-out queries", "70")
    .option("--backend <name>", BACKEND_HELP, "auto")
    .action((o: Record<string, string>) =>
      runTable(o, 16, "offline.md", (shared, kernels, log) =>
        offlineTable(
          {
            ...shared,
            loss: o.loss as "ipo" | "dpo",
            beta: 0.2,
            epochs: parseIntFlag("--epochs", o.epochs, 1),
            batchSize: 8,
            peakLr: parseNumberFlag("--lr", o.lr, 0),
            evalQueries: parseIntFlag("--eval-queries", o.evalQueries, 1),
          },
          kernels,
          log,
        ),
      ),
    );

  addTableFlags(
    tables
      .command("rm")
      .description(
        "reward models: gold off-policy pairs vs gold + SSO pairs, on the world's RewardBench-style suite",
      ),
    {
      base: "base checkpoint (initialises the reward models)",
      out: "runs/rm",
      queries: "training queries for the base policy's SSO pairs",
    },
  )
    .option("--gold-pairs <n>", "gold off-policy pairs", "192")
    .option("--lr <x>", "peak learning rate", "1e-3")
    .option("--epochs <n>", "epochs", "2")
    .option("--per-subset <n>", "suite rows per subset", "40")
    .option("--backend <name>", BACKEND_HELP, "auto")
    .action((o: Record<string, string>) =>
      runTable(o, 8, "rm.md", (shared, kernels, log) =>
        rewardModelTable(
          {
            ...shared,
            goldPairs: parseIntFlag("--gold-pairs", o.goldPairs, 1),
            epochs: parseIntFlag("--epochs", o.epochs, 1),
            batchSize: 16,
            peakLr: parseNumberFlag("--lr", o.lr, 0),
            perSubset: parseIntFlag("--per-subset", o.perSubset, 1),
          },
          kernels,
          log,
        ),
      ),
    );
}
