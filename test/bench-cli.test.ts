import assert from "node:assert/strict";
import { test } from "node:test";
import { BENCH_PRESETS, type BenchPreset, runBench } from "../src/engine/bench.js";
import { PlainKernels } from "../src/engine/kernels/index.js";
import { selfsteer } from "./helpers/cli.js";

/** Parameters of an untied Llama preset, counted by hand. */
function parameterCount(p: BenchPreset): number {
  const layer =
    p.hidden * p.hidden * 2 +
    2 * (p.hidden / p.heads) * p.kvHeads * p.hidden +
    3 * p.hidden * p.intermediate +
    2 * p.hidden;
  return 2 * p.vocab * p.hidden + p.layers * layer + p.hidden;
}

test("bench --preset S --json prints training and generation throughput and peak RSS", () => {
  const r = selfsteer("bench", "--preset", "S", "--json", "--steps", "1", "--generate-runs", "1");
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.preset, "S");
  assert.equal(out.batch, 8);
  assert.equal(out.seqLen, 64);
  assert.equal(out.parameters, parameterCount(BENCH_PRESETS.S));
  for (const field of ["trainTokensPerSec", "trainStepMs", "generateTokensPerSec", "generateMs", "peakRssMB"])
    assert.ok(typeof out[field] === "number" && out[field] > 0, `${field}: ${out[field]}`);
  for (const phase of ["forward", "backward", "optimizer"]) assert.ok(out.trainPhasesMs[phase] > 0, phase);
  assert.ok(
    Math.abs(out.trainTokensPerSec - (8 * 64) / (out.trainStepMs / 1000)) < 0.01 * out.trainTokensPerSec,
  );
  assert.ok(
    Math.abs(out.generateTokensPerSec - (8 * 48) / (out.generateMs / 1000)) < 0.01 * out.generateTokensPerSec,
  );
  // Random ids under a fresh model: the loss is about ln(vocab).
  assert.ok(Math.abs(out.finalLoss - Math.log(512)) < 0.5, `loss ${out.finalLoss}`);
  assert.equal(typeof out.backend, "string");
});

test("bench rejects an unknown preset or backend with exit 2", () => {
  const preset = selfsteer("bench", "--preset", "XL");
  assert.equal(preset.status, 2);
  assert.match(preset.stderr, /--preset: expected one of S, M, L, got 'XL'/);
  const backend = selfsteer("bench", "--preset", "S", "--backend", "cuda");
  assert.equal(backend.status, 2);
  assert.match(backend.stderr, /--backend/);
});

test("runBench on a tiny preset with the plain kernels measures every phase", () => {
  const tiny: BenchPreset = {
    vocab: 64,
    hidden: 16,
    intermediate: 32,
    layers: 1,
    heads: 2,
    kvHeads: 1,
    seqLen: 20,
    batch: 2,
  };
  const result = runBench(tiny, new PlainKernels(), { steps: 2, warmup: 0, generateRuns: 1 });
  assert.equal(result.parameters, parameterCount(tiny));
  assert.ok(result.trainTokensPerSec > 0 && result.generateTokensPerSec > 0);
  assert.ok(Math.abs(result.finalLoss - Math.log(64)) < 0.5);
  assert.throws(() => runBench({ ...tiny, seqLen: 16 }, new PlainKernels()), /seqLen must exceed/);
});
