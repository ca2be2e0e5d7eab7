import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { GenerateRequest, Generation, Policy, TokenUsage } from "../src/policy/types.js";
import { BuildInterruptedError, buildRecords, requestSeed } from "../src/sso/builder.js";
import { DEFAULT_CATALOG, featureSpec } from "../src/sso/catalog.js";
import {
  dropLogPath,
  openDropLog,
  openRecordWriter,
  type QueryPrompt,
  readRecords,
} from "../src/sso/records.js";
import { hashString } from "../src/util/rng.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-builder-"));
after(() => rmSync(work, { recursive: true, force: true }));

type Kind = "features" | "principle" | "sample";

interface Script {
  /** Answer to feature identification for a query. */
  features?(query: string, seed: number): string;
  /** Answer to principle generation for (query, feature). */
  principle?(query: string, feature: string): string;
  /** Answer to a sample, given the system prompt (null: none). */
  sample?(query: string, system: string | null, seed: number): string;
  /** Throws when this returns true for the call index (0-based) of a generate call. */
  failOnCall?(call: number, kinds: Kind[]): boolean;
}

function kindOf(r: GenerateRequest): Kind {
  const all = r.messages.map((m) => m.content).join("\n");
  if (/comma-separated/.test(all)) return "features";
  if (/JSON object/.test(r.messages.at(-1)?.content ?? "")) return "principle";
  return "sample";
}

function queryOf(r: GenerateRequest): string {
  const last = r.messages.at(-1)?.content ?? "";
  const kind = kindOf(r);
  if (kind === "sample") return last;
  return /^Query: (.*)$/m.exec(last)?.[1] ?? "";
}

/** A deterministic in-process policy that answers each kind of request from a script. */
class ScriptedPolicy implements Policy {
  readonly name = "scripted";
  readonly calls: GenerateRequest[][] = [];
  private tokens: TokenUsage = { promptTokens: 0, completionTokens: 0, requests: 0 };

  constructor(private readonly script: Script = {}) {}

  async generate(requests: GenerateRequest[]): Promise<Generation[][]> {
    const call = this.calls.length;
    this.calls.push(requests);
    await new Promise((resolve) => setImmediate(resolve));
    if (this.script.failOnCall?.(call, requests.map(kindOf)) === true)
      throw new Error(`scripted failure on call ${call}`);
    return requests.map((r) => {
      const query = queryOf(r);
      const seed = r.seed ?? 0;
      let text: string;
      switch (kindOf(r)) {
        case "features":
          text = this.script.features?.(query, seed) ?? "Helpfulness, Accuracy";
          break;
        case "principle": {
          const feature = /^Feature: (\S+)/m.exec(r.messages.at(-1)?.content ?? "")?.[1] ?? "";
          text =
            this.script.principle?.(query, feature) ??
            JSON.stringify({ good: `good ${feature} for ${query}`, bad: `bad ${feature} for ${query}` });
          break;
        }
        default: {
          const system = r.messages[0].role === "system" ? r.messages[0].content : null;
          text =
            this.script.sample?.(query, system, seed) ??
            `${system === null ? "plain" : `guided ${hashString(system).toString(16)}`} answer to ${query} (seed ${seed})`;
        }
      }
      this.tokens.requests++;
      this.tokens.promptTokens += r.messages.length;
      this.tokens.completionTokens += text.split(" ").length;
      return [{ text, finishReason: text.endsWith("…") ? "length" : "stop" }];
    });
  }

  usage(): TokenUsage {
    return { ...this.tokens };
  }
}

function queries(count: number, tag = "q"): QueryPrompt[] {
  return Array.from({ length: count }, (_, i) => ({ id: `${tag}${i}`, prompt: `${tag} question ${i}?` }));
}

function requestKey(r: GenerateRequest): string {
  return JSON.stringify(r);
}

