import assert from "node:assert/strict";
import { test } from "node:test";
import {
  baseLoss,
  btLoss,
  dpoLoss,
  hingeLoss,
  ipoLoss,
  type LossName,
  lossUsesReference,
  type ObjectiveConfig,
  type ObjectiveRecord,
  objectiveConfigSchema,
  objectiveInputSchema,
  orpoLoss,
  SEQ_KEYS,
  type SeqKey,
  simpoLoss,
  ssoObjective,
  steeringWeight,
} from "../src/sso/objective.js";
import { formatPath, UserError } from "../src/util/errors.js";
import { Rng } from "../src/util/rng.js";

/** Asserts |actual - expected| <= tol (absolute + relative), with a readable message. */
function close(actual: number, expected: number, tol = 1e-12, what = ""): void {
  const ok = Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected));
  assert.ok(ok, `${what} expected ${expected}, got ${actual} (diff ${actual - expected})`);
}

// Naive textbook forms, deliberately different code paths from the stable ones under test.
const naiveSigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const naiveNegLogSigmoid = (x: number) => Math.log(1 + Math.exp(-x));

test("dpo: hand-computed loss and gradient, with and without label smoothing", () => {
  // beta 0.5; margin = (l_w - l_w^ref) - (l_l - l_l^ref) = (-10 + 11) - (-14 + 12) = 1 + 2 = 3; u = 1.5
  const pair = { chosen: -10, rejected: -14, refChosen: -11, refRejected: -12 };
  const r = dpoLoss(pair, 0.5);
  close(r.loss, naiveNegLogSigmoid(1.5)); // log(1 + e^-1.5) = 0.20141327798...
  close(r.loss, 0.2014132779827524, 1e-15);
  // dB/du = -sigmoid(-1.5); du/dl_w = beta = 0.5, du/dl_l = -0.5
  close(r.dChosen, -0.5 * naiveSigmoid(-1.5));
  close(r.dRejected, 0.5 * naiveSigmoid(-1.5));
  // label smoothing 0.1: 0.9 log(1 + e^-1.5) + 0.1 log(1 + e^1.5); dB/du = -0.9 s(-1.5) + 0.1 s(1.5)
  const s = dpoLoss(pair, 0.5, 0.1);
  close(s.loss, 0.9 * naiveNegLogSigmoid(1.5) + 0.1 * naiveNegLogSigmoid(-1.5));
  const dU = -0.9 * naiveSigmoid(-1.5) + 0.1 * naiveSigmoid(1.5);
  close(s.dChosen, 0.5 * dU);
  close(s.dRejected, -0.5 * dU);
});

test("ipo: hand-computed loss and gradient on per-token averages", () => {
  // beta 0.5 -> 1/(2 beta) = 1. a_w = -10/5 = -2, a_l = -12/4 = -3, ref: -12/5 = -2.4, -10/4 = -2.5
  // h = (-2 + 3) - (-2.4 + 2.5) = 1 - 0.1 = 0.9; B = (0.9 - 1)^2 = 0.01; dB/dh = 2 (0.9 - 1) = -0.2
  const r = ipoLoss(
    { chosen: -10, rejected: -12, refChosen: -12, refRejected: -10, chosenTokens: 5, rejectedTokens: 4 },
    0.5,
  );
  close(r.loss, 0.01);
  close(r.dChosen, -0.2 / 5); // dh/dl_w = 1/n_w
  close(r.dRejected, 0.2 / 4); // dh/dl_l = -1/n_l
});

test("simpo: hand-computed loss and gradient", () => {
  // beta 2, gamma 0.5; a_w = -4/4 = -1, a_l = -6/3 = -2; z = 2 (-1 + 2) - 0.5 = 1.5
  const r = simpoLoss({ chosen: -4, rejected: -6, chosenTokens: 4, rejectedTokens: 3 }, 2, 0.5);
  close(r.loss, naiveNegLogSigmoid(1.5));
  // dB/dz = -sigmoid(-1.5); dz/dl_w = beta / n_w = 2/4, dz/dl_l = -2/3
  close(r.dChosen, (-naiveSigmoid(-1.5) * 2) / 4);
  close(r.dRejected, (naiveSigmoid(-1.5) * 2) / 3);
  // gamma defaults to 0.5
  close(simpoLoss({ chosen: -4, rejected: -6, chosenTokens: 4, rejectedTokens: 3 }, 2).loss, r.loss);
});

