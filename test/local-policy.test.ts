import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { encodeChat, tokenizerConfigJson } from "../src/engine/chat.js";
import { saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { PlainKernels } from "../src/engine/kernels/index.js";
import { LlamaModel } from "../src/engine/model.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { LocalPolicy } from "../src/policy/local.js";
import type { GenerateRequest } from "../src/policy/types.js";
import { Rng } from "../src/util/rng.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-local-policy-"));
after(() => rmSync(work, { recursive: true, force: true }));

const config = LlamaConfigSchema.parse({
  vocab_size: 259,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 96,
});
const kernels = new PlainKernels();
const tokenizer = BpeTokenizer.byteLevel();
const model = new LlamaModel(config, kernels);
// A wider init than HF's 0.02 gives peaked, seed-dependent distributions instead of near-uniform ones.
model.initRandom(new Rng(7), 0.3);

function request(content: string, extra: Partial<GenerateRequest> = {}): GenerateRequest {
  return { messages: [{ role: "user", content }], temperature: 1, topP: 1, maxTokens: 12, ...extra };
}

function texts(policy: LocalPolicy, requests: GenerateRequest[]): string[][] {
  return policy.sample(requests).map((list) => list.map((g) => g.text));
}

test("the same seed gives the same text; different seeds give different texts", () => {
  const policy = new LocalPolicy(model, tokenizer);
  const a = texts(policy, [request("hello", { seed: 5 })])[0][0];
  const b = texts(policy, [request("hello", { seed: 5 })])[0][0];
  assert.equal(a, b);
  const others = new Set([6, 7, 8, 9].map((seed) => texts(policy, [request("hello", { seed })])[0][0]));
  others.add(a);
  assert.ok(others.size >= 4, `five seeds gave only ${others.size} distinct texts`);
});

test("n samples per request, sample k drawn with seed + k", async () => {
  const policy = new LocalPolicy(model, tokenizer);
  const [many] = policy.sample([request("count", { seed: 40, n: 3 })]);
  assert.equal(many.length, 3);
  assert.deepEqual(
    many.map((g) => g.seed),
    [40, 41, 42],
  );
  for (let k = 0; k < 3; k++) {
    const [[single]] = policy.sample([request("count", { seed: 40 + k })]);
    assert.deepEqual(single, many[k]);
  }
  const viaPolicy = await policy.generate([request("count", { seed: 40, n: 3 })]);
  assert.deepEqual(
    viaPolicy[0].map((g) => g.text),
    many.map((g) => g.text),
  );
  assert.deepEqual(Object.keys(viaPolicy[0][0]).sort(), ["finishReason", "text"]);
});

test("stop strings truncate the text before their first occurrence and finish with 'stop'", () => {
  const policy = new LocalPolicy(model, tokenizer);
  let seed = 11;
  const base = (): GenerateRequest => request("stop here", { seed, maxTokens: 30 });
  let [[full]] = policy.sample([base()]);
  while (full.text.length < 6 && seed < 60) {
    seed++;
    [[full]] = policy.sample([base()]);
  }
  assert.ok(full.text.length >= 6, `need a longer sample, got ${JSON.stringify(full.text)}`);
  const stop = full.text.slice(3, 5);
  const [[cut]] = policy.sample([{ ...base(), stop: ["\u0000never", stop] }]);
  assert.equal(cut.text, full.text.slice(0, full.text.indexOf(stop)));
  assert.equal(cut.finishReason, "stop");
  assert.deepEqual(cut.ids, full.ids);
});

test("the stop token ends a sample and is not in the text; maxTokens ends the rest with 'length'", () => {
  const policy = new LocalPolicy(model, tokenizer);
  const imEnd = tokenizer.imEndId;
  const endOfText = tokenizer.endOfTextId;
  const samples = policy.sample([request("go", { seed: 1, n: 40, maxTokens: 8, temperature: 2 })])[0];
  let stopped = 0;
  for (const g of samples) {
    const last = g.ids[g.ids.length - 1];
    if (g.finishReason === "stop") {
      stopped++;
      assert.ok(last === imEnd || last === endOfText);
      assert.equal(g.text, tokenizer.decode(g.ids.slice(0, -1)));
    } else {
      assert.equal(g.ids.length, 8);
      assert.equal(g.text, tokenizer.decode(g.ids));
    }
    assert.equal(g.logprobs.length, g.ids.length);
    for (const lp of g.logprobs) assert.ok(lp <= 0 && Number.isFinite(lp));
  }
  assert.ok(stopped < samples.length);
});

test("usage counts each prompt once and every sampled token", () => {
  const policy = new LocalPolicy(model, tokenizer);
  const requests = [request("one", { seed: 1, n: 2 }), request("two words", { seed: 2 })];
  const out = policy.sample(requests);
  const promptTokens = requests
    .map((r) => encodeChat(tokenizer, r.messages, { addGenerationPrompt: true }).ids.length)
    .reduce((a, b) => a + b, 0);
  const completionTokens = out.flat().reduce((a, g) => a + g.ids.length, 0);
  assert.deepEqual(policy.usage(), { promptTokens, completionTokens, requests: 2 });
  policy.sample([request("three", { seed: 3 })]);
  assert.equal(policy.usage().requests, 3);
});

