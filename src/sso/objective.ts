/**
 * Preference objectives as pure functions of per-sequence numbers (summed response log-probs, token
 * counts, reward scores), each with its analytic gradient. The engine turns a batch into these numbers
 * and turns d(loss)/d(summed log-prob) back into parameter gradients, so nothing here knows a model.
 *
 * Conventions: every gradient is taken with respect to the SUMMED log-prob l that the engine produces,
 * even for losses that work on per-token averages a = l / n (the chain rule divides by n here, once).
 * Reference log-probs are constants (a frozen model), so they get no gradient.
 */
import { z } from "zod";
import { formatPath, UserError } from "../util/errors.js";

// ---------------------------------------------------------------------------------------------------
// Stable scalar helpers

/** The logistic function, evaluated without overflow for any finite x. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** softplus(x) = log(1 + e^x); also -log sigmoid(-x). Exact for large |x| where the naive form overflows. */
export function softplus(x: number): number {
  return Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
}

/** log(1 - e^a) for a < 0, switching forms at -ln 2 to keep full precision at both ends. */
export function log1mexp(a: number): number {
  return a > -Math.LN2 ? Math.log(-Math.expm1(a)) : Math.log1p(-Math.exp(a));
}

/** d/da log(1 - e^a) = -1 / (e^{-a} - 1) for a < 0. */
function log1mexpGrad(a: number): number {
  return -1 / Math.expm1(-a);
}

// ---------------------------------------------------------------------------------------------------
// Base pair losses

/** One pair's loss and its gradient with respect to the chosen and rejected summed policy log-probs. */
export interface PairLoss {
  loss: number;
  dChosen: number;
  dRejected: number;
}

/** A preference pair under the policy and a frozen reference: summed log-probs l_w, l_l, l_w^ref, l_l^ref. */
export interface RefPair {
  chosen: number;
  rejected: number;
  refChosen: number;
  refRejected: number;
}

/** A preference pair with response token counts, for losses on per-token averages a = l / n. */
export interface AvgPair {
  chosen: number;
  rejected: number;
  chosenTokens: number;
  rejectedTokens: number;
}

/**
 * DPO, Rafailov et al. 2023 ("Direct Preference Optimization", arXiv 2305.18290), with the conservative
 * label smoothing e of cDPO (Mitchell 2023): u = beta [(l_w - l_l) - (l_w^ref - l_l^ref)],
 * B = -(1-e) log sigmoid(u) - e log sigmoid(-u). Uses sums.
 */
export function dpoLoss(pair: RefPair, beta: number, labelSmoothing = 0): PairLoss {
  const u = beta * (pair.chosen - pair.refChosen - (pair.rejected - pair.refRejected));
  const loss = (1 - labelSmoothing) * softplus(-u) + labelSmoothing * softplus(u);
  const dU = -(1 - labelSmoothing) * sigmoid(-u) + labelSmoothing * sigmoid(u);
  return { loss, dChosen: beta * dU, dRejected: -beta * dU };
}

/**
 * IPO, Azar et al. 2023 ("A General Theoretical Paradigm to Understand Learning from Human
 * Preferences", arXiv 2310.12036): h = (a_w - a_l) - (a_w^ref - a_l^ref), B = (h - 1/(2 beta))^2,
 * on per-token averages as in the SSO reference code (the reference shares the policy's token counts).
 */
export function ipoLoss(pair: RefPair & AvgPair, beta: number): PairLoss {
  const nw = pair.chosenTokens;
  const nl = pair.rejectedTokens;
  const h = (pair.chosen - pair.refChosen) / nw - (pair.rejected - pair.refRejected) / nl;
  const gap = h - 1 / (2 * beta);
  const dH = 2 * gap;
  return { loss: gap * gap, dChosen: dH / nw, dRejected: -dH / nl };
}

/**
 * SimPO, Meng et al. 2024 ("SimPO: Simple Preference Optimization with a Reference-Free Reward",
 * arXiv 2405.14734): B = -log sigmoid(beta (a_w - a_l) - gamma). No reference model.
 */
export function simpoLoss(pair: AvgPair, beta: number, gamma = 0.5): PairLoss {
  const nw = pair.chosenTokens;
  const nl = pair.rejectedTokens;
  const z = beta * (pair.chosen / nw - pair.rejected / nl) - gamma;
  const dZ = -sigmoid(-z);
  return { loss: softplus(-z), dChosen: (dZ * beta) / nw, dRejected: (-dZ * beta) / nl };
}

