import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, test } from "node:test";
import fc from "fast-check";
import {
  createKernels,
  findBlas,
  type Kernels,
  kernelsModule,
  PlainKernels,
  plainSgemm,
  WasmKernels,
} from "../src/engine/kernels/index.js";
import { Rng } from "../src/util/rng.js";
import { FAST_BACKENDS, kernelsOf } from "./helpers/backends.js";

const TRANS: [boolean, boolean][] = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
];

const single = createKernels({ backend: "wasm", threads: 1 });
const threaded = createKernels({ backend: "wasm", threads: 2 });
/** Kernels of each fast backend present, one and two threads (created on first use, disposed at the end). */
const opened = new Map<string, Kernels>();
function backendKernels(name: (typeof FAST_BACKENDS)[number], threads: number): Kernels {
  const key = `${name.name}/${threads}`;
  let kernels = opened.get(key);
  if (kernels === undefined) {
    kernels = kernelsOf(name, threads);
    opened.set(key, kernels);
  }
  return kernels;
}
after(() => {
  single.dispose();
  threaded.dispose();
  for (const kernels of opened.values()) kernels.dispose();
});

function asWasm(kernels: Kernels): WasmKernels {
  assert.ok(kernels instanceof WasmKernels, `expected the wasm backend, got ${kernels.name}`);
  return kernels;
}

function randomFill(view: Float32Array, rng: Rng): void {
  for (let i = 0; i < view.length; i++) view[i] = rng.next() * 2 - 1;
}

interface Case {
  transA: boolean;
  transB: boolean;
  M: number;
  N: number;
  K: number;
  alpha: number;
  beta: number;
}

/** Runs a case on `kernels` and on plainSgemm (fp64 sums) and asserts agreement within fp32 rounding. */
function checkAgainstPlain(kernels: Kernels, c: Case, seed: number, offsets = [0, 0, 0]): void {
  const { transA, transB, M, N, K, alpha, beta } = c;
  const rng = new Rng(seed);
  // Views at the given float offsets inside larger buffers: sgemm must honour byteOffset.
  const A = kernels.alloc(M * K + offsets[0] + 5).subarray(offsets[0], offsets[0] + M * K);
  const B = kernels.alloc(K * N + offsets[1] + 5).subarray(offsets[1], offsets[1] + K * N);
  const C = kernels.alloc(M * N + offsets[2] + 5).subarray(offsets[2], offsets[2] + M * N);
  randomFill(A, rng);
  randomFill(B, rng);
  randomFill(C, rng);
  const expected = new Float32Array(C);
  plainSgemm(transA, transB, M, N, K, alpha, A, B, beta, expected);
  // Error bound per element: K-term fp32 sum of |a||b| plus the beta term.
  const bound = new Float32Array(M * N);
  plainSgemm(transA, transB, M, N, K, Math.abs(alpha), A.map(Math.abs), B.map(Math.abs), 0, bound);
  const before = new Float32Array(C);
  kernels.sgemm(transA, transB, M, N, K, alpha, A, B, beta, C);
  for (let i = 0; i < M * N; i++) {
    const tolerance = 1e-6 * (K + 8) * bound[i] + 1e-6 * Math.abs(beta * before[i]) + 1e-30;
    const diff = Math.abs(C[i] - expected[i]);
    if (!(diff <= tolerance)) {
      assert.fail(
        `${JSON.stringify(c)} element ${i}: got ${C[i]}, expected ${expected[i]} (diff ${diff} > ${tolerance})`,
      );
    }
  }
}

