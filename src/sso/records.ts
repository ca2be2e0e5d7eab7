/**
 * SSO records and the prompt files they are built from. A record keeps the field names of the
 * authors' online-data format (instruction, principles, p_system, n_system, system, chosen, rejected,
 * raw, history) so exports stay a rename-free copy, plus a stable `id` that makes appends resumable.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { UserError } from "../util/errors.js";
import {
  type JsonlReadResult,
  type ReadJsonlOptions,
  ResumableJsonlWriter,
  readJsonl,
} from "../util/jsonl.js";

/**
 * One feature's principles as used for a record: `good` went into p_system, `bad` into n_system.
 * `source` says whether they came from the catalog or were written for this query by a model.
 */
export const PrincipleEntrySchema = z.object({
  feature: z.string().min(1),
  good: z.string().min(1),
  bad: z.string().min(1),
  source: z.enum(["catalog", "generated"]),
});

/** One feature's principles in a record. */
export type PrincipleEntry = z.infer<typeof PrincipleEntrySchema>;

/** How the features of a record were chosen. */
export const FeatureSourceSchema = z.enum(["policy", "topped-up", "random"]);

/** Bookkeeping about how a record was made; not part of the authors' format. */
export const RecordMetaSchema = z.object({
  /** Features in prompt order (the policy's picks, then the random feature when it was added). */
  features: z.array(z.string()),
  /** "policy": all picked by the policy; "topped-up": some filled in at random; "random": policy answer unusable. */
  featureSource: FeatureSourceSchema,
  /** Whether the random feature (Concision) was added. */
  randomFeatureAdded: z.boolean(),
  /** Features whose generated principles were unusable, so the catalog's were used. */
  principleFallbacks: z.array(z.string()),
  /** The run seed the record was built with. */
  seed: z.number().int(),
  /** Which of chosen / rejected / raw stopped at the token limit. */
  truncated: z.array(z.enum(["chosen", "rejected", "raw"])),
});

/** Bookkeeping about how a record was made. */
export type RecordMeta = z.infer<typeof RecordMetaSchema>;

/** An SSO record (one JSONL line). */
export const SsoRecordSchema = z.object({
  id: z.string().min(1),
  instruction: z.string().min(1),
  principles: z.array(PrincipleEntrySchema),
  p_system: z.string().min(1),
  n_system: z.string().min(1),
  system: z.string(),
  chosen: z.string(),
  rejected: z.string(),
  raw: z.string(),
  /** Earlier turns as [user, assistant] pairs (LlamaFactory's convention); empty for single-turn data. */
  history: z.array(z.tuple([z.string(), z.string()])),
  meta: RecordMetaSchema.optional(),
});

/** An SSO record. */
export type SsoRecord = z.infer<typeof SsoRecordSchema>;

/** A query to build a record for. */
export interface QueryPrompt {
  id: string;
  prompt: string;
}

/** A stable id for a query that came without one: a hash of its text, so reruns agree. */
export function promptIdFor(instruction: string): string {
  return `q-${createHash("sha256").update(instruction, "utf8").digest("hex").slice(0, 16)}`;
}

/** One line of a prompts file: {"id"?: string, "prompt": string}, with "instruction" accepted for "prompt". */
export const PromptLineSchema = z
  .object({
    id: z
      .union([z.string().trim().min(1, { message: "must be a non-empty string" }), z.number().int()])
      .optional(),
    prompt: z.string().optional(),
    instruction: z.string().optional(),
  })
  .superRefine((line, ctx) => {
    if (line.prompt === undefined && line.instruction === undefined) {
      ctx.addIssue({ code: "custom", path: ["prompt"], message: "missing (give 'prompt' or 'instruction')" });
      return;
    }
    if (line.prompt !== undefined && line.instruction !== undefined && line.prompt !== line.instruction)
      ctx.addIssue({
        code: "custom",
        path: ["instruction"],
        message: "give either 'prompt' or 'instruction', not two different texts",
      });
    const text = line.prompt ?? line.instruction ?? "";
    if (text.trim() === "")
      ctx.addIssue({
        code: "custom",
        path: [line.prompt !== undefined ? "prompt" : "instruction"],
        message: "must not be empty",
      });
  });

/** What readPrompts found. */
export interface PromptFile {
  prompts: QueryPrompt[];
  /** Lines without an id whose text repeats an earlier line (same derived id); they are skipped. */
  duplicates: number;
}

/**
 * Reads a prompts JSONL file. Every bad line is an error naming file, line and field; so is an
 * explicit id used twice. A repeated text without an id is the same query and is counted, not built twice.
 */
export function readPrompts(path: string): PromptFile {
  const { rows } = readJsonl(path, PromptLineSchema);
  const prompts: QueryPrompt[] = [];
  const lineOf = new Map<string, number>();
  let duplicates = 0;
  for (const { line, value } of rows) {
    const prompt = value.prompt ?? value.instruction ?? "";
    const explicit = value.id !== undefined;
    const id = explicit ? String(value.id) : promptIdFor(prompt);
    const earlier = lineOf.get(id);
    if (earlier !== undefined) {
      if (explicit)
        throw new UserError(`${path}:${line}: field id: '${id}' is already used on line ${earlier}`);
      duplicates++;
      continue;
    }
    lineOf.set(id, line);
    prompts.push({ id, prompt });
  }
  return { prompts, duplicates };
}

/** Reads SSO records; a bad line names file, line and field (or goes to `badLinesTo`). */
export function readRecords(path: string, options: ReadJsonlOptions = {}): JsonlReadResult<SsoRecord> {
  return readJsonl(path, SsoRecordSchema, options);
}

/** An append-only record file keyed by record id: reopening it resumes where it stopped. */
export function openRecordWriter(path: string): ResumableJsonlWriter<SsoRecord> {
  return new ResumableJsonlWriter<SsoRecord>(path, (r) => r.id);
}

/** A query the filters dropped, logged so that a resumed run does not sample it again. */
export interface DropEntry {
  id: string;
  reason: string;
}

/** The side file of dropped queries that goes with a record file. */
export function dropLogPath(recordsPath: string): string {
  return `${recordsPath}.drops.jsonl`;
}

/** An append-only log of dropped query ids (see DropEntry). */
export function openDropLog(path: string): ResumableJsonlWriter<DropEntry> {
  return new ResumableJsonlWriter<DropEntry>(path, (d) => d.id);
}
