import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { type Catalog, catalogFromFile, DEFAULT_CATALOG, featureSpec } from "../src/sso/catalog.js";
import {
  buildSystemPrompt,
  featureIdentificationMessages,
  joinAdjectives,
  parseFeatureList,
  parsePrincipleJson,
  principleGenerationMessages,
  principlesFor,
} from "../src/sso/prompts.js";

test("adjectives are joined the English way", () => {
  assert.equal(joinAdjectives([]), "");
  assert.equal(joinAdjectives(["A"]), "A");
  assert.equal(joinAdjectives(["A", "B"]), "A and B");
  assert.equal(joinAdjectives(["A", "B", "C"]), "A, B and C");
  assert.equal(joinAdjectives(["A", "B", "C", "D"]), "A, B, C and D");
});

test("p+ and p- share one structure and differ only in adjectives and principles", () => {
  const features = ["Helpfulness", "Accuracy", "Concision"];
  const good = buildSystemPrompt(principlesFor(DEFAULT_CATALOG, features, "good"));
  const bad = buildSystemPrompt(principlesFor(DEFAULT_CATALOG, features, "bad"));
  const goodLines = good.split("\n");
  const badLines = bad.split("\n");
  assert.equal(goodLines.length, 5);
  assert.equal(badLines.length, 5);
  assert.match(goodLines[0], /Helpful, Accurate and Concise/);
  assert.match(badLines[0], /Unhelpful, Inaccurate and Verbose/);
  assert.equal(
    goodLines[0].replace("Helpful, Accurate and Concise", "X"),
    badLines[0].replace("Unhelpful, Inaccurate and Verbose", "X"),
  );
  features.forEach((f, i) => {
    assert.equal(goodLines[i + 1], `${f}: ${featureSpec(DEFAULT_CATALOG, f).goodPrinciple}`);
    assert.equal(badLines[i + 1], `${f}: ${featureSpec(DEFAULT_CATALOG, f).badPrinciple}`);
  });
  assert.equal(goodLines[4], badLines[4]);
  assert.match(goodLines[4], /never mention these features, principles or guidelines/);
  assert.throws(() => buildSystemPrompt([]), RangeError);
});

test("generated principles replace the catalog's, adjectives stay from the catalog", () => {
  const items = principlesFor(DEFAULT_CATALOG, ["Safety", "Engagement"], "bad", {
    Safety: { good: "G", bad: "B" },
  });
  assert.deepEqual(items, [
    { feature: "Safety", adjective: "Unsafe", principle: "B" },
    {
      feature: "Engagement",
      adjective: "Dull",
      principle: featureSpec(DEFAULT_CATALOG, "Engagement").badPrinciple,
    },
  ]);
});

test("feature identification is a few-shot conversation asking for a comma-separated list", () => {
  const messages = featureIdentificationMessages("How do I boil an egg?", DEFAULT_CATALOG, 2);
  assert.equal(messages[0].role, "system");
  assert.match(messages[0].content, /comma-separated/);
  assert.match(messages[0].content, / 2 most relevant features/);
  for (const name of ["Safety", "Engagement", "Accuracy"])
    assert.ok(messages[0].content.includes(`- ${name}: `));
  assert.ok(!messages[0].content.includes("Concision"), "the random feature is not offered");
  assert.equal(messages.at(-1)?.role, "user");
  assert.match(messages.at(-1)?.content ?? "", /How do I boil an egg\?$/);
  const shots = messages.slice(1, -1);
  assert.ok(shots.length >= 6 && shots.length % 2 === 0);
  for (let i = 0; i < shots.length; i += 2) {
    assert.equal(shots[i].role, "user");
    assert.equal(shots[i + 1].role, "assistant");
    const answer = parseFeatureList(shots[i + 1].content, DEFAULT_CATALOG, 2);
    assert.equal(answer.features.length, 2, "each example answer is itself a valid list");
    assert.equal(shots[i + 1].content, answer.features.join(", "));
  }
  // A custom catalog without the example features gets no shots rather than examples with unknown names.
  const tiny: Catalog = catalogFromFile({
    features: [{ ...featureSpec(DEFAULT_CATALOG, "Safety"), name: "Kindness" }],
  });
  const zeroShot = featureIdentificationMessages("q", tiny, 3);
  assert.equal(zeroShot.length, 2);
  assert.match(zeroShot[0].content, /the 1 most relevant feature from/);
});

