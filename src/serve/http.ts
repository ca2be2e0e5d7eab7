/**
 * The HTTP plumbing of the server: JSON answers, OpenAI-style errors, server-sent events, and request
 * bodies read under a size limit.
 */
import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { HttpError, invalidRequest } from "./protocol.js";

/** The client closed its connection: nothing is left to answer. */
export class ClientGone extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "ClientGone";
  }
}

/** OpenAI's usage block. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** A usage block from prompt and completion token counts. */
export function usageOf(promptTokens: number, completionTokens: number): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  };
}

/** A response id such as chatcmpl-3f9a... (random: ids identify responses, they do not steer sampling). */
export function requestId(prefix: string): string {
  return `${prefix}-${randomBytes(12).toString("hex")}`;
}

/** Answers with a JSON body (nothing when the answer was already started or the client is gone). */
export function sendJson(
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

/** Answers with an error; inside a started event stream, as an error event that ends the stream. */
export function sendError(res: ServerResponse, error: HttpError): void {
  if (res.headersSent) {
    // Mid-stream the status is gone: vLLM's way is an error event, then the end of the stream.
    writeEvent(res, error.body());
    if (!res.writableEnded) res.end();
    return;
  }
  sendJson(res, error.status, error.body(), error.headers);
}

/** Starts a server-sent event stream. */
export function startEventStream(res: ServerResponse): void {
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    connection: "keep-alive",
  });
  res.flushHeaders();
}

/** Writes one `data:` event: a JSON value, or a literal such as [DONE]. */
export function writeEvent(res: ServerResponse, data: unknown): void {
  if (res.destroyed || res.writableEnded) return;
  res.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
}

/** Reads a JSON body of at most `limit` bytes: 413 beyond it, 400 when it is empty or not JSON. */
export function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const tooLarge = () =>
    new HttpError(
      413,
      `request body exceeds ${limit} bytes`,
      "invalid_request_error",
      null,
      "request_too_large",
      {
        connection: "close",
      },
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
    let ended = false;
    // A connection closed before the body ended (client gone, or the drain deadline closed it).
    req.on("close", () => {
      if (!ended && !failed) reject(new ClientGone("the connection closed before the request body ended"));
      failed = true;
    });
    req.on("end", () => {
      ended = true;
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
