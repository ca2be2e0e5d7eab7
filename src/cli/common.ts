import { SingleBar } from "cli-progress";
import { type CreatedKernels, createKernels, KERNEL_BACKENDS } from "../engine/kernels/index.js";
import { UserError } from "../util/errors.js";

/** Parses an integer flag value, naming the flag in the error. */
export function parseIntFlag(flag: string, value: string, min = Number.MIN_SAFE_INTEGER): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min)
    throw new UserError(`${flag}: expected an integer >= ${min}, got '${value}'`);
  return n;
}

/** Parses a number flag value, naming the flag in the error. */
export function parseNumberFlag(flag: string, value: string, min = -Infinity, max = Infinity): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || n > max)
    throw new UserError(`${flag}: expected a number in [${min}, ${max}], got '${value}'`);
  return n;
}

/** Prints one JSON value on stdout. */
export function printJson(value: unknown, pretty = false): void {
  process.stdout.write(`${JSON.stringify(value, null, pretty ? 2 : undefined)}\n`);
}

/** A progress reporter that modules below cli/ accept as a callback. */
export interface ProgressReporter {
  start(total: number, label: string): void;
  update(done: number, info?: Record<string, string | number>): void;
  stop(): void;
}

/** A terminal progress bar (rate and ETA) on stderr; silent when stderr is not a TTY unless forced. */
export function progressBar(options: { force?: boolean } = {}): ProgressReporter {
  const enabled = options.force === true || process.stderr.isTTY === true;
  let bar: SingleBar | null = null;
  let lastLogged = 0;
  let total = 0;
  let label = "";
  const startedAt = Date.now();
  return {
    start(t, l) {
      total = t;
      label = l;
      if (enabled) {
        bar = new SingleBar({
          format: `${l} [{bar}] {value}/{total} | {percentage}% | {rate}/s | ETA {eta_formatted} {info}`,
          stream: process.stderr,
          hideCursor: true,
          etaBuffer: 50,
        });
        bar.start(t, 0, { rate: "0.0", info: "" });
      }
    },
    update(done, info) {
      const secs = (Date.now() - startedAt) / 1000;
      const rate = secs > 0 ? (done / secs).toFixed(1) : "0.0";
      const infoText = info
        ? Object.entries(info)
            .map(([k, v]) => `${k}=${v}`)
            .join(" ")
        : "";
      if (bar) bar.update(done, { rate, info: infoText });
      else if (Date.now() - lastLogged > 5000 || done === total) {
        // Without a TTY (CI, pipes) a line every few seconds keeps logs readable.
        lastLogged = Date.now();
        process.stderr.write(`${label}: ${done}/${total} (${rate}/s) ${infoText}\n`);
      }
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}

/** The kernel backends a `--backend` flag may name. */
export const BACKENDS = KERNEL_BACKENDS;
/** One of BACKENDS. */
export type Backend = (typeof BACKENDS)[number];
/** Help text of every `--backend` option. */
export const BACKEND_HELP = "kernels: auto (the platform BLAS if found, else WASM SIMD), blas, wasm or plain";
/** Help text of every `--threads` option. */
export const THREADS_HELP = "threads of the kernels, BLAS and worker pool together (default: every core)";

/** Validates a `--backend` flag value, naming the flag in the error. */
export function parseBackend(value: string): Backend {
  if (!(BACKENDS as readonly string[]).includes(value))
    throw new UserError(`--backend: expected one of ${BACKENDS.join(", ")}, got '${value}'`);
  return value as Backend;
}

/** Creates the kernels a `--backend` (and `--threads`) flag names; a fallback to the plain path is said on stderr. */
export function openKernels(backend: string, threads?: number): CreatedKernels {
  const name = parseBackend(backend);
  let kernels: CreatedKernels;
  try {
    kernels = createKernels(threads === undefined ? { backend: name } : { backend: name, threads });
  } catch (err) {
    throw new UserError(`--backend ${name}: ${(err as Error).message}`);
  }
  if (kernels.warning) process.stderr.write(`selfsteer: ${kernels.warning}\n`);
  return kernels;
}
