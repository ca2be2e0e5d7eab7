/**
 * Every trainer's run directory under kills: for each trainer (sft, offline preference training, the
 * online loop's training stage, the world's base policy, reward models) a run is killed at every
 * file-write boundary of its checkpoints in turn (crashPoint: weights, optimizer, trainer state, rename,
 * prune, each temp file, the final files) and rerun; the rerun must end with exactly the files of an
 * uninterrupted run, byte for byte, and no leftovers. Also: changed data or settings are refused naming
 * the change, and a non-finite loss stops training naming the step and keeps the last good checkpoint.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, test } from "node:test";
import { tokenizerConfigJson } from "../src/engine/chat.js";
import { saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { initLlamaTensors } from "../src/engine/init.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { LlamaModel } from "../src/engine/model.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { trainWorldBase, WORLD_BASE_DEFAULTS } from "../src/run/base.js";
import { ONLINE_DEFAULTS } from "../src/run/experiment.js";
import { type OnlineConfig, OnlineSession, runOnline } from "../src/run/online.js";
import { objectiveConfigSchema } from "../src/sso/objective.js";
import { type PreferencePair, type PreferenceRecord, pairsDigest } from "../src/sso/pairs.js";
import {
  type PreferenceTrainOptions,
  requiredKeys,
  runPreferenceTraining,
  scoreRecords,
} from "../src/train/preference.js";
import { runRewardTraining } from "../src/train/reward.js";
import { runSftTraining, type SftExample, type SftRunSettings } from "../src/train/sft.js";
import { setCrashHook } from "../src/util/crash.js";
import { UserError } from "../src/util/errors.js";
import { Rng } from "../src/util/rng.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-train-crash-"));
after(() => rmSync(work, { recursive: true, force: true }));

const tokenizer = BpeTokenizer.byteLevel();
const kernels = new PlainKernels();
const config = LlamaConfigSchema.parse({
  vocab_size: tokenizer.vocabSize,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  max_position_embeddings: 1024,
});

/** A fresh copy of the same starting policy, as each process of a rerun would load it. */
function policy(): LlamaModel {
  const model = new LlamaModel(config, kernels);
  model.initRandom(new Rng(7));
  return model;
}

/** Every file under `dir` (relative path -> sha256), so leftovers and differences both show. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else out[relative(dir, path)] = createHash("sha256").update(readFileSync(path)).digest("hex");
    }
  };
  walk(dir);
  return out;
}

class InjectedCrash extends Error {}

/** Kill points survived across the trainers (reported for the README's reliability section). */
let survivedTotal = 0;
after(() => process.stdout.write(`# kill points survived: ${survivedTotal}\n`));

/**
 * Runs `train` into a fresh directory (a copy of `start` if given) once uninterrupted, recording the
 * crash points it passes; then, for every recorded point, kills a fresh run there (an exception thrown from the
 * point: nothing after it runs, as with SIGKILL) and reruns it to the end, asserting the same files.
 * Returns the number of kill points survived.
 */
async function crashMatrix(
  label: string,
  train: (out: string) => unknown,
  start?: string,
  include: (trace: readonly string[], index: number) => boolean = () => true,
): Promise<number> {
  const reference = join(work, `${label}-reference`);
  // Runs may start from a prepared directory (the online loop's stages before training).
  const prepare = (out: string) => {
    if (start !== undefined) cpSync(start, out, { recursive: true });
  };
  prepare(reference);
  const trace: string[] = [];
  setCrashHook((point) => trace.push(point));
  try {
    await train(reference);
  } finally {
    setCrashHook(null);
  }
  const expected = snapshot(reference);
  let survived = 0;
  for (let i = 0; i < trace.length; i++) {
    if (!include(trace, i)) continue;
    const out = join(work, `${label}-killed-${i}`);
    prepare(out);
    let seen = 0;
    setCrashHook((point) => {
      if (seen++ === i) throw new InjectedCrash(point);
    });
    try {
      await assert.rejects(async () => train(out), InjectedCrash, `${label}: point ${i} (${trace[i]})`);
    } finally {
      setCrashHook(null);
    }
    await train(out);
    assert.deepEqual(snapshot(out), expected, `${label}: killed at point ${i} (${trace[i]}), rerun differs`);
    rmSync(out, { recursive: true, force: true });
    survived++;
  }
  for (const name of ["weights", "optimizer", "state", "rename", "publish-state"])
    assert.ok(trace.includes(name), `${label}: never passed ${name}`);
  survivedTotal += survived;
  return survived;
}

