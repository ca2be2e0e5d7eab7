import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import fc from "fast-check";
import { encodeChat } from "../src/engine/chat.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { type LoadedModelDir, loadModelDir } from "../src/engine/load.js";
import { generateTokens } from "../src/engine/sampler.js";
import { byteToChar } from "../src/engine/tokenizer.js";
import { type ServerHandle, startServer } from "../src/serve/server.js";
import { IncrementalText } from "../src/serve/text.js";
import {
  bin,
  type ErrorBody,
  getJson,
  makeTinyCheckpoint,
  parseEventStream,
  postJson,
} from "./helpers/serve-fixture.js";

// Raw HTTP against the real server on a tiny random checkpoint. Plain kernels compute every row of a
// batch exactly as they would alone, so seeded texts must match bit for bit across batch compositions.

const work = mkdtempSync(join(tmpdir(), "selfsteer-serve-"));
const modelDir = makeTinyCheckpoint(join(work, "tiny"));
const NAME = "tiny";
let server: ServerHandle;
let reference: LoadedModelDir;
const extraServers: ServerHandle[] = [];

before(async () => {
  server = await startServer({
    modelDir,
    modelName: NAME,
    port: 0,
    backend: "plain",
    maxBatch: 8,
    maxBodyBytes: 64 * 1024,
    seed: 11,
  });
  reference = loadModelDir(modelDir, { kernels: new PlainKernels() });
});

after(async () => {
  await Promise.all([server.close(), ...extraServers.map((s) => s.close())]);
  rmSync(work, { recursive: true, force: true });
});

