import { Worker } from "node:worker_threads";
import { CONTROL, controlBytes, type GemmJob, SLOT, slotWord } from "./protocol.js";
import type { WasmMemory, WasmModule } from "./webassembly.js";

/**
 * Worker threads that run sgemm slices on the kernels' shared memory. The main thread stays in charge:
 * `run` hands one job to each of some ready workers, runs its own share, and blocks (Atomics.wait)
 * until they are done, so the caller sees an ordinary synchronous call.
 */
export class KernelPool {
  /** Number of worker threads (the main thread is not counted). */
  readonly size: number;
  private readonly workers: Worker[];
  private readonly words: Int32Array;
  private readonly uwords: Uint32Array;
  private readonly floats: Float32Array;
  private readonly spin: number;
  private readonly failures: string[] = [];
  private disposed = false;

  /** Starts `size` workers; each instantiates `module` on `memory` on its own and reports ready. */
  constructor(module: WasmModule, memory: WasmMemory, size: number, spin = 20000) {
    this.size = size;
    this.spin = spin;
    const control = new SharedArrayBuffer(controlBytes(size));
    this.words = new Int32Array(control);
    this.uwords = new Uint32Array(control);
    this.floats = new Float32Array(control);
    this.workers = [];
    for (let index = 0; index < size; index++) {
      const worker = new Worker(new URL("./worker.js", import.meta.url), {
        workerData: { module, memory, control, index, spin },
      });
      // Idle workers must never keep the process alive.
      worker.unref();
      worker.on("message", (message: { failed?: string }) => {
        if (message.failed !== undefined) this.failures.push(message.failed);
      });
      worker.on("error", (error: Error) => {
        this.failures.push(error.message);
        Atomics.store(this.words, slotWord(index, SLOT.READY), 0);
      });
      this.workers.push(worker);
    }
  }

  /** Indexes of workers that have instantiated the module and wait for jobs. */
  readyWorkers(): number[] {
    const ready: number[] = [];
    if (this.disposed) return ready;
    for (let i = 0; i < this.size; i++) {
      if (Atomics.load(this.words, slotWord(i, SLOT.READY)) === 1) ready.push(i);
    }
    return ready;
  }

  /** Blocks until every worker is ready or `timeoutMs` passes; returns whether all are ready. */
  waitUntilReady(timeoutMs = 10000): boolean {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < this.size; i++) {
      const word = slotWord(i, SLOT.READY);
      while (Atomics.load(this.words, word) !== 1) {
        const left = deadline - Date.now();
        if (left <= 0 || this.disposed) return false;
        Atomics.wait(this.words, word, 0, Math.min(left, 50));
      }
    }
    return true;
  }

  /**
   * Runs jobs[i] on worker workerIndexes[i] while the main thread runs `own`, and returns when all are
   * done. Throws if a worker's job failed (after every participant has stopped touching memory).
   */
  run(workerIndexes: number[], jobs: GemmJob[], own: () => void): void {
    const words = this.words;
    const generation = (Atomics.load(words, CONTROL.GEN) + 1) | 0;
    for (let j = 0; j < jobs.length; j++) this.writeSlot(workerIndexes[j], jobs[j], generation);
    Atomics.store(words, CONTROL.DONE, 0);
    Atomics.store(words, CONTROL.GEN, generation);
    Atomics.notify(words, CONTROL.GEN);
    try {
      own();
    } finally {
      this.waitDone(jobs.length);
    }
    let failed = false;
    for (const index of workerIndexes) {
      if (Atomics.exchange(words, slotWord(index, SLOT.FAILED), 0) !== 0) failed = true;
    }
    if (failed) {
      const detail = this.failures.length > 0 ? `: ${this.failures.join("; ")}` : "";
      this.failures.length = 0;
      throw new Error(`sgemm failed in a kernel worker thread${detail}`);
    }
  }

  /** Stops and terminates the workers; later runs must not be issued. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    Atomics.store(this.words, CONTROL.STOP, 1);
    Atomics.add(this.words, CONTROL.GEN, 1);
    Atomics.notify(this.words, CONTROL.GEN);
    for (const worker of this.workers) void worker.terminate();
  }

  private writeSlot(index: number, job: GemmJob, generation: number): void {
    const at = (field: number): number => slotWord(index, field);
    const words = this.words;
    words[at(SLOT.KIND)] = job.kind;
    words[at(SLOT.TRANS_A)] = job.transA ? 1 : 0;
    words[at(SLOT.TRANS_B)] = job.transB ? 1 : 0;
    words[at(SLOT.M)] = job.M;
    words[at(SLOT.N)] = job.N;
    words[at(SLOT.K)] = job.K;
    this.floats[at(SLOT.ALPHA)] = job.alpha;
    this.uwords[at(SLOT.A)] = job.a;
    words[at(SLOT.LDA)] = job.lda;
    this.uwords[at(SLOT.B)] = job.b;
    words[at(SLOT.LDB)] = job.ldb;
    this.floats[at(SLOT.BETA)] = job.beta;
    this.uwords[at(SLOT.C)] = job.c;
    words[at(SLOT.LDC)] = job.ldc;
    this.uwords[at(SLOT.WORK)] = job.work;
    // Written last, atomically: publishes the fields above to the worker.
    Atomics.store(words, at(SLOT.GEN), generation);
  }

  private waitDone(expected: number): void {
    const words = this.words;
    let done = Atomics.load(words, CONTROL.DONE);
    for (let i = 0; done < expected && i < this.spin; i++) done = Atomics.load(words, CONTROL.DONE);
    while (done < expected) {
      Atomics.wait(words, CONTROL.DONE, done, 1000);
      done = Atomics.load(words, CONTROL.DONE);
    }
  }
}
