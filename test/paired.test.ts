import assert from "node:assert/strict";
import { test } from "node:test";
import { pairedBootstrap, quantile } from "../src/eval/paired.js";
import type { IterationMetrics } from "../src/run/online.js";
import { aggregateRuns, reportMarkdown } from "../src/run/report.js";
import { Rng } from "../src/util/rng.js";

test("quantile interpolates like numpy's default", () => {
  const xs = [1, 2, 4, 8];
  assert.equal(quantile(xs, 0), 1);
  assert.equal(quantile(xs, 1), 8);
  assert.equal(quantile(xs, 0.5), 3); // position 1.5 between 2 and 4
  assert.ok(Math.abs(quantile(xs, 0.25) - 1.75) < 1e-12); // position 0.75 between 1 and 2
});

test("pairedBootstrap: mean difference, degenerate cases, and a deterministic interval", () => {
  assert.deepEqual(pairedBootstrap([0.25], "one"), { diff: 0.25, lo: 0.25, hi: 0.25, seeds: 1 });
  const flat = pairedBootstrap([0.1, 0.1, 0.1], "flat");
  assert.ok(Math.abs(flat.lo - 0.1) < 1e-15 && Math.abs(flat.hi - 0.1) < 1e-15);
  // Two seeds: resample means are min, mid and max, so the 95% interval is [min, max].
  const two = pairedBootstrap([-0.2, 0.4], "two");
  assert.ok(Math.abs(two.diff - 0.1) < 1e-15);
  assert.equal(two.lo, -0.2);
  assert.equal(two.hi, 0.4);
  const a = pairedBootstrap([0.3, -0.1, 0.2, 0.05, 0.12], "same");
  assert.deepEqual(a, pairedBootstrap([0.3, -0.1, 0.2, 0.05, 0.12], "same"));
  assert.ok(a.lo < a.diff && a.diff < a.hi && a.lo >= -0.1 && a.hi <= 0.3);
});

test("pairedBootstrap covers the true mean about 95% of the time (n = 20, normal differences)", () => {
  const rng = new Rng("coverage");
  let covered = 0;
  const trials = 300;
  for (let t = 0; t < trials; t++) {
    const diffs = Array.from({ length: 20 }, () => 0.05 + 0.1 * rng.normal());
    const r = pairedBootstrap(diffs, `trial-${t}`, 2000);
    if (r.lo <= 0.05 && 0.05 <= r.hi) covered++;
  }
  // The percentile bootstrap under-covers slightly at small n; 0.88-0.99 is its honest range here.
  assert.ok(covered / trials > 0.88 && covered / trials < 0.99, `coverage ${covered / trials}`);
});

function row(iteration: number, goldScore: number): IterationMetrics {
  return {
    iteration,
    goldScore,
    winRate: 0.5,
    winRateLC: 0.5 + goldScore / 10,
    exactMatch: 0,
    meanLength: 100 + iteration,
    signalAccuracy: iteration === 0 ? null : 0.7,
    onPolicyGap: iteration === 0 ? null : -0.1,
  } as unknown as IterationMetrics;
}

test("report.json gains methods.<method>.paired against pbaa, seed by seed, only with two or more seeds", () => {
  const pbaa = [
    [row(0, 0.2), row(1, 0.3)],
    [row(0, 0.25), row(1, 0.32)],
    [row(0, 0.22), row(1, 0.28)],
  ];
  const sso = [
    [row(0, 0.2), row(1, 0.35)],
    [row(0, 0.25), row(1, 0.33)],
    [row(0, 0.22), row(1, 0.4)],
  ];
  const report = aggregateRuns("t", [1, 2, 3], { sso, pbaa }, {});
  assert.equal(report.methods.pbaa.paired, undefined);
  const gold = report.methods.sso.paired?.goldScore;
  assert.ok(gold !== undefined);
  assert.equal(gold.length, 2);
  assert.equal(gold[0].diff, 0);
  assert.equal(gold[1].seeds, 3);
  assert.ok(Math.abs(gold[1].diff - (0.05 + 0.01 + 0.12) / 3) < 1e-12);
  assert.ok(gold[1].lo >= 0.01 - 1e-12 && gold[1].hi <= 0.12 + 1e-12);
  // signal accuracy is null at iteration 0, so its rows start at iteration 1
  assert.deepEqual(
    report.methods.sso.paired?.signalAccuracy.map((r) => r.iteration),
    [1],
  );
  assert.match(reportMarkdown(report), /## Paired differences against pbaa/);
  // one seed: no interval, no `paired` key (report.json keeps its old shape)
  const single = aggregateRuns("t", [1], { sso: [sso[0]], pbaa: [pbaa[0]] }, {});
  assert.equal(single.methods.sso.paired, undefined);
  assert.doesNotMatch(reportMarkdown(single), /Paired differences/);
});

test("report.json gains ablations: sso minus each of its ablations that ran, seed by seed", () => {
  const pbaa = [
    [row(0, 0.2), row(1, 0.3)],
    [row(0, 0.25), row(1, 0.32)],
  ];
  const sso = [
    [row(0, 0.2), row(1, 0.35)],
    [row(0, 0.25), row(1, 0.33)],
  ];
  const noSteer = [
    [row(0, 0.2), row(1, 0.31)],
    [row(0, 0.25), row(1, 0.36)],
  ];
  const report = aggregateRuns("t", [1, 2], { sso, pbaa, "no-steer": noSteer }, {});
  assert.equal(report.ablations?.length, 1, "only the pair whose both methods ran");
  const [ablation] = report.ablations ?? [];
  assert.equal(ablation.method, "sso");
  assert.equal(ablation.against, "no-steer");
  const gold = ablation.paired.goldScore.find((r) => r.iteration === 1);
  assert.ok(gold !== undefined && Math.abs(gold.diff - (0.04 - 0.03) / 2) < 1e-12);
  assert.equal(gold.seeds, 2);
  assert.match(
    reportMarkdown(report),
    /## SSO against its ablations[\s\S]*\| sso - no-steer \| 1 \| 2 \| 0\.005 \[/,
  );
  // without any ablation, report.json keeps its old shape
  assert.equal(aggregateRuns("t", [1, 2], { sso, pbaa }, {}).ablations, undefined);
});
