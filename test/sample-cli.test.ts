import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { tokenizerConfigJson } from "../src/engine/chat.js";
import { saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { PlainKernels } from "../src/engine/kernels/index.js";
import { LlamaModel } from "../src/engine/model.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { LocalPolicy } from "../src/policy/local.js";
import { Rng } from "../src/util/rng.js";
import { ok, selfsteer } from "./helpers/cli.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-sample-cli-"));
after(() => rmSync(work, { recursive: true, force: true }));

const config = LlamaConfigSchema.parse({
  vocab_size: 259,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
});
const tokenizer = BpeTokenizer.byteLevel();
const model = new LlamaModel(config, new PlainKernels());
model.initRandom(new Rng(3), 0.3);
const dir = join(work, "ckpt");
saveCheckpoint(dir, {
  config,
  tensors: model.namedTensors(),
  tokenizerJson: tokenizer.toJSON(),
  tokenizerConfigJson: tokenizerConfigJson(tokenizer),
});
const weightsOnly = join(work, "weights-only");
saveCheckpoint(weightsOnly, { config, tensors: model.namedTensors() });

interface JsonSample {
  text: string;
  finishReason: string;
  seed: number;
  ids: number[];
  logprobs: number[];
}

test("sample --json prints n seeded samples with ids, log-probs and finish reasons, as LocalPolicy does", () => {
  const args = ["sample", "--model", dir, "--prompt", "hello", "--system", "be kind", "--n", "3"];
  const flags = ["--seed", "7", "--temperature", "0.9", "--top-k", "50", "--max-tokens", "10", "--json"];
  const out = JSON.parse(ok(...args, ...flags, "--backend", "plain"));
  const samples = out.samples as JsonSample[];
  assert.equal(samples.length, 3);
  assert.deepEqual(
    samples.map((s) => s.seed),
    [7, 8, 9],
  );
  for (const s of samples) {
    assert.ok(s.ids.length >= 1 && s.ids.length <= 10);
    assert.equal(s.logprobs.length, s.ids.length);
    assert.ok(s.finishReason === "stop" || s.finishReason === "length");
  }
  assert.equal(out.usage.requests, 1);
  assert.equal(
    out.usage.completionTokens,
    samples.reduce((a, s) => a + s.ids.length, 0),
  );
  const expected = new LocalPolicy(model, tokenizer, { topK: 50 }).sample([
    {
      messages: [
        { role: "system", content: "be kind" },
        { role: "user", content: "hello" },
      ],
      n: 3,
      seed: 7,
      temperature: 0.9,
      topP: 1,
      maxTokens: 10,
    },
  ])[0];
  assert.deepEqual(
    samples.map((s) => [s.text, s.ids]),
    expected.map((g) => [g.text, g.ids]),
  );
  // The default backend (WASM when built) samples the same tokens greedily.
  const greedy = [
    "sample",
    "--model",
    dir,
    "--prompt",
    "hi",
    "--temperature",
    "0",
    "--max-tokens",
    "8",
    "--json",
  ];
  const plain = JSON.parse(ok(...greedy, "--backend", "plain")).samples[0].ids;
  assert.deepEqual(JSON.parse(ok(...greedy)).samples[0].ids, plain);
});

test("sample prints the texts; the same seed prints the same text", () => {
  const args = [
    "sample",
    "--model",
    dir,
    "--prompt",
    "story",
    "--seed",
    "3",
    "--max-tokens",
    "12",
    "--backend",
    "plain",
  ];
  const a = ok(...args);
  assert.equal(ok(...args), a);
  const json = JSON.parse(ok(...args, "--json"));
  assert.equal(a, `${json.samples[0].text}\n`);
  const many = ok(...args, "--n", "2");
  assert.match(many, /^--- sample 1\/2 \(seed 3, (stop|length)\) ---\n/);
  assert.match(many, /--- sample 2\/2 \(seed 4, (stop|length)\) ---\n/);
});

test("sample rejects bad flags and directories with exit 2", () => {
  const cases: [string[], string][] = [
    [["--top-p", "1.5"], "--top-p"],
    [["--top-p", "0"], "--top-p"],
    [["--n", "0"], "--n"],
    [["--temperature", "-1"], "--temperature"],
    [["--backend", "gpu"], "--backend"],
  ];
  for (const [flags, fragment] of cases) {
    const r = selfsteer("sample", "--model", dir, "--prompt", "x", ...flags);
    assert.equal(r.status, 2, `${flags.join(" ")}: ${r.stderr}`);
    assert.ok(r.stderr.includes(fragment), r.stderr);
  }
  const missing = selfsteer("sample", "--model", join(work, "nope"), "--prompt", "x", "--backend", "plain");
  assert.equal(missing.status, 2);
  assert.ok(missing.stderr.includes("not a checkpoint directory"), missing.stderr);
  const noTokenizer = selfsteer("sample", "--model", weightsOnly, "--prompt", "x", "--backend", "plain");
  assert.equal(noTokenizer.status, 2);
  assert.ok(noTokenizer.stderr.includes("tokenizer.json"), noTokenizer.stderr);
});
