/**
 * Answer files for `selfsteer judge` and external evaluation: JSONL (or a JSON array, as AlpacaEval
 * writes) of {id?, instruction, output}, with the usual aliases: instruction | prompt | question |
 * problem, and output | answer | response | completion (gold files: answer | solution | target).
 * Bad lines name the file, the line (the element for arrays) and the field.
 */
import { readFileSync } from "node:fs";
import { UserError } from "../util/errors.js";

/** One entry of an answer, reference or gold file. */
export interface AnswerEntry {
  /** The entry's id, or its instruction when it has none. */
  id: string;
  instruction: string;
  text: string;
  /** 1-based line (JSONL) or element (JSON array) number, for messages. */
  line: number;
}

/** What kind of text a file carries: model answers, reference answers, or gold final answers. */
export type AnswerFileRole = "answers" | "gold";

const instructionFields = ["instruction", "prompt", "question", "problem"] as const;
const textFields: Record<AnswerFileRole, readonly string[]> = {
  answers: ["output", "answer", "response", "completion"],
  gold: ["answer", "solution", "target", "output"],
};

/** Reads an answer, reference or gold file (JSONL or a JSON array). */
export function readAnswerFile(path: string, role: AnswerFileRole = "answers"): AnswerEntry[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new UserError(`${path}: cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  const raw: Array<{ line: number; value: unknown }> = [];
  if (text.trimStart().startsWith("[")) {
    let array: unknown;
    try {
      array = JSON.parse(text);
    } catch (err) {
      throw new UserError(`${path}: invalid JSON (${(err as Error).message})`);
    }
    if (!Array.isArray(array)) throw new UserError(`${path}: expected a JSON array or JSONL`);
    array.forEach((value, i) => {
      raw.push({ line: i + 1, value });
    });
  } else {
    text.split("\n").forEach((l, i) => {
      if (l.trim() === "") return;
      try {
        raw.push({ line: i + 1, value: JSON.parse(l) });
      } catch (err) {
        throw new UserError(`${path}:${i + 1}: invalid JSON (${(err as Error).message})`);
      }
    });
  }
  const seen = new Map<string, number>();
  return raw.map(({ line, value }) => {
    if (typeof value !== "object" || value === null || Array.isArray(value))
      throw new UserError(`${path}:${line}: expected a JSON object`);
    const v = value as Record<string, unknown>;
    const pick = (fields: readonly string[], what: string): string => {
      for (const f of fields) {
        const x = v[f];
        if (typeof x === "string") return x;
        if (typeof x === "number" && what === "text") return String(x);
      }
      throw new UserError(`${path}:${line}: field ${fields[0]}: missing (give one of ${fields.join(", ")})`);
    };
    const instruction = pick(instructionFields, "instruction");
    if (instruction.trim() === "")
      throw new UserError(`${path}:${line}: field instruction: must not be empty`);
    const answer = pick(textFields[role], "text");
    const idValue = v.id;
    if (idValue !== undefined && typeof idValue !== "string" && typeof idValue !== "number")
      throw new UserError(`${path}:${line}: field id: expected a string or a number`);
    const id = idValue === undefined ? instruction : String(idValue);
    const earlier = seen.get(id);
    if (earlier !== undefined)
      throw new UserError(
        `${path}:${line}: field id: '${id.slice(0, 60)}' already appears on line ${earlier}`,
      );
    seen.set(id, line);
    return { id, instruction, text: answer, line };
  });
}

/**
 * The entry of `others` for each of `answers`: same id, else same instruction. An answer without a
 * partner is an error naming both files, unless `optional` (then undefined).
 */
export function matchEntries(
  answers: readonly AnswerEntry[],
  answersPath: string,
  others: readonly AnswerEntry[],
  othersPath: string,
  optional = false,
): Array<AnswerEntry | undefined> {
  const byId = new Map(others.map((o) => [o.id, o]));
  const byInstruction = new Map(others.map((o) => [o.instruction, o]));
  return answers.map((a) => {
    const found = byId.get(a.id) ?? byInstruction.get(a.instruction);
    if (found === undefined && !optional)
      throw new UserError(
        `${answersPath}:${a.line}: field id: no entry with this id or instruction in ${othersPath}`,
      );
    return found;
  });
}
