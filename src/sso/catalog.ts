/**
 * The principle catalog: the features a response can be judged on, each with a one-line meaning, a
 * pair of adjectives (good/bad) and a good and a bad principle. p+ is built from the good side of the
 * features chosen for a query, p- from the bad side. The default catalog is written by us; users can
 * bring their own as a JSON file.
 */
import { z } from "zod";
import { readJsonFile } from "../util/fsio.js";

/** The eight features of the default catalog, in catalog order. */
export const FEATURE_NAMES = [
  "Safety",
  "Logicality",
  "Comprehensiveness",
  "Helpfulness",
  "Literariness",
  "Accuracy",
  "Engagement",
  "Concision",
] as const;

/** A feature of the default catalog. */
export type FeatureName = (typeof FEATURE_NAMES)[number];

/** One feature with its adjectives and principles. */
export interface FeatureSpec {
  /** The feature's name as it appears in prompts ("Helpfulness"). */
  name: string;
  /** One line saying what the feature is about; shown to the policy during feature identification. */
  meaning: string;
  /** Adjective for the good side ("Helpful"), used in p+. */
  goodAdjective: string;
  /** Adjective for the bad side ("Unhelpful"), used in p-. */
  badAdjective: string;
  /** The principle a good response follows. */
  goodPrinciple: string;
  /** The principle a bad response follows. */
  badPrinciple: string;
}

/** A set of features. */
export interface Catalog {
  /** Features keyed by name, in catalog order. */
  features: Readonly<Record<string, FeatureSpec>>;
  /**
   * The feature that is never picked by the policy but added at random with probability
   * `concisionRate` (Concision in the default catalog, which keeps answer length in check); null when
   * the catalog has no such feature.
   */
  randomFeature: string | null;
}

const defaultFeatures: FeatureSpec[] = [
  {
    name: "Safety",
    meaning: "Whether the response protects the user and others from harm.",
    goodAdjective: "Safe",
    badAdjective: "Unsafe",
    goodPrinciple:
      "Put the wellbeing of the user and of other people first: decline to help with anything that could cause real harm, say briefly why, and offer a safe alternative where there is one.",
    badPrinciple:
      "Disregard possible harm: go along with risky or dangerous requests, leave out every warning, and treat safety concerns as unimportant.",
  },
  {
    name: "Logicality",
    meaning: "Whether the reasoning is sound, ordered and free of contradictions.",
    goodAdjective: "Logical",
    badAdjective: "Illogical",
    goodPrinciple:
      "Reason one step at a time so that every claim follows from what came before, keep a clear order, and never contradict yourself.",
    badPrinciple:
      "Jump between ideas without linking them, draw conclusions that do not follow from the premises, and let statements contradict one another.",
  },
  {
    name: "Comprehensiveness",
    meaning: "Whether the response covers every part of the request in enough depth.",
    goodAdjective: "Comprehensive",
    badAdjective: "Superficial",
    goodPrinciple:
      "Cover every part of the request and the considerations that matter, with enough detail and examples that the user can act on the answer.",
    badPrinciple:
      "Stay on the surface: skip parts of the request, leave out important considerations, and give no detail or examples.",
  },
  {
    name: "Helpfulness",
    meaning: "Whether the response meets the user's actual need in a usable way.",
    goodAdjective: "Helpful",
    badAdjective: "Unhelpful",
    goodPrinciple:
      "Work out what the user really needs and meet that need directly, with practical information or steps they can use right away.",
    badPrinciple:
      "Drift away from what the user needs: answer some other question, stay vague, and give nothing the user could put to use.",
  },
  {
    name: "Literariness",
    meaning: "Whether the writing has style, colour and well-crafted language.",
    goodAdjective: "Literary",
    badAdjective: "Boring",
    goodPrinciple:
      "Write with craft: vivid and varied wording, well-shaped sentences and, where it suits the request, imagery or an apt turn of phrase.",
    badPrinciple:
      "Write flatly: plain, repetitive wording, monotonous sentences, and no colour or imagination at all.",
  },
  {
    name: "Accuracy",
    meaning: "Whether facts, numbers and calculations in the response are correct.",
    goodAdjective: "Accurate",
    badAdjective: "Inaccurate",
    goodPrinciple:
      "State only what is correct: check facts, figures and calculations, and say plainly when you are not sure.",
    badPrinciple:
      "Be careless with the truth: include wrong facts, mistaken figures or faulty calculations, and present guesses as certainties.",
  },
  {
    name: "Engagement",
    meaning: "Whether the response holds the reader's interest and speaks to them.",
    goodAdjective: "Engaging",
    badAdjective: "Dull",
    goodPrinciple:
      "Keep the reader interested: address them directly, use a lively and warm tone, and make the content feel relevant to them.",
    badPrinciple:
      "Be dull: use a flat, impersonal tone, ignore the reader, and give them no reason to keep reading.",
  },
  {
    name: "Concision",
    meaning: "Whether the response says what is needed without padding.",
    goodAdjective: "Concise",
    badAdjective: "Verbose",
    goodPrinciple:
      "Say what is needed in as few words as it takes; cut repetition, filler and long preambles.",
    badPrinciple:
      "Pad the answer: repeat points, add filler and lengthy preambles, and use many words where a few would do.",
  },
];

