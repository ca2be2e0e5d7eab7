/**
 * Every model family through the paths a user takes: a tiny checkpoint of each family (Llama with
 * biases and llama3 RoPE, Qwen2, Mistral with a sliding window shorter than the data, Qwen3) is
 * fine-tuned with `selfsteer sft`, preference-trained with `selfsteer train`, turned into a reward
 * model with `selfsteer rm train` and served; every checkpoint written keeps its family (model_type,
 * architectures, HF tensor names) and reloads to the same numbers. That each family computes the
 * right function is test/reference.test.ts's job (an independent numpy implementation).
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { tokenizerConfigJson } from "../src/engine/chat.js";
import { loadCheckpoint, saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { initLlamaTensors } from "../src/engine/init.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { loadModelDir } from "../src/engine/load.js";
import { nextTokenLogprobs } from "../src/engine/logprobs.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { startServer } from "../src/serve/server.js";
import { ok } from "./helpers/cli.js";
import { postJson } from "./helpers/serve-fixture.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-families-"));
after(() => rmSync(work, { recursive: true, force: true }));

const FAMILIES: { name: string; overrides: Record<string, unknown>; architecture: string; tensor: string }[] =
  [
    {
      name: "llama",
      overrides: {
        head_dim: 6,
        attention_bias: true,
        mlp_bias: true,
        rope_scaling: {
          rope_type: "llama3",
          factor: 8,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 64,
        },
      },
      architecture: "Llama",
      tensor: "model.layers.0.mlp.down_proj.bias",
    },
    {
      name: "qwen2",
      overrides: { model_type: "qwen2", tie_word_embeddings: true, use_sliding_window: false },
      architecture: "Qwen2",
      tensor: "model.layers.0.self_attn.k_proj.bias",
    },
    {
      name: "mistral",
      overrides: { model_type: "mistral", head_dim: 10, sliding_window: 16 },
      architecture: "Mistral",
      tensor: "model.layers.1.self_attn.o_proj.weight",
    },
    {
      name: "qwen3",
      overrides: { model_type: "qwen3", head_dim: 12, tie_word_embeddings: true },
      architecture: "Qwen3",
      tensor: "model.layers.1.self_attn.q_norm.weight",
    },
  ];

const chatsPath = join(work, "chats.jsonl");
writeFileSync(
  chatsPath,
  `${Array.from({ length: 6 }, (_, i) =>
    JSON.stringify({
      messages: [
        { role: "user", content: `add ${i} and 2, please` },
        { role: "assistant", content: `${i} + 2 = ${i + 2}, which is the answer.` },
      ],
    }),
  ).join("\n")}\n`,
);
const pairsPath = join(work, "pairs.jsonl");
writeFileSync(
  pairsPath,
  `${Array.from({ length: 4 }, (_, i) =>
    JSON.stringify({ prompt: `What is ${i} + 1?`, chosen: `${i + 1}.`, rejected: `Maybe ${i + 7}?` }),
  ).join("\n")}\n`,
);

function writeBase(dir: string, overrides: Record<string, unknown>): void {
  const config = LlamaConfigSchema.parse({
    vocab_size: 300,
    hidden_size: 24,
    intermediate_size: 40,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 256,
    ...overrides,
  });
  const tokenizer = BpeTokenizer.byteLevel();
  saveCheckpoint(dir, {
    config,
    tensors: initLlamaTensors(config, 3, { std: 0.1 }),
    tokenizerJson: tokenizer.toJSON(),
    tokenizerConfigJson: tokenizerConfigJson(tokenizer),
  });
}

/** config.json as written, and a check that it names the family and its architecture. */
function assertFamily(dir: string, modelType: string, architecture: string): void {
  const json = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  assert.equal(json.model_type, modelType, `${dir}: model_type`);
  assert.deepEqual(json.architectures, [architecture], `${dir}: architectures`);
}

for (const family of FAMILIES) {
  test(`${family.name}: sft, train, rm train and serve work, and every checkpoint keeps the family`, async () => {
    const base = join(work, `${family.name}-base`);
    writeBase(base, family.overrides);
    const modelType = family.name;
    assertFamily(base, modelType, `${family.architecture}ForCausalLM`);

    const sft = join(work, `${family.name}-sft`);
    const common = ["--backend", "plain", "--max-len", "64"];
    ok(
      "sft",
      "--model",
      base,
      "--data",
      chatsPath,
      "--out",
      sft,
      "--batch-size",
      "3",
      "--lr",
      "3e-3",
      ...common,
    );
    assertFamily(sft, modelType, `${family.architecture}ForCausalLM`);
    const before = loadCheckpoint(base).tensors.get(family.tensor)!.data;
    const after = loadCheckpoint(sft).tensors.get(family.tensor)!.data;
    assert.ok(
      after.some((x, i) => x !== before[i]),
      `sft trained ${family.tensor}`,
    );

    const dpo = join(work, `${family.name}-dpo`);
    ok(
      "train",
      "--model",
      sft,
      "--data",
      pairsPath,
      "--out",
      dpo,
      "--loss",
      "dpo",
      "--batch-size",
      "2",
      ...common,
    );
    assertFamily(dpo, modelType, `${family.architecture}ForCausalLM`);

    const rm = join(work, `${family.name}-rm`);
    ok("rm", "train", "--model", sft, "--pairs", pairsPath, "--out", rm, "--batch-size", "2", ...common);
    assertFamily(rm, modelType, `${family.architecture}ForSequenceClassification`);
    assert.ok(loadCheckpoint(rm).tensors.has("score.weight"));

    // A checkpoint saved again reloads to identical tensors, config and log-probs.
    const kernels = new PlainKernels();
    const loaded = loadModelDir(dpo, { kernels });
    const again = join(work, `${family.name}-again`);
    saveCheckpoint(again, {
      config: loaded.config,
      tensors: loaded.model.namedTensors(),
      tokenizerJson: loaded.tokenizer.toJSON(),
    });
    const reloaded = loadModelDir(again, { kernels });
    assert.deepEqual(reloaded.config, loaded.config);
    assert.deepEqual(reloaded.model.params, loaded.model.params);
    const ids = [[1, 72, 101, 108, 108, 111, 2, 30, 31, 32, 33]];
    assert.deepEqual(nextTokenLogprobs(reloaded.model, ids), nextTokenLogprobs(loaded.model, ids));

    const server = await startServer({ modelDir: dpo, port: 0, backend: "plain", seed: 1 });
    try {
      const answer = await postJson<{
        choices: { message: { content: string } }[];
        usage: { completion_tokens: number };
      }>(`${server.url}/chat/completions`, {
        model: server.modelName,
        messages: [{ role: "user", content: "What is 2 + 1?" }],
        max_tokens: 6,
        temperature: 0,
        ignore_eos: true,
      });
      assert.equal(answer.status, 200, JSON.stringify(answer.json));
      assert.equal(answer.json.usage.completion_tokens, 6);
    } finally {
      await server.close();
    }
  });
}
