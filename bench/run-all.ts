/**
 * The engine benchmark side by side with its PyTorch peer: for each preset, `selfsteer bench --preset X
 * --json` in a fresh process (so peak RSS is that preset's), then bench/torch_peer.py on the same
 * preset and thread count, then the matmul kernels benchmark if it is built. Prints a table with the
 * ratios against the targets and writes everything to runs/bench/latest.json.
 *
 * Usage: node dist/bench/run-all.js [--presets S,M,L] [--threads N] [--steps N] [--backend auto|wasm|plain]
 *                                   [--repeat N] [--no-peer] [--no-matmul] [--no-llamacpp]
 * With test/interop installed, bench/llamacpp.ts adds decode speed against llama.cpp.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { availableParallelism, cpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeJsonAtomic } from "../src/util/fsio.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const PYTHON = "/usr/bin/python3";
const INSTALL_HINT = "apt-get install -y python3-torch libopenblas0-pthread";

/** Targets of the engine issue: minimum ours/peer ratios and the memory bound. */
const TARGETS: Record<string, { train: number; generate: number }> = {
  S: { train: 1.0, generate: 1.0 },
  M: { train: 1.0, generate: 1.0 },
  L: { train: 0.5, generate: 1.0 },
};
const TRAIN_M_MAX_RSS_MB = 1024;
const MATMUL_TARGET_GFLOPS = 40;

interface Figures {
  trainTokensPerSec: number;
  generateTokensPerSec: number;
  peakRssMB: number;
  [key: string]: unknown;
}

interface Args {
  presets: string[];
  threads: number;
  steps: string;
  backend: string;
  repeat: number;
  peer: boolean;
  matmul: boolean;
  llamacpp: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    presets: ["S", "M", "L"],
    threads: availableParallelism(),
    steps: "10",
    backend: "auto",
    repeat: 1,
    peer: true,
    matmul: true,
    llamacpp: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === "--presets") args.presets = value().toUpperCase().split(",");
    else if (flag === "--threads") args.threads = Number(value());
    else if (flag === "--steps") args.steps = value();
    else if (flag === "--backend") args.backend = value();
    else if (flag === "--repeat") args.repeat = Number(value());
    else if (flag === "--no-peer") args.peer = false;
    else if (flag === "--no-matmul") args.matmul = false;
    else if (flag === "--no-llamacpp") args.llamacpp = false;
    else throw new Error(`unknown flag ${flag} (see the usage at the top of bench/run-all.ts)`);
  }
  if (!Number.isInteger(args.threads) || args.threads < 1)
    throw new Error("--threads needs a positive integer");
  return args;
}

/** Runs a command; returns the last stdout line parsed as JSON, or null with the reason on stderr. */
function runJson(command: string, args: string[], label: string): Figures | null {
  const started = Date.now();
  const r = spawnSync(command, args, { cwd: root, encoding: "utf8", maxBuffer: 64 << 20 });
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  if (r.status !== 0) {
    process.stderr.write(`${label}: failed (exit ${r.status ?? r.signal}) after ${seconds} s\n${r.stderr}\n`);
    return null;
  }
  process.stderr.write(`${label}: ${seconds} s\n`);
  const text = r.stdout.trim();
  // torch_peer prints one line; matmul prints one pretty document.
  try {
    return JSON.parse(text) as Figures;
  } catch {
    const lines = text.split("\n");
    return JSON.parse(lines[lines.length - 1]) as Figures;
  }
}

/** The best throughput of several runs of one side (peak RSS: the largest), or null if none ran. */
function best(runs: (Figures | null)[]): Figures | null {
  const done = runs.filter((r): r is Figures => r !== null);
  if (done.length === 0) return null;
  const fastestTrain = done.reduce((a, b) => (b.trainTokensPerSec > a.trainTokensPerSec ? b : a));
  return {
    ...fastestTrain,
    generateTokensPerSec: Math.max(...done.map((r) => r.generateTokensPerSec)),
    peakRssMB: Math.max(...done.map((r) => r.peakRssMB)),
    runs: done.length,
  };
}

function torchAvailable(): { ok: boolean; version?: string; reason?: string } {
  if (!existsSync(PYTHON)) return { ok: false, reason: `${PYTHON} not found` };
  const r = spawnSync(PYTHON, ["-c", "import torch; print(torch.__version__)"], { encoding: "utf8" });
  if (r.status !== 0)
    return { ok: false, reason: r.stderr.trim().split("\n").pop() ?? "import torch failed" };
  return { ok: true, version: r.stdout.trim() };
}

function ratio(ours: number | undefined, peer: number | undefined): number | null {
  if (ours === undefined || peer === undefined || !(peer > 0)) return null;
  return Math.round((ours / peer) * 100) / 100;
}

function cell(value: number | null | undefined, digits = 1): string {
  return value === null || value === undefined ? "-" : value.toFixed(digits);
}

