import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadCheckpoint } from "../src/engine/checkpoint.js";
import { fails, ok, selfsteer } from "./helpers/cli.js";

const fixtures = fileURLToPath(new URL("../../test/fixtures/rm/", import.meta.url));
const mixed = join(fixtures, "mixed-formats.jsonl");
const rewardBench = join(fixtures, "rewardbench-sample.jsonl");
const work = mkdtempSync(join(tmpdir(), "selfsteer-rm-cli-"));
after(() => rmSync(work, { recursive: true, force: true }));

const policy = join(work, "policy");
const rm = join(work, "rm");
const fast = ["--backend", "plain", "--batch-size", "3", "--micro-batch", "2"];

before(() => {
  const config = join(work, "config.json");
  writeFileSync(
    config,
    JSON.stringify({
      vocab_size: 259,
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 256,
    }),
  );
  ok("model", "init", "--config", config, "--seed", "1", "--out", policy);
  ok(
    "rm",
    "train",
    "--model",
    policy,
    "--pairs",
    mixed,
    "--out",
    rm,
    "--epochs",
    "2",
    "--lr",
    "1e-2",
    ...fast,
  );
});

test("rm train writes an HF reward-model checkpoint initialised from the policy", () => {
  const config = JSON.parse(readFileSync(join(rm, "config.json"), "utf8"));
  assert.deepEqual(config.architectures, ["LlamaForSequenceClassification"]);
  assert.equal(config.num_labels, 1);
  const ckpt = loadCheckpoint(rm);
  assert.equal(ckpt.scoreHead, true);
  assert.deepEqual(ckpt.tensors.get("score.weight")?.shape, [1, 16]);
  assert.equal(ckpt.tensors.has("lm_head.weight"), false);
  assert.ok(ckpt.tokenizerJson !== undefined && ckpt.tokenizerConfigJson !== undefined);

  // At learning rate 0 the backbone is the policy's and the head is a seeded N(0, 0.02^2) draw.
  let runs = 0;
  const frozen = (seed: string) => {
    const out = join(work, `frozen-${runs++}`);
    const summary = JSON.parse(
      ok(
        "rm",
        "train",
        "--model",
        policy,
        "--pairs",
        mixed,
        "--out",
        out,
        "--lr",
        "0",
        "--seed",
        seed,
        ...fast,
      ),
    );
    assert.equal(summary.score_head_init, "random");
    assert.deepEqual(summary.formats, { rewardbench: 2, trl: 3, sso: 2 });
    assert.equal(summary.total_steps, 3);
    assert.equal(summary.complete, true);
    return loadCheckpoint(out);
  };
  const a = frozen("4");
  const b = frozen("4");
  const c = frozen("5");
  const base = loadCheckpoint(policy);
  for (const [name, t] of base.tensors) {
    if (name === "lm_head.weight") continue;
    assert.deepEqual(a.tensors.get(name)?.data, t.data, name);
  }
  const head = a.tensors.get("score.weight")!.data;
  assert.deepEqual(b.tensors.get("score.weight")?.data, head);
  assert.notDeepEqual(c.tensors.get("score.weight")?.data, head);
  const rms = Math.sqrt(head.reduce((s, x) => s + x * x, 0) / head.length);
  assert.ok(rms > 0.005 && rms < 0.05, `score head rms ${rms}`);

  // A reward model given as --model keeps its head.
  const again = JSON.parse(
    ok("rm", "train", "--model", rm, "--pairs", mixed, "--out", join(work, "again"), "--lr", "0", ...fast),
  );
  assert.equal(again.score_head_init, "checkpoint");
  assert.deepEqual(
    loadCheckpoint(join(work, "again")).tensors.get("score.weight")?.data,
    loadCheckpoint(rm).tensors.get("score.weight")?.data,
  );
});