for (const backend of FAST_BACKENDS)
  test(`${backend.name} sgemm matches plainSgemm for all transposes, odd sizes and alpha/beta`, {
    skip: backend.skip,
  }, () => {
    const kernels = backendKernels(backend, 1);
    const sizes = [
      [1, 1, 1],
      [1, 3, 17],
      [3, 17, 65],
      [17, 3, 130],
      [65, 130, 17],
      [130, 65, 3],
      [8, 130, 65],
      [9, 33, 257],
      [4, 8, 4],
      [260, 9, 300],
      [5, 2100, 7],
      [1, 70, 45],
      [2, 40, 33],
      [6, 50, 20],
      [7, 37, 9],
      [13, 20, 9],
      [16, 45, 37],
    ];
    const scalars = [
      [1, 0],
      [1, 1],
      [0.5, -0.25],
      [-2, 1],
    ];
    let seed = 1;
    for (const [transA, transB] of TRANS) {
      for (const [M, N, K] of sizes) {
        for (const [alpha, beta] of scalars) {
          checkAgainstPlain(kernels, { transA, transB, M, N, K, alpha, beta }, seed++);
        }
      }
    }
  });

for (const backend of FAST_BACKENDS)
  test(`${backend.name}: views at odd float offsets (not 16-byte aligned) are read and written in place`, {
    skip: backend.skip,
  }, () => {
    const single = backendKernels(backend, 2);
    let seed = 100;
    for (const [transA, transB] of TRANS) {
      for (const [M, N, K] of [
        [3, 17, 65],
        [130, 67, 33],
        [7, 130, 65],
      ]) {
        checkAgainstPlain(single, { transA, transB, M, N, K, alpha: 1, beta: 0.5 }, seed++, [1, 3, 5]);
      }
    }
  });

for (const backend of FAST_BACKENDS)
  test(`${backend.name}: beta = 0 overwrites C even when it holds NaN and Infinity`, {
    skip: backend.skip,
  }, () => {
    const single = backendKernels(backend, 2);
    for (const [transA, transB] of TRANS) {
      for (const [M, N, K] of [
        [3, 5, 7],
        [70, 33, 300],
        [8, 40, 9],
      ]) {
        const rng = new Rng(M * 1000 + N);
        const A = single.alloc(M * K);
        const B = single.alloc(K * N);
        const C = single.alloc(M * N);
        randomFill(A, rng);
        randomFill(B, rng);
        C.fill(Number.NaN);
        C[0] = Number.POSITIVE_INFINITY;
        const expected = new Float32Array(M * N);
        plainSgemm(transA, transB, M, N, K, 1.5, A, B, 0, expected);
        single.sgemm(transA, transB, M, N, K, 1.5, A, B, 0, C);
        for (let i = 0; i < M * N; i++) {
          assert.ok(Number.isFinite(C[i]), `NaN leaked through beta = 0 at ${i} (${transA}, ${transB})`);
          assert.ok(Math.abs(C[i] - expected[i]) <= 1e-4, `element ${i}: ${C[i]} vs ${expected[i]}`);
        }
      }
    }
  });

for (const backend of FAST_BACKENDS)
  test(`${backend.name}: K = 0 scales C by beta, and M = 0 or N = 0 is a no-op`, {
    skip: backend.skip,
  }, () => {
    const single = backendKernels(backend, 1);
    const A = single.alloc(12);
    const B = single.alloc(12);
    const C = single.alloc(6);
    C.set([1, 2, 3, 4, 5, Number.NaN]);
    single.sgemm(false, true, 2, 3, 0, 1, A, B, 2, C);
    assert.deepEqual(Array.from(C.subarray(0, 5)), [2, 4, 6, 8, 10]);
    single.sgemm(false, false, 2, 3, 0, 1, A, B, 0, C);
    assert.deepEqual(Array.from(C), [0, 0, 0, 0, 0, 0]);
    C.fill(7);
    single.sgemm(false, false, 0, 3, 4, 1, A, B, 0, C);
    single.sgemm(true, true, 2, 0, 4, 1, A, B, 0, C);
    assert.deepEqual(Array.from(C), [7, 7, 7, 7, 7, 7]);
  });

