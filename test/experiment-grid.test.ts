import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { Command } from "commander";
import { allCommands, commandPath } from "../src/cli/flags.js";
import { buildProgram } from "../src/cli/program.js";
import { tokenizerConfigJson } from "../src/engine/chat.js";
import { saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { initLlamaTensors } from "../src/engine/init.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { experimentUnits, ONLINE_DEFAULTS, runExperiment } from "../src/run/experiment.js";
import { gridUnits, parseGrid } from "../src/run/grid.js";
import { UserError } from "../src/util/errors.js";

test("a grid names its cells after their settings and pairs each sso cell with pbaa of the same loss", () => {
  const units = gridUnits(parseGrid(["steerBeta=0.1,0.3,1.0", "loss=ipo,dpo"]));
  assert.deepEqual(
    units.map((u) => [u.label, u.baseline]),
    [
      ["pbaa@loss=ipo", null],
      ["pbaa@loss=dpo", null],
      ["sso@steerBeta=0.1,loss=ipo", "pbaa@loss=ipo"],
      ["sso@steerBeta=0.1,loss=dpo", "pbaa@loss=dpo"],
      ["sso@steerBeta=0.3,loss=ipo", "pbaa@loss=ipo"],
      ["sso@steerBeta=0.3,loss=dpo", "pbaa@loss=dpo"],
      ["sso@steerBeta=1,loss=ipo", "pbaa@loss=ipo"],
      ["sso@steerBeta=1,loss=dpo", "pbaa@loss=dpo"],
    ],
  );
  const cell = units.find((u) => u.label === "sso@steerBeta=0.3,loss=dpo");
  assert.equal(cell?.method, "sso");
  assert.equal(cell?.steerBeta, 0.3);
  assert.equal(cell?.loss, "dpo");
  // Only steerBeta varies: the cells pair against the experiment's own pbaa, run once.
  const own = { loss: "ipo", beta: 0.2 } as const;
  assert.deepEqual(
    experimentUnits({ ...own, methods: ["pbaa", "sso"], grid: parseGrid(["steerBeta=0.3"]) }).map((u) => [
      u.label,
      u.baseline,
    ]),
    [
      ["pbaa", null],
      ["sso", "pbaa"],
      ["sso@steerBeta=0.3", "pbaa"],
    ],
  );
  // Cells with the experiment's own settings share the plain methods' runs (when those are in it).
  const both = experimentUnits({
    ...own,
    methods: ["sso", "pbaa"],
    grid: parseGrid(["steerBeta=0.1,1", "loss=ipo,dpo"]),
  });
  assert.deepEqual(
    both.filter((u) => u.dir !== undefined).map((u) => [u.label, u.dir]),
    [
      ["pbaa@loss=ipo", "pbaa"],
      ["sso@steerBeta=0.1,loss=ipo", "sso"],
    ],
  );
  assert.ok(
    experimentUnits({ ...own, methods: [], grid: parseGrid(["steerBeta=0.1", "loss=ipo"]) }).every(
      (u) => u.dir === undefined,
    ),
  );
  assert.throws(() => parseGrid(["loss=ipo", "loss=dpo"]), /--grid: key 'loss' is given twice/);
  assert.throws(() => parseGrid(["steerBeta=0.1,0.10"]), /--grid: steerBeta: a value is repeated/);
});

/** The program with `experiment`'s action replaced by one that records its options. */
async function parseExperiment(args: string[]): Promise<Record<string, unknown>> {
  const { program } = await buildProgram();
  let seen: Record<string, unknown> | null = null;
  for (const cmd of allCommands(program)) {
    cmd.configureOutput({ writeOut: () => {}, writeErr: () => {}, outputError: () => {} });
    if (commandPath(cmd) === "experiment")
      cmd.action((o: Record<string, unknown>, c: Command) => {
        seen = { ...o, methodsSource: c.getOptionValueSource("methods") };
      });
  }
  await program.parseAsync(["node", "selfsteer", "experiment", ...args]);
  assert.ok(seen !== null);
  return seen;
}

test("experiment --grid takes several axes after one flag, and refuses a bad key or value at parse time", async () => {
  const o = await parseExperiment(["--grid", "steerBeta=0.1,0.3,1", "loss=ipo,dpo", "--seeds", "1,2"]);
  assert.deepEqual(o.grid, ["steerBeta=0.1,0.3,1", "loss=ipo,dpo"]);
  assert.equal(o.methodsSource, "default");
  const again = await parseExperiment([
    "--grid",
    "steerBeta=0.1",
    "--grid",
    "loss=dpo",
    "--steer-beta",
    "0.5",
  ]);
  assert.deepEqual(again.grid, ["steerBeta=0.1", "loss=dpo"]);
  assert.equal(again.steerBeta, "0.5");
  for (const [bad, names] of [
    [["--grid", "steerBeta=0.1", "alpha=1"], "alpha"],
    [["--grid", "loss=ipo,kto"], "kto"],
    [["--grid", "steerBeta=-1"], "-1"],
    [["--grid", "steerBeta"], "steerBeta"],
    [["--steer-beta", "x"], "--steer-beta"],
  ] as const)
    await assert.rejects(
      parseExperiment([...bad]),
      (err: unknown) =>
        err instanceof UserError &&
        err.message.includes(bad[0]) &&
        err.message.includes(names) &&
        !err.message.includes("\n"),
      bad.join(" "),
    );
});

test("an experiment with a grid writes each cell's runs under its own name, with paired rows and a steering table", async () => {
  const root = mkdtempSync(join(tmpdir(), "selfsteer-grid-"));
  try {
    const base = join(root, "base");
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
    const runDir = join(root, "run");
    const experiment = {
      ...ONLINE_DEFAULTS,
      baseModel: base,
      name: "grid",
      runDir,
      // pbaa with the experiment's own loss (dpo here): the grid's pbaa@loss=dpo shares its runs.
      methods: ["pbaa" as const],
      loss: "dpo" as const,
      seeds: [5, 6],
      grid: parseGrid(["steerBeta=0.1,1", "loss=dpo"]),
      iterations: 1,
      queriesPerIteration: 4,
      evalQueries: 3,
      maxTokens: 8,
      evalMaxTokens: 4,
      batchSize: 2,
      maxLen: 1024,
      saveEvery: 0,
      genBatch: 8,
    };
    await runExperiment(experiment, new PlainKernels(), { command: "test" });
    for (const seed of [5, 6]) {
      for (const label of ["pbaa", "sso@steerBeta=0.1,loss=dpo", "sso@steerBeta=1,loss=dpo"])
        assert.ok(existsSync(join(runDir, `seed-${seed}`, label, "iter-1", "metrics.json")), label);
      assert.ok(!existsSync(join(runDir, `seed-${seed}`, "pbaa@loss=dpo")));
      assert.ok(existsSync(join(runDir, `seed-${seed}`, "shared", "iter-1", "records.jsonl")));
      // The cell's settings reached its objective.
      const run = JSON.parse(
        readFileSync(
          join(runDir, `seed-${seed}`, "sso@steerBeta=1,loss=dpo", "iter-1", "model", "run.json"),
          "utf8",
        ),
      );
      const objective = JSON.parse(run.fingerprint.objective.value);
      assert.equal(objective.loss, "dpo");
      assert.equal(objective.sso.steerBeta, 1);
    }
    const report = JSON.parse(readFileSync(join(runDir, "report.json"), "utf8"));
    assert.deepEqual(Object.keys(report.methods), [
      "pbaa",
      "pbaa@loss=dpo",
      "sso@steerBeta=0.1,loss=dpo",
      "sso@steerBeta=1,loss=dpo",
    ]);
    assert.deepEqual(report.grid, [
      { key: "steerBeta", values: ["0.1", "1"] },
      { key: "loss", values: ["dpo"] },
    ]);
    const cell = report.methods["sso@steerBeta=1,loss=dpo"];
    assert.equal(cell.pairedAgainst, "pbaa@loss=dpo");
    assert.deepEqual(cell.cell, { method: "sso", steerBeta: 1, loss: "dpo" });
    const gold = cell.paired.goldScore.find((r: { iteration: number }) => r.iteration === 1);
    assert.equal(gold.seeds, 2);
    const perSeed = [0, 1].map(
      (i) => cell.perSeed[i][1].goldScore - report.methods["pbaa@loss=dpo"].perSeed[i][1].goldScore,
    );
    assert.ok(Math.abs(gold.diff - (perSeed[0] + perSeed[1]) / 2) < 1e-12);
    assert.equal(report.methods["pbaa@loss=dpo"].paired, undefined);
    assert.equal(report.methods["pbaa@loss=dpo"].sameRunsAs, "pbaa");
    assert.deepEqual(report.methods["pbaa@loss=dpo"].perSeed, report.methods.pbaa.perSeed);
    const md = readFileSync(join(runDir, "report.md"), "utf8");
    assert.match(md, /## Steering study/);
    assert.match(md, /\| sso@steerBeta=1,loss=dpo \| 1 \| dpo \| pbaa@loss=dpo \| 2 \| 1 \|/);
    // Per-step curves: a plot per metric, listed in report.md; the iteration rows keep their means.
    for (const stem of [
      "loss_main",
      "loss_steer",
      "sso_weight",
      "rewards_margins",
      "p_rewards_margins",
      "n_rewards_margins",
    ]) {
      assert.ok(existsSync(join(runDir, "plots", `steps-${stem}.png`)), stem);
      assert.ok(existsSync(join(runDir, "plots", `steps-${stem}.svg`)), stem);
      assert.ok(md.includes(`(plots/steps-${stem}.png)`), stem);
    }
    const steerSvg = readFileSync(join(runDir, "plots", "steps-loss_steer.svg"), "utf8");
    assert.ok(steerSvg.includes("sso@steerBeta=1,loss=dpo") && !steerSvg.includes(">pbaa@loss=dpo<"));
    const row = cell.iterations[1];
    const perSeedSteer = [0, 1].map((i) => cell.perSeed[i][1].train["loss/steer"]);
    assert.ok(Math.abs(row["train/loss/steer"] - (perSeedSteer[0] + perSeedSteer[1]) / 2) < 1e-12);
    assert.equal(typeof row["train/sso/weight"], "number");
    assert.equal(report.methods["pbaa@loss=dpo"].iterations[1]["train/loss/steer"], undefined);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
