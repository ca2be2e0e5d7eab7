/**
 * `selfsteer serve`: an OpenAI-compatible HTTP server (node:http) over a local checkpoint.
 *   GET  /v1/models, /v1/models/{id}, /health
 *   POST /v1/chat/completions   messages, n, temperature, top_p, top_k, max_tokens /
 *                               max_completion_tokens, stop, seed, logprobs + top_logprobs, stream,
 *                               and vLLM's ignore_eos                                    (chat.ts)
 *   POST /v1/completions        prompt (text or token ids, one or several), echo, logprobs, the same
 *                               sampling fields; echo + logprobs + max_tokens 0 scores a given text
 *                                                                                        (completions.ts)
 * Every request runs through one BatchScheduler, so concurrent requests share decode steps. Samples
 * of a request with seed s use seeds s, s+1, ... (n > 1), each drawn from its own Rng, so the same
 * seed gives the same text whatever else is being served. close() drains: new requests get 503
 * while the listener stays open, running ones may finish until a deadline, then the rest are ended
 * with an error and the server stops. Bad URLs and requests Node's HTTP parser rejects are answered
 * in OpenAI's error shape too.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse, STATUS_CODES } from "node:http";
import type { AddressInfo } from "node:net";
import { basename, resolve as resolvePath } from "node:path";
import type { Duplex } from "node:stream";
import { type BackendChoice, type CreatedKernels, createKernels } from "../engine/kernels/index.js";
import { type LoadedModelDir, loadModelDir } from "../engine/load.js";
import { UserError } from "../util/errors.js";
import { handleChatCompletions } from "./chat.js";
import { handleCompletions } from "./completions.js";
import { ServeContext } from "./context.js";
import { ClientGone, readJsonBody, sendError, sendJson } from "./http.js";
import { HttpError } from "./protocol.js";
import {
  BatchScheduler,
  CancelledError,
  QueueFullError,
  SchedulerClosedError,
  type SchedulerStats,
} from "./scheduler.js";
import { TokenizePool, type TokenizePoolOptions } from "./tokenize-pool.js";

/** Options of startServer. */
export interface ServeOptions {
  /** Checkpoint directory to load (config.json, model.safetensors, tokenizer.json). */
  modelDir?: string;
  /** An already loaded model (tests, benchmarks); its kernels stay the caller's. */
  loaded?: LoadedModelDir;
  /** The name clients must send as `model` (default: the directory's base name). */
  modelName?: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8000; 0 picks a free port. */
  port?: number;
  /** Samples decoded together at most (default 32). */
  maxBatch?: number;
  /** Samples waiting for a slot at most before requests get 429 (default 256). */
  maxQueue?: number;
  /** Kernels backend when loading modelDir (default auto). */
  backend?: BackendChoice;
  /** Threads of the kernels, BLAS and worker pool together (default: every core). */
  threads?: number;
  /** Largest request body in bytes (default 4 MiB); larger ones get 413. */
  maxBodyBytes?: number;
  /** Seeds requests that carry no seed (default: random). */
  seed?: number;
  /** Where to report kernel fallbacks and internal errors (default: nowhere). */
  log?: (line: string) => void;
  /** Longest prompt + completion served (default: max_position_embeddings, at most 8192: the KV cache is sized by it). */
  maxModelLen?: number;
  /** How long close() lets in-flight requests run before ending them with an error (default 10000 ms). */
  drainTimeoutMs?: number;
  /** Tokenizing long prompts on worker threads: how many, from what length (tests, tuning). */
  tokenize?: Omit<TokenizePoolOptions, "log">;
}

/** A running server. */
export interface ServerHandle {
  /** Base URL for OpenAI clients, e.g. http://127.0.0.1:8000/v1. */
  url: string;
  host: string;
  port: number;
  modelName: string;
  /** Scheduler counters (running, waiting, decode steps, tokens, busy time). */
  stats(): SchedulerStats;
  /**
   * Drains: new requests get 503 while in-flight ones run until the drain deadline, then those left
   * are ended with a 503 (or an error event mid-stream); then closes connections, frees owned kernels.
   */
  close(): Promise<void>;
}

const DEFAULT_MAX_BODY = 4 * 1024 * 1024;
/** The default cap on prompt + completion: a chat without max_tokens runs to the context's end. */
export const DEFAULT_MAX_MODEL_LEN = 8192;
const DEFAULT_DRAIN_MS = 10_000;