test("rm eval reads RewardBench rows and reports subsets, sections and the overall score", () => {
  const scoresOut = join(work, "pair-scores.jsonl");
  const report = JSON.parse(
    ok("rm", "eval", "--model", rm, "--data", rewardBench, "--json", "--scores-out", scoresOut),
  );
  assert.equal(report.n, 9);
  assert.deepEqual(
    report.sections.map((s: { section: string }) => s.section),
    ["Chat", "Chat Hard", "Safety", "Reasoning"],
  );
  const sectionOf = Object.fromEntries(
    report.subsets.map((s: { subset: string; section: string | null }) => [s.subset, s.section]),
  );
  assert.deepEqual(sectionOf, {
    "alpacaeval-easy": "Chat",
    "alpacaeval-length": "Chat",
    "mt-bench-hard": "Chat Hard",
    "llmbar-natural": "Chat Hard",
    "refusals-dangerous": "Safety",
    "xstest-should-respond": "Safety",
    "math-prm": "Reasoning",
    "hep-python": "Reasoning",
    "world-custom": null,
  });
  // The report agrees with the per-pair scores it was made from.
  const pairs = readFileSync(scoresOut, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.equal(pairs.length, 9);
  assert.equal(report.correct, pairs.filter((p) => p.chosen_score > p.rejected_score).length);
  const parts = [
    ...report.sections.map((s: { score: number }) => s.score),
    report.subsets.find((s: { subset: string }) => s.subset === "world-custom").accuracy,
  ];
  assert.ok(
    Math.abs(report.overall - parts.reduce((a: number, b: number) => a + b, 0) / parts.length) < 1e-12,
  );

  // --sections puts our own subset in a section; the table is for people.
  const sections = join(work, "sections.json");
  writeFileSync(sections, JSON.stringify({ Chat: ["world-custom"] }));
  const withSections = JSON.parse(
    ok("rm", "eval", "--model", rm, "--data", rewardBench, "--json", "--sections", sections),
  );
  assert.deepEqual(withSections.sections[0].subsets.sort(), [
    "alpacaeval-easy",
    "alpacaeval-length",
    "world-custom",
  ]);
  const table = ok("rm", "eval", "--model", rm, "--data", rewardBench);
  assert.match(table, /^section\s+subset\s+pairs\s+accuracy$/m);
  assert.match(table, /^Chat Hard: \d+\.\d \(2 pairs\)$/m);
  assert.match(table, /^overall: \d+\.\d \(9 pairs; plain accuracy \d+\.\d\)$/m);

  // rm score gives the same number for the same (prompt, response) as rm eval did.
  const items = join(work, "items.jsonl");
  const row = JSON.parse(readFileSync(rewardBench, "utf8").split("\n")[6]);
  writeFileSync(items, `${JSON.stringify({ id: "x", prompt: row.prompt, response: row.chosen })}\n`);
  const scored = JSON.parse(ok("rm", "score", "--model", rm, "--data", items));
  assert.equal(scored.id, "x");
  // Batches of different shapes may round differently, hence a tolerance rather than equality.
  assert.ok(Math.abs(scored.score - pairs[6].chosen_score) <= 1e-5 * Math.max(1, Math.abs(scored.score)));
});

test("rm score reads {prompt, response} and {messages} lines and writes {id?, score}", () => {
  const items = join(fixtures, "score-items.jsonl");
  const lines = ok("rm", "score", "--model", rm, "--data", items)
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.equal(lines.length, 3);
  assert.deepEqual(Object.keys(lines[0]), ["id", "score"]);
  assert.equal(lines[0].id, "a");
  assert.deepEqual(Object.keys(lines[1]), ["score"]);
  assert.equal(lines[2].id, "7");
  for (const l of lines) assert.ok(Number.isFinite(l.score));
  assert.notEqual(lines[0].score, lines[2].score);
  const out = join(work, "scores.jsonl");
  const summary = JSON.parse(ok("rm", "score", "--model", rm, "--data", items, "--out", out));
  assert.deepEqual(summary, { out, items: 3 });
  assert.deepEqual(
    readFileSync(out, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l)),
    lines,
  );
});

test("bad input exits 2 naming the file, line and field", () => {
  const bad = join(work, "bad-pairs.jsonl");
  writeFileSync(bad, '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n');
  fails(
    [`${bad}:2: field rejected: missing`],
    "rm",
    "train",
    "--model",
    policy,
    "--pairs",
    bad,
    "--out",
    join(work, "x"),
  );
  fails([`${bad}:2: field rejected`], "rm", "eval", "--model", rm, "--data", bad);
  const badRole = join(work, "bad-role.jsonl");
  writeFileSync(
    badRole,
    '\n{"prompt": [{"role": "bot", "content": "hi"}], "chosen": "a", "rejected": "b"}\n',
  );
  fails([`${badRole}:2: field prompt[0].role`], "rm", "eval", "--model", rm, "--data", badRole);
  const badScore = join(work, "bad-score.jsonl");
  writeFileSync(
    badScore,
    '{"prompt": "p", "response": "r"}\n{"messages": [{"role": "user", "content": "q"}]}\n',
  );
  fails([`${badScore}:2: field messages[0].role`], "rm", "score", "--model", rm, "--data", badScore);
  const notJson = join(work, "not-json.jsonl");
  writeFileSync(notJson, '{"prompt": "p", "response": "r"}\n{"prompt": \n');
  fails([`${notJson}:2: invalid JSON`], "rm", "score", "--model", rm, "--data", notJson);
  fails([`${policy}: not a reward model`], "rm", "eval", "--model", policy, "--data", rewardBench);
  fails(
    ["--backend: expected one of auto, blas, wasm, plain"],
    "rm",
    "eval",
    "--model",
    rm,
    "--data",
    rewardBench,
    "--backend",
    "gpu",
  );
  fails(
    ["--lr: expected a number"],
    "rm",
    "train",
    "--model",
    policy,
    "--pairs",
    mixed,
    "--out",
    join(work, "y"),
    "--lr",
    "fast",
  );
  fails(
    ["already holds files that are not from a reward-model run", "--restart"],
    "rm",
    "train",
    "--model",
    policy,
    "--pairs",
    mixed,
    "--out",
    policy,
  );
  const sections = join(work, "bad-sections.json");
  writeFileSync(sections, JSON.stringify({ Chat: "alpacaeval-easy" }));
  fails(
    [`${sections}: field Chat`],
    "rm",
    "eval",
    "--model",
    rm,
    "--data",
    rewardBench,
    "--sections",
    sections,
  );
});

