import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { hashString } from "../src/util/rng.js";
import {
  deadEndpointUrl,
  type FakeOpenAIServer,
  type RecordedRequest,
  startFakeOpenAIServer,
} from "./helpers/fake-openai-server.js";

// End to end through the real CLI binary against a real loopback HTTP server. The server runs in this
// process, so the CLI is spawned asynchronously (a sync spawn would block the server's event loop).

const bin = fileURLToPath(new URL("../../bin/selfsteer", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "selfsteer-generate-"));
const servers: FakeOpenAIServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
  rmSync(work, { recursive: true, force: true });
});

async function server(options: Parameters<typeof startFakeOpenAIServer>[0] = {}): Promise<FakeOpenAIServer> {
  const s = await startFakeOpenAIServer({ lifetimeMs: 90_000, ...options });
  servers.push(s);
  return s;
}

interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI; `whileRunning` may kill it (it gets the child's kill function) and may return a
 * cleanup, called when the child exits, so a watcher never outlives it and holds the test open.
 */
function runCli(
  args: string[],
  whileRunning?: (kill: () => void) => (() => void) | undefined,
  timeoutMs = 60_000,
): Promise<CliRun> {
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
    const guard = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    const cleanup = whileRunning?.(() => child.kill("SIGKILL"));
    child.on("close", (code, signal) => {
      clearTimeout(guard);
      cleanup?.();
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function writePrompts(name: string, lines: string[]): string {
  const path = join(work, name);
  writeFileSync(path, `${lines.join("\n")}\n`);
  return path;
}

function promptLines(count: number, tag: string): string[] {
  return Array.from({ length: count }, (_, i) =>
    // Both spellings of the query field, with and without ids.
    i % 3 === 2
      ? JSON.stringify({ instruction: `${tag} instruction number ${i}: explain topic ${i}` })
      : JSON.stringify({
          id: `${tag}-${i}`,
          prompt: `${tag} question number ${i}: how does thing ${i} work?`,
        }),
  );
}

function queryOf(line: string): string {
  const parsed = JSON.parse(line) as { prompt?: string; instruction?: string };
  return parsed.prompt ?? parsed.instruction ?? "";
}

type SsoRecord = Record<string, unknown> & {
  instruction: string;
  p_system: string;
  n_system: string;
  chosen: string;
  rejected: string;
  raw: string;
  principles: unknown[];
};

function readRecords(path: string): SsoRecord[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as SsoRecord);
}

function completeLines(path: string): number {
  if (!existsSync(path)) return 0;
  return readFileSync(path, "utf8").split("\n").length - 1;
}

function lastUserMessage(r: RecordedRequest): string | undefined {
  return [...(r.body?.messages ?? [])].reverse().find((m) => m.role === "user")?.content;
}

/** The fake server tags each answer with a hash of the system prompt it saw (see fakeAnswer). */
function systemTag(system: string): string {
  return `[${hashString(system).toString(16)}]`;
}

function baseArgs(endpoints: string[], prompts: string, out: string, extra: string[] = []): string[] {
  return [
    "generate",
    ...endpoints.flatMap((e) => ["--endpoint", e]),
    "--model",
    "m",
    "--prompts",
    prompts,
    "--out",
    out,
    ...extra,
  ];
}

function assertWellFormed(records: SsoRecord[], queries: string[]): void {
  assert.equal(records.length, queries.length, "one record per prompt");
  assert.deepEqual(new Set(records.map((r) => r.instruction)), new Set(queries), "each prompt exactly once");
  for (const r of records) {
    assert.equal(typeof r.p_system, "string");
    assert.equal(typeof r.n_system, "string");
    assert.ok(r.p_system.length > 0 && r.n_system.length > 0);
    assert.notEqual(r.p_system, r.n_system);
    assert.ok(Array.isArray(r.principles) && r.principles.length > 0, "principles listed");
    for (const key of ["chosen", "rejected", "raw"] as const)
      assert.ok(r[key].length > 0, `${key} not empty`);
    // The chosen answer was sampled under p+, the rejected under p-, the raw one with no system prompt.
    assert.ok(r.chosen.includes(systemTag(r.p_system)), "chosen comes from p_system");
    assert.ok(r.rejected.includes(systemTag(r.n_system)), "rejected comes from n_system");
    assert.ok(r.raw.includes("plainly"), "raw comes from the plain query");
    assert.ok(r.chosen.includes(r.instruction.slice(0, 40)), "answers are to this record's query");
    if ("system" in r) assert.equal(r.system, "");
    if ("history" in r) assert.deepEqual(r.history, []);
  }
}

test("generate builds complete SSO records from a real HTTP server", async () => {
  const s = await server({ latencyMs: 5 });
  const lines = promptLines(6, "build");
  const prompts = writePrompts("build.jsonl", lines);
  const out = join(work, "build-records.jsonl");
  const run = await runCli(baseArgs([s.url], prompts, out, ["--seed", "3", "--concurrency", "4"]));
  assert.equal(run.code, 0, `exit ${run.code}\n${run.stderr}`);
  const records = readRecords(out);
  assertWellFormed(records, lines.map(queryOf));
  const samples = s.requests.filter(
    (r) => lastUserMessage(r) !== undefined && lines.map(queryOf).includes(lastUserMessage(r) ?? ""),
  );
  assert.ok(samples.length >= 3 * lines.length, "three samples per record, sent as the plain query");
  for (const r of samples) {
    assert.equal(r.body?.model, "m");
    assert.equal(r.body?.temperature, 0.7, "reference sampling temperature by default");
    assert.equal(r.body?.top_p, 0.8, "reference top-p by default");
  }
  const meta = records.map((r) => r.meta as { featureSource?: string; features?: string[] } | undefined);
  assert.ok(
    meta.every((m) => m?.featureSource === "policy"),
    "features come from the model's comma-separated answer, not a fallback",
  );
  // Rerunning on a finished file is a no-op: nothing duplicated, no new sampling.
  const before = readFileSync(out, "utf8");
  const requestsBefore = s.requests.length;
  const again = await runCli(baseArgs([s.url], prompts, out, ["--seed", "3"]));
  assert.equal(again.code, 0, again.stderr);
  assert.equal(readFileSync(out, "utf8"), before);
  assert.equal(s.requests.length, requestsBefore, "finished prompts are not sent again");
});

test("--principles generated asks the model for principles and records them", async () => {
  const s = await server();
  const lines = promptLines(3, "principled");
  const prompts = writePrompts("principled.jsonl", lines);
  const out = join(work, "principled-records.jsonl");
  const run = await runCli(baseArgs([s.url], prompts, out, ["--principles", "generated", "--seed", "2"]));
  assert.equal(run.code, 0, `exit ${run.code}\n${run.stderr}`);
  const records = readRecords(out);
  assertWellFormed(records, lines.map(queryOf));
  for (const r of records) {
    const entries = r.principles as Array<{ good?: string; bad?: string; source?: string }>;
    assert.ok(entries.every((e) => e.source === "generated" && /check every claim/.test(e.good ?? "")));
    assert.ok(r.p_system.includes("check every claim") && r.n_system.includes("state guesses as facts"));
  }
});

test("generate survives 500s, 429s and a dead endpoint", async () => {
  const seen = new Set<string>();
  // Every distinct request fails once (alternately 500 and 429 with Retry-After) and then succeeds.
  const s = await server({
    failurePlan: (r) => {
      const key = JSON.stringify(r.body);
      if (seen.has(key)) return undefined;
      seen.add(key);
      return r.index % 2 === 0
        ? { kind: "status", status: 500, message: "internal hiccup" }
        : { kind: "status", status: 429, message: "rate limited", retryAfter: "1" };
    },
  });
  const dead = await deadEndpointUrl();
  const lines = promptLines(4, "flaky");
  const prompts = writePrompts("flaky.jsonl", lines);
  const out = join(work, "flaky-records.jsonl");
  const run = await runCli(baseArgs([dead, s.url], prompts, out, ["--seed", "5", "--concurrency", "8"]));
  assert.equal(run.code, 0, `exit ${run.code}\n${run.stderr}`);
  assertWellFormed(readRecords(out), lines.map(queryOf));
  assert.ok(
    s.requests.some((r) => r.mode === "status"),
    "the failures really happened",
  );
});

test("a killed run resumes with nothing duplicated and nothing lost", async () => {
  const s = await server({ latencyMs: 40 });
  const lines = promptLines(10, "kill");
  const queries = lines.map(queryOf);
  const prompts = writePrompts("kill.jsonl", lines);
  const out = join(work, "kill-records.jsonl");
  const args = baseArgs([s.url], prompts, out, ["--seed", "9", "--concurrency", "1"]);
  const first = await runCli(args, (kill) => {
    const poll = setInterval(() => {
      if (completeLines(out) >= 3) {
        clearInterval(poll);
        kill();
      }
    }, 10);
    return () => clearInterval(poll);
  });
  assert.equal(first.signal, "SIGKILL", `the first run was meant to be killed mid-way\n${first.stderr}`);
  const partial = readRecords(out);
  assert.ok(
    partial.length >= 3 && partial.length < queries.length,
    `${partial.length} records before the kill`,
  );
  const prefix = readFileSync(out, "utf8");
  const done = new Set(partial.map((r) => r.instruction));
  const requestsBefore = s.requests.length;

  const second = await runCli(args);
  assert.equal(second.code, 0, second.stderr);
  const records = readRecords(out);
  assertWellFormed(records, queries);
  assert.ok(
    readFileSync(out, "utf8").startsWith(prefix.slice(0, prefix.lastIndexOf("\n") + 1)),
    "kept records untouched",
  );
  const resent = s.requests.slice(requestsBefore).filter((r) => done.has(lastUserMessage(r) ?? ""));
  assert.equal(resent.length, 0, "finished prompts were not sampled again");
});

test("a run stopped by a server error resumes and completes", async () => {
  const s = await server({ latencyMs: 5 });
  // After 12 requests the server rejects everything: the run must stop with a clear error.
  s.setFailurePlan((r) =>
    r.index >= 12 ? { kind: "status", status: 400, message: "server is shutting down" } : undefined,
  );
  const lines = promptLines(8, "stop");
  const queries = lines.map(queryOf);
  const prompts = writePrompts("stop.jsonl", lines);
  const out = join(work, "stop-records.jsonl");
  const args = baseArgs([s.url], prompts, out, ["--seed", "11", "--concurrency", "2"]);
  const first = await runCli(args);
  const partial = readRecords(out);
  assert.ok(partial.length < queries.length, "the first run could not finish");
  assert.notEqual(first.code, 0, "a failed run does not exit 0");
  assert.match(first.stderr, /server is shutting down/, "the server's message reaches the user");

  s.setFailurePlan([]);
  const second = await runCli(args);
  assert.equal(second.code, 0, second.stderr);
  assertWellFormed(readRecords(out), queries);
});

test("a bad prompt file exits 2 naming file, line and field, and loses nothing", async () => {
  const s = await server();
  const out = join(work, "bad-records.jsonl");
  writeFileSync(out, "");
  const missingField = writePrompts("missing.jsonl", [
    JSON.stringify({ id: "a", prompt: "fine" }),
    JSON.stringify({ id: "b", prompt: "also fine" }),
    JSON.stringify({ id: "c", text: "wrong field name" }),
  ]);
  const run = await runCli(baseArgs([s.url], missingField, out));
  assert.equal(run.code, 2, run.stderr);
  assert.ok(run.stderr.includes(`${missingField}:3`), `names file:line\n${run.stderr}`);
  assert.match(run.stderr, /prompt|instruction/, "names the field");

  const badJson = writePrompts("badjson.jsonl", [JSON.stringify({ prompt: "ok" }), "{not json"]);
  const run2 = await runCli(baseArgs([s.url], badJson, out));
  assert.equal(run2.code, 2, run2.stderr);
  assert.ok(run2.stderr.includes(`${badJson}:2`), run2.stderr);

  const wrongType = writePrompts("wrongtype.jsonl", [JSON.stringify({ id: 5, prompt: 7 })]);
  const run3 = await runCli(baseArgs([s.url], wrongType, out));
  assert.equal(run3.code, 2, run3.stderr);
  assert.ok(run3.stderr.includes(`${wrongType}:1`), run3.stderr);

  assert.equal(readFileSync(out, "utf8"), "", "the output file is untouched");
  assert.equal(s.requests.length, 0, "nothing is sent before the input is validated");
});