/** The model to serve and the kernels this server must free (null when the caller owns them). */
function openModel(options: ServeOptions, log: (line: string) => void) {
  if (options.loaded !== undefined) return { loaded: options.loaded, kernels: null };
  if (options.modelDir === undefined) throw new Error("startServer: give modelDir or loaded");
  const backend = options.backend ?? "auto";
  let kernels: CreatedKernels;
  try {
    kernels = createKernels({
      backend,
      ...(options.threads === undefined ? {} : { threads: options.threads }),
    });
  } catch (error) {
    // as the other commands say it (src/cli/common.ts openKernels)
    throw new UserError(`--backend ${backend}: ${(error as Error).message}`);
  }
  if (kernels.warning) log(kernels.warning);
  log(`kernels: ${kernels.name}${kernels.note === undefined ? "" : ` (${kernels.note})`}`);
  try {
    const loaded = loadModelDir(options.modelDir, { kernels });
    if (!loaded.model.hasLmHead)
      throw new UserError(
        `${options.modelDir}: is a reward model (score head, no lm_head); it cannot generate text`,
      );
    return { loaded, kernels };
  } catch (error) {
    kernels.dispose();
    throw error;
  }
}

/** Maps what a handler threw to the HTTP error it is answered with. */
function toHttpError(error: unknown, log: (line: string) => void): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof QueueFullError)
    return new HttpError(429, error.message, "rate_limit_exceeded", null, "queue_full", {
      "retry-after": "1",
    });
  if (error instanceof SchedulerClosedError)
    return new HttpError(503, error.message, "service_unavailable", null, "shutting_down", {
      "retry-after": "5",
      connection: "close",
    });
  const message = error instanceof Error ? error.message : String(error);
  log(`internal error: ${error instanceof Error ? (error.stack ?? message) : message}`);
  return new HttpError(500, `internal error: ${message}`, "server_error", null, "internal_error");
}

/** Resolves true once every task in `tasks` (a live set) has settled, or false after `ms`. */
async function settleWithin(tasks: Set<Promise<void>>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (tasks.size > 0) {
    const left = deadline - Date.now();
    if (left <= 0) return false;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, left);
    });
    await Promise.race([Promise.allSettled([...tasks]), timeout]);
    clearTimeout(timer);
  }
  return true;
}

/** The request's path without trailing slashes; a URL that does not parse is a 400. */
function requestPath(req: IncomingMessage): string {
  let pathname: string;
  try {
    pathname = new URL(req.url ?? "/", "http://localhost").pathname;
  } catch {
    throw new HttpError(400, "the request URL is not valid", "invalid_request_error", null, "invalid_url");
  }
  return pathname.replace(/\/+$/, "") || "/";
}

/** Percent-decodes one path segment; bad escapes (%E0%A4%A) are a 400, not a crash. */
function decodePathPart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new HttpError(
      400,
      `the request URL has an invalid percent-encoding: ${JSON.stringify(part.slice(0, 200))}`,
      "invalid_request_error",
      null,
      "invalid_url",
    );
  }
}

// Node's HTTP parser errors by code: the status and message to answer them with.
const CLIENT_ERRORS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, "the request headers are too large"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "the request took too long to arrive"],
  ERR_HTTP_HEADERS_TIMEOUT: [408, "the request headers took too long to arrive"],
  HPE_INVALID_CONTENT_LENGTH: [400, "the Content-Length header is not valid"],
  HPE_UNEXPECTED_CONTENT_LENGTH: [400, "Content-Length and Transfer-Encoding must not both be sent"],
  HPE_INVALID_TRANSFER_ENCODING: [400, "the Transfer-Encoding header is not valid"],
  HPE_INVALID_METHOD: [400, "the request method is not valid"],
  HPE_INVALID_URL: [400, "the request URL is not valid"],
};

