/**
 * The SSO data builder: for each query, the policy picks the relevant features, principles give p+
 * and p-, and the same policy samples y+ (under p+), y- (under p-) and y0 (no system prompt). The
 * reference filters then keep or drop the record. Queries are handled in batches so that every stage
 * is one `policy.generate` call with many requests (what a local engine batches and an HTTP backend
 * runs concurrently). Every random choice and every request seed derives from (seed, query id, role),
 * so results do not depend on batch size, concurrency or the order in which queries finish.
 */
import type { GenerateRequest, Generation, Policy, TokenUsage } from "../policy/types.js";
import { hashString, Rng } from "../util/rng.js";
import { type Catalog, DEFAULT_CATALOG, featureSpec, identifiableFeatures } from "./catalog.js";
import { type DropCounts, emptyDropCounts, filterRecord } from "./filters.js";
import {
  buildSystemPrompt,
  featureIdentificationMessages,
  type PrinciplePair,
  parseFeatureList,
  parsePrincipleJson,
  principleGenerationMessages,
  principlesFor,
} from "./prompts.js";
import type { DropEntry, PrincipleEntry, QueryPrompt, RecordMeta, SsoRecord } from "./records.js";

/** Where kept records go; ResumableJsonlWriter fits. */
export interface RecordSink {
  has(id: string): boolean;
  append(record: SsoRecord): boolean;
}

/** Where dropped query ids go, so a resumed run does not sample them again; ResumableJsonlWriter fits. */
export interface DropSink {
  has(id: string): boolean;
  append(entry: DropEntry): boolean;
}

/** Settings of one build. Defaults are the reference ones (docs/algorithm.md). */
export interface BuildOptions {
  /** Seed of every random choice and every request. */
  seed: number;
  /** Feature catalog (default: DEFAULT_CATALOG). */
  catalog?: Catalog;
  /** Features the policy picks per query (default 2). */
  featureCount?: number;
  /** Probability of adding the catalog's random feature, Concision (default 0.2). */
  concisionRate?: number;
  /** Principles from the catalog (default) or written per query and feature by the policy. */
  principles?: "catalog" | "generated";
  /** Sampling temperature (default 0.7). */
  temperature?: number;
  /** Nucleus sampling (default 0.8). */
  topP?: number;
  /** Token limit of each sampled answer (default 1024). */
  maxTokens?: number;
  /** Token limit of the feature-identification answer (default 64). */
  featureMaxTokens?: number;
  /** Token limit of a generated-principles answer (default 256). */
  principleMaxTokens?: number;
  /** Queries per batch (default 8). */
  batchSize?: number;
  /** Batches in flight at once (default 1); more keeps a concurrent backend busy between stages. */
  parallelBatches?: number;
  /** Kept records are appended here; ids it already has are skipped. */
  writer?: RecordSink;
  /** Dropped query ids are logged here; ids it already has are skipped. */
  dropLog?: DropSink;
}

/** Counters of one build. */
export interface BuildSummary {
  /** Queries given. */
  total: number;
  /** Queries skipped because the writer or the drop log already had them (or a repeated id). */
  skipped: number;
  /** Queries built in this run, kept or dropped. */
  processed: number;
  kept: number;
  dropped: number;
  drops: DropCounts;
  /** Feature answers with no usable name: features chosen at random instead. */
  featureFallbacks: number;
  /** Feature answers with too few usable names: the rest chosen at random. */
  featureTopUps: number;
  /** Names in feature answers that are not identifiable features (dropped). */
  unknownFeatureNames: number;
  /** Generated principles that could not be parsed: the catalog's used instead (per feature). */
  principleFallbacks: number;
  /** Records that got the random feature (Concision). */
  randomFeatureAdded: number;
  /** Sampled answers that stopped at the token limit. */
  truncated: number;
  /** Policy token usage during this build. */
  usage: TokenUsage;
}

/** Callbacks of a build. */
export interface BuildHooks {
  /** Called at the start and after every batch; `done` counts skipped and processed queries. */
  onProgress?(done: number, total: number, summary: BuildSummary): void;
}

/** What a build returns: the records kept in this run (in query order) and the counters. */
export interface BuildResult {
  records: SsoRecord[];
  summary: BuildSummary;
}

