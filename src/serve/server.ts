/**
 * `selfsteer serve`: an OpenAI-compatible HTTP server (node:http) over a local checkpoint.
 *   GET  /v1/models, /v1/models/{id}, /health
 *   POST /v1/chat/completions   messages, n, temperature, top_p, top_k, max_tokens /
 *                               max_completion_tokens, stop, seed, logprobs + top_logprobs, stream,
 *                               and vLLM's ignore_eos
 *   POST /v1/completions        prompt (text or token ids, one or several), echo, logprobs, the same
 *                               sampling fields; echo + logprobs + max_tokens 0 scores a given text
 * Every request runs through one BatchScheduler, so concurrent requests share decode steps. Samples
 * of a request with seed s use seeds s, s+1, ... (n > 1), each drawn from its own Rng, so the same
 * seed gives the same text whatever else is being served. close() stops taking requests, lets the
 * running ones finish and then resolves.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { basename, resolve as resolvePath } from "node:path";
import { encodeChat } from "../engine/chat.js";
import { type CreatedKernels, createKernels } from "../engine/kernels/index.js";
import { type LoadedModelDir, loadModelDir } from "../engine/load.js";
import type { SamplingSettings } from "../engine/sampler.js";
import { UserError } from "../util/errors.js";
import { Rng } from "../util/rng.js";
import {
  type ChatCompletionRequest,
  ChatCompletionRequestSchema,
  type CompletionRequest,
  CompletionRequestSchema,
  HttpError,
  invalidRequest,
  parseBody,
  stopList,
} from "./protocol.js";
import {
  BatchScheduler,
  CancelledError,
  type FinishReason,
  QueueFullError,
  type SampledToken,
  SchedulerClosedError,
  type SchedulerStats,
  type ScoreResult,
  type TokenLogprob,
} from "./scheduler.js";
import { IncrementalText, tokenBytesOrEmpty, tokenText } from "./text.js";

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
  /** Scheduler counters (running, waiting, decode steps, tokens). */
  stats(): SchedulerStats;
  /** Stops taking requests, finishes the in-flight ones, closes connections, frees the kernels. */
  close(): Promise<void>;
}

/** OpenAI's usage block. */
interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** One finished sample. */
interface ChoiceOutput {
  text: string;
  /** Tokens reported to the client (a stop token is counted but not reported). */
  tokens: SampledToken[];
  /** Offset of each reported token's text within `text` (clamped to its length). */
  offsets: number[];
  finishReason: FinishReason;
  /** Tokens sampled, the stop token included. */
  completionTokens: number;
}

/** Streaming callbacks of a generation: text as it becomes safe to show, with its tokens. */
interface StreamHooks {
  onDelta(sample: number, text: string, tokens: SampledToken[], offsets: number[]): void;
  onFinish(
    sample: number,
    text: string,
    tokens: SampledToken[],
    offsets: number[],
    reason: FinishReason,
  ): void;
}

/** One prompt's generation as the handlers describe it. */
interface GenerationSpec {
  prompt: number[];
  maxTokens: number;
  settings: SamplingSettings;
  topLogprobs: number;
  stops: string[];
  seeds: number[];
  /** Keep sampling past end-of-turn tokens (vLLM's ignore_eos; benchmarks use it for fixed lengths). */
  ignoreEos: boolean;
}

const DEFAULT_MAX_BODY = 4 * 1024 * 1024;

class ClientGone extends Error {}

function usageOf(promptTokens: number, completionTokens: number): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  };
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(text)),
    ...headers,
  });
  res.end(text);
}

function sendError(res: ServerResponse, error: HttpError): void {
  if (res.headersSent) {
    // Mid-stream: an error event, as vLLM sends, then the end of the stream.
    writeEvent(res, error.body());
    if (!res.writableEnded) res.end();
    return;
  }
  sendJson(res, error.status, error.body(), error.headers);
}

function writeEvent(res: ServerResponse, data: unknown): void {
  if (res.destroyed || res.writableEnded) return;
  res.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
}

function startEventStream(res: ServerResponse): void {
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    connection: "keep-alive",
  });
  res.flushHeaders();
}

