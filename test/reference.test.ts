/**
 * The independent reference check: test/ref/llama_ref.py (plain numpy, sharing no code with the
 * engine) writes random Llama checkpoints with its own safetensors writer and computes next-token
 * log-probs with its own forward pass; `selfsteer logprobs` on those checkpoints must agree. The other
 * direction too: the reference reads a checkpoint we wrote and scores it.
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
import { initLlamaTensors } from "../src/engine/init.js";

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
    const actual = JSON.parse(
      run(process.execPath, [cli, "logprobs", "--model", dir, "--ids", join(dir, "ids.json")]),
    ).logprobs as number[][];
    compareRows(actual, expected, `${variant}/${dtype}`);
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

test("the numpy reference reads a checkpoint we wrote and agrees with selfsteer logprobs", { skip }, () => {
  const config = LlamaConfigSchema.parse({
    vocab_size: 37,
    hidden_size: 16,
    intermediate_size: 20,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    rope_theta: 1000,
  });
  const dir = join(work, "ours");
  // A wide init so the next-token distribution is far from uniform and a mismatch would show.
  saveCheckpoint(dir, { config, tensors: initLlamaTensors(config, 8, { std: 0.4 }) });
  const idsPath = join(dir, "ids.json");
  writeFileSync(
    idsPath,
    JSON.stringify({ sequences: [[1, 2, 3, 36, 0, 5, 7], [9], [4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 30]] }),
  );
  const expected = JSON.parse(run(python!, [refScript, "logprobs", "--model", dir, "--ids", idsPath]))
    .logprobs as number[][];
  const actual = JSON.parse(run(process.execPath, [cli, "logprobs", "--model", dir, "--ids", idsPath]))
    .logprobs as number[][];
  compareRows(actual, expected, "ours");
  assert.ok(
    expected[0].some((x) => Math.abs(x + Math.log(37)) > 0.5),
    "reference distribution is not uniform",
  );
});
