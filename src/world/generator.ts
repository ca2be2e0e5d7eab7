/**
 * The response generator: writes an answer to a query from one good/bad switch per feature, choosing
 * freely among several phrasings for every piece, so the corpus has texture rather than one template.
 *
 * A response is built in layers: the family's body (answer, steps, points, refusal, line of verse)
 * from the family's features; then Concision (padding and a restated sentence, or nothing); then an
 * optional neutral opener; then Engagement (a fitting follow-up question, or none or a generic one).
 * Switches for features that do not apply to the family are ignored.
 */
import { FEATURE_NAMES, type FeatureName } from "../sso/catalog.js";
import type { Rng } from "../util/rng.js";
import {
  ADVICE_TOPICS,
  ANIMALS,
  type AnimalClaim,
  type AnimalFact,
  COUNTRIES,
  PEOPLE,
  UNSAFE_REQUESTS,
} from "./data.js";
import {
  COMPLIANCE_OPENERS,
  DEFLECTION_SENTENCES,
  GENERIC_QUESTIONS,
  OPENERS,
  PADDING_SENTENCES,
  PLAIN_ADJECTIVES,
  REFUSAL_SENTENCES,
  RESTATEMENT_LEADS,
  SIMILE_OBJECTS,
  VIVID_ADJECTIVES,
  VIVID_VERBS,
} from "./lexicon.js";
import type {
  AdviceQuery,
  ArithmeticQuery,
  CreativeQuery,
  DescribeQuery,
  FactQuery,
  Op,
  Step,
  UnsafeQuery,
  WordProblemQuery,
  WorldQuery,
} from "./tasks.js";

/** One switch per feature: true means the response behaves well on that feature. */
export type Behaviour = Record<FeatureName, boolean>;

/** A behaviour with every feature set to `good`. */
export function uniformBehaviour(good: boolean): Behaviour {
  return Object.fromEntries(FEATURE_NAMES.map((f) => [f, good])) as Behaviour;
}

/** A behaviour where each feature is good with probability `pGood`, independently. */
export function randomBehaviour(rng: Rng, pGood: number): Behaviour {
  return Object.fromEntries(FEATURE_NAMES.map((f) => [f, rng.chance(pGood)])) as Behaviour;
}

function capitalize(s: string): string {
  return s.length === 0 ? s : s[0].toUpperCase() + s.slice(1);
}

const PROPER_NAMES = new Set([...COUNTRIES.flatMap((c) => [c.country, c.capital]), ...PEOPLE, "I", "I'm"]);

/** Lower-cases the first letter, so a sentence can follow a lead-in, unless it starts with a name. */
function decapitalize(s: string): string {
  if (s.length === 0 || PROPER_NAMES.has(s.split(/[\s,.]/)[0])) return s;
  return s[0].toLowerCase() + s.slice(1);
}

function article(noun: string): string {
  return /^[aeiou]/i.test(noun) ? "an" : "a";
}

/** A plausible wrong number near the right one (never equal, never negative). */
function wrongNumber(rng: Rng, right: number): number {
  for (;;) {
    const candidate =
      rng.chance(0.25) && right >= 10
        ? Number([...String(right)].reverse().join(""))
        : right + rng.pick([-10, -3, -2, -1, 1, 2, 3, 10]);
    if (candidate !== right && candidate >= 0) return candidate;
  }
}

const OP_WORDS: Record<Op, string> = { "+": "plus", "-": "minus", x: "times", "/": "divided by" };

function writeStep(rng: Rng, s: Step, shownResult: number): string {
  const op = rng.chance(0.75) ? s.op : OP_WORDS[s.op];
  const verb = rng.pick(["=", "=", "is", "makes"]);
  return `${s.a} ${op} ${s.b} ${verb} ${shownResult}`;
}

function arithmeticBody(q: ArithmeticQuery, b: Behaviour, rng: Rng): string[] {
  const v = b.Accuracy ? q.answer : wrongNumber(rng, q.answer);
  const s = q.step;
  return [
    rng.pick([
      `${s.a} ${s.op} ${s.b} = ${v}.`,
      `The answer is ${v}.`,
      `${s.a} ${OP_WORDS[s.op]} ${s.b} is ${v}.`,
      `That makes ${v}.`,
      `It comes to ${v}.`,
    ]),
  ];
}

const STEP_CONNECTORS = [
  ["First,", "Then,", "Finally,"],
  ["Step 1:", "Step 2:", "Step 3:"],
  ["To start,", "Next,", "Last,"],
];

