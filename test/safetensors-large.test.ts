import assert from "node:assert/strict";
import {
  closeSync,
  fstatSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { llamaParamSpecs, numel } from "../src/engine/params.js";
import { writeFileAtomic } from "../src/util/fsio.js";

// A Llama shape whose untied embedding and lm_head are each just over 1 GiB (so each takes two read
// calls), so the single model.safetensors is just past the 2 GiB Node reads in one piece (as
// Llama-3.2-1B's 2.47 GB file is): as small as the proof allows, since reading 2 GiB takes seconds.
const config = LlamaConfigSchema.parse({
  vocab_size: 262_200,
  hidden_size: 1024,
  intermediate_size: 8,
  num_hidden_layers: 1,
  num_attention_heads: 1,
  num_key_value_heads: 1,
  tie_word_embeddings: false,
});
const TWO_GIB = 2 ** 31;

test("a single model.safetensors over 2 GiB loads tensor by tensor (sparse file)", (t) => {
  const specs = llamaParamSpecs(config);
  const header: Record<string, unknown> = {};
  const offsets = new Map<string, number>();
  let dataBytes = 0;
  for (const s of specs) {
    header[s.name] = {
      dtype: "F32",
      shape: s.shape,
      data_offsets: [dataBytes, dataBytes + 4 * numel(s.shape)],
    };
    offsets.set(s.name, dataBytes);
    dataBytes += 4 * numel(s.shape);
  }
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const dataStart = 8 + headerBytes.length;
  const fileBytes = dataStart + dataBytes;
  assert.ok(fileBytes > TWO_GIB, `the file must pass 2 GiB, is ${fileBytes} bytes`);

  // Non-zero values at known elements near each big tensor's start and end; the rest are zero holes.
  const embed = "model.embed_tokens.weight";
  const head = "lm_head.weight";
  const n = config.vocab_size * config.hidden_size;
  const written: [string, number, number][] = [
    [embed, 0, 1.5],
    [embed, 1, -2.25],
    [embed, 12_345, 3e-7],
    [embed, n - 1, 7.75],
    [head, 0, -0.5],
    [head, n - 2, 1e20],
    [head, n - 1, -42],
  ];

  const dir = mkdtempSync(join(tmpdir(), "selfsteer-large-"));
  try {
    writeFileSync(join(dir, "config.json"), JSON.stringify(config));
    const path = join(dir, "model.safetensors");
    const fd = openSync(path, "w");
    try {
      const prefix = new Uint8Array(8);
      new DataView(prefix.buffer).setUint32(0, headerBytes.length, true);
      writeSync(fd, prefix, 0, 8, 0);
      writeSync(fd, headerBytes, 0, headerBytes.length, 8);
      try {
        ftruncateSync(fd, fileBytes);
      } catch (err) {
        t.skip(`${tmpdir()} cannot hold a ${fileBytes}-byte file (${(err as Error).message})`);
        return;
      }
      // A filesystem without holes would really allocate 2.2 GB: not what this fast test may cost.
      if (fstatSync(fd).blocks * 512 > fileBytes / 2) {
        t.skip(`${tmpdir()} does not keep sparse files (a ${fileBytes}-byte file allocated)`);
        return;
      }
      const value = new Uint8Array(4);
      const view = new DataView(value.buffer);
      for (const [name, index, x] of written) {
        view.setFloat32(0, x, true);
        writeSync(fd, value, 0, 4, dataStart + offsets.get(name)! + 4 * index);
      }
    } finally {
      closeSync(fd);
    }
    // What the loader did before: Node refuses to read the file in one piece.
    assert.throws(() => readFileSync(path), { code: "ERR_FS_FILE_TOO_LARGE" });

    const started = performance.now();
    const ckpt = loadCheckpoint(dir);
    const seconds = (performance.now() - started) / 1000;
    t.diagnostic(`loaded ${fileBytes} bytes in ${seconds.toFixed(2)} s`);

    assert.deepEqual(
      [...ckpt.tensors.keys()],
      specs.map((s) => s.name),
    );
    for (const [name, index, x] of written) assert.equal(ckpt.tensors.get(name)!.data[index], Math.fround(x));
    // Next to the written values, and in the middle of each tensor, the holes read as zeros.
    for (const name of [embed, head]) {
      const data = ckpt.tensors.get(name)!.data;
      assert.equal(data.length, n);
      for (const i of [2, 12_344, 12_346, n >> 1, n - 3]) assert.equal(data[i], 0, `${name}[${i}]`);
    }
    assert.equal(ckpt.tensors.get(embed)!.data[n - 2], 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("writeFileAtomic writes a buffer over 2 GiB whole (one write call cannot: a 0.5B model's optimizer state)", () => {
  const dir = mkdtempSync(join(tmpdir(), "selfsteer-big-write-"));
  try {
    const bytes = new Uint8Array(TWO_GIB + 4099);
    // markers at both ends and on each side of the 1 GiB write boundaries
    const marks = [0, 2 ** 30 - 1, 2 ** 30, 2 ** 31 - 1, 2 ** 31, bytes.length - 1];
    marks.forEach((at, i) => {
      bytes[at] = i + 1;
    });
    const path = join(dir, "optimizer.safetensors");
    writeFileAtomic(path, bytes);
    const fd = openSync(path, "r");
    try {
      assert.equal(fstatSync(fd).size, bytes.length);
      const one = new Uint8Array(1);
      marks.forEach((at, i) => {
        readSync(fd, one, 0, 1, at);
        assert.equal(one[0], i + 1, `byte ${at}`);
      });
    } finally {
      closeSync(fd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
