import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import fc from "fast-check";
import type { NamedTensor } from "../src/engine/params.js";
import {
  halfToFloat,
  parseSafetensors,
  readSafetensors,
  readSafetensorsFile,
  type SafetensorsFile,
  safetensorsParts,
  writeSafetensors,
} from "../src/engine/safetensors.js";
import { UserError } from "../src/util/errors.js";
import { writeFileAtomic } from "../src/util/fsio.js";

const root = mkdtempSync(join(tmpdir(), "selfsteer-st-"));
after(() => rmSync(root, { recursive: true, force: true }));
let fileCount = 0;

/** Writes `bytes` to a fresh file and returns its path. */
function onDisk(bytes: Uint8Array): string {
  const path = join(root, `f${fileCount++}.safetensors`);
  writeFileSync(path, bytes);
  return path;
}

/** Reads `bytes` from disk with readSafetensorsFile, asserting it equals parseSafetensors bit for bit. */
function readBoth(bytes: Uint8Array): SafetensorsFile {
  const path = onDisk(bytes);
  const fromFile = readSafetensorsFile(path);
  const inMemory = parseSafetensors(bytes, path);
  assert.deepEqual(fromFile.metadata, inMemory.metadata);
  assert.deepEqual([...fromFile.tensors.keys()], [...inMemory.tensors.keys()]);
  for (const [name, t] of inMemory.tensors) {
    const f = fromFile.tensors.get(name)!;
    assert.equal(f.dtype, t.dtype);
    assert.deepEqual(f.shape, t.shape);
    assert.deepEqual(new Uint32Array(f.data.buffer), new Uint32Array(t.data.slice().buffer), name);
  }
  return fromFile;
}

/** Builds a safetensors file by hand from a header object and raw data bytes. */
function rawFile(header: unknown, data: Uint8Array, headerText?: string): Uint8Array {
  const text = new TextEncoder().encode(headerText ?? JSON.stringify(header));
  const out = new Uint8Array(8 + text.length + data.length);
  new DataView(out.buffer).setUint32(0, text.length, true);
  out.set(text, 8);
  out.set(data, 8 + text.length);
  return out;
}

function u16le(values: number[]): Uint8Array {
  const out = new Uint8Array(2 * values.length);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => {
    view.setUint16(2 * i, v, true);
  });
  return out;
}

function f32le(values: number[]): Uint8Array {
  const out = new Uint8Array(4 * values.length);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => {
    view.setFloat32(4 * i, v, true);
  });
  return out;
}

/** Both readers refuse `bytes` with the same UserError, naming the file and mentioning each fragment. */
function expectInvalid(bytes: Uint8Array, ...fragments: string[]): void {
  let message = "";
  assert.throws(
    () => readSafetensors(bytes, "bad.safetensors"),
    (err: unknown) => {
      assert.ok(err instanceof UserError, `expected UserError, got ${String(err)}`);
      assert.match(err.message, /^bad\.safetensors: /);
      for (const f of fragments) assert.ok(err.message.includes(f), `'${err.message}' should mention '${f}'`);
      message = err.message;
      return true;
    },
  );
  const path = onDisk(bytes);
  assert.throws(
    () => readSafetensorsFile(path),
    (err: unknown) => {
      assert.ok(err instanceof UserError, `expected UserError, got ${String(err)}`);
      assert.equal(err.message, message.replace(/^bad\.safetensors: /, `${path}: `));
      return true;
    },
  );
}

test("write then read is bit-exact from memory and from disk, header 8-byte aligned, with format metadata", () => {
  const tensors: NamedTensor[] = [
    { name: "a", shape: [2, 3], data: new Float32Array([1, -2.5, 3e-38, Number.NaN, -0, 1e30]) },
    { name: "b.weight", shape: [1], data: new Float32Array([Math.PI]) },
    { name: "scalar", shape: [], data: new Float32Array([7]) },
    { name: "empty", shape: [0, 4], data: new Float32Array(0) },
  ];
  const bytes = writeSafetensors(tensors, { note: "hello" });
  const headerLen = new DataView(bytes.buffer).getUint32(0, true);
  assert.equal(headerLen % 8, 0);
  assert.equal(new DataView(bytes.buffer).getUint32(4, true), 0);
  const file = readBoth(bytes);
  assert.deepEqual(file.metadata, { format: "pt", note: "hello" });
  assert.deepEqual([...file.tensors.keys()], ["a", "b.weight", "scalar", "empty"]);
  for (const t of tensors) {
    const got = file.tensors.get(t.name)!;
    assert.equal(got.dtype, "F32");
    assert.deepEqual(got.shape, t.shape);
    assert.deepEqual(new Uint32Array(got.data.buffer), new Uint32Array(t.data.slice().buffer));
  }
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  assert.deepEqual(header.a, { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] });
  assert.deepEqual(header["b.weight"].data_offsets, [24, 28]);
});

