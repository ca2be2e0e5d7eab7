import { availableParallelism } from "node:os";
import { type Command, Option } from "commander";
import {
  BENCH_PRESETS,
  type BenchPreset,
  type BenchPresetName,
  type BenchResult,
  measureCopyBandwidth,
  type PhaseProfile,
  runBench,
} from "../engine/bench.js";
import { UserError } from "../util/errors.js";
import { BACKEND_HELP, openKernels, parseBackend, parseIntFlag, printJson, THREADS_HELP } from "./common.js";

interface BenchFlags {
  preset: string;
  json?: boolean;
  profile?: boolean;
  backend: string;
  threads?: string;
  steps?: string;
  warmup?: string;
  generateRuns?: string;
  seqLen?: string;
  batch?: string;
}

/** Steps, warm-up steps and generation runs by default: fewer for XL, whose step takes seconds. */
const DEFAULT_RUNS: Record<BenchPresetName, { steps: number; warmup: number; generateRuns: number }> = {
  S: { steps: 10, warmup: 2, generateRuns: 3 },
  M: { steps: 10, warmup: 2, generateRuns: 3 },
  L: { steps: 10, warmup: 2, generateRuns: 3 },
  XL: { steps: 3, warmup: 1, generateRuns: 2 },
};

function parsePreset(value: string): BenchPresetName {
  const name = value.toUpperCase();
  if (name in BENCH_PRESETS) return name as BenchPresetName;
  throw new UserError(`--preset: expected one of ${Object.keys(BENCH_PRESETS).join(", ")}, got '${value}'`);
}

function phaseLine(label: string, p: PhaseProfile): string {
  const parts = [`products ${p.matmul}`, `attention products ${p.attentionProducts}`];
  if (p.elementwise > 0) parts.push(`compiled element-wise ${p.elementwise}`);
  parts.push(`other ${p.other}`);
  return `  ${label.padEnd(9)} ${String(p.total).padStart(9)} ms: ${parts.join(", ")}\n`;
}

function profileText(result: BenchResult, copyGBPerSec: number | undefined): string {
  const p = result.profile;
  if (p === undefined) return "";
  const share = (p.outsideProductsShare * 100).toFixed(1);
  const decode = (label: string, d: (typeof p)["decodeSingle"]): string => {
    const ofBound =
      copyGBPerSec === undefined
        ? ""
        : `, ${((d.impliedGBPerSec / copyGBPerSec) * 100).toFixed(0)}% of the copy bandwidth`;
    return `  ${label}: ${d.tokensPerSec} tokens/s, ${(d.bytesPerStep / 1e6).toFixed(1)} MB read per step -> ${d.impliedGBPerSec} GB/s${ofBound}\n`;
  };
  return (
    `profile (median step, ms):\n${phaseLine("forward", p.forward)}${phaseLine("backward", p.backward)}${phaseLine("AdamW", p.optimizer)}` +
    `  outside matrix products: ${share}% of the step\n` +
    `decode (greedy, KV cache, prefill included):\n${decode("1 sequence ", p.decodeSingle)}${decode(`${p.decodeBatched.sequences} sequences`, p.decodeBatched)}` +
    (copyGBPerSec === undefined ? "" : `memory copy bandwidth (one thread, 256 MiB): ${copyGBPerSec} GB/s\n`)
  );
}

