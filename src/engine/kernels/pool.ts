import { Worker } from "node:worker_threads";
import {
  CLOSED,
  CONTROL,
  ControlBlock,
  controlBytes,
  type GemmJob,
  type KernelExports,
  openValue,
} from "./protocol.js";
import type { PoolStats } from "./types.js";
import type { WasmMemory, WasmModule } from "./webassembly.js";

export type { PoolStats } from "./types.js";

/**
 * Worker threads that help the main thread with sgemm on the kernels' shared memory. `run` opens a job,
 * wakes the workers, claims chunks itself, and blocks (Atomics.wait) until every chunk is done, so the
 * caller sees an ordinary synchronous call; workers that wake late just find fewer chunks left.
 */
export class KernelPool {
  /** Number of worker threads (the main thread is not counted). */
  readonly size: number;
  private readonly workers: Worker[] = [];
  private readonly control: ControlBlock;
  private readonly spinMs: number;
  private readonly stats: PoolStats = { parallelCalls: 0, stalledCalls: 0, soloCalls: 0, waitMs: 0 };
  /** Consecutive stalled calls, current back-off exponent, and calls left to run without helpers. */
  private stalls = 0;
  private backoff = 0;
  private cooldown = 0;
  private readonly failures: string[] = [];
  private disposed = false;

  /**
   * Starts one worker per entry of `workspaces` (byte addresses of their packing buffers); each
   * instantiates `module` on `memory` by itself and reports ready.
   */
  constructor(module: WasmModule, memory: WasmMemory, workspaces: number[], spinMicros: number) {
    this.size = workspaces.length;
    this.spinMs = spinMicros / 1000;
    const buffer = new SharedArrayBuffer(controlBytes(this.size));
    this.control = new ControlBlock(buffer);
    Atomics.store(this.control.words, CONTROL.NEXT, CLOSED);
    for (let index = 0; index < this.size; index++) {
      const worker = new Worker(new URL("./worker.js", import.meta.url), {
        workerData: { module, memory, control: buffer, index, work: workspaces[index], spinMs: this.spinMs },
        // Workers inherit the parent's node flags; --input-type (node -e / stdin scripts) makes them fail.
        execArgv: workerExecArgv(process.execArgv),
      });
      worker.on("message", (message: { failed?: string }) => {
        if (message.failed !== undefined) this.failures.push(message.failed);
      });
      worker.on("error", (error: Error) => {
        this.failures.push(error.message);
        Atomics.store(this.control.words, CONTROL.READY + index, 0);
      });
      // Idle workers must never keep the process alive (after the listeners: adding one re-refs).
      worker.unref();
      this.workers.push(worker);
    }
  }

  /** How many workers have instantiated the module and wait for jobs. */
  readyCount(): number {
    if (this.disposed) return 0;
    let ready = 0;
    for (let i = 0; i < this.size; i++) ready += Atomics.load(this.control.words, CONTROL.READY + i);
    return ready;
  }

  /** Blocks until every worker is ready or `timeoutMs` passes; returns whether all are ready. */
  waitUntilReady(timeoutMs = 10000): boolean {
    const words = this.control.words;
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < this.size; i++) {
      while (Atomics.load(words, CONTROL.READY + i) !== 1) {
        const left = deadline - Date.now();
        if (left <= 0 || this.disposed) return false;
        Atomics.wait(words, CONTROL.READY + i, 0, Math.min(left, 50));
      }
    }
    return true;
  }

  /**
   * Runs every chunk of `job` with the workers' help, the main thread using `exports` and its workspace
   * `work` (unless `mainClaims` is false: then the workers do everything, which tests use to exercise
   * them); returns when all chunks are done. Throws if any chunk failed, after all of them stopped.
   */
  run(exports: KernelExports, job: GemmJob, work: number, mainClaims = true): void {
    const words = this.control.words;
    const generation = (Atomics.load(words, CONTROL.GEN) + 1) | 0;
    this.control.writeJob(job);
    Atomics.store(words, CONTROL.COMPLETED, 0);
    Atomics.store(words, CONTROL.FAILED, 0);
    Atomics.store(words, CONTROL.NEXT, openValue(generation));
    Atomics.store(words, CONTROL.GEN, generation);
    Atomics.notify(words, CONTROL.GEN);
    const start = performance.now();
    const ownFailure = mainClaims ? this.control.drain(exports, work, job) : undefined;
    const drained = performance.now();
    let completed = Atomics.load(words, CONTROL.COMPLETED);
    // Spin briefly (the helpers are usually about to finish), then sleep.
    for (let i = 1; completed < job.chunks; i++) {
      if ((i & 63) === 0 && performance.now() - drained > this.spinMs) {
        Atomics.wait(words, CONTROL.COMPLETED, completed, 1000);
      }
      completed = Atomics.load(words, CONTROL.COMPLETED);
    }
    // Close before anyone may write the next job's fields (see protocol.ts).
    Atomics.store(words, CONTROL.NEXT, CLOSED);
    if (mainClaims) this.noteWait(drained - start, performance.now() - drained);
    if (Atomics.load(words, CONTROL.FAILED) !== 0) {
      const reasons = [ownFailure, ...this.failures].filter((r) => r !== undefined);
      this.failures.length = 0;
      throw new Error(
        `sgemm failed: ${reasons.length > 0 ? reasons.join("; ") : "in a kernel worker thread"}`,
      );
    }
  }

  /**
   * Whether the next call should use the helpers. After repeated stalls (the main thread left waiting
   * on a helper's chunk for longer than it computed, typical when other processes hold the cores and
   * preempt a helper mid-chunk), the pool sits out a growing number of calls on the main thread alone,
   * then tries again; one clean call shrinks the back-off again.
   */
  useHelpers(): boolean {
    if (this.cooldown > 0) {
      this.cooldown--;
      this.stats.soloCalls++;
      return false;
    }
    return true;
  }

  /** Counters since construction, for benchmarks and diagnosis. */
  statistics(): PoolStats {
    return { ...this.stats };
  }

  private noteWait(ownMs: number, waitMs: number): void {
    this.stats.parallelCalls++;
    this.stats.waitMs += waitMs;
    if (waitMs > Math.max(0.2, ownMs)) {
      this.stats.stalledCalls++;
      if (++this.stalls >= 2) {
        this.cooldown = Math.min(256, 4 << this.backoff);
        this.backoff = Math.min(this.backoff + 1, 6);
        this.stalls = 0;
      }
    } else {
      this.stalls = 0;
      if (this.backoff > 0) this.backoff--;
    }
  }

  /** Stops and terminates the workers; run must not be called afterwards. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    Atomics.store(this.control.words, CONTROL.STOP, 1);
    Atomics.add(this.control.words, CONTROL.GEN, 1);
    Atomics.notify(this.control.words, CONTROL.GEN);
    for (const worker of this.workers) void worker.terminate();
  }
}

/** The parent's node flags minus --input-type (and its separate value, if given as two words). */
function workerExecArgv(parent: string[]): string[] {
  const flags: string[] = [];
  for (let i = 0; i < parent.length; i++) {
    if (parent[i] === "--input-type") i++;
    else if (!parent[i].startsWith("--input-type=")) flags.push(parent[i]);
  }
  return flags;
}
