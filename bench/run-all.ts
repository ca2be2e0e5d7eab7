/**
 * The engine benchmark side by side with its PyTorch peer, in one run: for each thread count and
 * preset, `selfsteer bench --preset X --json` in a fresh process (so peak RSS is that preset's), then
 * bench/torch_peer.py on the same preset and thread count; repeats alternate the two sides so both see
 * the same background load, and each figure is the best over the repeats. Then the BLAS backend
 * against the same BLAS called from C (bench/blas-vs-c.ts) and the matmul kernels (bench/matmul.ts).
 * Prints one table per thread count with the ratios against the targets and writes everything to
 * runs/bench/latest.json.
 *
 * With test/interop installed, bench/llamacpp.ts adds decode speed against llama.cpp.
 *
 * Usage: node dist/bench/run-all.js [--presets S,M,L,XL] [--threads 1,2] [--repeat N]
 *                                   [--backend auto|blas|wasm|plain] [--steps N]
 *                                   [--no-peer] [--no-matmul] [--no-c] [--no-llamacpp]
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

/** Targets of the engine issue: ours / PyTorch on the same preset and thread count, at least. */
const TRAIN_RATIO_TARGET = 1.2;
const GENERATE_RATIO_TARGET = 1.5;
/** BLAS through FFI within 10% of the same BLAS called from C. */
const FFI_RATIO_TARGET = 0.9;

interface Figures {
  trainTokensPerSec: number;
  generateTokensPerSec: number;
  peakRssMB: number;
  trainPeakRssMB?: number;
  [key: string]: unknown;
}

interface Args {
  presets: string[];
  threads: number[];
  steps: string | undefined;
  backend: string;
  repeat: number;
  peer: boolean;
  matmul: boolean;
  c: boolean;
  llamacpp: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    presets: ["S", "M", "L", "XL"],
    threads: [...new Set([1, Math.min(2, availableParallelism())])],
    steps: undefined,
    backend: "auto",
    repeat: 2,
    peer: true,
    matmul: true,
    c: true,
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
    else if (flag === "--threads") args.threads = value().split(",").map(Number);
    else if (flag === "--steps") args.steps = value();
    else if (flag === "--backend") args.backend = value();
    else if (flag === "--repeat") args.repeat = Number(value());
    else if (flag === "--no-peer") args.peer = false;
    else if (flag === "--no-matmul") args.matmul = false;
    else if (flag === "--no-c") args.c = false;
    else if (flag === "--no-llamacpp") args.llamacpp = false;
    else throw new Error(`unknown flag ${flag} (see the usage at the top of bench/run-all.ts)`);
  }
  if (args.threads.some((t) => !Number.isInteger(t) || t < 1))
    throw new Error("--threads needs positive integers, comma-separated");
  if (!Number.isInteger(args.repeat) || args.repeat < 1) throw new Error("--repeat needs a positive integer");
  return args;
}

/** Runs a command; returns its stdout parsed as JSON (one document, or the last line), or null. */
function runJson(command: string, args: string[], label: string, env?: NodeJS.ProcessEnv): Figures | null {
  const started = Date.now();
  const r = spawnSync(command, args, {
    cwd: root,
    encoding: "utf8",
    maxBuffer: 64 << 20,
    env: env === undefined ? process.env : { ...process.env, ...env },
  });
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  if (r.status !== 0) {
    process.stderr.write(`${label}: failed (exit ${r.status ?? r.signal}) after ${seconds} s\n${r.stderr}\n`);
    return null;
  }
  process.stderr.write(`${label}: ${seconds} s\n`);
  const text = r.stdout.trim();
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
  const trainRss = done.map((r) => r.trainPeakRssMB).filter((v): v is number => typeof v === "number");
  return {
    ...fastestTrain,
    generateTokensPerSec: Math.max(...done.map((r) => r.generateTokensPerSec)),
    peakRssMB: Math.max(...done.map((r) => r.peakRssMB)),
    ...(trainRss.length > 0 ? { trainPeakRssMB: Math.max(...trainRss) } : {}),
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

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i])).join("  ");
  return `${line(header)}\n${rows.map(line).join("\n")}\n`;
}

