import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { renderExport, toLlamaFactorySso, toRewardBench, toTrl } from "../src/sso/export.js";
import type { SsoRecord } from "../src/sso/records.js";

const bin = fileURLToPath(new URL("../../bin/selfsteer", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "selfsteer-export-"));
after(() => rmSync(work, { recursive: true, force: true }));

function record(id: string): SsoRecord {
  return {
    id,
    instruction: `How does ${id} work?`,
    principles: [{ feature: "Accuracy", good: "be right", bad: "be wrong", source: "catalog" }],
    p_system: "Your response must be Accurate.",
    n_system: "Your response must be Inaccurate.",
    system: "",
    chosen: `A correct answer about ${id}.`,
    rejected: `A wrong answer about ${id}.`,
    raw: `A plain answer about ${id}.`,
    history: [],
    meta: {
      features: ["Accuracy"],
      featureSource: "policy",
      randomFeatureAdded: false,
      principleFallbacks: [],
      seed: 1,
      truncated: [],
    },
  };
}

const records = [record("alpha"), record("beta"), record("gamma")];
const recordsPath = join(work, "records.jsonl");
writeFileSync(recordsPath, records.map((r) => `${JSON.stringify(r)}\n`).join(""));

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runCli(args: string[]): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

function jsonl(path: string): unknown[] {
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as unknown);
}

test("each format maps a record to its own field names", () => {
  const r = records[0];
  assert.deepEqual(toTrl(r), { prompt: r.instruction, chosen: r.chosen, rejected: r.rejected });
  assert.deepEqual(toRewardBench(r, "sso"), {
    prompt: r.instruction,
    chosen: r.chosen,
    rejected: r.rejected,
    subset: "sso",
    id: "alpha",
  });
  const lf = toLlamaFactorySso(r);
  assert.deepEqual(Object.keys(lf).sort(), [
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
  assert.equal(lf.p_system, r.p_system);
  assert.equal(lf.raw, r.raw);
  assert.equal(renderExport([], "trl"), "");
  assert.equal(renderExport([], "llamafactory-sso"), "[]\n");
});

test("selfsteer export writes TRL, LlamaFactory and RewardBench files", async () => {
  const trl = join(work, "out", "trl.jsonl");
  const run = await runCli(["export", "--format", "trl", "--in", recordsPath, "--out", trl]);
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(JSON.parse(run.stdout), { format: "trl", records: 3, skipped: 0, out: trl });
  assert.deepEqual(jsonl(trl), records.map(toTrl));

  const lf = join(work, "lf.json");
  assert.equal(
    (await runCli(["export", "--format", "llamafactory-sso", "--in", recordsPath, "--out", lf])).code,
    0,
  );
  const array = JSON.parse(readFileSync(lf, "utf8")) as Array<Record<string, unknown>>;
  assert.equal(array.length, 3);
  assert.deepEqual(array, records.map(toLlamaFactorySso));
  for (const item of array) {
    assert.equal(item.system, "");
    assert.deepEqual(item.history, []);
    assert.equal("id" in item || "meta" in item, false);
  }

  const rb = join(work, "rb.jsonl");
  const rbRun = await runCli([
    "export",
    "--format",
    "rewardbench",
    "--in",
    recordsPath,
    "--out",
    rb,
    "--subset",
    "sso-iter1",
  ]);
  assert.equal(rbRun.code, 0, rbRun.stderr);
  assert.deepEqual(
    jsonl(rb),
    records.map((r) => toRewardBench(r, "sso-iter1")),
  );
});

test("bad records stop the export naming file, line and field, leaving the output untouched", async () => {
  const bad = join(work, "bad.jsonl");
  const { chosen: _dropped, ...noChosen } = record("delta");
  writeFileSync(
    bad,
    [JSON.stringify(records[0]), JSON.stringify(records[1]), JSON.stringify(noChosen), "{torn"].join("\n"),
  );
  const out = join(work, "existing.jsonl");
  writeFileSync(out, "previous contents\n");
  const run = await runCli(["export", "--format", "trl", "--in", bad, "--out", out]);
  assert.equal(run.code, 2, run.stderr);
  assert.ok(run.stderr.includes(`${bad}:3: field chosen`), run.stderr);
  assert.equal(readFileSync(out, "utf8"), "previous contents\n");

  const side = join(work, "bad-lines.jsonl");
  const skip = await runCli(["export", "--format", "trl", "--in", bad, "--out", out, "--bad-lines-to", side]);
  assert.equal(skip.code, 0, skip.stderr);
  assert.equal((JSON.parse(skip.stdout) as { skipped: number }).skipped, 2);
  assert.deepEqual(jsonl(out), records.slice(0, 2).map(toTrl));
  assert.deepEqual(
    (jsonl(side) as Array<{ line: number }>).map((b) => b.line),
    [3, 4],
  );
});

test("bad flags exit 2 with a clear message", async () => {
  const out = join(work, "never.jsonl");
  const format = await runCli(["export", "--format", "csv", "--in", recordsPath, "--out", out]);
  assert.equal(format.code, 2);
  assert.match(format.stderr, /--format: expected one of trl, llamafactory-sso, rewardbench, got 'csv'/);
  const missing = await runCli(["export", "--format", "trl", "--in", join(work, "nope.jsonl"), "--out", out]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /nope\.jsonl: cannot read file/);
  const same = await runCli(["export", "--format", "trl", "--in", recordsPath, "--out", recordsPath]);
  assert.equal(same.code, 2);
  assert.match(same.stderr, /--out: must differ from --in/);
  assert.equal(existsSync(out), false);
});
