/**
 * Generation throughput against the fake OpenAI-compatible server with a fixed per-request latency
 * (modelling a real inference server), at concurrency 1, 8 and 32:
 *   - policy: raw OpenAIPolicy requests/s, in process;
 *   - cli: `selfsteer generate` end to end (a child process, so its Node start-up is included and
 *     reported separately), records/s and server requests/s.
 * The server runs on its own worker thread, so its work does not share the client's event loop.
 * Prints one JSON object. Run after a build: node dist/bench/generate-throughput.js [--latency-ms 20]
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { OpenAIPolicy } from "../src/policy/openai.js";
import type { GenerateRequest } from "../src/policy/types.js";
import { startFakeOpenAIServer } from "../test/helpers/fake-openai-server.js";

const concurrencies = [1, 8, 32];
const bin = fileURLToPath(new URL("../../bin/selfsteer", import.meta.url));

function flagValue(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  if (at < 0) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name}: expected a number >= 0`);
  return value;
}

function sampleRequest(i: number): GenerateRequest {
  return {
    messages: [
      { role: "system", content: "Your response should be Helpful and Accurate. Follow these guidelines:" },
      { role: "user", content: `Benchmark question ${i}: how do tides work?` },
    ],
    temperature: 0.7,
    topP: 0.8,
    maxTokens: 256,
    seed: i,
  };
}

function runChild(args: string[]): Promise<{ code: number | null; stderr: string; seconds: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stderr, seconds: (performance.now() - started) / 1000 }));
  });
}

/** The worker side: serves until told to close; answers "count" with the number of requests seen. */
async function serveInWorker(): Promise<void> {
  const port = parentPort;
  if (port === null) return;
  const server = await startFakeOpenAIServer({
    latencyMs: workerData.latencyMs as number,
    lifetimeMs: 600_000,
  });
  port.on("message", (message: string) => {
    if (message === "count") port.postMessage({ count: server.requests.length });
    else if (message === "close") void server.close().then(() => port.close());
  });
  port.postMessage({ url: server.url });
}

/** A fake server on a worker thread, seen from the main thread. */
interface RemoteServer {
  url: string;
  requestCount(): Promise<number>;
  close(): Promise<void>;
}

async function startServerThread(latencyMs: number): Promise<RemoteServer> {
  const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { latencyMs } });
  const nextMessage = (): Promise<{ url?: string; count?: number }> =>
    new Promise((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    });
  const first = await nextMessage();
  if (first.url === undefined) throw new Error("fake server thread did not report its URL");
  return {
    url: first.url,
    async requestCount() {
      const reply = nextMessage();
      worker.postMessage("count");
      return (await reply).count ?? 0;
    },
    async close() {
      const exited = new Promise((resolve) => worker.once("exit", resolve));
      worker.postMessage("close");
      await exited;
    },
  };
}

async function main(): Promise<void> {
  const latencyMs = flagValue("--latency-ms", 20);
  const server = await startServerThread(latencyMs);
  const work = mkdtempSync(join(tmpdir(), "selfsteer-bench-"));
  try {
    // Warm up the JIT, the HTTP stack and the connection pool so the first row is not a cold start.
    await new OpenAIPolicy({
      endpoints: [server.url],
      model: "bench",
      concurrency: 32,
      timeoutMs: 10_000,
      maxRetries: 2,
    }).generate(Array.from({ length: 600 }, (_, i) => sampleRequest(i)));
    const policyRows = [];
    for (const concurrency of concurrencies) {
      const policy = new OpenAIPolicy({
        endpoints: [server.url],
        model: "bench",
        concurrency,
        timeoutMs: 10_000,
        maxRetries: 2,
      });
      const requests = Array.from({ length: Math.max(50, concurrency * 25) }, (_, i) => sampleRequest(i));
      const started = performance.now();
      await policy.generate(requests);
      const seconds = (performance.now() - started) / 1000;
      policyRows.push({
        concurrency,
        requests: requests.length,
        seconds: round(seconds),
        requestsPerSec: round(requests.length / seconds),
        idealRequestsPerSec: round((concurrency * 1000) / latencyMs),
      });
    }

    // Node start-up and module loading of the CLI, paid once per `selfsteer generate` run.
    const startup = await runChild(["--help"]);
    const cliRows = [];
    let cliError: string | undefined;
    for (const concurrency of concurrencies) {
      const prompts = concurrency * 8;
      const promptsPath = join(work, `prompts-${concurrency}.jsonl`);
      const outPath = join(work, `records-${concurrency}.jsonl`);
      writeFileSync(
        promptsPath,
        Array.from({ length: prompts }, (_, i) =>
          JSON.stringify({ id: `b${i}`, prompt: `Benchmark question ${i}: explain topic ${i}.` }),
        ).join("\n"),
      );
      const requestsBefore = await server.requestCount();
      const run = await runChild([
        "generate",
        "--endpoint",
        server.url,
        "--model",
        "bench",
        "--prompts",
        promptsPath,
        "--out",
        outPath,
        "--seed",
        "1",
        "--concurrency",
        String(concurrency),
      ]);
      if (run.code !== 0) {
        cliError = `selfsteer generate exited ${run.code}: ${run.stderr.trim().split("\n").slice(-3).join(" | ")}`;
        break;
      }
      const records = readFileSync(outPath, "utf8")
        .split("\n")
        .filter((l) => l.trim() !== "").length;
      const requests = (await server.requestCount()) - requestsBefore;
      const working = Math.max(1e-9, run.seconds - startup.seconds);
      cliRows.push({
        concurrency,
        prompts,
        records,
        requests,
        seconds: round(run.seconds),
        recordsPerSec: round(records / run.seconds),
        recordsPerSecExcludingStartup: round(records / working),
        requestsPerSecExcludingStartup: round(requests / working),
      });
    }
    process.stdout.write(
      `${JSON.stringify(
        {
          bench: "generate-throughput",
          server: { kind: "fake OpenAI-compatible, 127.0.0.1, own worker thread", latencyMs },
          node: process.version,
          policy: policyRows,
          cli: {
            startupSeconds: round(startup.seconds),
            runs: cliRows,
            ...(cliError ? { error: cliError } : {}),
          },
        },
        null,
        2,
      )}\n`,
    );
  } finally {
    await server.close();
    rmSync(work, { recursive: true, force: true });
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

if (isMainThread) await main();
else await serveInWorker();
