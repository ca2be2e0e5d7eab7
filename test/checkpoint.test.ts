import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import {
  loadCheckpoint,
  loadTrainerState,
  saveCheckpoint,
  saveTrainerState,
} from "../src/engine/checkpoint.js";
import { type LlamaConfig, LlamaConfigSchema } from "../src/engine/config.js";
import { initLlamaTensors } from "../src/engine/init.js";
import { AdamW } from "../src/engine/optim.js";
import { llamaParamSpecs, type NamedTensor } from "../src/engine/params.js";
import { writeSafetensors } from "../src/engine/safetensors.js";
import { UserError } from "../src/util/errors.js";
import { Rng } from "../src/util/rng.js";

const root = mkdtempSync(join(tmpdir(), "selfsteer-ckpt-"));
after(() => rmSync(root, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (): string => join(root, `c${dirCount++}`);

function tinyConfig(overrides: Record<string, unknown> = {}): LlamaConfig {
  return LlamaConfigSchema.parse({
    vocab_size: 13,
    hidden_size: 8,
    intermediate_size: 12,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    ...overrides,
  });
}

function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  return (
    a.length === b.length &&
    Buffer.compare(
      Buffer.from(a.buffer, a.byteOffset, a.byteLength),
      Buffer.from(b.buffer, b.byteOffset, b.byteLength),
    ) === 0
  );
}

function expectUserError(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof UserError, `expected UserError, got ${String(err)}`);
    for (const f of fragments) assert.ok(err.message.includes(f), `'${err.message}' should mention '${f}'`);
    return true;
  });
}

/** Writes weights as given (no checks), to build malformed checkpoints. */
function writeRawCheckpoint(dir: string, config: Record<string, unknown>, tensors: NamedTensor[]): void {
  saveCheckpoint(dir, { config: tinyConfig(), tensors: initLlamaTensors(tinyConfig(), 1) });
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  writeFileSync(join(dir, "model.safetensors"), writeSafetensors(tensors));
}

for (const [label, overrides, scoreHead] of [
  ["untied GQA", {}, false],
  ["tied", { tie_word_embeddings: true }, false],
  ["score head", {}, true],
] as const) {
  test(`save -> load is bit-exact (${label})`, () => {
    const config = tinyConfig(overrides);
    const tensors = initLlamaTensors(config, 42, { scoreHead });
    const dir = freshDir();
    saveCheckpoint(dir, {
      config,
      tensors,
      tokenizerJson: { model: { type: "BPE" } },
      tokenizerConfigJson: { a: 1 },
    });
    const loaded = loadCheckpoint(dir);
    assert.equal(loaded.scoreHead, scoreHead);
    assert.deepEqual(
      [...loaded.tensors.keys()],
      llamaParamSpecs(config, { scoreHead }).map((s) => s.name),
    );
    for (const t of tensors) {
      const got = loaded.tensors.get(t.name)!;
      assert.deepEqual(got.shape, t.shape);
      assert.ok(bitsEqual(got.data, t.data), t.name);
    }
    assert.equal(loaded.config.hidden_size, 8);
    assert.equal(loaded.config.num_key_value_heads, 2);
    assert.deepEqual(loaded.tokenizerJson, { model: { type: "BPE" } });
    assert.deepEqual(loaded.tokenizerConfigJson, { a: 1 });
    const json = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    assert.deepEqual(json.architectures, [scoreHead ? "LlamaForSequenceClassification" : "LlamaForCausalLM"]);
    assert.equal(json.torch_dtype, "float32");
    assert.equal(json.model_type, "llama");
    assert.equal(json.tie_word_embeddings, overrides.tie_word_embeddings ?? false);
    if (scoreHead) assert.equal(json.num_labels, 1);
  });
}

