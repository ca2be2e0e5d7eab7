/**
 * The independent reference check: test/ref/llama_ref.py (plain numpy, sharing no code with the
 * engine) writes random checkpoints of every supported family (Llama with biases and linear / llama3
 * RoPE scaling, Qwen2, Mistral with a sliding window, Qwen3) with its own safetensors writer and
 * computes next-token log-probs with its own forward pass; `selfsteer logprobs` on those checkpoints
 * must agree (the issue asks for 2e-3; we hold 1e-4). The other direction too: the reference reads a
 * checkpoint we wrote, of each family, and scores it.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadCheckpoint, saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { createKvCache } from "../src/engine/decode.js";
import { initLlamaTensors } from "../src/engine/init.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { logSumExp } from "../src/engine/layers.js";
import { loadModelDir } from "../src/engine/load.js";
import { nextTokenLogprobs } from "../src/engine/logprobs.js";
import type { LlamaModel } from "../src/engine/model.js";
import { Rng } from "../src/util/rng.js";
import { FAST_BACKENDS } from "./helpers/backends.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const refScript = join(repoRoot, "test", "ref", "llama_ref.py");
const cli = join(repoRoot, "bin", "selfsteer");
const TOLERANCE = 1e-4;

function findPythonWithNumpy(): string | null {
  for (const python of ["python3", "/usr/bin/python3"]) {
    const r = spawnSync(python, ["-c", "import numpy"], { encoding: "utf8" });
    if (r.status === 0) return python;
  }
  return null;
}

const python = findPythonWithNumpy();
const skip =
  python === null ? "no python3 with numpy found; `apt-get install python3-numpy` enables this check" : false;
const work = mkdtempSync(join(tmpdir(), "selfsteer-ref-"));
after(() => rmSync(work, { recursive: true, force: true }));

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} failed:\n${r.stderr}`);
  return r.stdout;
}

function compareRows(actual: number[][], expected: number[][], label: string): number {
  assert.deepEqual(
    actual.map((r) => r.length),
    expected.map((r) => r.length),
    `${label}: row lengths`,
  );
  let maxDiff = 0;
  expected.forEach((row, i) => {
    row.forEach((x, t) => {
      maxDiff = Math.max(maxDiff, Math.abs(actual[i][t] - x));
    });
  });
  assert.ok(maxDiff < TOLERANCE, `${label}: max |diff| ${maxDiff} >= ${TOLERANCE}`);
  return maxDiff;
}

const cases = [
  { variant: "gqa", dtype: "F32" },
  { variant: "tied", dtype: "F32" },
  { variant: "mqa", dtype: "F32" },
  { variant: "gqa", dtype: "BF16" },
  { variant: "tied", dtype: "F16" },
] as const;

/** Reference checkpoints of the other families, checked in-process (batched forward and KV cache). */
const familyCases = [
  { variant: "llama3", dtype: "F32" },
  { variant: "linear", dtype: "F32" },
  { variant: "qwen2", dtype: "F32" },
  { variant: "qwen2-tied", dtype: "BF16" },
  { variant: "mistral", dtype: "F32" },
  { variant: "qwen3", dtype: "F32" },
] as const;

/** Log-probs of each sequence's tokens by KV-cache decoding: prefill the first token, then step. */
function decodedLogprobs(model: LlamaModel, sequences: number[][]): number[][] {
  const V = model.dims.vocab;
  return sequences.map((seq) => {
    if (seq.length < 2) return [];
    const cache = createKvCache(model, 1, seq.length);
    let logits = cache.prefill([[seq[0]]]);
    const out: number[] = [];
    for (let t = 1; t < seq.length; t++) {
      out.push(logits[seq[t]] - logSumExp(logits, 0, V));
      if (t + 1 < seq.length) logits = cache.decodeStep(Int32Array.from([0]), Int32Array.from([seq[t]]));
    }
    return out;
  });
}

/** Our log-probs of a checkpoint directory, in-process: batched forward (small batches) and decoding. */
function inProcessLogprobs(dir: string, sequences: number[][]): { forward: number[][]; decoded: number[][] } {
  const { model } = loadModelDir(dir, { kernels: new PlainKernels(), tokenizer: "optional" });
  const forward = nextTokenLogprobs(model, sequences, { maxBatchTokens: 20 }).map((r) => Array.from(r));
  return { forward, decoded: decodedLogprobs(model, sequences) };
}

for (const { variant, dtype } of familyCases) {
  test(`the engine agrees with the numpy reference on its ${variant} checkpoint (${dtype})`, { skip }, () => {
    const dir = join(work, `${variant}-${dtype}`);
    run(python!, [refScript, "case", "--variant", variant, "--dtype", dtype, "--seed", "3", "--out", dir]);
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as { model_type: string };
    assert.equal(loadCheckpoint(dir).config.model_type, config.model_type);
    const sequences = JSON.parse(readFileSync(join(dir, "ids.json"), "utf8")).sequences as number[][];
    const expected = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8")).logprobs as number[][];
    const ours = inProcessLogprobs(dir, sequences);
    compareRows(ours.forward, expected, `${variant}/${dtype} forward`);
    compareRows(ours.decoded, expected, `${variant}/${dtype} KV-cache decoding`);
  });
}