interface ChatChoice {
  index: number;
  message: { role: string; content: string };
  finish_reason: string;
  logprobs: {
    content: Array<{
      token: string;
      logprob: number;
      bytes: number[];
      top_logprobs: Array<{ token: string; logprob: number }>;
    }>;
  } | null;
}
interface ChatResponse {
  object: string;
  model: string;
  choices: ChatChoice[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}
interface CompletionChoice {
  index: number;
  text: string;
  finish_reason: string;
  logprobs: {
    tokens: string[];
    token_logprobs: (number | null)[];
    top_logprobs: (Record<string, number> | null)[];
    text_offset: number[];
  } | null;
}
interface CompletionResponse {
  object: string;
  choices: CompletionChoice[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

const messages = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "Name three colours." },
];

function chat(body: Record<string, unknown>, url = server.url) {
  return postJson<ChatResponse>(`${url}/chat/completions`, { model: NAME, messages, ...body });
}

function complete(body: Record<string, unknown>, url = server.url) {
  return postJson<CompletionResponse>(`${url}/completions`, { model: NAME, ...body });
}

/** Log-probs of ids[1..] given the prefix, from the engine's full forward pass. */
function forwardLogprobs(ids: number[]): number[] {
  const T = ids.length;
  const { tokenLogprobs } = reference.model.forward({
    ids: Int32Array.from(ids),
    batch: 1,
    seqLen: T,
    lengths: Int32Array.from([T]),
    lossMask: new Uint8Array(T).fill(1),
  });
  return Array.from(tokenLogprobs.subarray(1, T));
}

/** The id of a chat logprobs entry (byte-level tokenizer: one byte, or a special token). */
function idOfEntry(entry: { token: string; bytes: number[] }): number {
  const { tokenizer } = reference;
  if (tokenizer.hasSpecial(entry.token)) return tokenizer.specialId(entry.token);
  assert.equal(entry.bytes.length, 1, "byte-level tokens are single bytes");
  const id = tokenizer.tokenToId(byteToChar(entry.bytes[0]));
  assert.ok(id !== undefined);
  return id;
}

test("GET /v1/models lists the model; /v1/models/{id} finds it or answers 404", async () => {
  const list = await getJson<{ object: string; data: Array<{ id: string; object: string }> }>(
    `${server.url}/models`,
  );
  assert.equal(list.status, 200);
  assert.equal(list.json.object, "list");
  assert.deepEqual(
    list.json.data.map((m) => [m.id, m.object]),
    [[NAME, "model"]],
  );
  const one = await getJson<{ id: string }>(`${server.url}/models/${NAME}`);
  assert.equal(one.status, 200);
  assert.equal(one.json.id, NAME);
  const missing = await getJson<ErrorBody>(`${server.url}/models/other`);
  assert.equal(missing.status, 404);
  assert.equal(missing.json.error.code, "model_not_found");
});

test("unknown routes get 404, wrong methods 405, an unknown model 404 model_not_found", async () => {
  const route = await getJson<ErrorBody>(`${server.url}/nothing-here`);
  assert.equal(route.status, 404);
  assert.equal(route.json.error.type, "invalid_request_error");
  assert.match(route.json.error.message, /nothing-here/);
  const method = await getJson<ErrorBody>(`${server.url}/chat/completions`);
  assert.equal(method.status, 405);
  assert.equal(method.headers.get("allow"), "POST");
  for (const path of ["chat/completions", "completions"]) {
    const r = await postJson<ErrorBody>(`${server.url}/${path}`, {
      model: "gpt-9",
      messages,
      prompt: "x",
      max_tokens: 2,
    });
    assert.equal(r.status, 404, path);
    assert.equal(r.json.error.code, "model_not_found");
    assert.equal(r.json.error.param, "model");
    assert.match(r.json.error.message, /gpt-9/);
  }
});

test("bad requests get 400 with an OpenAI error body naming the field", async () => {
  const chatCases: Array<[Record<string, unknown>, string]> = [
    [{ temperature: "hot" }, "temperature"],
    [{ temperature: 3 }, "temperature"],
    [{ top_p: 1.5 }, "top_p"],
    [{ n: 0 }, "n"],
    [{ n: 99 }, "n"],
    [{ max_tokens: 0 }, "max_tokens"],
    [{ max_tokens: 2.5 }, "max_tokens"],
    [{ max_completion_tokens: -1 }, "max_completion_tokens"],
    [{ stop: 5 }, "stop"],
    [{ seed: 1.5 }, "seed"],
    [{ logprobs: "yes" }, "logprobs"],
    [{ logprobs: true, top_logprobs: 50 }, "top_logprobs"],
    [{ top_logprobs: 2 }, "top_logprobs"],
    [{ stream: "please" }, "stream"],
    [{ presence_penalty: 0.5 }, "presence_penalty"],
    [{ messages: [] }, "messages"],
    [{ messages: "hello" }, "messages"],
    [{ messages: [{ role: "robot", content: "hi" }] }, "messages[0].role"],
    [{ messages: [{ role: "user", content: 7 }] }, "messages[0].content"],
    [{ model: 3 }, "model"],
    [{ max_tokens: 600 }, "max_tokens"],
    [{ messages: [{ role: "user", content: "x".repeat(600) }], max_tokens: 1 }, "messages"],
  ];
  for (const [patch, param] of chatCases) {
    const r = await postJson<ErrorBody>(`${server.url}/chat/completions`, {
      model: NAME,
      messages,
      max_tokens: 4,
      ...patch,
    });
    assert.equal(r.status, 400, `${JSON.stringify(patch)} -> ${r.status}`);
    assert.equal(r.json.error.type, "invalid_request_error");
    assert.equal(r.json.error.param, param, JSON.stringify(patch));
    assert.ok(r.json.error.message.includes(param), r.json.error.message);
  }
  const completionCases: Array<[Record<string, unknown>, string]> = [
    [{ prompt: 5 }, "prompt"],
    [{ prompt: [] }, "prompt"],
    [{ prompt: "" }, "prompt"],
    [{ prompt: [1, 2, 9999] }, "prompt[2]"],
    [{ prompt: [[1], [2, 300]] }, "prompt[1][1]"],
    [{ prompt: "hi", logprobs: 30 }, "logprobs"],
    [{ prompt: "hi", echo: 1 }, "echo"],
    [{ prompt: "hi", max_tokens: -1 }, "max_tokens"],
    [{ prompt: "hi", suffix: "tail" }, "suffix"],
    [{ prompt: "hi", best_of: 3 }, "best_of"],
    [{ prompt: "hi", max_tokens: 511 }, "max_tokens"],
  ];
  for (const [body, param] of completionCases) {
    const r = await postJson<ErrorBody>(`${server.url}/completions`, { model: NAME, ...body });
    assert.equal(r.status, 400, `${JSON.stringify(body)} -> ${r.status}`);
    assert.equal(r.json.error.param, param, JSON.stringify(body));
  }
  const context = await postJson<ErrorBody>(`${server.url}/completions`, {
    model: NAME,
    prompt: "hi",
    max_tokens: 600,
  });
  assert.equal(context.json.error.code, "context_length_exceeded");
  assert.match(context.json.error.message, /maximum context length is 512/);
  const notJson = await postJson<ErrorBody>(`${server.url}/completions`, null, { raw: "{not json" });
  assert.equal(notJson.status, 400);
  assert.equal(notJson.json.error.code, "invalid_json");
  const notObject = await postJson<ErrorBody>(`${server.url}/completions`, [1, 2]);
  assert.equal(notObject.status, 400);
});

test("a body over the limit gets 413", async () => {
  const r = await postJson<ErrorBody>(`${server.url}/completions`, {
    model: NAME,
    prompt: "x".repeat(100 * 1024),
  });
  assert.equal(r.status, 413);
  assert.equal(r.json.error.code, "request_too_large");
  // The server keeps serving.
  assert.equal((await complete({ prompt: "ok", max_tokens: 1 })).status, 200);
});

test("chat completions: choices, usage, and logprobs equal to the engine's forward pass", async () => {
  const r = await chat({ max_tokens: 12, seed: 5, n: 3, logprobs: true, top_logprobs: 3 });
  assert.equal(r.status, 200);
  assert.equal(r.json.object, "chat.completion");
  assert.equal(r.json.model, NAME);
  assert.equal(r.json.choices.length, 3);
  const prompt = encodeChat(reference.tokenizer, messages as never, { addGenerationPrompt: true }).ids;
  assert.equal(r.json.usage.prompt_tokens, prompt.length);
  let completion = 0;
  for (const [k, choice] of r.json.choices.entries()) {
    assert.equal(choice.index, k);
    assert.equal(choice.message.role, "assistant");
    assert.ok(["stop", "length"].includes(choice.finish_reason));
    const entries = choice.logprobs?.content ?? [];
    const ids = entries.map(idOfEntry);
    // A stop token is counted as a completion token but not reported.
    const sampled = ids.length + (choice.finish_reason === "stop" ? 1 : 0);
    if (choice.finish_reason === "length") assert.equal(sampled, 12);
    completion += sampled;
    assert.equal(choice.message.content, reference.tokenizer.decode(ids, { skipSpecial: true }));
    const expected = forwardLogprobs([...prompt, ...ids]).slice(prompt.length - 1);
    entries.forEach((e, t) => {
      assert.ok(Math.abs(e.logprob - expected[t]) < 1e-4, `token ${t}: ${e.logprob} vs ${expected[t]}`);
      assert.equal(e.top_logprobs.length, 3);
      assert.ok(e.top_logprobs[0].logprob >= e.top_logprobs[2].logprob);
      assert.ok(e.top_logprobs[0].logprob >= e.logprob - 1e-12);
    });
  }
  assert.equal(r.json.usage.completion_tokens, completion);
  assert.equal(r.json.usage.total_tokens, prompt.length + completion);
});

test("echo + logprobs + max_tokens 0 scores the prompt exactly as the engine's forward pass", async () => {
  const text = "The quick brown fox jumps.";
  const ids = reference.tokenizer.encode(text);
  const expected = forwardLogprobs(ids);
  for (const prompt of [text, ids]) {
    const r = await complete({ prompt, max_tokens: 0, echo: true, logprobs: 2 });
    assert.equal(r.status, 200);
    const [choice] = r.json.choices;
    assert.equal(choice.text, text);
    assert.equal(choice.finish_reason, "length");
    const lp = choice.logprobs!;
    assert.equal(lp.tokens.length, ids.length);
    assert.equal(lp.tokens.join(""), text);
    assert.equal(lp.token_logprobs[0], null, "nothing predicts the first token");
    assert.equal(lp.top_logprobs[0], null);
    for (let t = 1; t < ids.length; t++) {
      assert.ok(Math.abs((lp.token_logprobs[t] as number) - expected[t - 1]) < 1e-9, `position ${t}`);
      const top = Object.values(lp.top_logprobs[t] ?? {});
      assert.ok(top.length >= 1 && top.length <= 2);
      assert.ok(Math.max(...top) >= (lp.token_logprobs[t] as number) - 1e-12);
    }
    assert.deepEqual(
      lp.text_offset,
      ids.map((_, t) => t),
    );
    assert.deepEqual(r.json.usage, {
      prompt_tokens: ids.length,
      completion_tokens: 0,
      total_tokens: ids.length,
    });
  }
  // Echo with sampling: the prompt's logprobs, then the sampled tokens' after it.
  const both = await complete({ prompt: text, max_tokens: 5, echo: true, logprobs: 0, seed: 2 });
  const choice = both.json.choices[0];
  assert.ok(choice.text.startsWith(text));
  assert.equal(choice.logprobs!.token_logprobs.length, ids.length + both.json.usage.completion_tokens);
  assert.equal(choice.logprobs!.text_offset[ids.length], text.length);
});

test("the same seed gives the same text; sample k of seed s is sample 0 of seed s + k", async () => {
  const a = await chat({ max_tokens: 16, seed: 42, temperature: 1 });
  const b = await chat({ max_tokens: 16, seed: 42, temperature: 1 });
  const c = await chat({ max_tokens: 16, seed: 43, temperature: 1 });
  assert.equal(a.json.choices[0].message.content, b.json.choices[0].message.content);
  assert.notEqual(a.json.choices[0].message.content, c.json.choices[0].message.content);
  const many = await chat({ max_tokens: 16, seed: 42, temperature: 1, n: 2 });
  assert.equal(many.json.choices[0].message.content, a.json.choices[0].message.content);
  assert.equal(many.json.choices[1].message.content, c.json.choices[0].message.content);
  const greedy1 = await complete({ prompt: "abc", max_tokens: 10, temperature: 0 });
  const greedy2 = await complete({ prompt: "abc", max_tokens: 10, temperature: 0, seed: 9 });
  assert.equal(greedy1.json.choices[0].text, greedy2.json.choices[0].text, "greedy needs no seed");
});

test("concurrent requests give the same texts as sequential ones, decoded in shared steps", async () => {
  const bodies = Array.from({ length: 7 }, (_, i) => ({
    messages: [{ role: "user", content: `Question ${i}: ${"why ".repeat(i)}?` }],
    max_tokens: 6 + 3 * i,
    seed: 100 + i,
    temperature: 0.9,
    top_p: i % 2 === 0 ? 1 : 0.8,
    n: i === 3 ? 3 : 1,
  }));
  const sequential: string[][] = [];
  for (const body of bodies)
    sequential.push((await chat(body)).json.choices.map((choice) => choice.message.content));
  const stepsBefore = server.stats().steps;
  const concurrent = await Promise.all(bodies.map((body) => chat(body)));
  assert.deepEqual(
    concurrent.map((r) => r.json.choices.map((choice) => choice.message.content)),
    sequential,
  );
  assert.ok(server.stats().maxBatchSeen > 1, "requests shared decode steps");
  const longest = Math.max(...bodies.map((b) => b.max_tokens));
  assert.ok(server.stats().steps - stepsBefore < bodies.length * longest, "fewer steps than one at a time");
});

test("streaming chat: SSE chunks that add up to the non-streamed answer, usage, then [DONE]", async () => {
  const body = { model: NAME, messages, max_tokens: 10, seed: 8, n: 2 };
  const plain = await chat(body);
  const response = await fetch(`${server.url}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
  const events = parseEventStream(await response.text());
  assert.equal(events.at(-1), "[DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  const ids = new Set(chunks.map((c) => c.id));
  assert.equal(ids.size, 1, "one id for the whole stream");
  const texts = ["", ""];
  const finish: (string | null)[] = [null, null];
  const roles: string[] = [];
  for (const c of chunks.slice(0, -1)) {
    assert.equal(c.object, "chat.completion.chunk");
    assert.equal(c.usage, null);
    assert.equal(c.choices.length, 1);
    const [choice] = c.choices;
    assert.equal(finish[choice.index], null, "nothing after a choice's finish chunk");
    if (choice.delta.role) roles.push(choice.delta.role);
    texts[choice.index] += choice.delta.content ?? "";
    finish[choice.index] = choice.finish_reason;
  }
  assert.deepEqual(roles, ["assistant", "assistant"]);
  assert.deepEqual(
    texts,
    plain.json.choices.map((choice) => choice.message.content),
  );
  assert.deepEqual(
    finish,
    plain.json.choices.map((choice) => choice.finish_reason),
  );
  const usage = chunks.at(-1);
  assert.deepEqual(usage.choices, []);
  assert.deepEqual(usage.usage, plain.json.usage);
});

test("streaming completions with echo, and without include_usage no usage chunk", async () => {
  const response = await fetch(`${server.url}/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: NAME, prompt: "Once", max_tokens: 6, seed: 1, echo: true, stream: true }),
  });
  const events = parseEventStream(await response.text());
  assert.equal(events.at(-1), "[DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  assert.ok(chunks.every((c) => c.object === "text_completion" && !("usage" in c)));
  const text = chunks.map((c) => c.choices[0].text).join("");
  const plain = await complete({ prompt: "Once", max_tokens: 6, seed: 1, echo: true });
  assert.equal(text, plain.json.choices[0].text);
  assert.ok(text.startsWith("Once"));
  assert.equal(chunks.at(-1).choices[0].finish_reason, plain.json.choices[0].finish_reason);
});

