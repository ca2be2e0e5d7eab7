/**
 * `selfsteer model init --like`: stand-ins for published models. Their configs must give the
 * published parameter counts, their tokenizers the real special-token ids and vocabulary sizes, their
 * chat templates the family's format, and their generation configs the family's end-of-turn ids. One
 * stand-in is written through the CLI (with one layer, so the test stays fast) and used.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { encodeChat } from "../src/engine/chat.js";
import { ChatFormat } from "../src/engine/chat-format.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import {
  LIKE_MODELS,
  type LikeModel,
  likeConfig,
  likeGenerationConfig,
  likeTokenizerConfig,
  likeTokenizerJson,
} from "../src/engine/like.js";
import { loadModelDir } from "../src/engine/load.js";
import { llamaParamSpecs, numel } from "../src/engine/params.js";
import { generateTokens } from "../src/engine/sampler.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { fails, ok } from "./helpers/cli.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-like-"));
after(() => rmSync(work, { recursive: true, force: true }));

interface Expected {
  /** Parameters of the published model (its model card / safetensors), tied embeddings counted once. */
  parameters: number;
  modelType: string;
  tokenizerVocab: number;
  configVocab: number;
  specials: Record<string, number>;
  stopIds: number[];
  /** The rendering of [user "Hi", assistant "Hello!"]. */
  rendered: string;
  /** The assistant tokens a training mask covers, decoded. */
  learned: string;
}

const EXPECTED: Record<LikeModel, Expected> = {
  "smollm2-135m": {
    parameters: 134_515_008,
    modelType: "llama",
    tokenizerVocab: 49152,
    configVocab: 49152,
    specials: { "<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<empty_output>": 16 },
    stopIds: [2],
    rendered:
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" +
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n",
    learned: "Hello!<|im_end|>",
  },
  "qwen2.5-0.5b": {
    parameters: 494_032_768,
    modelType: "qwen2",
    tokenizerVocab: 151665,
    configVocab: 151936,
    specials: {
      "<|endoftext|>": 151643,
      "<|im_start|>": 151644,
      "<|im_end|>": 151645,
      "<|file_sep|>": 151664,
    },
    stopIds: [151645, 151643],
    rendered:
      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n",
    learned: "Hello!<|im_end|>",
  },
  "llama-3.2-1b": {
    parameters: 1_235_814_400,
    modelType: "llama",
    tokenizerVocab: 128256,
    configVocab: 128256,
    specials: {
      "<|begin_of_text|>": 128000,
      "<|end_of_text|>": 128001,
      "<|start_header_id|>": 128006,
      "<|end_header_id|>": 128007,
      "<|eom_id|>": 128008,
      "<|eot_id|>": 128009,
      "<|reserved_special_token_247|>": 128255,
    },
    stopIds: [128001, 128008, 128009],
    rendered:
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
      "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
    learned: "Hello!<|eot_id|>",
  },
  "qwen3-0.6b": {
    parameters: 596_049_920,
    modelType: "qwen3",
    tokenizerVocab: 151669,
    configVocab: 151936,
    specials: { "<|im_end|>": 151645, "<think>": 151667, "</think>": 151668 },
    stopIds: [151645, 151643],
    rendered:
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n",
    learned: "<think>\n\n</think>\n\nHello!<|im_end|>",
  },
};

const conversation = [
  { role: "user" as const, content: "Hi" },
  { role: "assistant" as const, content: "Hello!" },
];