test("an interrupted rm train resumes to the same weights; changed settings or data are refused", () => {
  const args = (out: string, ...extra: string[]) => [
    "rm",
    "train",
    "--model",
    policy,
    "--pairs",
    mixed,
    "--out",
    out,
    "--epochs",
    "3",
    "--lr",
    "1e-2",
    "--save-every",
    "2",
    ...fast,
    ...extra,
  ];
  const whole = join(work, "whole");
  const parts = join(work, "parts");
  ok(...args(whole));
  const first = JSON.parse(ok(...args(parts, "--steps", "3")));
  assert.deepEqual([first.steps_done, first.complete], [3, false]);
  fails(["started with --lr 0.01, this command has 0.02", "--restart"], ...args(parts, "--lr", "0.02"));
  fails(["started with --seed 0, this command has 7"], ...args(parts, "--seed", "7"));
  const other = join(work, "other-pairs.jsonl");
  writeFileSync(other, readFileSync(mixed, "utf8").split("\n").slice(1).join("\n"));
  fails(
    ["--pairs (sha256 of its pairs)"],
    "rm",
    "train",
    "--model",
    policy,
    "--pairs",
    other,
    "--out",
    parts,
    "--epochs",
    "3",
    "--lr",
    "1e-2",
    ...fast,
  );
  const second = JSON.parse(ok(...args(parts)));
  assert.deepEqual(
    [second.resumed_from_step, second.steps_run, second.steps_done, second.complete],
    [3, 6, 9, true],
  );
  assert.equal(second.score_head_init, "resumed");
  assert.deepEqual(
    readFileSync(join(parts, "model.safetensors")),
    readFileSync(join(whole, "model.safetensors")),
  );
  // A finished run reruns as a no-op.
  const third = JSON.parse(ok(...args(parts)));
  assert.deepEqual([third.steps_run, third.complete], [0, true]);

  // Weights that do not match their commit record (changed after the save) are refused.
  const torn = join(work, "torn");
  ok(...args(torn, "--steps", "2"));
  copyFileSync(join(whole, "model.safetensors"), join(torn, "checkpoint-2", "model.safetensors"));
  fails(["model.safetensors: does not match", "trainer_state.json", "--restart"], ...args(torn));
});

test("rm train warns, before training, naming the pairs whose system prompt --max-len cuts", () => {
  const pairs = join(work, "long-system.jsonl");
  const pair = (system: string) =>
    JSON.stringify({
      prompt: [
        { role: "system", content: system },
        { role: "user", content: "Say hi." },
      ],
      chosen: "Hi!",
      rejected: "Goodbye.",
    });
  // Pair 2's system turn (about 70 tokens) does not fit in half of 48 tokens, for either response.
  writeFileSync(pairs, `${[pair("Be brief."), pair("Be accurate. ".repeat(5))].join("\n")}\n`);
  const args = (out: string, maxLen: string) => [
    "rm",
    "train",
    "--model",
    policy,
    "--pairs",
    pairs,
    "--out",
    join(work, out),
    "--max-len",
    maxLen,
    ...fast,
  ];
  const r = selfsteer(...args("long-system", "48"));
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stderr,
    /selfsteer: 1 pair\(s\) too long to keep their system prompt whole at --max-len 48 \(2 sequence\(s\)[^\n]*: pair 2\n/,
  );
  const roomy = selfsteer(...args("roomy-system", "128"));
  assert.equal(roomy.status, 0, roomy.stderr);
  assert.doesNotMatch(roomy.stderr, /too long to keep/);
});