test("stop strings end the text before their first occurrence, streamed or not", async () => {
  const base = await complete({ prompt: "Stop test", max_tokens: 40, seed: 21, temperature: 1 });
  const full = base.json.choices[0].text;
  assert.ok(full.length >= 8, `need some text, got ${JSON.stringify(full)}`);
  const stop = full.slice(4, 6);
  const expected = full.slice(0, full.indexOf(stop));
  const stopped = await complete({
    prompt: "Stop test",
    max_tokens: 40,
    seed: 21,
    temperature: 1,
    stop: [stop],
  });
  assert.equal(stopped.json.choices[0].text, expected);
  assert.equal(stopped.json.choices[0].finish_reason, "stop");
  assert.ok(stopped.json.usage.completion_tokens < 40);
  const response = await fetch(`${server.url}/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: NAME,
      prompt: "Stop test",
      max_tokens: 40,
      seed: 21,
      temperature: 1,
      stop,
      stream: true,
    }),
  });
  const chunks = parseEventStream(await response.text())
    .slice(0, -1)
    .map((e) => JSON.parse(e));
  assert.equal(chunks.map((c) => c.choices[0].text).join(""), expected);
  assert.equal(chunks.at(-1).choices[0].finish_reason, "stop");
});

test("overload: a full queue answers 429 with Retry-After, and the server keeps serving", async () => {
  const busy = await startServer({
    modelDir,
    modelName: NAME,
    port: 0,
    backend: "plain",
    maxBatch: 1,
    maxQueue: 1,
  });
  extraServers.push(busy);
  const results = await Promise.all(
    Array.from({ length: 8 }, (_, i) => chat({ max_tokens: 60, seed: i }, busy.url)),
  );
  const statuses = results.map((r) => r.status);
  assert.ok(statuses.includes(429), `some request is turned away: ${statuses}`);
  assert.ok(statuses.includes(200), `some request is served: ${statuses}`);
  assert.ok(
    statuses.every((s) => s === 200 || s === 429),
    `${statuses}`,
  );
  for (const r of results.filter((x) => x.status === 429)) {
    assert.equal(r.headers.get("retry-after"), "1");
    assert.equal((r.json as unknown as ErrorBody).error.code, "queue_full");
  }
  assert.equal((await chat({ max_tokens: 2 }, busy.url)).status, 200);
});

test("ignore_eos samples exactly max_tokens; a model shared with other sampling keeps serving", async () => {
  const shared = await startServer({ loaded: reference, modelName: NAME, port: 0, maxBatch: 4 });
  extraServers.push(shared);
  for (let seed = 0; seed < 6; seed++) {
    const r = await complete({ prompt: "eos?", max_tokens: 30, seed, ignore_eos: true }, shared.url);
    assert.equal(r.json.usage.completion_tokens, 30);
    assert.equal(r.json.choices[0].finish_reason, "length");
    // Sampling with the same model while the server is idle reuses its KV-cache memory.
    generateTokens(reference.model, [[1, 2, 3]], { maxNewTokens: 4, seeds: [seed] });
  }
});

test("a client that disconnects mid-stream frees its slot", async () => {
  const controller = new AbortController();
  const response = await fetch(`${server.url}/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: NAME, prompt: "long", max_tokens: 500, stream: true }),
    signal: controller.signal,
  });
  const reader = response.body!.getReader();
  await reader.read();
  controller.abort();
  const deadline = Date.now() + 5000;
  while (server.stats().running > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(server.stats().running, 0);
  assert.ok(server.stats().tokens > 0);
});

