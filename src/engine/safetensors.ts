/**
 * The safetensors file format (Hugging Face): an 8-byte little-endian header length N, N bytes of
 * UTF-8 JSON mapping each tensor name to {dtype, shape, data_offsets}, then the raw little-endian
 * tensor bytes, offsets counted from the first byte after the header. An optional "__metadata__"
 * entry maps strings to strings.
 *
 * We write F32 only (our engine computes in fp32) and read F32, BF16 and F16, widening to fp32, so
 * published half-precision checkpoints load. The reader treats the file as hostile: every number in
 * the header is checked before use, and each error names the file and the tensor. Files on disk are
 * read tensor by tensor at their offsets, so a file of any size loads (Node reads at most 2 GiB at once).
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { UserError } from "../util/errors.js";
import { type NamedTensor, numel } from "./params.js";

/** Element types we can read. */
export type SafetensorsDtype = "F32" | "BF16" | "F16";

/** One tensor read from a safetensors file, widened to fp32. */
export interface SafetensorsEntry {
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array;
}

/** A parsed safetensors file: tensors in header order, and the string metadata. */
export interface SafetensorsFile {
  tensors: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

const BYTES_PER_ELEMENT: Record<SafetensorsDtype, number> = { F32: 4, BF16: 2, F16: 2 };

// The other dtypes the format defines: named so the error can say "unsupported" rather than "unknown".
const OTHER_SPEC_DTYPES = new Set([
  "BOOL",
  "U8",
  "I8",
  "U16",
  "I16",
  "U32",
  "I32",
  "U64",
  "I64",
  "F64",
  "F8_E4M3",
  "F8_E5M2",
  "F8_E8M0",
  "F4",
  "F6_E2M3",
  "F6_E3M2",
  "C64",
]);

// The reference implementation refuses headers above 100 MB; a larger one is corruption, not a model.
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Serialises tensors as an F32 safetensors file. The header is padded with spaces to a multiple of 8
 * bytes so the data starts 8-byte aligned (as the reference writer does), which lets readers map it.
 */
export function writeSafetensors(
  tensors: readonly NamedTensor[],
  metadata?: Record<string, string>,
): Uint8Array {
  const parts = safetensorsParts(tensors, metadata);
  let length = 0;
  for (const part of parts) length += part.byteLength;
  const out = new Uint8Array(length);
  let pos = 0;
  for (const part of parts) {
    out.set(new Uint8Array(part.buffer, part.byteOffset, part.byteLength), pos);
    pos += part.byteLength;
  }
  return out;
}

/**
 * writeSafetensors' file as consecutive pieces: the length and header, then each tensor's bytes, which
 * on a little-endian host are views of the tensors themselves (no copy: writing a 0.5B model's 3.95 GB
 * optimizer state this way needs no second 3.95 GB).
 */
export function safetensorsParts(
  tensors: readonly NamedTensor[],
  metadata?: Record<string, string>,
): ArrayBufferView[] {
  const header: Record<string, unknown> = { __metadata__: { format: "pt", ...metadata } };
  let offset = 0;
  for (const t of tensors) {
    if (t.name === "__metadata__") throw new Error("writeSafetensors: '__metadata__' is not a tensor name");
    if (Object.hasOwn(header, t.name)) throw new Error(`writeSafetensors: duplicate tensor '${t.name}'`);
    const n = numel(t.shape);
    if (t.data.length !== n)
      throw new Error(
        `writeSafetensors: tensor '${t.name}' has shape [${t.shape.join(", ")}] (${n} elements) but ${t.data.length} values`,
      );
    header[t.name] = { dtype: "F32", shape: t.shape, data_offsets: [offset, offset + 4 * n] };
    offset += 4 * n;
  }
  let json = JSON.stringify(header);
  const encoder = new TextEncoder();
  let headerBytes = encoder.encode(json);
  const padded = Math.ceil(headerBytes.length / 8) * 8;
  if (padded !== headerBytes.length) {
    json += " ".repeat(padded - headerBytes.length);
    headerBytes = encoder.encode(json);
  }
  const head = new Uint8Array(8 + headerBytes.length);
  const view = new DataView(head.buffer);
  view.setUint32(0, headerBytes.length, true);
  view.setUint32(4, 0, true);
  head.set(headerBytes, 8);
  const parts: ArrayBufferView[] = [head];
  for (const t of tensors) {
    if (LITTLE_ENDIAN_HOST) parts.push(t.data);
    else {
      const bytes = new DataView(new ArrayBuffer(t.data.byteLength));
      for (let i = 0; i < t.data.length; i++) bytes.setFloat32(4 * i, t.data[i], true);
      parts.push(bytes);
    }
  }
  return parts;
}

/** Reads the tensors of a safetensors file (F32, BF16 or F16, returned as fp32); `source` names it in errors. */
export function readSafetensors(bytes: Uint8Array, source: string): Map<string, SafetensorsEntry> {
  return parseSafetensors(bytes, source).tensors;
}

interface HeaderEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  start: number;
  end: number;
}

