/**
 * Real processes for the external online loop (src/run/external.ts): command templates with
 * placeholders, commands run to completion, servers started and waited for by health check, and
 * stopped with SIGTERM then SIGKILL. Every child runs in its own process group (so a `sh -c` wrapper
 * and whatever it starts stop together) and leaves a pid file in the run directory while it lives,
 * so a run killed with SIGKILL has its orphans stopped by the next run before anything starts again.
 */
import { type ChildProcess, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeSync,
} from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { UserError } from "../util/errors.js";
import { writeJsonAtomic } from "../util/fsio.js";

/** A stage of the loop failed: the message names the stage, the iteration and what went wrong. */
export class StageError extends UserError {
  constructor(
    readonly stage: string,
    readonly iteration: number,
    detail: string,
  ) {
    super(`stage ${stage} (iteration ${iteration}) failed: ${detail}`, 1);
    this.name = "StageError";
  }
}

/** Quotes a value for `sh -c` unless it is plainly safe (paths, numbers, URLs). */
export function shellQuote(value: string): string {
  if (/^[\w@%+=:,./-]+$/.test(value)) return value;
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * Fills `{name}` placeholders of a command template with shell-quoted values. `{selfsteer}` and any
 * value marked raw (already a command) go in unquoted. An unknown placeholder is a UserError naming
 * the flag and the placeholders it may use.
 */
export function fillTemplate(
  template: string,
  values: Record<string, string>,
  flag: string,
  raw: readonly string[] = ["selfsteer"],
): string {
  return template.replace(/\{([a-z_]+)\}/g, (whole, name: string) => {
    const value = values[name];
    if (value === undefined)
      throw new UserError(
        `${flag}: unknown placeholder ${whole} (this template may use ${Object.keys(values)
          .map((k) => `{${k}}`)
          .join(", ")})`,
      );
    return raw.includes(name) ? value : shellQuote(value);
  });
}

/** The placeholders a template uses. */
export function placeholdersOf(template: string): string[] {
  return [...template.matchAll(/\{([a-z_]+)\}/g)].map((m) => m[1]);
}

/** One line of the run's command log (commands.jsonl). */
export interface CommandLogEntry {
  time: string;
  stage: string;
  iteration: number;
  event: "start" | "exit" | "healthy" | "stop";
  command: string;
  pid?: number;
  exitStatus?: number | null;
  signal?: string | null;
  durationMs?: number;
  log?: string;
}

/** Where commands are logged and children are tracked: the run directory. */
export class ProcessBook {
  private readonly children = new Map<number, { name: string; command: string }>();
  private readonly logFd: number;

  constructor(readonly runDir: string) {
    mkdirSync(join(runDir, "running"), { recursive: true });
    mkdirSync(join(runDir, "logs"), { recursive: true });
    this.logFd = openSync(join(runDir, "commands.jsonl"), "a");
  }

  /** Appends one entry to commands.jsonl (one write per line). */
  log(entry: Omit<CommandLogEntry, "time">): void {
    const line = `${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`;
    // One write per line keeps lines whole even if the process dies right after.
    writeSync(this.logFd, line);
  }

  /** Records a live child (a pid file in running/). */
  track(name: string, child: ChildProcess, command: string): void {
    if (child.pid === undefined) return;
    this.children.set(child.pid, { name, command });
    writeJsonAtomic(join(this.runDir, "running", `${name}.json`), { pid: child.pid, command });
  }

  /** Forgets a child that has exited. */
  untrack(name: string, pid: number | undefined): void {
    if (pid !== undefined) this.children.delete(pid);
    rmSync(join(this.runDir, "running", `${name}.json`), { force: true });
  }

  /** Sends a signal to every live child's process group (used when this process is interrupted). */
  signalAll(signal: NodeJS.Signals): void {
    for (const pid of this.children.keys()) killGroup(pid, signal);
  }

  /**
   * Stops children left by an earlier run that was killed (their pid files are still in running/):
   * SIGTERM to the group, then SIGKILL after `graceMs`. A pid now used by another program is left alone.
   * Returns the commands stopped.
   */
  async reapOrphans(graceMs: number): Promise<string[]> {
    const dir = join(this.runDir, "running");
    const stopped: string[] = [];
    for (const file of readdirSync(dir)) {
      const path = join(dir, file);
      let entry: { pid?: number; command?: string };
      try {
        entry = JSON.parse(readFileSync(path, "utf8")) as { pid?: number; command?: string };
      } catch {
        rmSync(path, { force: true });
        continue;
      }
      const { pid, command } = entry;
      if (typeof pid === "number" && typeof command === "string" && isAlive(pid) && isOurs(pid, command)) {
        killGroup(pid, "SIGTERM");
        if (!(await waitForExit(pid, graceMs))) killGroup(pid, "SIGKILL");
        await waitForExit(pid, 5000);
        this.log({ stage: "resume", iteration: 0, event: "stop", command, pid });
        stopped.push(command);
      }
      rmSync(path, { force: true });
    }
    return stopped;
  }

  /** Closes the command log. */
  close(): void {
    closeSync(this.logFd);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether pid still runs `sh -c <command>` (guards against a recycled pid); true where /proc is absent. */
function isOurs(pid: number, command: string): boolean {
  const cmdline = `/proc/${pid}/cmdline`;
  if (!existsSync("/proc/self")) return true;
  try {
    return readFileSync(cmdline, "utf8").includes(command);
  } catch {
    return false;
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // Already gone.
    }
  }
}

async function waitForExit(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!isAlive(pid)) return true;
    await sleep(100);
  }
  return !isAlive(pid);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The last `n` lines of a log file, for error messages. */
export function tailOf(path: string, n = 12): string {
  try {
    const lines = readFileSync(path, "utf8").trimEnd().split("\n");
    return lines.slice(-n).join("\n");
  } catch {
    return "";
  }
}

function startChild(command: string, logPath: string): ChildProcess {
  const fd = openSync(logPath, "a");
  try {
    // detached: the child leads its own process group, so the whole group can be signalled.
    return spawn("/bin/sh", ["-c", command], { stdio: ["ignore", fd, fd], detached: true });
  } finally {
    closeSync(fd);
  }
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once("exit", (code, signal) => resolve({ code, signal }));
  });
}

