import type { Command } from "commander";
import { EXPERIMENT_METHODS, EXPERIMENT_SEEDS } from "../run/experiment.js";
import { parseGrid } from "../run/grid.js";
import { addOnlineFlags, parseOnlineFlags, runFromFlags } from "./online-flags.js";

/** Registers `selfsteer experiment` (what `npm run experiment` runs): six methods, 5 seeds; or a grid. */
export function register(program: Command): void {
  addOnlineFlags(
    program
      .command("experiment")
      .description(
        "the comparison of docs/protocol.md: six methods, 3 iterations, 5 seeds, paired intervals against pbaa",
      )
      .option(
        "--grid <axis...>",
        "the steering study: key=v1,v2 per axis (steerBeta, loss, beta), e.g. --grid steerBeta=0.1,0.3,1 loss=ipo,dpo; runs sso per cell and pbaa per base loss (plus --methods only when given)",
      ),
    { methods: EXPERIMENT_METHODS.join(","), seeds: EXPERIMENT_SEEDS.join(","), out: "runs/experiment" },
  ).action(async (o: Record<string, string> & { grid?: string[] }, cmd: Command) => {
    const config = parseOnlineFlags(o, "experiment");
    if (o.grid !== undefined) {
      config.grid = parseGrid(o.grid);
      // A grid runs its own cells; the default method list joins it only when asked for.
      if (cmd.getOptionValueSource("methods") !== "cli") config.methods = [];
    }
    await runFromFlags(
      config,
      o.backend,
      `selfsteer experiment ${process.argv.slice(3).join(" ")}`.trim(),
      (l) => process.stdout.write(`${l}\n`),
    );
    process.stdout.write(`\nreport: ${config.runDir}/report.md\n`);
  });
}
