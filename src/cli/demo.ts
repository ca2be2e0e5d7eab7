import type { Command } from "commander";
import { DEMO_SCALE } from "../run/experiment.js";
import { addOnlineFlags, parseOnlineFlags, runFromFlags } from "./online-flags.js";

/** Registers `selfsteer demo` (what `npm start` runs): 3 iterations each of sso and pbaa from the base, 3 seeds. */
export function register(program: Command): void {
  addOnlineFlags(
    program
      .command("demo")
      .description(
        "the demo: 3 online iterations each of SSO and PBAA from the world's base policy, 3 seeds, paired intervals",
      ),
    { methods: "sso,pbaa", seeds: "1,2,3", out: "runs/demo", scale: DEMO_SCALE },
  ).action(async (o: Record<string, string>) => {
    const config = parseOnlineFlags(o, "demo");
    const t0 = Date.now();
    await runFromFlags(config, o.backend, `selfsteer demo ${process.argv.slice(3).join(" ")}`.trim(), (l) =>
      process.stdout.write(`${l}\n`),
    );
    process.stdout.write(
      `\nreport: ${config.runDir}/report.md, ${config.runDir}/report.json, plots in ${config.runDir}/plots/ (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`,
    );
  });
}
