import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import {
  extractFinalAnswer,
  isExactMatch,
  lastBoxed,
  normalizeAnswer,
  referenceAnswer,
} from "../src/eval/answers.js";
import { evaluateJudged, signalAccuracy } from "../src/eval/judged.js";
import {
  JudgmentCache,
  LlmJudge,
  PAIRWISE_SYSTEM,
  parsePairwiseVerdict,
  parseRating,
} from "../src/eval/llm-judge.js";
import { lengthControlledWinRate, lengthControlledWinRateFromOutcomes } from "../src/eval/metrics.js";
import type { GenerateRequest, Generation, Policy } from "../src/policy/types.js";
import { SELFSTEER_BIN } from "./helpers/cli.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-judge-"));
after(() => rmSync(work, { recursive: true, force: true }));

test("final answers: #### markers, nested boxes, answer phrases, last number", () => {
  assert.equal(extractFinalAnswer("She has 3 + 4 = 7 apples.\n#### 7"), "7");
  assert.equal(extractFinalAnswer("so $x = \\boxed{\\frac{1}{\\sqrt{2}}}$ and done"), "\\frac{1}{\\sqrt{2}}");
  assert.equal(lastBoxed("\\boxed{1} then \\boxed{{a}+{b}}"), "{a}+{b}");
  assert.equal(lastBoxed("\\boxed{unbalanced"), null);
  assert.equal(extractFinalAnswer("Thus the answer is 12 dollars. Extra 99"), "12 dollars");
  assert.equal(extractFinalAnswer("first 3, then 1,234 items"), "1234");
  assert.equal(extractFinalAnswer("no numbers here"), null);
  assert.equal(referenceAnswer("Work: 2*3=6\n#### 6"), "6");
  assert.equal(referenceAnswer("So it is $\\boxed{\\dfrac{3}{4}}$."), "\\dfrac{3}{4}");
});

test("normalisation: fractions, commas, units, dollars, trailing periods, x =", () => {
  assert.equal(normalizeAnswer("\\frac{1}{2}"), normalizeAnswer("0.5"));
  assert.equal(normalizeAnswer("\\dfrac{3}{4}"), "0.75");
  assert.equal(normalizeAnswer("\\frac34"), "0.75");
  assert.equal(normalizeAnswer("1,234,567"), "1234567");
  assert.equal(normalizeAnswer("$18"), "18");
  assert.equal(normalizeAnswer("18 dollars."), "18");
  assert.equal(normalizeAnswer("x = 5"), "5");
  assert.equal(normalizeAnswer("\\text{(B)}"), normalizeAnswer("B"));
  assert.equal(normalizeAnswer("90^\\circ"), "90");
  assert.equal(normalizeAnswer("3.50"), "3.5");
  assert.ok(isExactMatch("The total is 1,200.\n#### 1,200", "Some work\n#### 1200"));
  assert.ok(isExactMatch("Therefore \\boxed{\\frac{2}{4}}", "$\\boxed{\\frac{1}{2}}$"));
  assert.ok(!isExactMatch("Therefore \\boxed{3}", "#### 4"));
  assert.ok(isExactMatch("I think it is 42", "42", "gsm8k"));
});

test("ratings and pairwise verdicts are read robustly", () => {
  assert.equal(parseRating("Good answer.\nRating: [[7]]"), 7);
  assert.equal(parseRating("Rating: [[8.5]]"), 8.5);
  assert.equal(parseRating("[[3]] at first, then [[9]]"), 9);
  assert.equal(parseRating("Rating: 6"), 6);
  assert.equal(parseRating("I give it 4/10."), 4);
  assert.equal(parseRating("Rating: [[11]]"), null);
  assert.equal(parseRating("no number"), null);
  assert.equal(parsePairwiseVerdict("A is clearer.\n[[A]]"), "A");
  assert.equal(parsePairwiseVerdict("[[B]]"), "B");
  assert.equal(parsePairwiseVerdict("Both fine. [[C]]"), "tie");
  assert.equal(parsePairwiseVerdict("reasoning\nOutput (b)"), "B");
  assert.equal(parsePairwiseVerdict("I cannot decide"), null);
});