/**
 * ORPO, Hong et al. 2024 ("ORPO: Monolithic Preference Optimization without Reference Model",
 * arXiv 2403.07691): log_odds = (a_w - a_l) - (log(1 - e^{a_w}) - log(1 - e^{a_l})),
 * B = -a_w + beta (-log sigmoid(log_odds)). Needs a_w, a_l < 0 (probabilities below 1).
 */
export function orpoLoss(pair: AvgPair, beta: number): PairLoss {
  const nw = pair.chosenTokens;
  const nl = pair.rejectedTokens;
  const aw = pair.chosen / nw;
  const al = pair.rejected / nl;
  const logOdds = aw - al - (log1mexp(aw) - log1mexp(al));
  const dLogOdds = -beta * sigmoid(-logOdds);
  const dAw = -1 + dLogOdds * (1 - log1mexpGrad(aw));
  const dAl = -dLogOdds * (1 - log1mexpGrad(al));
  return { loss: -aw + beta * softplus(-logOdds), dChosen: dAw / nw, dRejected: dAl / nl };
}

/**
 * Hinge (SLiC), Zhao et al. 2023 ("SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
 * arXiv 2305.10425), in TRL's form: B = max(0, 1 - beta [(l_w - l_l) - (l_w^ref - l_l^ref)]). Uses sums;
 * at the kink the subgradient 0 is taken, as relu does.
 */
export function hingeLoss(pair: RefPair, beta: number): PairLoss {
  const slack = 1 - beta * (pair.chosen - pair.refChosen - (pair.rejected - pair.refRejected));
  if (slack <= 0) return { loss: 0, dChosen: 0, dRejected: 0 };
  return { loss: slack, dChosen: -beta, dRejected: beta };
}

/**
 * Bradley-Terry reward-model loss, Bradley & Terry 1952 (as used by Ouyang et al. 2022, InstructGPT,
 * arXiv 2203.02155): B = -log sigmoid(r_w - r_l) on reward scores; gradients are w.r.t. the scores.
 */
export function btLoss(chosenScore: number, rejectedScore: number): PairLoss {
  const d = chosenScore - rejectedScore;
  const dD = -sigmoid(-d);
  return { loss: softplus(-d), dChosen: dD, dRejected: -dD };
}

// ---------------------------------------------------------------------------------------------------
// Configuration and records

/** The base losses by name. */
export const LOSS_NAMES = ["dpo", "ipo", "simpo", "orpo", "hinge", "bt"] as const;
/** A base loss name. */
export type LossName = (typeof LOSS_NAMES)[number];

/** The six sequences of an SSO record: main pair (x), pos pair (p+ x), neg pair (p- x: y0 over y+). */
export const SEQ_KEYS = [
  "chosen",
  "rejected",
  "posChosen",
  "posRejected",
  "negChosen",
  "negRejected",
] as const;
/** One of the six sequence keys. */
export type SeqKey = (typeof SEQ_KEYS)[number];
/** A number per sequence; keys the objective does not use may be absent. */
export type SeqValues = Partial<Record<SeqKey, number>>;

const LOSSES_WITH_REFERENCE: ReadonlySet<LossName> = new Set(["dpo", "ipo", "hinge"]);
const LOSSES_ON_AVERAGES: ReadonlySet<LossName> = new Set(["ipo", "simpo", "orpo"]);

/** Whether a loss compares against a frozen reference model (dpo, ipo, hinge). */
export function lossUsesReference(loss: LossName): boolean {
  return LOSSES_WITH_REFERENCE.has(loss);
}

/** Whether a loss works on per-token averages l / n rather than sums (ipo, simpo, orpo). */
export function lossUsesAverages(loss: LossName): boolean {
  return LOSSES_ON_AVERAGES.has(loss);
}

const finite = () => z.number();
const seqValuesSchema = z.strictObject({
  chosen: finite().optional(),
  rejected: finite().optional(),
  posChosen: finite().optional(),
  posRejected: finite().optional(),
  negChosen: finite().optional(),
  negRejected: finite().optional(),
});
const tokenCount = () => z.number().int("token count must be an integer").positive("token count must be > 0");
const tokensSchema = z.strictObject({
  chosen: tokenCount().optional(),
  rejected: tokenCount().optional(),
  posChosen: tokenCount().optional(),
  posRejected: tokenCount().optional(),
  negChosen: tokenCount().optional(),
  negRejected: tokenCount().optional(),
});

