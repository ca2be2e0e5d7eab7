/**
 * Tokenizing prompts off the event loop. A prompt that fits the context can still be hundreds of
 * kilobytes (limits.ts bounds it by bytes, not tokens), and BPE over it takes a large fraction of a
 * second; on the server's one event loop every other request, /health and streams in flight included,
 * would wait that long. The pool hands such prompts to worker threads that hold the same tokenizer
 * (rebuilt from its tokenizer.json), so the loop only renders the prompt (chat.ts's pieces) and
 * copies the text over. The ids are the same as encoding on the loop: the worker runs the same
 * encodePieces on the same tokenizer.json.
 *
 * A worker that dies (a crash, out of memory) or stops answering (then it is terminated) fails only
 * the jobs it held, with a TokenizerWorkerError (a 500), and a fresh one starts on the next job. One
 * that cannot even load (a missing file: the next would fail alike) turns the pool back to encoding
 * on the loop, its waiting jobs included, rather than failing every long prompt from then on.
 * close() terminates the workers; an idle worker never keeps the process alive.
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { encodePieces, type PromptPiece } from "../engine/chat.js";
import type { BpeTokenizer } from "../engine/tokenizer.js";
import { ClientGone } from "./http.js";
import { SchedulerClosedError } from "./scheduler.js";
import type { TokenizeAnswer, TokenizeJob, TokenizeWorkerData } from "./tokenize-worker.js";

/** Options of TokenizePool. */
export interface TokenizePoolOptions {
  /**
   * Worker threads at most (default: one core fewer than the machine has, at least 1, at most 2);
   * the first starts with prestart() or the first long prompt, the others when a job finds all busy.
   */
  workers?: number;
  /** Prompts of fewer characters than this are encoded on the calling thread (default 4096). */
  inlineBelow?: number;
  /** The worker script (default: tokenize-worker.js beside this file; tests give one that crashes). */
  workerUrl?: URL;
  /**
   * A ready worker with jobs that sends no answer for this long is terminated, failing its jobs
   * (default 30000 ms; the longest prompt the size checks let through takes a few seconds at most).
   * A worker gets the same time, or 30 s if longer, to load before it is ready.
   */
  stallMs?: number;
  /** Where to report a worker that stopped (default: nowhere). */
  log?: (line: string) => void;
}

/**
 * Below this many characters a prompt is encoded inline: under 10 ms of BPE (about 2 µs per character
 * on the slowest text we tried), less than a decode step of a real model, which runs on the same
 * loop; a worker would add a round trip with a copy each way (about 1.5 ms for 4 KB).
 */
const DEFAULT_INLINE_BELOW = 4096;
const DEFAULT_STALL_MS = 30_000;

/** A job a worker could not finish: its worker stopped, or encoding threw there. */
export class TokenizerWorkerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenizerWorkerError";
  }
}

interface PendingJob {
  pieces: readonly PromptPiece[];
  resolve(ids: Int32Array): void;
  reject(error: Error): void;
}

interface Slot {
  worker: Worker;
  /** Jobs a caller still waits for. */
  pending: Map<number, PendingJob>;
  /** Jobs posted and not yet answered, abandoned ones included: the worker's real load. */
  outstanding: number;
  /** Whether it has loaded the tokenizer (its first message says so). */
  ready: boolean;
  /** Fires when the worker takes too long to load, or is silent too long once ready with jobs outstanding. */
  watchdog: NodeJS.Timeout | null;
  /** Why the worker stopped, when it was an uncaught error or the watchdog. */
  failure: string | null;
}

/** Characters of text in `pieces` (ids cost nothing to encode). */
function textLength(pieces: readonly PromptPiece[]): number {
  let length = 0;
  for (const piece of pieces) if ("text" in piece) length += piece.text.length;
  return length;
}

/** Worker threads that encode prompt pieces with the served tokenizer. */
export class TokenizePool {
  private readonly slots: Slot[] = [];
  private readonly maxWorkers: number;
  private readonly inlineBelow: number;
  private readonly workerUrl: URL;
  private readonly stallMs: number;
  private readonly log: (line: string) => void;
  private tokenizerJson: string | null = null;
  private nextJob = 0;
  private closed = false;
  /** Set when a worker could not load: everything is encoded inline from then on. */
  private inlineOnly = false;

  /** A pool for `tokenizer`; no thread starts until prestart() or a prompt needs one. */
  constructor(
    private readonly tokenizer: BpeTokenizer,
    options: TokenizePoolOptions = {},
  ) {
    // One core stays free for the event loop and the decode steps it runs.
    this.maxWorkers = Math.max(1, options.workers ?? Math.min(2, availableParallelism() - 1));
    this.inlineBelow = options.inlineBelow ?? DEFAULT_INLINE_BELOW;
    this.workerUrl = options.workerUrl ?? new URL("./tokenize-worker.js", import.meta.url);
    this.stallMs = options.stallMs ?? DEFAULT_STALL_MS;
    this.log = options.log ?? (() => {});
  }

  /**
   * Starts a worker now, if none runs, so the first long prompt does not wait for one to boot (a
   * few hundred milliseconds of loading modules, competing with the event loop for the CPU).
   */
  prestart(): void {
    if (!this.closed && !this.inlineOnly && this.slots.length === 0) this.startWorker();
  }

  /** Worker threads running now. */
  get workers(): number {
    return this.slots.length;
  }