test("a directory with only config.json and model.safetensors loads", () => {
  const dir = freshDir();
  const config = tinyConfig();
  saveCheckpoint(dir, { config, tensors: initLlamaTensors(config, 1) });
  const loaded = loadCheckpoint(dir);
  assert.equal(loaded.tokenizerJson, undefined);
  assert.equal(loaded.tokenizerConfigJson, undefined);
  assert.equal(loaded.tensors.size, llamaParamSpecs(config).length);
});

test("the same seed gives identical weights, a different seed different ones", () => {
  const config = tinyConfig();
  const a = writeSafetensors(initLlamaTensors(config, 5));
  const b = writeSafetensors(initLlamaTensors(config, 5));
  const c = writeSafetensors(initLlamaTensors(config, 6));
  assert.equal(Buffer.compare(a, b), 0);
  assert.notEqual(Buffer.compare(a, c), 0);
  const t = initLlamaTensors(config, 5);
  const norm = t.find((x) => x.name === "model.norm.weight")!;
  assert.ok(norm.data.every((x) => x === 1));
  const embed = t.find((x) => x.name === "model.embed_tokens.weight")!;
  let sumSq = 0;
  for (const x of embed.data) sumSq += x * x;
  const std = Math.sqrt(sumSq / embed.data.length);
  assert.ok(std > 0.015 && std < 0.025, `embedding std ${std}`);
});

test("missing, mis-shaped and extra tensors are rejected naming the tensor", () => {
  const config = tinyConfig();
  const good = initLlamaTensors(config, 1);
  const dir1 = freshDir();
  writeRawCheckpoint(
    dir1,
    config,
    good.filter((t) => t.name !== "model.layers.1.mlp.up_proj.weight"),
  );
  expectUserError(() => loadCheckpoint(dir1), "missing tensor model.layers.1.mlp.up_proj.weight", "[12, 8]");

  const dir2 = freshDir();
  writeRawCheckpoint(
    dir2,
    config,
    good.map((t) =>
      t.name === "model.layers.0.self_attn.k_proj.weight"
        ? { ...t, shape: [8, 4], data: new Float32Array(32) }
        : t,
    ),
  );
  expectUserError(
    () => loadCheckpoint(dir2),
    "model.layers.0.self_attn.k_proj.weight",
    "[8, 4]",
    "expected [4, 8]",
  );

  const dir3 = freshDir();
  writeRawCheckpoint(dir3, config, [
    ...good,
    { name: "model.layers.0.self_attn.q_proj.bias", shape: [8], data: new Float32Array(8) },
  ]);
  expectUserError(() => loadCheckpoint(dir3), "unexpected tensor model.layers.0.self_attn.q_proj.bias");

  const dir4 = freshDir();
  writeRawCheckpoint(dir4, config, [
    ...good,
    { name: "score.weight", shape: [1, 8], data: new Float32Array(8) },
  ]);
  expectUserError(() => loadCheckpoint(dir4, { scoreHead: false }), "unexpected tensor score.weight");
  expectUserError(() => loadCheckpoint(dir4, { scoreHead: true }), "unexpected tensor lm_head.weight");

  const dir5 = freshDir();
  saveCheckpoint(dir5, { config, tensors: good });
  expectUserError(() => loadCheckpoint(dir5, { scoreHead: true }), "missing tensor score.weight");
});