test("LC win rate from outcomes is the shared fit: same value as from scores", () => {
  const p = [1, 0, 1, 1, 0.2, 0.9];
  const b = [0, 1, 0, 0.5, 0.8, 0.1];
  const pl = [100, 20, 300, 120, 50, 80];
  const bl = [90, 40, 100, 100, 60, 100];
  const outcomes = p.map((x, i) => (x > b[i] ? 1 : 0));
  assert.equal(lengthControlledWinRate(p, b, pl, bl), lengthControlledWinRateFromOutcomes(outcomes, pl, bl));
});

/**
 * A scripted judge model: pairwise, it prefers the answer containing "GOOD" but has a position
 * bias (with neither GOOD, it picks A); grading gives 9 to GOOD answers and 2 otherwise.
 */
class ScriptedJudge implements Policy {
  readonly name = "scripted";
  requests: GenerateRequest[] = [];
  async generate(requests: GenerateRequest[]): Promise<Generation[][]> {
    this.requests.push(...requests);
    return requests.map((r) => {
      const user = r.messages[r.messages.length - 1].content;
      if (r.messages[0].content === PAIRWISE_SYSTEM) {
        const a = user.slice(user.indexOf("[Answer A]"), user.indexOf("[Answer B]"));
        const b = user.slice(user.indexOf("[Answer B]"));
        const verdict = a.includes("GOOD") && !b.includes("GOOD") ? "A" : b.includes("GOOD") ? "B" : "A";
        return [{ text: `Reasoning.\n[[${verdict}]]`, finishReason: "stop" as const }];
      }
      return [{ text: `Fine.\nRating: [[${user.includes("GOOD") ? 9 : 2}]]`, finishReason: "stop" as const }];
    });
  }
  usage() {
    return { promptTokens: 0, completionTokens: 0, requests: this.requests.length };
  }
}

test("LLM judge: both orders cancel position bias; cache resumes; cap leaves judgments missing", async () => {
  const cachePath = join(work, "cache.jsonl");
  const model = new ScriptedJudge();
  const cache = new JudgmentCache(cachePath);
  const judge = new LlmJudge({ policy: model, model: "scripted", seed: 3, cache });
  const items = [
    { instruction: "q1", answer: "GOOD answer", reference: "plain" },
    { instruction: "q2", answer: "plain", reference: "GOOD ref" },
    { instruction: "q3", answer: "plain a", reference: "plain b" },
    { instruction: "q4", answer: "sum is 5", reference: "x", gold: "#### 5" },
  ];
  const report = await evaluateJudged(judge, items);
  // q1 win, q2 loss, q3 position bias cancels to a tie (A, then A again = one win each way), q4 tie.
  assert.equal(report.compared, 4);
  assert.equal(report.winRate, (1 + 0 + 0.5 + 0.5) / 4);
  assert.equal(report.exactMatch, 1);
  assert.ok(Math.abs((report.score ?? 0) - (8 / 9 + 1 / 9 + 1 / 9 + 1 / 9) / 4) < 1e-12);
  assert.equal(model.requests.length, 12);
  // Seeds are fixed by the judge seed and the prompt.
  assert.ok(model.requests.every((r) => Number.isInteger(r.seed) && r.temperature === 0));
  cache.close();

  // A new judge over the same cache asks nothing again.
  const again = new ScriptedJudge();
  const cache2 = new JudgmentCache(cachePath);
  const judge2 = new LlmJudge({ policy: again, model: "scripted", seed: 3, cache: cache2 });
  const report2 = await evaluateJudged(judge2, items);
  assert.deepEqual(report2, report);
  assert.equal(again.requests.length, 0);
  cache2.close();

  // A torn last line (a kill mid-write) is dropped and asked again; nothing else is.
  writeFileSync(cachePath, `${readFileSync(cachePath, "utf8")}{"key":"torn`);
  const third = new ScriptedJudge();
  const cache3 = new JudgmentCache(cachePath);
  assert.equal(cache3.size, 12);
  cache3.close();

  // Another judge model is another key; a cap of 3 new requests leaves the rest missing.
  const capped = new LlmJudge({ policy: third, model: "other", seed: 3, maxRequests: 3 });
  const partial = await evaluateJudged(capped, items);
  assert.equal(third.requests.length, 3);
  assert.equal(capped.stats().skippedByCap, 9);
  assert.equal(partial.scored, 3);
  assert.equal(partial.compared, 0);
});