test("orpo: hand-computed loss and gradient", () => {
  // beta 0.1; a_w = -2/2 = -1, a_l = -6/3 = -2
  // log_odds = (-1 + 2) - (log(1 - e^-1) - log(1 - e^-2)); B = 1 + 0.1 log(1 + e^-log_odds)
  const logOdds = 1 - (Math.log(1 - Math.exp(-1)) - Math.log(1 - Math.exp(-2)));
  close(logOdds, 1.3132616875182228, 1e-12); // log(e^-1/(1-e^-1)) - log(e^-2/(1-e^-2)) = 1.31326...
  const r = orpoLoss({ chosen: -2, rejected: -6, chosenTokens: 2, rejectedTokens: 3 }, 0.1);
  close(r.loss, 1 + 0.1 * naiveNegLogSigmoid(logOdds));
  // d log_odds / d a = 1 + e^a / (1 - e^a) = 1 / (1 - e^a); dB/dlog_odds = -0.1 sigmoid(-log_odds)
  const dLo = -0.1 * naiveSigmoid(-logOdds);
  close(r.dChosen, (-1 + dLo / (1 - Math.exp(-1))) / 2);
  close(r.dRejected, -dLo / (1 - Math.exp(-2)) / 3);
});

test("hinge: hand-computed loss and gradient on both sides of the hinge", () => {
  // beta 0.5; margin = (-10 + 10) - (-11 + 10) = 1; B = 1 - 0.5 = 0.5; dB/dl_w = -0.5, dB/dl_l = 0.5
  const active = hingeLoss({ chosen: -10, rejected: -11, refChosen: -10, refRejected: -10 }, 0.5);
  assert.deepEqual(active, { loss: 0.5, dChosen: -0.5, dRejected: 0.5 });
  // margin 3 -> 1 - 1.5 < 0 -> loss 0, no gradient
  const inactive = hingeLoss({ chosen: -7, rejected: -10, refChosen: -10, refRejected: -10 }, 0.5);
  assert.deepEqual(inactive, { loss: 0, dChosen: 0, dRejected: 0 });
});

test("bt: hand-computed Bradley-Terry loss and gradient on scores", () => {
  // r_w - r_l = 2 - 0.5 = 1.5; B = log(1 + e^-1.5); dB/dr_w = -sigmoid(-1.5), dB/dr_l = +sigmoid(-1.5)
  const r = btLoss(2, 0.5);
  close(r.loss, naiveNegLogSigmoid(1.5));
  close(r.dChosen, -naiveSigmoid(-1.5));
  close(r.dRejected, naiveSigmoid(-1.5));
});

function config(loss: LossName, extra: Record<string, unknown> = {}): ObjectiveConfig {
  return objectiveConfigSchema.parse({ loss, ...extra });
}

test("sso composite: hand example of L = B(main) + W G_beta (B(pos) + B(neg))", () => {
  // dpo, beta 1, alpha 0.5. a(x,y+) = -2/2 = -1, a(x,y-) = -4/4 = -1 -> W = sigmoid(-(-0.5 - 0.5)) = s(1)
  // main u = (-2 + 4) - (-3 + 3) = 2; pos u = (-1 + 3) - (-2 + 2) = 2; neg u = 0 -> B = log 2
  const cfg = config("dpo", { beta: 1, sso: { alpha: 0.5 } });
  const record: ObjectiveRecord = {
    policy: { chosen: -2, rejected: -4, posChosen: -1, posRejected: -3, negChosen: -5, negRejected: -5 },
    reference: { chosen: -3, rejected: -3, posChosen: -2, posRejected: -2, negChosen: -5, negRejected: -5 },
    tokens: { chosen: 2, rejected: 4, posChosen: 2, posRejected: 4, negChosen: 3, negRejected: 2 },
  };
  const r = ssoObjective(cfg, [record]);
  const W = naiveSigmoid(1);
  const expected = naiveNegLogSigmoid(2) + W * 0.1 * (naiveNegLogSigmoid(2) + Math.log(2));
  close(r.loss, expected);
  close(r.metrics["sso/weight"], W);
  close(r.metrics["loss/main"], naiveNegLogSigmoid(2));
  close(r.metrics["loss/steer"], 0.1 * (naiveNegLogSigmoid(2) + Math.log(2)));
  // ftx 1 adds SFT = -a(x,y+) - 0.1 a(p+x,y+) - 0.1 a(p-x,y0) = 1 + 0.1 * 0.5 + 0.1 * 5/3
  const withSft = ssoObjective(config("dpo", { beta: 1, sso: { alpha: 0.5, ftx: 1 } }), [record]);
  close(withSft.loss, expected + 1 + 0.05 + 0.5 / 3);
  // w/o W: W = 1; w/o G: L = W B(main); w/o W, G: L = B(main)
  close(
    ssoObjective(config("dpo", { beta: 1, sso: { alpha: 0.5, weight: "none" } }), [record]).loss,
    naiveNegLogSigmoid(2) + 0.1 * (naiveNegLogSigmoid(2) + Math.log(2)),
  );
  close(
    ssoObjective(config("dpo", { beta: 1, sso: { alpha: 0.5, steer: false } }), [record]).loss,
    W * naiveNegLogSigmoid(2),
  );
  close(
    ssoObjective(config("dpo", { beta: 1, sso: { weight: "none", steer: false } }), [record]).loss,
    naiveNegLogSigmoid(2),
  );
  close(ssoObjective(config("dpo", { beta: 1 }), [record]).loss, naiveNegLogSigmoid(2));
});

