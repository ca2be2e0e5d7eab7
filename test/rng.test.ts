import assert from "node:assert/strict";
import { test } from "node:test";
import { Rng } from "../src/util/rng.js";

test("the same seed gives the same stream; different seeds differ", () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const xs = Array.from({ length: 8 }, () => a.next());
  assert.deepEqual(
    xs,
    Array.from({ length: 8 }, () => b.next()),
  );
  assert.notDeepEqual(
    xs,
    Array.from({ length: 8 }, () => c.next()),
  );
  for (const x of xs) assert.ok(x >= 0 && x < 1);
});

test("normal draws have mean near 0 and variance near 1", () => {
  const r = new Rng("normal");
  let s = 0;
  let s2 = 0;
  const n = 20000;
  for (let i = 0; i < n; i++) {
    const x = r.normal();
    s += x;
    s2 += x * x;
  }
  assert.ok(Math.abs(s / n) < 0.03);
  assert.ok(Math.abs(s2 / n - 1) < 0.05);
});

test("fork gives independent, reproducible streams", () => {
  const a = new Rng(1).fork("x");
  const b = new Rng(1).fork("x");
  const c = new Rng(1).fork("y");
  assert.equal(a.nextUint32(), b.nextUint32());
  assert.notEqual(new Rng(1).fork("x").nextUint32(), c.nextUint32());
});
