/**
 * The SFT corpus that makes the base policy of the world, and the off-policy gold-labelled pairs (our
 * analog of UltraFeedback).
 *
 * Response examples teach the policy to follow principles, imperfectly: the system prompt is empty, or
 * the SSO prompt builder's p+ or p- for a few features (picked the way SSO picks them: the query's
 * relevant features, sometimes a wrong one, Concision added at random). A feature named with its good
 * principle is behaved well with probability `followRate`, with its bad principle badly with that
 * probability; every other feature is good at `baseRate`. So the plain policy is mediocre (what SSO
 * must improve) while principles steer it (what SSO relies on).
 *
 * Identification examples teach the few-shot feature-identification prompt: the answer is the query's
 * relevant features as a comma-separated list, most relevant first, with some noise.
 */

import type { ChatMessage } from "../policy/types.js";
import { type Catalog, DEFAULT_CATALOG, FEATURE_NAMES, identifiableFeatures } from "../sso/catalog.js";
import type { TextPair } from "../sso/pairs.js";
import {
  buildSystemPrompt,
  featureIdentificationMessages,
  principlesFor,
  type Side,
} from "../sso/prompts.js";
import { Rng } from "../util/rng.js";
import { type Behaviour, composeResponse, uniformBehaviour } from "./generator.js";
import { goldScore } from "./scorers.js";
import { type Family, trainQueries, type WorldQuery } from "./tasks.js";

/** One chat example of the SFT corpus, with what produced it (for statistics and tests). */
export interface SftExample {
  /** "response": answer a query; "identify": name the query's features. */
  kind: "response" | "identify";
  /** The query the example is about (the trainer needs only `messages`). */
  query: WorldQuery;
  family: Family;
  messages: ChatMessage[];
  /** Response examples: the side of the system prompt, or null when it is empty. */
  side?: Side | null;
  /** Response examples: the features the system prompt names. */
  principled?: string[];
  /** Response examples: the behaviour the response was written with. */
  behaviour?: Behaviour;
}

/** Settings of the corpus; every field but seed and size has the default the issue describes. */
export interface SftCorpusOptions {
  seed: number;
  /** Number of examples. */
  size: number;
  catalog?: Catalog;
  /** Share of feature-identification examples (default 0.15). */
  identifyRate?: number;
  /** Share of response examples that carry a system prompt (default 0.6), half p+ and half p-. */
  systemPromptRate?: number;
  /** Probability that a principled feature behaves as its principle says (default 0.85). */
  followRate?: number;
  /** Probability that a feature no principle names is behaved well (default 0.4). */
  baseRate?: number;
  /** Features per system prompt and per identification answer (default 2, SSO's featureCount). */
  featureCount?: number;
  /** Probability of adding the catalog's random feature (Concision) to a system prompt (default 0.2). */
  concisionRate?: number;
  /** Probability that a feature list (in a prompt or an identification answer) is perturbed (default 0.1). */
  noise?: number;
}

/**
 * The features relevant to a query that feature identification may name (the catalog's random feature
 * is never picked by the policy), most relevant first.
 */
export function relevantFeatures(
  query: WorldQuery,
  count: number,
  catalog: Catalog = DEFAULT_CATALOG,
): string[] {
  const selectable = new Set(identifiableFeatures(catalog));
  return query.features.filter((f) => selectable.has(f)).slice(0, count);
}

/** A relevant-feature list, perturbed with probability `noise`: order swapped or one name replaced. */
function noisyFeatures(
  rng: Rng,
  query: WorldQuery,
  count: number,
  noise: number,
  catalog: Catalog,
): string[] {
  const features = relevantFeatures(query, count, catalog);
  if (!rng.chance(noise) || features.length === 0) return features;
  if (features.length >= 2 && rng.chance(0.5)) return [features[1], features[0], ...features.slice(2)];
  const others = identifiableFeatures(catalog).filter((f) => !features.includes(f));
  if (others.length === 0) return features;
  const out = features.slice();
  out[rng.int(out.length)] = rng.pick(others);
  return out;
}

/** The features a system prompt names, chosen as SSO would choose them for this query. */
function promptFeatures(
  rng: Rng,
  query: WorldQuery,
  o: Required<Omit<SftCorpusOptions, "seed" | "size">>,
): string[] {
  const features = noisyFeatures(rng, query, o.featureCount, o.noise, o.catalog);
  const extra = o.catalog.randomFeature;
  if (extra !== null && !features.includes(extra) && rng.chance(o.concisionRate)) features.push(extra);
  return features;
}