/**
 * Answers a request Node's HTTP parser rejected (bad request line, bad Content-Length, huge headers)
 * with OpenAI's error JSON, written straight to the socket (there is no response object), then closes
 * it. Nothing is written when the client is gone or a response on this socket has already started.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  const started = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent;
  if (error.code === "ECONNRESET" || !socket.writable || started === true) {
    socket.destroy();
    return;
  }
  const [status, message] = CLIENT_ERRORS[error.code ?? ""] ?? [400, "the request is not valid HTTP"];
  const body = JSON.stringify(
    new HttpError(
      status,
      `${message} (${error.code ?? "parse error"})`,
      "invalid_request_error",
      null,
      "bad_request",
    ).body(),
  );
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Bad Request"}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** Starts the server; resolves once it listens. */
export async function startServer(options: ServeOptions): Promise<ServerHandle> {
  const log = options.log ?? (() => {});
  const opened = openModel(options, log);
  const { loaded } = opened;
  let kernels = opened.kernels;
  const disposeKernels = () => {
    kernels?.dispose();
    kernels = null;
  };
  const maxBatch = options.maxBatch ?? 32;
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const drainMs = options.drainTimeoutMs ?? DEFAULT_DRAIN_MS;
  const contextLength = Math.min(
    loaded.config.max_position_embeddings,
    options.maxModelLen ?? DEFAULT_MAX_MODEL_LEN,
  );
  if (contextLength < loaded.config.max_position_embeddings)
    log(
      `serving ${contextLength} of the model's ${loaded.config.max_position_embeddings} positions (--max-model-len)`,
    );
  const scheduler = new BatchScheduler(loaded.model, {
    maxBatch,
    maxQueue: options.maxQueue ?? 256,
    contextLength,
    // Ids past the tokenizer's vocabulary have no text: they are never sampled.
    sampleVocab: loaded.tokenizer.vocabSize,
  });
  // Its first thread starts once the server listens; close() terminates its threads.
  const tokenizePool = new TokenizePool(loaded.tokenizer, { ...options.tokenize, log });
  const ctx = new ServeContext(
    options.modelName ?? basename(resolvePath(loaded.dir)),
    loaded.tokenizer,
    // The context the handlers check against is the one served, which --max-model-len may shorten.
    { ...loaded.config, max_position_embeddings: contextLength },
    scheduler,
    maxBatch,
    options.seed ?? randomBytes(4).readUInt32LE(0),
    tokenizePool,
  );

  let closing = false;
  const inflight = new Set<Promise<void>>();
  // Requests being handled, with the abort that cancels their samples (the drain deadline uses it).
  const active = new Map<ServerResponse, AbortController>();

  async function route(
    req: IncomingMessage,
    res: ServerResponse,
    controller: AbortController,
  ): Promise<void> {
    const method = req.method ?? "GET";
    if (closing) {
      req.resume();
      throw new SchedulerClosedError();
    }
    const path = requestPath(req);
    const allow = (methods: string) => {
      if (methods.split(", ").includes(method)) return true;
      req.resume();
      throw new HttpError(
        405,
        `Method ${method} is not allowed on ${path}; use ${methods}`,
        "invalid_request_error",
        null,
        "method_not_allowed",
        { allow: methods },
      );
    };
    // A client that hangs up mid-request cancels its samples.
    res.on("close", () => {
      if (!res.writableFinished) controller.abort();
    });
    if (path === "/health" && allow("GET"))
      return sendJson(res, 200, { status: "ok", kernels: loaded.model.kernels.name, ...scheduler.stats() });
    if (path === "/v1/models" && allow("GET"))
      return sendJson(res, 200, { object: "list", data: [ctx.modelCard()] });
    if (path.startsWith("/v1/models/") && allow("GET")) {
      ctx.checkModel(decodePathPart(path.slice("/v1/models/".length)));
      return sendJson(res, 200, ctx.modelCard());
    }
    if (path === "/v1/chat/completions" && allow("POST"))
      return handleChatCompletions(ctx, await readJsonBody(req, maxBody), res, controller.signal);
    if (path === "/v1/completions" && allow("POST"))
      return handleCompletions(ctx, await readJsonBody(req, maxBody), res, controller.signal);
    req.resume();
    throw new HttpError(404, `Invalid URL (${method} ${path})`, "invalid_request_error", null, "unknown_url");
  }

  const server = createServer((req, res) => {
    res.on("error", () => {});
    const controller = new AbortController();
    active.set(res, controller);
    const task = route(req, res, controller).catch((error: unknown) => {
      if (error instanceof ClientGone || error instanceof CancelledError) {
        // Ended already when the drain deadline answered it; otherwise nobody is left to answer.
        if (!res.writableEnded) res.destroy();
        return;
      }
      sendError(res, toHttpError(error, log));
    });
    inflight.add(task);
    void task.finally(() => {
      inflight.delete(task);
      active.delete(res);
    });
  });
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) =>
    answerClientError(error, socket),
  );

  const host = options.host ?? "127.0.0.1";
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port ?? 8000, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (error) {
    disposeKernels();
    await tokenizePool.close();
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE")
      throw new UserError(`--port ${options.port}: address ${host}:${options.port} is in use`);
    if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND")
      throw new UserError(`--host ${host}: cannot listen on this address`);
    throw error;
  }
  tokenizePool.prestart();
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(":") ? `[${host}]` : host;

  let closed: Promise<void> | null = null;
  return {
    url: `http://${urlHost}:${port}/v1`,
    host,
    port,
    modelName: ctx.modelName,
    stats: () => scheduler.stats(),
    close(): Promise<void> {
      if (closed !== null) return closed;
      closing = true;
      closed = (async () => {
        // The listener stays open while draining, so new requests get a 503 rather than a refused connection.
        server.closeIdleConnections();
        const drained = await settleWithin(inflight, drainMs);
        if (!drained) {
          log(`drain deadline (${drainMs} ms) passed: ending ${active.size} request(s) with an error`);
          const expired = new HttpError(
            503,
            `the server is shutting down and this request did not finish within the ${drainMs} ms drain deadline`,
            "service_unavailable",
            null,
            "shutting_down",
            { connection: "close" },
          );
          for (const [res, controller] of active) {
            sendError(res, expired);
            controller.abort();
          }
          await settleWithin(inflight, 1000);
        }
        await scheduler.close();
        // Ends the tokenizer threads, so nothing of this server outlives close().
        await tokenizePool.close();
        const listening = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        // Connections still open are idle keep-alive ones a client holds, or ones we just answered.
        const forced = setTimeout(() => server.closeAllConnections(), drained ? 1000 : 100);
        await listening;
        clearTimeout(forced);
        disposeKernels();
      })();
      return closed;
    },
  };
}