  /**
   * The ids of `pieces` (encodePieces with this pool's tokenizer), from a worker unless the text is
   * short. An Int32Array, as the worker hands it over: making a JS array of a long prompt's ids would
   * take the event loop tens of milliseconds, and most such prompts are refused for their length.
   * Rejects with ClientGone when `signal` aborts first, TokenizerWorkerError when the worker
   * fails, SchedulerClosedError once the pool is closed.
   */
  async encode(pieces: readonly PromptPiece[], signal?: AbortSignal): Promise<Int32Array> {
    if (this.closed) throw new SchedulerClosedError();
    if (this.inlineOnly || textLength(pieces) < this.inlineBelow)
      return Int32Array.from(encodePieces(this.tokenizer, pieces));
    if (signal?.aborted) throw new ClientGone("client disconnected");
    const slot = this.pickSlot();
    const id = this.nextJob++;
    return new Promise<Int32Array>((resolve, reject) => {
      const finish = () => {
        slot.pending.delete(id);
        signal?.removeEventListener("abort", onAbort);
      };
      // The worker still finishes the job; its answer is dropped.
      const onAbort = () => {
        finish();
        reject(new ClientGone("client disconnected"));
      };
      slot.pending.set(id, {
        pieces,
        resolve: (ids) => {
          finish();
          resolve(ids);
        },
        reject: (error) => {
          finish();
          reject(error);
        },
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      const job: TokenizeJob = { id, pieces: pieces as PromptPiece[] };
      try {
        slot.worker.postMessage(job);
      } catch (error) {
        slot.pending.get(id)?.reject(error instanceof Error ? error : new Error(String(error)));
        return;
      }
      slot.outstanding++;
      if (slot.outstanding === 1) this.busy(slot);
    });
  }

  /** Terminates the workers; jobs still waiting reject with SchedulerClosedError (a 503). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const slots = this.slots.splice(0);
    for (const slot of slots)
      for (const job of [...slot.pending.values()]) job.reject(new SchedulerClosedError());
    await Promise.all(slots.map((slot) => slot.worker.terminate()));
  }

  /** An idle worker, else a new one while under the limit, else the one with the fewest jobs. */
  private pickSlot(): Slot {
    const idle = this.slots.find((slot) => slot.outstanding === 0);
    if (idle !== undefined) return idle;
    if (this.slots.length < this.maxWorkers) return this.startWorker();
    return this.slots.reduce((best, slot) => (slot.outstanding < best.outstanding ? slot : best));
  }

  /**
   * A worker with jobs keeps the process alive (a script may be awaiting it; an idle one must not)
   * and, once ready, must answer within stallMs, else it is terminated (its exit fails the jobs).
   */
  private busy(slot: Slot): void {
    slot.worker.ref();
    if (slot.ready) this.arm(slot, this.stallMs, `no answer within ${this.stallMs} ms, terminated`);
  }

  private idle(slot: Slot): void {
    slot.worker.unref();
    if (slot.ready) this.disarm(slot);
  }

  private arm(slot: Slot, ms: number, failure: string): void {
    this.disarm(slot);
    slot.watchdog = setTimeout(() => {
      slot.failure = failure;
      void slot.worker.terminate();
    }, ms);
    slot.watchdog.unref();
  }

  private disarm(slot: Slot): void {
    if (slot.watchdog !== null) clearTimeout(slot.watchdog);
    slot.watchdog = null;
  }

  private startWorker(): Slot {
    this.tokenizerJson ??= JSON.stringify(this.tokenizer.toJSON());
    const workerData: TokenizeWorkerData = {
      tokenizerJson: this.tokenizerJson,
      source: "the served tokenizer.json",
    };
    const worker = new Worker(this.workerUrl, { workerData });
    worker.unref();
    const slot: Slot = {
      worker,
      pending: new Map(),
      outstanding: 0,
      ready: false,
      watchdog: null,
      failure: null,
    };
    this.slots.push(slot);
    const loadMs = Math.max(this.stallMs, 30_000);
    this.arm(slot, loadMs, `not ready within ${loadMs} ms, terminated`);
    worker.on("message", (answer: TokenizeAnswer) => {
      if ("ready" in answer) {
        slot.ready = true;
        this.disarm(slot);
        if (slot.outstanding > 0) this.busy(slot);
        return;
      }
      slot.outstanding--;
      if (slot.outstanding > 0) this.busy(slot);
      else this.idle(slot);
      const job = slot.pending.get(answer.id);
      if (job === undefined) return;
      if ("ids" in answer) job.resolve(answer.ids);
      else job.reject(new TokenizerWorkerError(`tokenizing the prompt failed: ${answer.error}`));
    });
    worker.on("error", (error) => {
      slot.failure = error.message;
    });
    worker.on("exit", (code) => {
      this.disarm(slot);
      const at = this.slots.indexOf(slot);
      if (at >= 0) this.slots.splice(at, 1);
      if (this.closed) return;
      const cause = `exit code ${code}${slot.failure === null ? "" : `: ${slot.failure}`}`;
      if (!slot.ready) {
        // Its jobs never started, so none of them can be what stopped it.
        this.inlineOnly = true;
        this.log(`the tokenizer worker could not load (${cause}); tokenizing on the event loop from now on`);
        for (const job of [...slot.pending.values()]) {
          try {
            job.resolve(Int32Array.from(encodePieces(this.tokenizer, job.pieces)));
          } catch (error) {
            job.reject(error instanceof Error ? error : new Error(String(error)));
          }
        }
        return;
      }
      const why = `the tokenizer worker stopped (${cause}); a new one starts with the next prompt`;
      this.log(why);
      for (const job of [...slot.pending.values()]) job.reject(new TokenizerWorkerError(why));
    });
    return slot;
  }
}
