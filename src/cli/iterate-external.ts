import { resolve } from "node:path";
import type { Command } from "commander";
import { type ExternalConfig, type ExternalReport, readEvalPrompts, runExternal } from "../run/external.js";
import { shellQuote } from "../run/external-process.js";
import { BUNDLE_FORMATS, type BundleFormat } from "../sso/bundle.js";
import type { LossName } from "../sso/objective.js";
import { readPrompts } from "../sso/records.js";
import { UserError } from "../util/errors.js";
import { parseIntFlag, parseNumberFlag } from "./common.js";
import { checkOutputs } from "./output.js";

/** The policy server started per iteration when neither --policy-serve nor --policy-endpoint is given. */
export const DEFAULT_POLICY_SERVE = "{selfsteer} serve --model {model} --port {port} --seed {seed}";
/** The trainer run per iteration when --train is not given: selfsteer's own SSO trainer. */
export const DEFAULT_TRAIN =
  "{selfsteer} train --model {model} --data {data} --out {output} --sso --loss {loss} --beta {beta} --lr {lr} --epochs {epochs} --seed {seed}";

/** The flags that switch `iterate` to external components; they need --prompts. */
const EXTERNAL_ONLY = [
  "policyServe",
  "policyEndpoint",
  "train",
  "evalPrompts",
  "judge",
  "judgeServe",
  "judgeEndpoint",
] as const;

/** Adds the external-component flags to `iterate`. */
export function addExternalFlags(cmd: Command): Command {
  return cmd
    .option(
      "--prompts <file>",
      "external mode: training queries JSONL ({id?, prompt}), --queries fresh ones per iteration",
    )
    .option(
      "--policy-serve <template>",
      `command serving the policy per iteration (default: ${DEFAULT_POLICY_SERVE})`,
    )
    .option("--policy-endpoint <url>", "a running OpenAI-compatible server instead of --policy-serve")
    .option(
      "--policy-model-name <name>",
      "model name sent to the policy server (default: the first it lists)",
    )
    .option("--train <template>", `training command per iteration (default: ${DEFAULT_TRAIN})`)
    .option("--train-format <name>", `records the trainer reads: ${BUNDLE_FORMATS.join(", ")}`, "records")
    .option("--template <name>", "LlamaFactory chat template written into train_sso.yaml", "default")
    .option(
      "--eval-prompts <file>",
      "evaluation prompts JSONL ({id?, prompt, answer?}); GSM8K/MATH files work",
    )
    .option(
      "--eval-references <file>",
      "reference answers for the win rate (default: the base model's answers)",
    )
    .option("--eval-max-tokens <n>", "token limit of evaluation answers (default: --max-tokens)")
    .option(
      "--judge <kind>",
      "gold (the world's judge, world prompts) or llm (default: llm when a judge is given)",
    )
    .option("--judge-serve <template>", "command serving the LLM judge ({model}, {port}, {selfsteer})")
    .option("--judge-model <path>", "the judge model for {model} in --judge-serve")
    .option("--judge-endpoint <url>", "a running judge server instead of --judge-serve")
    .option("--judge-model-name <name>", "judge model name sent in requests (default: the first it lists)")
    .option("--judge-max-requests <n>", "most new judge requests in this run; the rest are reported missing")
    .option("--judge-max-tokens <n>", "token limit of one judgment", "512")
    .option(
      "--judge-signal-pairs <n>",
      "SSO pairs per iteration whose signal accuracy the LLM judge checks",
      "32",
    )
    .option("--feature-count <n>", "external: features the policy picks per query", "2")
    .option("--concision-rate <p>", "external: probability of adding Concision", "0.2")
    .option("--principles <source>", "external: catalog | generated", "catalog")
    .option("--temperature <t>", "external: sampling temperature of the records", "0.7")
    .option("--top-p <p>", "external: nucleus sampling of the records", "0.8")
    .option("--concurrency <n>", "external: HTTP requests in flight", "8")
    .option("--timeout-ms <n>", "external: per-request timeout", "120000")
    .option("--retries <n>", "external: retries per request", "5")
    .option("--health-timeout <s>", "external: seconds a started server has to answer /v1/models", "600")
    .option(
      "--stop-grace <s>",
      "external: seconds between SIGTERM and SIGKILL when stopping a process",
      "10",
    );
}

/** Whether the flags ask for the external loop (errors when external flags come without --prompts). */
export function isExternal(o: Record<string, unknown>): boolean {
  if (o.prompts !== undefined) return true;
  for (const k of EXTERNAL_ONLY)
    if (o[k] !== undefined)
      throw new UserError(
        `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}: external components need --prompts (the training queries)`,
      );
  return false;
}

