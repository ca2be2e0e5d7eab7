import assert from "node:assert/strict";
import { test } from "node:test";
import { worldJudge } from "../src/world/judge.js";
import { REFUSAL_MARKERS } from "../src/world/lexicon.js";
import {
  buildLabelledRewardBench,
  buildRewardBench,
  REWARDBENCH_SECTIONS,
  REWARDBENCH_SUBSETS,
  sectionOf,
} from "../src/world/rewardbench.js";
import { goldScore } from "../src/world/scorers.js";
import { splitOf } from "../src/world/tasks.js";
import { countPhrases, words } from "../src/world/text.js";

const labelled = buildLabelledRewardBench({ seed: 3, perSubset: 30 });

test("every subset has its rows, on held-out prompts, with the chosen answer preferred by gold", () => {
  assert.equal(labelled.length, 30 * REWARDBENCH_SUBSETS.length);
  for (const subset of REWARDBENCH_SUBSETS)
    assert.equal(labelled.filter((r) => r.row.subset === subset).length, 30);
  const ids = new Set<string>();
  for (const { row, query, chosenScore, rejectedScore } of labelled) {
    assert.equal(row.prompt, query.prompt);
    assert.equal(splitOf(row.prompt), "eval");
    assert.equal(goldScore(query, row.chosen), chosenScore);
    assert.equal(goldScore(query, row.rejected), rejectedScore);
    assert.ok(chosenScore > rejectedScore);
    assert.equal(worldJudge.prefers(query, row.chosen, row.rejected), 1);
    assert.ok(!ids.has(row.id));
    ids.add(row.id);
    assert.deepEqual(Object.keys(row).sort(), ["chosen", "id", "prompt", "rejected", "subset"]);
  }
});

test("rows are deterministic in the seed and map onto RewardBench's four sections", () => {
  assert.deepEqual(
    buildRewardBench({ seed: 3, perSubset: 30 }),
    labelled.map((r) => r.row),
  );
  assert.notDeepEqual(
    buildRewardBench({ seed: 4, perSubset: 30 }),
    buildRewardBench({ seed: 3, perSubset: 30 }),
  );
  assert.deepEqual(Object.keys(REWARDBENCH_SECTIONS), ["Chat", "Chat Hard", "Safety", "Reasoning"]);
  for (const subset of REWARDBENCH_SUBSETS)
    assert.ok(REWARDBENCH_SECTIONS[sectionOf(subset)].some((s) => s === subset));
});

test("subsets test what their names say", () => {
  const rows = (subset: string) => labelled.filter((r) => r.row.subset === subset);
  const meanWords = (texts: string[]) => texts.reduce((s, t) => s + words(t).length, 0) / texts.length;
  const length = rows("chat-length");
  assert.ok(meanWords(length.map((r) => r.row.rejected)) > meanWords(length.map((r) => r.row.chosen)) + 5);
  for (const r of rows("refuse-unsafe")) {
    assert.equal(r.query.family, "unsafe");
    assert.ok(countPhrases(r.row.chosen, REFUSAL_MARKERS) > 0);
  }
  for (const r of rows("respond-benign")) {
    assert.notEqual(r.query.family, "unsafe");
    assert.ok(countPhrases(r.row.rejected, REFUSAL_MARKERS) > 0);
  }
  for (const r of [...rows("math"), ...rows("math-steps")])
    assert.ok(r.query.family === "arithmetic" || r.query.family === "wordProblem");
  const gap = (subset: string) => {
    const rs = rows(subset);
    return rs.reduce((s, r) => s + r.chosenScore - r.rejectedScore, 0) / rs.length;
  };
  assert.ok(gap("chat-hard") < gap("chat-easy"), "chat-hard pairs are closer than chat-easy pairs");
});
