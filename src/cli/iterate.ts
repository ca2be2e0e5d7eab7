import type { Command } from "commander";
import { addOnlineFlags, parseOnlineFlags, runFromFlags } from "./online-flags.js";

/** Registers `selfsteer iterate`: online SSO (or a baseline) for K iterations from a base checkpoint. */
export function register(program: Command): void {
  addOnlineFlags(
    program
      .command("iterate")
      .description(
        "online SSO iterations in the principle world: build data with the policy, train, evaluate; resumable",
      ),
    { methods: "sso", seeds: "1", out: "runs/iterate" },
  ).action(async (o: Record<string, string>) => {
    const config = parseOnlineFlags(o, "iterate");
    await runFromFlags(config, o.backend, process.argv.slice(2).join(" "), (l) =>
      process.stderr.write(`${l}\n`),
    );
    process.stdout.write(`${config.runDir}/report.md\n`);
  });
}