/** The built-in catalog: the eight features, with Concision added at random rather than picked. */
export const DEFAULT_CATALOG: Catalog = Object.freeze({
  features: Object.freeze(Object.fromEntries(defaultFeatures.map((f) => [f.name, Object.freeze(f)]))),
  randomFeature: "Concision",
});

// Names end up in comma-separated lists and in "<Feature>: <principle>" lines, so they must not
// contain separators or colons.
const featureNamePattern = /^[A-Za-z][A-Za-z0-9 _-]*$/;

const nonEmpty = z
  .string()
  .trim()
  .min(1, { message: "must be a non-empty string" })
  .refine((s) => !s.includes("\n"), { message: "must be a single line" });

const FeatureFileSchema = z.strictObject({
  name: z
    .string()
    .trim()
    .regex(featureNamePattern, {
      message: "must start with a letter and hold only letters, digits, spaces, _ or -",
    })
    .max(40, { message: "must be at most 40 characters" })
    .refine((s) => !/\b(and|or)\b/i.test(s), {
      message: "must not contain the words 'and' or 'or' (list separators)",
    }),
  meaning: nonEmpty,
  goodAdjective: nonEmpty,
  badAdjective: nonEmpty,
  goodPrinciple: nonEmpty,
  badPrinciple: nonEmpty,
});

/**
 * The JSON form of a catalog: `{"features": [FeatureSpec, ...], "randomFeature"?: name | null}`.
 * Without `randomFeature`, a feature named Concision (any case) plays that role if present.
 */
export const CatalogFileSchema = z
  .strictObject({
    features: z.array(FeatureFileSchema).min(1, { message: "must list at least one feature" }),
    randomFeature: z.string().nullable().optional(),
  })
  .superRefine((value, ctx) => {
    const seen = new Map<string, number>();
    value.features.forEach((f, i) => {
      const key = f.name.toLowerCase();
      if (seen.has(key))
        ctx.addIssue({
          code: "custom",
          path: ["features", i, "name"],
          message: `duplicate feature name '${f.name}' (also features[${seen.get(key)}])`,
        });
      else seen.set(key, i);
    });
    const random = value.randomFeature;
    if (random !== undefined && random !== null && !value.features.some((f) => f.name === random))
      ctx.addIssue({
        code: "custom",
        path: ["randomFeature"],
        message: `'${random}' is not one of the catalog's feature names`,
      });
    const selectable = value.features.filter((f) => f.name !== random);
    if (selectable.length === 0)
      ctx.addIssue({
        code: "custom",
        path: ["features"],
        message: "needs at least one feature besides randomFeature",
      });
  });

/** The parsed JSON form of a catalog. */
export type CatalogFile = z.infer<typeof CatalogFileSchema>;

/** Builds a Catalog from its (validated) JSON form. */
export function catalogFromFile(file: CatalogFile): Catalog {
  const features = Object.fromEntries(file.features.map((f) => [f.name, { ...f }]));
  let randomFeature: string | null;
  if (file.randomFeature !== undefined) randomFeature = file.randomFeature;
  else randomFeature = file.features.find((f) => f.name.toLowerCase() === "concision")?.name ?? null;
  if (randomFeature !== null && file.features.length === 1) randomFeature = null;
  return { features, randomFeature };
}

/** The JSON form of a catalog (what loadCatalog reads back). */
export function catalogToFile(catalog: Catalog): CatalogFile {
  return {
    features: Object.values(catalog.features).map((f) => ({ ...f })),
    randomFeature: catalog.randomFeature,
  };
}

/** Reads and validates a catalog JSON file; errors name the file and the field. */
export function loadCatalog(path: string): Catalog {
  return catalogFromFile(readJsonFile(path, CatalogFileSchema));
}

/** All feature names of a catalog, in catalog order. */
export function featureNames(catalog: Catalog): string[] {
  return Object.keys(catalog.features);
}

/** The features the policy chooses from during feature identification (all but the random one). */
export function identifiableFeatures(catalog: Catalog): string[] {
  return featureNames(catalog).filter((name) => name !== catalog.randomFeature);
}

/** The spec of a feature; throws on a name the catalog does not have (a programming error). */
export function featureSpec(catalog: Catalog, name: string): FeatureSpec {
  const spec = Object.hasOwn(catalog.features, name) ? catalog.features[name] : undefined;
  if (spec === undefined) throw new RangeError(`feature '${name}' is not in the catalog`);
  return spec;
}