for (const { variant, dtype } of cases) {
  test(`selfsteer logprobs agrees with the numpy reference (${variant}, ${dtype} weights)`, { skip }, () => {
    const dir = join(work, `${variant}-${dtype}`);
    run(python!, [refScript, "case", "--variant", variant, "--dtype", dtype, "--seed", "3", "--out", dir]);
    // The weights we load equal what the reference stored (and decoded from BF16/F16) bit for bit.
    const probe = JSON.parse(readFileSync(join(dir, "probe.json"), "utf8")) as Record<string, number[]>;
    const loaded = loadCheckpoint(dir);
    for (const [name, values] of Object.entries(probe)) {
      const t = loaded.tensors.get(name);
      assert.ok(t, `tensor ${name} loaded`);
      values.forEach((v, i) => {
        assert.ok(Object.is(t.data[i], v), `${name}[${i}]: ${t.data[i]} vs ${v}`);
      });
    }
    const expected = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8")).logprobs as number[][];
    // Every backend present, plain included, agrees with the reference.
    for (const backend of ["plain", ...FAST_BACKENDS.filter((b) => b.skip === false).map((b) => b.name)]) {
      const args = [cli, "logprobs", "--model", dir, "--ids", join(dir, "ids.json"), "--backend", backend];
      const actual = JSON.parse(run(process.execPath, args)).logprobs as number[][];
      compareRows(actual, expected, `${variant}/${dtype} on ${backend}`);
    }
    // Tiny batches exercise the packing of sequences into batches; the numbers must not move.
    const small = JSON.parse(
      run(process.execPath, [
        cli,
        "logprobs",
        "--model",
        dir,
        "--ids",
        join(dir, "ids.json"),
        "--max-batch-tokens",
        "20",
      ]),
    ).logprobs as number[][];
    compareRows(small, expected, `${variant}/${dtype} small batches`);
  });
}

/** Our own random checkpoint of a family, with every 1-D tensor (biases, norms) randomised too. */
function saveFamilyCheckpoint(dir: string, overrides: Record<string, unknown>, seed: number): void {
  const config = LlamaConfigSchema.parse({
    vocab_size: 37,
    hidden_size: 16,
    intermediate_size: 20,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    rope_theta: 1000,
    ...overrides,
  });
  // A wide init so the next-token distribution is far from uniform and a mismatch would show.
  const tensors = initLlamaTensors(config, seed, { std: 0.4 });
  const rng = new Rng(seed);
  for (const t of tensors)
    if (t.shape.length === 1)
      for (let i = 0; i < t.data.length; i++)
        t.data[i] = (t.name.endsWith(".bias") ? 0 : 1) + 0.3 * rng.normal();
  saveCheckpoint(dir, { config, tensors });
}

// (plain llama is the test above, through the CLI)
const ourFamilies: { name: string; overrides: Record<string, unknown> }[] = [
  {
    name: "llama (llama3 RoPE, biases, head_dim 6)",
    overrides: {
      head_dim: 6,
      attention_bias: true,
      mlp_bias: true,
      rope_scaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 64,
      },
    },
  },
  { name: "qwen2", overrides: { model_type: "qwen2", tie_word_embeddings: true } },
  { name: "mistral", overrides: { model_type: "mistral", head_dim: 6, sliding_window: 4 } },
  { name: "qwen3", overrides: { model_type: "qwen3", head_dim: 8 } },
];

for (const [i, family] of ourFamilies.entries()) {
  test(`the numpy reference reads a ${family.name} checkpoint we wrote and agrees with selfsteer logprobs`, {
    skip,
  }, () => {
    const dir = join(work, `ours-${i}`);
    saveFamilyCheckpoint(dir, family.overrides, 8 + i);
    const idsPath = join(dir, "ids.json");
    writeFileSync(
      idsPath,
      JSON.stringify({
        sequences: [[1, 2, 3, 36, 0, 5, 7, 8, 9, 10], [9], [4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 30]],
      }),
    );
    const expected = JSON.parse(run(python!, [refScript, "logprobs", "--model", dir, "--ids", idsPath]))
      .logprobs as number[][];
    const sequences = JSON.parse(readFileSync(idsPath, "utf8")).sequences as number[][];
    const ours = inProcessLogprobs(dir, sequences);
    compareRows(ours.forward, expected, family.name);
    compareRows(ours.decoded, expected, `${family.name} KV-cache decoding`);
    assert.ok(
      expected[0].some((x) => Math.abs(x + Math.log(37)) > 0.5),
      "reference distribution is not uniform",
    );
  });
}
