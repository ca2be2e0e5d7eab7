/**
 * sgemm throughput: GFLOP/s of the plain reference, the WASM SIMD kernels and the platform BLAS (when
 * found) on one thread and on every core, at 512^3 and at the shapes a training step and a decode step
 * of the engine's presets run.
 * Usage: node dist/bench/matmul.js   (prints one JSON document; best of several timed runs per cell;
 * cpusAvailable says how many CPUs the process could actually use around the run, see probeCpus)
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import {
  createKernels,
  findBlas,
  type GemmBatchItem,
  type Kernels,
  PlainKernels,
} from "../src/engine/kernels/index.js";

interface Shape {
  label: string;
  transA: boolean;
  transB: boolean;
  M: number;
  N: number;
  K: number;
}

const SHAPES: Shape[] = [
  { label: "512^3 NN", transA: false, transB: false, M: 512, N: 512, K: 512 },
  { label: "512^3 NT", transA: false, transB: true, M: 512, N: 512, K: 512 },
  { label: "512^3 TN", transA: true, transB: false, M: 512, N: 512, K: 512 },
  { label: "[1024x128]x[128x512]", transA: false, transB: false, M: 1024, N: 512, K: 128 },
  // Preset M, 8 x 128 tokens: MLP up projection forward (x W^T), its input gradient, its weight gradient.
  { label: "M fwd x@W^T 1024x1024x256", transA: false, transB: true, M: 1024, N: 1024, K: 256 },
  { label: "M bwd dY@W 1024x256x1024", transA: false, transB: false, M: 1024, N: 256, K: 1024 },
  { label: "M bwd dY^T@X 1024x256x1024", transA: true, transB: false, M: 1024, N: 256, K: 1024 },
  // Preset L decode step, batch 8: MLP up projection and lm_head.
  { label: "L decode 8x2048x512", transA: false, transB: true, M: 8, N: 2048, K: 512 },
  { label: "L decode lm_head 8x4096x512", transA: false, transB: true, M: 8, N: 4096, K: 512 },
  { label: "decode 1x2048x512", transA: false, transB: true, M: 1, N: 2048, K: 512 },
];

/** Seeded values in [-1, 1) so every backend multiplies the same numbers. */
function fill(view: Float32Array, seed: number): void {
  let state = seed >>> 0;
  for (let i = 0; i < view.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    view[i] = state / 2 ** 31 - 1;
  }
}

/** Best GFLOP/s over `runs` timed runs of at least `minMs` each (after a warm-up). */
function measure(kernels: Kernels, shape: Shape, runs: number, minMs: number): number {
  const { transA, transB, M, N, K } = shape;
  const A = kernels.alloc(M * K);
  const B = kernels.alloc(K * N);
  const C = kernels.alloc(M * N);
  fill(A, 1);
  fill(B, 2);
  const call = (): void => kernels.sgemm(transA, transB, M, N, K, 1, A, B, 0, C);
  const warmUntil = performance.now() + Math.min(minMs, 200);
  do call();
  while (performance.now() < warmUntil);
  let best = 0;
  for (let r = 0; r < runs; r++) {
    let calls = 0;
    const start = performance.now();
    let elapsed = 0;
    do {
      call();
      calls++;
      elapsed = performance.now() - start;
    } while (elapsed < minMs);
    best = Math.max(best, (2 * M * N * K * calls) / (elapsed / 1000) / 1e9);
  }
  return Math.round(best * 10) / 10;
}

/**
 * CPUs this process actually gets right now: every thread spins for `ms` and we divide the process's
 * CPU time by the wall time. On a shared or oversubscribed machine this is below the core count, and
 * the multi-threaded figures must be read against it.
 */
async function probeCpus(threads: number, ms: number): Promise<number> {
  const spin = `const end = Date.now() + ${ms}; while (Date.now() < end);`;
  const workers = Array.from({ length: threads - 1 }, () => new Worker(spin, { eval: true }));
  await Promise.all(workers.map((w) => new Promise((resolve) => w.once("online", resolve))));
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = Date.now() + ms;
  while (Date.now() < end);
  await Promise.all(workers.map((w) => new Promise((resolve) => w.once("exit", resolve))));
  const used = process.cpuUsage(cpu0);
  return Math.round(((used.user + used.system) / 1000 / (performance.now() - start)) * 100) / 100;
}

