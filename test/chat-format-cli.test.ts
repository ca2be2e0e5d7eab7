import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { encodeChat } from "../src/engine/chat.js";
import { saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { PlainKernels } from "../src/engine/kernels/index.js";
import { loadModelDir } from "../src/engine/load.js";
import { LlamaModel } from "../src/engine/model.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { startServer } from "../src/serve/server.js";
import { Rng } from "../src/util/rng.js";
import { ok, selfsteer } from "./helpers/cli.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-chat-format-cli-"));
after(() => rmSync(work, { recursive: true, force: true }));

// A Llama 3 style checkpoint: its own special tokens, template, eos_token and generation_config.
const SPECIALS = [
  "<|begin_of_text|>",
  "<|end_of_text|>",
  "<|start_header_id|>",
  "<|end_header_id|>",
  "<|eot_id|>",
];
const TEMPLATE =
  "{{ bos_token }}{% for message in messages %}" +
  "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
const tokenizer = BpeTokenizer.byteLevel(SPECIALS);
const eot = tokenizer.specialId("<|eot_id|>");
const endOfText = tokenizer.specialId("<|end_of_text|>");
const config = LlamaConfigSchema.parse({
  vocab_size: tokenizer.vocabSize,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 192,
  bos_token_id: tokenizer.specialId("<|begin_of_text|>"),
  eos_token_id: endOfText,
});
const tokenizerConfig = {
  chat_template: TEMPLATE,
  bos_token: "<|begin_of_text|>",
  eos_token: { __type: "AddedToken", content: "<|eot_id|>", lstrip: false, normalized: false },
  tokenizer_class: "PreTrainedTokenizerFast",
};

function writeCheckpoint(dir: string, template: unknown = TEMPLATE): void {
  const model = new LlamaModel(config, new PlainKernels());
  model.initRandom(new Rng(11), 0.02);
  saveCheckpoint(dir, {
    config,
    tensors: model.namedTensors(),
    tokenizerJson: tokenizer.toJSON(),
    tokenizerConfigJson: { ...tokenizerConfig, chat_template: template },
  });
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [eot, endOfText] }));
}

const dir = join(work, "llama3-style");
writeCheckpoint(dir);

test("sample uses the model's own template and stops at its end-of-turn ids", () => {
  const loaded = loadModelDir(dir, { kernels: new PlainKernels() });
  assert.deepEqual([...(loaded.tokenizer.chat?.stopIds ?? [])], [eot, endOfText]);
  const prompt = encodeChat(loaded.tokenizer, [{ role: "user", content: "hello" }], {
    addGenerationPrompt: true,
  });
  assert.equal(prompt.ids[0], config.bos_token_id);
  const out = JSON.parse(
    ok(
      "sample",
      "--model",
      dir,
      "--prompt",
      "hello",
      "--n",
      "6",
      "--seed",
      "1",
      "--max-tokens",
      "150",
      "--json",
    ),
  ) as { samples: { ids: number[]; finishReason: string; text: string }[]; usage: { promptTokens: number } };
  assert.equal(out.usage.promptTokens, prompt.ids.length);
  const stops = new Set([eot, endOfText]);
  let stopped = 0;
  for (const s of out.samples) {
    const inside = s.ids.slice(0, -1);
    assert.ok(!inside.some((id) => stops.has(id)), "a sample never runs past an end-of-turn id");
    if (s.finishReason === "stop") {
      stopped++;
      assert.ok(stops.has(s.ids[s.ids.length - 1]));
      assert.ok(!s.text.includes("<|eot_id|>"));
    } else assert.equal(s.ids.length, 150);
  }
  assert.ok(stopped > 0, "with these seeds some samples end at <|eot_id|> or <|end_of_text|>");
});

test("sft trains on the model's template and the saved checkpoint keeps it", () => {
  const data = join(work, "chats.jsonl");
  const lines = [];
  for (let i = 0; i < 8; i++)
    lines.push(
      JSON.stringify(
        i % 4 === 3
          ? { text: `plain document ${i}` }
          : {
              messages: [
                { role: "user", content: `add ${i} and 1` },
                { role: "assistant", content: `${i + 1}` },
              ],
            },
      ),
    );
  writeFileSync(data, `${lines.join("\n")}\n`);
  const out = join(work, "sft-out");
  const summary = JSON.parse(
    ok(
      "sft",
      "--model",
      dir,
      "--data",
      data,
      "--out",
      out,
      "--batch-size",
      "4",
      "--epochs",
      "1",
      "--backend",
      "plain",
    ),
  ) as { complete: boolean };
  assert.equal(summary.complete, true);
  const saved = JSON.parse(readFileSync(join(out, "tokenizer_config.json"), "utf8")) as {
    chat_template: string;
  };
  assert.equal(saved.chat_template, TEMPLATE);
  const reloaded = loadModelDir(out, { kernels: new PlainKernels() });
  assert.equal(reloaded.tokenizer.chat?.template, TEMPLATE);
  // generation_config.json travels too: the trained model stops where the base did.
  assert.deepEqual(JSON.parse(readFileSync(join(out, "generation_config.json"), "utf8")), {
    eos_token_id: [eot, endOfText],
  });
  assert.deepEqual([...(reloaded.tokenizer.chat?.stopIds ?? [])], [eot, endOfText]);
});

test("a template that does not parse stops the command naming the file and field", () => {
  const bad = join(work, "bad-template");
  writeCheckpoint(bad, "{% for m in messages %}{{ m.content }}");
  const r = selfsteer("sample", "--model", bad, "--prompt", "hi");
  assert.equal(r.status, 2);
  assert.match(r.stderr, /tokenizer_config\.json: field chat_template: cannot parse the template/);
});

test("serve: chat completions use the template and finish at the model's end-of-turn ids", async () => {
  const server = await startServer({ modelDir: dir, modelName: "l3", port: 0, backend: "plain", seed: 5 });
  try {
    const response = await fetch(`${server.url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "l3",
        messages: [{ role: "user", content: "hello" }],
        n: 6,
        seed: 1,
        max_tokens: 150,
        logprobs: true,
      }),
    });
    assert.equal(response.status, 200);
    const body = (await response.json()) as {
      choices: { finish_reason: string; message: { content: string } }[];
      usage: { prompt_tokens: number };
    };
    const loaded = loadModelDir(dir, { kernels: new PlainKernels() });
    const prompt = encodeChat(loaded.tokenizer, [{ role: "user", content: "hello" }], {
      addGenerationPrompt: true,
    });
    assert.equal(body.usage.prompt_tokens, prompt.ids.length);
    assert.ok(body.choices.some((c) => c.finish_reason === "stop"));
    for (const c of body.choices) assert.ok(!c.message.content.includes("<|eot_id|>"));
  } finally {
    await server.close();
  }
});
