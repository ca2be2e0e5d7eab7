import { type Hash, randomBytes } from "node:crypto";
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import type { z } from "zod";
import { crashPoint } from "./crash.js";
import { formatPath, UserError } from "./errors.js";

/** Bytes per write call: one call cannot write 2 GiB or more (a 0.5B model's optimizer state is 3.95 GB). */
const WRITE_CHUNK_BYTES = 1 << 30;

/**
 * Writes a file atomically: a temp file beside it, then rename, so readers never see half a file.
 * `data` may be a list of pieces written one after another (see safetensorsParts).
 */
export function writeFileAtomic(
  path: string,
  data: string | ArrayBufferView | readonly ArrayBufferView[],
): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    if (typeof data === "string") writeFileSync(tmp, data);
    else writeChunked(tmp, data);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  // A kill here leaves the temp file behind (run directories remove such leftovers when reopened).
  crashPoint("file-tmp");
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/** Writes `data` (one piece or several, in order) to a new file at `path`, not atomically, in calls of at most WRITE_CHUNK_BYTES. */
export function writeChunked(path: string, data: ArrayBufferView | readonly ArrayBufferView[]): void {
  const parts = Array.isArray(data) ? data : [data as ArrayBufferView];
  const fd = openSync(path, "w");
  try {
    for (const part of parts) {
      for (let done = 0; done < part.byteLength; ) {
        const length = Math.min(WRITE_CHUNK_BYTES, part.byteLength - done);
        done += writeSync(fd, new Uint8Array(part.buffer, part.byteOffset + done, length));
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** Writes pretty JSON atomically, with a trailing newline. */
export function writeJsonAtomic(path: string, value: unknown): void {
  writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Reads and validates a JSON file; errors name the file and the field, one line per problem, the
 * first `maxIssues` of them (default 1).
 */
export function readJsonFile<T>(path: string, schema: z.ZodType<T>, maxIssues = 1): T {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new UserError(`${path}: cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new UserError(`${path}: invalid JSON (${(err as Error).message})`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues;
    const lines = issues.slice(0, maxIssues).map((i) => `${path}: field ${formatPath(i.path)}: ${i.message}`);
    if (issues.length > maxIssues) lines.push(`(${issues.length - maxIssues} more problems)`);
    throw new UserError(lines.join("\n"));
  }
  return parsed.data;
}

// Hashing reads this much at a time, so files past the 2 GiB Node reads in one piece hash too.
const HASH_CHUNK_BYTES = 16 << 20;

/** Feeds a file's bytes into `hash` in chunks (any file size, little memory); returns the hash. */
export function hashFileInto(hash: Hash, path: string): Hash {
  const fd = openSync(path, "r");
  try {
    const chunk = new Uint8Array(HASH_CHUNK_BYTES);
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) return hash;
      hash.update(chunk.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
}