// ---------------------------------------------------------------------------------------------------
// sft

const sftExamples: SftExample[] = Array.from({ length: 6 }, (_, i) =>
  i % 3 === 0
    ? { text: `note ${i}: the sky is blue` }
    : {
        messages: [
          { role: "user", content: `add ${i} and 1` },
          { role: "assistant", content: `${i} + 1 = ${i + 1}` },
        ],
      },
);

const sftSettings: SftRunSettings = {
  dataSha256: "a".repeat(64),
  examples: sftExamples.length,
  epochs: 1,
  lr: 3e-3,
  batchSize: 2,
  microBatch: 2,
  maxLen: 64,
  warmupRatio: 0,
  weightDecay: 0.1,
  maxGradNorm: 1,
  seed: 3,
};

function sft(out: string, settings: Partial<SftRunSettings> = {}, restart = false) {
  return runSftTraining({
    out,
    restart,
    model: policy(),
    tokenizer,
    examples: sftExamples,
    settings: { ...sftSettings, ...settings },
    saveEvery: 1,
  });
}

test("sft: a kill at every write boundary of its checkpoints reruns to the uninterrupted files", async () => {
  const survived = await crashMatrix("sft", (out) => sft(out));
  assert.ok(survived > 20, `${survived}`);
});

/** Interrupts a run after its first checkpoint (a kill just after the rename). */
function interrupted(label: string, train: (out: string) => unknown): string {
  const out = join(work, label);
  setCrashHook((point) => {
    if (point === "rename") throw new InjectedCrash(point);
  });
  try {
    assert.throws(() => train(out), InjectedCrash);
  } finally {
    setCrashHook(null);
  }
  return out;
}

function refusal(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof UserError, String(error));
    for (const f of fragments) assert.ok(error.message.includes(f), `'${error.message}' lacks '${f}'`);
    return true;
  });
}

test("sft: resuming with changed data or settings is refused naming the change; restart starts over", () => {
  const out = interrupted("sft-changed", (dir) => sft(dir));
  refusal(() => sft(out, { lr: 1e-3 }), "started with --lr 0.003, this command has 0.001", "--restart");
  refusal(() => sft(out, { dataSha256: "b".repeat(64) }), "--data (sha256 of its bytes)");
  refusal(() => sft(out, { microBatch: 1 }), "--micro-batch 2, this command has 1");
  const restarted = sft(out, { lr: 1e-3 }, true);
  assert.equal(restarted.startStep, 0);
  assert.equal(restarted.complete, true);
  // A finished run is recognised and left alone; changed settings are still refused.
  const again = sft(out, { lr: 1e-3 });
  assert.equal(again.alreadyComplete, true);
  refusal(() => sft(out), "--lr 0.001, this command has 0.003");
});

test("a non-finite loss stops training naming the step and keeps the last good checkpoint", () => {
  const out = join(work, "sft-nan");
  // lr 1e30: the first update is finite but huge, so the next forward pass overflows.
  refusal(() => sft(out, { lr: 1e30 }), "step 2/3", "checkpoint-1 keeps the last good state", "--restart");
  assert.ok(existsSync(join(out, "checkpoint-1", "trainer_state.json")));
  assert.ok(!existsSync(join(out, "model.safetensors")), "no final model with broken weights");
  assert.ok(!existsSync(join(out, "checkpoint-2")));
});

// ---------------------------------------------------------------------------------------------------
// offline preference training (selfsteer train)

const records: PreferenceRecord[] = Array.from({ length: 6 }, (_, i) => ({
  instruction: `add ${i} and 2`,
  p_system: "Be accurate.",
  n_system: "Be careless.",
  chosen: `${i + 2}`,
  rejected: `${i + 3}`,
  raw: `maybe ${i}`,
}));

const preferenceOptions: Omit<PreferenceTrainOptions, "startStep"> = {
  maxLen: 64,
  microBatch: 4,
  objective: objectiveConfigSchema.parse({ loss: "ipo", beta: 0.2, sso: {} }),
  batchSize: 2,
  epochs: 1,
  peakLr: 1e-2,
  warmupRatio: 0,
  maxGradNorm: 1,
  seed: 3,
};