/** Parses the external flags into the loop's configuration; every file is read and checked here. */
export function externalConfigFromFlags(o: Record<string, string | undefined>): ExternalConfig {
  const s = (k: string): string => String(o[k]);
  const seeds = s("seeds").split(",");
  if (seeds.length !== 1) throw new UserError("--seeds: external mode runs one seed at a time");
  const seed = parseIntFlag("--seeds", seeds[0].trim(), 0);
  const runDir = s("out");
  checkOutputs({ flag: "--out", path: runDir, kind: "dir" });
  const promptsPath = s("prompts");
  const { prompts } = readPrompts(promptsPath);
  if (!(BUNDLE_FORMATS as readonly string[]).includes(s("trainFormat")))
    throw new UserError(
      `--train-format: expected one of ${BUNDLE_FORMATS.join(", ")}, got '${s("trainFormat")}'`,
    );
  if (o.principles !== "catalog" && o.principles !== "generated")
    throw new UserError(`--principles: expected catalog or generated, got '${o.principles}'`);
  if (o.policyServe !== undefined && o.policyEndpoint !== undefined)
    throw new UserError("--policy-serve and --policy-endpoint: give one, not both");
  const judgeGiven = o.judgeServe !== undefined || o.judgeEndpoint !== undefined;
  if (o.judgeServe !== undefined && o.judgeEndpoint !== undefined)
    throw new UserError("--judge-serve and --judge-endpoint: give one, not both");
  const judgeKind = o.judge ?? (judgeGiven ? "llm" : "gold");
  if (judgeKind !== "gold" && judgeKind !== "llm")
    throw new UserError(`--judge: expected gold or llm, got '${judgeKind}'`);
  if (judgeKind === "llm" && !judgeGiven)
    throw new UserError("--judge llm: give --judge-serve or --judge-endpoint");
  const maxTokens = parseIntFlag("--max-tokens", s("maxTokens"), 1);
  const evalPath = o.evalPrompts;
  const exe = `${shellQuote(process.execPath)} ${shellQuote(resolve(process.argv[1] ?? "bin/selfsteer"))}`;
  return {
    runDir,
    baseModel: s("base"),
    promptsPath,
    prompts,
    iterations: parseIntFlag("--iterations", s("iterations"), 1),
    queriesPerIteration: parseIntFlag("--queries", s("queries"), 1),
    seed,
    selfsteer: exe,
    build: {
      featureCount: parseIntFlag("--feature-count", s("featureCount"), 1),
      concisionRate: parseNumberFlag("--concision-rate", s("concisionRate"), 0, 1),
      principles: o.principles,
      temperature: parseNumberFlag("--temperature", s("temperature"), 0, 10),
      topP: parseNumberFlag("--top-p", s("topP"), 0, 1),
      maxTokens,
      concurrency: parseIntFlag("--concurrency", s("concurrency"), 1),
      timeoutMs: parseIntFlag("--timeout-ms", s("timeoutMs"), 1),
      retries: parseIntFlag("--retries", s("retries"), 0),
    },
    policy: {
      serve: o.policyEndpoint !== undefined ? null : (o.policyServe ?? DEFAULT_POLICY_SERVE),
      endpoint: o.policyEndpoint ?? null,
      modelName: o.policyModelName ?? null,
      apiKey: process.env.OPENAI_API_KEY,
    },
    train: {
      command: o.train ?? DEFAULT_TRAIN,
      format: s("trainFormat") as BundleFormat,
      settings: {
        template: s("template"),
        loss: s("loss") as LossName,
        beta: parseNumberFlag("--beta", s("beta"), 0),
        learningRate: parseNumberFlag("--lr", s("lr"), 0),
        epochs: parseIntFlag("--epochs", s("epochs"), 1),
      },
    },
    eval:
      evalPath === undefined
        ? null
        : {
            promptsPath: evalPath,
            prompts: readEvalPrompts(evalPath),
            judge: judgeKind,
            maxTokens:
              o.evalMaxTokens === undefined
                ? maxTokens
                : parseIntFlag("--eval-max-tokens", o.evalMaxTokens, 1),
            referencesPath: o.evalReferences ?? null,
          },
    judge: !judgeGiven
      ? null
      : {
          serve: o.judgeServe ?? null,
          model: o.judgeModel ?? null,
          endpoint: o.judgeEndpoint ?? null,
          modelName: o.judgeModelName ?? null,
          apiKey: process.env.JUDGE_API_KEY,
          ...(o.judgeMaxRequests === undefined
            ? {}
            : { maxRequests: parseIntFlag("--judge-max-requests", o.judgeMaxRequests, 0) }),
          signalPairs: parseIntFlag("--judge-signal-pairs", s("judgeSignalPairs"), 0),
          maxTokens: parseIntFlag("--judge-max-tokens", s("judgeMaxTokens"), 1),
        },
    healthTimeoutMs: parseNumberFlag("--health-timeout", s("healthTimeout"), 0.1) * 1000,
    stopGraceMs: parseNumberFlag("--stop-grace", s("stopGrace"), 0) * 1000,
  };
}

/** Runs the external loop from flags, printing stage lines on stderr. */
export async function runExternalFromFlags(o: Record<string, string | undefined>): Promise<ExternalReport> {
  const config = externalConfigFromFlags(o);
  const started = Date.now();
  const stamp = () => `[${((Date.now() - started) / 1000).toFixed(0)}s]`;
  try {
    return await runExternal(config, (e) => {
      if (e.type === "note") process.stderr.write(`iterate: ${e.text}\n`);
      else if (e.state !== "skipped" || process.env.SELFSTEER_VERBOSE === "1")
        process.stderr.write(
          `iterate: ${stamp()} iteration ${e.iteration} ${e.stage} ${e.state}${e.detail === undefined ? "" : `: ${e.detail}`}\n`,
        );
      else process.stderr.write(`iterate: iteration ${e.iteration} ${e.stage} already done\n`);
    });
  } catch (err) {
    if (err instanceof UserError && err.name === "StageError")
      process.stderr.write(
        `iterate: finished stages are kept in ${config.runDir} (stages.jsonl, commands.jsonl); rerun the same command to continue\n`,
      );
    throw err;
  }
}
