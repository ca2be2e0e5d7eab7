/**
 * A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions wire format, for tests and
 * benchmarks. Its answers are deterministic functions of the request, so different system prompts and
 * seeds give different texts, and it can be told to misbehave the ways real inference servers do:
 * 5xx, 429 with Retry-After, slow answers, torn bodies, reset connections, malformed JSON, 4xx errors,
 * fewer choices than asked. It closes itself after `lifetimeMs` so a forgotten server cannot hang a run.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { hashString } from "../../src/util/rng.js";

/** What the server does with one request. */
export type FailureMode =
  /** Answer normally. */
  | { kind: "ok" }
  /** Answer with this status and an OpenAI-style error body; Retry-After is sent when given. */
  | { kind: "status"; status: number; message?: string; retryAfter?: string }
  /** Answer normally, but only after `delayMs` (longer than the client's timeout, typically). */
  | { kind: "slow"; delayMs: number }
  /** Send the headers with the full Content-Length, half the body, then drop the connection. */
  | { kind: "truncate" }
  /** Drop the connection before answering anything. */
  | { kind: "reset" }
  /** Answer 200 with a body that is not JSON. */
  | { kind: "malformed" }
  /** Answer normally but with at most `count` choices, like servers that ignore n. */
  | { kind: "fewerChoices"; count: number };

/** Failure modes consumed one per request (then normal answers), or a function choosing per request. */
export type FailurePlan = FailureMode[] | ((request: RecordedRequest) => FailureMode | undefined);

/** Options of startFakeOpenAIServer. */
export interface FakeOpenAIServerOptions {
  /** Delay before every normal answer, modelling a real server's latency (default 0). */
  latencyMs?: number;
  /** The server closes itself after this long (default 120 s). */
  lifetimeMs?: number;
  /** Initial failure plan (default: always answer normally). */
  failurePlan?: FailurePlan;
  /** Most choices per response whatever n asks for (default: no cap). */
  maxChoices?: number;
  /** When set, requests must carry `Authorization: Bearer <apiKey>` or get a 401. */
  apiKey?: string;
}

/** The chat-completions request body fields the server reads. */
export interface ChatRequestBody {
  model?: string;
  messages?: Array<{ role: string; content: string }>;
  temperature?: number;
  top_p?: number;
  max_tokens?: number;
  n?: number;
  seed?: number;
  stop?: string[] | string;
}

/** One request as the server saw it. */
export interface RecordedRequest {
  /** 0-based arrival order. */
  index: number;
  method: string;
  path: string;
  authorization: string | undefined;
  body: ChatRequestBody | null;
  /** The failure mode applied ("ok" for a normal answer). */
  mode: FailureMode["kind"];
}

/** A running fake server. */
export interface FakeOpenAIServer {
  /** Base URL including /v1, e.g. http://127.0.0.1:45678/v1. */
  readonly url: string;
  /** Every request received, in arrival order. */
  readonly requests: RecordedRequest[];
  /** Chat-completions requests in progress now. */
  readonly inFlight: number;
  /** The most chat-completions requests ever in progress at once. */
  readonly maxInFlight: number;
  /** Replaces the failure plan; an array restarts from its first entry. */
  setFailurePlan(plan: FailurePlan): void;
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
}

/** The feature names the fake model picks from when asked to identify features. */
export const fakeFeatureNames = [
  "Safety",
  "Logicality",
  "Comprehensiveness",
  "Helpfulness",
  "Literariness",
  "Accuracy",
  "Engagement",
] as const;