function mark(value: number | null, target: number, atLeast = true): string {
  if (value === null) return "";
  return (atLeast ? value >= target : value <= target) ? " ok" : " MISS";
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const selfsteer = join(root, "bin", "selfsteer");
  const torch = args.peer ? torchAvailable() : { ok: false, reason: "--no-peer" };
  if (args.peer && !torch.ok)
    process.stderr.write(
      `PyTorch peer skipped (${torch.reason}). To compare with it, install Debian's PyTorch:\n  ${INSTALL_HINT}\n`,
    );
  const rows: {
    preset: string;
    ours: Figures | null;
    peer: Figures | null;
    trainRatio: number | null;
    generateRatio: number | null;
  }[] = [];
  // Repeats alternate ours and the peer, so both see the same background load; each figure is the
  // best over the repeats, the usual estimate on a shared machine.
  const runs: { preset: string; ours: Figures | null; peer: Figures | null }[] = [];
  for (let repeat = 0; repeat < args.repeat; repeat++)
    for (const preset of args.presets) {
      const tag = args.repeat > 1 ? ` (run ${repeat + 1}/${args.repeat})` : "";
      const ours = runJson(
        process.execPath,
        [
          selfsteer,
          "bench",
          "--preset",
          preset,
          "--json",
          "--threads",
          String(args.threads),
          "--steps",
          args.steps,
          "--backend",
          args.backend,
        ],
        `selfsteer bench --preset ${preset}${tag}`,
      );
      const peer = torch.ok
        ? runJson(
            PYTHON,
            [
              join(root, "bench", "torch_peer.py"),
              "--preset",
              preset,
              "--threads",
              String(args.threads),
              "--steps",
              args.steps,
            ],
            `torch_peer.py --preset ${preset}${tag}`,
          )
        : null;
      runs.push({ preset, ours, peer });
    }
  for (const preset of args.presets) {
    const mine = runs.filter((r) => r.preset === preset);
    const ours = best(mine.map((r) => r.ours));
    const peer = best(mine.map((r) => r.peer));
    rows.push({
      preset,
      ours,
      peer,
      trainRatio: ratio(ours?.trainTokensPerSec, peer?.trainTokensPerSec),
      generateRatio: ratio(ours?.generateTokensPerSec, peer?.generateTokensPerSec),
    });
  }
  const matmulPath = join(root, "dist", "bench", "matmul.js");
  const matmul =
    args.matmul && existsSync(matmulPath) ? runJson(process.execPath, [matmulPath], "matmul") : null;

  const header = [
    "preset",
    "train tok/s",
    "peer",
    "ratio",
    "target",
    "generate tok/s",
    "peer",
    "ratio",
    "target",
    "RSS MB",
    "peer RSS",
  ];
  const table = rows.map((r) => {
    const target = TARGETS[r.preset] ?? { train: 1, generate: 1 };
    return [
      r.preset,
      cell(r.ours?.trainTokensPerSec),
      cell(r.peer?.trainTokensPerSec),
      `${cell(r.trainRatio, 2)}${mark(r.trainRatio, target.train)}`,
      `>= ${target.train}`,
      cell(r.ours?.generateTokensPerSec),
      cell(r.peer?.generateTokensPerSec),
      `${cell(r.generateRatio, 2)}${mark(r.generateRatio, target.generate)}`,
      `>= ${target.generate}`,
      `${cell(r.ours?.peakRssMB, 0)}${r.preset === "M" && r.ours ? mark(r.ours.peakRssMB, TRAIN_M_MAX_RSS_MB, false) : ""}`,
      cell(r.peer?.peakRssMB, 0),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i])).join("  ");
  const backend = rows.find((r) => r.ours !== null)?.ours?.backend ?? "?";
  process.stdout.write(
    `\nselfsteer engine (${String(backend)}) vs PyTorch ${torch.ok ? torch.version : "(not run)"}, ${args.threads} threads, ${cpus()[0]?.model ?? "unknown CPU"}\n`,
  );
  process.stdout.write(`${line(header)}\n${table.map(line).join("\n")}\n`);
  let matmulGflops: number | null = null;
  if (matmul !== null) {
    const results = (matmul.results ?? []) as { shape: string; gflops: Record<string, number> }[];
    const cube = results.find((r) => r.shape === "512^3 NN");
    if (cube) {
      matmulGflops = Math.max(
        ...Object.entries(cube.gflops)
          .filter(([k]) => k !== "plain")
          .map(([, v]) => v),
      );
      process.stdout.write(
        `sgemm 512^3: ${matmulGflops} GFLOP/s (target >= ${MATMUL_TARGET_GFLOPS})${mark(matmulGflops, MATMUL_TARGET_GFLOPS)}\n`,
      );
    }
  }
  const llamacpp = llamaCppPeer(args);
  const summary = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model ?? null,
    cores: availableParallelism(),
    threads: args.threads,
    steps: Number(args.steps),
    peer: torch.ok ? { name: "pytorch", version: torch.version } : { skipped: torch.reason },
    repeat: args.repeat,
    presets: rows,
    runs,
    targets: { ratios: TARGETS, trainMMaxRssMB: TRAIN_M_MAX_RSS_MB, matmulGflops: MATMUL_TARGET_GFLOPS },
    matmul: matmul === null ? null : { gflops512: matmulGflops, results: matmul.results },
    llamacpp,
  };
  const out = join(root, "runs", "bench", "latest.json");
  writeJsonAtomic(out, summary);
  process.stdout.write(`\nwritten to ${out}\n`);
  if (rows.some((r) => r.ours === null)) process.exitCode = 1;
}

/** bench/llamacpp.ts (decode against llama.cpp) when the interop package is installed; its rows are printed. */
function llamaCppPeer(args: Args): Figures | null {
  const installed = existsSync(join(root, "test", "interop", "node_modules", "node-llama-cpp"));
  if (!args.llamacpp || !installed) {
    if (args.llamacpp)
      process.stderr.write("llama.cpp peer skipped: run `npm ci --prefix test/interop` to add it\n");
    return null;
  }
  const flags = ["--threads", String(args.threads), "--repeat", String(Math.max(2, args.repeat)), "--json"];
  const result = runJson(
    process.execPath,
    [join(root, "dist", "bench", "llamacpp.js"), ...flags],
    "llamacpp",
  );
  for (const row of (result?.rows ?? []) as Record<string, number>[])
    process.stdout.write(
      `decode vs llama.cpp, ${row.sequences} sequence(s): ${row.oursTokensPerSec} vs ${row.llamaCppTokensPerSec} tok/s (ratio ${row.ratio})\n`,
    );
  return result;
}

main();