test("each record has the reference fields, p+ from good and p- from bad principles, and three samples", async () => {
  const policy = new ScriptedPolicy();
  const { records, summary } = await buildRecords(policy, queries(5), {
    seed: 1,
    concisionRate: 0,
    batchSize: 2,
  });
  assert.equal(records.length, 5);
  assert.equal(summary.kept, 5);
  assert.equal(summary.processed, 5);
  // One generate call per stage per batch: 3 batches x (features, samples).
  assert.deepEqual(
    policy.calls.map((c) => [c.length, kindOf(c[0])]),
    [
      [2, "features"],
      [6, "sample"],
      [2, "features"],
      [6, "sample"],
      [1, "features"],
      [3, "sample"],
    ],
  );
  const helpful = featureSpec(DEFAULT_CATALOG, "Helpfulness");
  const accurate = featureSpec(DEFAULT_CATALOG, "Accuracy");
  records.forEach((r, i) => {
    assert.equal(r.id, `q${i}`);
    assert.equal(r.instruction, `q question ${i}?`);
    assert.equal(r.system, "");
    assert.deepEqual(r.history, []);
    assert.deepEqual(r.principles, [
      { feature: "Helpfulness", good: helpful.goodPrinciple, bad: helpful.badPrinciple, source: "catalog" },
      { feature: "Accuracy", good: accurate.goodPrinciple, bad: accurate.badPrinciple, source: "catalog" },
    ]);
    assert.match(r.p_system, /Helpful and Accurate/);
    assert.ok(r.p_system.includes(`Helpfulness: ${helpful.goodPrinciple}`));
    assert.match(r.n_system, /Unhelpful and Inaccurate/);
    assert.ok(r.n_system.includes(`Accuracy: ${accurate.badPrinciple}`));
    assert.equal(
      r.chosen,
      `guided ${hashString(r.p_system).toString(16)} answer to ${r.instruction} (seed ${requestSeed(1, r.id, "chosen")})`,
    );
    assert.ok(
      r.rejected.startsWith(`guided ${hashString(r.n_system).toString(16)} answer to ${r.instruction}`),
    );
    assert.ok(r.raw.startsWith(`plain answer to ${r.instruction}`));
    assert.deepEqual(r.meta, {
      features: ["Helpfulness", "Accuracy"],
      featureSource: "policy",
      randomFeatureAdded: false,
      principleFallbacks: [],
      seed: 1,
      truncated: [],
    });
  });
  const samples = policy.calls.flat().filter((r) => kindOf(r) === "sample");
  for (const r of samples) {
    assert.equal(r.temperature, 0.7);
    assert.equal(r.topP, 0.8);
    assert.equal(r.messages.at(-1)?.role, "user");
  }
  assert.deepEqual(summary.usage, policy.usage());
});

test("the same seed gives the same requests and records whatever the batching and concurrency", async () => {
  const prompts = queries(13);
  const script: Script = {
    features: (q, seed) =>
      ["Safety, Logicality", "Engagement and Literariness", "Accuracy"][(hashString(q) + seed) % 3],
  };
  const runs = [];
  for (const [batchSize, parallelBatches, order] of [
    [1, 1, prompts],
    [4, 3, prompts],
    [13, 1, [...prompts].reverse()],
  ] as const) {
    const policy = new ScriptedPolicy(script);
    const result = await buildRecords(policy, order, {
      seed: 42,
      batchSize,
      parallelBatches,
      concisionRate: 0.5,
    });
    const byId = Object.fromEntries(result.records.map((r) => [r.id, r]));
    runs.push({ byId, requests: policy.calls.flat().map(requestKey).sort(), summary: result.summary });
  }
  for (const run of runs.slice(1)) {
    assert.deepEqual(run.byId, runs[0].byId);
    assert.deepEqual(run.requests, runs[0].requests);
    assert.equal(run.summary.randomFeatureAdded, runs[0].summary.randomFeatureAdded);
  }
  const otherSeed = new ScriptedPolicy(script);
  await buildRecords(otherSeed, prompts, { seed: 43, concisionRate: 0.5 });
  const seeds42 = new Set(runs[0].requests.map((r) => (JSON.parse(r) as GenerateRequest).seed));
  for (const r of otherSeed.calls.flat())
    assert.ok(!seeds42.has(r.seed), "another seed, other request seeds");
});

test("unusable feature answers fall back to seeded random features and are counted", async () => {
  const script: Script = {
    features: (q) =>
      q.startsWith("q question 0")
        ? "I am not sure what you mean."
        : q.startsWith("q question 1")
          ? "Safety, Creativity"
          : "Humor; Safety; logicality; Wit",
  };
  const run = async () => buildRecords(new ScriptedPolicy(script), queries(3), { seed: 5, concisionRate: 0 });
  const { records, summary } = await run();
  assert.equal(records[0].meta?.featureSource, "random");
  assert.equal(records[0].meta?.features.length, 2);
  assert.equal(new Set(records[0].meta?.features).size, 2);
  assert.ok(records[0].meta?.features.every((f) => f !== "Concision"));
  assert.equal(records[1].meta?.featureSource, "topped-up");
  assert.equal(records[1].meta?.features[0], "Safety");
  assert.notEqual(records[1].meta?.features[1], "Safety");
  assert.equal(records[2].meta?.featureSource, "policy");
  assert.deepEqual(records[2].meta?.features, ["Safety", "Logicality"]);
  assert.equal(summary.featureFallbacks, 1);
  assert.equal(summary.featureTopUps, 1);
  assert.equal(summary.unknownFeatureNames, 3);
  // The fallback is seeded: the same run chooses the same features.
  const again = await run();
  assert.deepEqual(again.records[0].meta?.features, records[0].meta?.features);
});

