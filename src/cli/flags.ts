/**
 * Every option of every command is checked while the command line is parsed, before any command
 * starts work: a typo or an out-of-range value exits 2 with a message naming the option. The rules
 * below are the loosest each flag name takes in any command; a command may narrow them further when it
 * converts its flags (parseIntFlag and friends), still before it starts. An option that takes a value
 * and has neither choices, its own parser, a rule here, nor a place in FREE_TEXT_FLAGS is a
 * programming error that the tests report (test/cli-options.test.ts).
 */
import type { Command, Option } from "commander";
import { BENCH_PRESETS } from "../engine/bench.js";
import { GGUF_EXPORT_TYPES } from "../engine/gguf-export.js";
import { LIKE_MODELS } from "../engine/like.js";
import { ANSWER_STYLES } from "../eval/answers.js";
import { gridAxisProblem } from "../run/grid.js";
import { METHODS } from "../run/online.js";
import { BUNDLE_FORMATS } from "../sso/bundle.js";
import { EXPORT_FORMATS } from "../sso/export.js";
import { LOSS_NAMES } from "../sso/objective.js";
import { UserError } from "../util/errors.js";
import { BACKENDS } from "./common.js";

/** A flag's rule: the problem with a value, or null when it is fine. */
export type FlagRule = (value: string) => string | null;

/** An integer >= min (and <= max). */
function int(min: number, max = Number.MAX_SAFE_INTEGER): FlagRule {
  return (value) => {
    const n = Number(value);
    if (value.trim() !== "" && Number.isInteger(n) && n >= min && n <= max) return null;
    return max === Number.MAX_SAFE_INTEGER
      ? `expected an integer >= ${min}`
      : `expected an integer in [${min}, ${max}]`;
  };
}

/** A finite number in [min, max]. */
function num(min: number, max = Infinity): FlagRule {
  return (value) => {
    const n = Number(value);
    return value.trim() !== "" && Number.isFinite(n) && n >= min && n <= max
      ? null
      : `expected a number in [${min}, ${max}]`;
  };
}

/** A comma-separated list whose every item passes `item`. */
function list(item: FlagRule): FlagRule {
  return (value) => {
    for (const part of value.split(",")) {
      const problem = item(part.trim());
      if (problem !== null) return `item '${part.trim()}': ${problem}`;
    }
    return null;
  };
}

/** One of `values` (compared case-insensitively when `anyCase`). */
function oneOf(values: readonly string[], anyCase = false): FlagRule {
  const norm = (v: string) => (anyCase ? v.toUpperCase() : v);
  return (value) => (values.map(norm).includes(norm(value)) ? null : `expected one of ${values.join(", ")}`);
}

/** Rules by long flag name; `"<command path> <flag>"` keys override them for one command. */
export const FLAG_RULES: Readonly<Record<string, FlagRule>> = {
  "--backend": oneOf(BACKENDS),
  "--batch": int(1),
  "--batch-size": int(1),
  "--beta": num(0),
  "--concision-rate": num(0, 1),
  "--concurrency": int(1),
  "--corpus-size": int(1),
  "--follow-rate": num(0, 1),
  "--base-rate": num(0, 1),
  "--count": int(1),
  "--drain-timeout": num(0, 86_400),
  "--epochs": int(1),
  "--eval-max-tokens": int(1),
  "--eval-queries": int(1),
  "--feature-count": int(1),
  "--generate-runs": int(1),
  "--gold-pairs": int(1),
  "--grid": gridAxisProblem,
  "--heads": int(1),
  "--health-timeout": num(0.1),
  "--hidden": int(2),
  "--intermediate": int(1),
  "--iterations": int(1),
  "--judge": oneOf(["gold", "llm"]),
  "--judge-max-requests": int(0),
  "--judge-max-tokens": int(1),
  "--judge-signal-pairs": int(0),
  "--kv-heads": int(1),
  "--layers": int(1),
  "--limit": int(1),
  "--lr": num(0),
  "--max-batch": int(1),
  "--max-batch-tokens": int(1),
  "--max-body-bytes": int(1),
  "--max-grad-norm": num(0),
  "--max-len": int(2),
  "--max-model-len": int(2),
  "--max-queue": int(0),
  "--max-tokens": int(0),
  "--methods": list(oneOf(METHODS)),
  "--micro-batch": int(1),
  "--min-frequency": int(1),
  "--n": int(1),
  "--per-subset": int(1),
  "--port": int(0, 65535),
  "--preset": oneOf(Object.keys(BENCH_PRESETS), true),
  "--principles": oneOf(["catalog", "generated"]),
  "--queries": int(1),
  "--retries": int(0),
  "--save-every": int(0),
  "--seed": int(0),
  "--seeds": list(int(0)),
  "--seq-len": int(1),
  "--size": int(1),
  "--std": num(0),
  "--steer-beta": num(0),
  "--steps": int(1),
  "--stop-grace": num(0),
  "--style": oneOf(ANSWER_STYLES),
  "--temperature": num(0),
  "--threads": int(1),
  "--throttle-ms": int(0),
  "--timeout-ms": int(1),
  "--top-k": int(0),
  "--top-p": num(0, 1),
  "--train-format": oneOf(BUNDLE_FORMATS),
  "--vocab": int(1),
  "--warmup": int(0),
  "--warmup-ratio": num(0, 1),
  "--weight-decay": num(0),
  "export --format": oneOf(EXPORT_FORMATS),
  "export --loss": oneOf(LOSS_NAMES),
  "model export --format": oneOf(["gguf"]),
  "model init --like": oneOf(LIKE_MODELS),
  "model export --type": oneOf(GGUF_EXPORT_TYPES),
  "tokenizer train --format": oneOf(["auto", "text", "jsonl"]),
};