test("bad config fields are named", () => {
  const dir = freshDir();
  const config = tinyConfig();
  writeRawCheckpoint(dir, { ...config, hidden_size: "eight" }, initLlamaTensors(config, 1));
  expectUserError(() => loadCheckpoint(dir), "config.json", "hidden_size");
  writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, num_key_value_heads: 3 }));
  expectUserError(() => loadCheckpoint(dir), "num_key_value_heads");
  writeFileSync(
    join(dir, "config.json"),
    JSON.stringify({ ...config, rope_scaling: { type: "yarn", factor: 2 } }),
  );
  expectUserError(() => loadCheckpoint(dir), "field rope_scaling.type", "yarn");
  writeFileSync(
    join(dir, "config.json"),
    JSON.stringify({ ...config, rope_scaling: { rope_type: "llama3", factor: 8 } }),
  );
  expectUserError(() => loadCheckpoint(dir), "field rope_scaling.low_freq_factor");
  writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, model_type: "gemma" }));
  expectUserError(() => loadCheckpoint(dir), "field model_type", '"gemma"');
  writeFileSync(
    join(dir, "config.json"),
    JSON.stringify({ ...config, model_type: "qwen2", use_sliding_window: true }),
  );
  expectUserError(() => loadCheckpoint(dir), "field use_sliding_window");
  writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, quantization_config: { bits: 4 } }));
  expectUserError(() => loadCheckpoint(dir), "field quantization_config");
  writeFileSync(join(dir, "config.json"), "{not json");
  expectUserError(() => loadCheckpoint(dir), "config.json", "invalid JSON");
  expectUserError(() => loadCheckpoint(join(root, "nowhere")), "no config.json");
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  writeFileSync(join(dir, "model.safetensors"), new Uint8Array(3));
  expectUserError(() => loadCheckpoint(dir), "model.safetensors", "too short");
});

test("published-model quirks: tied lm_head copy and rotary inv_freq buffers are tolerated", () => {
  const config = tinyConfig({ tie_word_embeddings: true });
  const good = initLlamaTensors(config, 1);
  const embed = good[0];
  const dir = freshDir();
  writeRawCheckpoint(dir, config, [
    ...good,
    { name: "lm_head.weight", shape: embed.shape, data: embed.data.slice() },
    { name: "model.layers.0.self_attn.rotary_emb.inv_freq", shape: [1], data: new Float32Array(1) },
  ]);
  assert.equal(loadCheckpoint(dir).tensors.has("lm_head.weight"), false);
  const different = embed.data.slice();
  different[0] += 1;
  writeFileSync(
    join(dir, "model.safetensors"),
    writeSafetensors([...good, { name: "lm_head.weight", shape: embed.shape, data: different }]),
  );
  expectUserError(() => loadCheckpoint(dir), "lm_head.weight differs");
});

test("BF16 weights and sharded checkpoints load", () => {
  const config = tinyConfig();
  const tensors = initLlamaTensors(config, 9);
  const dir = freshDir();
  writeRawCheckpoint(dir, config, tensors);
  rmSync(join(dir, "model.safetensors"));
  // Two shards: BF16 (truncated fp32) for the first half of the tensors, F32 for the rest.
  const half = Math.floor(tensors.length / 2);
  const header: Record<string, unknown> = {};
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const t of tensors.slice(0, half)) {
    const bits = new Uint32Array(t.data.buffer);
    const bf = new Uint16Array(bits.length).map((_, i) => bits[i] >>> 16);
    header[t.name] = { dtype: "BF16", shape: t.shape, data_offsets: [offset, offset + bf.byteLength] };
    chunks.push(new Uint8Array(bf.buffer));
    offset += bf.byteLength;
  }
  const text = new TextEncoder().encode(JSON.stringify(header));
  const shard1 = new Uint8Array(8 + text.length + offset);
  new DataView(shard1.buffer).setUint32(0, text.length, true);
  shard1.set(text, 8);
  let pos = 8 + text.length;
  for (const c of chunks) {
    shard1.set(c, pos);
    pos += c.length;
  }
  writeFileSync(join(dir, "model-00001-of-00002.safetensors"), shard1);
  writeFileSync(join(dir, "model-00002-of-00002.safetensors"), writeSafetensors(tensors.slice(half)));
  const weightMap: Record<string, string> = {};
  tensors.forEach((t, i) => {
    weightMap[t.name] = `model-0000${i < half ? 1 : 2}-of-00002.safetensors`;
  });
  writeFileSync(
    join(dir, "model.safetensors.index.json"),
    JSON.stringify({ metadata: {}, weight_map: weightMap }),
  );
  const loaded = loadCheckpoint(dir);
  tensors.forEach((t, i) => {
    const got = loaded.tensors.get(t.name)!.data;
    if (i >= half) assert.ok(bitsEqual(got, t.data), t.name);
    else
      for (let j = 0; j < got.length; j++)
        assert.equal(new Uint32Array(got.buffer)[j], (new Uint32Array(t.data.buffer)[j] & 0xffff0000) >>> 0);
  });
  weightMap[tensors[0].name] = "model-00002-of-00002.safetensors";
  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: weightMap }));
  expectUserError(() => loadCheckpoint(dir), tensors[0].name);
});

