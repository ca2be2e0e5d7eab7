/**
 * Crash injection for the reliability tests: named points in the file writers where a test can make
 * the process die as a kill would, to prove that every interrupted save is recovered from.
 *
 * `SELFSTEER_CRASH_AT=<point>:<n>` kills the process with SIGKILL the n-th time (1-based) it reaches
 * `<point>` (`any` matches every point), so nothing after it runs: no `finally`, no exit handlers.
 * In-process tests install a hook with setCrashHook instead (it sees every point and may throw).
 */

/** A function called at every crash point with the point's name. */
export type CrashHook = (point: string) => void;

let hook: CrashHook | null = null;
const seen = new Map<string, number>();

/** Installs (or, with null, removes) an in-process hook called at every crash point. */
export function setCrashHook(next: CrashHook | null): void {
  hook = next;
}

/** Marks a point between two file writes; dies here when SELFSTEER_CRASH_AT asks for it. */
export function crashPoint(point: string): void {
  hook?.(point);
  const spec = process.env.SELFSTEER_CRASH_AT;
  if (spec === undefined || spec === "") return;
  const at = spec.lastIndexOf(":");
  const name = at < 0 ? spec : spec.slice(0, at);
  const n = at < 0 ? 1 : Number(spec.slice(at + 1));
  if (name !== "any" && name !== point) return;
  const count = (seen.get(name) ?? 0) + 1;
  seen.set(name, count);
  if (count !== n) return;
  process.kill(process.pid, "SIGKILL");
  // SIGKILL to oneself is delivered at once; never run on past the point while it lands.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
}
