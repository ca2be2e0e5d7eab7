import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { loadCheckpoint } from "../src/engine/checkpoint.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { fails, ok } from "./helpers/cli.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-model-cli-"));
after(() => rmSync(work, { recursive: true, force: true }));

const baseConfig = {
  vocab_size: 300,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};
const configPath = join(work, "config.json");
writeFileSync(configPath, JSON.stringify(baseConfig));

test("model init writes a loadable HF-layout checkpoint with a byte-level ChatML tokenizer", () => {
  const out = join(work, "a");
  const summary = JSON.parse(ok("model", "init", "--config", configPath, "--seed", "4", "--out", out));
  assert.equal(summary.architecture, "LlamaForCausalLM");
  assert.equal(summary.tokenizer_vocab, 259);
  const ckpt = loadCheckpoint(out);
  assert.equal(ckpt.scoreHead, false);
  let parameters = 0;
  for (const t of ckpt.tensors.values()) parameters += t.data.length;
  assert.equal(summary.parameters, parameters);
  const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
  assert.deepEqual(config.architectures, ["LlamaForCausalLM"]);
  assert.equal(config.torch_dtype, "float32");
  const tokenizer = BpeTokenizer.fromJSON(ckpt.tokenizerJson, "tokenizer.json");
  assert.equal(tokenizer.vocabSize, 259);
  assert.equal(tokenizer.mergeCount, 0);
  for (const special of ["<|im_start|>", "<|im_end|>", "<|endoftext|>"])
    assert.ok(tokenizer.hasSpecial(special));
  assert.equal(config.eos_token_id, tokenizer.imEndId);
  assert.equal(config.pad_token_id, tokenizer.endOfTextId);
  const tokenizerConfig = ckpt.tokenizerConfigJson as { chat_template?: unknown };
  assert.ok(String(tokenizerConfig.chat_template).includes("<|im_start|>"), "ChatML chat_template");
  assert.equal(config.num_key_value_heads, 2);
  const text = "héllo <|im_end|>";
  assert.equal(tokenizer.decode(tokenizer.encode(text)), text);
});

test("model init is deterministic in the seed", () => {
  ok("model", "init", "--config", configPath, "--seed", "9", "--out", join(work, "s1"));
  ok("model", "init", "--config", configPath, "--seed", "9", "--out", join(work, "s2"));
  ok("model", "init", "--config", configPath, "--seed", "10", "--out", join(work, "s3"));
  const bytes = (d: string) => readFileSync(join(work, d, "model.safetensors"));
  assert.equal(Buffer.compare(bytes("s1"), bytes("s2")), 0);
  assert.notEqual(Buffer.compare(bytes("s1"), bytes("s3")), 0);
  assert.equal(
    readFileSync(join(work, "s1", "tokenizer.json"), "utf8"),
    readFileSync(join(work, "s2", "tokenizer.json"), "utf8"),
  );
});

test("model init --score-head writes a reward model; logprobs refuses it", () => {
  const out = join(work, "rm");
  ok("model", "init", "--config", configPath, "--seed", "1", "--out", out, "--score-head");
  const ckpt = loadCheckpoint(out);
  assert.equal(ckpt.scoreHead, true);
  assert.deepEqual(ckpt.tensors.get("score.weight")!.shape, [1, 16]);
  assert.equal(ckpt.tensors.has("lm_head.weight"), false);
  assert.deepEqual(JSON.parse(readFileSync(join(out, "config.json"), "utf8")).architectures, [
    "LlamaForSequenceClassification",
  ]);
  const ids = join(work, "rm-ids.json");
  writeFileSync(ids, JSON.stringify({ sequences: [[1, 2]] }));
  fails(["reward model"], "logprobs", "--model", out, "--ids", ids);
});

test("model init with a given tokenizer checks vocab_size against it", () => {
  const trained = BpeTokenizer.train(
    ["the cat sat on the mat. the cat sat. the hat, the mat!".repeat(5)],
    280,
  );
  assert.ok(trained.vocabSize > 259);
  const tokPath = join(work, "tok.json");
  writeFileSync(tokPath, JSON.stringify(trained.toJSON()));
  const small = join(work, "small-config.json");
  writeFileSync(small, JSON.stringify({ ...baseConfig, vocab_size: trained.vocabSize - 1 }));
  fails(
    ["small-config.json", "vocab_size", String(trained.vocabSize)],
    "model",
    "init",
    "--config",
    small,
    "--seed",
    "1",
    "--out",
    join(work, "t0"),
    "--tokenizer",
    tokPath,
  );
  const out = join(work, "t1");
  ok("model", "init", "--config", configPath, "--seed", "1", "--out", out, "--tokenizer", tokPath);
  const loaded = BpeTokenizer.fromJSON(loadCheckpoint(out).tokenizerJson);
  assert.deepEqual(loaded.encode("the cat sat"), trained.encode("the cat sat"));
});

test("model init rejects bad configs and flags, and will not overwrite without --force", () => {
  const bad = join(work, "bad-config.json");
  writeFileSync(bad, JSON.stringify({ ...baseConfig, num_attention_heads: "four" }));
  fails(
    ["bad-config.json", "num_attention_heads"],
    "model",
    "init",
    "--config",
    bad,
    "--seed",
    "1",
    "--out",
    join(work, "x"),
  );
  fails(["--seed"], "model", "init", "--config", configPath, "--seed", "-3", "--out", join(work, "x"));
  const tiny = join(work, "tiny-config.json");
  writeFileSync(tiny, JSON.stringify({ ...baseConfig, vocab_size: 100 }));
  fails(["vocab_size", "259"], "model", "init", "--config", tiny, "--seed", "1", "--out", join(work, "x"));
  const out = join(work, "again");
  ok("model", "init", "--config", configPath, "--seed", "1", "--out", out);
  fails(["--force"], "model", "init", "--config", configPath, "--seed", "2", "--out", out);
  ok("model", "init", "--config", configPath, "--seed", "2", "--out", out, "--force");
});

test("logprobs: rows of length n-1, ids checked naming sequence and position", () => {
  const out = join(work, "lp");
  ok("model", "init", "--config", configPath, "--seed", "5", "--out", out);
  const ids = join(work, "ids.json");
  writeFileSync(ids, JSON.stringify({ sequences: [[1, 2, 3, 299], [7], [], [258, 257]] }));
  const rows = JSON.parse(ok("logprobs", "--model", out, "--ids", ids)).logprobs as number[][];
  assert.deepEqual(
    rows.map((r) => r.length),
    [3, 0, 0, 1],
  );
  for (const x of rows.flat()) assert.ok(x < 0 && x > -20, `log-prob ${x}`);
  writeFileSync(
    ids,
    JSON.stringify({
      sequences: [
        [1, 2],
        [3, 4, 300],
      ],
    }),
  );
  fails(["ids.json", "sequences[1][2]", "300"], "logprobs", "--model", out, "--ids", ids);
  writeFileSync(ids, JSON.stringify({ sequences: [[1, -1]] }));
  fails(["sequences[0][1]"], "logprobs", "--model", out, "--ids", ids);
  writeFileSync(ids, JSON.stringify({ seqs: [[1]] }));
  fails(["ids.json", "sequences"], "logprobs", "--model", out, "--ids", ids);
  fails(
    ["nowhere", "config.json"],
    "logprobs",
    "--model",
    join(work, "nowhere"),
    "--ids",
    join(work, "rm-ids.json"),
  );
});
