import { type Command, Option } from "commander";
import { type ExperimentConfig, ONLINE_DEFAULTS, runExperiment } from "../run/experiment.js";
import {
  type IterationMetrics,
  METHODS,
  type Method,
  ONLINE_LOSSES,
  type OnlineLoss,
} from "../run/online.js";
import type { RunReport } from "../run/report.js";
import { UserError } from "../util/errors.js";
import { BACKEND_HELP, openKernels, parseIntFlag, parseNumberFlag } from "./common.js";
import { checkOutputPath } from "./output.js";

/** Adds the flags shared by `iterate`, `demo` and `experiment`, with the given defaults. */
export function addOnlineFlags(
  cmd: Command,
  defaults: {
    methods: string;
    seeds: string;
    out: string;
    /** Overrides of ONLINE_DEFAULTS for this command (the demo's smaller scale). */
    scale?: Partial<typeof ONLINE_DEFAULTS>;
  },
): Command {
  const d = { ...ONLINE_DEFAULTS, ...defaults.scale };
  return cmd
    .option("--base <dir>", "base checkpoint (iteration 0)", "assets/world-base")
    .option("--out <dir>", "run directory", defaults.out)
    .option("--methods <list>", `comma-separated: ${METHODS.join(", ")}`, defaults.methods)
    .option("--seeds <list>", "comma-separated seeds", defaults.seeds)
    .addOption(new Option("--loss <name>", "base loss").choices([...ONLINE_LOSSES]).default(d.loss))
    .option("--beta <x>", "preference beta", String(d.beta))
    .option("--steer-beta <x>", "G_beta, the scale of the steering pairs (sso, no-weight; default 0.1)")
    .option("--iterations <n>", "iterations", String(d.iterations))
    .option("--queries <n>", "fresh training queries per iteration", String(d.queriesPerIteration))
    .option("--eval-queries <n>", "held-out evaluation queries", String(d.evalQueries))
    .option("--max-tokens <n>", "token limit of sampled answers", String(d.maxTokens))
    .option("--lr <x>", "peak learning rate", String(d.peakLr))
    .option("--batch-size <n>", "records per optimizer step", String(d.batchSize))
    .option("--epochs <n>", "epochs per iteration", String(d.epochs))
    .option("--max-len <n>", "longest training sequence", String(d.maxLen))
    .option("--backend <name>", BACKEND_HELP, "auto");
}

/** Parses the shared flags into an experiment configuration (errors name the flag). */
export function parseOnlineFlags(o: Record<string, string>, name: string): ExperimentConfig {
  checkOutputPath("--out", o.out, "dir");
  const methods = o.methods.split(",").map((m) => m.trim());
  for (const m of methods)
    if (!(METHODS as readonly string[]).includes(m))
      throw new UserError(`--methods: unknown method '${m}' (expected ${METHODS.join(", ")})`);
  const seeds = o.seeds.split(",").map((s) => parseIntFlag("--seeds", s.trim(), 0));
  return {
    ...ONLINE_DEFAULTS,
    name,
    baseModel: o.base,
    runDir: o.out,
    methods: methods as Method[],
    seeds,
    loss: o.loss as OnlineLoss,
    beta: parseNumberFlag("--beta", o.beta, 0),
    ...(o.steerBeta === undefined ? {} : { steerBeta: parseNumberFlag("--steer-beta", o.steerBeta, 0) }),
    iterations: parseIntFlag("--iterations", o.iterations, 1),
    queriesPerIteration: parseIntFlag("--queries", o.queries, 1),
    evalQueries: parseIntFlag("--eval-queries", o.evalQueries, 1),
    maxTokens: parseIntFlag("--max-tokens", o.maxTokens, 1),
    evalMaxTokens: parseIntFlag("--max-tokens", o.maxTokens, 1),
    peakLr: parseNumberFlag("--lr", o.lr, 0),
    batchSize: parseIntFlag("--batch-size", o.batchSize, 1),
    epochs: parseIntFlag("--epochs", o.epochs, 1),
    maxLen: parseIntFlag("--max-len", o.maxLen, 8),
  };
}

function fmt(v: number | null | undefined, digits = 3): string {
  return v === null || v === undefined ? "   —  " : v.toFixed(digits).padStart(6);
}

/** One table row for an iteration, printed as the run goes. */
export function iterationLine(method: string, seed: number, m: IterationMetrics): string {
  return [
    method.padEnd(14),
    String(seed).padStart(4),
    String(m.iteration).padStart(4),
    fmt(m.goldScore),
    fmt(m.winRate),
    fmt(m.winRateLC),
    fmt(m.exactMatch),
    m.meanLength.toFixed(0).padStart(6),
    fmt(m.signalAccuracy),
    fmt(m.onPolicyGap),
  ].join("  ");
}

/** Header of the table printed as the run goes. */
export const ITERATION_HEADER = [
  "method        ",
  "seed",
  "iter",
  "  gold",
  "   win",
  "LC win",
  " exact",
  "length",
  "signal",
  "   gap",
].join("  ");

/** Runs an experiment from parsed flags, printing the table as it goes (stderr) and the report path. */
export async function runFromFlags(
  config: ExperimentConfig,
  backend: string,
  commandLine: string,
  print: (line: string) => void,
): Promise<RunReport> {
  const kernels = openKernels(backend);
  const started = Date.now();
  // The header waits for the first row, so a refusal before any work is the only line printed.
  let headed = false;
  let lastStage = "";
  try {
    return await runExperiment(
      config,
      kernels,
      { command: commandLine, config, kernels: kernels.name, startedAt: new Date(started).toISOString() },
      (e) => {
        if (e.type === "iteration") {
          if (!headed) print(ITERATION_HEADER);
          headed = true;
          print(iterationLine(e.method, e.seed, e.metrics));
        } else if (e.type === "warning") {
          print(`  ${e.method} seed ${e.seed} iteration ${e.iteration}: ${e.text}`);
        } else if (e.type === "stage") {
          const label = `  [${((Date.now() - started) / 1000).toFixed(0)}s] ${e.method} seed ${e.seed} iteration ${e.iteration}: ${e.stage}`;
          if (label !== lastStage && process.stderr.isTTY) process.stderr.write(`${label}\r`);
          lastStage = label;
        }
      },
    );
  } finally {
    kernels.dispose();
  }
}
