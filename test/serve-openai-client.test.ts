import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import OpenAI from "openai";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { type LoadedModelDir, loadModelDir } from "../src/engine/load.js";
import { type ServerHandle, startServer } from "../src/serve/server.js";
import { makeTinyCheckpoint } from "./helpers/serve-fixture.js";

// The official OpenAI client against `selfsteer serve`: what real users of the API will run.

const work = mkdtempSync(join(tmpdir(), "selfsteer-serve-openai-"));
const modelDir = makeTinyCheckpoint(join(work, "tiny"));
const NAME = "tiny-llama";
let server: ServerHandle;
let client: OpenAI;
let reference: LoadedModelDir;

before(async () => {
  server = await startServer({ modelDir, modelName: NAME, port: 0, backend: "plain", seed: 1 });
  client = new OpenAI({ baseURL: server.url, apiKey: "unused", maxRetries: 0, timeout: 30_000 });
  reference = loadModelDir(modelDir, { kernels: new PlainKernels() });
});

after(async () => {
  await server.close();
  rmSync(work, { recursive: true, force: true });
});

const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
  { role: "system", content: "Answer briefly." },
  { role: "user", content: "What is a tide?" },
];

test("models.list and models.retrieve", async () => {
  const ids: string[] = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.deepEqual(ids, [NAME]);
  assert.equal((await client.models.retrieve(NAME)).id, NAME);
  await assert.rejects(client.models.retrieve("nope"), (err: unknown) => {
    assert.ok(err instanceof OpenAI.NotFoundError);
    assert.equal(err.code, "model_not_found");
    return true;
  });
});

test("chat.completions.create, plain and streamed, agree for the same seed", async () => {
  const params = { model: NAME, messages, max_tokens: 12, seed: 4, n: 2, temperature: 0.8 };
  const completion = await client.chat.completions.create(params);
  assert.equal(completion.object, "chat.completion");
  assert.equal(completion.choices.length, 2);
  assert.ok(completion.usage !== undefined && completion.usage.prompt_tokens > 0);
  assert.equal(
    completion.usage.completion_tokens + completion.usage.prompt_tokens,
    completion.usage.total_tokens,
  );
  for (const choice of completion.choices) {
    assert.equal(choice.message.role, "assistant");
    assert.equal(typeof choice.message.content, "string");
  }
  const stream = await client.chat.completions.create({
    ...params,
    stream: true,
    stream_options: { include_usage: true },
  });
  const texts = ["", ""];
  const finish: (string | null)[] = [null, null];
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const chunk of stream) {
    assert.equal(chunk.object, "chat.completion.chunk");
    for (const choice of chunk.choices) {
      texts[choice.index] += choice.delta.content ?? "";
      if (choice.finish_reason !== null) finish[choice.index] = choice.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.deepEqual(
    texts,
    completion.choices.map((c) => c.message.content),
  );
  assert.deepEqual(
    finish,
    completion.choices.map((c) => c.finish_reason),
  );
  assert.deepEqual(usage, completion.usage);
});

test("chat logprobs and invalid parameters through the client", async () => {
  const completion = await client.chat.completions.create({
    model: NAME,
    messages,
    max_tokens: 5,
    logprobs: true,
    top_logprobs: 2,
    seed: 1,
  });
  const content = completion.choices[0].logprobs?.content ?? [];
  assert.ok(content.length > 0);
  for (const entry of content) {
    assert.ok(entry.logprob <= 0);
    assert.equal(entry.top_logprobs.length, 2);
  }
  await assert.rejects(
    client.chat.completions.create({ model: NAME, messages, max_tokens: 5, temperature: 7 }),
    (err: unknown) => {
      assert.ok(err instanceof OpenAI.BadRequestError);
      assert.equal(err.param, "temperature");
      assert.equal(err.type, "invalid_request_error");
      return true;
    },
  );
  await assert.rejects(client.chat.completions.create({ model: "other", messages }), OpenAI.NotFoundError);
});

test("completions.create with echo + logprobs scores a text like the engine's forward pass", async () => {
  const text = "Tides follow the moon.";
  const ids = reference.tokenizer.encode(text);
  const T = ids.length;
  const forward = reference.model.forward({
    ids: Int32Array.from(ids),
    batch: 1,
    seqLen: T,
    lengths: Int32Array.from([T]),
    lossMask: new Uint8Array(T).fill(1),
  });
  const scored = await client.completions.create({
    model: NAME,
    prompt: text,
    max_tokens: 0,
    echo: true,
    logprobs: 0,
  });
  const [choice] = scored.choices;
  assert.equal(choice.text, text);
  const lp = choice.logprobs;
  assert.ok(lp?.token_logprobs && lp.tokens);
  assert.equal(lp.tokens.length, T);
  assert.equal(lp.token_logprobs[0], null);
  for (let t = 1; t < T; t++) assert.ok(Math.abs(lp.token_logprobs[t] - forward.tokenLogprobs[t]) < 1e-9);
  assert.equal(scored.usage?.prompt_tokens, T);
  assert.equal(scored.usage?.completion_tokens, 0);

  const sampled = await client.completions.create({ model: NAME, prompt: text, max_tokens: 8, seed: 3 });
  assert.equal(sampled.object, "text_completion");
  assert.equal(sampled.usage?.prompt_tokens, T);
  const streamed = await client.completions.create({
    model: NAME,
    prompt: text,
    max_tokens: 8,
    seed: 3,
    stream: true,
  });
  let joined = "";
  for await (const chunk of streamed) joined += chunk.choices[0]?.text ?? "";
  assert.equal(joined, sampled.choices[0].text);
});