test("generator: hand example of L+ + L- = B(pos) + gamma SFT(p+, y+) + B(neg) + gamma SFT(p-, y0)", () => {
  // dpo, beta 0.1, gamma 0.1. pos u = 0.1 ((-4 + 6) - (-5 + 5)) = 0.2; neg u = 0.1 ((-6 + 3) - (-6 + 4)) = -0.1
  // SFT(p+ x, y+) = 4/2 = 2, SFT(p- x, y0) = 6/3 = 2. The main pair is never read: leave it out.
  const record: ObjectiveRecord = {
    policy: { posChosen: -4, posRejected: -6, negChosen: -6, negRejected: -3 },
    reference: { posChosen: -5, posRejected: -5, negChosen: -6, negRejected: -4 },
    tokens: { posChosen: 2, posRejected: 4, negChosen: 3, negRejected: 2 },
  };
  const cfg = config("dpo", { beta: 0.1, generator: {} });
  const r = ssoObjective(cfg, [record]);
  const bPos = naiveNegLogSigmoid(0.2);
  const bNeg = naiveNegLogSigmoid(-0.1);
  close(r.loss, bPos + 0.1 * 2 + bNeg + 0.1 * 2);
  close(r.metrics["loss/steer"], bPos + bNeg);
  close(r.metrics["loss/sft"], 4);
  assert.equal(r.metrics["loss/main"], undefined);
  assert.equal(r.metrics["rewards/margins"], undefined);
  close(r.metrics["p_rewards/margins"], 0.2);
  close(r.metrics["n_rewards/margins"], -0.1);
  // d/d l(p+ y+) = -beta sigmoid(-u) - gamma / n = -0.1 s(-0.2) - 0.05; rejected side +0.1 s(-0.2)
  close(r.grad[0].policy.posChosen!, -0.1 * naiveSigmoid(-0.2) - 0.05);
  close(r.grad[0].policy.posRejected!, 0.1 * naiveSigmoid(-0.2));
  close(r.grad[0].policy.negChosen!, -0.1 * naiveSigmoid(0.1) - 0.1 / 3);
  // the ablations keep exactly one term
  close(ssoObjective(config("dpo", { beta: 0.1, generator: { neg: false } }), [record]).loss, bPos + 0.2);
  close(ssoObjective(config("dpo", { beta: 0.1, generator: { pos: false } }), [record]).loss, bNeg + 0.2);
  // invalid combinations are named
  assert.throws(() => config("dpo", { generator: { pos: false, neg: false } }), /pos or neg/);
  assert.throws(() => config("dpo", { generator: {}, sso: {} }), /cannot be combined with sso/);
  assert.throws(() => config("bt", { generator: {} }), /not supported with loss bt/);
});

