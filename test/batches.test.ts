import assert from "node:assert/strict";
import { test } from "node:test";
import { lengthSortedGroups, scoreByLength } from "../src/engine/batches.js";
import { pairFromRecord, pairFromText, recordFromPair } from "../src/sso/pairs.js";

test("length-sorted groups respect the token budget and the row cap, and cover every index once", () => {
  const lengths = [5, 1, 9, 3, 3, 12, 2, 7];
  for (const longestFirst of [false, true])
    for (const limits of [{ maxTokens: 16 }, { maxRows: 3 }, { maxTokens: 20, maxRows: 2 }]) {
      const groups = lengthSortedGroups(lengths, { ...limits, longestFirst });
      assert.deepEqual(
        groups.flat().sort((a, b) => a - b),
        lengths.map((_, i) => i),
      );
      for (const g of groups) {
        assert.ok(g.length >= 1);
        if (g.length > 1 && limits.maxTokens !== undefined)
          assert.ok(g.length * Math.max(...g.map((i) => lengths[i])) <= limits.maxTokens);
        if (limits.maxRows !== undefined) assert.ok(g.length <= limits.maxRows);
      }
      const flat = groups.flat().map((i) => lengths[i]);
      const sorted = [...flat].sort((a, b) => (longestFirst ? b - a : a - b));
      assert.deepEqual(flat, sorted);
    }
  // A sequence longer than the budget still runs, alone.
  assert.deepEqual(lengthSortedGroups([4, 30, 4], { maxTokens: 10 }), [[0, 2], [1]]);
});

test("scoreByLength returns each group's results in input order", () => {
  const lengths = [3, 1, 2, 1];
  const calls: number[][] = [];
  const out = scoreByLength(lengths, { maxRows: 2 }, (group) => {
    calls.push([...group]);
    return group.map((i) => `s${i}`);
  });
  assert.deepEqual(out, ["s0", "s1", "s2", "s3"]);
  assert.deepEqual(calls, [
    [1, 3],
    [2, 0],
  ]);
});

test("one conversion each way between plain pairs and records", () => {
  const record = recordFromPair({ prompt: "q", chosen: "a", rejected: "b" }, "y0");
  assert.deepEqual(record, {
    instruction: "q",
    p_system: "",
    n_system: "",
    chosen: "a",
    rejected: "b",
    raw: "y0",
  });
  const origin = { id: "x", subset: "s", format: "sso" as const, line: 3 };
  assert.deepEqual(
    pairFromRecord(record, origin),
    pairFromText({ prompt: "q", chosen: "a", rejected: "b" }, origin),
  );
  const withHistory = pairFromRecord(
    { ...record, system: "sys", history: [["u1", "a1"]] },
    { ...origin, section: "Chat" },
  );
  assert.deepEqual(withHistory.prompt, [
    { role: "system", content: "sys" },
    { role: "user", content: "u1" },
    { role: "assistant", content: "a1" },
    { role: "user", content: "q" },
  ]);
  assert.equal(withHistory.section, "Chat");
});
