import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Rng } from "../src/util/rng.js";
import { evalQueries, trainQueries } from "../src/world/tasks.js";
import { SELFSTEER_BIN } from "./helpers/cli.js";

// End to end with real processes on loopback: `selfsteer iterate` with the policy served by
// `selfsteer serve` started from a command template, trained by `selfsteer train` as the external
// trainer command, judged by a second `selfsteer serve`; killed with SIGKILL mid-stage and resumed;
// a failing trainer and a server that never becomes healthy reported by stage, command and status.

const base = fileURLToPath(new URL("../../assets/world-base", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "selfsteer-external-"));
after(() => rmSync(work, { recursive: true, force: true }));

function writeJsonl(path: string, rows: unknown[]): void {
  writeFileSync(path, rows.map((r) => `${JSON.stringify(r)}\n`).join(""));
}

// Distinct training queries (world draws may repeat), and a few held-out ones, one with a gold answer.
const seen = new Set<string>();
const train = trainQueries(new Rng(7).fork("queries"), 40).filter(
  (q) => !seen.has(q.id) && seen.add(q.id) !== undefined,
);
const promptsPath = join(work, "train.jsonl");
writeJsonl(
  promptsPath,
  train.slice(0, 8).map((q) => ({ id: q.id, prompt: q.prompt })),
);
const evalPath = join(work, "eval.jsonl");
writeJsonl(evalPath, [
  ...evalQueries(3).map((q) => ({ id: q.id, prompt: q.prompt })),
  { id: "gsm", question: "What is 3 + 4?", answer: "3 + 4 = 7\n#### 7" },
]);

const serve = "{selfsteer} serve --model {model} --port {port} --threads 1 --seed {seed}";
const trainer =
  "{selfsteer} train --model {model} --data {data} --out {output} --sso --batch-size 4 --max-len 96 --seed {seed}";

