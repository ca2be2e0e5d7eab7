import assert from "node:assert/strict";
import { test } from "node:test";
import { BENCH_PRESETS, type BenchPreset, benchConfig, runBench } from "../src/engine/bench.js";
import { PlainKernels } from "../src/engine/kernels/index.js";
import { selfsteer } from "./helpers/cli.js";

/** Parameters of a Llama preset, counted by hand. */
function parameterCount(p: BenchPreset): number {
  const layer =
    p.hidden * p.hidden * 2 +
    2 * (p.hidden / p.heads) * p.kvHeads * p.hidden +
    3 * p.hidden * p.intermediate +
    2 * p.hidden;
  return (p.tied === true ? 1 : 2) * p.vocab * p.hidden + p.layers * layer + p.hidden;
}

test("the XL preset is shaped like SmolLM2-135M: 134,515,008 parameters, tied, 3 KV heads of 64", () => {
  const xl = BENCH_PRESETS.XL;
  assert.equal(parameterCount(xl), 134_515_008);
  const config = benchConfig(xl);
  assert.equal(config.tie_word_embeddings, true);
  assert.equal(config.hidden_size / config.num_attention_heads, 64);
  assert.equal(config.num_key_value_heads, 3);
  assert.ok(config.max_position_embeddings >= 256);
});

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
  const preset = selfsteer("bench", "--preset", "XXL");
  assert.equal(preset.status, 2);
  assert.match(preset.stderr, /--preset: expected one of S, M, L, XL, got 'XXL'/);
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

test("runBench's profile splits each phase by what computed it and adds decode figures", () => {
  const tiny: BenchPreset = {
    vocab: 64,
    hidden: 16,
    intermediate: 32,
    layers: 2,
    heads: 2,
    kvHeads: 1,
    seqLen: 24,
    batch: 3,
    tied: true,
  };
  const result = runBench(tiny, new PlainKernels(), { steps: 2, warmup: 0, generateRuns: 1, profile: true });
  const p = result.profile;
  assert.ok(p !== undefined);
  assert.equal(result.parameters, parameterCount(tiny));
  for (const phase of [p.forward, p.backward]) {
    assert.ok(phase.matmul > 0 && phase.attentionProducts > 0, JSON.stringify(phase));
    assert.equal(phase.elementwise, 0, "the plain kernels have no compiled element-wise loops");
    const parts = phase.matmul + phase.attentionProducts + phase.elementwise + phase.other;
    assert.ok(Math.abs(parts - phase.total) < 0.05, `parts ${parts} vs total ${phase.total}`);
  }
  assert.equal(p.optimizer.matmul, 0);
  assert.ok(p.outsideProductsShare > 0 && p.outsideProductsShare < 1);
  assert.equal(p.decodeSingle.sequences, 1);
  assert.equal(p.decodeBatched.sequences, 3);
  // Tied: every weight is read per step; KV: 2 layers x K and V x 1 head x 8 dims x average length 20.
  assert.equal(p.decodeSingle.bytesPerStep, 4 * (result.parameters + 2 * 2 * 1 * 8 * 20));
  assert.ok(p.decodeSingle.tokensPerSec > 0 && p.decodeSingle.impliedGBPerSec > 0);
});

test("bench --profile --json on the preset's shape overrides; the kernels used are named", () => {
  const r = selfsteer(
    "bench",
    "--preset",
    "S",
    "--json",
    "--profile",
    "--steps",
    "1",
    "--generate-runs",
    "1",
    "--seq-len",
    "24",
    "--batch",
    "2",
  );
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.seqLen, 24);
  assert.equal(out.batch, 2);
  assert.ok(["blas", "wasm", "plain"].includes(out.kernels));
  assert.ok(out.profile.outsideProductsShare > 0);
  assert.ok(out.copyGBPerSec > 0);
  assert.ok(out.trainPeakRssMB > 0 && out.trainPeakRssMB <= out.peakRssMB);
});
