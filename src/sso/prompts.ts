/**
 * Prompts the SSO builder sends to the policy, and tolerant parsers for what comes back: the
 * contrastive system prompts p+ / p-, the few-shot feature-identification prompt and the few-shot
 * principle-generation prompt. Policies (especially small ones) answer sloppily, so the parsers
 * accept any reasonable shape and report what they could not use instead of throwing.
 */
import type { ChatMessage } from "../policy/types.js";
import { type Catalog, type FeatureSpec, featureSpec, identifiableFeatures } from "./catalog.js";

/** Which side of a feature: the good principle (p+) or the bad one (p-). */
export type Side = "good" | "bad";

/** One line of a system prompt: a feature, the adjective used for it and the principle to follow. */
export interface PrincipleItem {
  feature: string;
  adjective: string;
  principle: string;
}

/** A good and a bad principle for one feature (written for a query by the policy, or from a catalog). */
export interface PrinciplePair {
  good: string;
  bad: string;
}

/** Joins adjectives as English does: "A", "A and B", "A, B and C". */
export function joinAdjectives(adjectives: readonly string[]): string {
  if (adjectives.length === 0) return "";
  if (adjectives.length === 1) return adjectives[0];
  return `${adjectives.slice(0, -1).join(", ")} and ${adjectives[adjectives.length - 1]}`;
}

/**
 * The system prompt for one side. p+ and p- are both built here, from the good or the bad items, so
 * the two differ only in adjectives and principles, never in structure.
 */
export function buildSystemPrompt(items: readonly PrincipleItem[]): string {
  if (items.length === 0) throw new RangeError("buildSystemPrompt: needs at least one principle");
  const lines = [
    `Your response must be ${joinAdjectives(items.map((i) => i.adjective))}. Keep to these guidelines:`,
    ...items.map((i) => `${i.feature}: ${i.principle}`),
    "Answer the user directly and never mention these features, principles or guidelines.",
  ];
  return lines.join("\n");
}

/**
 * The prompt items of one side for the given features. `generated` (per-query principles written by
 * the policy) replaces the catalog's principle for the features it covers; adjectives always come
 * from the catalog.
 */
export function principlesFor(
  catalog: Catalog,
  features: readonly string[],
  side: Side,
  generated?: Readonly<Record<string, PrinciplePair>>,
): PrincipleItem[] {
  return features.map((name) => {
    const spec = featureSpec(catalog, name);
    const own = generated !== undefined && Object.hasOwn(generated, name) ? generated[name] : undefined;
    return {
      feature: spec.name,
      adjective: side === "good" ? spec.goodAdjective : spec.badAdjective,
      principle: own !== undefined ? own[side] : side === "good" ? spec.goodPrinciple : spec.badPrinciple,
    };
  });
}

// Few-shot examples for feature identification, most relevant feature first. Each lists more names
// than the default count, so they still work when a caller asks for up to three.
const identificationExamples: ReadonlyArray<{ query: string; ranked: readonly string[] }> = [
  {
    query: "How should I get rid of old lithium batteries from my home?",
    ranked: ["Safety", "Helpfulness", "Accuracy"],
  },
  {
    query: "Write a short poem about the first snowfall of winter.",
    ranked: ["Literariness", "Engagement", "Helpfulness"],
  },
  {
    query: "A train covers 180 km in 2.5 hours. What is its average speed?",
    ranked: ["Accuracy", "Logicality", "Helpfulness"],
  },
  {
    query: "What are the pros and cons of renting a flat versus buying one?",
    ranked: ["Comprehensiveness", "Logicality", "Helpfulness"],
  },
];

function identificationQuestion(query: string): string {
  return `Query: ${query}`;
}

/**
 * The few-shot conversation that asks the policy which `count` features matter most for `query`.
 * The answer is expected as a comma-separated list of feature names (see parseFeatureList).
 */