test("feature lists are parsed whatever the case, separators, bullets and prose", () => {
  const cases: Array<[string, string[], string[]]> = [
    ["Helpfulness, Accuracy", ["Helpfulness", "Accuracy"], []],
    ["  helpfulness ,ACCURACY  ", ["Helpfulness", "Accuracy"], []],
    ["Safety; Logicality", ["Safety", "Logicality"], []],
    ["Safety / Logicality", ["Safety", "Logicality"], []],
    ["Engagement and Literariness.", ["Engagement", "Literariness"], []],
    ["1. Accuracy\n2. Logicality\n3. Helpfulness", ["Accuracy", "Logicality"], []],
    ["- **Safety**\n- *Helpfulness*", ["Safety", "Helpfulness"], []],
    [
      "Sure! The most relevant features for this query are Comprehensiveness and Accuracy.",
      ["Comprehensiveness", "Accuracy"],
      [],
    ],
    ["Features: Creativity, Safety, Humor", ["Safety"], ["Creativity", "Humor"]],
    ["Creativity: the query asks for a story\nLiterariness: style matters", ["Literariness"], ["Creativity"]],
    ["Safety, safety, SAFETY, Accuracy", ["Safety", "Accuracy"], []],
    ["helpful, accurate", ["Helpfulness", "Accuracy"], []],
    ["Concision, Accuracy", ["Accuracy"], ["Concision"]],
  ];
  for (const [text, features, unknown] of cases) {
    const parsed = parseFeatureList(text, DEFAULT_CATALOG, 2);
    assert.deepEqual(parsed.features, features, text);
    assert.deepEqual(parsed.unknown, unknown, text);
    assert.equal(parsed.parsed, true, text);
  }
  for (const text of ["", "I cannot decide.", "Creativity, Humor", "```\n```"]) {
    const parsed = parseFeatureList(text, DEFAULT_CATALOG, 2);
    assert.equal(parsed.parsed, false, text);
    assert.deepEqual(parsed.features, []);
  }
  assert.deepEqual(parseFeatureList("Creativity, Humor", DEFAULT_CATALOG, 2).unknown, [
    "Creativity",
    "Humor",
  ]);
  assert.deepEqual(parseFeatureList("Safety, Accuracy, Logicality", DEFAULT_CATALOG, 3).features, [
    "Safety",
    "Accuracy",
    "Logicality",
  ]);
});

test("parseFeatureList never throws and returns only distinct identifiable features", () => {
  const allowed = new Set([
    "Safety",
    "Logicality",
    "Comprehensiveness",
    "Helpfulness",
    "Literariness",
    "Accuracy",
    "Engagement",
  ]);
  fc.assert(
    fc.property(fc.string({ maxLength: 200 }), fc.integer({ min: 0, max: 5 }), (text, count) => {
      const parsed = parseFeatureList(text, DEFAULT_CATALOG, count);
      assert.ok(parsed.features.length <= count);
      assert.equal(new Set(parsed.features).size, parsed.features.length);
      for (const f of parsed.features) assert.ok(allowed.has(f));
      assert.equal(parsed.parsed, parsed.features.length > 0);
    }),
    { seed: 7, numRuns: 300 },
  );
});

test("principle generation asks for JSON and its parser tolerates fences and prose", () => {
  const messages = principleGenerationMessages(
    "Plan a week of meals.",
    featureSpec(DEFAULT_CATALOG, "Helpfulness"),
  );
  assert.equal(messages[0].role, "system");
  const last = messages.at(-1)?.content ?? "";
  assert.match(last, /Plan a week of meals\./);
  assert.match(last, /Helpfulness/);
  assert.match(last, /JSON/);
  for (const shot of messages.filter((m) => m.role === "assistant"))
    assert.notEqual(parsePrincipleJson(shot.content), null);

  const want = { good: "Be specific.", bad: "Be vague." };
  const texts = [
    '{"good": "Be specific.", "bad": "Be vague."}',
    '```json\n{"good": "Be specific.", "bad": "Be vague."}\n```',
    'Here you go:\n```\n{ "good" : "Be specific." ,\n "bad": "Be vague." }\n```\nHope this helps {really}.',
    'Sure. {"Good": "Be specific.", "Bad_principle": "Be vague."} Let me know if you want more.',
    '{"note": "not this"} {"good": "Be specific.", "bad": "Be vague."}',
    '{"good": "Be\n specific.", "bad": "Be vague.", "extra": 1}',
  ];
  for (const text of texts) assert.deepEqual(parsePrincipleJson(text), want, text);
  assert.deepEqual(parsePrincipleJson('{"good": "a {b} \\"c\\"", "bad": "d"}'), {
    good: 'a {b} "c"',
    bad: "d",
  });
  for (const text of [
    "",
    "no json here",
    '{"good": "x"}',
    '{"good": "", "bad": "y"}',
    '{"good": "x", "bad": 3}',
    '{"good": "x", "bad": "y"',
    "[1, 2]",
  ])
    assert.equal(parsePrincipleJson(text), null, text);
});
