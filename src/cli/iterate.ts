import type { Command } from "commander";
import { addExternalFlags, isExternal, runExternalFromFlags } from "./iterate-external.js";
import { addOnlineFlags, parseOnlineFlags, runFromFlags } from "./online-flags.js";

/** Registers `selfsteer iterate`: online SSO (or a baseline) for K iterations from a base checkpoint. */
export function register(program: Command): void {
  addExternalFlags(
    addOnlineFlags(
      program
        .command("iterate")
        .description(
          "online SSO iterations: in the principle world, or (with --prompts) with external servers, trainer and judge; resumable",
        ),
      { methods: "sso", seeds: "1", out: "runs/iterate" },
    ),
  )
    .addHelpText(
      "after",
      `
With --prompts, each iteration is real processes: the policy served from --policy-serve (or a running
--policy-endpoint), SSO records built with it, exported in --train-format, trained by the --train
command whose {output} becomes the next policy, and every policy judged on --eval-prompts by the gold
judge or an LLM judge (--judge-serve / --judge-endpoint). Kill it at any point and rerun the same
command to continue; commands.jsonl in --out lists every command run. See the README for vLLM +
LlamaFactory and llama.cpp templates.

Example (everything on this machine, selfsteer's own server and trainer):
  selfsteer world queries --count 64 --out train.jsonl
  selfsteer world queries --split eval --count 16 --out eval.jsonl
  selfsteer iterate --prompts train.jsonl --queries 32 --iterations 2 --out runs/ext \\
    --policy-serve '{selfsteer} serve --model {model} --port {port}' \\
    --train '{selfsteer} train --model {model} --data {data} --out {output} --sso' \\
    --eval-prompts eval.jsonl --judge-serve '{selfsteer} serve --model {model} --port {port}' \\
    --judge-model assets/world-base`,
    )
    .action(async (o: Record<string, string>) => {
      if (isExternal(o)) {
        const report = await runExternalFromFlags(o);
        process.stdout.write(`${report.runDir}/report.md\n`);
        return;
      }
      const config = parseOnlineFlags(o, "iterate");
      await runFromFlags(config, o.backend, process.argv.slice(2).join(" "), (l) =>
        process.stderr.write(`${l}\n`),
      );
      process.stdout.write(`${config.runDir}/report.md\n`);
    });
}