/** The SSO block: how the main pair, the steering pairs (G) and the weight W combine. */
export const ssoOptionsSchema = z.strictObject({
  weight: z.enum(["sigmoid", "none"]).default("sigmoid"),
  alpha: z.number().min(0).max(1).default(0.66),
  steer: z.boolean().default(true),
  steerBeta: z.number().min(0).default(0.1),
  ftx: z.number().min(0).default(0),
  detachWeight: z.boolean().default(false),
});
/** SSO options with every default filled in. */
export type SsoOptions = z.infer<typeof ssoOptionsSchema>;

/**
 * The generator form of SSO (docs/algorithm.md, "The generator form"): a copy of the policy learns to
 * produce the steering pairs and nothing else, L+ = B(p+ x: y+ > y-) + gamma SFT(p+ x, y+) and
 * L- = B(p- x: y0 > y+) + gamma SFT(p- x, y0); the policy itself later trains with plain DPO on what
 * the generator samples. `pos`/`neg` switch each term off for the "+L+ only" / "+L- only" ablations.
 */
export const generatorOptionsSchema = z.strictObject({
  pos: z.boolean().default(true),
  neg: z.boolean().default(true),
  sftWeight: z.number().min(0).default(0.1),
});
/** Generator options with every default filled in. */
export type GeneratorOptions = z.infer<typeof generatorOptionsSchema>;

const configShape = {
  loss: z.enum(LOSS_NAMES),
  beta: z.number().positive().default(0.2),
  labelSmoothing: z.number().min(0).max(0.5).default(0),
  gamma: z.number().default(0.5),
  sso: ssoOptionsSchema.optional(),
  generator: generatorOptionsSchema.optional(),
};

/** The objective's settings (the input JSON without its records); defaults as in docs/algorithm.md. */
export const objectiveConfigSchema = z.strictObject(configShape).superRefine((config, ctx) => {
  for (const issue of configIssues(config)) ctx.addIssue({ code: "custom", ...issue });
});
/** Objective settings with every default filled in. */
export type ObjectiveConfig = z.infer<typeof objectiveConfigSchema>;

/** One record's per-sequence numbers. */
export const objectiveRecordSchema = z.strictObject({
  policy: seqValuesSchema,
  reference: seqValuesSchema.optional(),
  tokens: tokensSchema.optional(),
});
/** One record: policy values (summed log-probs, or scores for bt), reference values, token counts. */
export interface ObjectiveRecord {
  policy: SeqValues;
  reference?: SeqValues;
  tokens?: SeqValues;
}

/** The full `selfsteer objective --input` document: settings plus records, checked against each other. */
export const objectiveInputSchema = z
  .strictObject({ ...configShape, records: z.array(objectiveRecordSchema).min(1) })
  .superRefine((input, ctx) => {
    for (const issue of objectiveIssues(input, input.records)) ctx.addIssue({ code: "custom", ...issue });
  });
/** A parsed objective input. */
export type ObjectiveInput = z.infer<typeof objectiveInputSchema>;

/** A problem with the objective's input, located by a path like ["records", 3, "reference", "chosen"]. */
export interface ObjectiveIssue {
  path: Array<string | number>;
  message: string;
}

function configIssues(config: Partial<ObjectiveConfig>): ObjectiveIssue[] {
  const issues: ObjectiveIssue[] = [];
  if (config.loss === "bt" && config.sso !== undefined)
    issues.push({
      path: ["sso"],
      message: "not supported with loss bt (reward scores are not log-probabilities)",
    });
  if (config.generator !== undefined) {
    if (config.sso !== undefined)
      issues.push({ path: ["generator"], message: "cannot be combined with sso (two different objectives)" });
    if (config.loss === "bt")
      issues.push({
        path: ["generator"],
        message: "not supported with loss bt (reward scores are not log-probabilities)",
      });
    if (config.generator.pos === false && config.generator.neg === false)
      issues.push({ path: ["generator"], message: "needs pos or neg (or both) switched on" });
  }
  if (config.loss !== undefined && config.loss !== "dpo" && (config.labelSmoothing ?? 0) !== 0)
    issues.push({ path: ["labelSmoothing"], message: `only used by loss dpo, not ${config.loss}` });
  return issues;
}