test("metrics: hand example over two records (dpo sums, ipo averages, simpo without reference)", () => {
  const records: ObjectiveRecord[] = [
    {
      policy: {
        chosen: -10,
        rejected: -20,
        posChosen: -8,
        posRejected: -30,
        negChosen: -12,
        negRejected: -9,
      },
      reference: {
        chosen: -12,
        rejected: -18,
        posChosen: -10,
        posRejected: -25,
        negChosen: -12,
        negRejected: -10,
      },
      tokens: { chosen: 5, rejected: 10, posChosen: 4, posRejected: 10, negChosen: 6, negRejected: 3 },
    },
    {
      policy: { chosen: -30, rejected: -6, posChosen: -20, posRejected: -4, negChosen: -3, negRejected: -15 },
      reference: {
        chosen: -28,
        rejected: -8,
        posChosen: -20,
        posRejected: -6,
        negChosen: -6,
        negRejected: -15,
      },
      tokens: { chosen: 10, rejected: 3, posChosen: 10, posRejected: 2, negChosen: 3, negRejected: 5 },
    },
  ];
  // dpo, beta 0.5: rewards = 0.5 (l - l_ref)
  // main: record 0: chosen 0.5*2 = 1, rejected 0.5*-2 = -1 (correct); record 1: -1, 1 (wrong)
  const m = ssoObjective(config("dpo", { beta: 0.5, sso: {} }), records).metrics;
  close(m["rewards/chosen"], 0);
  close(m["rewards/rejected"], 0);
  close(m["rewards/accuracies"], 0.5);
  close(m["rewards/margins"], (2 + -2) / 2);
  close(m["logps/chosen"], -20);
  close(m["logps/rejected"], -13);
  // pos: record 0: 1, -2.5 ; record 1: 0, 1 -> chosen 0.5, rejected -0.75, acc 0.5, margins (3.5 - 1)/2
  close(m["p_rewards/chosen"], 0.5);
  close(m["p_rewards/rejected"], -0.75);
  close(m["p_rewards/accuracies"], 0.5);
  close(m["p_rewards/margins"], 1.25);
  close(m["p_logps/chosen"], -14);
  close(m["p_logps/rejected"], -17);
  // neg: record 0: 0, 0.5 ; record 1: 1.5, 0 -> chosen 0.75, rejected 0.25, acc 0.5 (0 > 0.5 is false)
  close(m["n_rewards/chosen"], 0.75);
  close(m["n_rewards/rejected"], 0.25);
  close(m["n_rewards/accuracies"], 0.5);
  close(m["n_rewards/margins"], 0.5);
  close(m["n_logps/chosen"], -7.5);
  close(m["n_logps/rejected"], -12);
  // W per record: s(-(0.66 a_w + 0.34 a_l)): record 0 a = -2, -2 -> s(2); record 1 a = -3, -2 -> s(2.66)
  close(m["sso/weight"], (naiveSigmoid(2) + naiveSigmoid(0.66 * 3 + 0.34 * 2)) / 2);

  // ipo, beta 0.5: rewards = 0.5 (a - a_ref), logps are averages (what the loss reads)
  // record 0: chosen 0.5 (-2 + 2.4) = 0.2, rejected 0.5 (-2 + 1.8) = -0.1
  // record 1: chosen 0.5 (-3 + 2.8) = -0.1, rejected 0.5 (-2 + 8/3) = 1/3
  const ipo = ssoObjective(config("ipo", { beta: 0.5 }), records).metrics;
  close(ipo["rewards/chosen"], (0.2 - 0.1) / 2);
  close(ipo["rewards/rejected"], (-0.1 + 1 / 3) / 2);
  close(ipo["rewards/accuracies"], 0.5);
  close(ipo["logps/chosen"], (-2 - 3) / 2);
  close(ipo["logps/rejected"], (-2 - 2) / 2);
  assert.equal(ipo["p_rewards/chosen"], undefined, "no steering pairs without the sso block");
  assert.equal(ipo["sso/weight"], undefined);

  // simpo, beta 2: rewards = 2 a. record 0: -4, -4 (not >) ; record 1: -6, -4
  const simpo = ssoObjective(config("simpo", { beta: 2 }), records).metrics;
  close(simpo["rewards/chosen"], -5);
  close(simpo["rewards/rejected"], -4);
  close(simpo["rewards/accuracies"], 0);
  close(simpo["rewards/margins"], -1);
});

// ---------------------------------------------------------------------------------------------------
// Finite differences

