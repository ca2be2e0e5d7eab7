/**
 * Exports of SSO records for other trainers: TRL's preference format, the authors' LlamaFactory
 * online-data format, and RewardBench-style pairs. Each is the main pair (plain query, y+ over y-),
 * except the LlamaFactory format, which carries everything the SSO objective needs.
 */
import { writeFileAtomic } from "../util/fsio.js";
import type { ReadJsonlOptions } from "../util/jsonl.js";
import type { RewardBenchRow, TextPair } from "./pairs.js";
import { readRecords, type SsoRecord } from "./records.js";

/** The export formats. */
export const EXPORT_FORMATS = ["trl", "llamafactory-sso", "rewardbench"] as const;

/** One export format. */
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

/** One element of the authors' LlamaFactory online-data JSON array. */
export interface LlamaFactorySsoExample {
  instruction: string;
  p_system: string;
  n_system: string;
  system: string;
  chosen: string;
  rejected: string;
  raw: string;
  history: [string, string][];
  principles: SsoRecord["principles"];
}

/** The TRL example of a record: the plain query with y+ preferred over y-. */
export function toTrl(record: SsoRecord): TextPair {
  return { prompt: record.instruction, chosen: record.chosen, rejected: record.rejected };
}

/** The LlamaFactory online-data example of a record (the record's own fields, without id and meta). */
export function toLlamaFactorySso(record: SsoRecord): LlamaFactorySsoExample {
  return {
    instruction: record.instruction,
    p_system: record.p_system,
    n_system: record.n_system,
    system: record.system,
    chosen: record.chosen,
    rejected: record.rejected,
    raw: record.raw,
    history: record.history,
    principles: record.principles,
  };
}

/** The RewardBench-style pair of a record. */
export function toRewardBench(record: SsoRecord, subset: string): RewardBenchRow {
  return {
    prompt: record.instruction,
    chosen: record.chosen,
    rejected: record.rejected,
    subset,
    id: record.id,
  };
}

/** Options of an export. */
export interface ExportOptions {
  /** RewardBench subset name (default "sso"). */
  subset?: string;
}

/** The file contents of `records` in `format`. */
export function renderExport(
  records: readonly SsoRecord[],
  format: ExportFormat,
  options: ExportOptions = {},
): string {
  const lines = (values: readonly unknown[]): string => values.map((v) => `${JSON.stringify(v)}\n`).join("");
  switch (format) {
    case "trl":
      return lines(records.map(toTrl));
    case "llamafactory-sso":
      return `${JSON.stringify(records.map(toLlamaFactorySso), null, 2)}\n`;
    case "rewardbench":
      return lines(records.map((r) => toRewardBench(r, options.subset ?? "sso")));
  }
}

/** What exportFile did. */
export interface ExportResult {
  format: ExportFormat;
  records: number;
  /** Bad input lines set aside (only with `badLinesTo`). */
  skipped: number;
  out: string;
}

/**
 * Reads records from `inPath` (a bad line is an error naming file, line and field, unless
 * `badLinesTo` sets it aside) and writes them to `outPath` in `format`, atomically.
 */
export function exportFile(
  inPath: string,
  outPath: string,
  format: ExportFormat,
  options: ExportOptions & ReadJsonlOptions = {},
): ExportResult {
  const { rows, skipped } = readRecords(inPath, { badLinesTo: options.badLinesTo });
  const records = rows.map((r) => r.value);
  writeFileAtomic(outPath, renderExport(records, format, options));
  return { format, records: records.length, skipped, out: outPath };
}