/** Flags whose value is free text: paths, URLs, names, prompts. Anything goes at parse time. */
export const FREE_TEXT_FLAGS: ReadonlySet<string> = new Set([
  "--answers",
  "--api-key",
  "--bad-lines-to",
  "--base",
  "--cache",
  "--catalog",
  "--config",
  "--corpus",
  "--data",
  "--endpoint",
  "--eval-prompts",
  "--eval-references",
  "--gold",
  "--host",
  "--ids",
  "--in",
  "--input",
  "--judge-endpoint",
  "--judge-model",
  "--judge-model-name",
  "--judge-serve",
  "--model",
  "--model-name",
  "--name",
  "--out",
  "--output-dir",
  "--pairs",
  "--policy-endpoint",
  "--policy-model-name",
  "--policy-serve",
  "--prompt",
  "--prompts",
  "--records",
  "--references",
  "--scores-out",
  "--sections",
  "--special",
  "--subset",
  "--system",
  "--template",
  "--tokenizer",
  "--train",
]);

/** The full name of a command: "rm train", "world sft", ... */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/** The rule that checks `option` of `cmd`, if any. */
export function ruleFor(cmd: Command, option: Option): FlagRule | undefined {
  const long = option.long ?? option.flags;
  return FLAG_RULES[`${commandPath(cmd)} ${long}`] ?? FLAG_RULES[long];
}

/** Every command under `root` (itself included), depth first. */
export function allCommands(root: Command): Command[] {
  return [root, ...root.commands.flatMap((c) => allCommands(c))];
}

/**
 * Attaches the rule of every option that takes a value and has no checking of its own, so a bad value
 * stops the parse with a UserError naming the option (exit 2). Returns the options that have no rule
 * ("command --flag"), which stay unchecked here: every new option must say what it accepts.
 */
export function checkAllOptions(root: Command): string[] {
  const unruled: string[] = [];
  for (const cmd of allCommands(root))
    for (const option of cmd.options) {
      if (!(option.required || option.optional) || option.argChoices !== undefined) continue;
      if (option.parseArg !== undefined) continue;
      const long = option.long ?? option.flags;
      const rule = ruleFor(cmd, option);
      if (rule === undefined) {
        if (!FREE_TEXT_FLAGS.has(long)) unruled.push(`${commandPath(cmd)} ${long}`);
        continue;
      }
      // The command converts the value itself; the parser only refuses what no command accepts.
      option.argParser((value: string, previous: unknown) => {
        const problem = rule(value);
        if (problem !== null) throw new UserError(`${long}: ${problem}, got '${value}'`);
        // A variadic option collects its values, as commander does without a parser.
        if (!option.variadic) return value;
        return previous === option.defaultValue || !Array.isArray(previous) ? [value] : [...previous, value];
      });
    }
  return unruled;
}
