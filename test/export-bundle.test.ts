import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, test } from "node:test";
import type { SsoRecord } from "../src/sso/records.js";
import { fails, ok } from "./helpers/cli.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-bundle-"));
after(() => rmSync(work, { recursive: true, force: true }));

function record(id: string): SsoRecord {
  return {
    id,
    instruction: `Explain ${id}.`,
    principles: [{ feature: "Accuracy", good: "be right", bad: "be wrong", source: "catalog" }],
    p_system: "Your response should be Accurate.",
    n_system: "Your response should be Inaccurate.",
    system: "",
    chosen: `Right about ${id}.`,
    rejected: `Wrong about ${id}.`,
    raw: `Plain about ${id}.`,
    history: [],
  };
}

const recordsPath = join(work, "records.jsonl");
writeFileSync(recordsPath, [record("a"), record("b")].map((r) => `${JSON.stringify(r)}\n`).join(""));

/** Parses YAML with Python's yaml module when it is there (the format LlamaFactory and TRL read). */
function parseYaml(path: string): Record<string, unknown> | null {
  for (const py of ["python3", "/usr/bin/python3"]) {
    const r = spawnSync(
      py,
      ["-c", "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", path],
      {
        encoding: "utf8",
      },
    );
    if (r.status === 0) return JSON.parse(r.stdout) as Record<string, unknown>;
  }
  return null;
}

test("llamafactory-sso bundle: data, dataset_info entry, SSO config with the paper's settings, ZeRO-2", (t) => {
  const dir = join(work, "lf");
  const out = JSON.parse(
    ok(
      "export",
      "--format",
      "llamafactory-sso",
      "--in",
      recordsPath,
      "--out",
      dir,
      "--model",
      "/models/qwen2",
      "--template",
      "qwen",
    ),
  ) as { records: number; config: string; data: string };
  assert.equal(out.records, 2);
  const data = JSON.parse(readFileSync(join(dir, "sso.json"), "utf8")) as Array<Record<string, unknown>>;
  assert.deepEqual(Object.keys(data[0]).sort(), [
    "chosen",
    "history",
    "instruction",
    "n_system",
    "p_system",
    "principles",
    "raw",
    "rejected",
    "system",
  ]);
  const info = JSON.parse(readFileSync(join(dir, "dataset_info.json"), "utf8")) as Record<
    string,
    Record<string, unknown>
  >;
  const entry = info.selfsteer_sso;
  assert.equal(entry.file_name, "sso.json");
  assert.equal(entry.formatting, "sso");
  assert.equal(entry.ranking, true);
  // Every column the fork's convert_sso reads maps to a field the data has.
  for (const field of Object.values(entry.columns as Record<string, string>))
    assert.ok(field in data[0], field);
  const ds = JSON.parse(readFileSync(join(dir, "ds_z2_config.json"), "utf8")) as {
    zero_optimization: { stage: number };
  };
  assert.equal(ds.zero_optimization.stage, 2);
  const yaml = parseYaml(join(dir, "train_sso.yaml"));
  if (yaml === null) {
    t.diagnostic("python3-yaml not installed: the YAML was not parsed");
    return;
  }
  assert.equal(yaml.model_name_or_path, "/models/qwen2");
  assert.equal(yaml.stage, "dpo");
  assert.equal(yaml.pref_loss, "ipo");
  assert.equal(yaml.pref_beta, 0.2);
  assert.equal(yaml.SSO, true);
  assert.equal(yaml.W_function, true);
  assert.equal(yaml.W_alpha, 0.66);
  assert.equal(yaml.G_function, true);
  assert.equal(yaml.G_beta, 0.1);
  assert.equal(yaml.num_train_epochs, 1);
  assert.equal(yaml.lr_scheduler_type, "cosine");
  assert.equal(yaml.warmup_ratio, 0.1);
  assert.equal(yaml.bf16, true);
  assert.equal(yaml.template, "qwen");
  assert.equal(yaml.dataset, "selfsteer_sso");
  assert.equal(yaml.dataset_dir, resolve(dir));
  assert.equal(yaml.deepspeed, resolve(dir, "ds_z2_config.json"));
});

test("trl bundle: main pairs, full records, DPOConfig, README saying what is lost", () => {
  const dir = join(work, "trl");
  ok("export", "--format", "trl", "--in", recordsPath, "--out", dir, "--loss", "dpo");
  const rows = readFileSync(join(dir, "train.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.deepEqual(rows[0], { prompt: "Explain a.", chosen: "Right about a.", rejected: "Wrong about a." });
  assert.ok(existsSync(join(dir, "sso_records.jsonl")));
  assert.match(readFileSync(join(dir, "README.md"), "utf8"), /only the main\s+pair trains/);
  const yaml = parseYaml(join(dir, "dpo_config.yaml"));
  if (yaml !== null) {
    assert.equal(yaml.loss_type, "sigmoid");
    assert.equal(yaml.beta, 0.2);
  }
  fails(
    ["TRL's DPOTrainer has no such loss_type"],
    "export",
    "--format",
    "trl",
    "--in",
    recordsPath,
    "--out",
    join(work, "x"),
    "--loss",
    "simpo",
  );
});

test("single-file exports keep working; rewardbench has no bundle", () => {
  const file = join(work, "one.json");
  ok("export", "--format", "llamafactory-sso", "--in", recordsPath, "--out", file);
  assert.equal((JSON.parse(readFileSync(file, "utf8")) as unknown[]).length, 2);
  fails(
    ["a bundle directory is written for llamafactory-sso and trl only"],
    "export",
    "--format",
    "rewardbench",
    "--in",
    recordsPath,
    "--out",
    join(work, "rbdir"),
  );
});
