import type { Command } from "commander";
import { LocalPolicy } from "../policy/local.js";
import type { ChatMessage } from "../policy/types.js";
import { UserError } from "../util/errors.js";
import {
  BACKEND_HELP,
  openKernels,
  parseIntFlag,
  parseNumberFlag,
  printJson,
  THREADS_HELP,
} from "./common.js";

interface SampleOptions {
  model: string;
  prompt: string;
  system?: string;
  n: string;
  seed: string;
  temperature: string;
  topP: string;
  topK: string;
  maxTokens: string;
  stop: string[];
  backend: string;
  threads?: string;
  json?: boolean;
}

/** `sample`: completions of one chat prompt from a local checkpoint. */
function sample(opts: SampleOptions): void {
  const n = parseIntFlag("--n", opts.n, 1);
  const seed = parseIntFlag("--seed", opts.seed, 0);
  if (seed > 0xffffffff) throw new UserError(`--seed: expected at most ${0xffffffff}, got '${opts.seed}'`);
  const temperature = parseNumberFlag("--temperature", opts.temperature, 0);
  const topP = parseNumberFlag("--top-p", opts.topP, 0, 1);
  if (topP === 0) throw new UserError("--top-p: expected a number in (0, 1], got '0'");
  const topK = parseIntFlag("--top-k", opts.topK, 0);
  const maxTokens = parseIntFlag("--max-tokens", opts.maxTokens, 0);
  const threads = opts.threads === undefined ? undefined : parseIntFlag("--threads", opts.threads, 1);
  const kernels = openKernels(opts.backend, threads);
  try {
    const policy = LocalPolicy.fromDir(opts.model, { kernels, topK });
    const messages: ChatMessage[] = [];
    if (opts.system !== undefined) messages.push({ role: "system", content: opts.system });
    messages.push({ role: "user", content: opts.prompt });
    const started = performance.now();
    const [samples] = policy.sample([{ messages, n, seed, temperature, topP, maxTokens, stop: opts.stop }]);
    const seconds = (performance.now() - started) / 1000;
    const usage = policy.usage();
    if (opts.json === true) {
      printJson({
        model: opts.model,
        samples: samples.map((s) => ({
          text: s.text,
          finishReason: s.finishReason,
          seed: s.seed,
          ids: s.ids,
          logprobs: s.logprobs,
        })),
        usage,
        seconds: Number(seconds.toFixed(3)),
      });
      return;
    }
    samples.forEach((s, k) => {
      if (n > 1) process.stdout.write(`--- sample ${k + 1}/${n} (seed ${s.seed}, ${s.finishReason}) ---\n`);
      process.stdout.write(`${s.text}\n`);
    });
    process.stderr.write(
      `selfsteer: ${usage.completionTokens} tokens in ${seconds.toFixed(2)} s (${(usage.completionTokens / Math.max(seconds, 1e-9)).toFixed(1)} tokens/s)\n`,
    );
  } finally {
    kernels.dispose();
  }
}

/** Registers `selfsteer sample --model DIR --prompt TEXT`: sampling from a local checkpoint. */
export function register(program: Command): void {
  program
    .command("sample")
    .description("sample completions of a chat prompt from a local checkpoint (KV cache, seeded)")
    .requiredOption("--model <dir>", "checkpoint directory with tokenizer.json")
    .requiredOption("--prompt <text>", "the user message")
    .option("--system <text>", "a system message (empty: none)")
    .option("--n <n>", "number of samples (sample k uses seed + k)", "1")
    .option("--seed <n>", "random seed: the same seed gives the same text", "0")
    .option("--temperature <x>", "softmax temperature (0: greedy)", "1")
    .option("--top-p <x>", "nucleus sampling mass in (0, 1] (1: off)", "1")
    .option("--top-k <n>", "keep the k most likely tokens (0: off)", "0")
    .option("--max-tokens <n>", "most new tokens per sample", "128")
    .option("--stop <text>", "a stop string (repeatable)", (v: string, acc: string[]) => [...acc, v], [])
    .option("--backend <name>", BACKEND_HELP, "auto")
    .option("--threads <n>", THREADS_HELP)
    .option("--json", "print JSON with ids, log-probs, finish reasons and usage")
    .addHelpText(
      "after",
      `
The prompt is rendered with the model's own chat template (tokenizer_config.json; ChatML when it has
none) and a generation prompt; a sample ends at the model's end-of-turn ids (generation_config.json
eos_token_id and eos_token; ChatML: <|im_end|>, <|endoftext|>; not part of the text), at a stop string
(cut before it) or after --max-tokens.

Example:
  selfsteer sample --model runs/base --prompt "What is 2 + 3?" --n 3 --temperature 0.8 --seed 1`,
    )
    .action((opts: SampleOptions) => sample(opts));
}
