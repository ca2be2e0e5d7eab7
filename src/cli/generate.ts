import { resolve } from "node:path";
import type { Command } from "commander";
import { OpenAIPolicy } from "../policy/openai.js";
import { BuildInterruptedError, type BuildSummary, buildRecords } from "../sso/builder.js";
import { type Catalog, DEFAULT_CATALOG, loadCatalog } from "../sso/catalog.js";
import { DROP_REASONS } from "../sso/filters.js";
import { dropLogPath, openDropLog, openRecordWriter, readPrompts } from "../sso/records.js";
import { UserError } from "../util/errors.js";
import { parseIntFlag, parseNumberFlag, printJson, progressBar } from "./common.js";
import { checkOutputPath } from "./output.js";

interface GenerateFlags {
  endpoint: string[];
  model?: string;
  prompts: string;
  out: string;
  seed: string;
  featureCount: string;
  concisionRate: string;
  principles: string;
  catalog?: string;
  temperature: string;
  topP: string;
  maxTokens: string;
  concurrency: string;
  batchSize?: string;
  apiKey?: string;
  timeoutMs: string;
  retries: string;
  progress?: boolean;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function nonEmptyEnv(name: string): string | undefined {
  const value = process.env[name];
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

/** A few readable lines for stderr: what was kept, what was dropped and why, fallbacks and tokens. */
function describeSummary(summary: BuildSummary, out: string): string {
  const drops = DROP_REASONS.filter((r) => summary.drops[r] > 0)
    .map((r) => `${r} ${summary.drops[r]}`)
    .join(", ");
  return [
    `generate: ${summary.kept} record(s) kept, ${summary.dropped} dropped${drops === "" ? "" : ` (${drops})`}, ` +
      `${summary.skipped} already done of ${summary.total}; records in ${out}`,
    `  features: ${summary.featureFallbacks} random fallback(s), ${summary.featureTopUps} top-up(s), ` +
      `${summary.unknownFeatureNames} unknown name(s); Concision added ${summary.randomFeatureAdded} time(s)`,
    `  principles: ${summary.principleFallbacks} fallback(s) to the catalog; answers cut at --max-tokens: ${summary.truncated}`,
    `  tokens: ${summary.usage.promptTokens} prompt + ${summary.usage.completionTokens} completion in ${summary.usage.requests} request(s)`,
  ].join("\n");
}

/** Registers `selfsteer generate`: SSO records from any OpenAI-compatible server(s). */
export function register(program: Command): void {
  program
    .command("generate")
    .description("build SSO preference records by sampling a model behind OpenAI-compatible endpoints")
    .option(
      "--endpoint <url>",
      "base URL, e.g. http://127.0.0.1:8000/v1 (repeat for several; env OPENAI_BASE_URL)",
      collect,
      [],
    )
    .option("--model <name>", "model name sent to the server (env SELFSTEER_MODEL)")
    .requiredOption(
      "--prompts <file>",
      'JSONL of {"id"?: string, "prompt": string} ("instruction" also accepted)',
    )
    .requiredOption("--out <file>", "records JSONL; rerunning with the same file resumes")
    .option("--seed <n>", "seed of every random choice and request", "0")
    .option("--feature-count <n>", "features the model picks per query", "2")
    .option("--concision-rate <p>", "probability of adding Concision", "0.2")
    .option("--principles <source>", "catalog | generated (written per query by the model)", "catalog")
    .option("--catalog <file>", "feature catalog JSON (default: the built-in one)")
    .option("--temperature <t>", "sampling temperature", "0.7")
    .option("--top-p <p>", "nucleus sampling", "0.8")
    .option("--max-tokens <n>", "token limit of each sampled answer", "1024")
    .option("--concurrency <n>", "HTTP requests in flight at once, over all endpoints", "8")
    .option("--batch-size <n>", "queries per batch (default: --concurrency)")
    .option("--api-key <key>", "bearer token (env OPENAI_API_KEY)")
    .option("--timeout-ms <n>", "per-request timeout", "120000")
    .option("--retries <n>", "retries per request on 429, 5xx, timeouts and network errors", "5")
    .option("--progress", "show the progress bar even when stderr is not a terminal")
    .addHelpText(
      "after",
      `
Per query the model picks the relevant features, then answers three times: under the good principles
(chosen), under the bad ones (rejected) and with no system prompt (raw). Records the reference filters
drop are listed in <out>.drops.jsonl, so a rerun skips them too (delete that file to retry them).

Example:
  selfsteer generate --endpoint http://127.0.0.1:8000/v1 --model Qwen2-7B-Instruct \\
    --prompts prompts.jsonl --out records.jsonl --seed 1 --concurrency 32`,
    )
    .action(async (flags: GenerateFlags) => {
      checkOutputPath("--out", flags.out, "file");
      const endpoints =
        flags.endpoint.length > 0
          ? flags.endpoint
          : [nonEmptyEnv("OPENAI_BASE_URL")].flatMap((e) => (e === undefined ? [] : [e]));
      if (endpoints.length === 0) throw new UserError("--endpoint: required (or set OPENAI_BASE_URL)");
      const model = flags.model ?? nonEmptyEnv("SELFSTEER_MODEL");
      if (model === undefined || model.trim() === "")
        throw new UserError("--model: required (or set SELFSTEER_MODEL)");
      const seed = parseIntFlag("--seed", flags.seed, 0);
      const featureCount = parseIntFlag("--feature-count", flags.featureCount, 1);
      const concisionRate = parseNumberFlag("--concision-rate", flags.concisionRate, 0, 1);
      if (flags.principles !== "catalog" && flags.principles !== "generated")
        throw new UserError(`--principles: expected catalog or generated, got '${flags.principles}'`);
      const principles = flags.principles;
      const temperature = parseNumberFlag("--temperature", flags.temperature, 0, 10);
      const topP = parseNumberFlag("--top-p", flags.topP, 0, 1);
      const maxTokens = parseIntFlag("--max-tokens", flags.maxTokens, 1);
      const concurrency = parseIntFlag("--concurrency", flags.concurrency, 1);
      const batchSize =
        flags.batchSize === undefined ? concurrency : parseIntFlag("--batch-size", flags.batchSize, 1);
      const timeoutMs = parseIntFlag("--timeout-ms", flags.timeoutMs, 1);
      const maxRetries = parseIntFlag("--retries", flags.retries, 0);
      if (resolve(flags.prompts) === resolve(flags.out))
        throw new UserError("--out: must differ from --prompts");

      // Everything the user gave is checked before the first request and before the output is touched.
      const catalog: Catalog = flags.catalog === undefined ? DEFAULT_CATALOG : loadCatalog(flags.catalog);
      const { prompts, duplicates } = readPrompts(flags.prompts);
      if (duplicates > 0)
        process.stderr.write(`generate: ${duplicates} repeated prompt(s) without an id are built once\n`);
      const policy = new OpenAIPolicy({
        endpoints,
        model,
        apiKey: flags.apiKey ?? nonEmptyEnv("OPENAI_API_KEY"),
        concurrency,
        timeoutMs,
        maxRetries,
      });

      const writer = openRecordWriter(flags.out);
      const dropLog = openDropLog(dropLogPath(flags.out));
      const bar = progressBar({ force: flags.progress === true });
      bar.start(prompts.length, "generate");
      let summary: BuildSummary;
      try {
        const result = await buildRecords(
          policy,
          prompts,
          {
            seed,
            catalog,
            featureCount,
            concisionRate,
            principles,
            temperature,
            topP,
            maxTokens,
            batchSize,
            // Two batches in flight keep the HTTP slots busy while the other waits between stages.
            parallelBatches: 2,
            writer,
            dropLog,
          },
          {
            onProgress: (done, _total, s) => bar.update(done, { kept: s.kept, dropped: s.dropped }),
          },
        );
        summary = result.summary;
      } catch (err) {
        if (err instanceof BuildInterruptedError) {
          bar.stop();
          process.stderr.write(`${describeSummary(err.summary, flags.out)}\n`);
          process.stderr.write("generate: stopped early; rerun the same command to resume\n");
          // The policy's own error keeps its exit code (2: the server rejected the request, 1: gave up).
          throw err.cause instanceof Error ? err.cause : err;
        }
        throw err;
      } finally {
        bar.stop();
        writer.close();
        dropLog.close();
      }
      process.stderr.write(`${describeSummary(summary, flags.out)}\n`);
      printJson({ out: flags.out, ...summary });
    });
}
