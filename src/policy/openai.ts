/**
 * A Policy backed by any OpenAI-compatible chat-completions server (vLLM, llama.cpp server, Ollama,
 * SGLang, ...). Several endpoints can be used at once, so a cluster of inference servers is one policy.
 * Transient trouble (429, 5xx, network errors, timeouts, torn or malformed bodies) is retried with
 * exponential backoff; a request the server rejects as invalid (other 4xx) fails at once, because
 * retrying it can only fail the same way.
 */
import { UserError } from "../util/errors.js";
import { Rng } from "../util/rng.js";
import type { GenerateRequest, Generation, Policy, TokenUsage } from "./types.js";

/** Options of OpenAIPolicy. */
export interface OpenAIPolicyOptions {
  /** Base URLs such as http://127.0.0.1:8000/v1 (the /v1 and a trailing slash are optional). */
  endpoints: string[];
  /** The model name sent with every request. */
  model: string;
  /** Sent as a Bearer token when given. */
  apiKey?: string;
  /** Most HTTP requests in flight at once, over all endpoints. */
  concurrency: number;
  /** Per HTTP request, including reading the body. */
  timeoutMs: number;
  /** Retries after the first attempt of each HTTP request. */
  maxRetries: number;
  /** First backoff delay (default 500 ms); doubles with every retry. */
  backoffBaseMs?: number;
  /** Ceiling of one backoff delay (default 30 s); a longer Retry-After from the server still wins. */
  backoffMaxMs?: number;
  /** Consecutive failures after which an endpoint is skipped for a cool-down (default 2). */
  unhealthyAfterFailures?: number;
  /** How long an unhealthy endpoint is skipped before it is tried again (default 10 s). */
  cooldownMs?: number;
  /** Seed of the backoff jitter. */
  jitterSeed?: number;
  /** Replaces the global fetch (tests). */
  fetchImpl?: typeof fetch;
}

/** Per-endpoint counters, for summaries and logs. */
export interface EndpointStats {
  url: string;
  requests: number;
  failures: number;
  healthy: boolean;
}

/** Counters over the policy's lifetime. */
export interface OpenAIPolicyStats {
  /** HTTP attempts that were retried. */
  retries: number;
  /** Follow-up requests made because a server returned fewer than n choices. */
  topUps: number;
  endpoints: EndpointStats[];
}

/**
 * An HTTP request that failed for good. A 4xx other than 408/429 means the request itself is wrong
 * (bad model name, bad key, bad parameters), so it is a UserError with exit code 2; retries running
 * out on a failing server exit with 1. Either way the CLI prints the message without a stack.
 */
export class OpenAIRequestError extends UserError {
  constructor(
    message: string,
    readonly endpoint: string,
    readonly status: number | null,
    readonly retryable: boolean,
  ) {
    super(message, retryable ? 1 : 2);
    this.name = "OpenAIRequestError";
  }
}

/** Parses a Retry-After header (delta-seconds or an HTTP date) into milliseconds from `nowMs`. */
export function parseRetryAfter(
  value: string | null | undefined,
  nowMs: number = Date.now(),
): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (text === "") return undefined;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  // Only a date has letters (the weekday and month); Date.parse alone would read "-3" as a year.
  if (!/[a-z]/i.test(text)) return undefined;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}

/**
 * Normalises a base URL to ".../v1" without a trailing slash. A URL that already names a version
 * (/v1, /v2) or the full /chat/completions path is kept as the user wrote it.
 */
