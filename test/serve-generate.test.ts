import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type ServerHandle, startServer } from "../src/serve/server.js";
import { SsoRecordSchema } from "../src/sso/records.js";
import { bin, makeTinyCheckpoint } from "./helpers/serve-fixture.js";

// End to end: `selfsteer generate` builds SSO records by sampling a local checkpoint through
// `selfsteer serve`. The random model writes gibberish, so records are kept or dropped by the
// reference filters, but every prompt must end up in one of the two files and the command must succeed.

const work = mkdtempSync(join(tmpdir(), "selfsteer-serve-generate-"));
// One layer and one kv head: the builder's few-shot prompts run to ~1300 tokens, and their prefill
// attention dominates the run on the plain kernels.
const modelDir = makeTinyCheckpoint(join(work, "tiny"), {
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  max_position_embeddings: 4096,
});
const NAME = "tiny";
let server: ServerHandle;

before(async () => {
  server = await startServer({ modelDir, modelName: NAME, port: 0, backend: "plain", maxBatch: 16 });
});

after(async () => {
  await server.close();
  rmSync(work, { recursive: true, force: true });
});

/** Runs the CLI without blocking this process's event loop (the server lives here). */
function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
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
    const guard = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(guard);
      resolve({ code, stdout, stderr });
    });
  });
}

function jsonLines(path: string): unknown[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line));
}

test("selfsteer generate --endpoint <serve> builds SSO records, reproducibly for a seed", async () => {
  const prompts = join(work, "prompts.jsonl");
  const queries = ["How do tides work?", "Write a haiku about rain.", "What is 17 times 3?"];
  writeFileSync(
    prompts,
    `${queries.map((prompt, i) => JSON.stringify({ id: `q${i}`, prompt })).join("\n")}\n`,
  );
  const args = (out: string) => [
    "generate",
    "--endpoint",
    server.url,
    "--model",
    NAME,
    "--prompts",
    prompts,
    "--out",
    out,
    "--seed",
    "5",
    "--max-tokens",
    "24",
    "--concurrency",
    "4",
    "--retries",
    "0",
  ];
  const tokensBefore = server.stats().tokens;
  const out = join(work, "records.jsonl");
  const run = await runCli(args(out));
  assert.equal(run.code, 0, `exit ${run.code}\n${run.stderr}`);
  const summary = JSON.parse(run.stdout) as {
    total: number;
    kept: number;
    dropped: number;
    processed: number;
  };
  assert.equal(summary.total, queries.length);
  assert.equal(summary.processed, queries.length);
  assert.equal(summary.kept + summary.dropped, queries.length, "every prompt is kept or counted as a drop");
  const records = jsonLines(out);
  assert.equal(records.length, summary.kept);
  assert.equal(jsonLines(`${out}.drops.jsonl`).length, summary.dropped);
  for (const record of records) {
    const parsed = SsoRecordSchema.parse(record);
    assert.ok(queries.includes(parsed.instruction));
    assert.notEqual(parsed.p_system, parsed.n_system);
  }
  assert.ok(server.stats().tokens > tokensBefore, "the answers were sampled by the served model");

  // Seeded requests make the whole build reproducible through the server.
  const again = join(work, "records-again.jsonl");
  const rerun = await runCli(args(again));
  assert.equal(rerun.code, 0, rerun.stderr);
  assert.equal(readFileSync(again, "utf8"), existsSync(out) ? readFileSync(out, "utf8") : "");
});
