/**
 * Generation speed against llama.cpp, the CPU engine people run small models with: the same F32 model
 * (our checkpoint, and its `selfsteer model export --type f32` GGUF) decoding greedily from the same
 * chat prompt, single-stream and a batch of sequences decoded together, on the same thread count.
 * Ours is `selfsteer sample` in a fresh process (its own timing: prompt prefill plus decode, without
 * process start); llama.cpp is node-llama-cpp 3.21.1 from test/interop (prefill plus decode, the model
 * loaded once, its default F16 KV cache). Repeats alternate the two sides and each keeps its best.
 *
 * Usage: node dist/bench/llamacpp.js [--model DIR] [--threads N] [--batch B] [--new-tokens N]
 *                                    [--repeat N] [--json]
 * Without --model, a random checkpoint of preset L's shape (6 layers, hidden 512, vocab 4096) is
 * written to runs/bench/llamacpp/model once. Needs `npm ci --prefix test/interop`.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BENCH_PRESETS } from "../src/engine/bench.js";
import { encodeChat } from "../src/engine/chat.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { writeJsonAtomic } from "../src/util/fsio.js";
import {
  INTEROP_INSTALL,
  type LlamaModelLike,
  nodeLlamaCppInstalled,
  openLlamaCpp,
} from "../test/helpers/llamacpp.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const selfsteer = join(root, "bin", "selfsteer");
const PROMPT = "Tell me a long story about a robot who learns to paint.";

interface Args {
  model: string | null;
  threads: number;
  batch: number;
  newTokens: number;
  repeat: number;
  json: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    model: null,
    threads: availableParallelism(),
    batch: 8,
    newTokens: 64,
    repeat: 3,
    json: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    const int = (): number => {
      const n = Number(value());
      if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} needs a positive integer`);
      return n;
    };
    if (flag === "--model") args.model = value();
    else if (flag === "--threads") args.threads = int();
    else if (flag === "--batch") args.batch = int();
    else if (flag === "--new-tokens") args.newTokens = int();
    else if (flag === "--repeat") args.repeat = int();
    else if (flag === "--json") args.json = true;
    else throw new Error(`unknown flag ${flag} (see the usage at the top of bench/llamacpp.ts)`);
  }
  return args;
}

function run(args: string[]): string {
  const r = spawnSync(process.execPath, [selfsteer, ...args], {
    cwd: root,
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`selfsteer ${args.join(" ")} failed (exit ${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** The default model: a random checkpoint of preset L's shape, written once. */
function defaultModel(): string {
  const dir = join(root, "runs", "bench", "llamacpp", "model");
  if (existsSync(join(dir, "config.json"))) return dir;
  const p = BENCH_PRESETS.L;
  const configPath = join(root, "runs", "bench", "llamacpp", "config.json");
  mkdirSync(join(root, "runs", "bench", "llamacpp"), { recursive: true });
  writeFileSync(
    configPath,
    JSON.stringify({
      vocab_size: p.vocab,
      hidden_size: p.hidden,
      intermediate_size: p.intermediate,
      num_hidden_layers: p.layers,
      num_attention_heads: p.heads,
      num_key_value_heads: p.kvHeads,
      max_position_embeddings: 512,
    }),
  );
  run(["model", "init", "--config", configPath, "--seed", "1", "--std", "0.3", "--out", dir]);
  return dir;
}

/** Tokens per second of one `selfsteer sample` run of n sequences (its own timer). */
function oursRate(model: string, args: Args, n: number): { tokensPerSec: number; tokens: number } {
  const out = JSON.parse(
    run([
      "sample",
      "--model",
      model,
      "--prompt",
      PROMPT,
      "--temperature",
      "0",
      "--n",
      String(n),
      "--max-tokens",
      String(args.newTokens),
      "--threads",
      String(args.threads),
      "--json",
    ]),
  ) as { usage: { completionTokens: number }; seconds: number };
  return { tokensPerSec: out.usage.completionTokens / out.seconds, tokens: out.usage.completionTokens };
}