// A validated header: where the data starts, each tensor's byte range in it (header order), the metadata.
interface ParsedHeader {
  dataStart: number;
  entries: HeaderEntry[];
  metadata: Record<string, string>;
}

/** Parses a safetensors file into its tensors (widened to fp32) and its metadata. */
export function parseSafetensors(bytes: Uint8Array, source: string): SafetensorsFile {
  const header = parseHeader(bytes.length, (at, length) => bytes.subarray(at, at + length), source);
  const tensors = new Map<string, SafetensorsEntry>();
  for (const e of header.entries)
    tensors.set(e.name, {
      dtype: e.dtype,
      shape: e.shape,
      data: decode(bytes, header.dataStart + e.start, numel(e.shape), e.dtype),
    });
  return { tensors, metadata: header.metadata };
}

/**
 * Reads a safetensors file from disk tensor by tensor (any size, also past the 2 GiB Node reads in one
 * piece): the same checks, errors and result as parseSafetensors, holding at most one tensor's raw
 * bytes beside the decoded tensors (none for F32, read straight into its Float32Array).
 */
export function readSafetensorsFile(path: string): SafetensorsFile {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    throw cannotRead(path, err);
  }
  try {
    const size = fstatSync(fd).size;
    const header = parseHeader(size, (at, length) => readAt(fd, new Uint8Array(length), at, path), path);
    const tensors = new Map<string, SafetensorsEntry>();
    for (const e of header.entries)
      tensors.set(e.name, {
        dtype: e.dtype,
        shape: e.shape,
        data: readTensor(fd, header.dataStart + e.start, numel(e.shape), e.dtype, path),
      });
    return { tensors, metadata: header.metadata };
  } finally {
    closeSync(fd);
  }
}

