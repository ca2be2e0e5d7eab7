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
 * seed gives the same text whatever else is being served. close() stops taking requests, lets the
 * running ones finish and then resolves.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { basename, resolve as resolvePath } from "node:path";
import { type CreatedKernels, createKernels } from "../engine/kernels/index.js";
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
  backend?: "auto" | "wasm" | "plain";
  /** Threads of the WASM kernels (default: every core). */
  threads?: number;
  /** Largest request body in bytes (default 4 MiB); larger ones get 413. */
  maxBodyBytes?: number;
  /** Seeds requests that carry no seed (default: random). */
  seed?: number;
  /** Where to report kernel fallbacks and internal errors (default: nowhere). */
  log?: (line: string) => void;
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
  /** Stops taking requests, finishes the in-flight ones, closes connections, frees owned kernels. */
  close(): Promise<void>;
}

const DEFAULT_MAX_BODY = 4 * 1024 * 1024;

/** The model to serve and the kernels this server must free (null when the caller owns them). */
function openModel(options: ServeOptions, log: (line: string) => void) {
  if (options.loaded !== undefined) return { loaded: options.loaded, kernels: null };
  if (options.modelDir === undefined) throw new Error("startServer: give modelDir or loaded");
  const kernels: CreatedKernels = createKernels({
    backend: options.backend ?? "auto",
    ...(options.threads === undefined ? {} : { threads: options.threads }),
  });
  if (kernels.warning) log(kernels.warning);
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
  const scheduler = new BatchScheduler(loaded.model, {
    maxBatch,
    maxQueue: options.maxQueue ?? 256,
    contextLength: loaded.config.max_position_embeddings,
    // Ids past the tokenizer's vocabulary have no text: they are never sampled.
    sampleVocab: loaded.tokenizer.vocabSize,
  });
  const ctx = new ServeContext(
    options.modelName ?? basename(resolvePath(loaded.dir)),
    loaded.tokenizer,
    loaded.config,
    scheduler,
    maxBatch,
    options.seed ?? randomBytes(4).readUInt32LE(0),
  );

  let closing = false;
  const inflight = new Set<Promise<void>>();

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? "GET";
    const path = new URL(req.url ?? "/", "http://localhost").pathname.replace(/\/+$/, "") || "/";
    if (closing) {
      req.resume();
      throw new SchedulerClosedError();
    }
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
    const controller = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) controller.abort();
    });
    if (path === "/health" && allow("GET")) return sendJson(res, 200, { status: "ok", ...scheduler.stats() });
    if (path === "/v1/models" && allow("GET"))
      return sendJson(res, 200, { object: "list", data: [ctx.modelCard()] });
    if (path.startsWith("/v1/models/") && allow("GET")) {
      ctx.checkModel(decodeURIComponent(path.slice("/v1/models/".length)));
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
    const task = route(req, res).catch((error: unknown) => {
      if (error instanceof ClientGone || error instanceof CancelledError) {
        res.destroy();
        return;
      }
      sendError(res, toHttpError(error, log));
    });
    inflight.add(task);
    void task.finally(() => inflight.delete(task));
  });

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
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE")
      throw new UserError(`--port ${options.port}: address ${host}:${options.port} is in use`);
    if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND")
      throw new UserError(`--host ${host}: cannot listen on this address`);
    throw error;
  }
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
        const listening = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        // Requests already being handled finish (they may still be reading their bodies).
        while (inflight.size > 0) await Promise.allSettled([...inflight]);
        await scheduler.close();
        server.closeIdleConnections();
        // Connections still open are idle keep-alive ones a client holds; they carry no request.
        const forced = setTimeout(() => server.closeAllConnections(), 1000);
        await listening;
        clearTimeout(forced);
        disposeKernels();
      })();
      return closed;
    },
  };
}
