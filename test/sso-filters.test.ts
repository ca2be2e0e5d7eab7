import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { DROP_REASONS, emptyDropCounts, filterRecord, stripResponseLabel } from "../src/sso/filters.js";

const long = (s: string): string => `${s} with enough words to pass twenty characters`;

test("a period is appended only when both answers are long and end in a lowercase letter", () => {
  const r = filterRecord({ chosen: long("good answer"), rejected: long("bad answer"), raw: "plain" });
  assert.equal(r.reason, null);
  assert.equal(r.kept?.chosen, `${long("good answer")}.`);
  assert.equal(r.kept?.rejected, `${long("bad answer")}.`);
  // Ends in punctuation, an uppercase letter or a digit: untouched.
  const r2 = filterRecord({ chosen: `${long("good answer")}!`, rejected: `${long("bad")} OK`, raw: "plain" });
  assert.equal(r2.kept?.chosen, `${long("good answer")}!`);
  assert.equal(r2.kept?.rejected, `${long("bad")} OK`);
  // One side short: neither gets a period.
  const r3 = filterRecord({ chosen: long("good answer"), rejected: "short one", raw: "plain" });
  assert.equal(r3.kept?.chosen, long("good answer"));
  assert.equal(r3.kept?.rejected, "short one");
  // Exactly 20 characters is not "longer than 20".
  const twenty = "abcdefghij klmnopqrs";
  assert.equal(twenty.length, 20);
  assert.equal(filterRecord({ chosen: twenty, rejected: long("x"), raw: "p" }).kept?.chosen, twenty);
  // Non-ASCII lowercase counts as lowercase.
  assert.equal(
    filterRecord({ chosen: long("réponse très bonne é"), rejected: long("b"), raw: "p" }).kept?.chosen,
    `${long("réponse très bonne é")}.`,
  );
});

test("leading response labels are stripped before comparing", () => {
  assert.equal(stripResponseLabel("Helpful response: Boil it for 7 minutes."), "Boil it for 7 minutes.");
  assert.equal(stripResponseLabel("Response: yes"), "yes");
  assert.equal(stripResponseLabel("  RESPONSE:yes"), "yes");
  assert.equal(stripResponseLabel("**Unhelpful Response:** no"), "no");
  assert.equal(stripResponseLabel("Unhelpful, Inaccurate and Verbose response: no"), "no");
  assert.equal(stripResponseLabel("Response time matters: a lot"), "Response time matters: a lot");
  assert.equal(stripResponseLabel("The response: is here"), "is here");
  assert.equal(stripResponseLabel("My answer follows."), "My answer follows.");
  const r = filterRecord({
    chosen: "Helpful response: Same text",
    rejected: "Unhelpful response: Same text",
    raw: "x",
  });
  assert.equal(r.kept, null);
  assert.equal(r.reason, "chosen_equals_rejected");
  const k = filterRecord({ chosen: "Helpful response: A", rejected: "Unhelpful response: B", raw: "x" });
  assert.deepEqual(k.kept, { chosen: "A", rejected: "B", raw: "x" });
});

test("records without contrast or with empty answers are dropped by named reason", () => {
  const cases: Array<[{ chosen: string; rejected: string; raw: string }, string | null]> = [
    [{ chosen: "a", rejected: "b", raw: "c" }, null],
    [{ chosen: "", rejected: "b", raw: "c" }, "empty_response"],
    [{ chosen: "a", rejected: "   ", raw: "c" }, "empty_response"],
    [{ chosen: "a", rejected: "b", raw: "\n" }, "empty_response"],
    [{ chosen: "Response:", rejected: "b", raw: "c" }, "empty_response"],
    [{ chosen: "", rejected: "", raw: "" }, "empty_response"],
    [{ chosen: "same", rejected: " same ", raw: "c" }, "chosen_equals_rejected"],
    [{ chosen: "a", rejected: "b", raw: " a\n" }, "chosen_equals_raw"],
    [{ chosen: "a", rejected: "b", raw: "b" }, "rejected_equals_raw"],
    // Raw is only trimmed, so a label on the raw answer keeps it different.
    [{ chosen: "a", rejected: "b", raw: "Response: a" }, null],
  ];
  for (const [record, reason] of cases) {
    const r = filterRecord(record);
    assert.equal(r.reason, reason, JSON.stringify(record));
    assert.equal(r.kept === null, reason !== null);
  }
  // Period appending happens before comparing: two long answers that differ only by a final period
  // compare equal afterwards.
  const p = filterRecord({ chosen: long("same text"), rejected: `${long("same text")}.`, raw: "c" });
  assert.equal(p.reason, "chosen_equals_rejected");
  assert.deepEqual(emptyDropCounts(), Object.fromEntries(DROP_REASONS.map((r) => [r, 0])));
});

test("filtering is idempotent on kept records and keeps other fields", () => {
  fc.assert(
    fc.property(
      fc.string({ maxLength: 60 }),
      fc.string({ maxLength: 60 }),
      fc.string({ maxLength: 60 }),
      (c, r, w) => {
        const first = filterRecord({ chosen: c, rejected: r, raw: w, id: "x" });
        if (first.kept === null) return;
        assert.equal(first.kept.id, "x");
        const second = filterRecord(first.kept);
        assert.equal(second.reason, null);
        assert.deepEqual(second.kept?.raw, first.kept.raw);
      },
    ),
    { seed: 3, numRuns: 400 },
  );
});