/** The one documented command line of the tested loop (README, "Online SSO with external components"). */
function loopArgs(out: string, extra: string[] = []): string[] {
  return [
    "iterate",
    "--prompts",
    promptsPath,
    "--queries",
    "4",
    "--iterations",
    "2",
    "--max-tokens",
    "24",
    "--base",
    base,
    "--out",
    out,
    "--policy-serve",
    serve,
    "--train",
    trainer,
    "--eval-prompts",
    evalPath,
    "--judge-serve",
    serve,
    "--judge-model",
    base,
    "--judge-max-tokens",
    "16",
    "--judge-signal-pairs",
    "2",
    "--concurrency",
    "4",
    "--stop-grace",
    "3",
    ...extra,
  ];
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI; `killWhen` is polled and, once true, the CLI gets SIGKILL (no chance to clean up). */
function runCli(args: string[], killWhen?: () => boolean, timeoutMs = 240_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SELFSTEER_BIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const guard = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    const poll =
      killWhen === undefined
        ? null
        : setInterval(() => {
            if (killWhen()) child.kill("SIGKILL");
          }, 50);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(guard);
      if (poll !== null) clearInterval(poll);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function lines(path: string): Array<Record<string, unknown>> {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test("two external iterations: served policy, external trainer, LLM judge; SIGKILL mid-train, then resume", {
  timeout: 600_000,
}, async () => {
  const out = join(work, "run");
  const commands = join(out, "commands.jsonl");
  const trainStarted = () => lines(commands).some((c) => c.stage === "train" && c.event === "start");
  const killed = await runCli(loopArgs(out), trainStarted);
  assert.equal(killed.signal, "SIGKILL", `the run should have been killed mid-train: ${killed.stderr}`);
  const recordsBefore = lines(join(out, "iter-1", "records.jsonl")).map((r) => r.id);
  assert.equal(recordsBefore.length, new Set(recordsBefore).size);
  // The trainer was a separate process group: it outlived the SIGKILL and left its pid file.
  const orphan = JSON.parse(readFileSync(join(out, "running", "train-1.json"), "utf8")) as { pid: number };

  const orphanStillRunning = alive(orphan.pid);
  const resumed = await runCli(loopArgs(out));
  assert.equal(resumed.code, 0, resumed.stderr);
  if (orphanStillRunning)
    assert.match(resumed.stderr, /stopped a process left by an interrupted run: .*selfsteer train/);
  assert.ok(!alive(orphan.pid), "the orphaned trainer was stopped");
  assert.match(resumed.stderr, /iteration 1 build already done/);
  assert.deepEqual(readdirSync(join(out, "running")), [], "no process is left running");

  // Nothing finished before the kill was redone, and no record was written twice.
  const recordsAfter = lines(join(out, "iter-1", "records.jsonl")).map((r) => r.id);
  assert.deepEqual(recordsAfter, recordsBefore);
  const log = lines(commands);
  const starts = (stage: string, iteration: number) =>
    log.filter((c) => c.stage === stage && c.iteration === iteration && c.event === "start").length;
  assert.equal(starts("serve-policy", 1), 1, "iteration 1's policy was served once (build and answers kept)");
  assert.equal(starts("serve-judge", 1), 1, "model 0 was judged once");
  assert.equal(starts("train", 1), 2, "the killed training ran again");
  assert.equal(starts("train", 2), 1);
  assert.equal(starts("serve-policy", 3), 1, "the final policy is served for its evaluation");
  // The trained output of iteration 1 is the policy of iteration 2, served and trained from.
  const policy2 = log.find((c) => c.stage === "serve-policy" && c.iteration === 2 && c.event === "start");
  assert.ok(String(policy2?.command).includes(join(out, "iter-1", "model")));
  const train2 = log.find((c) => c.stage === "train" && c.iteration === 2 && c.event === "start");
  assert.ok(String(train2?.command).includes(`--model ${join(out, "iter-1", "model")}`));
  assert.ok(
    log
      .filter((c) => c.event === "exit" && c.stage === "train")
      .every((c) => c.exitStatus === 0 || c.exitStatus === null),
  );
  assert.ok(existsSync(join(out, "iter-2", "model", "config.json")));

  const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as {
    builds: Array<{ kept: number }>;
    evaluations: Array<{
      model: number;
      report: { count: number; exactCount: number; winRate: number | null };
      judge: { requested: number; cached: number };
    }>;
  };
  assert.equal(report.builds.length, 2);
  assert.ok(report.builds.every((b) => b.kept > 0));
  assert.deepEqual(
    report.evaluations.map((e) => e.model),
    [0, 1, 2],
  );
  for (const e of report.evaluations) {
    assert.equal(e.report.count, 4);
    assert.equal(e.report.exactCount, 1, "the GSM8K-style line is scored by exact match");
    assert.ok(e.judge.requested + e.judge.cached > 0, "the LLM judge was asked");
  }
  assert.equal(report.evaluations[0].report.winRate, 0.5);
  assert.ok(lines(join(out, "judgments.jsonl")).length > 0);
  assert.match(readFileSync(join(out, "report.md"), "utf8"), /\| 2 \|/);

  // A third run has nothing left to do: every stage is skipped, no process starts.
  const again = await runCli(loopArgs(out));
  assert.equal(again.code, 0, again.stderr);
  assert.equal(lines(commands).length, log.length);
});

test("a failing trainer and a server that never becomes healthy are reported and lose no finished work", {
  timeout: 300_000,
}, async () => {
  const out = join(work, "fail");
  const common = [
    "iterate",
    "--prompts",
    promptsPath,
    "--queries",
    "3",
    "--iterations",
    "2",
    "--max-tokens",
    "16",
    "--base",
    base,
    "--out",
    out,
    "--concurrency",
    "4",
    "--stop-grace",
    "2",
  ];
  const badTrainer = "echo trainer could not read {data} >&2; exit 3";
  const failed = await runCli([...common, "--policy-serve", serve, "--train", badTrainer]);
  assert.equal(failed.code, 1, failed.stderr);
  assert.match(
    failed.stderr,
    /stage train \(iteration 1\) failed: command exited with status 3: echo trainer/,
  );
  assert.match(failed.stderr, /trainer could not read .*records\.jsonl/);
  assert.match(failed.stderr, /rerun the same command to continue/);
  const built = lines(join(out, "iter-1", "records.jsonl")).length;
  assert.ok(built > 0);

  // Fixed trainer (a copy of the policy: a real process, and fast), policy server that never answers.
  const copyTrainer = "mkdir -p {output} && cp -r {model}/. {output}/";
  const neverHealthy = "exec sleep 30 # {port}";
  const stuck = await runCli([
    ...common,
    "--policy-serve",
    neverHealthy,
    "--health-timeout",
    "1.5",
    "--train",
    copyTrainer,
  ]);
  assert.equal(stuck.code, 1, stuck.stderr);
  assert.match(stuck.stderr, /stage serve-policy \(iteration 2\) failed: server not healthy after 2 s/);
  assert.match(stuck.stderr, /sleep 30/);
  // Iteration 1 was not rebuilt (its records stand) and its training finished before the server failed.
  assert.equal(lines(join(out, "iter-1", "records.jsonl")).length, built);
  const stages = lines(join(out, "stages.jsonl")).map((s) => s.key);
  assert.deepEqual(stages, ["build:1", "export:1", "train:1"]);
  assert.ok(existsSync(join(out, "iter-1", "model", "config.json")));
  // The stuck server was stopped, not left behind.
  const log = lines(join(out, "commands.jsonl"));
  const stuckStart = log.find((c) => c.stage === "serve-policy" && c.iteration === 2 && c.event === "start");
  assert.ok(stuckStart !== undefined && !alive(Number(stuckStart.pid)));
  assert.deepEqual(readdirSync(join(out, "running")), []);
});
