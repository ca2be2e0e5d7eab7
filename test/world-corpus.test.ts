import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_CATALOG, type FeatureName } from "../src/sso/catalog.js";
import { buildSystemPrompt, parseFeatureList, principlesFor } from "../src/sso/prompts.js";
import { Rng } from "../src/util/rng.js";
import { buildSftCorpus, offPolicyPairs, relevantFeatures } from "../src/world/corpus.js";
import { goldScore, scoreFeature } from "../src/world/scorers.js";
import { splitOf, trainQueries } from "../src/world/tasks.js";

const corpus = buildSftCorpus({ seed: 9, size: 4000 });

test("the corpus is deterministic in its seed and uses training prompts only", () => {
  assert.deepEqual(buildSftCorpus({ seed: 9, size: 200 }), corpus.slice(0, 200));
  assert.notDeepEqual(buildSftCorpus({ seed: 10, size: 200 }), corpus.slice(0, 200));
  assert.equal(corpus.length, 4000);
  for (const ex of corpus) {
    const user = ex.messages.filter((m) => m.role === "user").at(-1);
    assert.ok(user);
    const prompt = user.content.replace(/^Query: /, "");
    assert.equal(splitOf(prompt), "train", prompt);
    assert.equal(ex.messages.at(-1)?.role, "assistant");
  }
});

test("mix: ~15% identification, ~60% of responses under a system prompt, p+ and p- alike", () => {
  const identify = corpus.filter((e) => e.kind === "identify").length / corpus.length;
  assert.ok(Math.abs(identify - 0.15) < 0.03, `identify share ${identify}`);
  const responses = corpus.filter((e) => e.kind === "response");
  const prompted = responses.filter((e) => e.side !== null);
  assert.ok(Math.abs(prompted.length / responses.length - 0.6) < 0.03);
  const good = prompted.filter((e) => e.side === "good").length / prompted.length;
  assert.ok(Math.abs(good - 0.5) < 0.04);
  for (const e of responses) {
    const system = e.messages.find((m) => m.role === "system");
    if (e.side === null || e.side === undefined) assert.equal(system, undefined);
    else {
      assert.ok(e.principled && e.principled.length >= 1 && e.principled.length <= 3);
      assert.equal(system?.content, buildSystemPrompt(principlesFor(DEFAULT_CATALOG, e.principled, e.side)));
    }
  }
});

test("behaviour follows the system prompt: ~0.85 with the principle, ~0.15 against, ~0.4 without", () => {
  const counts = { good: [0, 0], bad: [0, 0], none: [0, 0] };
  for (const e of corpus) {
    if (e.kind !== "response" || !e.behaviour) continue;
    for (const [f, isGood] of Object.entries(e.behaviour)) {
      const named = e.side !== null && e.principled?.includes(f);
      const bucket = named ? counts[e.side === "good" ? "good" : "bad"] : counts.none;
      bucket[0] += isGood ? 1 : 0;
      bucket[1]++;
    }
  }
  const rate = (b: number[]) => b[0] / b[1];
  assert.ok(Math.abs(rate(counts.good) - 0.85) < 0.03, `good principle: ${rate(counts.good)}`);
  assert.ok(Math.abs(rate(counts.bad) - 0.15) < 0.03, `bad principle: ${rate(counts.bad)}`);
  assert.ok(Math.abs(rate(counts.none) - 0.4) < 0.02, `no principle: ${rate(counts.none)}`);
});

test("the gold scorers see the difference: principled features score high under p+, low under p-", () => {
  const sums = { good: [0, 0], bad: [0, 0], plain: [0, 0] };
  let checked = 0;
  for (const e of corpus.slice(0, 1200)) {
    if (e.kind !== "response") continue;
    const q = e.query;
    assert.equal(e.messages.find((m) => m.role === "user")?.content, q.prompt);
    const answer = e.messages.at(-1)?.content ?? "";
    if (e.side === null || e.side === undefined) {
      sums.plain[0] += goldScore(q, answer);
      sums.plain[1]++;
      continue;
    }
    for (const f of e.principled ?? []) {
      if (!q.features.includes(f as FeatureName)) continue;
      const bucket = sums[e.side];
      bucket[0] += scoreFeature(f as FeatureName, q, answer);
      bucket[1]++;
      checked++;
    }
  }
  const mean = (b: number[]) => b[0] / b[1];
  assert.ok(checked > 300);
  assert.ok(mean(sums.good) > 0.75, `p+ feature score ${mean(sums.good)}`);
  assert.ok(mean(sums.bad) < 0.3, `p- feature score ${mean(sums.bad)}`);
  assert.ok(mean(sums.plain) > 0.3 && mean(sums.plain) < 0.6, `plain gold ${mean(sums.plain)}`);
});

test("identification examples answer the query's relevant features, with a little noise", () => {
  const ids = corpus.filter((e) => e.kind === "identify");
  let exact = 0;
  for (const e of ids) {
    const q = e.query;
    assert.equal(e.messages.at(-2)?.content, `Query: ${q.prompt}`);
    const answer = e.messages.at(-1)?.content ?? "";
    const parsed = parseFeatureList(answer, DEFAULT_CATALOG, 2);
    assert.ok(parsed.parsed && parsed.unknown.length === 0, answer);
    assert.equal(parsed.features.length, 2);
    if (parsed.features.join() === relevantFeatures(q, 2).join()) exact++;
  }
  assert.ok(exact / ids.length > 0.85 && exact / ids.length < 0.97, `exact share ${exact / ids.length}`);
});

test("off-policy pairs: the chosen answer has the higher gold score, written by the generator", () => {
  const queries = trainQueries(new Rng(5), 300);
  const pairs = offPolicyPairs(new Rng(6), queries);
  assert.ok(pairs.length >= 290);
  assert.deepEqual(pairs, offPolicyPairs(new Rng(6), queries));
  const byId = new Map(queries.map((q) => [q.id, q]));
  for (const p of pairs) {
    const q = byId.get(p.queryId);
    assert.ok(q);
    assert.equal(p.prompt, q.prompt);
    assert.equal(p.chosenScore, goldScore(q, p.chosen));
    assert.equal(p.rejectedScore, goldScore(q, p.rejected));
    assert.ok(p.chosenScore > p.rejectedScore);
  }
});
