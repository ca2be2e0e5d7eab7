import assert from "node:assert/strict";
import { test } from "node:test";
import { Rng } from "../src/util/rng.js";
import {
  type Behaviour,
  composeResponse,
  overRefusal,
  randomBehaviour,
  uniformBehaviour,
} from "../src/world/generator.js";
import { goldScore, scoreFeature } from "../src/world/scorers.js";
import { FAMILIES, sampleQuery } from "../src/world/tasks.js";
import { words } from "../src/world/text.js";

test("all-good responses beat all-bad ones on gold score, for every family and every query", () => {
  const rng = new Rng(11);
  for (const family of FAMILIES) {
    let gap = 0;
    for (let i = 0; i < 60; i++) {
      const q = sampleQuery(rng, "train", family);
      const good = composeResponse(q, uniformBehaviour(true), rng);
      const bad = composeResponse(q, uniformBehaviour(false), rng);
      const g = goldScore(q, good);
      const b = goldScore(q, bad);
      assert.ok(g > b, `${family}: ${g} <= ${b}\n  good: ${good}\n  bad: ${bad}`);
      assert.ok(g >= 0.75, `${family} good answer scored ${g}: ${good}`);
      gap += g - b;
    }
    assert.ok(gap / 60 > 0.7, `${family}: mean gap ${gap / 60}`);
  }
});

test("each feature switch moves its own scorer, whatever the other switches", () => {
  const rng = new Rng(12);
  for (const family of FAMILIES) {
    const q0 = sampleQuery(rng, "train", family);
    for (const feature of q0.features) {
      let good = 0;
      let bad = 0;
      const n = 80;
      for (let i = 0; i < n; i++) {
        const q = sampleQuery(rng, "train", family);
        const base = randomBehaviour(rng, 0.5);
        const on: Behaviour = { ...base, [feature]: true };
        const off: Behaviour = { ...base, [feature]: false };
        good += scoreFeature(feature, q, composeResponse(q, on, rng));
        bad += scoreFeature(feature, q, composeResponse(q, off, rng));
      }
      assert.ok(good / n - bad / n > 0.5, `${family}/${feature}: good ${good / n}, bad ${bad / n}`);
    }
  }
});

test("responses are short and varied, and the same seed writes the same text", () => {
  const q = sampleQuery(new Rng(1), "train", "advice");
  const texts = new Set<string>();
  for (let seed = 0; seed < 60; seed++) {
    const a = composeResponse(q, uniformBehaviour(true), new Rng(seed));
    assert.equal(a, composeResponse(q, uniformBehaviour(true), new Rng(seed)));
    texts.add(a);
  }
  assert.ok(texts.size >= 50, `only ${texts.size} distinct answers`);
  const rng = new Rng(2);
  for (let i = 0; i < 400; i++) {
    const query = sampleQuery(rng, "train", FAMILIES[i % FAMILIES.length]);
    const n = words(composeResponse(query, randomBehaviour(rng, 0.5), rng)).length;
    assert.ok(n >= 3 && n <= 90, `${query.family}: ${n} words`);
  }
});

test("an unwarranted refusal of a benign request scores below a proper answer", () => {
  const rng = new Rng(4);
  for (const family of FAMILIES.filter((f) => f !== "unsafe")) {
    const q = sampleQuery(rng, "train", family);
    assert.ok(goldScore(q, overRefusal(rng)) < goldScore(q, composeResponse(q, uniformBehaviour(true), rng)));
  }
});
