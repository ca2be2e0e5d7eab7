import { appendFileSync, closeSync, existsSync, openSync, readFileSync, writeSync } from "node:fs";
import type { z } from "zod";
import { FieldError, formatPath, UserError } from "./errors.js";

/** One parsed JSONL line with its 1-based line number. */
export interface JsonlRow<T> {
  line: number;
  value: T;
}

/** Options for readJsonl. */
export interface ReadJsonlOptions {
  /** Instead of stopping at the first bad line, append bad lines (with the reason) to this JSONL file. */
  badLinesTo?: string;
}

/** Result of readJsonl: the good rows and how many bad lines were skipped. */
export interface JsonlReadResult<T> {
  rows: JsonlRow<T>[];
  skipped: number;
}

/** Parses one line's value, throwing a FieldError for a bad field (see readJsonl). */
export type LineParser<T> = (value: unknown, line: number) => T;

/** Validates `value` with `schema`; a mismatch is a FieldError naming the first issue's field. */
export function parseFields<T>(schema: z.ZodType<T>, value: unknown): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new FieldError(formatPath(issue.path), issue.message);
}

/**
 * Reads a JSONL file and validates each non-blank line with `parse` (a zod schema, or a function that
 * throws FieldError). A bad line is an error that names the file, the line and the field, unless
 * `badLinesTo` is given, in which case it is set aside.
 */
export function readJsonl<T>(
  path: string,
  parse: z.ZodType<T> | LineParser<T>,
  options: ReadJsonlOptions = {},
): JsonlReadResult<T> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new UserError(`${path}: cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  const parseLine: LineParser<T> = typeof parse === "function" ? parse : (value) => parseFields(parse, value);
  const rows: JsonlRow<T>[] = [];
  let skipped = 0;
  // Files saved by some editors start with a byte-order mark, which JSON.parse rejects.
  const lines = text.replace(/^\uFEFF/, "").split("\n");
  // A file cut off mid-write ends without a newline; its last fragment is reported like any bad line.
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].trim();
    if (raw === "") continue;
    const lineNo = i + 1;
    let problem: string | null = null;
    let value: T | undefined;
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch (err) {
      problem = `invalid JSON (${(err as Error).message})`;
    }
    if (problem === null) {
      try {
        value = parseLine(json, lineNo);
      } catch (err) {
        if (!(err instanceof FieldError)) throw err;
        problem = `field ${err.field}: ${err.message}`;
      }
    }
    if (problem === null) {
      rows.push({ line: lineNo, value: value as T });
      continue;
    }
    if (options.badLinesTo === undefined) throw new UserError(`${path}:${lineNo}: ${problem}`);
    skipped++;
    appendFileSync(
      options.badLinesTo,
      `${JSON.stringify({ file: path, line: lineNo, error: problem, text: raw })}\n`,
    );
  }
  return { rows, skipped };
}

/**
 * An append-only JSONL writer keyed by a stable id. Opening an existing file reads the ids already
 * written (ignoring a torn last line left by a crash), so a rerun skips them: no duplicates, nothing lost.
 * Each append is one write() of a whole line, so an interrupted job leaves at most one torn line.
 */
export class ResumableJsonlWriter<T> {
  private readonly done = new Set<string>();
  private fd: number | null = null;

  constructor(
    readonly path: string,
    private readonly idOf: (value: T) => string,
  ) {
    if (existsSync(path)) {
      const text = readFileSync(path, "utf8");
      const lines = text.split("\n");
      let validBytes = 0;
      for (let i = 0; i < lines.length; i++) {
        const raw = lines[i];
        const isLast = i === lines.length - 1;
        if (raw.trim() === "") {
          if (!isLast) validBytes += Buffer.byteLength(raw) + 1;
          continue;
        }
        try {
          this.done.add(this.idOf(JSON.parse(raw) as T));
          validBytes += Buffer.byteLength(raw) + (isLast ? 0 : 1);
        } catch {
          if (!isLast) throw new UserError(`${path}:${i + 1}: cannot resume, line is not valid JSON`);
          // Torn last line from an interrupted run: drop it and redo that item.
        }
      }
      if (validBytes < Buffer.byteLength(text)) {
        const keep = Buffer.from(text).subarray(0, validBytes);
        const fixed =
          keep.length > 0 && keep[keep.length - 1] !== 10 ? Buffer.concat([keep, Buffer.from("\n")]) : keep;
        // Rewrite in place: the torn tail is the only thing lost, and it was never a complete record.
        const fd = openSync(path, "w");
        writeSync(fd, fixed);
        closeSync(fd);
      } else if (text.length > 0 && !text.endsWith("\n")) {
        appendFileSync(path, "\n");
      }
    }
  }

  /** Whether a record with this id is already in the file. */
  has(id: string): boolean {
    return this.done.has(id);
  }

  /** Number of records in the file. */
  get size(): number {
    return this.done.size;
  }

  /** Appends one record unless its id is already present; returns whether it was written. */
  append(value: T): boolean {
    const id = this.idOf(value);
    if (this.done.has(id)) return false;
    if (this.fd === null) this.fd = openSync(this.path, "a");
    writeSync(this.fd, `${JSON.stringify(value)}\n`);
    this.done.add(id);
    return true;
  }

  /** Closes the file. */
  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}