/** The pairs a configuration trains on, as (chosen, rejected) sequence keys. */
function pairsRead(config: ObjectiveConfig): Array<[SeqKey, SeqKey, string]> {
  const gen = config.generator;
  if (gen !== undefined) {
    const pairs: Array<[SeqKey, SeqKey, string]> = [];
    if (gen.pos) pairs.push(["posChosen", "posRejected", "generator pos"]);
    if (gen.neg) pairs.push(["negChosen", "negRejected", "generator neg"]);
    return pairs;
  }
  const pairs: Array<[SeqKey, SeqKey, string]> = [["chosen", "rejected", `loss ${config.loss}`]];
  if (config.sso?.steer === true)
    pairs.push(["posChosen", "posRejected", "sso steer"], ["negChosen", "negRejected", "sso steer"]);
  return pairs;
}

/** The sequence keys whose log-probs a configuration reads (what a trainer must score). */
export function sequencesRead(config: ObjectiveConfig): SeqKey[] {
  return pairsRead(config).flatMap(([w, l]) => [w, l]);
}

interface Requirement {
  group: "policy" | "reference" | "tokens";
  key: SeqKey;
  reason: string;
}

/** Lists which record fields a configuration reads, each with the reason, first reason first. */
function requirements(config: ObjectiveConfig): Requirement[] {
  const reqs: Requirement[] = [];
  const { loss, sso, generator } = config;
  const steer = sso?.steer === true;
  const pairs = pairsRead(config);
  for (const [w, l, why] of pairs)
    for (const key of [w, l]) reqs.push({ group: "policy", key, reason: `required by ${why}` });
  for (const [w, l] of pairs) {
    for (const key of [w, l]) {
      if (lossUsesReference(loss)) reqs.push({ group: "reference", key, reason: `required by loss ${loss}` });
      if (lossUsesAverages(loss))
        reqs.push({ group: "tokens", key, reason: `required by loss ${loss} (per-token averages)` });
    }
  }
  if (sso !== undefined) {
    if (sso.weight === "sigmoid")
      for (const key of ["chosen", "rejected"] as const)
        reqs.push({ group: "tokens", key, reason: "required by sso weight sigmoid" });
    if (sso.ftx > 0) {
      const keys: SeqKey[] = steer ? ["chosen", "posChosen", "negChosen"] : ["chosen"];
      for (const key of keys) reqs.push({ group: "tokens", key, reason: "required by sso ftx > 0" });
    }
  }
  if (generator !== undefined && generator.sftWeight > 0)
    for (const [w] of pairs)
      reqs.push({ group: "tokens", key: w, reason: "required by generator sftWeight > 0" });
  return reqs;
}

/**
 * Checks records against a configuration: every field the objective reads is present and finite,
 * token counts are positive, and orpo's log-probs are below 0. Config problems come first.
 */
export function objectiveIssues(
  config: ObjectiveConfig,
  records: readonly ObjectiveRecord[],
): ObjectiveIssue[] {
  const issues = configIssues(config);
  if (!(LOSS_NAMES as readonly string[]).includes(config.loss)) return issues;
  // The schema runs this check even after type errors, so anything not shaped right is skipped here.
  if (!Array.isArray(records)) return issues;
  const reqs = requirements(config);
  records.forEach((record, i) => {
    if (typeof record !== "object" || record === null) return;
    const seen = new Set<string>();
    for (const req of reqs) {
      const id = `${req.group}.${req.key}`;
      if (seen.has(id)) continue;
      seen.add(id);
      const path = ["records", i, req.group, req.key];
      const group: unknown = record[req.group];
      if (group !== undefined && (typeof group !== "object" || group === null)) continue;
      const value = record[req.group]?.[req.key];
      if (value === undefined) {
        issues.push({ path, message: req.reason });
        continue;
      }
      // Type errors were reported by the schema already; only numbers are judged here.
      if (typeof value !== "number") continue;
      if (!Number.isFinite(value)) issues.push({ path, message: `must be a finite number, got ${value}` });
      else if (req.group === "tokens" && !(value > 0 && Number.isInteger(value)))
        issues.push({ path, message: `token count must be a positive integer, got ${value}` });
      else if (config.loss === "orpo" && req.group === "policy" && !(value < 0))
        issues.push({ path, message: `loss orpo needs a log-probability < 0, got ${value}` });
    }
  });
  return issues;
}

// ---------------------------------------------------------------------------------------------------
// The composite