test("trainer state round-trips and resumes AdamW bit-exactly", () => {
  const n = 50;
  const rng = new Rng(11);
  const grads = Array.from({ length: 4 }, () => Float32Array.from({ length: n }, () => rng.normal()));
  const params = Float32Array.from({ length: n }, () => rng.normal());
  const opt = new AdamW(n);
  opt.step(params, grads[0], 1e-2);
  opt.step(params, grads[1], 1e-2);
  const dir = freshDir();
  assert.equal(loadTrainerState(dir), null);
  saveTrainerState(dir, { step: 2, optimizer: opt.exportState(), extra: { dataCursor: 17, seed: "abc" } });
  const state = loadTrainerState(dir)!;
  assert.equal(state.step, 2);
  assert.deepEqual(state.extra, { dataCursor: 17, seed: "abc" });
  const resumed = new AdamW(n);
  resumed.importState(state.optimizer);
  const p2 = params.slice();
  for (const g of grads.slice(2)) {
    opt.step(params, g, 1e-2);
    resumed.step(p2, g, 1e-2);
  }
  assert.ok(bitsEqual(params, p2));

  // An interrupted save (JSON from one step, moments from another) is caught.
  const json = JSON.parse(readFileSync(join(dir, "trainer_state.json"), "utf8"));
  json.optimizer.step = 5;
  writeFileSync(join(dir, "trainer_state.json"), JSON.stringify(json));
  expectUserError(() => loadTrainerState(dir), "optimizer.safetensors", "step 2", "5");
  json.optimizer.step = 2;
  json.optimizer.size = 49;
  writeFileSync(join(dir, "trainer_state.json"), JSON.stringify(json));
  expectUserError(() => loadTrainerState(dir), "exp_avg", "[50]", "[49]");
  writeFileSync(join(dir, "trainer_state.json"), JSON.stringify({ ...json, global_step: -1 }));
  expectUserError(() => loadTrainerState(dir), "global_step");
});

test("large weights are saved as shards with an index, and a later save replaces the layout cleanly", () => {
  const config = tinyConfig({ model_type: "qwen3", head_dim: 4 });
  const tensors = initLlamaTensors(config, 2, { std: 0.3 });
  const dir = freshDir();
  saveCheckpoint(dir, { config, tensors }, { maxShardBytes: 2000 });
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".safetensors"))
    .sort();
  assert.ok(files.length > 2, `several shards: ${files.join(", ")}`);
  assert.equal(files[0], `model-00001-of-${String(files.length).padStart(5, "0")}.safetensors`);
  const index = JSON.parse(readFileSync(join(dir, "model.safetensors.index.json"), "utf8"));
  assert.equal(Object.keys(index.weight_map).length, tensors.length);
  const loaded = loadCheckpoint(dir);
  for (const t of tensors) assert.ok(bitsEqual(loaded.tensors.get(t.name)!.data, t.data), t.name);
  // Saved again small: one file, and no stale index or shard for the loader to trip on.
  saveCheckpoint(dir, { config, tensors });
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.includes("safetensors")),
    ["model.safetensors"],
  );
  assert.equal(loadCheckpoint(dir).config.model_type, "qwen3");
});
