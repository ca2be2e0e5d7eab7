import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_CATALOG, identifiableFeatures } from "../src/sso/catalog.js";
import { hashString, Rng } from "../src/util/rng.js";
import { ANIMALS, COUNTRIES } from "../src/world/data.js";
import {
  applyOp,
  EVAL_SEED,
  evalQueries,
  exactAnswer,
  FAMILIES,
  FAMILY_FEATURES,
  sampleQuery,
  splitOf,
  trainQueries,
} from "../src/world/tasks.js";

test("every family yields queries whose features start with two identifiable core features", () => {
  const rng = new Rng(1);
  const selectable = new Set(identifiableFeatures(DEFAULT_CATALOG));
  for (const family of FAMILIES) {
    const q = sampleQuery(rng, "train", family);
    assert.equal(q.family, family);
    assert.deepEqual(q.features, FAMILY_FEATURES[family]);
    assert.ok(q.features.includes("Engagement") && q.features.includes("Concision"));
    assert.ok(selectable.has(q.features[0]) && selectable.has(q.features[1]), `${family}: ${q.features}`);
    assert.equal(q.id, `${family}-${hashString(q.prompt).toString(16).padStart(8, "0")}`);
    assert.ok(q.followUps.length >= 2 && q.topicWords.length >= 1 && q.wordBudget > 0);
    assert.ok(q.prompt.length > 10 && q.prompt.length < 120, q.prompt);
  }
});

test("the same seed gives the same queries", () => {
  const a = trainQueries(new Rng(42), 50);
  const b = trainQueries(new Rng(42), 50);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, trainQueries(new Rng(43), 50));
});

test("train and eval splits never share a prompt; about one prompt in five is held out", () => {
  const train = trainQueries(new Rng(7), 4000);
  const evals = evalQueries(300);
  const trainPrompts = new Set(train.map((q) => q.prompt));
  for (const q of train) assert.equal(splitOf(q.prompt), "train");
  for (const q of evals) {
    assert.equal(splitOf(q.prompt), "eval");
    assert.ok(!trainPrompts.has(q.prompt), q.prompt);
  }
  let held = 0;
  let total = 0;
  for (let a = 2; a < 60; a++)
    for (let b = 2; b < 60; b++) {
      total++;
      if (splitOf(`What is ${a} + ${b}?`) === "eval") held++;
    }
  assert.ok(Math.abs(held / total - 0.2) < 0.03, `held-out share ${held / total}`);
});

test("eval queries are fixed, cover every family in turn and are distinct while prompts last", () => {
  const a = evalQueries(70);
  assert.deepEqual(a, evalQueries(70, EVAL_SEED));
  assert.deepEqual(
    a.slice(0, FAMILIES.length).map((q) => q.family),
    [...FAMILIES],
  );
  for (const family of FAMILIES) assert.equal(a.filter((q) => q.family === family).length, 10);
  assert.ok(new Set(a.map((q) => q.prompt)).size >= 60);
});

test("answers are right: arithmetic, chained word-problem steps, table facts", () => {
  const rng = new Rng(3);
  for (let i = 0; i < 300; i++) {
    const q = sampleQuery(rng, i % 2 === 0 ? "train" : "eval", FAMILIES[i % 3]);
    if (q.family === "arithmetic") {
      assert.equal(q.answer, applyOp(q.step.a, q.step.op, q.step.b));
      assert.ok(q.answer >= 0 && Number.isInteger(q.answer));
      assert.ok(q.prompt.includes(String(q.step.a)) && q.prompt.includes(String(q.step.b)));
    } else if (q.family === "wordProblem") {
      q.steps.forEach((s, k) => {
        assert.equal(s.result, applyOp(s.a, s.op, s.b));
        assert.ok(Number.isInteger(s.result) && s.result >= 0, JSON.stringify(s));
        if (k > 0) assert.equal(s.a, q.steps[k - 1].result);
      });
      assert.equal(q.answer, q.steps[q.steps.length - 1].result);
      assert.ok(q.prompt.includes(q.person) && q.prompt.includes(q.item));
    } else if (q.family === "fact") {
      if (q.relation === "capital") {
        assert.equal(COUNTRIES.find((c) => c.country === q.subject)?.capital, q.answer);
      } else {
        const entry = ANIMALS.find((a) => a.animal === q.subject);
        assert.ok(entry);
        const value = q.relation === "legs" ? String(entry.legs) : entry[q.relation].key;
        assert.equal(q.answer, value);
      }
      assert.ok(!q.wrongAnswers.includes(q.answer) && q.wrongAnswers.length >= 3);
    }
    const exact = exactAnswer(q);
    assert.equal(exact === null, !["arithmetic", "wordProblem", "fact"].includes(q.family));
  }
});