test("threaded sgemm is bit-identical to one thread (main thread helping, and workers alone)", () => {
  const pool = asWasm(threaded);
  assert.ok(pool.waitForWorkers(20000), "workers did not start");
  // Two workers and a main thread that never claims a chunk: every chunk runs in a worker.
  const onlyWorkers = new WasmKernels(kernelsModule(), { threads: 3, mainThreadWorks: false });
  try {
    assert.ok(onlyWorkers.waitForWorkers(20000), "workers did not start");
    const shapes = [
      [256, 200, 300],
      [130, 515, 64],
      [8, 1000, 100],
      [3, 2000, 70],
      [1, 3000, 90],
      [6, 1500, 40],
      [13, 800, 64],
      [64, 64, 64],
    ];
    let seed = 500;
    for (const [transA, transB] of TRANS) {
      for (const [M, N, K] of shapes) {
        const results: Float32Array[] = [];
        for (const kernels of [single, pool, onlyWorkers]) {
          const rng = new Rng(seed);
          const A = kernels.alloc(M * K);
          const B = kernels.alloc(K * N);
          const C = kernels.alloc(M * N);
          randomFill(A, rng);
          randomFill(B, rng);
          randomFill(C, rng);
          kernels.sgemm(transA, transB, M, N, K, 0.75, A, B, 0.5, C);
          results.push(C);
        }
        seed++;
        const label = `${transA}/${transB} ${M}x${N}x${K}`;
        assert.deepEqual(results[1], results[0], `2 threads differ from 1 thread: ${label}`);
        assert.deepEqual(results[2], results[0], `workers alone differ from 1 thread: ${label}`);
      }
    }
  } finally {
    onlyWorkers.dispose();
  }
});

for (const backend of FAST_BACKENDS)
  test(`${backend.name}: random shapes agree with the reference (property)`, { skip: backend.skip }, () => {
    const threaded = backendKernels(backend, 2);
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.boolean(),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 40 }),
        fc.constantFrom(0, 1, 0.5),
        fc.integer({ min: 0, max: 1000 }),
        (transA, transB, M, N, K, beta, seed) => {
          checkAgainstPlain(threaded, { transA, transB, M, N, K, alpha: 1, beta }, seed, [seed % 4, 0, 1]);
        },
      ),
      { numRuns: 150, seed: 42 },
    );
  });

test("alloc hands out zeroed, 64-byte aligned buffers and grows the memory without moving old ones", () => {
  const kernels = asWasm(createKernels({ backend: "wasm", threads: 1 }));
  try {
    const first = kernels.alloc(10);
    assert.equal(first.byteOffset % 64, 0);
    first.fill(3);
    const views: Float32Array[] = [first];
    // 3 x 24 MiB forces several memory.grow calls past the initial 4 MiB.
    for (let i = 0; i < 3; i++) {
      const big = kernels.alloc(6 * 1024 * 1024);
      assert.equal(big.byteOffset % 64, 0);
      assert.equal(big[0], 0);
      assert.equal(big[big.length - 1], 0);
      big[big.length - 1] = i + 1;
      views.push(big);
    }
    assert.ok(kernels.heapBytes() >= 3 * 24 * 1024 * 1024);
    assert.equal(first[9], 3, "a view from before the growth must still see its data");
    for (let i = 0; i < 3; i++) assert.equal(views[i + 1][views[i + 1].length - 1], i + 1);
    // Operands from buffers of different growth generations still multiply correctly.
    const A = first.subarray(0, 4);
    A.set([1, 2, 3, 4]);
    const B = views[3].subarray(0, 4);
    B.set([1, 0, 0, 1]);
    const C = kernels.alloc(4);
    C.fill(Number.NaN);
    kernels.sgemm(false, false, 2, 2, 2, 1, A, B, 0, C);
    assert.deepEqual(Array.from(C), [1, 2, 3, 4]);
    // A released block comes back zero-filled.
    const scratch = kernels.alloc(1000);
    scratch.fill(9);
    kernels.release(scratch);
    const again = kernels.alloc(1000);
    assert.equal(again.byteOffset, scratch.byteOffset);
    assert.ok(again.every((v) => v === 0));
    kernels.release(again);
    assert.throws(() => kernels.release(again), /released|not returned/);
    assert.throws(() => kernels.release(new Float32Array(4)), /not returned/);
    const zero = kernels.alloc(0);
    assert.equal(zero.length, 0);
    assert.throws(() => kernels.alloc(-1), RangeError);
    assert.throws(() => kernels.alloc(1.5), RangeError);
  } finally {
    kernels.dispose();
  }
});