/** A build stopped by an error (usually the policy's); what was finished before it is written. */
export class BuildInterruptedError extends Error {
  constructor(
    readonly summary: BuildSummary,
    cause: unknown,
  ) {
    super(`building stopped: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = "BuildInterruptedError";
  }
}

/** The request seed of one role ("features", "principle:Safety", "chosen", ...) of one query. */
export function requestSeed(seed: number, queryId: string, role: string): number {
  return hashString(`${seed}|${queryId}|${role}`);
}

/** A random stream owned by one decision of one query, independent of every other query. */
function queryRng(seed: number, queryId: string, purpose: string): Rng {
  return new Rng(`${seed}|${queryId}|${purpose}`);
}

type Resolved = Required<Omit<BuildOptions, "writer" | "dropLog">> & Pick<BuildOptions, "writer" | "dropLog">;

function resolveOptions(options: BuildOptions): Resolved {
  const resolved: Resolved = {
    catalog: DEFAULT_CATALOG,
    featureCount: 2,
    concisionRate: 0.2,
    principles: "catalog",
    temperature: 0.7,
    topP: 0.8,
    maxTokens: 1024,
    featureMaxTokens: 64,
    principleMaxTokens: 256,
    batchSize: 8,
    parallelBatches: 1,
    ...stripUndefined(options),
    seed: options.seed,
  };
  const positiveInts = [
    "featureCount",
    "maxTokens",
    "featureMaxTokens",
    "principleMaxTokens",
    "batchSize",
    "parallelBatches",
  ] as const;
  for (const key of positiveInts)
    if (!Number.isInteger(resolved[key]) || resolved[key] < 1)
      throw new RangeError(`buildRecords: ${key} must be a positive integer, got ${resolved[key]}`);
  if (!Number.isInteger(resolved.seed))
    throw new RangeError(`buildRecords: seed must be an integer, got ${resolved.seed}`);
  if (!(resolved.concisionRate >= 0 && resolved.concisionRate <= 1))
    throw new RangeError(`buildRecords: concisionRate must be in [0, 1], got ${resolved.concisionRate}`);
  return resolved;
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function emptySummary(total: number): BuildSummary {
  return {
    total,
    skipped: 0,
    processed: 0,
    kept: 0,
    dropped: 0,
    drops: emptyDropCounts(),
    featureFallbacks: 0,
    featureTopUps: 0,
    unknownFeatureNames: 0,
    principleFallbacks: 0,
    randomFeatureAdded: 0,
    truncated: 0,
    usage: { promptTokens: 0, completionTokens: 0, requests: 0 },
  };
}

/** Per-query state as it moves through the stages of a batch. */
interface QueryPlan {
  query: QueryPrompt;
  features: string[];
  featureSource: RecordMeta["featureSource"];
  randomFeatureAdded: boolean;
  generated: Record<string, PrinciplePair>;
  principleFallbacks: string[];
}

function firstText(generations: Generation[][], index: number): Generation {
  return generations[index]?.[0] ?? { text: "", finishReason: "stop" };
}

/**
 * Builds SSO records for `prompts` with `policy`. Queries the writer or drop log already has are
 * skipped, so rerunning on the same files resumes. Each finished batch is written before the next
 * one starts; if the policy fails, batches in flight are finished, and a BuildInterruptedError with
 * the counters so far is thrown (its `cause` is the original error).
 */
export async function buildRecords(
  policy: Policy,
  prompts: readonly QueryPrompt[],
  options: BuildOptions,
  hooks: BuildHooks = {},
): Promise<BuildResult> {
  const o = resolveOptions(options);
  const summary = emptySummary(prompts.length);
  const identifiable = identifiableFeatures(o.catalog);
  const k = Math.min(o.featureCount, identifiable.length);
  const seen = new Set<string>();
  const pending: QueryPrompt[] = [];
  for (const q of prompts) {
    if (seen.has(q.id) || o.writer?.has(q.id) === true || o.dropLog?.has(q.id) === true) summary.skipped++;
    else pending.push(q);
    seen.add(q.id);
  }
  const usageAtStart = policy.usage();
  const refreshUsage = (): void => {
    const now = policy.usage();
    summary.usage = {
      promptTokens: now.promptTokens - usageAtStart.promptTokens,
      completionTokens: now.completionTokens - usageAtStart.completionTokens,
      requests: now.requests - usageAtStart.requests,
    };
  };
  const progress = (): void => {
    refreshUsage();
    hooks.onProgress?.(summary.skipped + summary.processed, summary.total, {
      ...summary,
      drops: { ...summary.drops },
    });
  };
  progress();

  const keptById = new Map<string, SsoRecord>();

  const identifyFeatures = async (batch: QueryPrompt[]): Promise<QueryPlan[]> => {
    const requests: GenerateRequest[] = batch.map((q) => ({
      messages: featureIdentificationMessages(q.prompt, o.catalog, k),
      temperature: o.temperature,
      topP: o.topP,
      maxTokens: o.featureMaxTokens,
      n: 1,
      seed: requestSeed(o.seed, q.id, "features"),
    }));
    const answers = await policy.generate(requests);
    return batch.map((query, i) => {
      const parsed = parseFeatureList(firstText(answers, i).text, o.catalog, k);
      summary.unknownFeatureNames += parsed.unknown.length;
      let features = parsed.features;
      let featureSource: RecordMeta["featureSource"] = "policy";
      if (!parsed.parsed) {
        features = queryRng(o.seed, query.id, "feature-fallback").sample(identifiable, k);
        featureSource = "random";
        summary.featureFallbacks++;
      } else if (features.length < k) {
        const rest = identifiable.filter((f) => !features.includes(f));
        features = [
          ...features,
          ...queryRng(o.seed, query.id, "feature-top-up").sample(rest, k - features.length),
        ];
        featureSource = "topped-up";
        summary.featureTopUps++;
      }
      const random = o.catalog.randomFeature;
      const randomFeatureAdded =
        random !== null && queryRng(o.seed, query.id, "random-feature").chance(o.concisionRate);
      if (randomFeatureAdded && random !== null) {
        features = [...features, random];
        summary.randomFeatureAdded++;
      }
      return { query, features, featureSource, randomFeatureAdded, generated: {}, principleFallbacks: [] };
    });
  };

  const generatePrinciples = async (plans: QueryPlan[]): Promise<void> => {
    const jobs = plans.flatMap((plan) => plan.features.map((feature) => ({ plan, feature })));
    const requests: GenerateRequest[] = jobs.map(({ plan, feature }) => ({
      messages: principleGenerationMessages(plan.query.prompt, featureSpec(o.catalog, feature)),
      temperature: o.temperature,
      topP: o.topP,
      maxTokens: o.principleMaxTokens,
      n: 1,
      seed: requestSeed(o.seed, plan.query.id, `principle:${feature}`),
    }));
    const answers = await policy.generate(requests);
    jobs.forEach(({ plan, feature }, i) => {
      const pair = parsePrincipleJson(firstText(answers, i).text);
      if (pair !== null) plan.generated[feature] = pair;
      else {
        plan.principleFallbacks.push(feature);
        summary.principleFallbacks++;
      }
    });
  };

  const sampleAndFilter = async (plans: QueryPlan[]): Promise<void> => {
    const systems = plans.map((plan) => ({
      positive: buildSystemPrompt(principlesFor(o.catalog, plan.features, "good", plan.generated)),
      negative: buildSystemPrompt(principlesFor(o.catalog, plan.features, "bad", plan.generated)),
    }));
    const sample = (plan: QueryPlan, role: string, system: string | null): GenerateRequest => ({
      messages: [
        ...(system === null ? [] : [{ role: "system" as const, content: system }]),
        { role: "user" as const, content: plan.query.prompt },
      ],
      temperature: o.temperature,
      topP: o.topP,
      maxTokens: o.maxTokens,
      n: 1,
      seed: requestSeed(o.seed, plan.query.id, role),
    });
    const requests = plans.flatMap((plan, i) => [
      sample(plan, "chosen", systems[i].positive),
      sample(plan, "rejected", systems[i].negative),
      sample(plan, "raw", null),
    ]);
    const answers = await policy.generate(requests);
    plans.forEach((plan, i) => {
      const chosen = firstText(answers, 3 * i);
      const rejected = firstText(answers, 3 * i + 1);
      const raw = firstText(answers, 3 * i + 2);
      const truncated = (
        [
          ["chosen", chosen],
          ["rejected", rejected],
          ["raw", raw],
        ] as const
      )
        .filter(([, g]) => g.finishReason === "length")
        .map(([role]) => role);
      summary.truncated += truncated.length;
      const principles: PrincipleEntry[] = plan.features.map((feature) => {
        const spec = featureSpec(o.catalog, feature);
        const own = plan.generated[feature];
        return own !== undefined
          ? { feature, good: own.good, bad: own.bad, source: "generated" }
          : { feature, good: spec.goodPrinciple, bad: spec.badPrinciple, source: "catalog" };
      });
      const record: SsoRecord = {
        id: plan.query.id,
        instruction: plan.query.prompt,
        principles,
        p_system: systems[i].positive,
        n_system: systems[i].negative,
        system: "",
        chosen: chosen.text,
        rejected: rejected.text,
        raw: raw.text,
        history: [],
        meta: {
          features: plan.features,
          featureSource: plan.featureSource,
          randomFeatureAdded: plan.randomFeatureAdded,
          principleFallbacks: plan.principleFallbacks,
          seed: o.seed,
          truncated: [...truncated],
        },
      };
      const { kept, reason } = filterRecord(record);
      summary.processed++;
      if (kept !== null) {
        summary.kept++;
        keptById.set(kept.id, kept);
        o.writer?.append(kept);
      } else if (reason !== null) {
        summary.dropped++;
        summary.drops[reason]++;
        o.dropLog?.append({ id: record.id, reason });
      }
    });
  };

  const runBatch = async (batch: QueryPrompt[]): Promise<void> => {
    const plans = await identifyFeatures(batch);
    if (o.principles === "generated") await generatePrinciples(plans);
    await sampleAndFilter(plans);
    progress();
  };

  const batches: QueryPrompt[][] = [];
  for (let i = 0; i < pending.length; i += o.batchSize) batches.push(pending.slice(i, i + o.batchSize));
  let nextBatch = 0;
  let failure: { error: unknown } | null = null;
  const worker = async (): Promise<void> => {
    // After a failure, batches already in flight finish and are written; no new batch starts.
    while (failure === null && nextBatch < batches.length) {
      const batch = batches[nextBatch++];
      try {
        await runBatch(batch);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.parallelBatches, batches.length) }, worker));
  refreshUsage();
  if (failure !== null)
    throw new BuildInterruptedError({ ...summary }, (failure as { error: unknown }).error);
  const records = pending.flatMap((q) => {
    const r = keptById.get(q.id);
    return r === undefined ? [] : [r];
  });
  return { records, summary };
}
