import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { tokenizerConfigJson } from "../src/engine/chat.js";
import { loadCheckpoint, loadTrainerState, saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { PlainKernels } from "../src/engine/kernels/index.js";
import { nextTokenLogprobs } from "../src/engine/logprobs.js";
import { LlamaModel } from "../src/engine/model.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { Rng } from "../src/util/rng.js";
import { SELFSTEER_BIN, selfsteer } from "./helpers/cli.js";

const cli = SELFSTEER_BIN;
const work = mkdtempSync(join(tmpdir(), "selfsteer-sft-cli-"));
after(() => rmSync(work, { recursive: true, force: true }));

const config = LlamaConfigSchema.parse({
  vocab_size: 259,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 128,
});
const tokenizer = BpeTokenizer.byteLevel();
const base = join(work, "base");
{
  const model = new LlamaModel(config, new PlainKernels());
  model.initRandom(new Rng(5));
  saveCheckpoint(base, {
    config,
    tensors: model.namedTensors(),
    tokenizerJson: tokenizer.toJSON(),
    tokenizerConfigJson: tokenizerConfigJson(tokenizer),
  });
}

const dataPath = join(work, "data.jsonl");
const lines: string[] = [];
for (let i = 0; i < 24; i++) {
  if (i % 4 === 0) lines.push(JSON.stringify({ text: `note ${i}: the sky is blue` }));
  else
    lines.push(
      JSON.stringify({
        messages: [
          ...(i % 3 === 0 ? [{ role: "system", content: "" }] : []),
          { role: "user", content: `add ${i} and 1` },
          { role: "assistant", content: `${i} + 1 = ${i + 1}` },
        ],
        id: `ex-${i}`,
      }),
    );
}
writeFileSync(dataPath, `${lines.join("\n")}\n`);

/** 24 examples, batch 4, 2 epochs: 12 steps. */
const runFlags = [
  "--data",
  dataPath,
  "--batch-size",
  "4",
  "--micro-batch",
  "3",
  "--epochs",
  "2",
  "--lr",
  "3e-3",
];

function ok(...args: string[]): Record<string, unknown> {
  const r = selfsteer(...args);
  assert.equal(r.status, 0, `selfsteer ${args.join(" ")} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Runs the CLI, calling `onStderr` with the stderr so far until it returns true; resolves with the exit. */
function runUntil(
  args: string[],
  onStderr: (stderr: string, child: ChildProcess) => boolean,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let acted = false;
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
      if (!acted) acted = onStderr(stderr, child);
    });
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

function bytes(dir: string, file: string): Buffer {
  return readFileSync(join(dir, file));
}

const reference = join(work, "reference");
let referenceSummary: Record<string, unknown> = {};

test("sft trains to --out in HF layout with a JSON summary, and the loss goes down", () => {
  referenceSummary = ok("sft", "--model", base, "--out", reference, ...runFlags, "--save-every", "5");
  assert.equal(referenceSummary.complete, true);
  assert.equal(referenceSummary.interrupted, false);
  assert.equal(referenceSummary.totalSteps, 12);
  assert.equal(referenceSummary.step, 12);
  assert.equal(referenceSummary.stepsRun, 12);
  assert.ok((referenceSummary.tokens as number) > 0);
  const files = readdirSync(reference).sort();
  for (const f of [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "trainer_state.json",
  ])
    assert.ok(files.includes(f), `${f} missing from ${files.join(", ")}`);
  assert.ok(
    !files.some((f) => f.startsWith("checkpoint-")),
    "checkpoints are removed once the run is complete",
  );
  assert.deepEqual(bytes(reference, "tokenizer.json"), bytes(base, "tokenizer.json"));
  const state = loadTrainerState(reference);
  assert.equal(state?.step, 12);
  assert.equal(state?.optimizer.step, 12);
  const log = readFileSync(join(reference, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    log.map((l) => l.step),
    [...Array(12).keys()],
  );
  // The trained model assigns the training answers more probability than the base did.
  const answer = tokenizer.encode(
    "<|im_start|>user\nadd 5 and 1<|im_end|>\n<|im_start|>assistant\n5 + 1 = 6<|im_end|>",
  );
  const score = (dir: string): number => {
    const ckpt = loadCheckpoint(dir);
    const model = new LlamaModel(ckpt.config, new PlainKernels());
    model.loadTensors(ckpt.tensors.values());
    return nextTokenLogprobs(model, [answer])[0].reduce((a, b) => a + b, 0);
  };
  assert.ok(score(reference) > score(base) + 5, `${score(reference)} vs ${score(base)}`);
});

test("SIGINT saves after the current step and exits 130; rerunning resumes to the same weights, bit for bit", async () => {
  const out = join(work, "interrupted");
  const args = [
    "sft",
    "--model",
    base,
    "--out",
    out,
    ...runFlags,
    "--save-every",
    "5",
    "--throttle-ms",
    "150",
  ];
  const first = await runUntil(args, (stderr, child) => {
    if (!stderr.includes("sft: 1/12")) return false;
    child.kill("SIGINT");
    return true;
  });
  assert.equal(first.code, 130, first.stderr);
  const summary = JSON.parse(first.stdout);
  assert.equal(summary.interrupted, true);
  const stoppedAt = summary.step as number;
  assert.ok(stoppedAt >= 1 && stoppedAt < 12, `stopped at ${stoppedAt}`);
  assert.ok(
    existsSync(join(out, `checkpoint-${stoppedAt}`, "trainer_state.json")),
    readdirSync(out).join(", "),
  );
  assert.match(first.stderr, /rerun the same command to resume/);
  const resumed = ok(...args.slice(0, -2));
  assert.equal(resumed.startStep, stoppedAt);
  assert.equal(resumed.stepsRun, 12 - stoppedAt);
  assert.equal(resumed.complete, true);
  assert.equal(resumed.lastLoss, referenceSummary.lastLoss);
  assert.deepEqual(bytes(out, "model.safetensors"), bytes(reference, "model.safetensors"));
  assert.deepEqual(bytes(out, "optimizer.safetensors"), bytes(reference, "optimizer.safetensors"));
  const log = readFileSync(join(out, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    log.map((l) => l.step),
    [...Array(12).keys()],
    "every step logged once",
  );
});

test("SIGKILL after a periodic save loses only the steps since; a torn save is ignored", async () => {
  const out = join(work, "killed");
  const args = ["sft", "--model", base, "--out", out, ...runFlags, "--save-every", "3"];
  const first = await runUntil([...args, "--throttle-ms", "150"], (stderr, child) => {
    if (!stderr.includes("saved step 3")) return false;
    child.kill("SIGKILL");
    return true;
  });
  assert.equal(first.signal, "SIGKILL");
  // A save cut off before its trainer_state.json must not be resumed from.
  mkdirSync(join(out, "checkpoint-11"));
  writeFileSync(join(out, "checkpoint-11", "model.safetensors"), "torn");
  const resumed = ok(...args);
  assert.ok((resumed.startStep as number) >= 3, `resumed at ${resumed.startStep}`);
  assert.ok((resumed.startStep as number) < 11);
  assert.deepEqual(bytes(out, "model.safetensors"), bytes(reference, "model.safetensors"));
  assert.ok(!existsSync(join(out, "checkpoint-11")));
});

test("rerunning a finished run reports it complete and changes nothing; other settings or directories exit 2", () => {
  const before = bytes(reference, "model.safetensors");
  const again = ok("sft", "--model", base, "--out", reference, ...runFlags);
  assert.equal(again.alreadyComplete, true);
  assert.equal(again.stepsRun, 0);
  assert.deepEqual(bytes(reference, "model.safetensors"), before);
  const other = selfsteer(
    "sft",
    "--model",
    base,
    "--out",
    reference,
    ...runFlags,
    "--seed",
    "9",
    "--backend",
    "plain",
  );
  assert.equal(other.status, 2, other.stderr);
  assert.match(other.stderr, /holds a sft run started with --seed 0, this command has 9; .*--restart/);
  const foreign = selfsteer("sft", "--model", base, "--out", base, ...runFlags);
  assert.equal(foreign.status, 2);
  assert.match(foreign.stderr, /--out: must differ from --model/);
  const existing = join(work, "existing");
  saveCheckpoint(existing, loadCheckpointContents(base));
  const clash = selfsteer("sft", "--model", base, "--out", existing, ...runFlags, "--backend", "plain");
  assert.equal(clash.status, 2);
  assert.match(clash.stderr, /already holds files that are not from a sft run .*--restart/);
});

function loadCheckpointContents(dir: string): Parameters<typeof saveCheckpoint>[1] {
  const ckpt = loadCheckpoint(dir);
  return { config: ckpt.config, tensors: [...ckpt.tensors.values()] };
}

test("bad data lines exit 2 naming file:line:field", () => {
  const cases: [string[], string][] = [
    [['{"text": "fine"}', "{not json"], ":2: invalid JSON"],
    [['{"messages": [{"role": "user", "content": "hi"}]}'], ":1: field messages: no assistant turn"],
    [
      ['{"text": "a"}', '{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}'],
      ":2: field messages[1].role",
    ],
    [['{"prompt": "x"}'], ':1: field messages: expected "messages" (a chat) or "text"'],
  ];
  cases.forEach(([content, fragment], i) => {
    const path = join(work, `bad-${i}.jsonl`);
    writeFileSync(path, `${content.join("\n")}\n`);
    const r = selfsteer("sft", "--model", base, "--data", path, "--out", join(work, `bad-out-${i}`));
    assert.equal(r.status, 2, r.stderr);
    assert.ok(
      r.stderr.includes(`${path}${fragment}`),
      `'${r.stderr.trim()}' should include '${path}${fragment}'`,
    );
    assert.ok(!existsSync(join(work, `bad-out-${i}`)), "nothing written for bad data");
  });
  const flags = selfsteer("sft", "--model", base, "--out", join(work, "x"), ...runFlags, "--max-len", "999");
  assert.equal(flags.status, 2);
  assert.match(flags.stderr, /--max-len: 999 exceeds max_position_embeddings 128/);
});

test("sft warns, before training, naming the examples whose system prompt --max-len cuts", () => {
  const data = join(work, "long-system.jsonl");
  const example = (system: string) =>
    JSON.stringify({
      messages: [
        { role: "system", content: system },
        { role: "user", content: "add 1 and 2" },
        { role: "assistant", content: "3" },
      ],
    });
  // Example 2's system turn (about 70 tokens) does not fit in half of 48 tokens; example 1's does.
  writeFileSync(data, `${[example("Be brief."), example("Be accurate. ".repeat(5))].join("\n")}\n`);
  const flags = ["--data", data, "--batch-size", "2", "--max-len", "48", "--backend", "plain"];
  const r = selfsteer("sft", "--model", base, "--out", join(work, "long-system"), ...flags);
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stderr,
    /selfsteer: 1 example\(s\) too long to keep their system prompt whole at --max-len 48 \(1 sequence\(s\)[^\n]*: example 2\n/,
  );
  const roomy = selfsteer(
    "sft",
    "--model",
    base,
    "--out",
    join(work, "roomy-system"),
    ...flags,
    "--max-len",
    "128",
  );
  assert.equal(roomy.status, 0, roomy.stderr);
  assert.doesNotMatch(roomy.stderr, /too long to keep/);
});
