/**
 * The GGUF writer against its own reader and the format's rules (no llama.cpp needed: that is
 * gguf-interop.test.ts): header, metadata of every type, tensor offsets and alignment, F32/F16/Q8_0
 * encodings, llama.cpp's tensor names and keys for a real checkpoint, and the q/k row permutation
 * that makes llama.cpp's interleaved RoPE equal HF's rotate-half RoPE.
 */
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadCheckpoint, saveCheckpoint } from "../src/engine/checkpoint.js";
import {
  decodeTensorData,
  float16BitsToFloat32,
  float32ToFloat16Bits,
  GgmlType,
  type GgufContents,
  type GgufValue,
  ggmlTypeName,
  parseGgufHeader,
  tensorByteSize,
  writeGgufFile,
} from "../src/engine/gguf.js";
import { checkpointToGguf, ggufTensorName, permuteForInterleavedRope } from "../src/engine/gguf-export.js";
import { UserError } from "../src/util/errors.js";
import { fails, ok } from "./helpers/cli.js";

const WORLD_BASE = fileURLToPath(new URL("../../assets/world-base", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "selfsteer-gguf-"));
after(() => rmSync(work, { recursive: true, force: true }));

function randomData(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 4;
  }
  return out;
}

/** Reads every tensor of a written file back to fp32, checking offsets against the format's rules. */
function readBack(path: string): {
  header: ReturnType<typeof parseGgufHeader>;
  data: Map<string, Float32Array>;
} {
  const bytes = new Uint8Array(readFileSync(path));
  const header = parseGgufHeader(bytes, path);
  assert.equal(header.dataStart % header.alignment, 0, "data section starts aligned");
  const data = new Map<string, Float32Array>();
  let end = 0;
  for (const t of header.tensors) {
    assert.equal(t.offset % header.alignment, 0, `${t.name} offset aligned`);
    assert.ok(t.offset >= end, `${t.name} does not overlap the tensor before it`);
    const type = ggmlTypeName(t.typeId);
    assert.ok(type !== undefined, `${t.name} has a type we write`);
    const count = t.dims.reduce((a, b) => a * b, 1);
    const size = tensorByteSize(type, count);
    const start = header.dataStart + t.offset;
    assert.ok(start + size <= bytes.length, `${t.name} lies inside the file`);
    data.set(t.name, decodeTensorData(type, bytes.subarray(start, start + size), count));
    end = t.offset + size;
  }
  assert.equal(bytes.length, header.dataStart + Math.ceil(end / header.alignment) * header.alignment);
  return { header, data };
}

test("GGUF v3 round trip: every metadata type, F32/F16/Q8_0 tensors at aligned offsets", () => {
  const metadata = new Map<string, GgufValue>([
    ["general.architecture", { type: "STRING", value: "llama" }],
    ["u8", { type: "UINT8", value: 255 }],
    ["i8", { type: "INT8", value: -128 }],
    ["u16", { type: "UINT16", value: 65535 }],
    ["i16", { type: "INT16", value: -32768 }],
    ["u32", { type: "UINT32", value: 4294967295 }],
    ["i32", { type: "INT32", value: -2147483648 }],
    ["f32", { type: "FLOAT32", value: 1e-5 }],
    ["bool", { type: "BOOL", value: true }],
    ["u64", { type: "UINT64", value: 2n ** 63n }],
    ["i64", { type: "INT64", value: -(2n ** 62n) }],
    ["f64", { type: "FLOAT64", value: Math.PI }],
    ["unicode", { type: "STRING", value: "Ġhello ▁wörld 🙂" }],
    ["strings", { type: "ARRAY", itemType: "STRING", value: ["a", "", "<|im_end|>"] }],
    ["ints", { type: "ARRAY", itemType: "INT32", value: [1, -2, 3] }],
    ["empty", { type: "ARRAY", itemType: "FLOAT32", value: [] }],
  ]);
  const f32 = randomData(3 * 5, 1);
  const f16 = randomData(7, 2);
  const q8 = randomData(64 * 3, 3);
  const contents: GgufContents = {
    metadata,
    tensors: [
      { name: "a", dims: [5, 3], type: "F32", data: f32 },
      { name: "b", dims: [7], type: "F16", data: f16 },
      { name: "c", dims: [64, 3], type: "Q8_0", data: q8 },
    ],
  };
  const path = join(work, "round.gguf");
  const size = writeGgufFile(path, contents);
  assert.equal(readFileSync(path).length, size);
  assert.equal(readFileSync(path).subarray(0, 4).toString("latin1"), "GGUF");
  const { header, data } = readBack(path);
  assert.equal(header.version, 3);
  assert.equal(header.alignment, 32);
  for (const [key, v] of metadata) {
    const got = header.metadata.get(key);
    assert.ok(got !== undefined, key);
    assert.equal(got.type, v.type, key);
    if (v.type === "FLOAT32") assert.equal(got.value, Math.fround(v.value as number));
    else assert.deepEqual(got.value, v.value, key);
  }
  assert.deepEqual(
    header.tensors.map((t) => [t.name, t.dims, t.typeId]),
    [
      ["a", [5, 3], GgmlType.F32],
      ["b", [7], GgmlType.F16],
      ["c", [64, 3], GgmlType.Q8_0],
    ],
  );
  assert.deepEqual(data.get("a"), f32);
  const b = data.get("b")!;
  for (let i = 0; i < f16.length; i++) assert.ok(Math.abs(b[i] - f16[i]) <= Math.abs(f16[i]) * 2 ** -11);
  const c = data.get("c")!;
  for (let blk = 0; blk < q8.length / 32; blk++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(q8[blk * 32 + j]));
    // Half a quantization step, plus the f16 rounding of the scale times the largest code.
    const tol = (amax / 127) * (0.5 + 127 * 2 ** -11) + 1e-7;
    for (let j = 0; j < 32; j++) assert.ok(Math.abs(c[blk * 32 + j] - q8[blk * 32 + j]) <= tol);
  }
});

