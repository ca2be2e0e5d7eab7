import type { Command } from "commander";
import { DEFAULT_MAX_MODEL_LEN, startServer } from "../serve/server.js";
import { UserError } from "../util/errors.js";
import { BACKEND_HELP, parseBackend, parseIntFlag, parseNumberFlag, THREADS_HELP } from "./common.js";

interface ServeFlags {
  model: string;
  port: string;
  host: string;
  modelName?: string;
  maxBatch: string;
  maxQueue: string;
  backend: string;
  threads?: string;
  seed?: string;
  maxBodyBytes: string;
  maxModelLen?: string;
  drainTimeout: string;
}

/** Registers `selfsteer serve`: an OpenAI-compatible HTTP server over a local checkpoint. */
export function register(program: Command): void {
  program
    .command("serve")
    .description(
      "serve a checkpoint over an OpenAI-compatible HTTP API (chat completions, completions, models)",
    )
    .requiredOption("--model <dir>", "checkpoint directory (config.json, model.safetensors, tokenizer.json)")
    .option("--port <n>", "TCP port (0 picks a free one)", "8000")
    .option("--host <addr>", "address to listen on", "127.0.0.1")
    .option("--model-name <name>", "the name clients send as `model` (default: the directory's name)")
    .option("--max-batch <n>", "samples decoded together at most (KV-cache slots)", "32")
    .option("--max-queue <n>", "samples waiting for a slot at most; beyond it requests get 429", "256")
    .option("--backend <name>", BACKEND_HELP, "auto")
    .option("--threads <n>", THREADS_HELP)
    .option("--seed <n>", "seeds the requests that carry no seed (default: random)")
    .option("--max-body-bytes <n>", "largest request body; larger ones get 413", String(4 * 1024 * 1024))
    .option(
      "--max-model-len <n>",
      `longest prompt + completion served (default: max_position_embeddings, at most ${DEFAULT_MAX_MODEL_LEN})`,
    )
    .option(
      "--drain-timeout <s>",
      "on SIGTERM, seconds in-flight requests may still run before they are ended with an error",
      "10",
    )
    .addHelpText(
      "after",
      `
Endpoints: GET /v1/models, POST /v1/chat/completions (stream, n, seed, stop, logprobs, top_logprobs),
POST /v1/completions (prompt text or token ids; echo + logprobs + max_tokens 0 scores a text), GET /health.
Concurrent requests share decode steps; a request with seed s samples with seeds s, s+1, ... (n > 1),
and the same seed gives the same text whatever else is running. SIGTERM or SIGINT stops taking
requests (they get 503), lets the running ones finish for up to --drain-timeout seconds, ends the
rest with an error and exits 0.

Example:
  selfsteer serve --model runs/base --port 8000
  selfsteer generate --endpoint http://127.0.0.1:8000/v1 --model base --prompts p.jsonl --out r.jsonl`,
    )
    .action(async (flags: ServeFlags) => {
      const port = parseIntFlag("--port", flags.port, 0);
      if (port > 65535) throw new UserError(`--port: expected an integer in [0, 65535], got '${flags.port}'`);
      const maxBatch = parseIntFlag("--max-batch", flags.maxBatch, 1);
      const maxQueue = parseIntFlag("--max-queue", flags.maxQueue, 0);
      const maxBodyBytes = parseIntFlag("--max-body-bytes", flags.maxBodyBytes, 1);
      const maxModelLen =
        flags.maxModelLen === undefined ? undefined : parseIntFlag("--max-model-len", flags.maxModelLen, 2);
      const drainTimeoutMs = 1000 * parseNumberFlag("--drain-timeout", flags.drainTimeout, 0, 86_400);
      const backend = parseBackend(flags.backend);
      const threads = flags.threads === undefined ? undefined : parseIntFlag("--threads", flags.threads, 1);
      const seed = flags.seed === undefined ? undefined : parseIntFlag("--seed", flags.seed, 0);
      if (flags.modelName !== undefined && flags.modelName.trim() === "")
        throw new UserError("--model-name: must not be empty");
      const log = (line: string) => process.stderr.write(`selfsteer serve: ${line}\n`);
      const server = await startServer({
        modelDir: flags.model,
        port,
        host: flags.host,
        maxBatch,
        maxQueue,
        maxBodyBytes,
        drainTimeoutMs,
        ...(maxModelLen === undefined ? {} : { maxModelLen }),
        backend,
        log,
        ...(flags.modelName === undefined ? {} : { modelName: flags.modelName }),
        ...(threads === undefined ? {} : { threads }),
        ...(seed === undefined ? {} : { seed }),
      });
      log(`listening on ${server.url} (model '${server.modelName}')`);
      await new Promise<void>((resolve) => {
        let stopping = false;
        const stop = (signal: NodeJS.Signals) => {
          if (stopping) {
            log(`${signal} again: exiting without waiting`);
            process.exit(130);
          }
          stopping = true;
          log(`${signal}: finishing in-flight requests (at most ${drainTimeoutMs / 1000} s), then exiting`);
          server.close().then(resolve, (error: unknown) => {
            log(`error while closing: ${error instanceof Error ? error.message : String(error)}`);
            process.exitCode = 1;
            resolve();
          });
        };
        process.on("SIGTERM", stop);
        process.on("SIGINT", stop);
      });
      log("stopped");
    });
}
