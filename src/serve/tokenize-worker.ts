/**
 * The worker-thread side of TokenizePool (tokenize-pool.ts): rebuilds the served tokenizer from its
 * tokenizer.json (given as text in workerData), says it is ready, and answers each job, in order,
 * with the ids of its prompt pieces (an Int32Array whose buffer is transferred, not copied) or the
 * error's message.
 */
import { parentPort, workerData } from "node:worker_threads";
import { encodePieces, type PromptPiece } from "../engine/chat.js";
import { BpeTokenizer } from "../engine/tokenizer.js";

/** What the pool sends: a job number and the pieces to encode. */
export interface TokenizeJob {
  id: number;
  pieces: PromptPiece[];
}

/** What the worker answers: that it is ready (its first message), then per job the ids or why there are none. */
export type TokenizeAnswer =
  | { ready: true }
  | { id: number; ids: Int32Array }
  | { id: number; error: string };

/** What the pool gives a new worker. */
export interface TokenizeWorkerData {
  tokenizerJson: string;
  source: string;
}

const port = parentPort;
if (port === null) throw new Error("tokenize-worker.js runs as a worker thread (see tokenize-pool.ts)");
const data = workerData as TokenizeWorkerData;
const tokenizer = BpeTokenizer.fromJSON(JSON.parse(data.tokenizerJson), data.source);

port.on("message", (job: TokenizeJob) => {
  let answer: { id: number; ids: Int32Array } | { id: number; error: string };
  try {
    answer = { id: job.id, ids: Int32Array.from(encodePieces(tokenizer, job.pieces)) };
  } catch (error) {
    answer = { id: job.id, error: error instanceof Error ? error.message : String(error) };
  }
  port.postMessage(answer, "ids" in answer ? [answer.ids.buffer as ArrayBuffer] : []);
});
const ready: TokenizeAnswer = { ready: true };
port.postMessage(ready);
