import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { objectiveInputSchema, ssoObjective } from "../src/sso/objective.js";

// Compiled to dist/test/, so the checkout root is two levels up.
const root = fileURLToPath(new URL("../../", import.meta.url));
const bin = join(root, "bin", "selfsteer");
const fixture = join(root, "test", "fixtures", "objective", "sso-ipo.json");
const dir = mkdtempSync(join(tmpdir(), "selfsteer-objective-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let fileCount = 0;
function inputFile(content: unknown): string {
  const path = join(dir, `input-${fileCount++}.json`);
  writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content));
  return path;
}

function runObjective(path: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, "objective", "--input", path], {
    encoding: "utf8",
    timeout: 30000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("selfsteer objective prints {loss, grad, metrics} equal to the library's result", () => {
  const matchesLibrary = (file: string) => {
    const r = runObjective(file);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as ReturnType<typeof ssoObjective>;
    const input = objectiveInputSchema.parse(JSON.parse(readFileSync(file, "utf8")));
    const { records, ...config } = input;
    assert.deepEqual(out, ssoObjective(config, records));
    return out;
  };
  const generator = matchesLibrary(join(root, "test", "fixtures", "objective", "generator-dpo.json"));
  assert.ok(generator.metrics["loss/steer"] > 0 && generator.metrics["loss/main"] === undefined);
  const out = matchesLibrary(fixture);
  assert.deepEqual(Object.keys(out).sort(), ["grad", "loss", "metrics"]);
  assert.equal(out.grad.length, 2);
  assert.deepEqual(Object.keys(out.grad[0].policy).sort(), [
    "chosen",
    "negChosen",
    "negRejected",
    "posChosen",
    "posRejected",
    "rejected",
  ]);
  for (const key of ["rewards/margins", "p_rewards/accuracies", "n_logps/chosen", "sso/weight", "loss/steer"])
    assert.ok(Number.isFinite(out.metrics[key]), key);
});

test("selfsteer objective: a hand-checked dpo value through the CLI", () => {
  // beta 0.5, margin (-10 + 11) - (-14 + 12) = 3 -> u = 1.5; loss log(1 + e^-1.5); d/dl_w = -0.5 s(-1.5)
  const path = inputFile({
    loss: "dpo",
    beta: 0.5,
    records: [{ policy: { chosen: -10, rejected: -14 }, reference: { chosen: -11, rejected: -12 } }],
  });
  const r = runObjective(path);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { loss: number; grad: Array<{ policy: Record<string, number> }> };
  assert.ok(Math.abs(out.loss - Math.log(1 + Math.exp(-1.5))) < 1e-14);
  assert.ok(Math.abs(out.grad[0].policy.chosen + 0.5 / (1 + Math.exp(1.5))) < 1e-14);
});

test("selfsteer objective: bad input exits 2 naming the record and field", () => {
  const ok = { chosen: -3, rejected: -5 };
  const tokens = { chosen: 2, rejected: 3 };
  const cases: Array<[string, unknown, RegExp]> = [
    ["bad JSON", "{ loss: dpo", /invalid JSON/],
    [
      "missing field",
      {
        loss: "ipo",
        records: [
          { policy: ok, reference: ok, tokens },
          { policy: ok, tokens },
        ],
      },
      /records\[1\]\.reference\.chosen: required by loss ipo/,
    ],
    [
      "wrong type",
      {
        loss: "dpo",
        records: [
          { policy: ok, reference: ok },
          { policy: { chosen: "-3", rejected: -5 }, reference: ok },
        ],
      },
      /records\[1\]\.policy\.chosen: .*expected number/,
    ],
    ["unknown loss", { loss: "kto", records: [{ policy: ok }] }, /loss: .*expected one of/],
    [
      "tokens <= 0",
      {
        loss: "simpo",
        records: [
          { policy: ok, tokens },
          { policy: ok, tokens: { chosen: 0, rejected: 3 } },
        ],
      },
      /records\[1\]\.tokens\.chosen: token count must be > 0/,
    ],
    [
      "orpo with logp >= 0",
      { loss: "orpo", records: [{ policy: { chosen: 0.5, rejected: -5 }, tokens }] },
      /records\[0\]\.policy\.chosen: loss orpo needs a log-probability < 0, got 0\.5/,
    ],
  ];
  for (const [name, content, pattern] of cases) {
    const path = inputFile(content);
    const r = runObjective(path);
    assert.equal(r.status, 2, `${name}: exit ${r.status}, stderr ${r.stderr}`);
    assert.equal(r.stdout, "", name);
    assert.match(r.stderr, pattern, name);
    assert.ok(r.stderr.includes(path), `${name}: the message names the file`);
  }
  const missing = runObjective(join(dir, "no-such-file.json"));
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /cannot read file/);
});