export function normalizeEndpoint(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw new UserError(`endpoint '${raw}': not a valid URL (expected e.g. http://127.0.0.1:8000/v1)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new UserError(`endpoint '${raw}': only http:// and https:// are supported`);
  let path = url.pathname.replace(/\/+$/, "");
  path = path.replace(/\/chat\/completions$/, "");
  if (!/\/v\d+$/.test(path)) path = `${path}/v1`;
  return `${url.origin}${path}`;
}

const defaultBackoffBaseMs = 500;
const defaultBackoffMaxMs = 30_000;
const defaultUnhealthyAfter = 2;
const defaultCooldownMs = 10_000;

/** A transient failure of one attempt: worth retrying, perhaps on another endpoint. */
class RetryableFailure extends Error {
  constructor(
    message: string,
    readonly status: number | null,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** A FIFO counting semaphore: at most `limit` holders at once. */
class Semaphore {
  private active = 0;
  private readonly waiters: Array<() => void> = [];
  constructor(private readonly limit: number) {}

  /** Waits for a free slot. */
  async acquire(): Promise<void> {
    if (this.active < this.limit) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Frees a slot, handing it straight to the oldest waiter. */
  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.active--;
  }
}

interface EndpointState {
  url: string;
  consecutiveFailures: number;
  /** Skipped until this time (ms since epoch) once unhealthy. */
  coolUntil: number;
  requests: number;
  failures: number;
}

/** The parts of one chat-completions response that the policy uses. */
interface ParsedCompletion {
  generations: Array<{ index: number; generation: Generation }>;
  promptTokens: number;
  completionTokens: number;
}

/** A Policy over OpenAI-compatible HTTP servers. */
export class OpenAIPolicy implements Policy {
  readonly name: string;
  private readonly endpoints: EndpointState[];
  private readonly options: OpenAIPolicyOptions;
  private readonly slots: Semaphore;
  private readonly fetchImpl: typeof fetch;
  private readonly jitter: Rng;
  private cursor = 0;
  private readonly tally: TokenUsage = { promptTokens: 0, completionTokens: 0, requests: 0 };
  private retries = 0;
  private topUps = 0;

  constructor(options: OpenAIPolicyOptions) {
    if (options.endpoints.length === 0) throw new UserError("at least one endpoint is required");
    if (options.model.trim() === "") throw new UserError("a model name is required");
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1)
      throw new UserError(`concurrency: expected an integer >= 1, got ${options.concurrency}`);
    if (!(options.timeoutMs > 0)) throw new UserError(`timeout: expected > 0 ms, got ${options.timeoutMs}`);
    if (!Number.isInteger(options.maxRetries) || options.maxRetries < 0)
      throw new UserError(`retries: expected an integer >= 0, got ${options.maxRetries}`);
    this.options = options;
    this.endpoints = options.endpoints.map((raw) => ({
      url: normalizeEndpoint(raw),
      consecutiveFailures: 0,
      coolUntil: 0,
      requests: 0,
      failures: 0,
    }));
    this.name = `openai:${options.model}`;
    this.slots = new Semaphore(options.concurrency);
    this.fetchImpl = options.fetchImpl ?? fetch;
    this.jitter = new Rng(options.jitterSeed ?? 0x5e1f);
  }

  /** Samples `n` completions per request; requests run concurrently up to the concurrency limit. */
  async generate(requests: GenerateRequest[]): Promise<Generation[][]> {
    // One failure for good stops the rest of the batch instead of letting it retry in the background.
    const batch = new AbortController();
    try {
      return await Promise.all(
        requests.map((request) =>
          this.generateOne(request, batch.signal).catch((err: unknown) => {
            batch.abort(err);
            throw err;
          }),
        ),
      );
    } finally {
      batch.abort();
    }
  }

  /** Token usage tallied from the servers' responses. */
  usage(): TokenUsage {
    return { ...this.tally };
  }

  /** Retry, top-up and per-endpoint counters. */
  stats(): OpenAIPolicyStats {
    const now = Date.now();
    return {
      retries: this.retries,
      topUps: this.topUps,
      endpoints: this.endpoints.map((e) => ({
        url: e.url,
        requests: e.requests,
        failures: e.failures,
        healthy: e.coolUntil <= now,
      })),
    };
  }

  private async generateOne(request: GenerateRequest, batchSignal: AbortSignal): Promise<Generation[]> {
    const wanted = request.n ?? 1;
    if (!Number.isInteger(wanted) || wanted < 1)
      throw new UserError(`n: expected an integer >= 1, got ${wanted}`);
    const out: Generation[] = [];
    while (out.length < wanted) {
      // Servers without n > 1 (llama.cpp, some proxies) answer with one choice: ask again for the rest,
      // shifting the seed so a seeded server does not repeat the same sample.
      const missing = wanted - out.length;
      const seed = request.seed === undefined ? undefined : request.seed + out.length;
      if (out.length > 0) this.topUps++;
      const got = await this.completeWithRetries(this.bodyFor(request, missing, seed), batchSignal);
      for (const g of got.slice(0, missing)) out.push(g);
    }
    return out;
  }

  private bodyFor(request: GenerateRequest, n: number, seed: number | undefined): Record<string, unknown> {
    const body: Record<string, unknown> = {
      model: this.options.model,
      messages: request.messages,
      temperature: request.temperature,
      top_p: request.topP,
      max_tokens: request.maxTokens,
      n,
    };
    if (seed !== undefined) body.seed = seed;
    if (request.stop !== undefined && request.stop.length > 0) body.stop = request.stop;
    return body;
  }

  private async completeWithRetries(
    body: Record<string, unknown>,
    batchSignal: AbortSignal,
  ): Promise<Generation[]> {
    const base = this.options.backoffBaseMs ?? defaultBackoffBaseMs;
    const ceiling = this.options.backoffMaxMs ?? defaultBackoffMaxMs;
    let last: { endpoint: string; failure: RetryableFailure } | null = null;
    for (let attempt = 0; attempt <= this.options.maxRetries; attempt++) {
      if (batchSignal.aborted) throw abortReason(batchSignal);
      if (attempt > 0 && last !== null) {
        this.retries++;
        // Equal jitter: half the exponential delay is fixed, half random, so retries spread out.
        const exp = Math.min(ceiling, base * 2 ** (attempt - 1));
        const delay = Math.max(last.failure.retryAfterMs ?? 0, exp / 2 + (exp / 2) * this.jitter.next());
        await sleep(delay, batchSignal);
      }
      await this.slots.acquire();
      // Chosen only once a slot is free, so health learned while waiting is taken into account.
      const endpoint = this.pickEndpoint();
      try {
        if (batchSignal.aborted) throw abortReason(batchSignal);
        const parsed = await this.attempt(endpoint, body, batchSignal);
        endpoint.consecutiveFailures = 0;
        endpoint.coolUntil = 0;
        this.tally.promptTokens += parsed.promptTokens;
        this.tally.completionTokens += parsed.completionTokens;
        this.tally.requests++;
        return parsed.generations.sort((a, b) => a.index - b.index).map((c) => c.generation);
      } catch (err) {
        if (!(err instanceof RetryableFailure)) throw err;
        this.markFailure(endpoint, err);
        last = { endpoint: endpoint.url, failure: err };
      } finally {
        this.slots.release();
      }
    }
    const failure = last as { endpoint: string; failure: RetryableFailure };
    const status = failure.failure.status === null ? "no HTTP status" : `HTTP ${failure.failure.status}`;
    throw new OpenAIRequestError(
      `${failure.endpoint}/chat/completions: giving up after ${this.options.maxRetries + 1} attempts; ` +
        `last: ${status}: ${failure.failure.message}`,
      failure.endpoint,
      failure.failure.status,
      true,
    );
  }

  /** Round-robin over healthy endpoints; when none is healthy, the one that recovers first. */
  private pickEndpoint(): EndpointState {
    const now = Date.now();
    const count = this.endpoints.length;
    for (let i = 0; i < count; i++) {
      const candidate = this.endpoints[(this.cursor + i) % count];
      if (candidate.coolUntil <= now) {
        this.cursor = (this.cursor + i + 1) % count;
        return candidate;
      }
    }
    let soonest = this.endpoints[0];
    for (const e of this.endpoints) if (e.coolUntil < soonest.coolUntil) soonest = e;
    return soonest;
  }

  private markFailure(endpoint: EndpointState, failure: RetryableFailure): void {
    endpoint.failures++;
    endpoint.consecutiveFailures++;
    const threshold = this.options.unhealthyAfterFailures ?? defaultUnhealthyAfter;
    const cooldown = this.options.cooldownMs ?? defaultCooldownMs;
    // A server that asks to be left alone is skipped for as long as it asked, even before the threshold.
    const askedFor = failure.retryAfterMs ?? 0;
    const until = Math.max(
      endpoint.consecutiveFailures >= threshold ? Date.now() + cooldown : 0,
      askedFor > 0 ? Date.now() + askedFor : 0,
    );
    endpoint.coolUntil = Math.max(endpoint.coolUntil, until);
  }

  /** One HTTP attempt: a parsed response, a RetryableFailure, or an OpenAIRequestError for good. */
  private async attempt(
    endpoint: EndpointState,
    body: Record<string, unknown>,
    batchSignal: AbortSignal,
  ): Promise<ParsedCompletion> {
    endpoint.requests++;
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), this.options.timeoutMs);
    const signal = AbortSignal.any([timeout.signal, batchSignal]);
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (this.options.apiKey) headers.authorization = `Bearer ${this.options.apiKey}`;
    try {
      let response: Response;
      let text: string;
      try {
        response = await this.fetchImpl(`${endpoint.url}/chat/completions`, {
          method: "POST",
          headers,
          body: JSON.stringify(body),
          signal,
        });
        text = await response.text();
      } catch (err) {
        if (batchSignal.aborted) throw abortReason(batchSignal);
        if (timeout.signal.aborted)
          throw new RetryableFailure(`timed out after ${this.options.timeoutMs} ms`, null);
        throw new RetryableFailure(`network error: ${describeNetworkError(err)}`, null);
      }
      if (!response.ok) {
        const message = serverErrorMessage(text, response.statusText);
        if (response.status === 429 || response.status === 408 || response.status >= 500) {
          const retryAfterMs =
            response.status === 429 || response.status === 503
              ? parseRetryAfter(response.headers.get("retry-after"))
              : undefined;
          throw new RetryableFailure(message, response.status, retryAfterMs);
        }
        throw new OpenAIRequestError(
          `${endpoint.url}/chat/completions: HTTP ${response.status}: ${message}`,
          endpoint.url,
          response.status,
          false,
        );
      }
      return parseCompletion(text, response.status);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Parses a 200 response body; anything unusable is a RetryableFailure (a torn or garbled body). */
function parseCompletion(text: string, status: number): ParsedCompletion {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new RetryableFailure(
      `malformed JSON response body (${text.length} bytes): ${snippet(text)}`,
      status,
    );
  }
  if (!isObject(json) || !Array.isArray(json.choices) || json.choices.length === 0)
    throw new RetryableFailure(`response has no choices: ${snippet(text)}`, status);
  const generations: ParsedCompletion["generations"] = [];
  json.choices.forEach((choice: unknown, position: number) => {
    if (!isObject(choice) || !isObject(choice.message))
      throw new RetryableFailure(`choices[${position}] has no message: ${snippet(text)}`, status);
    const content = choice.message.content;
    if (content !== null && content !== undefined && typeof content !== "string")
      throw new RetryableFailure(`choices[${position}].message.content is not a string`, status);
    generations.push({
      index: typeof choice.index === "number" ? choice.index : position,
      generation: {
        text: typeof content === "string" ? content : "",
        finishReason: choice.finish_reason === "length" ? "length" : "stop",
      },
    });
  });
  const usage = isObject(json.usage) ? json.usage : {};
  return {
    generations,
    promptTokens: typeof usage.prompt_tokens === "number" ? usage.prompt_tokens : 0,
    completionTokens: typeof usage.completion_tokens === "number" ? usage.completion_tokens : 0,
  };
}

/** The server's own words: OpenAI-style {"error": {"message"}} or {"error": "..."}, else the raw body. */
function serverErrorMessage(text: string, statusText: string): string {
  try {
    const json: unknown = JSON.parse(text);
    if (isObject(json)) {
      if (isObject(json.error) && typeof json.error.message === "string") return json.error.message;
      if (typeof json.error === "string") return json.error;
      if (typeof json.message === "string") return json.message;
      if (typeof json.detail === "string") return json.detail;
    }
  } catch {
    // Not JSON: fall through to the raw text.
  }
  const raw = snippet(text);
  return raw === "" ? statusText || "(empty body)" : raw;
}

function describeNetworkError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as Error & { cause?: unknown }).cause;
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    return `${err.message} (${code ? `${code}: ` : ""}${cause.message})`;
  }
  return err.message;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function snippet(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > 200 ? `${flat.slice(0, 200)}...` : flat;
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error("request cancelled");
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(abortReason(signal));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortReason(signal));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