test("Concision is added at the configured rate, decided per query id", async () => {
  const prompts = queries(400);
  const all = await buildRecords(new ScriptedPolicy(), prompts.slice(0, 20), { seed: 2, concisionRate: 1 });
  for (const r of all.records) {
    assert.deepEqual(r.meta?.features, ["Helpfulness", "Accuracy", "Concision"]);
    assert.match(r.p_system, /Helpful, Accurate and Concise/);
    assert.match(r.n_system, /Unhelpful, Inaccurate and Verbose/);
  }
  const none = await buildRecords(new ScriptedPolicy(), prompts.slice(0, 20), { seed: 2, concisionRate: 0 });
  assert.equal(none.summary.randomFeatureAdded, 0);
  const some = await buildRecords(new ScriptedPolicy(), prompts, { seed: 2, batchSize: 50 });
  // Binomial(400, 0.2): mean 80, sd 8; 5 sd either side.
  assert.ok(
    some.summary.randomFeatureAdded > 40 && some.summary.randomFeatureAdded < 120,
    String(some.summary.randomFeatureAdded),
  );
  const subset = await buildRecords(new ScriptedPolicy(), prompts.slice(100, 140), { seed: 2 });
  for (const r of subset.records)
    assert.equal(
      r.meta?.randomFeatureAdded,
      some.records.find((s) => s.id === r.id)?.meta?.randomFeatureAdded,
    );
});

test("generated principles replace the catalog's; unparseable ones fall back and are counted", async () => {
  const policy = new ScriptedPolicy({
    principle: (q, feature) =>
      feature === "Accuracy"
        ? "Sorry, I cannot write that."
        : `\`\`\`json\n{"good": "good ${feature} for ${q}", "bad": "bad ${feature} for ${q}"}\n\`\`\`\nDone.`,
  });
  const { records, summary } = await buildRecords(policy, queries(3), {
    seed: 1,
    concisionRate: 0,
    principles: "generated",
    batchSize: 3,
  });
  assert.deepEqual(
    policy.calls.map((c) => [c.length, kindOf(c[0])]),
    [
      [3, "features"],
      [6, "principle"],
      [9, "sample"],
    ],
  );
  assert.equal(summary.principleFallbacks, 3);
  for (const r of records) {
    assert.deepEqual(r.principles[0], {
      feature: "Helpfulness",
      good: `good Helpfulness for ${r.instruction}`,
      bad: `bad Helpfulness for ${r.instruction}`,
      source: "generated",
    });
    assert.equal(r.principles[1].source, "catalog");
    assert.equal(r.principles[1].good, featureSpec(DEFAULT_CATALOG, "Accuracy").goodPrinciple);
    assert.ok(r.p_system.includes(`Helpfulness: good Helpfulness for ${r.instruction}`));
    assert.ok(r.n_system.includes(`Helpfulness: bad Helpfulness for ${r.instruction}`));
    assert.deepEqual(r.meta?.principleFallbacks, ["Accuracy"]);
  }
});

