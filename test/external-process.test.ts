import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readEvalPrompts } from "../src/run/external.js";
import { fillTemplate, shellQuote } from "../src/run/external-process.js";
import { UserError } from "../src/util/errors.js";
import { fails } from "./helpers/cli.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-extproc-"));
after(() => rmSync(work, { recursive: true, force: true }));

test("templates: values are shell-quoted, {selfsteer} is not, unknown placeholders are named", () => {
  assert.equal(shellQuote("/runs/a-b_1.2/model"), "/runs/a-b_1.2/model");
  assert.equal(shellQuote("it's here"), `'it'\\''s here'`);
  assert.equal(
    fillTemplate(
      "{selfsteer} serve --model {model} --port {port}",
      { selfsteer: "node /x/bin", model: "/my dir", port: "8" },
      "--policy-serve",
    ),
    "node /x/bin serve --model '/my dir' --port 8",
  );
  assert.throws(
    () => fillTemplate("vllm serve {modle}", { model: "m" }, "--policy-serve"),
    (e: unknown) =>
      e instanceof UserError &&
      /--policy-serve: unknown placeholder \{modle\} \(this template may use \{model\}\)/.test(e.message),
  );
});

test("evaluation prompts: prompt/question/problem, GSM8K and MATH answers, bad lines named", () => {
  const path = join(work, "eval.jsonl");
  writeFileSync(
    path,
    [
      JSON.stringify({ id: 1, prompt: "Hi" }),
      JSON.stringify({ question: "2+2?", answer: "#### 4" }),
      JSON.stringify({ problem: "1/2?", solution: "\\boxed{\\frac12}" }),
    ].join("\n"),
  );
  const prompts = readEvalPrompts(path);
  assert.deepEqual(
    prompts.map((p) => [p.prompt, p.gold]),
    [
      ["Hi", undefined],
      ["2+2?", "#### 4"],
      ["1/2?", "\\boxed{\\frac12}"],
    ],
  );
  writeFileSync(path, `${JSON.stringify({ id: "x", answer: "1" })}\n`);
  assert.throws(() => readEvalPrompts(path), /eval\.jsonl:1: field prompt: missing/);
});

test("iterate's external flags are checked before any process starts", () => {
  const prompts = join(work, "p.jsonl");
  writeFileSync(
    prompts,
    `${JSON.stringify({ id: "a", prompt: "x" })}\n${JSON.stringify({ id: "b", prompt: "y" })}\n`,
  );
  const out = join(work, "run");
  // One iteration on one query: valid, so each case below fails only on the flag it adds.
  const oneIteration = ["iterate", "--prompts", prompts, "--queries", "1", "--iterations", "1", "--out", out];
  fails(
    ["--policy-serve: external components need --prompts"],
    "iterate",
    "--policy-serve",
    "x {port}",
    "--out",
    out,
  );
  fails(
    ["need 4 prompts, the file has 2"],
    "iterate",
    "--prompts",
    prompts,
    "--queries",
    "2",
    "--iterations",
    "2",
    "--out",
    out,
  );
  fails(["--train: unknown placeholder {ouput}"], ...oneIteration, "--train", "cp -r {model} {ouput}");
  fails(
    ["--policy-serve: the template must use {port}"],
    ...oneIteration,
    "--policy-serve",
    "vllm serve {model}",
  );
  fails(["--judge llm: give --judge-serve or --judge-endpoint"], ...oneIteration, "--judge", "llm");
});