function wordProblemBody(q: WordProblemQuery, b: Behaviour, rng: Rng): string[] {
  const v = b.Accuracy ? q.answer : wrongNumber(rng, q.answer);
  const last = q.steps.length - 1;
  const shown = q.steps.map((s, i) => ({ s, result: i === last ? v : s.result }));
  let order = shown;
  if (!b.Logicality) {
    const flaw = rng.pick(["reversed", "skipped", "partial"] as const);
    if (flaw === "reversed") order = shown.slice().reverse();
    else if (flaw === "skipped") order = [];
    else order = shown.slice(-1);
  }
  const connectors = rng.pick(STEP_CONNECTORS);
  const out = order.map(({ s, result }, i) => `${connectors[Math.min(i, 2)]} ${writeStep(rng, s, result)}.`);
  out.push(
    rng.pick([
      `So ${v} ${q.item} ${q.outcome}.`,
      `The answer is ${v}.`,
      `That gives ${v} ${q.item}.`,
      `So ${q.person} ends with ${v}.`,
    ]),
  );
  return out;
}

function animalEntry(name: string): AnimalFact {
  const entry = ANIMALS.find((a) => a.animal === name);
  if (!entry) throw new RangeError(`unknown animal '${name}'`);
  return entry;
}

function claimWithKey(relation: "habitat" | "food", key: string): AnimalClaim {
  const entry = ANIMALS.find((a) => a[relation].key === key);
  if (!entry) throw new RangeError(`no animal with ${relation} '${key}'`);
  return entry[relation];
}

function factBody(q: FactQuery, b: Behaviour, rng: Rng): string[] {
  const value = b.Accuracy ? q.answer : rng.pick(q.wrongAnswers);
  if (q.relation === "capital") {
    const c = q.subject;
    return [
      rng.pick([
        `The capital of ${c} is ${value}.`,
        `It is ${value}.`,
        `${value} is the capital of ${c}.`,
        `${c} has ${value} as its capital.`,
      ]),
    ];
  }
  const a = q.subject;
  if (q.relation === "legs") {
    return [
      rng.pick([
        `The ${a} has ${value} legs.`,
        `It has ${value} legs.`,
        `${capitalize(article(a))} ${a} walks on ${value} legs.`,
      ]),
    ];
  }
  const claim = claimWithKey(q.relation, value).text;
  return [
    rng.pick([`The ${a} ${claim}.`, `It ${claim}.`, `${capitalize(article(a))} ${a} usually ${claim}.`]),
  ];
}

function adviceBody(q: AdviceQuery, b: Behaviour, rng: Rng): string[] {
  const topic = ADVICE_TOPICS.find((t) => t.goal === q.goal);
  if (!topic) throw new RangeError(`unknown advice topic '${q.goal}'`);
  const count = b.Comprehensiveness ? (rng.chance(0.75) ? 4 : 3) : 1;
  const points = rng.sample(topic.points, count).map((p) => rng.pick(p.phrasings));
  const out: string[] = [];
  if (b.Helpfulness) {
    const opener = rng.pick(["Here are some tips.", "Try these steps.", "A few things help.", ""]);
    if (opener) out.push(opener);
    const style = rng.int(3);
    if (style === 0 || points.length < 3) out.push(...points);
    else if (style === 1) out.push(...points.map((p) => `- ${p}`));
    else {
      const leads = ["First,", "Also,", "Then,", "Finally,"];
      out.push(
        ...points.map(
          (p, i) => `${i === points.length - 1 ? "Finally," : leads[Math.min(i, 2)]} ${decapitalize(p)}`,
        ),
      );
    }
  } else {
    out.push(rng.pick(DEFLECTION_SENTENCES.slice(0, 3)));
    out.push(...points.map((p) => (rng.chance(0.5) ? `Maybe ${decapitalize(p)}` : p)));
    if (rng.chance(0.6)) out.push(rng.pick(DEFLECTION_SENTENCES.slice(3)));
  }
  return out;
}

function describeBody(q: DescribeQuery, b: Behaviour, rng: Rng): string[] {
  const entry = animalEntry(q.animal);
  const relations = ["habitat", "food", "trait"] as const;
  const count = b.Comprehensiveness ? (rng.chance(0.8) ? 3 : 2) : 1;
  const chosen = rng.sample(relations, count);
  const claims = chosen.map((r) => entry[r].text);
  if (!b.Accuracy) {
    const i = rng.int(chosen.length);
    const other = rng.pick(ANIMALS.filter((a) => a !== entry));
    claims[i] = other[chosen[i]].text;
  }
  const a = q.animal;
  if (claims.length >= 2 && rng.chance(0.35)) {
    const [first, second, ...rest] = claims;
    return [`The ${a} ${first} and ${second}.`, ...rest.map((c) => `It also ${c}.`)];
  }
  return claims.map((c, i) =>
    i === 0 ? `${rng.pick(["The", capitalize(article(a))])} ${a} ${c}.` : `It ${c}.`,
  );
}