/** The numbers of one pair as the base losses read them. */
interface PairNumbers {
  chosen: number;
  rejected: number;
  refChosen: number;
  refRejected: number;
  chosenTokens: number;
  rejectedTokens: number;
}

/** Evaluates one pair under the named base loss. Unused fields of `pair` are ignored. */
export function baseLoss(
  config: Pick<ObjectiveConfig, "loss" | "beta" | "labelSmoothing" | "gamma">,
  pair: PairNumbers,
): PairLoss {
  switch (config.loss) {
    case "dpo":
      return dpoLoss(pair, config.beta, config.labelSmoothing);
    case "ipo":
      return ipoLoss(pair, config.beta);
    case "simpo":
      return simpoLoss(pair, config.beta, config.gamma);
    case "orpo":
      return orpoLoss(pair, config.beta);
    case "hinge":
      return hingeLoss(pair, config.beta);
    case "bt":
      return btLoss(pair.chosen, pair.rejected);
  }
}

/** The SSO weight W = sigmoid(-(alpha a_w + (1 - alpha) a_l)) and its derivatives w.r.t. the sums l_w, l_l. */
export function steeringWeight(
  chosen: number,
  rejected: number,
  chosenTokens: number,
  rejectedTokens: number,
  alpha: number,
): PairLoss {
  const z = -(alpha * (chosen / chosenTokens) + (1 - alpha) * (rejected / rejectedTokens));
  const w = sigmoid(z);
  // W(1 - W) as a product of two sigmoids stays accurate when W is within rounding of 0 or 1.
  const dZ = w * sigmoid(-z);
  return { loss: w, dChosen: (-dZ * alpha) / chosenTokens, dRejected: (-dZ * (1 - alpha)) / rejectedTokens };
}

/** Per-pair metric values: the reward of each side and the log-prob quantity the loss uses. */
interface PairMetrics {
  rewardChosen: number;
  rewardRejected: number;
  logpChosen: number;
  logpRejected: number;
}

/** One record's loss, gradient (w.r.t. policy values) and the pieces the metrics average. */
export interface RecordObjective {
  loss: number;
  grad: SeqValues;
  mainLoss: number;
  steerLoss: number;
  sftLoss: number;
  weight: number;
  /** The main pair is absent only under the generator objective, which never reads it. */
  pairs: { main?: PairMetrics; pos?: PairMetrics; neg?: PairMetrics };
}

function pairNumbers(record: ObjectiveRecord, w: SeqKey, l: SeqKey): PairNumbers {
  return {
    chosen: record.policy[w] ?? Number.NaN,
    rejected: record.policy[l] ?? Number.NaN,
    refChosen: record.reference?.[w] ?? Number.NaN,
    refRejected: record.reference?.[l] ?? Number.NaN,
    chosenTokens: record.tokens?.[w] ?? Number.NaN,
    rejectedTokens: record.tokens?.[l] ?? Number.NaN,
  };
}

/** Rewards follow the SSO reference: beta (v - v^ref), or beta v without a reference; v is what the loss reads. */
function pairMetrics(config: ObjectiveConfig, p: PairNumbers): PairMetrics {
  if (config.loss === "bt")
    return {
      rewardChosen: p.chosen,
      rewardRejected: p.rejected,
      logpChosen: p.chosen,
      logpRejected: p.rejected,
    };
  const avg = lossUsesAverages(config.loss);
  const vw = avg ? p.chosen / p.chosenTokens : p.chosen;
  const vl = avg ? p.rejected / p.rejectedTokens : p.rejected;
  let rw = vw;
  let rl = vl;
  if (lossUsesReference(config.loss)) {
    rw -= avg ? p.refChosen / p.chosenTokens : p.refChosen;
    rl -= avg ? p.refRejected / p.rejectedTokens : p.refRejected;
  }
  return {
    rewardChosen: config.beta * rw,
    rewardRejected: config.beta * rl,
    logpChosen: vw,
    logpRejected: vl,
  };
}

/**
 * The SSO loss of one record (docs/algorithm.md, "The objective"), with d(loss)/d(policy value) for every key it
 * reads. Without `config.sso`: L = B(main). With it and steer on: L = B(main) + ftx SFT + W G_beta
 * (B(pos) + B(neg)); steer off ("w/o G"): L = W (B(main) + ftx SFT_main). Records must be validated.
 */
