/**
 * The GGUF file format (version 3), the single-file model format of llama.cpp, Ollama and LM Studio:
 *
 *   "GGUF" | u32 version | u64 tensor count | u64 metadata count
 *   metadata: (string key, u32 value type, value)*
 *   tensor infos: (string name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset)*
 *   padding to `general.alignment` (32 by default)
 *   tensor data, each tensor at its offset from the start of this section (a multiple of the alignment)
 *
 * All numbers are little-endian; a string is a u64 byte length then UTF-8 bytes. Dims are in ggml order,
 * fastest-varying first, so an HF row-major weight [out, in] is written with dims [in, out]. This module
 * knows only the container: which tensors and keys a model needs is gguf-export.ts's job. The reader is
 * here so tests (and `model export`'s own check) can parse back what was written.
 */

import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, readSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname } from "node:path";

/** The four bytes every GGUF file starts with. */
export const GGUF_MAGIC = "GGUF";
/** The format version we write. */
export const GGUF_VERSION = 3;
/** The data alignment llama.cpp assumes when `general.alignment` is absent. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types (gguf_type). */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
type ScalarTypeName = Exclude<keyof typeof GgufValueType, "ARRAY">;

/** Tensor element types we write (ggml_type ids). */
export const GgmlType = { F32: 0, F16: 1, Q8_0: 8 } as const;
/** One of GgmlType's names. */
export type GgmlTypeName = keyof typeof GgmlType;

/** Elements per Q8_0 block: one f16 scale d, then 32 int8 values q with x ≈ d·q. */
export const Q8_0_BLOCK = 32;
const Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK;

/** A metadata value with its GGUF type spelled out (numbers alone do not say u32 from f32). */
export type GgufValue =
  | { type: ScalarTypeName; value: number | bigint | boolean | string }
  | { type: "ARRAY"; itemType: ScalarTypeName; value: readonly (number | bigint | boolean | string)[] };

/** One tensor to write: name, dims in ggml order (ne0 first), element type and fp32 data. */
export interface GgufTensor {
  name: string;
  /** ggml dims, fastest-varying first ([in, out] for an HF [out, in] weight). */
  dims: readonly number[];
  type: GgmlTypeName;
  /** The values in row-major order of the reversed dims (i.e. HF order), length = product of dims. */
  data: Float32Array;
}

/** What a GGUF file holds: ordered metadata and tensors. */
export interface GgufContents {
  metadata: ReadonlyMap<string, GgufValue>;
  tensors: readonly GgufTensor[];
}