test("signal accuracy: both orders, strict reading and consistency", async () => {
  const judge = new LlmJudge({ policy: new ScriptedJudge(), model: "scripted", seed: 1 });
  const report = await signalAccuracy(judge, [
    { instruction: "a", chosen: "GOOD", rejected: "bad" },
    { instruction: "b", chosen: "meh", rejected: "meh too" },
    { instruction: "c", chosen: "weak", rejected: "GOOD" },
  ]);
  assert.equal(report.judged, 3);
  assert.equal(report.accuracy, (1 + 0.5 + 0) / 3);
  assert.equal(report.strictAccuracy, 1 / 3);
  assert.equal(report.consistency, 2 / 3);
});

/** A loopback OpenAI-compatible judge server backed by ScriptedJudge. */
async function startJudgeServer(): Promise<{ url: string; server: Server; requests: () => number }> {
  const model = new ScriptedJudge();
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => {
      body += d;
    });
    req.on("end", async () => {
      const parsed = JSON.parse(body) as { messages: GenerateRequest["messages"]; seed?: number };
      const [gen] = await model.generate([
        { messages: parsed.messages, temperature: 0, topP: 1, maxTokens: 9 },
      ]);
      res.setHeader("content-type", "application/json");
      res.end(
        JSON.stringify({
          choices: [
            { index: 0, message: { role: "assistant", content: gen[0].text }, finish_reason: "stop" },
          ],
          usage: { prompt_tokens: 1, completion_tokens: 1 },
        }),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}/v1`, server, requests: () => model.requests.length };
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
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
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

test("selfsteer judge pairwise / grade / exact through the CLI against a loopback judge", async () => {
  const { url, server, requests } = await startJudgeServer();
  try {
    const answers = join(work, "answers.jsonl");
    const refs = join(work, "refs.json");
    const gold = join(work, "gold.jsonl");
    writeFileSync(
      answers,
      [
        { id: 1, instruction: "What is 2+2?", output: "GOOD: 2+2 = 4" },
        { id: 2, instruction: "Name a colour.", output: "blue" },
      ]
        .map((x) => JSON.stringify(x))
        .join("\n"),
    );
    writeFileSync(
      refs,
      JSON.stringify([
        { instruction: "Name a colour.", output: "GOOD: red" },
        { instruction: "What is 2+2?", output: "four" },
      ]),
    );
    writeFileSync(gold, `${JSON.stringify({ question: "What is 2+2?", answer: "2+2=4\n#### 4" })}\n`);
    const cache = join(work, "cli-cache.jsonl");
    const common = ["--endpoint", url, "--model", "scripted", "--cache", cache];
    const pw = await runCli([
      "judge",
      "pairwise",
      "--answers",
      answers,
      "--references",
      refs,
      "--gold",
      gold,
      ...common,
    ]);
    assert.equal(pw.code, 0, pw.stderr);
    const report = JSON.parse(pw.stdout) as Record<string, number>;
    assert.equal(report.winRate, 0.5);
    assert.equal(report.compared, 2);
    assert.equal(report.exactMatch, 1);
    assert.equal(requests(), 4);
    const again = await runCli(["judge", "pairwise", "--answers", answers, "--references", refs, ...common]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(requests(), 4, "a rerun is answered from the cache");

    const grade = await runCli([
      "judge",
      "grade",
      "--answers",
      answers,
      ...common,
      "--judge-max-requests",
      "1",
    ]);
    assert.equal(grade.code, 0, grade.stderr);
    assert.match(grade.stderr, /judge-max-requests reached: 1 judgment/);
    const graded = JSON.parse(grade.stdout) as Record<string, number>;
    assert.equal(graded.scored, 1);
    assert.equal(graded.meanRating, 9);

    const exact = await runCli(["judge", "exact", "--answers", answers, "--gold", gold]);
    assert.equal(exact.code, 2, "an answer without a gold entry is named");
    assert.match(exact.stderr, /answers\.jsonl:2: field id: no entry/);
  } finally {
    server.close();
  }
});
