/**
 * A mistake in what the user gave us (a flag, a file, a line, a field). The CLI prints the message
 * without a stack trace and exits with `exitCode` (2 by convention for bad input).
 */
export class UserError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.name = "UserError";
    this.exitCode = exitCode;
  }
}

/** Formats a zod-style issue path (["records", 3, "policy", "chosen"]) as records[3].policy.chosen. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? String(part) : `.${String(part)}`;
  }
  return out === "" ? "(root)" : out;
}

/**
 * A problem with one field of a parsed value (`field` as formatPath writes it). Whoever read the value
 * knows the file and line and turns it into a UserError `file:line: field F: message`.
 */
export class FieldError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
    this.name = "FieldError";
  }
}