export function recordObjective(config: ObjectiveConfig, record: ObjectiveRecord): RecordObjective {
  if (config.generator !== undefined) return generatorRecordObjective(config, config.generator, record);
  const main = pairNumbers(record, "chosen", "rejected");
  const mainLoss = baseLoss(config, main);
  const grad: SeqValues = { chosen: mainLoss.dChosen, rejected: mainLoss.dRejected };
  const pairs: RecordObjective["pairs"] = { main: pairMetrics(config, main) };
  const sso = config.sso;
  if (sso === undefined)
    return { loss: mainLoss.loss, grad, mainLoss: mainLoss.loss, steerLoss: 0, sftLoss: 0, weight: 1, pairs };

  let weight: PairLoss = { loss: 1, dChosen: 0, dRejected: 0 };
  if (sso.weight === "sigmoid") {
    weight = steeringWeight(main.chosen, main.rejected, main.chosenTokens, main.rejectedTokens, sso.alpha);
    if (sso.detachWeight) weight = { loss: weight.loss, dChosen: 0, dRejected: 0 };
  }
  const W = weight.loss;
  const ftx = sso.ftx;
  const sftMain = ftx > 0 ? -main.chosen / main.chosenTokens : 0;

  if (!sso.steer) {
    const inner = mainLoss.loss + ftx * sftMain;
    const dInnerChosen = mainLoss.dChosen + (ftx > 0 ? -ftx / main.chosenTokens : 0);
    grad.chosen = W * dInnerChosen + inner * weight.dChosen;
    grad.rejected = W * mainLoss.dRejected + inner * weight.dRejected;
    return {
      loss: W * inner,
      grad,
      mainLoss: mainLoss.loss,
      steerLoss: 0,
      sftLoss: sftMain,
      weight: W,
      pairs,
    };
  }

  const pos = pairNumbers(record, "posChosen", "posRejected");
  const neg = pairNumbers(record, "negChosen", "negRejected");
  const posLoss = baseLoss(config, pos);
  const negLoss = baseLoss(config, neg);
  pairs.pos = pairMetrics(config, pos);
  pairs.neg = pairMetrics(config, neg);
  const g = sso.steerBeta;
  const steerLoss = g * (posLoss.loss + negLoss.loss);
  let sft = 0;
  if (ftx > 0) sft = sftMain - (g * pos.chosen) / pos.chosenTokens - (g * neg.chosen) / neg.chosenTokens;

  grad.chosen = mainLoss.dChosen + steerLoss * weight.dChosen + (ftx > 0 ? -ftx / main.chosenTokens : 0);
  grad.rejected = mainLoss.dRejected + steerLoss * weight.dRejected;
  grad.posChosen = W * g * posLoss.dChosen + (ftx > 0 ? (-ftx * g) / pos.chosenTokens : 0);
  grad.posRejected = W * g * posLoss.dRejected;
  grad.negChosen = W * g * negLoss.dChosen + (ftx > 0 ? (-ftx * g) / neg.chosenTokens : 0);
  grad.negRejected = W * g * negLoss.dRejected;
  const loss = mainLoss.loss + ftx * sft + W * steerLoss;
  return { loss, grad, mainLoss: mainLoss.loss, steerLoss, sftLoss: sft, weight: W, pairs };
}

/**
 * The generator objective of one record: the sum over the enabled steering pairs of
 * B(pair) + gamma SFT(pair's chosen), where SFT(y) = -l_y / n_y is the per-token negative log-likelihood.
 * With gamma > 0 the chosen side is pulled up in absolute terms, not only relative to the rejected one,
 * which keeps the generator's y+ and y0 fluent while they drift apart.
 */
function generatorRecordObjective(
  config: ObjectiveConfig,
  gen: GeneratorOptions,
  record: ObjectiveRecord,
): RecordObjective {
  const grad: SeqValues = {};
  const pairs: RecordObjective["pairs"] = {};
  let steerLoss = 0;
  let sftLoss = 0;
  const terms: Array<["pos" | "neg", SeqKey, SeqKey, boolean]> = [
    ["pos", "posChosen", "posRejected", gen.pos],
    ["neg", "negChosen", "negRejected", gen.neg],
  ];
  for (const [name, w, l, on] of terms) {
    if (!on) continue;
    const numbers = pairNumbers(record, w, l);
    const pairLoss = baseLoss(config, numbers);
    steerLoss += pairLoss.loss;
    grad[w] = pairLoss.dChosen;
    grad[l] = pairLoss.dRejected;
    if (gen.sftWeight > 0) {
      sftLoss += -numbers.chosen / numbers.chosenTokens;
      grad[w] = pairLoss.dChosen - gen.sftWeight / numbers.chosenTokens;
    }
    pairs[name] = pairMetrics(config, numbers);
  }
  const loss = steerLoss + gen.sftWeight * sftLoss;
  return { loss, grad, mainLoss: 0, steerLoss, sftLoss, weight: 1, pairs };
}