test("a custom general.alignment moves every offset; bad inputs are refused", () => {
  const path = join(work, "align.gguf");
  writeGgufFile(path, {
    metadata: new Map<string, GgufValue>([["general.alignment", { type: "UINT32", value: 64 }]]),
    tensors: [
      { name: "x", dims: [3], type: "F32", data: new Float32Array(3) },
      { name: "y", dims: [5], type: "F32", data: new Float32Array(5) },
    ],
  });
  const { header } = readBack(path);
  assert.equal(header.alignment, 64);
  assert.deepEqual(
    header.tensors.map((t) => t.offset),
    [0, 64],
  );
  const one = (t: GgufContents["tensors"][number]) => ({ metadata: new Map(), tensors: [t] });
  assert.throws(
    () =>
      writeGgufFile(
        join(work, "bad.gguf"),
        one({ name: "q", dims: [16, 2], type: "Q8_0", data: new Float32Array(32) }),
      ),
    /multiple of 32/,
  );
  assert.throws(
    () =>
      writeGgufFile(
        join(work, "bad.gguf"),
        one({ name: "n", dims: [4], type: "F32", data: new Float32Array(3) }),
      ),
    /3 values/,
  );
  assert.throws(
    () => parseGgufHeader(new Uint8Array([70, 85, 71, 71, 3, 0, 0, 0]), "x.gguf"),
    /not a GGUF file/,
  );
});

test("float16 conversion rounds to nearest even and covers subnormals, infinities and NaN", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65520, 0x7c00], // rounds up to infinity
    [Infinity, 0x7c00],
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // a tie: rounds to even (zero)
    [3 * 2 ** -25, 0x0002], // a tie: rounds to even (2)
    [2 ** -14, 0x0400], // smallest normal
    [1 + 2 ** -11, 0x3c00], // a tie below: stays at 1
    [1 + 3 * 2 ** -11, 0x3c02], // a tie: rounds to even
  ];
  for (const [x, bits] of cases) assert.equal(float32ToFloat16Bits(x), bits, `f16(${x})`);
  assert.ok(Number.isNaN(float16BitsToFloat32(float32ToFloat16Bits(Number.NaN))));
  for (let h = 0; h < 0x7c00; h += 37) assert.equal(float32ToFloat16Bits(float16BitsToFloat32(h)), h);
});

// RoPE on one head vector at position p with frequencies base^(-2i/d), both ways llama.cpp implements it.
function ropeRotateHalf(x: Float32Array, p: number, base: number): Float64Array {
  const d = x.length;
  const h = d / 2;
  const out = new Float64Array(d);
  for (let i = 0; i < h; i++) {
    const a = p * base ** ((-2 * i) / d);
    out[i] = x[i] * Math.cos(a) - x[i + h] * Math.sin(a);
    out[i + h] = x[i + h] * Math.cos(a) + x[i] * Math.sin(a);
  }
  return out;
}
function ropeInterleaved(x: Float32Array, p: number, base: number): Float64Array {
  const d = x.length;
  const out = new Float64Array(d);
  for (let i = 0; i < d / 2; i++) {
    const a = p * base ** ((-2 * i) / d);
    out[2 * i] = x[2 * i] * Math.cos(a) - x[2 * i + 1] * Math.sin(a);
    out[2 * i + 1] = x[2 * i + 1] * Math.cos(a) + x[2 * i] * Math.sin(a);
  }
  return out;
}