/** `bench`: one preset's throughput and this process's peak RSS. */
function bench(flags: BenchFlags): void {
  const presetName = parsePreset(flags.preset);
  const backend = parseBackend(flags.backend);
  const threads =
    flags.threads === undefined ? availableParallelism() : parseIntFlag("--threads", flags.threads, 1);
  const defaults = DEFAULT_RUNS[presetName];
  const steps = flags.steps === undefined ? defaults.steps : parseIntFlag("--steps", flags.steps, 1);
  const warmup = flags.warmup === undefined ? defaults.warmup : parseIntFlag("--warmup", flags.warmup, 0);
  const generateRuns =
    flags.generateRuns === undefined
      ? defaults.generateRuns
      : parseIntFlag("--generate-runs", flags.generateRuns, 1);
  const preset: BenchPreset = { ...BENCH_PRESETS[presetName] };
  if (flags.seqLen !== undefined) preset.seqLen = parseIntFlag("--seq-len", flags.seqLen, 17);
  if (flags.batch !== undefined) preset.batch = parseIntFlag("--batch", flags.batch, 1);
  const profile = flags.profile === true;
  const kernels = openKernels(backend, threads);
  kernels.waitForWorkers();
  try {
    const result = runBench(preset, kernels, { steps, warmup, generateRuns, profile });
    // maxRSS is in KiB; one preset per process, so it is this preset's peak (plus Node itself).
    const peakRssMB = Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10;
    // After the RSS reading: the copy's two 256 MiB buffers must not count as the model's memory.
    const copyGBPerSec = profile ? measureCopyBandwidth() : undefined;
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
      ...(copyGBPerSec === undefined ? {} : { copyGBPerSec }),
    };
    if (flags.json === true) {
      printJson(figures);
      return;
    }
    const p = preset;
    process.stdout.write(
      `preset ${presetName}: vocab ${p.vocab}, hidden ${p.hidden}, intermediate ${p.intermediate}, ${p.layers} layers, ${p.heads}/${p.kvHeads} heads${p.tied === true ? ", tied" : ""}, batch ${p.batch} x ${p.seqLen} tokens; ${result.parameters} parameters on ${kernels.name}\n` +
        (kernels.note === undefined ? "" : `kernels:    ${kernels.note}\n`) +
        `training:   ${result.trainTokensPerSec.toFixed(1)} tokens/s (median step ${result.trainStepMs} ms: forward ${result.trainPhasesMs.forward}, backward ${result.trainPhasesMs.backward}, AdamW ${result.trainPhasesMs.optimizer})\n` +
        `generation: ${result.generateTokensPerSec.toFixed(1)} tokens/s (batch ${p.batch}, greedy to ${p.seqLen} tokens in ${result.generateMs} ms)\n` +
        `peak RSS:   ${peakRssMB} MB\n` +
        profileText(result, copyGBPerSec),
    );
  } finally {
    kernels.dispose();
  }
}

/** Registers `selfsteer bench --preset S|M|L|XL`: engine throughput (training, generation) and peak RSS. */
export function register(program: Command): void {
  program
    .command("bench")
    .description("measure the engine: training and generation tokens/s and peak RSS for a preset")
    .requiredOption("--preset <name>", "S, M, L or XL (see below)")
    .option("--json", "print one JSON object of figures")
    .option("--profile", "also break the step down by phase and measure decoding against memory bandwidth")
    .option("--backend <name>", BACKEND_HELP, "auto")
    .option("--threads <n>", THREADS_HELP)
    .option("--steps <n>", "timed training steps (the median is reported; default 10, XL 3)")
    .option("--seq-len <n>", "override the preset's sequence length")
    .option("--batch <n>", "override the preset's batch size")
    .addOption(new Option("--warmup <n>", "untimed training steps first (default 2, XL 1)").hideHelp())
    .addOption(
      new Option("--generate-runs <n>", "generation runs (the best is reported; default 3, XL 2)").hideHelp(),
    )
    .addHelpText(
      "after",
      `
Presets (rope_theta 10000, eps 1e-5):
  S:  vocab 512,   hidden 128, intermediate 512,  4 layers,  4 heads,        seq 64,  batch 8
  M:  vocab 2048,  hidden 256, intermediate 1024, 4 layers,  4 heads,        seq 128, batch 8
  L:  vocab 4096,  hidden 512, intermediate 2048, 6 layers,  8 heads,        seq 128, batch 8
  XL: vocab 49152, hidden 576, intermediate 1536, 30 layers, 9 heads / 3 KV, seq 256, batch 2, tied
      (shaped like SmolLM2-135M, random weights)
Training: forward + backward + AdamW on random ids, next-token loss on every token, median step after
warm-up. Generation: a 16-token random prompt per row, greedy with the KV cache up to the sequence
length, best of 3 (prefill included). Peak RSS is this process's: run one preset per process
(npm run bench does, next to the PyTorch peer). --profile splits each phase into matrix products,
attention's batched products, compiled element-wise loops and the rest, and adds single-stream and
batched decoding with the memory traffic they imply against a one-thread copy's bandwidth.

Example:
  selfsteer bench --preset M --json
  selfsteer bench --preset L --seq-len 512 --profile`,
    )
    .action((flags: BenchFlags) => bench(flags));
}