for (const backend of FAST_BACKENDS)
  test(`${backend.name}: sgemm rejects buffers it cannot read in place, short views and C overlapping an input`, {
    skip: backend.skip,
  }, () => {
    const single = backendKernels(backend, 1);
    const threaded = backendKernels(backend, 2);
    const A = single.alloc(6);
    const B = single.alloc(6);
    const C = single.alloc(4);
    assert.throws(
      () => single.sgemm(false, false, 2, 2, 3, 1, new Float32Array(6), B, 0, C),
      /A was not allocated/,
    );
    assert.throws(
      () => single.sgemm(false, false, 2, 2, 3, 1, A, B, 0, threaded.alloc(4)),
      /C was not allocated/,
    );
    assert.throws(() => single.sgemm(false, false, 2, 2, 3, 1, A, B.subarray(1), 0, C), /B has 5 floats/);
    assert.throws(() => single.sgemm(false, false, 2, 2, 3, 1, A, B, 0, A), /overlaps A/);
    assert.throws(() => single.sgemm(false, false, -1, 2, 3, 1, A, B, 0, C), RangeError);
  });

test("createKernels: plain on request, and auto falls back to plain with a warning", () => {
  assert.equal(createKernels({ backend: "plain" }).name, "plain");
  const fallback = createKernels({
    backend: "auto",
    wasmPath: "/nonexistent/kernels.wasm",
    blasLibrary: "none",
  });
  assert.match(fallback.warning ?? "", /kernels\.wasm not found/);
  assert.equal(fallback.name, "plain");
  assert.ok(fallback instanceof PlainKernels);
  assert.throws(
    () => createKernels({ backend: "wasm", wasmPath: "/nonexistent/kernels.wasm" }),
    /WASM kernels unavailable/,
  );
  assert.throws(() => createKernels({ threads: 0 }), RangeError);
  assert.throws(
    () => createKernels({ backend: "fast" as "auto" }),
    /backend must be one of auto, blas, wasm, plain/,
  );
  const auto = createKernels({ threads: 1, blasLibrary: "none" });
  assert.equal(auto.warning, undefined);
  assert.equal(auto.name, "wasm-simd x1 thread");
  assert.equal(auto.backend, "wasm");
  assert.match(auto.note ?? "", /no BLAS: disabled by SELFSTEER_BLAS=none/);
  auto.dispose();
});

test("no BLAS is never an error for auto; --backend blas without one names what was tried", () => {
  assert.throws(() => createKernels({ backend: "blas", blasLibrary: "none" }), /BLAS unavailable: disabled/);
  assert.throws(
    () => createKernels({ backend: "blas", blasLibrary: "/nonexistent/libnothing.so" }),
    /BLAS unavailable: no BLAS with cblas_sgemm found \(tried \/nonexistent\/libnothing\.so\)/,
  );
  const missing = findBlas("/nonexistent/libnothing.so");
  assert.equal(missing.library, undefined);
  const auto = createKernels({ threads: 1, blasLibrary: "/nonexistent/libnothing.so" });
  assert.equal(auto.backend, "wasm");
  assert.match(auto.note ?? "", /no BLAS/);
  auto.dispose();
});

const blasSkip = FAST_BACKENDS.find((b) => b.name === "blas")?.skip ?? "no blas entry";

