import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import {
  dropLogPath,
  openDropLog,
  openRecordWriter,
  promptIdFor,
  readPrompts,
  readRecords,
  type SsoRecord,
  SsoRecordSchema,
} from "../src/sso/records.js";
import { UserError } from "../src/util/errors.js";

const work = mkdtempSync(join(tmpdir(), "selfsteer-records-"));
after(() => rmSync(work, { recursive: true, force: true }));

function file(name: string, lines: string[]): string {
  const path = join(work, name);
  writeFileSync(path, `${lines.join("\n")}\n`);
  return path;
}

function record(id: string, overrides: Partial<SsoRecord> = {}): SsoRecord {
  return {
    id,
    instruction: `question ${id}`,
    principles: [{ feature: "Helpfulness", good: "g", bad: "b", source: "catalog" }],
    p_system: "be good",
    n_system: "be bad",
    system: "",
    chosen: "good answer",
    rejected: "bad answer",
    raw: "plain answer",
    history: [],
    ...overrides,
  };
}

function userError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof UserError, String(err));
    assert.equal(err.exitCode, 2);
    return err.message;
  }
  assert.fail("expected a UserError");
}

test("prompt ids are given ids or a stable hash of the text", () => {
  const path = file("prompts.jsonl", [
    JSON.stringify({ id: "a", prompt: "first" }),
    JSON.stringify({ instruction: "second" }),
    "",
    JSON.stringify({ id: 7, prompt: "third" }),
    JSON.stringify({ prompt: "second" }),
    JSON.stringify({ prompt: "fourth", instruction: "fourth", extra: true }),
  ]);
  const { prompts, duplicates } = readPrompts(path);
  assert.deepEqual(prompts, [
    { id: "a", prompt: "first" },
    { id: promptIdFor("second"), prompt: "second" },
    { id: "7", prompt: "third" },
    { id: promptIdFor("fourth"), prompt: "fourth" },
  ]);
  assert.equal(duplicates, 1);
  assert.equal(promptIdFor("second"), promptIdFor("second"));
  assert.notEqual(promptIdFor("second"), promptIdFor("second "));
  assert.match(promptIdFor("x"), /^q-[0-9a-f]{16}$/);
});

test("bad prompt lines name the file, the line and the field", () => {
  const cases: Array<[string[], number, RegExp]> = [
    [[JSON.stringify({ prompt: "ok" }), JSON.stringify({ text: "no" })], 2, /field prompt: missing/],
    [[JSON.stringify({ prompt: "ok" }), "{not json"], 2, /invalid JSON/],
    [[JSON.stringify({ id: 5, prompt: 7 })], 1, /field prompt/],
    [[JSON.stringify({ id: "", prompt: "x" })], 1, /field id/],
    [[JSON.stringify({ id: 1.5, prompt: "x" })], 1, /field id/],
    [[JSON.stringify({ prompt: "   " })], 1, /field prompt: must not be empty/],
    [[JSON.stringify({ prompt: "a", instruction: "b" })], 1, /field instruction/],
    [
      [JSON.stringify({ id: "x", prompt: "a" }), JSON.stringify({ id: "x", prompt: "b" })],
      2,
      /field id: 'x' is already used on line 1/,
    ],
  ];
  cases.forEach(([lines, line, pattern], i) => {
    const path = file(`bad-${i}.jsonl`, lines);
    const message = userError(() => readPrompts(path));
    assert.ok(message.startsWith(`${path}:${line}: `), message);
    assert.match(message, pattern);
  });
  assert.match(
    userError(() => readPrompts(join(work, "missing.jsonl"))),
    /missing\.jsonl: cannot read file/,
  );
});

test("records validate, read back, and bad lines can be set aside", () => {
  const good = record("r1", {
    meta: {
      features: ["Helpfulness"],
      featureSource: "policy",
      randomFeatureAdded: false,
      principleFallbacks: [],
      seed: 1,
      truncated: [],
    },
  });
  assert.deepEqual(SsoRecordSchema.parse(good), good);
  const path = file("records.jsonl", [
    JSON.stringify(good),
    JSON.stringify({ ...record("r2"), chosen: 3 }),
    JSON.stringify(record("r3")),
    JSON.stringify({ ...record("r4"), principles: [{ feature: "X", good: "g" }] }),
  ]);
  const message = userError(() => readRecords(path));
  assert.ok(message.startsWith(`${path}:2: field chosen`), message);
  const side = join(work, "bad-records.jsonl");
  const { rows, skipped } = readRecords(path, { badLinesTo: side });
  assert.deepEqual(
    rows.map((r) => [r.line, r.value.id]),
    [
      [1, "r1"],
      [3, "r3"],
    ],
  );
  assert.equal(skipped, 2);
  const bad = readFileSync(side, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { line: number; error: string });
  assert.deepEqual(
    bad.map((b) => b.line),
    [2, 4],
  );
  assert.match(bad[1].error, /principles\[0\]\.bad/);
});

test("the record writer resumes by id and survives a torn last line", () => {
  const path = join(work, "out.jsonl");
  const w = openRecordWriter(path);
  assert.equal(w.append(record("a")), true);
  assert.equal(w.append(record("b")), true);
  assert.equal(w.append(record("a", { chosen: "other" })), false);
  w.close();
  writeFileSync(path, `${readFileSync(path, "utf8")}{"id": "c", "instr`);
  const again = openRecordWriter(path);
  assert.equal(again.has("a"), true);
  assert.equal(again.has("b"), true);
  assert.equal(again.has("c"), false);
  again.append(record("c"));
  again.close();
  assert.deepEqual(
    readRecords(path).rows.map((r) => r.value.id),
    ["a", "b", "c"],
  );
  const drops = openDropLog(dropLogPath(path));
  drops.append({ id: "d", reason: "chosen_equals_raw" });
  drops.close();
  assert.ok(existsSync(`${path}.drops.jsonl`));
  assert.equal(openDropLog(dropLogPath(path)).has("d"), true);
});