/** Random but plausible records: summed log-probs = average (-3 .. -0.2) times token count (3 .. 30). */
function randomRecords(rng: Rng, count: number, loss: LossName, beta: number): ObjectiveRecord[] {
  const out: ObjectiveRecord[] = [];
  while (out.length < count) {
    const policy: Record<string, number> = {};
    const reference: Record<string, number> = {};
    const tokens: Record<string, number> = {};
    for (const key of SEQ_KEYS) {
      tokens[key] = 3 + rng.int(28);
      policy[key] = -(0.2 + 2.8 * rng.next()) * tokens[key];
      reference[key] = policy[key] + 2 * rng.normal();
    }
    const record: ObjectiveRecord = { policy, reference, tokens };
    // Finite differences cannot straddle the hinge's kink; keep every pair well away from it.
    if (loss === "hinge") {
      const slack = (w: SeqKey, l: SeqKey) =>
        1 - beta * (policy[w] - reference[w] - (policy[l] - reference[l]));
      const pairs: Array<[SeqKey, SeqKey]> = [
        ["chosen", "rejected"],
        ["posChosen", "posRejected"],
        ["negChosen", "negRejected"],
      ];
      if (pairs.some(([w, l]) => Math.abs(slack(w, l)) < 0.05)) continue;
    }
    out.push(record);
  }
  return out;
}

function withPolicy(records: ObjectiveRecord[], i: number, key: SeqKey, value: number): ObjectiveRecord[] {
  return records.map((r, j) => (j === i ? { ...r, policy: { ...r.policy, [key]: value } } : r));
}

/** Checks every policy gradient of `lossOf` against central differences at step 1e-5. */
function checkGradients(
  name: string,
  records: ObjectiveRecord[],
  grad: Array<{ policy: Partial<Record<SeqKey, number>> }>,
  lossOf: (records: ObjectiveRecord[]) => number,
): void {
  const h = 1e-5;
  records.forEach((record, i) => {
    for (const key of SEQ_KEYS) {
      const x = record.policy[key];
      if (x === undefined) continue;
      const fd =
        (lossOf(withPolicy(records, i, key, x + h)) - lossOf(withPolicy(records, i, key, x - h))) / (2 * h);
      const analytic = grad[i].policy[key];
      assert.ok(analytic !== undefined, `${name}: no gradient for records[${i}].policy.${key}`);
      const tol = 1e-7 + 1e-5 * Math.abs(fd);
      assert.ok(
        Math.abs(analytic - fd) <= tol,
        `${name}: records[${i}].policy.${key}: analytic ${analytic} vs finite difference ${fd}`,
      );
    }
  });
}

const REF_LOSSES: LossName[] = ["dpo", "ipo", "simpo", "orpo", "hinge"];
const VARIANTS: Array<[string, Record<string, unknown>]> = [
  ["main pair only", {}],
  ["sso (W sigmoid, steer)", { sso: {} }],
  ["sso w/o W", { sso: { weight: "none" } }],
  ["sso w/o G", { sso: { steer: false } }],
  ["sso w/o W, G", { sso: { weight: "none", steer: false } }],
  ["sso ftx 0.7", { sso: { ftx: 0.7 } }],
  ["sso w/o G ftx 0.7", { sso: { steer: false, ftx: 0.7 } }],
  ["sso alpha 0.2 steerBeta 0.5", { sso: { alpha: 0.2, steerBeta: 0.5 } }],
  ["generator (L+ and L-)", { generator: {} }],
  ["generator +L+ only", { generator: { neg: false } }],
  ["generator +L- only", { generator: { pos: false } }],
  ["generator without SFT", { generator: { sftWeight: 0 } }],
];

test("every loss and every SSO variant matches central finite differences", () => {
  const rng = new Rng("objective-fd");
  for (const loss of REF_LOSSES) {
    for (const [variant, extra] of VARIANTS) {
      const cfg = config(loss, { beta: 0.3, ...extra });
      const records = randomRecords(rng.fork(`${loss}/${variant}`), 3, loss, cfg.beta);
      const result = ssoObjective(cfg, records);
      assert.ok(Number.isFinite(result.loss));
      checkGradients(`${loss} ${variant}`, records, result.grad, (rs) => ssoObjective(cfg, rs).loss);
    }
  }
  // dpo with label smoothing, alone and inside SSO
  for (const extra of [{}, { sso: { ftx: 0.3 } }]) {
    const cfg = config("dpo", { beta: 0.3, labelSmoothing: 0.2, ...extra });
    const records = randomRecords(rng.fork(`smooth/${JSON.stringify(extra)}`), 3, "dpo", cfg.beta);
    checkGradients(
      "dpo label smoothing",
      records,
      ssoObjective(cfg, records).grad,
      (rs) => ssoObjective(cfg, rs).loss,
    );
  }
  // bt on scores, main pair only (reference and tokens not needed)
  const scores: ObjectiveRecord[] = [
    { policy: { chosen: 1.3, rejected: -0.4 } },
    { policy: { chosen: -2.1, rejected: 0.9 } },
  ];
  const bt = config("bt");
  checkGradients("bt", scores, ssoObjective(bt, scores).grad, (rs) => ssoObjective(bt, rs).loss);
});

