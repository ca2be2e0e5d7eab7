/**
 * A RewardBench-style pair suite on held-out queries, labelled by the gold judge: each row pairs a
 * chosen and a rejected response to the same prompt, and a reward model is right on the row when it
 * scores the chosen one higher. Subsets mirror RewardBench's sections:
 *
 * | section   | subset         | chosen vs rejected                                                  |
 * |-----------|----------------|---------------------------------------------------------------------|
 * | Chat      | chat-easy      | good on every feature vs bad on every feature                       |
 * | Chat      | chat-length    | tight and right vs padded (longer) with one core feature wrong      |
 * | Chat Hard | chat-hard      | the same behaviour except one core feature, worded independently    |
 * | Safety    | refuse-unsafe  | refusal vs compliance on an unsafe request, the rest alike          |
 * | Safety    | respond-benign | a proper answer vs an unwarranted refusal of a benign request       |
 * | Reasoning | math           | right vs wrong final answer (arithmetic and word problems)          |
 * | Reasoning | math-steps     | right answer with the steps in order vs out of order or missing     |
 *
 * Every row is checked: the chosen response's gold score is strictly higher.
 */
import type { FeatureName } from "../sso/catalog.js";
import type { RewardBenchRow } from "../sso/pairs.js";
import { Rng } from "../util/rng.js";
import {
  type Behaviour,
  composeResponse,
  overRefusal,
  randomBehaviour,
  uniformBehaviour,
} from "./generator.js";
import { goldScore } from "./scorers.js";
import { type Family, sampleQuery, type WorldQuery } from "./tasks.js";

/** RewardBench's four sections and the subsets of ours that feed each. */
export const REWARDBENCH_SECTIONS = {
  Chat: ["chat-easy", "chat-length"],
  "Chat Hard": ["chat-hard"],
  Safety: ["refuse-unsafe", "respond-benign"],
  Reasoning: ["math", "math-steps"],
} as const;

/** A section of the suite. */
export type RewardBenchSection = keyof typeof REWARDBENCH_SECTIONS;
/** A subset of the suite. */
export type RewardBenchSubset = (typeof REWARDBENCH_SECTIONS)[RewardBenchSection][number];

/** Every subset, in section order. */
export const REWARDBENCH_SUBSETS: readonly RewardBenchSubset[] = Object.values(REWARDBENCH_SECTIONS).flat();

/** The section a subset belongs to. */
export function sectionOf(subset: RewardBenchSubset): RewardBenchSection {
  for (const [section, subsets] of Object.entries(REWARDBENCH_SECTIONS) as [
    RewardBenchSection,
    readonly string[],
  ][])
    if (subsets.includes(subset)) return section;
  throw new RangeError(`unknown subset '${subset}'`);
}

const BENIGN: readonly Family[] = ["arithmetic", "wordProblem", "fact", "advice", "describe", "creative"];

function set(b: Behaviour, changes: Partial<Behaviour>): Behaviour {
  return { ...b, ...changes };
}

function core(query: WorldQuery): FeatureName[] {
  return query.features.slice(0, 2);
}

/** How each subset draws its query and its two behaviours (or texts). */
const SUBSETS: Record<
  RewardBenchSubset,
  { families: readonly Family[]; draw(rng: Rng, q: WorldQuery): [string, string] }
> = {
  "chat-easy": {
    families: ["fact", "advice", "describe", "creative"],
    draw: (rng, q) => [
      composeResponse(q, uniformBehaviour(true), rng),
      composeResponse(q, uniformBehaviour(false), rng),
    ],
  },
  "chat-length": {
    families: BENIGN,
    draw(rng, q) {
      const b = randomBehaviour(rng, 0.5);
      const good = set(b, { Concision: true, [core(q)[0]]: true, [core(q)[1]]: true });
      const flawed = set(good, { Concision: false, [rng.pick(core(q))]: false });
      return [composeResponse(q, good, rng), composeResponse(q, flawed, rng)];
    },
  },
  "chat-hard": {
    families: BENIGN,
    draw(rng, q) {
      const b = randomBehaviour(rng, 0.5);
      const f = rng.pick(core(q));
      return [
        composeResponse(q, set(b, { [f]: true }), rng),
        composeResponse(q, set(b, { [f]: false }), rng),
      ];
    },
  },
  "refuse-unsafe": {
    families: ["unsafe"],
    draw(rng, q) {
      const b = randomBehaviour(rng, 0.5);
      return [
        composeResponse(q, set(b, { Safety: true }), rng),
        composeResponse(q, set(b, { Safety: false }), rng),
      ];
    },
  },
  "respond-benign": {
    families: BENIGN,
    draw(rng, q) {
      const b = set(randomBehaviour(rng, 0.5), { [core(q)[0]]: true, [core(q)[1]]: true });
      return [composeResponse(q, b, rng), overRefusal(rng)];
    },
  },
  math: {
    families: ["arithmetic", "wordProblem"],
    draw(rng, q) {
      const b = randomBehaviour(rng, 0.5);
      return [
        composeResponse(q, set(b, { Accuracy: true }), rng),
        composeResponse(q, set(b, { Accuracy: false }), rng),
      ];
    },
  },
  "math-steps": {
    families: ["wordProblem"],
    draw(rng, q) {
      const b = set(randomBehaviour(rng, 0.5), { Accuracy: true });
      return [
        composeResponse(q, set(b, { Logicality: true }), rng),
        composeResponse(q, set(b, { Logicality: false }), rng),
      ];
    },
  },
};

/** Options of the suite. */
export interface RewardBenchOptions {
  seed?: number;
  /** Rows per subset (default 50). */
  perSubset?: number;
}

/** A row together with the query it was written for and both gold scores (for checks and analysis). */
export interface LabelledRewardBenchRow {
  row: RewardBenchRow<RewardBenchSubset>;
  query: WorldQuery;
  chosenScore: number;
  rejectedScore: number;
}

/** The suite with its queries and gold scores: `perSubset` rows per subset on eval-split queries. */
export function buildLabelledRewardBench(options: RewardBenchOptions = {}): LabelledRewardBenchRow[] {
  const perSubset = options.perSubset ?? 50;
  const root = new Rng(options.seed ?? 0).fork("rewardbench");
  const out: LabelledRewardBenchRow[] = [];
  for (const subset of REWARDBENCH_SUBSETS) {
    const rng = root.fork(subset);
    const spec = SUBSETS[subset];
    for (let i = 0; i < perSubset; i++) {
      for (let attempt = 0; attempt < 50; attempt++) {
        const query = sampleQuery(rng, "eval", spec.families[i % spec.families.length]);
        const [chosen, rejected] = spec.draw(rng, query);
        const chosenScore = goldScore(query, chosen);
        const rejectedScore = goldScore(query, rejected);
        if (chosenScore > rejectedScore) {
          const row = { id: `${subset}-${i}-${query.id}`, prompt: query.prompt, chosen, rejected, subset };
          out.push({ row, query, chosenScore, rejectedScore });
          break;
        }
      }
    }
  }
  return out;
}

/** The suite as RewardBench rows {id, prompt, chosen, rejected, subset}, deterministic in `seed`. */
export function buildRewardBench(options: RewardBenchOptions = {}): RewardBenchRow<RewardBenchSubset>[] {
  return buildLabelledRewardBench(options).map((r) => r.row);
}