test("read tensors are copies, independent of the file bytes", () => {
  const bytes = writeSafetensors([{ name: "x", shape: [2], data: new Float32Array([1, 2]) }]);
  const x = readSafetensors(bytes, "t").get("x")!;
  x.data[0] = 99;
  assert.equal(readSafetensors(bytes, "t").get("x")!.data[0], 1);
});

test("round trip holds for arbitrary tensors (property)", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
          seed: fc.integer(),
        }),
        { maxLength: 5 },
      ),
      fc.integer({ min: 0, max: 7 }),
      (specs, offsetPad) => {
        const tensors = specs.map((s, i) => {
          const n = s.shape.reduce((a, b) => a * b, 1);
          const data = new Float32Array(n);
          for (let j = 0; j < n; j++) data[j] = Math.fround(Math.sin(s.seed + j) * 1e3);
          return { name: `t${i}`, shape: s.shape, data };
        });
        // Reading from an unaligned view of a larger buffer must work too.
        const bytes = writeSafetensors(tensors);
        const shifted = new Uint8Array(bytes.length + offsetPad);
        shifted.set(bytes, offsetPad);
        const read = readSafetensors(shifted.subarray(offsetPad), "p");
        assert.equal(read.size, tensors.length);
        readBoth(bytes);
        for (const t of tensors) assert.deepEqual(read.get(t.name)!.data, t.data);
      },
    ),
    { numRuns: 200 },
  );
});

test("BF16 and F16 are widened to fp32 exactly, from memory and from disk", () => {
  const bf16 = [0x3f80, 0xc000, 0x4049, 0x0000, 0x8000, 0x7f80, 0xff80, 0x0001];
  const f16 = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x0400, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x3555];
  const data = new Uint8Array([...u16le(bf16), ...u16le(f16)]);
  const bytes = rawFile(
    {
      b: { dtype: "BF16", shape: [8], data_offsets: [0, 16] },
      h: { dtype: "F16", shape: [2, 5], data_offsets: [16, 36] },
    },
    data,
  );
  const read = readBoth(bytes).tensors;
  assert.equal(read.get("b")!.dtype, "BF16");
  assert.deepEqual(Array.from(read.get("b")!.data), [1, -2, 3.140625, 0, -0, Infinity, -Infinity, 2 ** -133]);
  const h = Array.from(read.get("h")!.data);
  assert.equal(read.get("h")!.dtype, "F16");
  assert.deepEqual(h.slice(0, 8), [1, -2, 65504, 2 ** -24, 2 ** -14, -0, Infinity, -Infinity]);
  assert.ok(Number.isNaN(h[8]));
  assert.equal(h[9], (1 + 0x155 / 1024) / 4);
  assert.equal(halfToFloat(0x3555), 0.333251953125);
});

test("F16 conversion agrees with Math.fround of the decoded value for every bit pattern", () => {
  // Each finite half is exactly representable in fp32, and the sign/exponent/mantissa decode is monotone.
  let prev = -Infinity;
  for (let h = 0xfbff; h >= 0x8001; h--) {
    const x = halfToFloat(h);
    assert.equal(Math.fround(x), x);
    assert.ok(x > prev);
    prev = x;
  }
  for (let h = 0; h <= 0x7c00; h++) {
    const x = halfToFloat(h);
    assert.equal(Math.fround(x), x);
    assert.ok(x > prev || (h === 0 && x === 0));
    prev = x;
  }
});