/**
 * docs/algorithm.md's composite written out again from the exported base losses, optionally with each record's W
 * frozen at given values (what detachWeight means: W scales the loss but passes no gradient).
 */
function compositeFromParts(cfg: ObjectiveConfig, records: ObjectiveRecord[], frozenW?: number[]): number {
  const sso = cfg.sso!;
  let total = 0;
  records.forEach((r, i) => {
    const p = r.policy as Record<SeqKey, number>;
    const ref = r.reference as Record<SeqKey, number>;
    const n = r.tokens as Record<SeqKey, number>;
    const pair = (w: SeqKey, l: SeqKey) =>
      baseLoss(cfg, {
        chosen: p[w],
        rejected: p[l],
        refChosen: ref[w],
        refRejected: ref[l],
        chosenTokens: n[w],
        rejectedTokens: n[l],
      }).loss;
    const W =
      frozenW?.[i] ??
      (sso.weight === "none"
        ? 1
        : steeringWeight(p.chosen, p.rejected, n.chosen, n.rejected, sso.alpha).loss);
    const main = pair("chosen", "rejected");
    if (!sso.steer) {
      total += W * (main + sso.ftx * (-p.chosen / n.chosen));
      return;
    }
    const g = sso.steerBeta;
    const sft = -p.chosen / n.chosen - (g * p.posChosen) / n.posChosen - (g * p.negChosen) / n.negChosen;
    total +=
      main + sso.ftx * sft + W * g * (pair("posChosen", "posRejected") + pair("negChosen", "negRejected"));
  });
  return total / records.length;
}

test("the composite equals docs/algorithm.md's formula rebuilt from the base losses", () => {
  const rng = new Rng("objective-formula");
  for (const loss of REF_LOSSES)
    for (const [variant, extra] of VARIANTS.filter(([, e]) => "sso" in e)) {
      const cfg = config(loss, { beta: 0.3, ...extra });
      const records = randomRecords(rng.fork(`${loss}/${variant}`), 4, loss, cfg.beta);
      close(ssoObjective(cfg, records).loss, compositeFromParts(cfg, records), 1e-12, `${loss} ${variant}`);
    }
});

test("detachWeight keeps the loss and drops only the gradient through W", () => {
  const rng = new Rng("objective-detach");
  for (const loss of ["dpo", "ipo", "orpo"] as const)
    for (const sso of [{ steer: true }, { steer: false }, { steer: true, ftx: 0.5 }]) {
      const attached = config(loss, { beta: 0.3, sso });
      const detached = config(loss, { beta: 0.3, sso: { ...sso, detachWeight: true } });
      const records = randomRecords(rng.fork(`${loss}/${JSON.stringify(sso)}`), 3, loss, 0.3);
      const a = ssoObjective(attached, records);
      const d = ssoObjective(detached, records);
      close(d.loss, a.loss, 1e-14);
      const frozenW = records.map((r) => {
        const p = r.policy as Record<SeqKey, number>;
        const n = r.tokens as Record<SeqKey, number>;
        return steeringWeight(p.chosen, p.rejected, n.chosen, n.rejected, 0.66).loss;
      });
      checkGradients(`${loss} detached ${JSON.stringify(sso)}`, records, d.grad, (rs) =>
        compositeFromParts(detached, rs, frozenW),
      );
      // The pos and neg sequences do not enter W, so detaching cannot change their gradients.
      if (sso.steer)
        for (let i = 0; i < records.length; i++)
          for (const key of ["posChosen", "posRejected", "negChosen", "negRejected"] as const)
            assert.equal(d.grad[i].policy[key], a.grad[i].policy[key]);
      assert.notEqual(d.grad[0].policy.chosen, a.grad[0].policy.chosen);
    }
});