test("auto picks the platform BLAS when found, says which, and shares the WASM memory", {
  skip: blasSkip,
}, () => {
  const found = findBlas().library;
  assert.ok(found !== undefined);
  const auto = createKernels({ threads: 2 });
  try {
    assert.equal(auto.backend, "blas");
    assert.equal(auto.threads, 2);
    assert.ok(auto.name.startsWith(`blas ${found.description} x2 threads`), auto.name);
    if (found.vendor === "openblas") assert.match(found.description, /^OpenBLAS \d+\.\d+/);
    // The WASM element-wise loops run on the very buffers BLAS writes.
    assert.ok(auto.elementwise !== undefined, "BLAS on WASM keeps the WASM SwiGLU loops");
    const gu = auto.alloc(2 * 16);
    const A = auto.alloc(2 * 3);
    const B = auto.alloc(3 * 16);
    A.set([1, 2, 3, 4, 5, 6]);
    for (let i = 0; i < B.length; i++) B[i] = (i % 7) / 7 - 0.5;
    auto.sgemm(false, false, 2, 16, 3, 1, A, B, 0, gu);
    const expected = new Float32Array(32);
    plainSgemm(false, false, 2, 16, 3, 1, A, B, 0, expected);
    for (let i = 0; i < 32; i++) assert.ok(Math.abs(gu[i] - expected[i]) < 1e-5);
    const h = auto.alloc(16);
    const sig = auto.alloc(16);
    auto.elementwise.swigluForward(h, sig, gu, 2, 8);
    const gate = gu[0];
    assert.ok(Math.abs(h[0] - (gate / (1 + Math.exp(-gate))) * gu[8]) < 1e-5);
    auto.release(h);
    assert.ok((auto.heapBytes?.() ?? 0) > 0);
  } finally {
    auto.dispose();
  }
});

test("BLAS on JS-heap memory when the WASM build is missing: products still in BLAS", {
  skip: blasSkip,
}, () => {
  const kernels = createKernels({ backend: "auto", threads: 1, wasmPath: "/nonexistent/kernels.wasm" });
  assert.equal(kernels.backend, "blas");
  assert.equal(kernels.elementwise, undefined);
  assert.match(kernels.note ?? "", /WASM kernels unavailable/);
  checkAgainstPlain(
    kernels,
    { transA: true, transB: false, M: 33, N: 20, K: 17, alpha: 0.5, beta: 1 },
    9,
    [1, 2, 3],
  );
  const x = kernels.alloc(16);
  assert.throws(() => kernels.sgemm(false, false, 2, 2, 2, 1, x, x, 0, x), /overlaps A/);
  // Separate JS buffers never alias, even at equal offsets.
  kernels.sgemm(false, false, 2, 2, 2, 1, x, x, 0, kernels.alloc(4));
});

test("after dispose the kernels still compute, on the main thread", () => {
  const kernels = createKernels({ backend: "wasm", threads: 2 });
  asWasm(kernels).waitForWorkers(20000);
  kernels.dispose();
  checkAgainstPlain(kernels, { transA: false, transB: true, M: 100, N: 90, K: 80, alpha: 1, beta: 0 }, 7);
});

test("idle worker threads do not keep the process alive (no dispose)", () => {
  const index = new URL("../src/engine/kernels/index.js", import.meta.url).href;
  const script = `
    import { createKernels } from ${JSON.stringify(index)};
    const k = createKernels({ backend: "wasm", threads: 2 });
    k.waitForWorkers(20000);
    const a = k.alloc(64 * 64), b = k.alloc(64 * 64), c = k.alloc(64 * 64);
    k.sgemm(false, false, 64, 64, 64, 1, a, b, 0, c);
    console.log("done");
  `;
  const started = Date.now();
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    timeout: 20000,
  });
  assert.equal(child.status, 0, child.stderr);
  assert.equal(child.stdout.trim(), "done");
  assert.ok(Date.now() - started < 15000);
});