/** Reads a JSON body of at most `limit` bytes; 413 beyond it, 400 when it is not JSON. */
function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const tooLarge = () =>
    new HttpError(
      413,
      `request body exceeds ${limit} bytes`,
      "invalid_request_error",
      null,
      "request_too_large",
      { connection: "close" },
    );
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > limit) {
      req.resume();
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on("data", (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        chunks.length = 0;
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on("error", (err) => {
      if (!failed) reject(new ClientGone(err.message));
      failed = true;
    });
    req.on("end", () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString("utf8");
      if (text.trim() === "") {
        reject(invalidRequest("the request body is empty; expected a JSON object", null, "invalid_json"));
        return;
      }
      try {
        resolve(JSON.parse(text));
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        reject(invalidRequest(`the request body is not valid JSON: ${reason}`, null, "invalid_json"));
      }
    });
  });
}

function requestId(prefix: string): string {
  return `${prefix}-${randomBytes(12).toString("hex")}`;
}

/** Sampling settings of a request: OpenAI defaults, top_p 0 as greedy, top_k -1 or 0 as off. */
function samplingSettings(body: ChatCompletionRequest | CompletionRequest): SamplingSettings {
  const topP = body.top_p ?? 1;
  const topK = body.top_k === undefined || body.top_k === null || body.top_k < 0 ? 0 : body.top_k;
  return {
    temperature: body.temperature ?? 1,
    // The limit of nucleus sampling as p -> 0 keeps only the most likely token.
    topP: topP === 0 ? 1 : topP,
    topK: topP === 0 ? 1 : topK,
  };
}