const threads = availableParallelism();
const cpusBefore = await probeCpus(threads, 300);
const plain = new PlainKernels();
const one = createKernels({ backend: "wasm", threads: 1 });
const all = createKernels({ backend: "wasm", threads });
all.waitForWorkers();
const blas = findBlas().library;
const blasOne = blas === undefined ? undefined : createKernels({ backend: "blas", threads: 1 });
const blasAll = blas === undefined ? undefined : createKernels({ backend: "blas", threads });
blasAll?.waitForWorkers();

const results = SHAPES.map((shape) => {
  const small = shape.M * shape.N * shape.K < 1e8;
  return {
    shape: shape.label,
    transA: shape.transA,
    transB: shape.transB,
    M: shape.M,
    N: shape.N,
    K: shape.K,
    gflops: {
      plain: measure(plain, shape, 2, small ? 100 : 300),
      wasm1: measure(one, shape, 5, 150),
      [`wasm${threads}`]: measure(all, shape, 5, 150),
      ...(blasOne === undefined || blasAll === undefined
        ? {}
        : { blas1: measure(blasOne, shape, 5, 150), [`blas${threads}`]: measure(blasAll, shape, 5, 150) }),
    },
  };
});
/** Attention scores q k^T of every (sequence, head) of a preset's layer: a loop of sgemm vs one batch. */
interface AttentionShape {
  label: string;
  B: number;
  H: number;
  T: number;
  D: number;
}
const ATTENTION: AttentionShape[] = [
  { label: "S scores 8x4 heads, T 64, D 32", B: 8, H: 4, T: 64, D: 32 },
  { label: "L scores 8x8 heads, T 128, D 64", B: 8, H: 8, T: 128, D: 64 },
];

/** Best GFLOP/s of all heads' q k^T, one sgemm per head (`batched` false) or one sgemmBatch. */
function measureAttention(kernels: Kernels, shape: AttentionShape, batched: boolean): number {
  const { B, H, T, D } = shape;
  const q = kernels.alloc(B * H * T * D);
  const k = kernels.alloc(B * H * T * D);
  const p = kernels.alloc(B * H * T * T);
  fill(q, 3);
  fill(k, 4);
  const items: GemmBatchItem[] = [];
  for (let i = 0; i < B * H; i++) {
    items.push({
      M: T,
      N: T,
      K: D,
      A: q.subarray(i * T * D),
      B: k.subarray(i * T * D),
      C: p.subarray(i * T * T),
    });
  }
  const call = (): void => {
    if (batched) kernels.sgemmBatch(false, true, 1, 0, items);
    else for (const it of items) kernels.sgemm(false, true, T, T, D, 1, it.A, it.B, 0, it.C);
  };
  let best = 0;
  for (let r = 0; r < 6; r++) {
    let calls = 0;
    const start = performance.now();
    let elapsed = 0;
    do {
      call();
      calls++;
      elapsed = performance.now() - start;
    } while (elapsed < 100);
    best = Math.max(best, (2 * B * H * T * T * D * calls) / (elapsed / 1000) / 1e9);
  }
  return Math.round(best * 10) / 10;
}

const attention = ATTENTION.map((shape) => ({
  shape: shape.label,
  gflops: {
    wasm1: measureAttention(one, shape, false),
    [`wasm${threads}`]: measureAttention(all, shape, false),
    [`wasm${threads} batched`]: measureAttention(all, shape, true),
    ...(blasOne === undefined || blasAll === undefined
      ? {}
      : {
          blas1: measureAttention(blasOne, shape, false),
          [`blas${threads}`]: measureAttention(blasAll, shape, false),
          [`blas${threads} batched`]: measureAttention(blasAll, shape, true),
        }),
  },
}));
const pool = all.poolStatistics?.();
const cpusAfter = await probeCpus(threads, 300);
one.dispose();
all.dispose();
blasOne?.dispose();
blasAll?.dispose();
const cpusAvailable = { before: cpusBefore, after: cpusAfter };
console.log(
  JSON.stringify(
    {
      bench: "matmul",
      node: process.version,
      threads,
      blas: blas?.description ?? null,
      cpusAvailable,
      results,
      attention,
      pool,
    },
    null,
    2,
  ),
);