function preference(out: string, options: Partial<PreferenceTrainOptions> = {}, data = records) {
  const model = policy();
  const merged = { ...preferenceOptions, ...options };
  return runPreferenceTraining({
    out,
    restartHint: "pass --restart",
    model,
    tokenizer,
    records: data,
    options: merged,
    weightDecay: 0.1,
    saveEvery: 1,
    reference: () => scoreRecords(model, tokenizer, data, requiredKeys(merged.objective), merged),
  });
}

test("train: a kill at every write boundary of its checkpoints reruns to the uninterrupted files", async () => {
  await crashMatrix("train", (out) => preference(out));
});

test("train: resuming with changed data or settings is refused naming the change", () => {
  const out = interrupted("train-changed", (dir) => preference(dir));
  refusal(() => preference(out, { peakLr: 5e-3 }), "--lr 0.01, this command has 0.005");
  refusal(
    () => preference(out, { objective: objectiveConfigSchema.parse({ loss: "dpo", beta: 0.2, sso: {} }) }),
    "the objective (--loss, --beta, --sso)",
  );
  refusal(() => preference(out, {}, records.slice(1)), "--data (sha256 of its records)");
  assert.equal(preference(out).complete, true);
  assert.equal(preference(out).alreadyComplete, true);
});

// ---------------------------------------------------------------------------------------------------
// the online loop's training stage (selfsteer iterate)

function tinyBase(dir: string): void {
  saveCheckpoint(dir, {
    config,
    tensors: initLlamaTensors(config, 3),
    tokenizerJson: tokenizer.toJSON(),
    tokenizerConfigJson: tokenizerConfigJson(tokenizer),
  });
}

const onlineBase = join(work, "online-base");
tinyBase(onlineBase);

function onlineConfig(runDir: string, changes: Partial<OnlineConfig> = {}): OnlineConfig {
  return {
    ...ONLINE_DEFAULTS,
    baseModel: onlineBase,
    runDir,
    method: "sso",
    seed: 5,
    iterations: 1,
    queriesPerIteration: 4,
    evalQueries: 2,
    maxTokens: 12,
    evalMaxTokens: 4,
    batchSize: 2,
    maxLen: 1024,
    saveEvery: 1,
    genBatch: 8,
    ...changes,
  };
}

test("iterate: a kill at every write boundary of the training stage reruns to the uninterrupted run", async () => {
  // The stages before training (base evaluation, records, reference) done once, then killed in turn
  // at every write boundary from the training stage on.
  const before = join(work, "online-before-training");
  await assert.rejects(
    runOnline(new OnlineSession(onlineBase, kernels), onlineConfig(before), (e) => {
      if (e.type === "stage" && e.stage === "train") throw new InjectedCrash("train");
    }),
    InjectedCrash,
  );
  assert.ok(existsSync(join(before, "sso", "iter-1", "reference.json")));
  assert.ok(!existsSync(join(before, "sso", "iter-1", "model")));
  // The training stage writes through the same run directory as `train` (killed at every point
  // above), so here each kind of point is killed at its first occurrence, plus the first point of the
  // evaluation stage after it, to keep the test short.
  const survived = await crashMatrix(
    "online",
    (runDir) => runOnline(new OnlineSession(onlineBase, kernels), onlineConfig(runDir)),
    before,
    (trace, i) => trace.indexOf(trace[i]) === i || trace[i - 1] === "cleanup",
  );
  assert.ok(survived >= 10, `${survived}`);
});