/** Runs a command to completion; a non-zero exit is a StageError with the status and the log's tail. */
export async function runCommand(
  book: ProcessBook,
  stage: string,
  iteration: number,
  command: string,
): Promise<void> {
  const name = `${stage}-${iteration}`;
  const logPath = join(book.runDir, "logs", `${name}.log`);
  const started = Date.now();
  const child = startChild(command, logPath);
  book.track(name, child, command);
  book.log({ stage, iteration, event: "start", command, pid: child.pid, log: logPath });
  const { code, signal } = await exitOf(child);
  book.untrack(name, child.pid);
  book.log({
    stage,
    iteration,
    event: "exit",
    command,
    pid: child.pid,
    exitStatus: code,
    signal,
    durationMs: Date.now() - started,
  });
  if (code !== 0) {
    const status = signal !== null ? `was killed by ${signal}` : `exited with status ${code}`;
    const tail = tailOf(logPath);
    throw new StageError(
      stage,
      iteration,
      `command ${status}: ${command}\n  output (${logPath}):\n${tail.replace(/^/gm, "    ")}`,
    );
  }
}

/** A free TCP port on 127.0.0.1 (bound then released; the server started next takes it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** A server started from a command template and healthy (its /models answered). */
export class ManagedServer {
  private constructor(
    private readonly book: ProcessBook,
    private readonly name: string,
    private readonly child: ChildProcess,
    readonly command: string,
    readonly url: string,
    private readonly stage: string,
    private readonly iteration: number,
  ) {}

  /**
   * Starts `command` and polls `url`/models until it answers 2xx. The process exiting first, or
   * `healthTimeoutMs` passing, stops it and throws a StageError naming the command and the log's tail.
   */
  static async start(
    book: ProcessBook,
    stage: string,
    iteration: number,
    command: string,
    url: string,
    healthTimeoutMs: number,
    stopGraceMs: number,
  ): Promise<ManagedServer> {
    const name = `${stage}-${iteration}`;
    const logPath = join(book.runDir, "logs", `${name}.log`);
    const child = startChild(command, logPath);
    book.track(name, child, command);
    book.log({ stage, iteration, event: "start", command, pid: child.pid, log: logPath });
    const server = new ManagedServer(book, name, child, command, url, stage, iteration);
    const started = Date.now();
    let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    void exitOf(child).then((e) => {
      exited = e;
    });
    for (;;) {
      if (exited !== null) {
        const e = exited as { code: number | null; signal: NodeJS.Signals | null };
        book.untrack(name, child.pid);
        book.log({
          stage,
          iteration,
          event: "exit",
          command,
          pid: child.pid,
          exitStatus: e.code,
          signal: e.signal,
        });
        const status = e.signal !== null ? `was killed by ${e.signal}` : `exited with status ${e.code}`;
        throw new StageError(
          stage,
          iteration,
          `server ${status} before becoming healthy: ${command}\n  output (${logPath}):\n${tailOf(logPath).replace(/^/gm, "    ")}`,
        );
      }
      if (await isHealthy(url)) break;
      if (Date.now() - started > healthTimeoutMs) {
        await server.stop(stopGraceMs);
        throw new StageError(
          stage,
          iteration,
          `server not healthy after ${(healthTimeoutMs / 1000).toFixed(0)} s (no 2xx from ${url}/models): ${command}\n` +
            `  output (${logPath}):\n${tailOf(logPath).replace(/^/gm, "    ")}`,
        );
      }
      await sleep(200);
    }
    book.log({
      stage,
      iteration,
      event: "healthy",
      command,
      pid: child.pid,
      durationMs: Date.now() - started,
    });
    return server;
  }

  /** The first model id the server lists (what clients send as `model`). */
  async modelName(): Promise<string> {
    const response = await fetch(`${this.url}/models`);
    const json = (await response.json()) as { data?: Array<{ id?: unknown }> };
    const id = json.data?.[0]?.id;
    if (typeof id !== "string")
      throw new StageError(this.stage, this.iteration, `${this.url}/models lists no model id`);
    return id;
  }

  /** SIGTERM to the server's process group, SIGKILL after `graceMs`; resolves once it has exited. */
  async stop(graceMs: number): Promise<void> {
    const pid = this.child.pid;
    if (pid === undefined) return;
    if (this.child.exitCode === null && this.child.signalCode === null) {
      killGroup(pid, "SIGTERM");
      const done = exitOf(this.child);
      const timer = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), graceMs));
      if ((await Promise.race([done, timer])) === "timeout") killGroup(pid, "SIGKILL");
      await done;
    }
    // The group may hold grandchildren (a shell's child) that outlive the leader for a moment.
    killGroup(pid, "SIGKILL");
    this.book.untrack(this.name, pid);
    this.book.log({
      stage: this.stage,
      iteration: this.iteration,
      event: "stop",
      command: this.command,
      pid,
    });
  }
}

/** Whether `url`/models answers 2xx within a second. */
export async function isHealthy(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/models`, { signal: AbortSignal.timeout(1000) });
    await response.arrayBuffer();
    return response.ok;
  } catch {
    return false;
  }
}