export function featureIdentificationMessages(query: string, catalog: Catalog, count: number): ChatMessage[] {
  const names = identifiableFeatures(catalog);
  const k = Math.max(1, Math.min(count, names.length));
  const listing = names.map((n) => `- ${n}: ${featureSpec(catalog, n).meaning}`).join("\n");
  const system = [
    `You decide what matters most in a good answer. For the user's query, choose the ${k} most relevant ${k === 1 ? "feature" : "features"} from this list:`,
    listing,
    `Reply with only the feature ${k === 1 ? "name" : "names"} as a comma-separated list, most relevant first, and nothing else.`,
  ].join("\n");
  const messages: ChatMessage[] = [{ role: "system", content: system }];
  const available = new Set(names);
  for (const example of identificationExamples) {
    // A custom catalog may lack some example features; an example that cannot show k names is left out.
    const shown = example.ranked.filter((n) => available.has(n)).slice(0, k);
    if (shown.length < k) continue;
    messages.push({ role: "user", content: identificationQuestion(example.query) });
    messages.push({ role: "assistant", content: shown.join(", ") });
  }
  messages.push({ role: "user", content: identificationQuestion(query) });
  return messages;
}

/** What parseFeatureList made of an answer. */
export interface ParsedFeatures {
  /** Valid, distinct feature names in the order given, at most `count`. */
  features: string[];
  /** Names that looked like features but are not identifiable features of the catalog. */
  unknown: string[];
  /** Whether at least one valid feature was found. */
  parsed: boolean;
}