/** The objective over a batch: the mean loss, its gradient per record, and the logged metrics. */
export interface ObjectiveResult {
  loss: number;
  /** Per record, d(mean loss)/d(policy value) for each policy key the record carries (0 when unused). */
  grad: Array<{ policy: SeqValues }>;
  metrics: Record<string, number>;
}

function addPairMetrics(
  metrics: Record<string, number>,
  prefix: string,
  list: PairMetrics[],
  withLogps: boolean,
): void {
  const n = list.length;
  const mean = (f: (m: PairMetrics) => number) => list.reduce((s, m) => s + f(m), 0) / n;
  metrics[`${prefix}rewards/chosen`] = mean((m) => m.rewardChosen);
  metrics[`${prefix}rewards/rejected`] = mean((m) => m.rewardRejected);
  metrics[`${prefix}rewards/accuracies`] = mean((m) => (m.rewardChosen > m.rewardRejected ? 1 : 0));
  metrics[`${prefix}rewards/margins`] = mean((m) => m.rewardChosen - m.rewardRejected);
  if (withLogps) {
    metrics[`${prefix}logps/chosen`] = mean((m) => m.logpChosen);
    metrics[`${prefix}logps/rejected`] = mean((m) => m.logpRejected);
  }
}

/**
 * The batch objective: mean of `recordObjective` over records, gradients of that mean, and metrics
 * (TRL / SSO-reference names, means over records): rewards/{chosen,rejected,accuracies,margins},
 * logps/{chosen,rejected}, their p_ and n_ variants when steering, sso/weight, loss/main, loss/steer,
 * loss/sft (when ftx > 0). Under `generator` there is no main pair: p_/n_ metrics of the enabled pairs,
 * loss/steer (sum of their B) and loss/sft (sum of their unweighted SFT terms). Throws UserError naming record and field when an input is missing or bad.
 */
export function ssoObjective(config: ObjectiveConfig, records: readonly ObjectiveRecord[]): ObjectiveResult {
  if (records.length === 0) throw new UserError("records: at least one record is needed");
  const issues = objectiveIssues(config, records);
  if (issues.length > 0) throw new UserError(`${formatPath(issues[0].path)}: ${issues[0].message}`);
  const n = records.length;
  const perRecord = records.map((r) => recordObjective(config, r));
  const loss = perRecord.reduce((s, r) => s + r.loss, 0) / n;
  const grad = records.map((record, i) => {
    const policy: SeqValues = {};
    for (const key of SEQ_KEYS)
      if (record.policy[key] !== undefined) policy[key] = (perRecord[i].grad[key] ?? 0) / n;
    return { policy };
  });

  const metrics: Record<string, number> = {};
  const withLogps = config.loss !== "bt";
  // Every record reads the same pairs, so the first one says which pairs to report.
  const reported: Array<["main" | "pos" | "neg", string]> = [
    ["main", ""],
    ["pos", "p_"],
    ["neg", "n_"],
  ];
  for (const [pair, prefix] of reported)
    if (perRecord[0].pairs[pair] !== undefined)
      addPairMetrics(
        metrics,
        prefix,
        perRecord.map((r) => r.pairs[pair]!),
        withLogps,
      );
  const mean = (f: (r: RecordObjective) => number) => perRecord.reduce((s, r) => s + f(r), 0) / n;
  const sso = config.sso;
  if (config.generator !== undefined) {
    metrics["loss/steer"] = mean((r) => r.steerLoss);
    if (config.generator.sftWeight > 0) metrics["loss/sft"] = mean((r) => r.sftLoss);
    return { loss, grad, metrics };
  }
  metrics["loss/main"] = mean((r) => r.mainLoss);
  if (sso !== undefined) {
    metrics["sso/weight"] = mean((r) => r.weight);
    if (sso.steer) metrics["loss/steer"] = mean((r) => r.steerLoss);
    if (sso.ftx > 0) metrics["loss/sft"] = mean((r) => r.sftLoss);
  }
  return { loss, grad, metrics };
}
