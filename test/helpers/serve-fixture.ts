/**
 * Shared set-up of the serve tests: a tiny random checkpoint written by the real CLI
 * (`selfsteer model init`, byte-level ChatML tokenizer), small JSON HTTP helpers, and a reader of
 * server-sent event streams.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** The CLI entry point of this checkout. */
export const bin = fileURLToPath(new URL("../../../bin/selfsteer", import.meta.url));

/**
 * Writes a tiny random Llama checkpoint into `dir` (a few tens of thousands of parameters), with the
 * given tokenizer.json or, by default, `model init`'s byte-level one.
 */
export function makeTinyCheckpoint(
  dir: string,
  overrides: Record<string, unknown> = {},
  seed = 1,
  tokenizer?: string,
): string {
  const configPath = `${dir}.config.json`;
  writeFileSync(
    configPath,
    JSON.stringify({
      vocab_size: 300,
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 512,
      ...overrides,
    }),
  );
  const run = spawnSync(
    process.execPath,
    [
      bin,
      ...["model", "init", "--config", configPath, "--seed", String(seed), "--out", dir, "--std", "0.3"],
      ...(tokenizer === undefined ? [] : ["--tokenizer", tokenizer]),
    ],
    { encoding: "utf8" },
  );
  assert.equal(run.status, 0, `model init failed: ${run.stderr}`);
  return dir;
}

/** A JSON HTTP response. */
export interface JsonResponse<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  json: T;
}

/** POSTs a JSON body (or raw text) and parses the JSON answer. */
export async function postJson<T = Record<string, unknown>>(
  url: string,
  body: unknown,
  init: { raw?: string; signal?: AbortSignal } = {},
): Promise<JsonResponse<T>> {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: init.raw ?? JSON.stringify(body),
    ...(init.signal ? { signal: init.signal } : {}),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, json: JSON.parse(text) as T };
}

/** GETs a JSON document. */
export async function getJson<T = Record<string, unknown>>(
  url: string,
  method = "GET",
): Promise<JsonResponse<T>> {
  const response = await fetch(url, { method });
  const text = await response.text();
  return { status: response.status, headers: response.headers, json: JSON.parse(text) as T };
}

/** The `data:` payloads of a server-sent event stream, checking the framing on the way. */
export function parseEventStream(text: string): string[] {
  assert.ok(text.endsWith("\n\n"), "the stream ends with a blank line");
  const events = text.slice(0, -2).split("\n\n");
  return events.map((event) => {
    assert.ok(
      event.startsWith("data: "),
      `every event is a data line: ${JSON.stringify(event.slice(0, 80))}`,
    );
    assert.ok(!event.includes("\n"), "one line per event");
    return event.slice("data: ".length);
  });
}

/** The OpenAI error body. */
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}