/** Bytes one tensor of `count` elements takes in `type`. */
export function tensorByteSize(type: GgmlTypeName, count: number): number {
  if (type === "F32") return count * 4;
  if (type === "F16") return count * 2;
  if (count % Q8_0_BLOCK !== 0)
    throw new Error(`Q8_0 needs a multiple of ${Q8_0_BLOCK} elements, got ${count}`);
  return (count / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
}

// --- encoding ------------------------------------------------------------------------------------

/** A growable little-endian byte buffer for the header. */
class ByteWriter {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;
  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): void {
    this.ensure(1);
    this.view.setUint8(this.length, v);
    this.length += 1;
  }
  i8(v: number): void {
    this.ensure(1);
    this.view.setInt8(this.length, v);
    this.length += 1;
  }
  u16(v: number): void {
    this.ensure(2);
    this.view.setUint16(this.length, v, true);
    this.length += 2;
  }
  i16(v: number): void {
    this.ensure(2);
    this.view.setInt16(this.length, v, true);
    this.length += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }
  i32(v: number): void {
    this.ensure(4);
    this.view.setInt32(this.length, v, true);
    this.length += 4;
  }
  f32(v: number): void {
    this.ensure(4);
    this.view.setFloat32(this.length, v, true);
    this.length += 4;
  }
  f64(v: number): void {
    this.ensure(8);
    this.view.setFloat64(this.length, v, true);
    this.length += 8;
  }
  u64(v: number | bigint): void {
    this.ensure(8);
    this.view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  i64(v: number | bigint): void {
    this.ensure(8);
    this.view.setBigInt64(this.length, BigInt(v), true);
    this.length += 8;
  }
  string(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(bytes.length);
    this.ensure(bytes.length);
    this.buf.set(bytes, this.length);
    this.length += bytes.length;
  }
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

function writeScalar(
  w: ByteWriter,
  type: ScalarTypeName,
  v: number | bigint | boolean | string,
  key: string,
): void {
  const bad = () => new Error(`gguf: metadata ${key}: ${String(v)} is not a valid ${type}`);
  if (type === "STRING") {
    if (typeof v !== "string") throw bad();
    w.string(v);
    return;
  }
  if (type === "BOOL") {
    if (typeof v !== "boolean") throw bad();
    w.u8(v ? 1 : 0);
    return;
  }
  if (typeof v === "string" || typeof v === "boolean") throw bad();
  if (type === "UINT64" || type === "INT64") {
    if (typeof v === "number" && !Number.isInteger(v)) throw bad();
    if (type === "UINT64") w.u64(v);
    else w.i64(v);
    return;
  }
  const n = Number(v);
  if (type === "FLOAT32" || type === "FLOAT64") {
    if (type === "FLOAT32") w.f32(n);
    else w.f64(n);
    return;
  }
  const ranges: Record<string, [number, number]> = {
    UINT8: [0, 0xff],
    INT8: [-0x80, 0x7f],
    UINT16: [0, 0xffff],
    INT16: [-0x8000, 0x7fff],
    UINT32: [0, 0xffffffff],
    INT32: [-0x80000000, 0x7fffffff],
  };
  const [lo, hi] = ranges[type];
  if (!Number.isInteger(n) || n < lo || n > hi) throw bad();
  if (type === "UINT8") w.u8(n);
  else if (type === "INT8") w.i8(n);
  else if (type === "UINT16") w.u16(n);
  else if (type === "INT16") w.i16(n);
  else if (type === "UINT32") w.u32(n);
  else w.i32(n);
}

/** The alignment a metadata map asks for (general.alignment, else 32). */
function alignmentOf(metadata: ReadonlyMap<string, GgufValue>): number {
  const a = metadata.get("general.alignment");
  if (a === undefined) return GGUF_DEFAULT_ALIGNMENT;
  const n = Number(a.value);
  if (a.type !== "UINT32" || !Number.isInteger(n) || n <= 0 || n % 8 !== 0)
    throw new Error(`gguf: general.alignment must be a UINT32 multiple of 8, got ${String(a.value)}`);
  return n;
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/** The header bytes (through the padding before the data section) and each tensor's data offset. */
export function encodeGgufHeader(contents: GgufContents): {
  header: Uint8Array;
  offsets: number[];
  dataBytes: number;
} {
  const alignment = alignmentOf(contents.metadata);
  const w = new ByteWriter();
  for (const ch of GGUF_MAGIC) w.u8(ch.charCodeAt(0));
  w.u32(GGUF_VERSION);
  w.u64(contents.tensors.length);
  w.u64(contents.metadata.size);
  for (const [key, v] of contents.metadata) {
    w.string(key);
    w.u32(GgufValueType[v.type]);
    if (v.type === "ARRAY") {
      w.u32(GgufValueType[v.itemType]);
      w.u64(v.value.length);
      for (const item of v.value) writeScalar(w, v.itemType, item, key);
    } else writeScalar(w, v.type, v.value, key);
  }
  const offsets: number[] = [];
  let offset = 0;
  const names = new Set<string>();
  for (const t of contents.tensors) {
    if (names.has(t.name)) throw new Error(`gguf: duplicate tensor ${t.name}`);
    names.add(t.name);
    const count = t.dims.reduce((a, b) => a * b, 1);
    if (count !== t.data.length)
      throw new Error(`gguf: tensor ${t.name} has ${t.data.length} values for dims [${t.dims.join(", ")}]`);
    if (t.type === "Q8_0" && t.dims[0] % Q8_0_BLOCK !== 0)
      throw new Error(
        `gguf: tensor ${t.name}: Q8_0 needs ne0 (${t.dims[0]}) to be a multiple of ${Q8_0_BLOCK}`,
      );
    w.string(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(GgmlType[t.type]);
    w.u64(offset);
    offsets.push(offset);
    offset = alignUp(offset + tensorByteSize(t.type, count), alignment);
  }
  const headerLength = alignUp(w.length, alignment);
  while (w.length < headerLength) w.u8(0);
  return { header: w.bytes().slice(), offsets, dataBytes: offset };
}

/** IEEE half precision of x, rounded to nearest even (what numpy's astype(float16) does). */
export function float32ToFloat16Bits(x: number): number {
  f32Scratch[0] = x;
  const bits = u32Scratch[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0); // inf / nan
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow to inf
  if (e <= 0) {
    // Subnormal half (or zero): shift the implicit 1 in and round to nearest even.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (m & 1) === 1)) m += 1;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1) === 1)) {
    m += 1;
    if (m === 0x400) {
      m = 0;
      e += 1;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

/** The fp32 value of IEEE half-precision bits. */
export function float16BitsToFloat32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : Number.NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/**
 * Encodes values as `type` into a new byte array. Q8_0 follows ggml's reference quantizer: per block
 * of 32, d = max|x| / 127 (stored as f16), q = round(x / d) (round half away from zero).
 */
export function encodeTensorData(type: GgmlTypeName, data: Float32Array): Uint8Array {
  const out = new Uint8Array(tensorByteSize(type, data.length));
  const view = new DataView(out.buffer);
  if (type === "F32") {
    for (let i = 0; i < data.length; i++) view.setFloat32(i * 4, data[i], true);
    return out;
  }
  if (type === "F16") {
    for (let i = 0; i < data.length; i++) view.setUint16(i * 2, float32ToFloat16Bits(data[i]), true);
    return out;
  }
  for (let b = 0; b < data.length / Q8_0_BLOCK; b++) {
    const base = b * Q8_0_BLOCK;
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(data[base + j]));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const at = b * Q8_0_BLOCK_BYTES;
    view.setUint16(at, float32ToFloat16Bits(d), true);
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const x = Math.fround(data[base + j] * id);
      view.setInt8(at + 2 + j, Math.sign(x) * Math.round(Math.abs(x)));
    }
  }
  return out;
}

/** Decodes tensor bytes of `type` back to fp32 (F32, F16, Q8_0). */
export function decodeTensorData(type: GgmlTypeName, bytes: Uint8Array, count: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  if (type === "F32") for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
  else if (type === "F16")
    for (let i = 0; i < count; i++) out[i] = float16BitsToFloat32(view.getUint16(i * 2, true));
  else
    for (let b = 0; b < count / Q8_0_BLOCK; b++) {
      const at = b * Q8_0_BLOCK_BYTES;
      const d = float16BitsToFloat32(view.getUint16(at, true));
      for (let j = 0; j < Q8_0_BLOCK; j++) out[b * Q8_0_BLOCK + j] = d * view.getInt8(at + 2 + j);
    }
  return out;
}

/**
 * Writes a GGUF file atomically (a temp file beside it, fsync, rename), streaming tensor data one
 * tensor at a time so a model larger than memory's second copy can still be written. Returns the size.
 */
export function writeGgufFile(path: string, contents: GgufContents): number {
  const { header, offsets, dataBytes } = encodeGgufHeader(contents);
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const fd = openSync(tmp, "w");
  try {
    let position = 0;
    const put = (bytes: Uint8Array) => {
      let done = 0;
      while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
      position += bytes.length;
    };
    put(header);
    const dataStart = header.length;
    contents.tensors.forEach((t, i) => {
      const target = dataStart + offsets[i];
      if (target > position) put(new Uint8Array(target - position));
      put(encodeTensorData(t.type, t.data));
    });
    if (dataStart + dataBytes > position) put(new Uint8Array(dataStart + dataBytes - position));
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, path);
    return position;
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
    rmSync(tmp, { force: true });
    throw err;
  }
}

// --- decoding ------------------------------------------------------------------------------------

/** A tensor as listed in a GGUF header. */
export interface GgufTensorInfo {
  name: string;
  dims: number[];
  /** The ggml type id (GgmlType for the ones we write). */
  typeId: number;
  /** Offset from the start of the data section. */
  offset: number;
}

/** A parsed GGUF header. */
export interface GgufHeader {
  version: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Byte offset of the data section in the file. */
  dataStart: number;
}

const TYPE_NAMES = Object.fromEntries(Object.entries(GgufValueType).map(([k, v]) => [v, k])) as Record<
  number,
  keyof typeof GgufValueType
>;

/** Parses the header of GGUF bytes (the whole file or at least its header); errors name `source`. */
export function parseGgufHeader(bytes: Uint8Array, source = "gguf"): GgufHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const need = (n: number) => {
    if (at + n > bytes.length) throw new Error(`${source}: truncated at byte ${at}`);
  };
  const u32 = () => {
    need(4);
    const v = view.getUint32(at, true);
    at += 4;
    return v;
  };
  const u64 = () => {
    need(8);
    const v = view.getBigUint64(at, true);
    at += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER))
      throw new Error(`${source}: u64 ${v} too large at byte ${at - 8}`);
    return Number(v);
  };
  const str = () => {
    const n = u64();
    need(n);
    const s = Buffer.from(bytes.buffer, bytes.byteOffset + at, n).toString("utf8");
    at += n;
    return s;
  };
  const scalar = (type: ScalarTypeName): number | bigint | boolean | string => {
    switch (type) {
      case "UINT8":
        need(1);
        return view.getUint8(at++);
      case "INT8":
        need(1);
        return view.getInt8(at++);
      case "UINT16":
        need(2);
        at += 2;
        return view.getUint16(at - 2, true);
      case "INT16":
        need(2);
        at += 2;
        return view.getInt16(at - 2, true);
      case "UINT32":
        return u32();
      case "INT32":
        need(4);
        at += 4;
        return view.getInt32(at - 4, true);
      case "FLOAT32":
        need(4);
        at += 4;
        return view.getFloat32(at - 4, true);
      case "BOOL":
        need(1);
        return view.getUint8(at++) !== 0;
      case "STRING":
        return str();
      case "UINT64":
        need(8);
        at += 8;
        return view.getBigUint64(at - 8, true);
      case "INT64":
        need(8);
        at += 8;
        return view.getBigInt64(at - 8, true);
      case "FLOAT64":
        need(8);
        at += 8;
        return view.getFloat64(at - 8, true);
    }
  };
  need(4);
  const magic = String.fromCharCode(...bytes.subarray(0, 4));
  if (magic !== GGUF_MAGIC) throw new Error(`${source}: not a GGUF file (magic ${JSON.stringify(magic)})`);
  at = 4;
  const version = u32();
  if (version !== 3) throw new Error(`${source}: GGUF version ${version}, expected 3`);
  const tensorCount = u64();
  const kvCount = u64();
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = str();
    const typeName = TYPE_NAMES[u32()];
    if (typeName === undefined) throw new Error(`${source}: metadata ${key}: unknown value type`);
    if (typeName === "ARRAY") {
      const itemType = TYPE_NAMES[u32()];
      if (itemType === undefined || itemType === "ARRAY")
        throw new Error(`${source}: metadata ${key}: unsupported array item type`);
      const n = u64();
      const value: (number | bigint | boolean | string)[] = [];
      for (let j = 0; j < n; j++) value.push(scalar(itemType));
      metadata.set(key, { type: "ARRAY", itemType, value });
    } else metadata.set(key, { type: typeName, value: scalar(typeName) });
  }
  const tensors: GgufTensorInfo[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = str();
    const nDims = u32();
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(u64());
    const typeId = u32();
    const offset = u64();
    tensors.push({ name, dims, typeId, offset });
  }
  const alignment = alignmentOf(metadata);
  return { version, metadata, tensors, alignment, dataStart: alignUp(at, alignment) };
}

/** Reads a GGUF file's header from disk without reading its tensor data. */
export function readGgufHeaderFromFile(path: string): GgufHeader {
  const fd = openSync(path, "r");
  try {
    let size = 1 << 20;
    for (;;) {
      const buf = new Uint8Array(size);
      const n = readSync(fd, buf, 0, size, 0);
      try {
        return parseGgufHeader(buf.subarray(0, n), path);
      } catch (err) {
        if (n < size || !(err as Error).message.includes("truncated")) throw err;
        size *= 4;
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** The ggml type name of a tensor id we write, or undefined for other types. */
export function ggmlTypeName(typeId: number): GgmlTypeName | undefined {
  return (Object.keys(GgmlType) as GgmlTypeName[]).find((k) => GgmlType[k] === typeId);
}
