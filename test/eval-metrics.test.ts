import assert from "node:assert/strict";
import { test } from "node:test";
import { evaluateAnswers } from "../src/eval/evaluate.js";
import type { Judge } from "../src/eval/judge.js";
import { fitLogistic, lengthControlledWinRate, mean, sigmoid, stddev, winRate } from "../src/eval/metrics.js";
import { lineChartSvg, svgToPng } from "../src/eval/plot.js";
import { markdownTable } from "../src/eval/table.js";

test("mean, stddev and win rate on hand-computed values", () => {
  assert.equal(mean([1, 2, 3, 4]), 2.5);
  // Sample variance of 1..4: ((1.5^2 + 0.5^2) * 2) / 3 = 5/3.
  assert.ok(Math.abs(stddev([1, 2, 3, 4]) - Math.sqrt(5 / 3)) < 1e-12);
  // wins, loss, tie -> (1 + 0 + 0.5) / 3
  assert.equal(winRate([0.9, 0.1, 0.5], [0.5, 0.5, 0.5]), 0.5);
});

test("logistic fit recovers the generating coefficients", () => {
  const xs: number[] = [];
  const ys: number[] = [];
  for (let i = 0; i < 2001; i++) {
    const x = -1 + i / 1000;
    xs.push(x);
    ys.push(sigmoid(0.4 + 1.5 * x)); // soft labels: the exact probabilities
  }
  const { b0, b1 } = fitLogistic(xs, ys, 0);
  assert.ok(Math.abs(b0 - 0.4) < 1e-6);
  assert.ok(Math.abs(b1 - 1.5) < 1e-6);
});

test("length control removes wins that come only from longer answers", () => {
  // The policy wins exactly when its answer is longer: raw win rate 0.5, but at equal length it loses.
  const n = 200;
  const pScores: number[] = [];
  const bScores: number[] = [];
  const pLen: number[] = [];
  const bLen: number[] = [];
  for (let i = 0; i < n; i++) {
    const longer = i % 2 === 0;
    pLen.push(longer ? 300 + (i % 7) : 100 + (i % 5));
    bLen.push(200);
    pScores.push(longer ? 0.8 : 0.2);
    bScores.push(0.5);
  }
  assert.equal(winRate(pScores, bScores), 0.5);
  const lc = lengthControlledWinRate(pScores, bScores, pLen, bLen);
  assert.ok(lc > 0.3 && lc < 0.7, `lc ${lc}`);
  // Same outcomes with no length difference: LC equals the raw rate.
  const lcSame = lengthControlledWinRate(pScores, bScores, bLen, bLen);
  assert.ok(Math.abs(lcSame - 0.5) < 1e-6);
  // A policy that always wins at equal length gets LC near 1.
  const lcWin = lengthControlledWinRate(
    pScores.map(() => 0.9),
    bScores,
    bLen,
    bLen,
  );
  assert.ok(lcWin > 0.95);
});

test("evaluateAnswers mirrors the paper's measures through a Judge", () => {
  const judge: Judge<{ answer: string }> = {
    score: (q, r) => (r.includes(q.answer) ? 1 : 0),
    exactMatch: (q, r) => (q.answer === "" ? null : r.trim() === q.answer),
  };
  const queries = [{ answer: "4" }, { answer: "9" }, { answer: "" }];
  const res = evaluateAnswers(judge, queries, ["4", "it is 9", "hello"], ["5", "9", "hello"]);
  assert.equal(res.goldScore, (1 + 1 + 1) / 3);
  assert.equal(res.winRate, (1 + 0.5 + 0.5) / 3);
  assert.equal(res.exactMatch, 0.5);
  assert.equal(res.meanLength, (1 + 7 + 5) / 3);
  assert.equal(res.count, 3);
});

test("plots render to SVG and PNG, tables to Markdown", () => {
  const svg = lineChartSvg("Gold score", "score", [
    { name: "sso", values: [0.4, 0.5, 0.55, 0.6], spread: [0, 0.02, 0.03, 0.01] },
    { name: "pbaa", values: [0.4, 0.52, null, 0.3] },
  ]);
  assert.match(svg, /^<svg/);
  assert.match(svg, /polyline/);
  const png = svgToPng(svg);
  assert.deepEqual(Array.from(png.subarray(0, 4)), [0x89, 0x50, 0x4e, 0x47]);
  const md = markdownTable(
    ["method", "score"],
    [
      ["sso", 0.5],
      ["pbaa", null],
    ],
  );
  assert.equal(md, "| method | score |\n|---|---|\n| sso | 0.500 |\n| pbaa | — |");
});