for (const name of LIKE_MODELS) {
  test(`--like ${name}: published shapes, special tokens at their ids, the family's chat format`, () => {
    const want = EXPECTED[name];
    const config = likeConfig(name);
    assert.equal(config.model_type, want.modelType);
    assert.equal(config.vocab_size, want.configVocab);
    let parameters = 0;
    for (const spec of llamaParamSpecs(config)) parameters += numel(spec.shape);
    assert.equal(parameters, want.parameters);
    assert.equal(likeConfig(name, { layers: 2 }).num_hidden_layers, 2);

    const tokenizer = BpeTokenizer.fromJSON(likeTokenizerJson(name), name);
    assert.deepEqual(tokenizer.warnings, []);
    assert.equal(tokenizer.vocabSize, want.tokenizerVocab);
    for (const [content, id] of Object.entries(want.specials))
      assert.equal(tokenizer.specialId(content), id, content);
    const text = "Hello, world! 12345 isn't 6789.\n  def f(x): return x";
    assert.equal(tokenizer.decode(tokenizer.encode(text)), text);
    assert.ok(tokenizer.encode(text).length < new TextEncoder().encode(text).length, "merges apply");

    const chat = ChatFormat.fromSources(tokenizer, {
      tokenizerConfig: likeTokenizerConfig(name),
      generationConfig: likeGenerationConfig(name),
      configEosTokenId: config.eos_token_id,
    });
    tokenizer.chat = chat;
    assert.equal(chat.render(conversation), want.rendered);
    for (const id of want.stopIds) assert.ok(chat.stopIds.includes(id), `stop id ${id}`);
    const encoded = encodeChat(tokenizer, conversation);
    assert.equal(tokenizer.decode(encoded.ids), want.rendered);
    const learned = encoded.ids.filter((_, t) => encoded.responseMask[t] === 1);
    assert.equal(tokenizer.decode(learned), want.learned);
  });
}

test("model init --like writes a loadable stand-in (one layer) that samples in its own chat format", () => {
  const out = join(work, "smollm2");
  const printed = JSON.parse(
    ok("model", "init", "--like", "smollm2-135m", "--layers", "1", "--seed", "3", "--out", out),
  );
  assert.equal(printed.num_hidden_layers, 1);
  const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
  assert.equal(config.hidden_size, 576);
  assert.equal(config.num_attention_heads, 9);
  assert.equal(config.num_key_value_heads, 3);
  assert.equal(config.rope_theta, 100000);
  assert.deepEqual(config.architectures, ["LlamaForCausalLM"]);
  assert.deepEqual(JSON.parse(readFileSync(join(out, "generation_config.json"), "utf8")).eos_token_id, 2);
  assert.ok(existsSync(join(out, "tokenizer_config.json")));
  const { model, tokenizer } = loadModelDir(out, { kernels: new PlainKernels() });
  assert.ok(tokenizer.chat !== undefined && !tokenizer.chat.isBuiltinChatML);
  const prompt = encodeChat(tokenizer, [{ role: "user", content: "Hi" }], { addGenerationPrompt: true }).ids;
  assert.equal(prompt[0], 1); // <|im_start|> at its SmolLM2 id
  const [sample] = generateTokens(model, [prompt], { maxNewTokens: 3, seeds: [1], temperature: 1 });
  assert.equal(sample.ids.length, 3);
  // Config initializer_range (1/24 for SmolLM2) is the default std, as in transformers.
  const embed = model.tensor("model.embed_tokens.weight");
  let sq = 0;
  for (let i = 0; i < 100_000; i++) sq += embed[i] * embed[i];
  assert.ok(Math.abs(Math.sqrt(sq / 100_000) - 1 / 24) < 0.002);
});

test("model init --like refuses unknown models and mixed flags before any work", () => {
  fails(
    ["--like", "gpt-5", "smollm2-135m"],
    "model",
    "init",
    "--like",
    "gpt-5",
    "--seed",
    "1",
    "--out",
    join(work, "x"),
  );
  fails(["exactly one of --config"], "model", "init", "--seed", "1", "--out", join(work, "x"));
  fails(
    ["--layers"],
    "model",
    "init",
    "--like",
    "qwen3-0.6b",
    "--layers",
    "0",
    "--seed",
    "1",
    "--out",
    join(work, "x"),
  );
  fails(
    ["--tokenizer"],
    "model",
    "init",
    "--like",
    "qwen3-0.6b",
    "--tokenizer",
    "t.json",
    "--seed",
    "1",
    "--out",
    join(work, "x"),
  );
  assert.ok(!existsSync(join(work, "x", "config.json")));
});