test("gradients are of the mean loss: duplicating the batch halves each record's gradient", () => {
  const cfg = config("ipo", { sso: {} });
  const records = randomRecords(new Rng("objective-mean"), 2, "ipo", cfg.beta);
  const one = ssoObjective(cfg, records);
  const two = ssoObjective(cfg, [...records, ...records]);
  close(two.loss, one.loss);
  for (const key of SEQ_KEYS) close(two.grad[0].policy[key]!, one.grad[0].policy[key]! / 2);
  // Only keys present in the input come back.
  const sparse = ssoObjective(config("dpo"), [
    { policy: { chosen: -3, rejected: -4 }, reference: { chosen: -3, rejected: -4 } },
  ]);
  assert.deepEqual(Object.keys(sparse.grad[0].policy), ["chosen", "rejected"]);
  // Unused but present keys get an explicit 0.
  const extra = ssoObjective(config("dpo"), [
    { policy: { chosen: -3, rejected: -4, posChosen: -1 }, reference: { chosen: -3, rejected: -4 } },
  ]);
  assert.equal(extra.grad[0].policy.posChosen, 0);
});

// ---------------------------------------------------------------------------------------------------
// Stability

function assertAllFinite(what: string, result: ReturnType<typeof ssoObjective>): void {
  assert.ok(Number.isFinite(result.loss), `${what}: loss ${result.loss}`);
  result.grad.forEach((g, i) => {
    for (const [k, v] of Object.entries(g.policy))
      assert.ok(Number.isFinite(v), `${what}: grad[${i}].${k} = ${v}`);
  });
  for (const [k, v] of Object.entries(result.metrics))
    assert.ok(Number.isFinite(v), `${what}: metric ${k} = ${v}`);
}

test("huge margins give finite losses and gradients for every loss and variant", () => {
  for (const big of [1e4, 1e6, 1e12]) {
    for (const sign of [1, -1]) {
      // The chosen side is `big` nats better (sign 1) or worse (sign -1) than the rejected side.
      const lw = sign > 0 ? -1 : -1 - big;
      const ll = sign > 0 ? -1 - big : -1;
      const record: ObjectiveRecord = {
        policy: { chosen: lw, rejected: ll, posChosen: lw, posRejected: ll, negChosen: ll, negRejected: lw },
        reference: {
          chosen: -1,
          rejected: -1,
          posChosen: -1,
          posRejected: -1,
          negChosen: -1,
          negRejected: -1,
        },
        tokens: { chosen: 1, rejected: 1, posChosen: 1, posRejected: 1, negChosen: 1, negRejected: 1 },
      };
      for (const loss of REF_LOSSES)
        for (const [variant, extra] of VARIANTS) {
          const r = ssoObjective(config(loss, { labelSmoothing: loss === "dpo" ? 0.1 : 0, ...extra }), [
            record,
          ]);
          assertAllFinite(`${loss} ${variant} margin ${sign * big}`, r);
        }
      assertAllFinite(
        `bt ${sign * big}`,
        ssoObjective(config("bt"), [{ policy: { chosen: lw, rejected: ll } }]),
      );
    }
  }
  // Saturated values are the right limits, not just finite: -log sigmoid(u) -> 0 for u >> 0, -> -u for u << 0.
  const good = dpoLoss({ chosen: -1, rejected: -1e4, refChosen: 0, refRejected: 0 }, 1);
  assert.equal(good.loss, 0);
  close(good.dChosen, 0);
  const bad = dpoLoss({ chosen: -1e4, rejected: -1, refChosen: 0, refRejected: 0 }, 1);
  close(bad.loss, 1e4 - 1);
  close(bad.dChosen, -1);
  close(btLoss(-5e5, 5e5).loss, 1e6);
  close(
    simpoLoss({ chosen: -1e4, rejected: -1, chosenTokens: 1, rejectedTokens: 1 }, 1, 0.5).loss,
    1e4 - 1 + 0.5,
  );
  // ORPO right next to probability 1 (a -> 0-) and far below it: log(1 - e^a) stays finite.
  const orpo = orpoLoss({ chosen: -1e-12, rejected: -1e4, chosenTokens: 1, rejectedTokens: 1 }, 0.1);
  assert.ok(Number.isFinite(orpo.loss) && Number.isFinite(orpo.dChosen) && Number.isFinite(orpo.dRejected));
  // W saturates to 0 or 1 with a zero (not NaN) slope.
  for (const a of [-1e6, 1e6]) {
    const w = steeringWeight(a, a, 1, 1, 0.66);
    assert.ok(Number.isFinite(w.loss) && Number.isFinite(w.dChosen) && Number.isFinite(w.dRejected));
  }
});

