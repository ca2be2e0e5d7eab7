/**
 * Throughput of `selfsteer serve` against the engine's own sampling rate (the ceiling).
 *   - engine: generateTokens in this process on B prompts at once (B = 1, 8, 32), no HTTP, no queue;
 *   - serve: the real CLI in a child process, C clients (C = 1, 8, 32) each sending chat completions
 *     back to back over HTTP; requests and completion tokens per second over the whole run.
 * Model: preset S dims (vocab 512, hidden 128, intermediate 512, 4 layers, 4 heads), random init, the
 * byte-level ChatML tokenizer; every request asks for 32 tokens at temperature 0.7 with its own seed.
 * Prints one JSON object. Run after a build: node dist/bench/serve.js [--rounds 3] [--max-tokens 32]
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { encodeChat, tokenizerConfigJson } from "../src/engine/chat.js";
import { saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { initLlamaTensors } from "../src/engine/init.js";
import { createKernels } from "../src/engine/kernels/index.js";
import { loadModelDir } from "../src/engine/load.js";
import { generateTokens } from "../src/engine/sampler.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";

const bin = fileURLToPath(new URL("../../bin/selfsteer", import.meta.url));
const levels = [1, 8, 32];

function flagValue(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  if (at < 0) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name}: expected a positive integer`);
  return value;
}

function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function messagesFor(i: number) {
  return [
    { role: "system" as const, content: "You are a helpful assistant. Answer in one short paragraph." },
    { role: "user" as const, content: `Benchmark question ${i % 100}: how do tides work?` },
  ];
}

/** Writes the preset-S checkpoint with the byte-level tokenizer. */
function writeModel(dir: string): void {
  const config = LlamaConfigSchema.parse({
    vocab_size: 512,
    hidden_size: 128,
    intermediate_size: 512,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 4,
    max_position_embeddings: 2048,
  });
  const tokenizer = BpeTokenizer.byteLevel();
  saveCheckpoint(dir, {
    config,
    tensors: initLlamaTensors(config, 1),
    tokenizerJson: tokenizer.toJSON(),
    tokenizerConfigJson: tokenizerConfigJson(tokenizer),
  });
}

/** The ceiling: in-process batched sampling of `batch` prompts, best of `rounds` runs. */
function engineRate(dir: string, maxTokens: number, rounds: number) {
  const kernels = createKernels();
  try {
    const { model, tokenizer } = loadModelDir(dir, { kernels });
    const rows = [];
    for (const batch of levels) {
      const prompts = Array.from(
        { length: batch },
        (_, i) => encodeChat(tokenizer, messagesFor(i), { addGenerationPrompt: true }).ids,
      );
      const run = () =>
        generateTokens(model, prompts, {
          maxNewTokens: maxTokens,
          temperature: 0.7,
          seeds: prompts.map((_, i) => i),
          maxBatch: batch,
        });
      run();
      let best = Number.POSITIVE_INFINITY;
      let tokens = 0;
      for (let r = 0; r < rounds; r++) {
        const started = performance.now();
        const out = run();
        best = Math.min(best, (performance.now() - started) / 1000);
        tokens = out.reduce((s, o) => s + o.ids.length, 0);
      }
      rows.push({
        batch,
        seconds: round(best, 3),
        requestsPerSec: round(batch / best),
        tokensPerSec: round(tokens / best),
      });
    }
    return {
      kernels: kernels.name,
      promptTokens: encodeChat(tokenizer, messagesFor(0), { addGenerationPrompt: true }).ids.length,
      rows,
    };
  } finally {
    kernels.dispose();
  }
}

/** Starts `selfsteer serve` on a free port; resolves with its base URL and a stop function. */
function startServe(dir: string): Promise<{ url: string; stop(): Promise<number | null> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        bin,
        "serve",
        "--model",
        dir,
        "--port",
        "0",
        "--model-name",
        "bench",
        "--max-batch",
        "32",
        "--seed",
        "1",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    const exited = new Promise<number | null>((done) => child.on("close", (code) => done(code)));
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m)
        resolve({
          url: m[1],
          stop: async () => {
            child.kill("SIGTERM");
            return exited;
          },
        });
    });
    child.on("error", reject);
    void exited.then((code) => reject(new Error(`serve exited (${code}) before listening: ${stderr}`)));
  });
}

/** Seconds the server's scheduler has spent in engine work so far (from GET /health). */
async function busySeconds(url: string): Promise<number> {
  const response = await fetch(`${url.replace(/\/v1$/, "")}/health`);
  return ((await response.json()) as { busySeconds: number }).busySeconds;
}

interface ChatResult {
  usage: { completion_tokens: number };
}

async function chatOnce(url: string, i: number, maxTokens: number): Promise<number> {
  const response = await fetch(`${url}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "bench",
      messages: messagesFor(i),
      max_tokens: maxTokens,
      temperature: 0.7,
      seed: i,
      // Every request samples exactly max_tokens, as the in-process ceiling does.
      ignore_eos: true,
    }),
  });
  const body = (await response.json()) as ChatResult;
  if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${JSON.stringify(body)}`);
  return body.usage.completion_tokens;
}

/** C clients sending `perClient` requests each, back to back. */
async function serveRate(url: string, clients: number, perClient: number, maxTokens: number) {
  const latencies: number[] = [];
  let tokens = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let k = 0; k < perClient; k++) {
        const sent = performance.now();
        const got = await chatOnce(url, c * perClient + k, maxTokens);
        tokens += got;
        latencies.push(performance.now() - sent);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const requests = clients * perClient;
  return {
    concurrency: clients,
    requests,
    seconds: round(seconds, 3),
    requestsPerSec: round(requests / seconds),
    tokensPerSec: round(tokens / seconds),
    p50LatencyMs: round(latencies[Math.floor(latencies.length / 2)]),
  };
}

async function main(): Promise<void> {
  const rounds = flagValue("--rounds", 3);
  const maxTokens = flagValue("--max-tokens", 32);
  const work = mkdtempSync(join(tmpdir(), "selfsteer-bench-serve-"));
  const dir = join(work, "preset-s");
  try {
    writeModel(dir);
    const engine = engineRate(dir, maxTokens, rounds);
    const server = await startServe(dir);
    const rows = [];
    try {
      // Warm-up: JIT, kernels' workers, the KV cache, the connection pool.
      await serveRate(server.url, 32, 1, maxTokens);
      for (const clients of levels) {
        const busyBefore = await busySeconds(server.url);
        const measured = await serveRate(server.url, clients, rounds * (clients === 1 ? 4 : 2), maxTokens);
        const busy = (await busySeconds(server.url)) - busyBefore;
        const ceiling = engine.rows.find((r) => r.batch === clients);
        rows.push({
          ...measured,
          // Share of the wall time the server spent in engine work (the rest: HTTP, waiting for clients).
          serverBusy: round(busy / measured.seconds, 2),
          engineTokensPerSec: ceiling?.tokensPerSec,
          ofCeiling: ceiling ? round(measured.tokensPerSec / ceiling.tokensPerSec, 2) : null,
        });
      }
    } finally {
      const code = await server.stop();
      if (code !== 0) process.stderr.write(`bench: serve exited with ${code}\n`);
    }
    const result = {
      model:
        "preset S dims (vocab 512, hidden 128, intermediate 512, 4 layers, 4 heads), byte-level tokenizer",
      maxTokens,
      temperature: 0.7,
      promptTokens: engine.promptTokens,
      kernels: engine.kernels,
      engine: engine.rows,
      serve: rows,
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
