/**
 * The BLAS backend against the same BLAS called from C: bench/sgemm.c is compiled with the system's
 * `cc` (here, when run; never at install) and both time C = A B^T at the same sizes and thread counts,
 * alternating rounds, best of each. The ratio is what going through koffi and the kernels' checks costs.
 * Usage: node dist/bench/blas-vs-c.js [--threads 1,2] [--sizes 256,512,1024] [--rounds 3]
 * Prints one JSON document (skipped: a reason, when there is no BLAS or no C compiler).
 */
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createKernels, findBlas, type Kernels } from "../src/engine/kernels/index.js";

const root = fileURLToPath(new URL("../../", import.meta.url));

function parseList(value: string | undefined, fallback: number[]): number[] {
  if (value === undefined) return fallback;
  const list = value.split(",").map(Number);
  if (list.some((n) => !Number.isInteger(n) || n < 1))
    throw new Error(`expected positive integers, got ${value}`);
  return list;
}

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
}

/** Best GFLOP/s of C = A B^T (n x n) through the kernels, same protocol as sgemm.c. */
function ours(kernels: Kernels, n: number): number {
  const A = kernels.alloc(n * n);
  const B = kernels.alloc(n * n);
  const C = kernels.alloc(n * n);
  for (let i = 0; i < n * n; i++) {
    A[i] = (i % 13) / 13 - 0.5;
    B[i] = (i % 7) / 7 - 0.5;
  }
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < 5; r++) {
    let calls = 0;
    const t0 = performance.now();
    let elapsed = 0;
    do {
      kernels.sgemm(false, true, n, n, n, 1, A, B, 0, C);
      calls++;
      elapsed = performance.now() - t0;
    } while (elapsed < 150);
    best = Math.min(best, elapsed / 1000 / calls);
  }
  for (const view of [A, B, C]) kernels.release(view);
  return Math.round(((2 * n * n * n) / best / 1e9) * 10) / 10;
}

function main(): void {
  const threadsList = parseList(flag("--threads"), [1, 2]);
  const sizes = parseList(flag("--sizes"), [256, 512, 1024]);
  const rounds = parseList(flag("--rounds"), [3])[0];
  const found = findBlas();
  if (found.library === undefined) {
    console.log(JSON.stringify({ bench: "blas-vs-c", skipped: found.reason }));
    return;
  }
  const library = found.library;
  const binary = join(root, "runs", "bench", "sgemm-c");
  mkdirSync(join(root, "runs", "bench"), { recursive: true });
  const cc = spawnSync("cc", ["-O2", "-o", binary, join(root, "bench", "sgemm.c"), "-ldl"], {
    encoding: "utf8",
  });
  if (cc.error !== undefined || cc.status !== 0) {
    const reason = cc.error?.message ?? cc.stderr.trim().split("\n")[0];
    console.log(
      JSON.stringify({
        bench: "blas-vs-c",
        library: library.description,
        skipped: `no C compiler: ${reason}`,
      }),
    );
    return;
  }
  const results: { threads: number; n: number; cGflops: number; ffiGflops: number; ratio: number }[] = [];
  for (const threads of threadsList) {
    const kernels = createKernels({ backend: "blas", threads });
    const best = new Map<number, { c: number; ffi: number }>(sizes.map((n) => [n, { c: 0, ffi: 0 }]));
    for (let round = 0; round < rounds; round++) {
      const run = spawnSync(binary, [library.path, String(threads), ...sizes.map(String)], {
        encoding: "utf8",
      });
      if (run.status !== 0) throw new Error(`sgemm-c failed: ${run.stderr}`);
      for (const line of run.stdout.trim().split("\n")) {
        const [n, gflops] = line.split(" ").map(Number);
        const entry = best.get(n);
        if (entry !== undefined) entry.c = Math.max(entry.c, gflops);
      }
      for (const n of sizes) {
        const entry = best.get(n);
        if (entry !== undefined) entry.ffi = Math.max(entry.ffi, ours(kernels, n));
      }
    }
    kernels.dispose();
    for (const [n, { c, ffi }] of best) {
      results.push({ threads, n, cGflops: c, ffiGflops: ffi, ratio: Math.round((ffi / c) * 1000) / 1000 });
    }
  }
  console.log(
    JSON.stringify(
      { bench: "blas-vs-c", library: library.description, path: library.path, rounds, results },
      null,
      2,
    ),
  );
}

main();
