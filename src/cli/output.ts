/**
 * One check of every output path a command will write, run before any work starts: a file where a
 * directory is expected (or the reverse), a parent that is a file, or a place we may not write is one
 * line naming the option (exit 2), instead of a stack trace after hours of work.
 */
import { accessSync, constants, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { UserError } from "../util/errors.js";

/** What a command writes at an output path. */
export type OutputKind = "file" | "dir";

/** One output path of a command: the flag that names it, the path (undefined: not given), file or directory. */
export interface OutputPath {
  flag: string;
  path: string | undefined;
  kind: OutputKind;
}

function kindOf(path: string): "file" | "dir" | "other" | null {
  try {
    const stat = statSync(path);
    return stat.isDirectory() ? "dir" : stat.isFile() ? "file" : "other";
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return null;
    // ENOTDIR: a component of the path is a file; reported by the ancestor walk below.
    if (code === "ENOTDIR") return null;
    throw err;
  }
}

function writable(path: string): string | null {
  try {
    accessSync(path, constants.W_OK | constants.X_OK);
    return null;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

/**
 * Fails with a UserError naming `flag` unless `path` can be written as `kind`: an existing path must
 * be of that kind (a file may also be a device such as /dev/null) and writable, and otherwise its
 * nearest existing ancestor must be a writable directory (the missing ones are created on write).
 */
export function checkOutputPath(flag: string, path: string, kind: OutputKind): void {
  if (path.trim() === "") throw new UserError(`${flag}: must not be empty`);
  const full = resolve(path);
  const found = kindOf(full);
  if (found !== null) {
    if (kind === "dir" && found !== "dir")
      throw new UserError(`${flag} ${path}: is a file, but a directory is expected here`);
    if (kind === "file" && found === "dir")
      throw new UserError(`${flag} ${path}: is a directory, but a file is expected here`);
    // Files are replaced atomically (a temp file beside them, then rename): the directory must be writable.
    const target = kind === "dir" ? full : dirname(full);
    const denied = writable(target);
    if (denied !== null && found !== "other")
      throw new UserError(`${flag} ${path}: cannot write in ${target} (${denied})`);
    return;
  }
  let ancestor = dirname(full);
  for (;;) {
    const at = kindOf(ancestor);
    if (at === "dir") break;
    if (at !== null) throw new UserError(`${flag} ${path}: ${ancestor} is a file, not a directory`);
    const up = dirname(ancestor);
    if (up === ancestor) break;
    ancestor = up;
  }
  const denied = writable(ancestor);
  if (denied !== null) throw new UserError(`${flag} ${path}: cannot create it under ${ancestor} (${denied})`);
}

/** Checks every output path of a command (see checkOutputPath); entries whose path is undefined are skipped. */
export function checkOutputs(...outputs: readonly OutputPath[]): void {
  for (const o of outputs) if (o.path !== undefined) checkOutputPath(o.flag, o.path, o.kind);
}
