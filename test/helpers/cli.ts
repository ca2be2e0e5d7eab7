import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The repo's CLI entry point (tests run from dist/test/, the bin lives at the repo root). */
export const SELFSTEER_BIN = fileURLToPath(new URL("../../../bin/selfsteer", import.meta.url));

/** Result of one CLI run. */
export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `selfsteer ...args` to completion. */
export function selfsteer(...args: string[]): CliResult {
  const r = spawnSync(process.execPath, [SELFSTEER_BIN, ...args], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs the CLI, asserts exit 0 and returns stdout. */
export function ok(...args: string[]): string {
  const r = selfsteer(...args);
  assert.equal(r.status, 0, `selfsteer ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

/** Runs the CLI, asserts exit 2 (bad input) and that stderr mentions every fragment. */
export function fails(fragments: string[], ...args: string[]): void {
  const r = selfsteer(...args);
  assert.equal(r.status, 2, `expected exit 2 from selfsteer ${args.join(" ")}, got ${r.status}: ${r.stderr}`);
  for (const f of fragments) assert.ok(r.stderr.includes(f), `'${r.stderr.trim()}' should mention '${f}'`);
}