test("SIGTERM: the CLI finishes the in-flight request, then exits 0 and stops listening", async () => {
  const child = spawn(
    process.execPath,
    [bin, "serve", "--model", modelDir, "--port", "0", "--backend", "plain", "--model-name", NAME],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  let sawSigterm = false;
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error(`no URL in time: ${stderr}`)), 20_000);
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes("SIGTERM")) sawSigterm = true;
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m) {
        clearTimeout(guard);
        resolve(m[1]);
      }
    });
  });
  // Four long samples keep the server busy; the signal comes once the first tokens are out.
  const response = await fetch(`${url}/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: NAME,
      prompt: "drain",
      max_tokens: 500,
      n: 4,
      seed: 3,
      temperature: 1,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  const reader = response.body!.getReader();
  let text = new TextDecoder().decode((await reader.read()).value);
  child.kill("SIGTERM");
  let sigtermBeforeEnd = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (sawSigterm) sigtermBeforeEnd = true;
    text += new TextDecoder().decode(value);
  }
  const events = parseEventStream(text);
  assert.equal(events.at(-1), "[DONE]");
  const usage = JSON.parse(events.at(-2) as string).usage;
  const finishes = events
    .slice(0, -1)
    .map((e) => JSON.parse(e))
    .flatMap((c) =>
      c.choices.filter((choice: { finish_reason: string | null }) => choice.finish_reason !== null),
    );
  assert.equal(finishes.length, 4, "every sample finished");
  assert.ok(usage.completion_tokens > 4);
  assert.ok(sigtermBeforeEnd, "the signal arrived while the request was still streaming");
  const code = await exited;
  assert.equal(code, 0, stderr);
  assert.match(stderr, /SIGTERM: finishing in-flight requests/);
  await assert.rejects(fetch(`${url}/models`), "the port is closed after exit");
});

test("IncrementalText: deltas add up to the text cut at the first stop string, never showing part of one", () => {
  const { tokenizer } = reference;
  // Bytes of multi-byte characters split across tokens, and special tokens that decode to nothing.
  const pieces = ["a", "b", "ab", "é", "€", "😀", " ", "\n"];
  const idsOf = (text: string) =>
    Array.from(Buffer.from(text, "utf8")).map((b) => tokenizer.tokenToId(byteToChar(b))!);
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom(...pieces), { maxLength: 20 }),
      fc.array(fc.array(fc.constantFrom(...pieces), { minLength: 1, maxLength: 3 }), { maxLength: 2 }),
      fc.boolean(),
      (parts, stopParts, withSpecial) => {
        const full = parts.join("");
        const stops = stopParts.map((p) => p.join(""));
        const ids = idsOf(full);
        if (withSpecial) ids.splice(ids.length >> 1, 0, tokenizer.imEndId);
        const text = new IncrementalText(tokenizer, stops);
        let shown = "";
        for (const id of ids) {
          shown += text.push(id);
          for (const stop of stops) assert.ok(!shown.includes(stop), "a stop string is never shown");
          if (text.stopped) break;
        }
        shown += text.finish();
        const cuts = stops.map((stop) => full.indexOf(stop)).filter((at) => at >= 0);
        const expected = cuts.length === 0 ? full : full.slice(0, Math.min(...cuts));
        assert.equal(shown, expected);
        assert.equal(text.shown, expected);
      },
    ),
    { seed: 7, numRuns: 300 },
  );
});
