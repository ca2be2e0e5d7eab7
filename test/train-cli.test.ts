/**
 * Real kills of the training commands: SELFSTEER_CRASH_AT makes the process SIGKILL itself at a named
 * write boundary of a checkpoint (for sft, from its training worker thread), as a crash or `kill -9`
 * would; the rerun must end with the uninterrupted run's files and leave nothing behind. Rerunning a
 * finished --out is reported as complete; other settings are refused naming them.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { tokenizerConfigJson } from "../src/engine/chat.js";
import { saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { initLlamaTensors } from "../src/engine/init.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { SELFSTEER_BIN } from "./helpers/cli.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-train-cli-"));
after(() => rmSync(work, { recursive: true, force: true }));

const tokenizer = BpeTokenizer.byteLevel();
const config = LlamaConfigSchema.parse({
  vocab_size: tokenizer.vocabSize,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  max_position_embeddings: 128,
});
const base = join(work, "base");
saveCheckpoint(base, {
  config,
  tensors: initLlamaTensors(config, 3),
  tokenizerJson: tokenizer.toJSON(),
  tokenizerConfigJson: tokenizerConfigJson(tokenizer),
});

function run(args: string[], crashAt?: string) {
  const env = { ...process.env };
  if (crashAt === undefined) delete env.SELFSTEER_CRASH_AT;
  else env.SELFSTEER_CRASH_AT = crashAt;
  return spawnSync(process.execPath, [SELFSTEER_BIN, ...args], { encoding: "utf8", env });
}

function ok(args: string[]): Record<string, unknown> {
  const r = run(args);
  assert.equal(r.status, 0, `selfsteer ${args.join(" ")}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** The final files of a run directory (everything but the checkpoints, which must be gone). */
function files(dir: string): Record<string, string> {
  const names = readdirSync(dir).sort();
  return Object.fromEntries(names.map((n) => [n, readFileSync(join(dir, n)).toString("base64")]));
}

/** Kills `args` at `crashAt`, reruns it, and compares with an uninterrupted run. */
function killAndRerun(label: string, args: (out: string) => string[], crashAt: string): string {
  const reference = join(work, `${label}-reference`);
  ok(args(reference));
  const out = join(work, `${label}-killed`);
  const killed = run(args(out), crashAt);
  assert.equal(killed.signal, "SIGKILL", `${label}: expected a kill at ${crashAt}: ${killed.stderr}`);
  const rerun = ok(args(out));
  assert.equal(rerun.complete ?? true, true);
  assert.deepEqual(files(out), files(reference), `${label}: the rerun after a kill at ${crashAt} differs`);
  return out;
}

test("sft killed between a checkpoint's weights and optimizer (from its worker thread) reruns to the same files", () => {
  const data = join(work, "sft.jsonl");
  writeFileSync(
    data,
    `${Array.from({ length: 6 }, (_, i) => JSON.stringify({ text: `line ${i}` })).join("\n")}\n`,
  );
  const args = (out: string) =>
    ["sft", "--model", base, "--data", data, "--out", out, "--batch-size", "2", "--save-every", "1"].concat([
      "--backend",
      "plain",
    ]);
  killAndRerun("sft", args, "weights:2");
});

test("train killed just before a checkpoint's trainer state reruns to the same files; a finished --out is complete", () => {
  const data = join(work, "records.jsonl");
  const line = (i: number) =>
    JSON.stringify({
      instruction: `add ${i} and 2`,
      p_system: "Be accurate.",
      n_system: "Be careless.",
      chosen: `${i + 2}`,
      rejected: `${i + 3}`,
      raw: `maybe ${i}`,
    });
  writeFileSync(data, `${[0, 1, 2, 3, 4, 5].map(line).join("\n")}\n`);
  const args = (out: string, ...extra: string[]) => [
    "train",
    "--model",
    base,
    "--data",
    data,
    "--out",
    out,
    "--sso",
    "--batch-size",
    "2",
    "--max-len",
    "64",
    "--save-every",
    "1",
    "--backend",
    "plain",
    ...extra,
  ];
  const out = killAndRerun("train", (o) => args(o), "optimizer:2");
  const again = run(args(out));
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stderr, /already complete/);
  assert.equal(JSON.parse(again.stdout).alreadyComplete, true);
  const changed = run(args(out, "--lr", "1e-3"));
  assert.equal(changed.status, 2);
  assert.match(changed.stderr, /started with --lr 0\.0005, this command has 0\.001.*--restart/);
  const restarted = JSON.parse(run(args(out, "--lr", "1e-3", "--restart")).stdout);
  assert.equal(restarted.alreadyComplete, false);
});

test("train warns, before training, naming the records whose principle system prompt --max-len cuts", () => {
  const data = join(work, "long-system.jsonl");
  const record = (p_system: string) =>
    JSON.stringify({
      instruction: "add 1 and 2",
      p_system,
      n_system: "Be careless.",
      chosen: "3",
      rejected: "4",
      raw: "5",
    });
  // Record 2's p+ turn (about 75 tokens) does not fit in half of 64 tokens; record 1's does.
  writeFileSync(data, `${[record("Be accurate."), record("Be accurate. ".repeat(5))].join("\n")}\n`);
  const args = ["train", "--model", base, "--data", data, "--out", join(work, "long-system")];
  const r = run([...args, "--sso", "--batch-size", "2", "--max-len", "64", "--backend", "plain"]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stderr,
    /selfsteer: 1 record\(s\) too long to keep their principle system prompt whole at --max-len 64 \(2 sequence\(s\)[^\n]*: record 2\n/,
  );
  const roomy = run([
    ...args,
    "--sso",
    "--batch-size",
    "2",
    "--max-len",
    "128",
    "--restart",
    "--backend",
    "plain",
  ]);
  assert.equal(roomy.status, 0, roomy.stderr);
  assert.doesNotMatch(roomy.stderr, /principle system prompt/);
});

test("rm train killed while writing its final files reruns to the same files", () => {
  const data = join(work, "pairs.jsonl");
  const line = (i: number) =>
    JSON.stringify({ prompt: `is ${i} even?`, chosen: i % 2 ? "no" : "yes", rejected: i % 2 ? "yes" : "no" });
  writeFileSync(data, `${[0, 1, 2, 3, 4, 5].map(line).join("\n")}\n`);
  const args = (out: string) =>
    ["rm", "train", "--model", base, "--pairs", data, "--out", out, "--batch-size", "2"].concat([
      "--save-every",
      "1",
      "--max-len",
      "48",
      "--backend",
      "plain",
    ]);
  killAndRerun("rm", args, "publish-optimizer:1");
});