/** Starts the server; resolves once it listens. */
export async function startServer(options: ServeOptions): Promise<ServerHandle> {
  const log = options.log ?? (() => {});
  let ownedKernels: CreatedKernels | null = null;
  let loaded: LoadedModelDir;
  if (options.loaded !== undefined) loaded = options.loaded;
  else if (options.modelDir !== undefined) {
    ownedKernels = createKernels({
      backend: options.backend ?? "auto",
      ...(options.threads === undefined ? {} : { threads: options.threads }),
    });
    if (ownedKernels.warning) log(ownedKernels.warning);
    try {
      loaded = loadModelDir(options.modelDir, { kernels: ownedKernels });
    } catch (error) {
      ownedKernels.dispose();
      throw error;
    }
  } else throw new Error("startServer: give modelDir or loaded");
  const { model, tokenizer, config } = loaded;
  const disposeKernels = () => {
    ownedKernels?.dispose();
    ownedKernels = null;
  };
  if (!model.hasLmHead) {
    disposeKernels();
    throw new UserError(`${loaded.dir}: is a reward model (score head, no lm_head); it cannot generate text`);
  }
  const modelName = options.modelName ?? basename(resolvePath(loaded.dir));
  const maxBatch = options.maxBatch ?? 32;
  const maxQueue = options.maxQueue ?? 256;
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const contextLength = config.max_position_embeddings;
  const vocabSize = config.vocab_size;
  const created = Math.floor(Date.now() / 1000);
  const seedStream = new Rng(options.seed ?? randomBytes(4).readUInt32LE(0));
  const chatReady = tokenizer.hasSpecial("<|im_start|>") && tokenizer.hasSpecial("<|im_end|>");
  const stopIds = new Set<number>();
  for (const special of ["<|im_end|>", "<|endoftext|>"])
    if (tokenizer.hasSpecial(special)) stopIds.add(tokenizer.specialId(special));
  const eos = config.eos_token_id;
  for (const id of eos === null || eos === undefined ? [] : Array.isArray(eos) ? eos : [eos])
    if (id >= 0 && id < vocabSize) stopIds.add(id);

  const scheduler = new BatchScheduler(model, {
    maxBatch,
    maxQueue,
    contextLength,
    sampleVocab: tokenizer.vocabSize,
  });

  const modelCard = () => ({ id: modelName, object: "model", created, owned_by: "selfsteer" });

  function checkModel(name: string): void {
    if (name !== modelName)
      throw new HttpError(
        404,
        `The model '${name}' does not exist; this server serves '${modelName}'`,
        "invalid_request_error",
        "model",
        "model_not_found",
      );
  }

  function checkSamples(n: number): void {
    if (n > maxBatch)
      throw invalidRequest(`n: at most ${maxBatch} samples per request on this server (--max-batch)`, "n");
  }

  function checkContext(
    promptTokens: number,
    maxTokens: number,
    promptParam: string,
    maxParam: string,
  ): void {
    if (promptTokens + maxTokens <= contextLength) return;
    const tooLongPrompt = promptTokens >= contextLength;
    throw invalidRequest(
      `This model's maximum context length is ${contextLength} tokens. However, you requested ` +
        `${promptTokens + maxTokens} tokens (${promptTokens} in the ${promptParam}, ${maxTokens} in the completion). ` +
        `Please reduce the length of the ${tooLongPrompt ? promptParam : maxParam}.`,
      tooLongPrompt ? promptParam : maxParam,
      "context_length_exceeded",
    );
  }

  function seedsFor(seed: number | null | undefined, count: number, first: number): number[] {
    const base = seed ?? seedStream.int(2 ** 31);
    return Array.from({ length: count }, (_, k) => base + first + k);
  }

  /**
   * Queues one prompt's samples (throwing at once when the queue is full) and returns a promise of
   * their outputs, rejected on engine failure or when `signal` aborts (the client went away).
   */
  function generate(spec: GenerationSpec, signal: AbortSignal, hooks?: StreamHooks): Promise<ChoiceOutput[]> {
    let resolveAll: (outputs: ChoiceOutput[]) => void = () => {};
    let rejectAll: (error: Error) => void = () => {};
    const done = new Promise<ChoiceOutput[]>((resolve, reject) => {
      resolveAll = resolve;
      rejectAll = reject;
    });
    const outputs: ChoiceOutput[] = spec.seeds.map(() => ({
      text: "",
      tokens: [],
      offsets: [],
      finishReason: "length",
      completionTokens: 0,
    }));
    // Tokens not yet handed to a stream chunk, with their offsets.
    const pending = spec.seeds.map(() => ({ tokens: [] as SampledToken[], offsets: [] as number[] }));
    let open = spec.seeds.length;
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      fn();
    };
    const jobStopIds = spec.ignoreEos ? new Set<number>() : stopIds;
    const samples = spec.seeds.map((seed, k) => {
      const text = new IncrementalText(tokenizer, spec.stops);
      const out = outputs[k];
      return {
        seed,
        onToken(token: SampledToken): boolean {
          out.completionTokens++;
          if (jobStopIds.has(token.id)) return false;
          if (text.stopped) return true;
          const offset = text.length;
          out.tokens.push(token);
          out.offsets.push(offset);
          pending[k].tokens.push(token);
          pending[k].offsets.push(offset);
          const delta = text.push(token.id);
          if (hooks && delta !== "") {
            hooks.onDelta(k, delta, pending[k].tokens, pending[k].offsets);
            pending[k] = { tokens: [], offsets: [] };
          }
          return text.stopped;
        },
        onFinish(reason: FinishReason): void {
          const rest = text.finish();
          out.text = text.shown;
          out.finishReason = reason;
          out.offsets = out.offsets.map((o) => Math.min(o, out.text.length));
          if (!settled) hooks?.onFinish(k, rest, pending[k].tokens, pending[k].offsets, reason);
          open--;
          if (open === 0) settle(() => resolveAll(outputs));
        },
      };
    });
    const handle = scheduler.submit({
      prompt: spec.prompt,
      maxTokens: spec.maxTokens,
      settings: spec.settings,
      stopIds: jobStopIds,
      topLogprobs: spec.topLogprobs,
      samples,
      onError: (error) => settle(() => rejectAll(error)),
    });
    const onAbort = () => {
      handle.cancel();
      settle(() => rejectAll(new ClientGone("client disconnected")));
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    return done;
  }

  // ---------------------------------------------------------------------------------------------
  // Chat completions

  function chatLogprobEntry(t: TokenLogprob) {
    return {
      token: tokenText(tokenizer, t.id),
      logprob: t.logprob,
      bytes: Array.from(tokenBytesOrEmpty(tokenizer, t.id)),
    };
  }

  function chatLogprobs(tokens: SampledToken[]) {
    return {
      content: tokens.map((t) => ({ ...chatLogprobEntry(t), top_logprobs: t.top.map(chatLogprobEntry) })),
      refusal: null,
    };
  }

  async function chatCompletions(raw: unknown, res: ServerResponse, signal: AbortSignal): Promise<void> {
    const body = parseBody(ChatCompletionRequestSchema, raw);
    checkModel(body.model);
    const n = body.n ?? 1;
    checkSamples(n);
    if (!chatReady)
      throw invalidRequest(
        "this model's tokenizer has no <|im_start|>/<|im_end|> tokens, so it has no chat format; use /v1/completions",
        "messages",
      );
    const wantLogprobs = body.logprobs === true;
    if ((body.top_logprobs ?? 0) > 0 && !wantLogprobs)
      throw invalidRequest("top_logprobs: logprobs must be true when top_logprobs is used", "top_logprobs");
    const turns = body.messages.map((m) => ({
      role: m.role === "developer" ? ("system" as const) : m.role,
      content:
        m.content === null || m.content === undefined
          ? ""
          : typeof m.content === "string"
            ? m.content
            : m.content.map((part) => part.text).join(""),
    }));
    const prompt = encodeChat(tokenizer, turns, { addGenerationPrompt: true }).ids;
    const maxParam =
      body.max_completion_tokens !== null && body.max_completion_tokens !== undefined
        ? "max_completion_tokens"
        : "max_tokens";
    const maxTokens =
      body.max_completion_tokens ?? body.max_tokens ?? Math.max(1, contextLength - prompt.length);
    checkContext(prompt.length, maxTokens, "messages", maxParam);
    const spec: GenerationSpec = {
      prompt,
      maxTokens,
      settings: samplingSettings(body),
      topLogprobs: wantLogprobs ? (body.top_logprobs ?? 0) : 0,
      stops: stopList(body.stop),
      seeds: seedsFor(body.seed, n, 0),
      ignoreEos: body.ignore_eos === true,
    };
    const id = requestId("chatcmpl");
    const createdAt = Math.floor(Date.now() / 1000);
    if (body.stream === true) {
      const includeUsage = body.stream_options?.include_usage === true;
      const chunk = (choices: unknown[]) => ({
        id,
        object: "chat.completion.chunk",
        created: createdAt,
        model: modelName,
        system_fingerprint: null,
        choices,
        ...(includeUsage ? { usage: null } : {}),
      });
      let started = false;
      const start = () => {
        if (started) return;
        started = true;
        startEventStream(res);
        for (let k = 0; k < n; k++)
          writeEvent(
            res,
            chunk([
              { index: k, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
            ]),
          );
      };
      const hooks: StreamHooks = {
        onDelta(k, text, tokens) {
          writeEvent(
            res,
            chunk([
              {
                index: k,
                delta: { content: text },
                logprobs: wantLogprobs ? chatLogprobs(tokens) : null,
                finish_reason: null,
              },
            ]),
          );
        },
        onFinish(k, text, tokens, _offsets, reason) {
          writeEvent(
            res,
            chunk([
              {
                index: k,
                delta: text === "" ? {} : { content: text },
                logprobs: wantLogprobs && tokens.length > 0 ? chatLogprobs(tokens) : null,
                finish_reason: reason,
              },
            ]),
          );
        },
      };
      // Queue-full and validation errors still get their status: the stream starts once the job is queued.
      const done = generate(spec, signal, hooks);
      start();
      const outputs = await done;
      if (includeUsage) {
        const completion = outputs.reduce((s, o) => s + o.completionTokens, 0);
        writeEvent(res, { ...chunk([]), usage: usageOf(prompt.length, completion) });
      }
      writeEvent(res, "[DONE]");
      res.end();
      return;
    }
    const outputs = await generate(spec, signal);
    const completion = outputs.reduce((s, o) => s + o.completionTokens, 0);
    sendJson(res, 200, {
      id,
      object: "chat.completion",
      created: createdAt,
      model: modelName,
      system_fingerprint: null,
      choices: outputs.map((o, k) => ({
        index: k,
        message: { role: "assistant", content: o.text, refusal: null },
        logprobs: wantLogprobs ? chatLogprobs(o.tokens) : null,
        finish_reason: o.finishReason,
      })),
      usage: usageOf(prompt.length, completion),
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Completions

  interface PromptInput {
    ids: number[];
    text: string;
    param: string;
  }

  function completionPrompts(prompt: CompletionRequest["prompt"]): PromptInput[] {
    const list: (string | number[])[] =
      typeof prompt === "string"
        ? [prompt]
        : prompt.length > 0 && typeof prompt[0] === "number"
          ? [prompt as number[]]
          : (prompt as (string | number[])[]);
    const single = list.length === 1 && !(Array.isArray(prompt) && Array.isArray(prompt[0]));
    return list.map((p, i) => {
      const param = single && typeof prompt === "string" ? "prompt" : `prompt[${i}]`;
      if (typeof p === "string") {
        const ids = tokenizer.encode(p);
        if (ids.length === 0)
          throw invalidRequest(`${param}: is empty; a prompt needs at least one token`, param);
        return { ids, text: p, param };
      }
      p.forEach((id, t) => {
        if (id >= vocabSize) {
          const where = Array.isArray(prompt[0]) ? `prompt[${i}][${t}]` : `prompt[${t}]`;
          throw invalidRequest(`${where}: token id ${id} is outside the vocabulary [0, ${vocabSize})`, where);
        }
      });
      if (p.length === 0)
        throw invalidRequest(`${param}: is empty; a prompt needs at least one token`, param);
      return { ids: p, text: tokenizer.decode(p), param };
    });
  }

  /** The legacy logprobs block of a completion choice (text offsets relative to the choice's text). */
  function completionLogprobs(
    promptPart: { ids: number[]; scored: ScoreResult; offsets: number[] } | null,
    tokens: SampledToken[],
    offsets: number[],
    shift: number,
  ) {
    const block = {
      tokens: [] as string[],
      token_logprobs: [] as (number | null)[],
      top_logprobs: [] as (Record<string, number> | null)[],
      text_offset: [] as number[],
    };
    const topDict = (top: TokenLogprob[]) => {
      const dict: Record<string, number> = {};
      for (const t of top) {
        const key = tokenText(tokenizer, t.id);
        if (!(key in dict)) dict[key] = t.logprob;
      }
      return dict;
    };
    if (promptPart !== null) {
      promptPart.ids.forEach((id, t) => {
        block.tokens.push(tokenText(tokenizer, id));
        block.token_logprobs.push(t === 0 ? null : promptPart.scored.logprobs[t]);
        block.top_logprobs.push(t === 0 ? null : topDict(promptPart.scored.top[t]));
        block.text_offset.push(promptPart.offsets[t]);
      });
    }
    tokens.forEach((token, i) => {
      block.tokens.push(tokenText(tokenizer, token.id));
      block.token_logprobs.push(token.logprob);
      block.top_logprobs.push(topDict(token.top));
      block.text_offset.push(shift + offsets[i]);
    });
    return block;
  }

  /** Character offset of each token within the decoded text of `ids`. */
  function textOffsets(ids: number[]): number[] {
    const decoder = new TextDecoder("utf-8");
    const offsets: number[] = [];
    let length = 0;
    for (const id of ids) {
      offsets.push(length);
      length += decoder.decode(tokenBytesOrEmpty(tokenizer, id), { stream: true }).length;
    }
    return offsets;
  }

  async function completions(raw: unknown, res: ServerResponse, signal: AbortSignal): Promise<void> {
    const body = parseBody(CompletionRequestSchema, raw);
    checkModel(body.model);
    const n = body.n ?? 1;
    checkSamples(n);
    if (body.best_of !== null && body.best_of !== undefined && body.best_of !== n)
      throw invalidRequest("best_of: only best_of equal to n is supported by this server", "best_of");
    const prompts = completionPrompts(body.prompt);
    const maxTokens = body.max_tokens ?? 16;
    for (const p of prompts) checkContext(p.ids.length, maxTokens, p.param, "max_tokens");
    const echo = body.echo === true;
    const topK = body.logprobs ?? null;
    const settings = samplingSettings(body);
    const stops = stopList(body.stop);
    const id = requestId("cmpl");
    const createdAt = Math.floor(Date.now() / 1000);
    const promptTokens = prompts.reduce((s, p) => s + p.ids.length, 0);
    const controller = new AbortController();
    const abortAll = () => controller.abort();
    signal.addEventListener("abort", abortAll, { once: true });

    // Echoed prompts with log-probs are scored first, so a stream can open with them.
    const scoredPrompts = await Promise.all(
      prompts.map(async (p) =>
        echo && topK !== null
          ? {
              ids: p.ids,
              scored: await scheduler.score(p.ids, topK, controller.signal),
              offsets: textOffsets(p.ids),
            }
          : null,
      ),
    );

    const specFor = (p: PromptInput, i: number): GenerationSpec => ({
      prompt: p.ids,
      maxTokens,
      settings,
      topLogprobs: topK ?? 0,
      stops,
      seeds: seedsFor(body.seed, n, i * n),
      ignoreEos: body.ignore_eos === true,
    });
    // Every prompt's samples are queued before anything is sent, so a full queue is still a clean 429.
    const submitAll = (
      run: (p: PromptInput, i: number) => Promise<ChoiceOutput[]>,
    ): Promise<ChoiceOutput[]>[] => {
      if (maxTokens === 0)
        return prompts.map(() =>
          Promise.resolve(
            Array.from(
              { length: n },
              (): ChoiceOutput => ({
                text: "",
                tokens: [],
                offsets: [],
                finishReason: "length",
                completionTokens: 0,
              }),
            ),
          ),
        );
      const runs: Promise<ChoiceOutput[]>[] = [];
      try {
        prompts.forEach((p, i) => {
          const started = run(p, i);
          started.catch(() => {});
          runs.push(started);
        });
      } catch (error) {
        abortAll();
        throw error;
      }
      return runs;
    };
    const choiceBase = (i: number, k: number) => ({ index: i * n + k, prefix: echo ? prompts[i].text : "" });
    if (body.stream === true) {
      const includeUsage = body.stream_options?.include_usage === true;
      const chunk = (choices: unknown[]) => ({
        id,
        object: "text_completion",
        created: createdAt,
        model: modelName,
        system_fingerprint: null,
        choices,
        ...(includeUsage ? { usage: null } : {}),
      });
      const hooksFor = (i: number): StreamHooks => {
        const shift = echo ? prompts[i].text.length : 0;
        return {
          onDelta(k, text, tokens, offsets) {
            writeEvent(
              res,
              chunk([
                {
                  index: i * n + k,
                  text,
                  logprobs: topK === null ? null : completionLogprobs(null, tokens, offsets, shift),
                  finish_reason: null,
                },
              ]),
            );
          },
          onFinish(k, text, tokens, offsets, reason) {
            writeEvent(
              res,
              chunk([
                {
                  index: i * n + k,
                  text,
                  logprobs:
                    topK === null || tokens.length === 0
                      ? null
                      : completionLogprobs(null, tokens, offsets, shift),
                  finish_reason: reason,
                },
              ]),
            );
          },
        };
      };
      const runs = submitAll((p, i) => generate(specFor(p, i), controller.signal, hooksFor(i)));
      const all = Promise.all(runs);
      all.catch(abortAll);
      startEventStream(res);
      if (echo)
        prompts.forEach((p, i) => {
          for (let k = 0; k < n; k++) {
            const scored = scoredPrompts[i];
            writeEvent(
              res,
              chunk([
                {
                  index: i * n + k,
                  text: p.text,
                  logprobs: topK === null || scored === null ? null : completionLogprobs(scored, [], [], 0),
                  finish_reason: maxTokens === 0 ? "length" : null,
                },
              ]),
            );
          }
        });
      const outputs = (await all).flat();
      if (includeUsage) {
        const completion = outputs.reduce((s, o) => s + o.completionTokens, 0);
        writeEvent(res, { ...chunk([]), usage: usageOf(promptTokens, completion) });
      }
      writeEvent(res, "[DONE]");
      res.end();
      return;
    }

    const runs = submitAll((p, i) => generate(specFor(p, i), controller.signal));
    const all = Promise.all(runs);
    all.catch(abortAll);
    const results = await all;
    let completion = 0;
    const choices = results.flatMap((outputs, i) =>
      outputs.map((o, k) => {
        completion += o.completionTokens;
        const { index, prefix } = choiceBase(i, k);
        return {
          index,
          text: prefix + o.text,
          logprobs:
            topK === null ? null : completionLogprobs(scoredPrompts[i], o.tokens, o.offsets, prefix.length),
          finish_reason: o.finishReason,
        };
      }),
    );
    sendJson(res, 200, {
      id,
      object: "text_completion",
      created: createdAt,
      model: modelName,
      system_fingerprint: null,
      choices,
      usage: usageOf(promptTokens, completion),
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Routing

  let closing = false;
  const inflight = new Set<Promise<void>>();

  function toHttpError(error: unknown): HttpError {
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
    const controller = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) controller.abort();
    });
    if (path === "/health" && allow("GET")) {
      sendJson(res, 200, { status: "ok", ...scheduler.stats() });
      return;
    }
    if (path === "/v1/models" && allow("GET")) {
      sendJson(res, 200, { object: "list", data: [modelCard()] });
      return;
    }
    if (path.startsWith("/v1/models/") && allow("GET")) {
      checkModel(decodeURIComponent(path.slice("/v1/models/".length)));
      sendJson(res, 200, modelCard());
      return;
    }
    if (path === "/v1/chat/completions" && allow("POST")) {
      await chatCompletions(await readJsonBody(req, maxBody), res, controller.signal);
      return;
    }
    if (path === "/v1/completions" && allow("POST")) {
      await completions(await readJsonBody(req, maxBody), res, controller.signal);
      return;
    }
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
      sendError(res, toHttpError(error));
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
    modelName,
    stats: () => scheduler.stats(),
    close(): Promise<void> {
      if (closed !== null) return closed;
      closing = true;
      closed = (async () => {
        const listening = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
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
