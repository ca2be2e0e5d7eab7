import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { tokenizerConfigJson } from "../src/engine/chat.js";
import { saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { initLlamaTensors } from "../src/engine/init.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { ONLINE_DEFAULTS, runExperiment } from "../src/run/experiment.js";
import { type OnlineConfig, OnlineSession, objectiveFor, runOnline } from "../src/run/online.js";

function tinyBase(dir: string): void {
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
  saveCheckpoint(dir, {
    config,
    tensors: initLlamaTensors(config, 3),
    tokenizerJson: tokenizer.toJSON(),
    tokenizerConfigJson: tokenizerConfigJson(tokenizer),
  });
}

function miniConfig(base: string, runDir: string): OnlineConfig {
  return {
    ...ONLINE_DEFAULTS,
    baseModel: base,
    runDir,
    method: "sso",
    seed: 5,
    iterations: 2,
    queriesPerIteration: 4,
    evalQueries: 7,
    maxTokens: 12,
    evalMaxTokens: 12,
    batchSize: 2,
    maxLen: 1024,
    saveEvery: 1,
    genBatch: 16,
  };
}

test("each method has docs/algorithm.md's objective", () => {
  assert.deepEqual(objectiveFor("sso", "ipo", 0.2).sso, {
    weight: "sigmoid",
    alpha: 0.66,
    steer: true,
    steerBeta: 0.1,
    ftx: 0,
    detachWeight: false,
  });
  assert.equal(objectiveFor("no-weight", "ipo", 0.2).sso?.weight, "none");
  assert.equal(objectiveFor("no-steer", "dpo", 0.2).sso?.steer, false);
  assert.equal(objectiveFor("pbaa", "ipo", 0.2).sso, undefined);
  assert.equal(objectiveFor("offpolicy", "simpo", 0.2).loss, "simpo");
});

test("a miniature online run finishes, reports every metric, and resumes to the same numbers", async () => {
  const root = mkdtempSync(join(tmpdir(), "selfsteer-online-"));
  try {
    const base = join(root, "base");
    tinyBase(base);
    const kernels = new PlainKernels();
    const session = new OnlineSession(base, kernels);
    const config = miniConfig(base, join(root, "run"));
    const rows = await runOnline(session, config);
    assert.equal(rows.length, 3);
    assert.equal(rows[0].iteration, 0);
    assert.equal(rows[0].winRate, 0.5);
    for (const row of rows.slice(1)) {
      assert.ok(row.signalAccuracy !== null && row.signalAccuracy >= 0 && row.signalAccuracy <= 1);
      assert.ok(row.onPolicyGap !== null && Number.isFinite(row.onPolicyGap));
      assert.ok(row.records !== null && row.records > 0);
      assert.ok(row.train !== null && Number.isFinite(row.train.loss));
      assert.ok("sso/weight" in (row.train ?? {}));
    }
    // Resume at a stage boundary: iteration 2 forgotten entirely.
    rmSync(join(config.runDir, "sso", "iter-2"), { recursive: true });
    const again = await runOnline(new OnlineSession(base, kernels), config);
    assert.deepEqual(again, rows);
    assert.ok(existsSync(join(config.runDir, "sso", "iter-2", "model", "model.safetensors")));
    // Resume at a step boundary: a run stopped in the middle of iteration 2's training, then rerun.
    const stepped = { ...config, runDir: join(root, "stepped") };
    class Stop extends Error {}
    await assert.rejects(
      runOnline(new OnlineSession(base, kernels), stepped, (e) => {
        if (e.type === "progress" && e.stage === "train" && e.iteration === 2 && e.done === 2)
          throw new Stop();
      }),
      Stop,
    );
    assert.ok(
      existsSync(join(stepped.runDir, "sso", "iter-2", "model", "checkpoint-1", "trainer_state.json")),
    );
    const resumed = await runOnline(new OnlineSession(base, kernels), stepped);
    assert.deepEqual(resumed, rows);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("an experiment over two methods writes report.json in the demo's shape, Markdown and plots", async () => {
  const root = mkdtempSync(join(tmpdir(), "selfsteer-exp-"));
  try {
    const base = join(root, "base");
    tinyBase(base);
    const runDir = join(root, "run");
    const { iterations: _i, ...rest } = miniConfig(base, runDir);
    await runExperiment(
      { ...rest, iterations: 1, name: "mini", runDir, methods: ["sso", "pbaa"], seeds: [5] },
      new PlainKernels(),
      { command: "test" },
    );
    const report = JSON.parse(readFileSync(join(runDir, "report.json"), "utf8"));
    for (const method of ["sso", "pbaa"]) {
      const its = report.methods[method].iterations;
      assert.equal(its.length, 2);
      for (const key of [
        "goldScore",
        "winRate",
        "winRateLC",
        "exactMatch",
        "meanLength",
        "signalAccuracy",
        "onPolicyGap",
      ])
        assert.ok(key in its[1], `${method} ${key}`);
    }
    assert.match(readFileSync(join(runDir, "report.md"), "utf8"), /\| sso \| 1 \|/);
    assert.ok(existsSync(join(runDir, "plots", "goldScore.png")));
    assert.ok(existsSync(join(runDir, "plots", "goldScore.svg")));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("a run directory refuses a command with other settings before any work, and names the flag", async () => {
  const root = mkdtempSync(join(tmpdir(), "selfsteer-settings-"));
  try {
    const base = join(root, "base");
    tinyBase(base);
    const runDir = join(root, "run");
    const { iterations: _i, ...rest } = miniConfig(base, runDir);
    const config = {
      ...rest,
      iterations: 1,
      name: "mini",
      runDir,
      methods: ["pbaa" as const],
      seeds: [5, 6],
    };
    await runExperiment(config, new PlainKernels(), { command: "test" });
    const reportBefore = readFileSync(join(runDir, "report.json"), "utf8");
    const stored = JSON.parse(readFileSync(join(runDir, "seed-5", "pbaa", "settings.json"), "utf8"));
    assert.equal(stored.peakLr, rest.peakLr);

    // Another learning rate: refused with the file, the field, both values and the flag; nothing written.
    await assert.rejects(
      runExperiment({ ...config, peakLr: rest.peakLr * 2 }, new PlainKernels(), { command: "test" }),
      (e: Error) =>
        e.name === "UserError" &&
        e.message.includes(join(runDir, "seed-5", "pbaa", "settings.json")) &&
        /field peakLr: this run was made with 0\.0002, the command asks for 0\.0004/.test(e.message) &&
        e.message.includes("--lr"),
    );
    assert.equal(readFileSync(join(runDir, "report.json"), "utf8"), reportBefore);

    // A new seed listed first is not started when a later seed's run disagrees.
    await assert.rejects(
      runExperiment({ ...config, seeds: [4, 5], beta: 0.5 }, new PlainKernels(), { command: "test" }),
      /seed-5.*field beta/,
    );
    assert.equal(existsSync(join(runDir, "seed-4")), false);

    // The same command reads everything back. A run from before settings files is accepted and is not
    // given this command's settings, which it may not have been made with.
    rmSync(join(runDir, "seed-6", "settings.json"));
    rmSync(join(runDir, "seed-6", "pbaa", "settings.json"));
    await runExperiment(config, new PlainKernels(), { command: "test" });
    assert.equal(existsSync(join(runDir, "seed-6", "settings.json")), false);
    assert.equal(existsSync(join(runDir, "seed-6", "pbaa", "settings.json")), false);
    assert.deepEqual(
      JSON.parse(readFileSync(join(runDir, "report.json"), "utf8")).methods,
      JSON.parse(reportBefore).methods,
    );

    // A base retrained in place (same path, other weights) is told apart by its content.
    const other = join(root, "other");
    tinyBase(other);
    rmSync(base, { recursive: true });
    const tokenizer = BpeTokenizer.byteLevel();
    const baseConfig = JSON.parse(readFileSync(join(other, "config.json"), "utf8"));
    saveCheckpoint(base, {
      config: LlamaConfigSchema.parse(baseConfig),
      tensors: initLlamaTensors(LlamaConfigSchema.parse(baseConfig), 4),
      tokenizerJson: tokenizer.toJSON(),
      tokenizerConfigJson: tokenizerConfigJson(tokenizer),
    });
    await assert.rejects(
      runExperiment(config, new PlainKernels(), { command: "test" }),
      /field base: the base checkpoint.*another --out/,
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