function withDefaults(options: SftCorpusOptions): Required<Omit<SftCorpusOptions, "seed" | "size">> {
  return {
    catalog: options.catalog ?? DEFAULT_CATALOG,
    identifyRate: options.identifyRate ?? 0.15,
    systemPromptRate: options.systemPromptRate ?? 0.6,
    followRate: options.followRate ?? 0.85,
    baseRate: options.baseRate ?? 0.4,
    featureCount: options.featureCount ?? 2,
    concisionRate: options.concisionRate ?? 0.2,
    noise: options.noise ?? 0.1,
  };
}

/** A behaviour drawn as the corpus draws it: principled features follow their side, others the base rate. */
export function principledBehaviour(
  rng: Rng,
  principled: readonly string[],
  side: Side | null,
  followRate: number,
  baseRate: number,
): Behaviour {
  const out = uniformBehaviour(false);
  for (const f of FEATURE_NAMES) {
    const named = side !== null && principled.includes(f);
    const pGood = named ? (side === "good" ? followRate : 1 - followRate) : baseRate;
    out[f] = rng.chance(pGood);
  }
  return out;
}

/** One response example for a query. */
export function responseExample(
  rng: Rng,
  query: WorldQuery,
  options: Omit<SftCorpusOptions, "seed" | "size"> = {},
): SftExample {
  const o = withDefaults({ seed: 0, size: 0, ...options });
  const messages: ChatMessage[] = [];
  let side: Side | null = null;
  let principled: string[] = [];
  if (rng.chance(o.systemPromptRate)) {
    side = rng.chance(0.5) ? "good" : "bad";
    principled = promptFeatures(rng, query, o);
    messages.push({ role: "system", content: buildSystemPrompt(principlesFor(o.catalog, principled, side)) });
  }
  const behaviour = principledBehaviour(rng, principled, side, o.followRate, o.baseRate);
  messages.push({ role: "user", content: query.prompt });
  messages.push({ role: "assistant", content: composeResponse(query, behaviour, rng) });
  return { kind: "response", query, family: query.family, messages, side, principled, behaviour };
}

/** One feature-identification example for a query. */
export function identifyExample(
  rng: Rng,
  query: WorldQuery,
  options: Omit<SftCorpusOptions, "seed" | "size"> = {},
): SftExample {
  const o = withDefaults({ seed: 0, size: 0, ...options });
  const messages = featureIdentificationMessages(query.prompt, o.catalog, o.featureCount);
  const answer = noisyFeatures(rng, query, o.featureCount, o.noise, o.catalog).join(", ");
  messages.push({ role: "assistant", content: answer });
  return { kind: "identify", query, family: query.family, messages };
}

/** The SFT corpus: `size` examples on training queries only, deterministic in `seed`. */
export function buildSftCorpus(options: SftCorpusOptions): SftExample[] {
  const o = withDefaults(options);
  const rng = new Rng(options.seed).fork("sft-corpus");
  const queries = trainQueries(rng.fork("queries"), options.size);
  const out: SftExample[] = [];
  for (const query of queries) {
    if (rng.chance(o.identifyRate)) out.push(identifyExample(rng, query, o));
    else out.push(responseExample(rng, query, o));
  }
  return out;
}

/** A gold-labelled preference pair written by the world's generator, not by the policy. */
export interface OffPolicyPair extends TextPair {
  id: string;
  queryId: string;
  chosenScore: number;
  rejectedScore: number;
}

/**
 * Off-policy pairs (the analog of UltraFeedback): two responses per query with independent random
 * behaviours (each feature good with probability one half), the one with the higher gold score chosen.
 * Queries whose draws keep tying are skipped.
 */
export function offPolicyPairs(rng: Rng, queries: readonly WorldQuery[]): OffPolicyPair[] {
  const out: OffPolicyPair[] = [];
  queries.forEach((query, index) => {
    for (let attempt = 0; attempt < 8; attempt++) {
      const a = composeResponse(query, principledBehaviour(rng, [], null, 0, 0.5), rng);
      const b = composeResponse(query, principledBehaviour(rng, [], null, 0, 0.5), rng);
      const sa = goldScore(query, a);
      const sb = goldScore(query, b);
      if (Math.abs(sa - sb) < 1e-9) continue;
      const [chosen, rejected, chosenScore, rejectedScore] = sa > sb ? [a, b, sa, sb] : [b, a, sb, sa];
      out.push({
        id: `off-${index}-${query.id}`,
        queryId: query.id,
        prompt: query.prompt,
        chosen,
        rejected,
        chosenScore,
        rejectedScore,
      });
      return;
    }
  });
  return out;
}
