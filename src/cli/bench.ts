import { availableParallelism } from "node:os";
import { type Command, Option } from "commander";
import { BENCH_PRESETS, type BenchPresetName, runBench } from "../engine/bench.js";
import { createKernels } from "../engine/kernels/index.js";
import { UserError } from "../util/errors.js";
import { BACKEND_HELP, parseBackend, parseIntFlag, printJson, THREADS_HELP } from "./common.js";

interface BenchFlags {
  preset: string;
  json?: boolean;
  backend: string;
  threads?: string;
  steps: string;
  warmup: string;
  generateRuns: string;
}

function parsePreset(value: string): BenchPresetName {
  const name = value.toUpperCase();
  if (name in BENCH_PRESETS) return name as BenchPresetName;
  throw new UserError(`--preset: expected one of ${Object.keys(BENCH_PRESETS).join(", ")}, got '${value}'`);
}

/** `bench`: one preset's throughput and this process's peak RSS. */
function bench(flags: BenchFlags): void {
  const presetName = parsePreset(flags.preset);
  const backend = parseBackend(flags.backend);
  const threads =
    flags.threads === undefined ? availableParallelism() : parseIntFlag("--threads", flags.threads, 1);
  const steps = parseIntFlag("--steps", flags.steps, 1);
  const warmup = parseIntFlag("--warmup", flags.warmup, 0);
  const generateRuns = parseIntFlag("--generate-runs", flags.generateRuns, 1);
  const kernels = createKernels({ backend, threads });
  if (kernels.warning) process.stderr.write(`selfsteer: ${kernels.warning}\n`);
  kernels.waitForWorkers();
  try {
    const preset = BENCH_PRESETS[presetName];
    const result = runBench(preset, kernels, { steps, warmup, generateRuns });
    // maxRSS is in KiB; one preset per process, so it is this preset's peak (plus Node itself).
    const peakRssMB = Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10;
    const figures = {
      bench: "engine",
      preset: presetName,
      backend: kernels.name,
      kernels: kernels.backend,
      ...(kernels.note === undefined ? {} : { kernelsNote: kernels.note }),
      threads: kernels.threads,
      node: process.version,
      steps,
      ...result,
      peakRssMB,
    };
    if (flags.json === true) {
      printJson(figures);
      return;
    }
    const p = preset;
    process.stdout.write(
      `preset ${presetName}: vocab ${p.vocab}, hidden ${p.hidden}, intermediate ${p.intermediate}, ${p.layers} layers, ${p.heads}/${p.kvHeads} heads, batch ${p.batch} x ${p.seqLen} tokens; ${result.parameters} parameters on ${kernels.name}\n` +
        (kernels.note === undefined ? "" : `kernels:    ${kernels.note}\n`) +
        `training:   ${result.trainTokensPerSec.toFixed(1)} tokens/s (median step ${result.trainStepMs} ms: forward ${result.trainPhasesMs.forward}, backward ${result.trainPhasesMs.backward}, AdamW ${result.trainPhasesMs.optimizer})\n` +
        `generation: ${result.generateTokensPerSec.toFixed(1)} tokens/s (batch ${p.batch}, greedy to ${p.seqLen} tokens in ${result.generateMs} ms)\n` +
        `peak RSS:   ${peakRssMB} MB\n`,
    );
  } finally {
    kernels.dispose();
  }
}

/** Registers `selfsteer bench --preset S|M|L`: engine throughput (training, generation) and peak RSS. */
export function register(program: Command): void {
  program
    .command("bench")
    .description("measure the engine: training and generation tokens/s and peak RSS for a preset")
    .requiredOption("--preset <name>", "S, M or L (see below)")
    .option("--json", "print one JSON object of figures")
    .option("--backend <name>", BACKEND_HELP, "auto")
    .option("--threads <n>", THREADS_HELP)
    .option("--steps <n>", "timed training steps (the median is reported)", "10")
    .addOption(new Option("--warmup <n>", "untimed training steps first").default("2").hideHelp())
    .addOption(
      new Option("--generate-runs <n>", "generation runs (the best is reported)").default("3").hideHelp(),
    )
    .addHelpText(
      "after",
      `
Presets (untied, rope_theta 10000, eps 1e-5; batch 8):
  S: vocab 512,  hidden 128, intermediate 512,  4 layers, 4 heads, seq 64
  M: vocab 2048, hidden 256, intermediate 1024, 4 layers, 4 heads, seq 128
  L: vocab 4096, hidden 512, intermediate 2048, 6 layers, 8 heads, seq 128
Training: forward + backward + AdamW on random ids, next-token loss on every token, median step after
warm-up. Generation: a 16-token random prompt per row, greedy with the KV cache up to the sequence
length, best of 3 (prefill included). Peak RSS is this process's: run one preset per process
(npm run bench does, next to the PyTorch peer).

Example:
  selfsteer bench --preset M --json`,
    )
    .action((flags: BenchFlags) => bench(flags));
}