test("filtered records are dropped by reason, logged, and not sampled again on resume", async () => {
  const out = join(work, "drops.jsonl");
  const script: Script = {
    sample: (q, system, seed) => {
      if (q.startsWith("q question 0")) return "identical";
      if (q.startsWith("q question 1")) return system === null ? "" : `answer ${seed}`;
      if (q.startsWith("q question 2"))
        return system !== null && /Unhelpful/.test(system)
          ? "raw-like"
          : system === null
            ? "raw-like"
            : "good";
      if (q.startsWith("q question 3"))
        return `Helpful response: ${system === null ? "plain" : `cut off ${seed} …`}`;
      return `${system === null ? "plain" : hashString(system)} answer`;
    },
  };
  const writer = openRecordWriter(out);
  const dropLog = openDropLog(dropLogPath(out));
  const first = new ScriptedPolicy(script);
  const { summary } = await buildRecords(first, queries(5), { seed: 1, writer, dropLog });
  writer.close();
  dropLog.close();
  assert.deepEqual(summary.drops, {
    empty_response: 1,
    chosen_equals_rejected: 1,
    chosen_equals_raw: 0,
    rejected_equals_raw: 1,
  });
  assert.equal(summary.kept, 2);
  assert.equal(summary.dropped, 3);
  assert.equal(summary.truncated, 2);
  const kept = readRecords(out).rows.map((r) => r.value);
  assert.deepEqual(
    kept.map((r) => r.id),
    ["q3", "q4"],
  );
  // The label is stripped and truncation noted.
  assert.match(kept[0].chosen, /^cut off \d+ …$/);
  assert.deepEqual(kept[0].meta?.truncated, ["chosen", "rejected"]);
  assert.deepEqual(
    readFileSync(dropLogPath(out), "utf8")
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { id: string }).id),
    ["q0", "q1", "q2"],
  );
  const second = new ScriptedPolicy(script);
  const resumed = await buildRecords(second, queries(6), {
    seed: 1,
    writer: openRecordWriter(out),
    dropLog: openDropLog(dropLogPath(out)),
  });
  assert.equal(resumed.summary.skipped, 5);
  assert.equal(resumed.summary.processed, 1);
  assert.deepEqual([...new Set(second.calls.flat().map(queryOf))], ["q question 5?"]);
});

test("a failing policy stops the build, keeps finished batches, and a rerun completes without duplicates", async () => {
  const out = join(work, "resume.jsonl");
  const prompts = queries(9);
  const progress: number[] = [];
  // Call 3 is the feature stage of the second batch (batches of 3: features, samples, features, ...).
  const failing = new ScriptedPolicy({ failOnCall: (call) => call === 2 });
  const writer = openRecordWriter(out);
  await assert.rejects(
    buildRecords(
      failing,
      prompts,
      { seed: 8, batchSize: 3, writer },
      { onProgress: (done) => progress.push(done) },
    ),
    (err: unknown) => {
      assert.ok(err instanceof BuildInterruptedError);
      assert.match(err.message, /scripted failure on call 2/);
      assert.ok(err.cause instanceof Error);
      assert.equal(err.summary.kept, 3);
      return true;
    },
  );
  writer.close();
  assert.deepEqual(progress, [0, 3]);
  assert.deepEqual(
    readRecords(out).rows.map((r) => r.value.id),
    ["q0", "q1", "q2"],
  );
  const healthy = new ScriptedPolicy();
  const resumed = await buildRecords(healthy, prompts, {
    seed: 8,
    batchSize: 3,
    writer: openRecordWriter(out),
  });
  assert.equal(resumed.summary.skipped, 3);
  assert.equal(resumed.summary.kept, 6);
  assert.ok(healthy.calls.flat().every((r) => !/q question [012]\?/.test(queryOf(r))));
  const ids = readRecords(out).rows.map((r) => r.value.id);
  assert.deepEqual(
    ids,
    prompts.map((p) => p.id),
  );
  // The resumed records equal those of an uninterrupted run with the same seed.
  const fresh = await buildRecords(new ScriptedPolicy(), prompts, { seed: 8, batchSize: 3 });
  assert.deepEqual(
    readRecords(out).rows.map((r) => r.value),
    fresh.records,
  );
});

test("with parallel batches, a failure lets batches in flight finish and be written", async () => {
  const out = join(work, "parallel.jsonl");
  const writer = openRecordWriter(out);
  // Two batches run side by side; the sample stage of one of them fails.
  let failed = false;
  const policy = new ScriptedPolicy({
    failOnCall: (_call, kinds) => {
      if (failed || kinds[0] !== "sample") return false;
      failed = true;
      return true;
    },
  });
  await assert.rejects(
    buildRecords(policy, queries(8), { seed: 1, batchSize: 2, parallelBatches: 2, writer }),
    BuildInterruptedError,
  );
  writer.close();
  const written = readRecords(out).rows.length;
  assert.equal(written, 2, "the other batch in flight was completed");
  assert.ok(policy.calls.length <= 4, "no new batch started after the failure");
});

test("bad options are programming errors", async () => {
  const policy = new ScriptedPolicy();
  await assert.rejects(buildRecords(policy, queries(1), { seed: 1, featureCount: 0 }), RangeError);
  await assert.rejects(buildRecords(policy, queries(1), { seed: 1, concisionRate: 1.5 }), RangeError);
  await assert.rejects(buildRecords(policy, queries(1), { seed: 1.5 }), RangeError);
  await assert.rejects(buildRecords(policy, queries(1), { seed: 1, batchSize: 0 }), RangeError);
  assert.equal(policy.calls.length, 0);
});