test("batching, call grouping and request order do not change any sample", () => {
  const requests = [
    request("a", { seed: 3, n: 2 }),
    request("a much longer prompt than the others", { seed: 4, temperature: 0.7, topP: 0.9 }),
    request("greedy", { seed: 5, temperature: 0 }),
    {
      ...request("sys", { seed: 6, maxTokens: 5 }),
      messages: [
        { role: "system" as const, content: "be brief" },
        { role: "user" as const, content: "sys" },
      ],
    },
  ];
  const together = texts(new LocalPolicy(model, tokenizer, { maxBatch: 32 }), requests);
  const oneByOne = texts(new LocalPolicy(model, tokenizer, { maxBatch: 1 }), requests);
  assert.deepEqual(oneByOne, together);
  const separately = requests.map((r) => texts(new LocalPolicy(model, tokenizer, { maxBatch: 2 }), [r])[0]);
  assert.deepEqual(separately, together);
  const reversed = texts(new LocalPolicy(model, tokenizer), requests.slice().reverse()).reverse();
  assert.deepEqual(reversed, together);
});

test("unseeded requests take seeds from the policy seed and their place in the request stream", () => {
  const requests = [request("x"), request("x")];
  const a = new LocalPolicy(model, tokenizer, { seed: 9 });
  const b = new LocalPolicy(model, tokenizer, { seed: 9 });
  const first = a.sample(requests);
  assert.deepEqual(b.sample(requests), first);
  assert.notEqual(first[0][0].seed, first[1][0].seed);
  // The stream continues across calls: a second call does not repeat the first.
  const again = a.sample([request("x")]);
  assert.notEqual(again[0][0].seed, first[0][0].seed);
  const c = new LocalPolicy(model, tokenizer, { seed: 10 });
  assert.notEqual(c.sample(requests)[0][0].seed, first[0][0].seed);
});

test("an empty system prompt adds no system turn", () => {
  const policy = new LocalPolicy(model, tokenizer);
  const plain = policy.sample([request("hi", { seed: 21 })])[0][0];
  const withEmpty = policy.sample([
    {
      ...request("hi", { seed: 21 }),
      messages: [
        { role: "system", content: "" },
        { role: "user", content: "hi" },
      ],
    },
  ])[0][0];
  assert.deepEqual(withEmpty, plain);
  const usage = policy.usage();
  assert.equal(usage.promptTokens % 2, 0, "both prompts have the same length");
});

test("prompt + maxTokens is clamped to max_position_embeddings", () => {
  const policy = new LocalPolicy(model, tokenizer);
  const long = "y".repeat(70);
  const prompt = encodeChat(tokenizer, [{ role: "user", content: long }], { addGenerationPrompt: true }).ids;
  const room = config.max_position_embeddings - prompt.length;
  assert.ok(room > 0 && room < 20);
  const [[g]] = policy.sample([request(long, { seed: 2, maxTokens: 50, temperature: 0 })]);
  assert.ok(g.ids.length <= room, `${g.ids.length} tokens for room ${room}`);
  const tooLong = "z".repeat(200);
  const [[none]] = policy.sample([request(tooLong, { seed: 2, maxTokens: 5 })]);
  assert.deepEqual([none.text, none.finishReason, none.ids.length], ["", "length", 0]);
});

test("ids of a vocabulary padded beyond the tokenizer's decode to nothing", () => {
  const padded = new LlamaModel({ ...config, vocab_size: 300 }, kernels);
  padded.initRandom(new Rng(1), 0.3);
  const policy = new LocalPolicy(padded, tokenizer);
  const samples = policy.sample([request("pad", { seed: 1, n: 8, temperature: 2 })])[0];
  const high = samples.flatMap((g) => g.ids).filter((id) => id >= tokenizer.vocabSize);
  assert.ok(high.length > 0, "expected some ids beyond the tokenizer");
  for (const g of samples) {
    const known = (g.finishReason === "stop" ? g.ids.slice(0, -1) : g.ids).filter(
      (id) => id < tokenizer.vocabSize,
    );
    assert.equal(g.text, tokenizer.decode(known));
  }
});

test("fromDir opens a checkpoint with its tokenizer and samples what the in-memory model samples", () => {
  const dir = join(work, "ckpt");
  saveCheckpoint(dir, {
    config,
    tensors: model.namedTensors(),
    tokenizerJson: tokenizer.toJSON(),
    tokenizerConfigJson: tokenizerConfigJson(tokenizer),
  });
  const loaded = LocalPolicy.fromDir(dir, { kernels, seed: 3 });
  try {
    const requests = [request("from disk", { seed: 8, n: 2 })];
    assert.deepEqual(loaded.sample(requests), new LocalPolicy(model, tokenizer).sample(requests));
    assert.equal(loaded.name, dir);
  } finally {
    loaded.dispose();
  }
});