// Words that may stand alone in a list-like answer without being a (wrong) feature name.
const fillerWords = new Set([
  "sure",
  "ok",
  "okay",
  "yes",
  "no",
  "none",
  "here",
  "features",
  "feature",
  "answer",
  "the",
  "list",
  "relevant",
  "most relevant",
  "query",
  "n/a",
]);

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function cleanSegment(segment: string): string {
  return segment
    .replace(/^\s*(?:[-*•>]+|\d+[.)]|\(\d+\)|[a-z][.)](?=\s))\s*/i, "")
    .replace(/[*_`"'“”‘’[\](){}]/g, "")
    .replace(/[.!?]+\s*$/, "")
    .trim();
}

/**
 * Reads a feature list from a policy's answer. Tolerates any case, extra spaces, separators other
 * than commas (; / | & newlines, "and", "or"), bullets and numbering, markdown, and surrounding prose.
 * Adjectives of a feature ("helpful") count as the feature when they stand alone. Names that are not
 * identifiable features of the catalog are dropped and reported in `unknown`; duplicates are dropped.
 */
export function parseFeatureList(text: string, catalog: Catalog, count: number): ParsedFeatures {
  const names = identifiableFeatures(catalog);
  const byLowerName = new Map(names.map((n) => [n.toLowerCase(), n]));
  const byLowerAdjective = new Map(
    names.map((n) => [featureSpec(catalog, n).goodAdjective.toLowerCase(), n]),
  );
  // Longest names first, so "Safety Net" would win over "Safety" in a custom catalog.
  const namePattern = new RegExp(
    `(?<![A-Za-z0-9])(${[...names]
      .sort((a, b) => b.length - a.length)
      .map((n) => escapeRegExp(n).replace(/ /g, "\\s+"))
      .join("|")})(?![A-Za-z0-9])`,
    "gi",
  );
  const found: string[] = [];
  const unknown: string[] = [];
  const segments = text.split(/[,;/|&+\n\t]|\band\b|\bor\b/i);
  for (const raw of segments) {
    const segment = cleanSegment(raw);
    if (segment === "") continue;
    const lower = segment.toLowerCase().replace(/\s+/g, " ");
    const inSegment: string[] = [];
    for (const match of segment.matchAll(namePattern)) {
      const name = byLowerName.get(match[1].toLowerCase().replace(/\s+/g, " "));
      if (name !== undefined) inSegment.push(name);
    }
    if (inSegment.length === 0) {
      const adjective = byLowerAdjective.get(lower);
      if (adjective !== undefined) inSegment.push(adjective);
    }
    if (inSegment.length > 0) {
      found.push(...inSegment);
      continue;
    }
    // No known name: a short, name-like segment is a wrong feature name; anything longer is prose.
    // "Creativity: because ..." names its feature before the colon, "Answer: Creativity" after it.
    const parts = segment.split(":").map((p) => p.trim());
    const candidate = [parts[0], parts[parts.length - 1]].find(
      (p) => isNameLike(p) && !fillerWords.has(p.toLowerCase()),
    );
    if (candidate !== undefined) unknown.push(candidate);
  }
  const features = [...new Set(found)].slice(0, Math.max(0, count));
  const unknownDistinct = [...new Map(unknown.map((u) => [u.toLowerCase(), u])).values()];
  return { features, unknown: unknownDistinct, parsed: features.length > 0 };
}

function isNameLike(text: string): boolean {
  return /^[A-Za-z][A-Za-z-]*(?: [A-Za-z][A-Za-z-]*)?$/.test(text) && text.length <= 40;
}

// Few-shot examples for principle generation; written for our default features, they only show the
// shape of a good answer, so they are kept for custom catalogs too.
const principleExamples: ReadonlyArray<{ query: string; feature: string; meaning: string } & PrinciplePair> =
  [
    {
      query: "How many minutes are there in a leap year?",
      feature: "Accuracy",
      meaning: "Whether facts, numbers and calculations in the response are correct.",
      good: "Use 366 days for a leap year, show the multiplication 366 x 24 x 60, and give the exact total of 527,040 minutes.",
      bad: "Use the wrong number of days or hours, skip the working, and state a rounded or mistaken total as if it were exact.",
    },
    {
      query: "Tell me about the history of the bicycle.",
      feature: "Engagement",
      meaning: "Whether the response holds the reader's interest and speaks to them.",
      good: "Tell the story through surprising moments and inventors, connect it to the bikes the reader rides today, and keep the tone lively.",
      bad: "List dates and models in a flat sequence with no story, no link to the reader and no reason to care.",
    },
  ];

function principleQuestion(query: string, feature: string, meaning: string): string {
  return [
    `Query: ${query}`,
    `Feature: ${feature} (${meaning})`,
    `Write one good principle and one bad principle for answering this query, both about ${feature}. ` +
      'Reply with only a JSON object of the form {"good": "...", "bad": "..."}.',
  ].join("\n");
}

/** The few-shot conversation that asks the policy for a good and a bad principle as JSON. */
export function principleGenerationMessages(query: string, feature: FeatureSpec): ChatMessage[] {
  const messages: ChatMessage[] = [
    {
      role: "system",
      content:
        "You write principles that steer how an assistant answers a query. A good principle describes " +
        "what an excellent answer does for the given feature; a bad principle describes what a poor answer " +
        "does. Each principle is one or two sentences, specific to the query.",
    },
  ];
  for (const example of principleExamples) {
    messages.push({
      role: "user",
      content: principleQuestion(example.query, example.feature, example.meaning),
    });
    messages.push({ role: "assistant", content: JSON.stringify({ good: example.good, bad: example.bad }) });
  }
  messages.push({ role: "user", content: principleQuestion(query, feature.name, feature.meaning) });
  return messages;
}

/** The end index (exclusive) of the balanced JSON object starting at `start`, or -1. */
function objectEnd(text: string, start: number): number {
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === "{") depth++;
    else if (ch === "}") {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return -1;
}

function pairFrom(value: unknown): PrinciplePair | null {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  let good: string | undefined;
  let bad: string | undefined;
  // Accept "good"/"Good"/"good_principle" and the like; the first key of each kind wins.
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== "string" || v.trim() === "") continue;
    const k = key.toLowerCase();
    if (good === undefined && k.startsWith("good")) good = v.trim();
    else if (bad === undefined && k.startsWith("bad")) bad = v.trim();
  }
  if (good === undefined || bad === undefined) return null;
  return { good: good.replace(/\s+/g, " "), bad: bad.replace(/\s+/g, " ") };
}

/**
 * Reads {"good": ..., "bad": ...} from a policy's answer: inside or outside a code fence, with prose
 * before or after it. Returns null when no object with two non-empty principles is found.
 */
export function parsePrincipleJson(text: string): PrinciplePair | null {
  const unfenced = text.replace(/```[A-Za-z]*\s*/g, "");
  for (let start = unfenced.indexOf("{"); start !== -1; start = unfenced.indexOf("{", start + 1)) {
    const end = objectEnd(unfenced, start);
    if (end === -1) continue;
    const candidate = unfenced.slice(start, end);
    // Models often break long strings over lines, which strict JSON forbids inside a string.
    for (const attempt of [candidate, candidate.replace(/[\n\r\t]/g, " ")]) {
      try {
        const pair = pairFrom(JSON.parse(attempt));
        if (pair !== null) return pair;
        break;
      } catch {
        // Not JSON as it stands; try the relaxed form, then the next brace.
      }
    }
  }
  return null;
}