/** Tokens per second of llama.cpp decoding n sequences greedily at once (node-llama-cpp batches them). */
async function llamaRate(
  model: LlamaModelLike,
  prompt: number[],
  args: Args,
  n: number,
): Promise<{ tokensPerSec: number; tokens: number }> {
  const context = await model.createContext({
    contextSize: n * (prompt.length + args.newTokens + 16),
    sequences: n,
    threads: args.threads,
  });
  try {
    const sequences = Array.from({ length: n }, () => context.getSequence());
    const started = performance.now();
    const counts = await Promise.all(
      sequences.map(async (sequence) => {
        let count = 0;
        for await (const _ of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true }))
          if (++count >= args.newTokens) break;
        return count;
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const tokens = counts.reduce((a, b) => a + b, 0);
    return { tokensPerSec: tokens / seconds, tokens };
  } finally {
    await context.dispose();
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (!nodeLlamaCppInstalled()) {
    process.stderr.write(
      `llama.cpp peer skipped: node-llama-cpp is not installed; run \`${INTEROP_INSTALL}\`\n`,
    );
    return;
  }
  const modelDir = args.model ?? defaultModel();
  const ggufPath = join(root, "runs", "bench", "llamacpp", "model-f32.gguf");
  run(["model", "export", "--model", modelDir, "--out", ggufPath, "--type", "f32"]);
  const tokenizer = BpeTokenizer.fromFile(join(modelDir, "tokenizer.json"));
  const prompt = encodeChat(tokenizer, [{ role: "user", content: PROMPT }], {
    addGenerationPrompt: true,
  }).ids;

  const llama = await openLlamaCpp();
  const model = await llama.loadModel({ modelPath: ggufPath });
  type Rate = { tokensPerSec: number; tokens: number };
  const best: Record<string, Rate> = {};
  const keep = (key: string, r: Rate) => {
    if (best[key] === undefined || r.tokensPerSec > best[key].tokensPerSec) best[key] = r;
    process.stderr.write(`${key}: ${r.tokensPerSec.toFixed(1)} tokens/s (${r.tokens} tokens)\n`);
  };
  try {
    for (let repeat = 0; repeat < args.repeat; repeat++)
      for (const n of [1, args.batch]) {
        keep(`ours n=${n}`, oursRate(modelDir, args, n));
        keep(`llama.cpp n=${n}`, await llamaRate(model, prompt, args, n));
      }
  } finally {
    await model.dispose();
    await llama.dispose();
  }
  const rows = [1, args.batch].map((n) => {
    const ours = best[`ours n=${n}`];
    const peer = best[`llama.cpp n=${n}`];
    return {
      sequences: n,
      oursTokensPerSec: Number(ours.tokensPerSec.toFixed(1)),
      llamaCppTokensPerSec: Number(peer.tokensPerSec.toFixed(1)),
      ratio: Number((ours.tokensPerSec / peer.tokensPerSec).toFixed(2)),
    };
  });
  const summary = {
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model ?? null,
    threads: args.threads,
    model: modelDir,
    promptTokens: prompt.length,
    newTokens: args.newTokens,
    repeat: args.repeat,
    peer: "node-llama-cpp 3.21.1 (llama.cpp, prebuilt CPU binary)",
    rows,
  };
  writeJsonAtomic(join(root, "runs", "bench", "llamacpp.json"), summary);
  if (args.json) {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return;
  }
  process.stdout.write(
    `\nselfsteer sample vs llama.cpp, greedy decode of the same F32 model (${modelDir}), ${args.threads} threads, ` +
      `${prompt.length}-token prompt, ${args.newTokens} new tokens per sequence, best of ${args.repeat}\n`,
  );
  process.stdout.write("sequences  ours tok/s  llama.cpp tok/s  ratio\n");
  for (const r of rows)
    process.stdout.write(
      `${String(r.sequences).padStart(9)}  ${r.oursTokensPerSec.toFixed(1).padStart(10)}  ${r.llamaCppTokensPerSec.toFixed(1).padStart(15)}  ${r.ratio.toFixed(2).padStart(5)}\n`,
    );
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/llamacpp: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