test("malformed files are rejected naming the file and the tensor, alike from memory and from disk", () => {
  const okData = f32le([1, 2, 3, 4]);
  expectInvalid(new Uint8Array(0), "0 bytes is too short");
  expectInvalid(new Uint8Array(5), "too short");
  const whole = writeSafetensors([
    { name: "a", shape: [2], data: new Float32Array([1, 2]) },
    { name: "b", shape: [3], data: new Float32Array([3, 4, 5]) },
  ]);
  expectInvalid(whole.subarray(0, whole.length - 1), "tensor 'b'", "past the end of the data");
  expectInvalid(whole.subarray(0, 20), "runs past the end of the file (20 bytes)");
  const badUtf8 = new Uint8Array([3, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0xff, 0x7d]);
  expectInvalid(badUtf8, "not valid UTF-8");
  const longHeader = new Uint8Array(16);
  new DataView(longHeader.buffer).setUint32(0, 1000, true);
  expectInvalid(longHeader, "header length 1000");
  const hugeHeader = new Uint8Array(16);
  new DataView(hugeHeader.buffer).setUint32(4, 1, true);
  expectInvalid(hugeHeader, "header length");
  expectInvalid(rawFile(null, okData, '{"x": {"dtype": '), "not valid JSON");
  expectInvalid(rawFile([1, 2], okData), "not a JSON object");
  expectInvalid(
    rawFile({ w: { dtype: "Q7", shape: [4], data_offsets: [0, 16] } }, okData),
    "'w'",
    "unknown dtype 'Q7'",
  );
  expectInvalid(
    rawFile({ w: { dtype: "I64", shape: [2], data_offsets: [0, 16] } }, okData),
    "'w'",
    "unsupported dtype",
  );
  expectInvalid(rawFile({ w: { shape: [4], data_offsets: [0, 16] } }, okData), "'w'", "dtype");
  expectInvalid(
    rawFile({ w: { dtype: "F32", shape: [4], data_offsets: [0, 20] } }, okData),
    "'w'",
    "past the end",
  );
  expectInvalid(
    rawFile({ w: { dtype: "F32", shape: [3], data_offsets: [0, 16] } }, okData),
    "'w'",
    "needs 12 bytes",
  );
  expectInvalid(rawFile({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 16] } }, okData), "'w'", "shape");
  expectInvalid(
    rawFile({ w: { dtype: "F32", shape: [4], data_offsets: [8, 4] } }, okData),
    "'w'",
    "data_offsets",
  );
  expectInvalid(
    rawFile({ w: { dtype: "F32", shape: [4], data_offsets: [0] } }, okData),
    "'w'",
    "data_offsets",
  );
  expectInvalid(rawFile({ w: "F32" }, okData), "'w'", "not an object");
  expectInvalid(
    rawFile(
      {
        a: { dtype: "F32", shape: [3], data_offsets: [0, 12] },
        b: { dtype: "F32", shape: [2], data_offsets: [8, 16] },
      },
      okData,
    ),
    "'b'",
    "overlap tensor 'a'",
  );
  expectInvalid(rawFile({ __metadata__: { format: 1 } }, okData), "__metadata__");
});

test("the file reader names a missing or unreadable file", () => {
  const missing = join(root, "missing.safetensors");
  assert.throws(() => readSafetensorsFile(missing), {
    name: "UserError",
    message: `${missing}: cannot read file (ENOENT)`,
  });
  const dir = join(root, "a-directory.safetensors");
  mkdirSync(dir);
  assert.throws(() => readSafetensorsFile(dir), {
    name: "UserError",
    message: `${dir}: cannot read file (EISDIR)`,
  });
});

test("header padding spaces and data offsets relative to the data start are honoured", () => {
  const header = JSON.stringify({ w: { dtype: "F32", shape: [2], data_offsets: [4, 12] } });
  const bytes = rawFile(null, f32le([9, 5, 6]), `${header}      `);
  assert.deepEqual(Array.from(readBoth(bytes).tensors.get("w")!.data), [5, 6]);
});

test("writer refuses inconsistent tensors", () => {
  assert.throws(
    () => writeSafetensors([{ name: "x", shape: [3], data: new Float32Array(2) }]),
    /shape \[3\]/,
  );
  assert.throws(
    () =>
      writeSafetensors([
        { name: "x", shape: [1], data: new Float32Array(1) },
        { name: "x", shape: [1], data: new Float32Array(1) },
      ]),
    /duplicate/,
  );
});

test("safetensorsParts written piece by piece give writeSafetensors' bytes, the tensors as views (no copy)", () => {
  const a = Float32Array.from([1.5, -2, 3e-7]);
  const b = new Float32Array(new ArrayBuffer(64), 8, 5).fill(0.25); // a view at an offset
  const tensors = [
    { name: "a", shape: [3], data: a },
    { name: "b", shape: [5], data: b },
  ];
  const parts = safetensorsParts(tensors, { step: "7" });
  assert.equal(parts.length, 3);
  assert.equal(parts[1], a);
  assert.equal(parts[2], b);
  const dir = mkdtempSync(join(tmpdir(), "selfsteer-parts-"));
  try {
    const path = join(dir, "x.safetensors");
    writeFileAtomic(path, parts);
    assert.deepEqual(new Uint8Array(readFileSync(path)), writeSafetensors(tensors, { step: "7" }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
