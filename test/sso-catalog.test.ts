import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import {
  catalogToFile,
  DEFAULT_CATALOG,
  FEATURE_NAMES,
  featureNames,
  featureSpec,
  identifiableFeatures,
  loadCatalog,
} from "../src/sso/catalog.js";
import { UserError } from "../src/util/errors.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-catalog-"));
after(() => rmSync(work, { recursive: true, force: true }));

function writeJson(name: string, value: unknown): string {
  const path = join(work, name);
  writeFileSync(path, typeof value === "string" ? value : JSON.stringify(value));
  return path;
}

test("the default catalog has the eight features with the issue's adjective pairs", () => {
  assert.deepEqual(featureNames(DEFAULT_CATALOG), [...FEATURE_NAMES]);
  const pairs = Object.fromEntries(
    FEATURE_NAMES.map((n) => [
      n,
      [featureSpec(DEFAULT_CATALOG, n).goodAdjective, featureSpec(DEFAULT_CATALOG, n).badAdjective],
    ]),
  );
  assert.deepEqual(pairs, {
    Safety: ["Safe", "Unsafe"],
    Logicality: ["Logical", "Illogical"],
    Comprehensiveness: ["Comprehensive", "Superficial"],
    Helpfulness: ["Helpful", "Unhelpful"],
    Literariness: ["Literary", "Boring"],
    Accuracy: ["Accurate", "Inaccurate"],
    Engagement: ["Engaging", "Dull"],
    Concision: ["Concise", "Verbose"],
  });
  for (const name of FEATURE_NAMES) {
    const spec = featureSpec(DEFAULT_CATALOG, name);
    assert.equal(spec.name, name);
    for (const text of [spec.meaning, spec.goodPrinciple, spec.badPrinciple]) {
      assert.ok(text.length > 20, `${name} has real text`);
      assert.ok(!text.includes("\n"), `${name} text is one line`);
    }
    assert.notEqual(spec.goodPrinciple, spec.badPrinciple);
  }
  assert.equal(DEFAULT_CATALOG.randomFeature, "Concision");
  assert.deepEqual(identifiableFeatures(DEFAULT_CATALOG), FEATURE_NAMES.slice(0, 7));
  assert.throws(() => featureSpec(DEFAULT_CATALOG, "constructor"), RangeError);
});

test("a catalog file round-trips and Concision becomes the random feature by default", () => {
  const path = writeJson("default.json", catalogToFile(DEFAULT_CATALOG));
  assert.deepEqual(loadCatalog(path), DEFAULT_CATALOG);
  const custom = writeJson("custom.json", {
    features: [
      { ...featureSpec(DEFAULT_CATALOG, "Accuracy") },
      { ...featureSpec(DEFAULT_CATALOG, "Concision"), name: "concision" },
      {
        name: "Brand Voice",
        meaning: "Whether it sounds like us.",
        goodAdjective: "On-brand",
        badAdjective: "Off-brand",
        goodPrinciple: "Sound like the company style guide.",
        badPrinciple: "Sound like nobody in particular.",
      },
    ],
  });
  const catalog = loadCatalog(custom);
  assert.equal(catalog.randomFeature, "concision");
  assert.deepEqual(identifiableFeatures(catalog), ["Accuracy", "Brand Voice"]);
  const none = writeJson("none.json", {
    features: [featureSpec(DEFAULT_CATALOG, "Safety")],
    randomFeature: null,
  });
  assert.equal(loadCatalog(none).randomFeature, null);
});

function loadError(name: string, value: unknown): string {
  const path = writeJson(name, value);
  try {
    loadCatalog(path);
  } catch (err) {
    assert.ok(err instanceof UserError, String(err));
    assert.equal(err.exitCode, 2);
    assert.ok(err.message.startsWith(path), err.message);
    return err.message;
  }
  assert.fail(`${name} was accepted`);
}

test("a bad catalog file is rejected naming the file and the field", () => {
  const safety = featureSpec(DEFAULT_CATALOG, "Safety");
  assert.match(loadError("notjson.json", "{"), /invalid JSON/);
  assert.match(
    loadError("missing.json", { features: [{ ...safety, goodPrinciple: undefined }] }),
    /features\[0\]\.goodPrinciple/,
  );
  assert.match(
    loadError("empty.json", { features: [{ ...safety, badAdjective: "  " }] }),
    /features\[0\]\.badAdjective/,
  );
  assert.match(
    loadError("dup.json", { features: [safety, { ...safety, name: "SAFETY" }] }),
    /features\[1\]\.name: duplicate/,
  );
  assert.match(
    loadError("comma.json", { features: [{ ...safety, name: "Safe, sound" }] }),
    /features\[0\]\.name/,
  );
  assert.match(
    loadError("and.json", { features: [{ ...safety, name: "Law and Order" }] }),
    /features\[0\]\.name/,
  );
  assert.match(loadError("random.json", { features: [safety], randomFeature: "Concision" }), /randomFeature/);
  assert.match(loadError("only-random.json", { features: [safety], randomFeature: "Safety" }), /features/);
  assert.match(loadError("extra.json", { features: [{ ...safety, colour: "red" }] }), /features\[0\]/);
  assert.match(loadError("nofeatures.json", { features: [] }), /features/);
  assert.match(
    loadError("multiline.json", { features: [{ ...safety, goodPrinciple: "one\ntwo" }] }),
    /features\[0\]\.goodPrinciple: must be a single line/,
  );
});