test("permuted q/k rows under interleaved RoPE give HF's rotate-half attention scores", () => {
  const heads = 3;
  const d = 8;
  const inDim = 5;
  const wq = randomData(heads * d * inDim, 7);
  const wk = randomData(heads * d * inDim, 8);
  const x1 = randomData(inDim, 9);
  const x2 = randomData(inDim, 10);
  const project = (w: Float32Array, x: Float32Array, h: number) => {
    const out = new Float32Array(d);
    for (let r = 0; r < d; r++) for (let c = 0; c < inDim; c++) out[r] += w[(h * d + r) * inDim + c] * x[c];
    return out;
  };
  const wqP = permuteForInterleavedRope(wq, heads, inDim);
  const wkP = permuteForInterleavedRope(wk, heads, inDim);
  for (let h = 0; h < heads; h++) {
    const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i], 0);
    const hf = dot(
      ropeRotateHalf(project(wq, x1, h), 5, 10000),
      ropeRotateHalf(project(wk, x2, h), 2, 10000),
    );
    const cpp = dot(
      ropeInterleaved(project(wqP, x1, h), 5, 10000),
      ropeInterleaved(project(wkP, x2, h), 2, 10000),
    );
    assert.ok(Math.abs(hf - cpp) < 1e-4 * Math.max(1, Math.abs(hf)), `head ${h}: ${hf} vs ${cpp}`);
  }
  // A bias is a weight with one column.
  assert.deepEqual(
    Array.from(permuteForInterleavedRope(Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]), 2, 1)),
    [0, 2, 1, 3, 4, 6, 5, 7],
  );
});

test("world-base exports with llama.cpp's names, hyperparameters, tokenizer and chat template", () => {
  const contents = checkpointToGguf(WORLD_BASE, { type: "f32" });
  const ckpt = loadCheckpoint(WORLD_BASE);
  const config = JSON.parse(readFileSync(join(WORLD_BASE, "config.json"), "utf8"));
  const meta = (k: string) => contents.metadata.get(k)?.value;
  assert.equal(meta("general.architecture"), "llama");
  assert.equal(meta("general.file_type"), 0);
  assert.equal(meta("llama.block_count"), config.num_hidden_layers);
  assert.equal(meta("llama.embedding_length"), config.hidden_size);
  assert.equal(meta("llama.feed_forward_length"), config.intermediate_size);
  assert.equal(meta("llama.attention.head_count"), config.num_attention_heads);
  assert.equal(meta("llama.attention.head_count_kv"), config.num_key_value_heads);
  assert.equal(meta("llama.rope.dimension_count"), config.hidden_size / config.num_attention_heads);
  assert.equal(meta("llama.context_length"), config.max_position_embeddings);
  assert.equal(meta("tokenizer.ggml.model"), "gpt2");
  assert.equal(meta("tokenizer.ggml.pre"), "gpt-2");
  assert.equal((meta("tokenizer.ggml.tokens") as string[]).length, config.vocab_size);
  const tokenizerJson = JSON.parse(readFileSync(join(WORLD_BASE, "tokenizer.json"), "utf8"));
  assert.equal((meta("tokenizer.ggml.merges") as string[]).length, tokenizerJson.model.merges.length);
  assert.equal(meta("tokenizer.ggml.eos_token_id"), 258); // <|im_end|>
  assert.equal(meta("tokenizer.ggml.add_bos_token"), false);
  assert.equal(
    meta("tokenizer.chat_template"),
    JSON.parse(readFileSync(join(WORLD_BASE, "tokenizer_config.json"), "utf8")).chat_template,
  );
  const types = meta("tokenizer.ggml.token_type") as number[];
  assert.equal(types[258], 3, "special tokens are CONTROL");
  assert.equal(types[65], 1);

  const names = contents.tensors.map((t) => t.name);
  assert.ok(names.includes("token_embd.weight") && names.includes("output_norm.weight"));
  assert.ok(!names.includes("output.weight"), "tied embeddings: llama.cpp reuses token_embd");
  for (let l = 0; l < config.num_hidden_layers; l++)
    for (const s of [
      "attn_norm",
      "attn_q",
      "attn_k",
      "attn_v",
      "attn_output",
      "ffn_norm",
      "ffn_gate",
      "ffn_up",
      "ffn_down",
    ])
      assert.ok(names.includes(`blk.${l}.${s}.weight`), `blk.${l}.${s}.weight`);
  const embd = contents.tensors.find((t) => t.name === "token_embd.weight")!;
  assert.deepEqual(embd.dims, [config.hidden_size, config.vocab_size]);
  assert.ok(sameValues(embd.data, ckpt.tensors.get("model.embed_tokens.weight")!.data));
  const k = contents.tensors.find((t) => t.name === "blk.0.attn_k.weight")!;
  assert.ok(
    sameValues(
      k.data,
      permuteForInterleavedRope(ckpt.tensors.get("model.layers.0.self_attn.k_proj.weight")!.data, 2, 128),
    ),
  );
  const v = contents.tensors.find((t) => t.name === "blk.0.attn_v.weight")!;
  assert.ok(
    sameValues(v.data, ckpt.tensors.get("model.layers.0.self_attn.v_proj.weight")!.data),
    "v is not permuted",
  );
  assert.equal(ggufTensorName("model.layers.11.self_attn.q_norm.weight"), "blk.11.attn_q_norm.weight");
  assert.equal(ggufTensorName("model.layers.0.mlp.up_proj.bias"), "blk.0.ffn_up.bias");
  assert.equal(ggufTensorName("score.weight"), undefined);
});