/** Starts a fake OpenAI-compatible server on 127.0.0.1 with an ephemeral port. */
export async function startFakeOpenAIServer(
  options: FakeOpenAIServerOptions = {},
): Promise<FakeOpenAIServer> {
  const requests: RecordedRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let plan: FailurePlan = options.failurePlan ?? [];
  let planPosition = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let closed = false;

  const later = (ms: number, fn: () => void): void => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  };

  const nextMode = (request: RecordedRequest): FailureMode => {
    if (typeof plan === "function") return plan(request) ?? { kind: "ok" };
    const mode = plan[planPosition];
    if (mode === undefined) return { kind: "ok" };
    planPosition++;
    return mode;
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => handle(req, res, Buffer.concat(chunks).toString("utf8")));
  });
  // Keep-alive sockets would otherwise hold close() open until they time out.
  server.keepAliveTimeout = 1000;

  const handle = (req: IncomingMessage, res: ServerResponse, rawBody: string): void => {
    const path = (req.url ?? "/").split("?")[0];
    let body: ChatRequestBody | null = null;
    try {
      body = rawBody === "" ? null : (JSON.parse(rawBody) as ChatRequestBody);
    } catch {
      body = null;
    }
    const record: RecordedRequest = {
      index: requests.length,
      method: req.method ?? "",
      path,
      authorization: req.headers.authorization,
      body,
      mode: "ok",
    };
    requests.push(record);

    if (req.method === "GET" && path === "/v1/models") {
      sendJson(res, 200, { object: "list", data: [{ id: body?.model ?? "fake", object: "model" }] });
      return;
    }
    if (req.method !== "POST" || (path !== "/v1/chat/completions" && path !== "/chat/completions")) {
      sendError(res, 404, `no route for ${req.method} ${path}`, "not_found");
      return;
    }
    if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
      sendError(res, 401, "Incorrect API key provided.", "invalid_api_key");
      return;
    }
    if (body === null || !Array.isArray(body.messages)) {
      sendError(res, 400, "request body must be JSON with a 'messages' array", "invalid_request_error");
      return;
    }

    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    let finished = false;
    res.on("close", () => {
      if (!finished) {
        finished = true;
        inFlight--;
      }
    });

    const mode = nextMode(record);
    record.mode = mode.kind;
    const chatBody = body;
    const respond = (): void => {
      if (res.destroyed || res.writableEnded) return;
      switch (mode.kind) {
        case "status": {
          const headers: Record<string, string> = {};
          if (mode.retryAfter !== undefined) headers["retry-after"] = mode.retryAfter;
          sendError(res, mode.status, mode.message ?? `fake failure ${mode.status}`, "fake_failure", headers);
          return;
        }
        case "reset":
          req.socket.destroy();
          return;
        case "malformed":
          res.writeHead(200, { "content-type": "application/json" });
          res.end('{"id": "chatcmpl-broken", "choices": [{"index": 0, "message": {"content": "half');
          return;
        case "truncate": {
          const text = JSON.stringify(completionFor(chatBody, record.index, options.maxChoices));
          res.writeHead(200, {
            "content-type": "application/json",
            "content-length": String(Buffer.byteLength(text)),
          });
          res.write(text.slice(0, Math.floor(text.length / 2)), () => req.socket.destroy());
          return;
        }
        case "fewerChoices":
          sendJson(res, 200, completionFor(chatBody, record.index, mode.count));
          return;
        default:
          sendJson(res, 200, completionFor(chatBody, record.index, options.maxChoices));
      }
    };
    // Errors answer at once, like a real server rejecting a request; answers take the modelled latency.
    const delay = mode.kind === "slow" ? mode.delayMs : mode.kind === "status" ? 0 : (options.latencyMs ?? 0);
    if (delay > 0) later(delay, respond);
    else respond();
  };

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const timer of timers) clearTimeout(timer);
    timers.clear();
    clearTimeout(lifetime);
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  };
  const lifetime = setTimeout(() => void close(), options.lifetimeMs ?? 120_000);
  lifetime.unref();

  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    get inFlight() {
      return inFlight;
    },
    get maxInFlight() {
      return maxInFlight;
    },
    setFailurePlan(next: FailurePlan) {
      plan = next;
      planPosition = 0;
    },
    close,
  };
}

/** A URL on 127.0.0.1 where nothing listens (a server started and stopped), for "endpoint down" tests. */
export async function deadEndpointUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/v1`;
}

/** The text the fake model answers with for a conversation, seed and sample index. */
export function fakeAnswer(body: ChatRequestBody, sampleIndex: number): string {
  const messages = body.messages ?? [];
  const all = messages.map((m) => m.content).join("\n");
  const user = [...messages].reverse().find((m) => m.role === "user")?.content ?? "";
  const system = messages.find((m) => m.role === "system")?.content ?? "";
  const seed = body.seed ?? 0;
  if (/comma[- ]separated/i.test(all) && /feature/i.test(all)) {
    // Feature identification: a plausible list, varied by the query and seed.
    const h = hashString(`${user}|${seed}|${sampleIndex}`);
    const first = fakeFeatureNames[h % fakeFeatureNames.length];
    const second = fakeFeatureNames[(h >>> 8) % fakeFeatureNames.length];
    const third = fakeFeatureNames[(h >>> 16) % fakeFeatureNames.length];
    const picked = [...new Set([first, second, third])];
    return picked.join(", ");
  }
  if (/principle/i.test(user) && /json/i.test(user)) {
    const h = hashString(`${user}|${seed}`).toString(16);
    return JSON.stringify({
      good: `Address the query directly and check every claim (${h}).`,
      bad: `Wander off the query and state guesses as facts (${h}).`,
    });
  }
  const guidance =
    system === ""
      ? "plainly"
      : `guided by "${clip(system.split(/[.\n]/)[0] ?? "", 60)}" [${hashString(system).toString(16)}]`;
  return `Answer ${guidance} to "${clip(user, 60)}" with seed ${seed}, sample ${sampleIndex}; details follow in order.`;
}

function completionFor(body: ChatRequestBody, requestIndex: number, maxChoices: number | undefined): object {
  const wanted = Math.max(1, body.n ?? 1);
  const count = maxChoices === undefined ? wanted : Math.max(0, Math.min(wanted, maxChoices));
  const maxTokens = body.max_tokens ?? Number.POSITIVE_INFINITY;
  let completionTokens = 0;
  const choices = Array.from({ length: count }, (_, index) => {
    const words = fakeAnswer(body, index).split(" ");
    const truncated = words.length > maxTokens;
    const kept = truncated ? words.slice(0, maxTokens) : words;
    completionTokens += kept.length;
    return {
      index,
      message: { role: "assistant", content: kept.join(" ") },
      finish_reason: truncated ? "length" : "stop",
    };
  });
  const promptTokens = (body.messages ?? []).reduce((sum, m) => sum + countWords(m.content), 0);
  return {
    id: `chatcmpl-fake-${requestIndex}`,
    object: "chat.completion",
    created: 1_700_000_000,
    model: body.model ?? "fake",
    choices,
    usage: {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
    },
  };
}

function sendJson(
  res: ServerResponse,
  status: number,
  value: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(text)),
    ...headers,
  });
  res.end(text);
}

function sendError(
  res: ServerResponse,
  status: number,
  message: string,
  type: string,
  headers: Record<string, string> = {},
): void {
  sendJson(res, status, { error: { message, type, param: null, code: null } }, headers);
}

function countWords(text: string): number {
  const trimmed = text.trim();
  return trimmed === "" ? 0 : trimmed.split(/\s+/).length;
}

function clip(text: string, max: number): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > max ? flat.slice(0, max) : flat;
}