test("iterate: a training stage resumed with other settings is refused naming the change", async () => {
  const runDir = join(work, "online-changed");
  setCrashHook((point) => {
    if (point === "rename") throw new InjectedCrash(point);
  });
  try {
    await assert.rejects(
      runOnline(new OnlineSession(onlineBase, kernels), onlineConfig(runDir)),
      InjectedCrash,
    );
  } finally {
    setCrashHook(null);
  }
  // The run's recorded settings refuse it first (src/run/run-settings.ts)...
  await assert.rejects(
    runOnline(new OnlineSession(onlineBase, kernels), onlineConfig(runDir, { peakLr: 1e-3 })),
    (error: unknown) =>
      error instanceof UserError &&
      error.message.includes(
        `field peakLr: this run was made with ${ONLINE_DEFAULTS.peakLr}, the command asks for 0.001`,
      ) &&
      error.message.includes("(--lr)"),
  );
  // ...and a run from before settings files were written is still refused by the training stage.
  rmSync(join(runDir, "sso", "settings.json"));
  await assert.rejects(
    runOnline(new OnlineSession(onlineBase, kernels), onlineConfig(runDir, { peakLr: 1e-3 })),
    (error: unknown) =>
      error instanceof UserError &&
      error.message.includes(`--lr ${ONLINE_DEFAULTS.peakLr}, this command has 0.001`) &&
      error.message.includes("to redo iteration 1"),
  );
  const rows = await runOnline(new OnlineSession(onlineBase, kernels), onlineConfig(runDir));
  assert.equal(rows.length, 2);
});

// ---------------------------------------------------------------------------------------------------
// the world's base policy (selfsteer world sft)

const worldOptions = {
  ...WORLD_BASE_DEFAULTS,
  corpusSize: 12,
  vocab: 270,
  hidden: 16,
  intermediate: 32,
  layers: 1,
  heads: 2,
  kvHeads: 1,
  maxLen: 96,
  epochs: 1,
  batchSize: 4,
  microBatch: 4,
  saveEvery: 1,
};

test("world sft: a kill at every write boundary of its checkpoints reruns to the uninterrupted files", async () => {
  await crashMatrix("world", (out) => trainWorldBase({ ...worldOptions, out }, kernels));
  assert.ok(existsSync(join(work, "world-reference", "world_base.json")));
});

test("world sft: changed settings are refused naming them; a finished base is recognised", () => {
  const out = interrupted("world-changed", (dir) => trainWorldBase({ ...worldOptions, out: dir }, kernels));
  refusal(
    () => trainWorldBase({ ...worldOptions, out, peakLr: 1e-3 }, kernels),
    "peakLr 0.003, this command has 0.001",
  );
  refusal(
    () => trainWorldBase({ ...worldOptions, out, corpusSize: 13 }, kernels),
    "corpusSize 12, this command has 13",
  );
  assert.equal(trainWorldBase({ ...worldOptions, out }, kernels).alreadyComplete, false);
  assert.equal(trainWorldBase({ ...worldOptions, out }, kernels).alreadyComplete, true);
});

// ---------------------------------------------------------------------------------------------------
// reward models (selfsteer rm train)

const pairs: PreferencePair[] = Array.from({ length: 6 }, (_, i) => ({
  id: `p${i}`,
  prompt: [{ role: "user", content: `is ${i} even?` }],
  chosen: i % 2 === 0 ? "yes" : "no",
  rejected: i % 2 === 0 ? "no" : "yes",
  subset: "pairs",
  format: "trl",
  line: i + 1,
}));

function rewardModel(): LlamaModel {
  const model = new LlamaModel(config, kernels, { scoreHead: true });
  model.initRandom(new Rng(8));
  return model;
}

function reward(out: string, options: { peakLr?: number; seed?: number } = {}, data = pairs) {
  return runRewardTraining({
    out,
    model: rewardModel(),
    tokenizer,
    meta: { config, tokenizerJson: tokenizer.toJSON(), tokenizerConfigJson: tokenizerConfigJson(tokenizer) },
    pairs: data,
    pairsDigest: pairsDigest(data),
    options: {
      batchSize: 2,
      microBatch: 2,
      epochs: 1,
      peakLr: 1e-2,
      warmupRatio: 0,
      maxGradNorm: 1,
      maxLen: 48,
      seed: 3,
      ...options,
    },
    weightDecay: 0.1,
    saveEvery: 1,
  });
}

test("rm train: a kill at every write boundary of its checkpoints reruns to the uninterrupted files", async () => {
  await crashMatrix("reward", (out) => reward(out));
});

test("rm train: resuming with changed pairs or settings is refused naming the change", () => {
  const out = interrupted("reward-changed", (dir) => reward(dir));
  refusal(() => reward(out, { peakLr: 2e-2 }), "--lr 0.01, this command has 0.02", "--restart");
  refusal(() => reward(out, {}, pairs.slice(1)), "--pairs (sha256 of its pairs)");
  assert.equal(reward(out).complete, true);
  assert.equal(reward(out).alreadyComplete, true);
});