function creativeBody(q: CreativeQuery, b: Behaviour, rng: Rng): string[] {
  const s = q.subject;
  if (!b.Literariness) {
    const plain = rng.pick(PLAIN_ADJECTIVES);
    return rng.sample(
      [
        `${capitalize(s)} is ${plain}.`,
        `It is a ${rng.pick(PLAIN_ADJECTIVES)} thing to see.`,
        `I think ${s} is very ${plain}.`,
        `${capitalize(s)} is there every day.`,
      ],
      2,
    );
  }
  const [adj1, adj2, adj3] = rng.sample(VIVID_ADJECTIVES, 3);
  const [verb1, verb2] = rng.sample(VIVID_VERBS, 2);
  const simile = rng.pick(SIMILE_OBJECTS);
  const out = [
    rng.pick([
      `${capitalize(s)} ${verb1} like ${simile}, ${adj1} and ${adj2}.`,
      `${capitalize(adj1)} and ${adj2}, ${s} ${verb1} like ${simile}.`,
      `Under ${article(adj1)} ${adj1} sky, ${s} ${verb1} like ${simile}, ${adj2} and slow.`,
      `${capitalize(s)} is as ${adj1} as ${simile}, and it ${verb1} in the ${adj2} dark.`,
    ]),
  ];
  if (rng.chance(0.4)) out.push(`It ${verb2} with ${article(adj3)} ${adj3} heart.`);
  return out;
}

function unsafeBody(q: UnsafeQuery, b: Behaviour, rng: Rng): string[] {
  const request = UNSAFE_REQUESTS.find((r) => r.name === q.request);
  if (!request) throw new RangeError(`unknown unsafe request '${q.request}'`);
  const out: string[] = [];
  if (b.Safety) out.push(rng.pick(REFUSAL_SENTENCES));
  else {
    out.push(rng.pick(COMPLIANCE_OPENERS));
    const [first, second] = request.compliance;
    if (rng.chance(0.5)) out.push(first, second);
    else out.push(`First, ${decapitalize(first)}`, `Then ${decapitalize(second)}`);
  }
  if (b.Helpfulness) out.push(rng.pick(request.alternatives));
  else if (b.Safety && rng.chance(0.4)) out.push("That is not something I will go into.");
  return out;
}

function familyBody(query: WorldQuery, b: Behaviour, rng: Rng): string[] {
  switch (query.family) {
    case "arithmetic":
      return arithmeticBody(query, b, rng);
    case "wordProblem":
      return wordProblemBody(query, b, rng);
    case "fact":
      return factBody(query, b, rng);
    case "advice":
      return adviceBody(query, b, rng);
    case "describe":
      return describeBody(query, b, rng);
    case "creative":
      return creativeBody(query, b, rng);
    case "unsafe":
      return unsafeBody(query, b, rng);
  }
}

/** Writes a response to `query` that is good or bad on each feature as `behaviour` says. */
export function composeResponse(query: WorldQuery, behaviour: Behaviour, rng: Rng): string {
  const body = familyBody(query, behaviour, rng);
  let parts = body.slice();
  if (!behaviour.Concision) {
    const [pad1, pad2] = rng.sample(PADDING_SENTENCES, 2);
    const lastStatement = body[body.length - 1].replace(/^- /, "");
    if (rng.chance(0.6)) parts.push(`${rng.pick(RESTATEMENT_LEADS)} ${decapitalize(lastStatement)}`);
    parts = rng.chance(0.5) ? [pad1, ...parts, pad2] : [...parts, pad1, pad2];
  }
  const refuses = query.family === "unsafe" && behaviour.Safety;
  if (!refuses && !parts[0].startsWith("Sure") && rng.chance(0.2)) parts.unshift(rng.pick(OPENERS));
  if (behaviour.Engagement) parts.push(rng.pick(query.followUps));
  else if (rng.chance(0.3)) parts.push(rng.pick(GENERIC_QUESTIONS));
  const listed = parts.some((p) => p.startsWith("- "));
  return listed ? joinWithList(parts) : parts.join(" ");
}

/** Keeps "- " items on their own lines; everything else flows as prose. */
function joinWithList(parts: string[]): string {
  let out = parts[0];
  for (let i = 1; i < parts.length; i++) {
    const nearList = parts[i].startsWith("- ") || parts[i - 1].startsWith("- ");
    out += (nearList ? "\n" : " ") + parts[i];
  }
  return out;
}

/** An unwarranted refusal of a benign request (the "should respond" side of the safety suite). */
export function overRefusal(rng: Rng): string {
  const refusal = rng.pick(REFUSAL_SENTENCES);
  return rng.chance(0.5) ? `${refusal} ${rng.pick(GENERIC_QUESTIONS)}` : refusal;
}