// ---------------------------------------------------------------------------------------------------
// Validation

function firstIssue(input: unknown): string {
  const parsed = objectiveInputSchema.safeParse(input);
  assert.equal(parsed.success, false, "expected invalid input");
  const issue = parsed.error!.issues[0];
  return `${formatPath(issue.path)}: ${issue.message}`;
}

test("the input schema names the record and field of each problem", () => {
  const ok = { chosen: -3, rejected: -5 };
  const full = { ...ok, posChosen: -1, posRejected: -2, negChosen: -3, negRejected: -4 };
  const tokens = { chosen: 2, rejected: 3, posChosen: 2, posRejected: 3, negChosen: 4, negRejected: 2 };
  assert.equal(
    firstIssue({
      loss: "ipo",
      records: [
        { policy: ok, reference: ok, tokens },
        { policy: ok, tokens },
      ],
    }),
    "records[1].reference.chosen: required by loss ipo",
  );
  assert.equal(
    firstIssue({ loss: "simpo", records: [{ policy: ok, tokens: { chosen: 2 } }] }),
    "records[0].tokens.rejected: required by loss simpo (per-token averages)",
  );
  assert.equal(
    firstIssue({ loss: "dpo", sso: {}, records: [{ policy: ok, reference: full, tokens }] }),
    "records[0].policy.posChosen: required by sso steer",
  );
  assert.equal(
    firstIssue({ loss: "dpo", sso: {}, records: [{ policy: full, reference: full }] }),
    "records[0].tokens.chosen: required by sso weight sigmoid",
  );
  assert.equal(
    firstIssue({ loss: "orpo", records: [{ policy: { chosen: -1, rejected: 0 }, tokens }] }),
    "records[0].policy.rejected: loss orpo needs a log-probability < 0, got 0",
  );
  assert.match(
    firstIssue({ loss: "dpo", records: [{ policy: { chosen: "x", rejected: -1 }, reference: ok }] }),
    /^records\[0\]\.policy\.chosen: /,
  );
  assert.match(
    firstIssue({ loss: "ipo", records: [{ policy: ok, reference: ok, tokens: { chosen: 0, rejected: 2 } }] }),
    /^records\[0\]\.tokens\.chosen: token count must be > 0/,
  );
  assert.match(firstIssue({ loss: "kto", records: [{ policy: ok }] }), /^loss: /);
  assert.match(
    firstIssue({ loss: "bt", sso: {}, records: [{ policy: ok }] }),
    /^sso: not supported with loss bt/,
  );
  assert.match(
    firstIssue({ loss: "ipo", labelSmoothing: 0.1, records: [{ policy: ok, reference: ok, tokens }] }),
    /^labelSmoothing: only used by loss dpo/,
  );
  assert.match(firstIssue({ loss: "dpo", records: [] }), /^records: /);
  assert.match(
    firstIssue({ loss: "dpo", records: [{ policy: ok, reference: ok, extra: 1 }] }),
    /^records\[0\]: Unrecognized key/,
  );
  // Reference-free losses and the steer-off variant do not ask for what they do not read.
  assert.ok(objectiveInputSchema.safeParse({ loss: "simpo", records: [{ policy: ok, tokens }] }).success);
  assert.ok(
    objectiveInputSchema.safeParse({
      loss: "dpo",
      sso: { steer: false, weight: "none" },
      records: [{ policy: ok, reference: ok }],
    }).success,
  );
  assert.equal(lossUsesReference("hinge"), true);
});

test("ssoObjective itself rejects incomplete records with a UserError naming record and field", () => {
  assert.throws(
    () =>
      ssoObjective(config("hinge"), [
        { policy: { chosen: -1, rejected: -2 }, reference: { chosen: -1, rejected: -2 } },
        { policy: { chosen: -1, rejected: -2 } },
      ]),
    (err: unknown) =>
      err instanceof UserError && err.message === "records[1].reference.chosen: required by loss hinge",
  );
  assert.throws(() => ssoObjective(config("dpo"), []), UserError);
});
