import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { tokenizerConfigJson } from "../src/engine/chat.js";
import { saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { initLlamaTensors } from "../src/engine/init.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { ONLINE_DEFAULTS, runExperiment } from "../src/run/experiment.js";
import { generatorObjective } from "../src/run/generator.js";
import {
  type OnlineConfig,
  type OnlineEvent,
  OnlineSession,
  objectiveFor,
  runOnline,
} from "../src/run/online.js";
import { stepSeries } from "../src/run/step-metrics.js";
import { readRecords } from "../src/sso/records.js";
import { writeFileAtomic } from "../src/util/fsio.js";

const root = mkdtempSync(join(tmpdir(), "selfsteer-gen-"));
after(() => rmSync(root, { recursive: true, force: true }));
const kernels = new PlainKernels();
const base = join(root, "base");
{
  const tokenizer = BpeTokenizer.byteLevel();
  const config = LlamaConfigSchema.parse({
    vocab_size: tokenizer.vocabSize,
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    tie_word_embeddings: true,
    max_position_embeddings: 1024,
  });
  saveCheckpoint(base, {
    config,
    tensors: initLlamaTensors(config, 3),
    tokenizerJson: tokenizer.toJSON(),
    tokenizerConfigJson: tokenizerConfigJson(tokenizer),
  });
}

function config(runDir: string, changes: Partial<OnlineConfig> = {}): OnlineConfig {
  return {
    ...ONLINE_DEFAULTS,
    baseModel: base,
    runDir,
    method: "generator",
    seed: 5,
    iterations: 1,
    queriesPerIteration: 4,
    evalQueries: 3,
    maxTokens: 12,
    evalMaxTokens: 6,
    batchSize: 2,
    maxLen: 1024,
    saveEvery: 1,
    genBatch: 2,
    ...changes,
  };
}

class Stop extends Error {}

test("the generator methods' objectives: L+ + L-, L+ only, L- only (DPO, beta 0.1, gamma 0.1); the policy: plain DPO", () => {
  assert.deepEqual(generatorObjective("generator").generator, { pos: true, neg: true, sftWeight: 0.1 });
  assert.deepEqual(generatorObjective("generator-pos").generator, { pos: true, neg: false, sftWeight: 0.1 });
  assert.deepEqual(generatorObjective("generator-neg").generator, { pos: false, neg: true, sftWeight: 0.1 });
  assert.equal(generatorObjective("generator").loss, "dpo");
  assert.equal(generatorObjective("generator").beta, 0.1);
  const policy = objectiveFor("generator", "ipo", 0.2);
  assert.equal(policy.loss, "dpo");
  assert.equal(policy.beta, 0.1);
  assert.equal(policy.sso, undefined);
  assert.equal(policy.generator, undefined);
  assert.equal(objectiveFor("sso", "ipo", 0.2, 0.3).sso?.steerBeta, 0.3);
  assert.equal(objectiveFor("no-weight", "ipo", 0.2, 1).sso?.steerBeta, 1);
  assert.equal(objectiveFor("sso", "ipo", 0.2).sso?.steerBeta, 0.1);
});

let uninterrupted: Awaited<ReturnType<typeof runOnline>>;
const fullRun = join(root, "full");

test("generator: records -> generator -> generated pairs -> policy, two iterations, iteration 1's records shared", async () => {
  const stages: string[] = [];
  uninterrupted = await runOnline(
    new OnlineSession(base, kernels),
    config(fullRun, { iterations: 2 }),
    (e) => {
      if (e.type === "stage" && e.iteration === 1) stages.push(e.stage);
    },
  );
  assert.deepEqual(stages, [
    "build",
    "generator-reference",
    "generator-train",
    "generate",
    "reference",
    "train",
    "eval",
  ]);
  assert.equal(uninterrupted.length, 3);
  for (const k of [1, 2]) {
    const dir = join(fullRun, "generator", `iter-${k}`);
    for (const file of [
      "generator/model.safetensors",
      "generated.jsonl",
      "generated.done.json",
      "model/model.safetensors",
    ])
      assert.ok(existsSync(join(dir, file)), `iter-${k}/${file}`);
    const row = uninterrupted[k];
    const generated = readRecords(join(dir, "generated.jsonl")).rows.map((r) => r.value);
    assert.equal(row.records, generated.length);
    assert.ok(generated.length > 0);
    // The policy's run was trained on the generated pairs with plain DPO (no steering term).
    const run = JSON.parse(readFileSync(join(dir, "model", "run.json"), "utf8"));
    assert.equal(run.fingerprint.objective.value, JSON.stringify(objectiveFor("generator", "ipo", 0.2)));
    assert.equal(run.fingerprint.recordCount.value, generated.length);
    assert.ok(row.train !== null && "loss/main" in row.train && !("loss/steer" in row.train));
    // The generator trained on the SSO records with both steering pairs and the SFT terms.
    const gen = JSON.parse(readFileSync(join(dir, "generator", "run.json"), "utf8"));
    assert.equal(gen.fingerprint.objective.value, JSON.stringify(generatorObjective("generator")));
    assert.ok(row.generator !== undefined);
    assert.equal(gen.fingerprint.recordCount.value, row.generator.records);
    for (const key of ["loss/steer", "loss/sft", "p_rewards/margins", "n_rewards/margins"])
      assert.ok(Number.isFinite(row.generator.train?.[key]), key);
    assert.ok(row.generator.signalAccuracy >= 0 && row.generator.signalAccuracy <= 1);
    assert.ok(row.signalAccuracy !== null && row.onPolicyGap !== null && Number.isFinite(row.onPolicyGap));
  }
  // Iteration 1's records come from the shared build; later ones are the method's own.
  assert.ok(existsSync(join(fullRun, "shared", "iter-1", "records.jsonl")));
  assert.ok(!existsSync(join(fullRun, "generator", "iter-1", "records.jsonl")));
  assert.ok(existsSync(join(fullRun, "generator", "iter-2", "records.jsonl")));
});

test("generator: a kill between any two stages, or inside one, and the same command gives the same numbers", async () => {
  // One run directory killed again and again, each time further on, then finished.
  const kills: Array<[string, (e: OnlineEvent) => boolean]> = [
    [
      "inside generator training",
      (e) => e.type === "progress" && e.stage === "generator-train" && e.done === 1,
    ],
    ["before generate", (e) => e.type === "stage" && e.stage === "generate"],
    [
      "inside generation",
      (e) => e.type === "progress" && e.stage === "generate" && e.done > 0 && e.done < e.total,
    ],
    ["before the policy's reference", (e) => e.type === "stage" && e.stage === "reference"],
    ["inside the policy's training", (e) => e.type === "progress" && e.stage === "train" && e.done === 1],
    ["before evaluation", (e) => e.type === "stage" && e.stage === "eval"],
  ];
  const runDir = join(root, "killed");
  // Start from the finished shared records and base evaluation, as a second method would.
  cpSync(join(fullRun, "shared"), join(runDir, "shared"), { recursive: true });
  cpSync(join(fullRun, "base-eval.json"), join(runDir, "base-eval.json"));
  for (const [name, when] of kills) {
    await assert.rejects(
      runOnline(new OnlineSession(base, kernels), config(runDir), (e) => {
        if (when(e)) throw new Stop(name);
      }),
      Stop,
      name,
    );
    assert.ok(!existsSync(join(runDir, "generator", "iter-1", "metrics.json")), name);
  }
  const resumed = await runOnline(new OnlineSession(base, kernels), config(runDir));
  assert.deepEqual(resumed, uninterrupted.slice(0, 2));
});

test("every method that builds from the base reads the same iteration-1 records file", async () => {
  const runDir = join(root, "shared");
  const session = new OnlineSession(base, kernels);
  const rows: Record<string, Awaited<ReturnType<typeof runOnline>>> = {};
  let builds = 0;
  for (const method of ["sso", "pbaa", "generator-neg"] as const)
    rows[method] = await runOnline(session, config(runDir, { method }), (e) => {
      if (e.type === "progress" && e.stage === "build" && e.done > 0) builds++;
    });
  assert.equal(builds, 2, "one build (4 queries in 2 batches), then read back");
  const digest = (method: string) =>
    JSON.parse(readFileSync(join(runDir, method, "iter-1", "model", "run.json"), "utf8")).fingerprint.records
      .value;
  assert.equal(digest("sso"), digest("pbaa"));
  assert.equal(rows.sso[1].records, rows.pbaa[1].records);
  assert.equal(rows.sso[1].signalAccuracy, rows.pbaa[1].signalAccuracy);
  assert.equal(rows["generator-neg"][1].generator?.records, rows.sso[1].records);
  for (const method of ["sso", "pbaa", "generator-neg"])
    assert.ok(!existsSync(join(runDir, method, "iter-1", "records.jsonl")), method);
  // The -neg ablation trains its generator on the neg pair only.
  assert.ok(!("p_rewards/margins" in (rows["generator-neg"][1].generator?.train ?? {})));
  assert.ok("n_rewards/margins" in (rows["generator-neg"][1].generator?.train ?? {}));
  // A rerun reads everything back.
  const again = await runOnline(new OnlineSession(base, kernels), config(runDir, { method: "sso" }));
  assert.deepEqual(again, rows.sso);
});

test("a run directory from before the sharing keeps reading its own iteration-1 records", async () => {
  const runDir = join(root, "legacy");
  await runOnline(new OnlineSession(base, kernels), config(runDir, { method: "pbaa" }));
  // Move the shared build where an older version wrote it, and forget the rest of iteration 1.
  const own = join(runDir, "pbaa", "iter-1");
  const before = readFileSync(join(own, "metrics.json"), "utf8");
  rmSync(own, { recursive: true });
  cpSync(join(runDir, "shared", "iter-1"), own, { recursive: true });
  rmSync(join(runDir, "shared"), { recursive: true });
  const rows = await runOnline(new OnlineSession(base, kernels), config(runDir, { method: "pbaa" }));
  assert.ok(!existsSync(join(runDir, "shared")));
  assert.deepEqual(rows[1], JSON.parse(before));
});

test("per-step curves: iterations one after the other, mean over seeds step by step", () => {
  const dir = join(root, "steps");
  const write = (run: string, losses: number[]) =>
    writeFileAtomic(
      join(dir, run, "metrics.jsonl"),
      `${losses.map((v, step) => JSON.stringify({ step, "loss/main": v })).join("\n")}\n{"torn`,
    );
  write("s1-i1", [4, 3]);
  write("s1-i2", [2]);
  write("s2-i1", [6, 5]);
  const series = stepSeries(
    [
      [join(dir, "s1-i1"), join(dir, "s1-i2")],
      [join(dir, "s2-i1"), join(dir, "s2-i2-missing")],
    ],
    ["loss/main", "loss/steer"],
  );
  assert.deepEqual(series, { "loss/main": [5, 4, 2] });
});

test("an experiment with a generator method plots the generator's own per-step losses", async () => {
  const runDir = join(root, "experiment");
  const { method: _m, seed: _s, ...rest } = config(runDir);
  await runExperiment({ ...rest, name: "gen", methods: ["generator-pos"], seeds: [5] }, kernels, {
    command: "test",
  });
  const report = JSON.parse(readFileSync(join(runDir, "report.json"), "utf8"));
  const row = report.methods["generator-pos"].iterations[1];
  assert.equal(typeof row["generator/loss/steer"], "number");
  assert.equal(typeof row["generator/p_rewards/margins"], "number");
  assert.equal(row["generator/n_rewards/margins"], undefined);
  assert.equal(typeof row["train/loss/main"], "number");
  for (const stem of [
    "steps-generator-loss_steer",
    "steps-generator-loss_sft",
    "steps-generator-p_rewards_margins",
    "steps-loss_main",
  ])
    assert.ok(existsSync(join(runDir, "plots", `${stem}.png`)), stem);
  assert.ok(!existsSync(join(runDir, "plots", "steps-generator-n_rewards_margins.png")));
  assert.match(readFileSync(join(runDir, "report.md"), "utf8"), /plots\/steps-generator-loss_steer\.png/);
});