test("model export writes F32, F16 and Q8_0 files whose tensors read back; bad input exits 2", () => {
  const sizes: Record<string, number> = {};
  const ref = permuteForInterleavedRope(
    loadCheckpoint(WORLD_BASE).tensors.get("model.layers.1.self_attn.q_proj.weight")!.data,
    4,
    128,
  );
  for (const type of ["f32", "f16", "q8_0"] as const) {
    const out = join(work, `wb-${type}.gguf`);
    // One run through the CLI; the other types in process (each CLI start costs seconds on a loaded machine).
    if (type === "q8_0") {
      const summary = JSON.parse(
        ok("model", "export", "--model", WORLD_BASE, "--format", "gguf", "--out", out, "--type", type),
      );
      assert.equal(summary.architecture, "llama");
      sizes[type] = summary.bytes;
    } else sizes[type] = writeGgufFile(out, checkpointToGguf(WORLD_BASE, { type }));
    const { header, data } = readBack(out);
    const q = header.tensors.find((t) => t.name === "blk.1.attn_q.weight")!;
    assert.equal(q.typeId, GgmlType[type.toUpperCase() as "F32" | "F16" | "Q8_0"]);
    const norm = header.tensors.find((t) => t.name === "blk.1.attn_norm.weight")!;
    assert.equal(norm.typeId, GgmlType.F32, "norms stay F32");
    assert.equal(header.metadata.get("general.file_type")?.value, { f32: 0, f16: 1, q8_0: 7 }[type]);
    const got = data.get("blk.1.attn_q.weight")!;
    let err = 0;
    for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs(got[i] - ref[i]));
    assert.ok(err <= { f32: 0, f16: 1e-3, q8_0: 2e-2 }[type], `${type}: max error ${err}`);
  }
  assert.ok(sizes.f16 < sizes.f32 * 0.55 && sizes.q8_0 < sizes.f16 * 0.6, JSON.stringify(sizes));

  fails(
    ["--type", "q4"],
    "model",
    "export",
    "--model",
    WORLD_BASE,
    "--out",
    join(work, "x.gguf"),
    "--type",
    "q4",
  );
  fails(["not a checkpoint directory"], "model", "export", "--model", work, "--out", join(work, "x.gguf"));
  assert.ok(!existsSync(join(work, "x.gguf")));
});

test("what llama.cpp cannot reproduce is refused naming the file and field", () => {
  const odd = join(work, "odd");
  cpSync(WORLD_BASE, odd, { recursive: true });
  const tj = JSON.parse(readFileSync(join(odd, "tokenizer.json"), "utf8"));
  tj.pre_tokenizer = { type: "ByteLevel", add_prefix_space: true, use_regex: true, trim_offsets: true };
  writeFileSync(join(odd, "tokenizer.json"), JSON.stringify(tj));
  assert.throws(
    () => checkpointToGguf(odd, { type: "f32" }),
    (e: Error) => e instanceof UserError && /tokenizer\.json: field pre_tokenizer/.test(e.message),
  );

  const rm = join(work, "rm");
  const ckpt = loadCheckpoint(WORLD_BASE);
  const hidden = ckpt.config.hidden_size;
  saveCheckpoint(rm, {
    config: ckpt.config,
    tensors: [
      ...ckpt.tensors.values(),
      { name: "score.weight", shape: [1, hidden], data: new Float32Array(hidden) },
    ],
  });
  assert.throws(
    () => checkpointToGguf(rm, { type: "f32" }),
    (e: Error) => e instanceof UserError && /reward model/.test(e.message),
  );
});

function sameValues(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((x, i) => Object.is(x, b[i]));
}
