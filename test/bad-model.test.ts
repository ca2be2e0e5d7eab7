import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { loadCheckpoint, saveCheckpoint } from "../src/engine/checkpoint.js";
import { type LlamaConfig, LlamaConfigSchema } from "../src/engine/config.js";
import { initLlamaTensors } from "../src/engine/init.js";
import { firstNonFinite } from "../src/engine/validate.js";
import { UserError } from "../src/util/errors.js";
import { fails, ok } from "./helpers/cli.js";

const root = mkdtempSync(join(tmpdir(), "selfsteer-badmodel-"));
after(() => rmSync(root, { recursive: true, force: true }));
let count = 0;

function tinyConfig(): LlamaConfig {
  return LlamaConfigSchema.parse({
    vocab_size: 13,
    hidden_size: 8,
    intermediate_size: 12,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    max_position_embeddings: 16,
  });
}

/** A checkpoint whose tensor `name` has `value` at flat index `at` (no poison: a clean one). */
function checkpoint(poison?: { name: string; at: number; value: number }): string {
  const dir = join(root, `m${count++}`);
  const tensors = initLlamaTensors(tinyConfig(), 1);
  if (poison) tensors.find((t) => t.name === poison.name)!.data[poison.at] = poison.value;
  saveCheckpoint(dir, { config: tinyConfig(), tensors });
  return dir;
}

const expectUserError = (fn: () => unknown, ...fragments: string[]) =>
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof UserError, `expected UserError, got ${String(err)}`);
    for (const f of fragments) assert.ok(err.message.includes(f), `'${err.message}' should mention '${f}'`);
    return true;
  });

describe("non-finite weights are refused at load", () => {
  test("firstNonFinite finds NaN and infinities anywhere, and nothing in finite data", () => {
    const data = new Float32Array(1000).map((_, i) => Math.sin(i) * 1e30);
    assert.equal(firstNonFinite(data), -1);
    for (const bad of [Number.NaN, Infinity, -Infinity])
      for (const at of [0, 517, 999]) {
        const copy = data.slice();
        copy[at] = bad;
        assert.equal(firstNonFinite(copy), at);
      }
  });

  for (const value of [Number.NaN, Infinity, -Infinity])
    test(`a ${value} weight names its file and tensor; --allow-nonfinite loads it`, () => {
      const dir = checkpoint({ name: "model.layers.0.mlp.down_proj.weight", at: 5, value });
      expectUserError(
        () => loadCheckpoint(dir),
        join(dir, "model.safetensors"),
        "tensor model.layers.0.mlp.down_proj.weight",
        "at flat index 5",
        "--allow-nonfinite",
      );
      const loaded = loadCheckpoint(dir, { allowNonFinite: true });
      assert.ok(Object.is(loaded.tensors.get("model.layers.0.mlp.down_proj.weight")!.data[5], value));
    });

  test("model info and logprobs refuse a NaN checkpoint (exit 2); model info counts them when allowed", () => {
    const dir = checkpoint({ name: "model.norm.weight", at: 0, value: Number.NaN });
    fails(["tensor model.norm.weight", "non-finite"], "model", "info", "--model", dir);
    const info = JSON.parse(ok("model", "info", "--model", dir, "--allow-nonfinite"));
    assert.deepEqual(info.non_finite_values, { "model.norm.weight": 1 });
    const ids = join(root, "ids.json");
    writeFileSync(ids, JSON.stringify({ sequences: [[1, 2, 3]] }));
    fails(["tensor model.norm.weight"], "logprobs", "--model", dir, "--ids", ids);
  });
});

describe("context and config limits", () => {
  test("logprobs refuses a sequence longer than max_position_embeddings, naming the row", () => {
    const dir = checkpoint();
    const ids = join(root, "long.json");
    writeFileSync(ids, JSON.stringify({ sequences: [[1, 2], Array.from({ length: 17 }, () => 3)] }));
    fails(
      [`${ids}: sequences[1]: 17 tokens exceed max_position_embeddings 16`],
      "logprobs",
      "--model",
      dir,
      "--ids",
      ids,
    );
    writeFileSync(ids, JSON.stringify({ sequences: [Array.from({ length: 16 }, () => 3)] }));
    assert.equal(JSON.parse(ok("logprobs", "--model", dir, "--ids", ids)).logprobs[0].length, 15);
  });

  for (const positions of [1e10, 2 ** 24 + 1, 1.5, 0, -4])
    test(`max_position_embeddings ${positions} is refused at config load`, () => {
      const dir = checkpoint();
      const configPath = join(dir, "config.json");
      const config = JSON.parse(readFileSync(configPath, "utf8"));
      writeFileSync(configPath, JSON.stringify({ ...config, max_position_embeddings: positions }));
      expectUserError(() => loadCheckpoint(dir), configPath, "max_position_embeddings");
    });
});
