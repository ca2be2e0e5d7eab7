import type { Command } from "commander";
import { METHODS } from "../run/online.js";
import { addOnlineFlags, parseOnlineFlags, runFromFlags } from "./online-flags.js";

/** Registers `selfsteer experiment` (what `npm run experiment` runs): every method, 3 seeds. */
export function register(program: Command): void {
  addOnlineFlags(
    program
      .command("experiment")
      .description("every method for 3 iterations over several seeds (mean and spread)"),
    { methods: METHODS.join(","), seeds: "1,2,3", out: "runs/experiment" },
  ).action(async (o: Record<string, string>) => {
    const config = parseOnlineFlags(o, "experiment");
    await runFromFlags(
      config,
      o.backend,
      `selfsteer experiment ${process.argv.slice(3).join(" ")}`.trim(),
      (l) => process.stdout.write(`${l}\n`),
    );
    process.stdout.write(`\nreport: ${config.runDir}/report.md\n`);
  });
}