function cannotRead(path: string, err: unknown): UserError {
  return new UserError(`${path}: cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
}

// One read call moves at most this much (Node refuses a read of 2 GiB or more).
const READ_CHUNK_BYTES = 1 << 30;

// Fills `into` from file position `at`; a file that ends early changed after its size was taken.
function readAt(fd: number, into: Uint8Array, at: number, path: string): Uint8Array {
  let done = 0;
  while (done < into.length) {
    let n: number;
    try {
      n = readSync(fd, into, done, Math.min(READ_CHUNK_BYTES, into.length - done), at + done);
    } catch (err) {
      throw cannotRead(path, err);
    }
    if (n === 0)
      throw new UserError(
        `${path}: file ended at byte ${at + done} while reading it (changed while being read?)`,
      );
    done += n;
  }
  return into;
}

function readTensor(fd: number, at: number, n: number, dtype: SafetensorsDtype, path: string): Float32Array {
  if (dtype !== "F32") return decode(readAt(fd, new Uint8Array(2 * n), at, path), 0, n, dtype);
  const out = new Float32Array(n);
  readAt(fd, new Uint8Array(out.buffer), at, path);
  if (!LITTLE_ENDIAN_HOST) {
    // In place: each element's four bytes are read before they are overwritten.
    const view = new DataView(out.buffer);
    for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
  }
  return out;
}

/**
 * Validates the header of a file of `fileLength` bytes, reading through `read(at, length)`: every
 * number is checked against the file's size before use, and each error names `source` and the tensor.
 */
function parseHeader(
  fileLength: number,
  read: (at: number, length: number) => Uint8Array,
  source: string,
): ParsedHeader {
  const fail = (what: string): never => {
    throw new UserError(`${source}: not a valid safetensors file: ${what}`);
  };
  if (fileLength < 8) fail(`${fileLength} bytes is too short for the 8-byte header length`);
  const prefix = read(0, 8);
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const lenLo = view.getUint32(0, true);
  const lenHi = view.getUint32(4, true);
  const headerLen = lenHi * 2 ** 32 + lenLo;
  if (headerLen > MAX_HEADER_BYTES)
    fail(`header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (headerLen > fileLength - 8)
    fail(`header length ${headerLen} runs past the end of the file (${fileLength} bytes)`);
  // Read outside the try: a read error must keep its own message, not become "not valid UTF-8".
  const headerBytes = read(8, headerLen);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    return fail("header is not valid UTF-8");
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return fail(`header is not valid JSON (${(err as Error).message})`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw))
    return fail("header is not a JSON object");

  const dataStart = 8 + headerLen;
  const dataLen = fileLength - dataStart;
  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (value === null || typeof value !== "object" || Array.isArray(value))
        fail("__metadata__ must be an object of strings");
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== "string") fail(`__metadata__.${k} must be a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    entries.push(parseEntry(name, value, dataLen, (what) => fail(`tensor '${name}': ${what}`)));
  }

  // Tensors may not share bytes: sorted by start, each must begin at or after the previous end.
  const byStart = entries.filter((e) => e.end > e.start).sort((a, b) => a.start - b.start);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1];
    const cur = byStart[i];
    if (cur.start < prev.end)
      fail(
        `tensor '${cur.name}': data_offsets [${cur.start}, ${cur.end}] overlap tensor '${prev.name}' [${prev.start}, ${prev.end}]`,
      );
  }
  return { dataStart, entries, metadata };
}

function parseEntry(
  name: string,
  value: unknown,
  dataLen: number,
  fail: (what: string) => never,
): HeaderEntry {
  if (value === null || typeof value !== "object" || Array.isArray(value)) fail("entry is not an object");
  const v = value as Record<string, unknown>;
  const dtype = v.dtype;
  if (typeof dtype !== "string") fail("missing dtype");
  if (!Object.hasOwn(BYTES_PER_ELEMENT, dtype as string)) {
    if (OTHER_SPEC_DTYPES.has(dtype as string))
      fail(`unsupported dtype '${dtype}' (we read F32, BF16 and F16)`);
    fail(`unknown dtype '${dtype}'`);
  }
  const shape = v.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
    fail(`shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
  const offsets = v.data_offsets;
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offsets[0] > offsets[1]
  )
    fail(`data_offsets must be [start, end] with 0 <= start <= end, got ${JSON.stringify(offsets)}`);
  const [start, end] = offsets as [number, number];
  if (end > dataLen) fail(`data_offsets [${start}, ${end}] run past the end of the data (${dataLen} bytes)`);
  const bpe = BYTES_PER_ELEMENT[dtype as SafetensorsDtype];
  const n = numel(shape as number[]);
  if (end - start !== n * bpe)
    fail(
      `shape [${(shape as number[]).join(", ")}] of ${dtype} needs ${n * bpe} bytes but data_offsets [${start}, ${end}] hold ${end - start}`,
    );
  return { name, dtype: dtype as SafetensorsDtype, shape: (shape as number[]).slice(), start, end };
}

function decode(bytes: Uint8Array, at: number, n: number, dtype: SafetensorsDtype): Float32Array {
  const out = new Float32Array(n);
  const abs = bytes.byteOffset + at;
  if (dtype === "F32") {
    // A copy (not a view): callers own and mutate their tensors, and the offset may be unaligned.
    if (LITTLE_ENDIAN_HOST) new Uint8Array(out.buffer).set(new Uint8Array(bytes.buffer, abs, 4 * n));
    else {
      const view = new DataView(bytes.buffer, abs, 4 * n);
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
    }
    return out;
  }
  const view = new DataView(bytes.buffer, abs, 2 * n);
  if (dtype === "BF16") {
    // bfloat16 is the top half of an fp32: shifting the bits up is exact.
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = view.getUint16(2 * i, true) << 16;
    return out;
  }
  const table = f16Table();
  for (let i = 0; i < n; i++) out[i] = table[view.getUint16(2 * i, true)];
  return out;
}

let f16Lookup: Float32Array | null = null;

// All 65536 half-precision values, computed once: a lookup beats bit-twiddling per element.
function f16Table(): Float32Array {
  if (f16Lookup) return f16Lookup;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) table[h] = halfToFloat(h);
  f16Lookup = table;
  return table;
}

/** Converts IEEE 754 binary16 bits to a number (exact: every half is representable in fp32). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : Number.NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}