interface Row {
  preset: string;
  threads: number;
  ours: Figures | null;
  peer: Figures | null;
  trainRatio: number | null;
  generateRatio: number | null;
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const selfsteer = join(root, "bin", "selfsteer");
  const torch = args.peer ? torchAvailable() : { ok: false, reason: "--no-peer" };
  if (args.peer && !torch.ok)
    process.stderr.write(
      `PyTorch peer skipped (${torch.reason}). To compare with it, install Debian's PyTorch:\n  ${INSTALL_HINT}\n`,
    );
  const runs: { preset: string; threads: number; ours: Figures | null; peer: Figures | null }[] = [];
  for (let repeat = 0; repeat < args.repeat; repeat++)
    for (const threads of args.threads)
      for (const preset of args.presets) {
        const tag = `${threads} thread${threads === 1 ? "" : "s"}${args.repeat > 1 ? `, run ${repeat + 1}/${args.repeat}` : ""}`;
        const steps = args.steps === undefined ? [] : ["--steps", args.steps];
        const oursRun = (): Figures | null =>
          runJson(
            process.execPath,
            [
              selfsteer,
              "bench",
              "--preset",
              preset,
              "--json",
              "--threads",
              String(threads),
              "--backend",
              args.backend,
              ...steps,
            ],
            `selfsteer bench --preset ${preset} (${tag})`,
          );
        const peerRun = (): Figures | null =>
          torch.ok
            ? runJson(
                PYTHON,
                [
                  join(root, "bench", "torch_peer.py"),
                  "--preset",
                  preset,
                  "--threads",
                  String(threads),
                  ...steps,
                ],
                `torch_peer.py --preset ${preset} (${tag})`,
                // OpenBLAS sizes its own pool by every core unless told; the peer also sets it itself.
                { OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) },
              )
            : null;
        // Alternate which side goes first, so neither always meets the other's leftover load.
        let ours: Figures | null;
        let peer: Figures | null;
        if (repeat % 2 === 0) {
          ours = oursRun();
          peer = peerRun();
        } else {
          peer = peerRun();
          ours = oursRun();
        }
        runs.push({ preset, threads, ours, peer });
      }
  const rows: Row[] = [];
  for (const threads of args.threads)
    for (const preset of args.presets) {
      const mine = runs.filter((r) => r.preset === preset && r.threads === threads);
      const ours = best(mine.map((r) => r.ours));
      const peer = best(mine.map((r) => r.peer));
      rows.push({
        preset,
        threads,
        ours,
        peer,
        trainRatio: ratio(ours?.trainTokensPerSec, peer?.trainTokensPerSec),
        generateRatio: ratio(ours?.generateTokensPerSec, peer?.generateTokensPerSec),
      });
    }

  const blasVsC = args.c
    ? runJson(process.execPath, [join(root, "dist", "bench", "blas-vs-c.js")], "blas-vs-c")
    : null;
  const matmulPath = join(root, "dist", "bench", "matmul.js");
  const matmul =
    args.matmul && existsSync(matmulPath) ? runJson(process.execPath, [matmulPath], "matmul") : null;

  const firstOurs = rows.find((r) => r.ours !== null)?.ours;
  const firstPeer = rows.find((r) => r.peer !== null)?.peer;
  process.stdout.write(
    `\nselfsteer engine vs PyTorch ${torch.ok ? torch.version : "(not run)"} on ${cpus()[0]?.model ?? "unknown CPU"} (${availableParallelism()} cores), best of ${args.repeat} alternating runs\n`,
  );
  process.stdout.write(
    `  ours: ${String(firstOurs?.kernels ?? "?")}: ${String(firstOurs?.backend ?? "?")}\n`,
  );
  if (firstPeer !== undefined && firstPeer !== null) {
    const k = (firstPeer.kernels ?? {}) as Record<string, unknown>;
    const core =
      k.openblas === undefined ? "" : `, OpenBLAS ${String(k.openblas)} core ${String(k.openblasCore)}`;
    process.stdout.write(
      `  peer: torch BLAS_INFO=${String(k.torchBlas)}, CPU capability ${String(k.cpuCapability)}${core} (${((k.libraries as string[]) ?? []).join(", ")})\n`,
    );
  }
  const header = [
    "preset",
    "train tok/s",
    "peer",
    "ratio",
    "generate tok/s",
    "peer",
    "ratio",
    "train RSS MB",
    "peer",
  ];
  for (const threads of args.threads) {
    process.stdout.write(
      `\n${threads} thread${threads === 1 ? "" : "s"} (targets: training >= ${TRAIN_RATIO_TARGET}x, generation >= ${GENERATE_RATIO_TARGET}x, XL training memory below the peer's)\n`,
    );
    const body = rows
      .filter((r) => r.threads === threads)
      .map((r) => {
        const oursRss = r.ours?.trainPeakRssMB ?? r.ours?.peakRssMB;
        const peerRss = r.peer?.trainPeakRssMB ?? r.peer?.peakRssMB;
        const memoryMark =
          r.preset === "XL" && oursRss !== undefined && peerRss !== undefined
            ? mark(oursRss, peerRss, false)
            : "";
        return [
          r.preset,
          cell(r.ours?.trainTokensPerSec),
          cell(r.peer?.trainTokensPerSec),
          `${cell(r.trainRatio, 2)}${mark(r.trainRatio, TRAIN_RATIO_TARGET)}`,
          cell(r.ours?.generateTokensPerSec),
          cell(r.peer?.generateTokensPerSec),
          `${cell(r.generateRatio, 2)}${mark(r.generateRatio, GENERATE_RATIO_TARGET)}`,
          `${cell(oursRss, 0)}${memoryMark}`,
          cell(peerRss, 0),
        ];
      });
    process.stdout.write(table(header, body));
  }
  const cResults = (blasVsC?.results ?? []) as {
    threads: number;
    n: number;
    cGflops: number;
    ffiGflops: number;
    ratio: number;
  }[];
  if (cResults.length > 0) {
    process.stdout.write(
      `\nsgemm C = A B^T through the BLAS backend vs ${String(blasVsC?.library)} called from C (target >= ${FFI_RATIO_TARGET})\n`,
    );
    process.stdout.write(
      table(
        ["threads", "n", "C GFLOP/s", "FFI GFLOP/s", "ratio"],
        cResults.map((r) => [
          String(r.threads),
          String(r.n),
          cell(r.cGflops),
          cell(r.ffiGflops),
          `${cell(r.ratio, 3)}${mark(r.ratio, FFI_RATIO_TARGET)}`,
        ]),
      ),
    );
  } else if (blasVsC !== null) process.stdout.write(`\nBLAS vs C: skipped (${String(blasVsC.skipped)})\n`);
  const llamacpp = llamaCppPeer(args);
  const summary = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model ?? null,
    cores: availableParallelism(),
    threads: args.threads,
    repeat: args.repeat,
    peer: torch.ok ? { name: "pytorch", version: torch.version } : { skipped: torch.reason },
    targets: {
      trainRatio: TRAIN_RATIO_TARGET,
      generateRatio: GENERATE_RATIO_TARGET,
      ffiRatio: FFI_RATIO_TARGET,
    },
    presets: rows,
    runs,
    blasVsC,
    matmul,
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
  // At the largest thread count of the run.
  const threads = Math.max(...args.threads);
  const flags = ["--threads", String(threads), "--repeat", String(Math.max(2, args.repeat)), "--json"];
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