test("sgemmBatch equals one sgemm per item, bit for bit, on one thread and on the pool", () => {
  // Attention-like: per (batch, head) blocks of varying causal length inside shared q/k/p buffers.
  const T = 48;
  const D = 24;
  const onlyWorkers = new WasmKernels(kernelsModule(), { threads: 2, mainThreadWorks: false });
  assert.ok(onlyWorkers.waitForWorkers(20000), "workers did not start");
  const lengths = [48, 17, 1, 30, 0, 45];
  const heads = 3;
  for (const [transA, transB] of TRANS) {
    const results: Float32Array[] = [];
    for (const [kernels, batched] of [
      [single, false],
      [single, true],
      [threaded, true],
      [onlyWorkers, true],
    ] as const) {
      const rng = new Rng(77);
      const q = kernels.alloc(lengths.length * heads * T * D);
      const k = kernels.alloc(lengths.length * heads * T * D);
      const p = kernels.alloc(lengths.length * heads * T * T);
      randomFill(q, rng);
      randomFill(k, rng);
      randomFill(p, rng);
      const items = [];
      for (let b = 0; b < lengths.length; b++) {
        for (let h = 0; h < heads; h++) {
          const off = (b * heads + h) * T * D;
          const len = lengths[b];
          items.push({
            M: len,
            N: len,
            K: D,
            A: q.subarray(off),
            B: k.subarray(off),
            C: p.subarray((b * heads + h) * T * T),
          });
        }
      }
      if (batched) kernels.sgemmBatch(transA, transB, 0.25, 0.5, items);
      else
        for (const it of items) kernels.sgemm(transA, transB, it.M, it.N, it.K, 0.25, it.A, it.B, 0.5, it.C);
      results.push(p);
    }
    assert.deepEqual(results[1], results[0], `batched differs from per-item sgemm (${transA}, ${transB})`);
    assert.deepEqual(
      results[2],
      results[0],
      `pooled batch differs from per-item sgemm (${transA}, ${transB})`,
    );
  }
  // The plain backend runs the same batch item by item, within fp32 rounding of the WASM result.
  const plain = new PlainKernels();
  const A = plain.alloc(6);
  const B = plain.alloc(6);
  const C = plain.alloc(4);
  A.set([1, 2, 3, 4, 5, 6]);
  B.set([1, 0, 0, 1, 1, 1]);
  plain.sgemmBatch(false, false, 1, 0, [{ M: 2, N: 2, K: 3, A, B, C }]);
  assert.deepEqual(Array.from(C), [4, 5, 10, 11]);
});

for (const backend of FAST_BACKENDS)
  test(`${backend.name}: sgemmBatch rejects outputs that overlap each other or another item's inputs`, {
    skip: backend.skip,
  }, () => {
    const kernels = backendKernels(backend, 1);
    const x = kernels.alloc(64);
    const y = kernels.alloc(64);
    const item = (A: Float32Array, B: Float32Array, C: Float32Array) => ({ M: 2, N: 2, K: 2, A, B, C });
    assert.throws(
      () => kernels.sgemmBatch(false, false, 1, 0, [item(x, x, y), item(x, x, y.subarray(3))]),
      /C of item 1 overlaps C of item 0/,
    );
    assert.throws(
      () => kernels.sgemmBatch(false, false, 1, 0, [item(x, x, y), item(y.subarray(2), x, y.subarray(8))]),
      /overlaps an input of item 1/,
    );
    assert.throws(
      () => kernels.sgemmBatch(false, false, 1, 0, [item(x, new Float32Array(4), y)]),
      /B was not/,
    );
    kernels.sgemmBatch(false, false, 1, 0, []);
    kernels.sgemmBatch(false, false, 1, 0, [item(x, x, y), item(x, x, y.subarray(4))]);
  });
