/**
 * Our GGUF in llama.cpp (node-llama-cpp from test/interop): llama.cpp must load the file, tokenize the
 * rendered chat prompts into our ids (the tokenizer inside the file), and continue them greedily with
 * the same tokens as `selfsteer sample --temperature 0`, on the trained world-base and on random
 * checkpoints. Where the two differ, the step is a tie when our own log-probs of the two tokens are
 * within TIE_NATS (fp32 summation order decides those); any other difference is a mismatch, and a
 * model passes with at most one mismatching prompt of eight.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, type TestContext, test } from "node:test";
import { fileURLToPath } from "node:url";
import { CHATML_TEMPLATE, encodeChat } from "../src/engine/chat.js";
import { saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { writeGgufFile } from "../src/engine/gguf.js";
import { checkpointToGguf, LLAMA3_SPLIT } from "../src/engine/gguf-export.js";
import { initLlamaTensors } from "../src/engine/init.js";
import { nextTokenLogprobs } from "../src/engine/logprobs.js";
import { LocalPolicy } from "../src/policy/local.js";
import type { ChatMessage } from "../src/policy/types.js";
import { Rng } from "../src/util/rng.js";
import { ok } from "./helpers/cli.js";
import {
  FP32_CONTEXT,
  INTEROP_INSTALL,
  type LlamaLike,
  llamaCppGreedy,
  nodeLlamaCppInstalled,
  openLlamaCpp,
} from "./helpers/llamacpp.js";

const WORLD_BASE = fileURLToPath(new URL("../../assets/world-base", import.meta.url));
const FIXTURES = fileURLToPath(new URL("../../test/fixtures/tokenizer", import.meta.url));
const MAX_TOKENS = 16;
const TIE_NATS = 2e-3;
const PROMPTS = [
  "What is 7 + 5?",
  "Name the capital of France.",
  "Give me one tip for staying safe online.",
  "Write a short greeting for a new colleague.",
  "Is it safe to mix bleach and ammonia?",
  "Summarize: the cat sat on the mat all day.",
  "How many legs does a spider have?",
  "Explain why the sky is blue in one sentence.",
];
const SKIP = nodeLlamaCppInstalled()
  ? false
  : `node-llama-cpp (llama.cpp) is not installed; run \`${INTEROP_INSTALL}\` to run this test (.ci/run does)`;

const work = mkdtempSync(join(tmpdir(), "selfsteer-gguf-interop-"));
after(() => rmSync(work, { recursive: true, force: true }));

let llamaPromise: Promise<LlamaLike> | null = null;
function llama(): Promise<LlamaLike> {
  llamaPromise ??= openLlamaCpp();
  return llamaPromise;
}
after(async () => {
  if (llamaPromise !== null) await (await llamaPromise).dispose();
});

interface Agreement {
  matches: number;
  ties: number;
  mismatches: string[];
}

/** Compares llama.cpp's greedy continuations of PROMPTS with ours on one checkpoint. */
async function compareWithLlamaCpp(dir: string, label: string): Promise<Agreement> {
  const ggufPath = join(work, `${label}.gguf`);
  writeGgufFile(ggufPath, checkpointToGguf(dir, { type: "f32" }));
  const runtime = await llama();
  assert.equal(runtime.gpu, false, "llama.cpp runs on the CPU");
  const model = await runtime.loadModel({ modelPath: ggufPath });
  const context = await model.createContext({ contextSize: 256, threads: 1, ...FP32_CONTEXT });
  const sequence = context.getSequence();
  // Its own kernels, freed after: kernel memory is not returned otherwise, and the --like models are large.
  const policy = LocalPolicy.fromDir(dir);
  const result: Agreement = { matches: 0, ties: 0, mismatches: [] };
  try {
    for (const prompt of PROMPTS) {
      const messages: ChatMessage[] = [{ role: "user", content: prompt }];
      const promptIds = encodeChat(policy.tokenizer, messages, { addGenerationPrompt: true }).ids;
      // The tokenizer inside the file: llama.cpp reads the rendered prompt as the same ids.
      const text = policy.tokenizer.decode(promptIds);
      assert.deepEqual(
        model.tokenize(text, true),
        promptIds,
        `${label}: llama.cpp tokenizes ${JSON.stringify(text)}`,
      );
      const [[ours]] = policy.sample([{ messages, temperature: 0, topP: 1, maxTokens: MAX_TOKENS, seed: 0 }]);
      const theirs = await llamaCppGreedy(sequence, model, promptIds, MAX_TOKENS);
      const at = firstDifference(ours.ids, theirs);
      if (at === -1) {
        result.matches++;
        continue;
      }
      const prefix = [...promptIds, ...ours.ids.slice(0, at)];
      const a = ours.ids[at];
      const b = theirs[at];
      let gapNote = "";
      if (a !== undefined && b !== undefined) {
        const [la, lb] = nextTokenLogprobs(policy.model, [
          [...prefix, a],
          [...prefix, b],
        ]).map((row) => row[row.length - 1]);
        gapNote = ` (log-probs ${la.toFixed(5)} vs ${lb.toFixed(5)})`;
        if (Math.abs(la - lb) < TIE_NATS) {
          result.ties++;
          continue;
        }
      }
      result.mismatches.push(
        `${JSON.stringify(prompt)}: step ${at}${gapNote}: ours ${JSON.stringify(ours.ids)} llama.cpp ${JSON.stringify(theirs)}`,
      );
    }
  } finally {
    policy.dispose();
    await context.dispose();
    await model.dispose();
  }
  return result;
}

function firstDifference(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
}

function assertAgreement(t: TestContext, label: string, r: Agreement): void {
  t.diagnostic(
    `${label}: ${r.matches}/${PROMPTS.length} prompts identical, ${r.ties} ties, ${r.mismatches.length} mismatches`,
  );
  for (const m of r.mismatches) t.diagnostic(m);
  const detail = `${label}: ${r.matches} match, ${r.ties} ties, ${r.mismatches.length} mismatches\n${r.mismatches.join("\n")}`;
  assert.ok(r.mismatches.length <= 1, detail);
  assert.ok(r.matches >= 6, `too few exact matches to mean anything: ${detail}`);
}

test("world-base (trained) as GGUF: llama.cpp's greedy tokens equal selfsteer sample's", {
  skip: SKIP,
}, async (t) => {
  const r = await compareWithLlamaCpp(WORLD_BASE, "world-base");
  assertAgreement(t, "world-base", r);
  // The in-process policy is what `selfsteer sample` runs; one prompt through the CLI shows it.
  const cli = JSON.parse(
    ok(
      "sample",
      "--model",
      WORLD_BASE,
      "--prompt",
      PROMPTS[0],
      "--temperature",
      "0",
      "--max-tokens",
      String(MAX_TOKENS),
      "--json",
    ),
  );
  const policy = LocalPolicy.fromDir(WORLD_BASE);
  const [[ours]] = policy.sample([
    {
      messages: [{ role: "user", content: PROMPTS[0] }],
      temperature: 0,
      topP: 1,
      maxTokens: MAX_TOKENS,
      seed: 0,
    },
  ]);
  policy.dispose();
  assert.deepEqual(cli.samples[0].ids, ours.ids);
});

test("a random llama (GQA, untied head, head_dim != hidden/heads, padded vocab) as GGUF agrees with llama.cpp", {
  skip: SKIP,
}, async (t) => {
  const config = join(work, "llama.json");
  writeFileSync(
    config,
    JSON.stringify({
      vocab_size: 1100,
      hidden_size: 64,
      intermediate_size: 160,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 32,
      rope_theta: 500000,
      max_position_embeddings: 256,
      tie_word_embeddings: false,
    }),
  );
  const dir = join(work, "llama");
  ok(
    "model",
    "init",
    "--config",
    config,
    "--seed",
    "3",
    "--std",
    "0.3",
    "--out",
    dir,
    "--tokenizer",
    join(WORLD_BASE, "tokenizer.json"),
  );
  assertAgreement(t, "random llama", await compareWithLlamaCpp(dir, "llama"));
});

/** A random checkpoint written in process (no CLI start): config, tokenizer files, generation_config. */
function randomCheckpoint(
  name: string,
  configFields: Record<string, unknown>,
  tokenizerJson: unknown,
  tokenizerConfigJson: unknown,
  generationConfig?: unknown,
): string {
  const dir = join(work, name);
  const config = LlamaConfigSchema.parse(configFields);
  const tensors = initLlamaTensors(config, 5, { std: 0.3 });
  // Biases start at zero and norms at one; random values make a misplaced bias or norm visible.
  const rng = new Rng(`${name}:vectors`);
  for (const t of tensors)
    if (t.shape.length === 1) for (let i = 0; i < t.data.length; i++) t.data[i] += 0.3 * rng.normal();
  saveCheckpoint(dir, { config, tensors, tokenizerJson, tokenizerConfigJson });
  if (generationConfig !== undefined)
    writeFileSync(join(dir, "generation_config.json"), JSON.stringify(generationConfig));
  return dir;
}

const SMALL = {
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};

test("Llama 3 style (llama-bpe pre-tokenizer, its specials, template with BOS, <|eot_id|>) agrees with llama.cpp", {
  skip: SKIP,
}, async (t) => {
  // world-base's merges under Llama 3's Split regex, with Llama 3's special tokens after them.
  const tokenizerJson = JSON.parse(readFileSync(join(WORLD_BASE, "tokenizer.json"), "utf8"));
  tokenizerJson.pre_tokenizer = {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: LLAMA3_SPLIT }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  };
  const specials = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
  ];
  for (const [k, content] of specials.entries())
    tokenizerJson.added_tokens.push({
      id: 1024 + k,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    });
  const template =
    "{{ bos_token }}{% for message in messages %}" +
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}" +
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
  const dir = randomCheckpoint(
    "llama3-style",
    {
      ...SMALL,
      vocab_size: 1032,
      rope_theta: 500000,
      max_position_embeddings: 256,
      bos_token_id: 1024,
      eos_token_id: 1025,
    },
    tokenizerJson,
    { chat_template: template, bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>" },
    { eos_token_id: [1028, 1025] },
  );
  assertAgreement(t, "llama 3 style", await compareWithLlamaCpp(dir, "llama3-style"));
});

test("Qwen2-style tokenizer (qwen2 pre-tokenizer, NFC) in a random llama agrees with llama.cpp", {
  skip: SKIP,
}, async (t) => {
  const tokenizerJson = JSON.parse(readFileSync(join(FIXTURES, "qwen2-style.tokenizer.json"), "utf8"));
  const dir = randomCheckpoint(
    "qwen2-tokenizer",
    { ...SMALL, vocab_size: 520, tie_word_embeddings: true },
    tokenizerJson,
    {
      chat_template: CHATML_TEMPLATE,
      eos_token: "<|im_end|>",
    },
  );
  assertAgreement(t, "qwen2-style tokenizer", await compareWithLlamaCpp(dir, "qwen2-tokenizer"));
});

test("SentencePiece-style vocabularies: llama.cpp tokenizes our GGUF as Hugging Face does", {
  skip: SKIP,
}, async (t) => {
  const expected = JSON.parse(readFileSync(join(FIXTURES, "sentencepiece-expected.json"), "utf8")) as {
    probes: string[];
    expected: Record<string, { ids: number[] }[]>;
  };
  const config = LlamaConfigSchema.parse({
    vocab_size: 640,
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 1,
    num_attention_heads: 2,
  });
  const runtime = await llama();
  for (const name of ["llama2-legacy", "metaspace-always", "mistral-metaspace"]) {
    const dir = join(work, `spm-${name}`);
    saveCheckpoint(dir, {
      config,
      tensors: initLlamaTensors(config, 1),
      tokenizerJson: JSON.parse(readFileSync(join(FIXTURES, `${name}.tokenizer.json`), "utf8")),
      tokenizerConfigJson: { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", add_bos_token: true },
    });
    const ggufPath = join(work, `spm-${name}.gguf`);
    writeGgufFile(ggufPath, checkpointToGguf(dir, { type: "f32" }));
    const model = await runtime.loadModel({ modelPath: ggufPath });
    let compared = 0;
    try {
      expected.probes.forEach((text, i) => {
        // llama.cpp puts its space prefix before every text segment (at the start and after each special
        // token), the legacy Prepend behaviour. Metaspace adds none to a segment that already starts with a
        // space, and with prepend_scheme "first" none after a special token; llama.cpp cannot express that, so
        // for Metaspace only texts without a leading space or special tokens are compared.
        if (name !== "llama2-legacy" && (/^[\s▁]/u.test(text) || /<s>|<\/s>|<unk>|\[\/?INST\]/.test(text)))
          return;
        compared++;
        assert.deepEqual(
          model.tokenize(text, true),
          expected.expected[name][i].ids,
          `${name}: ${JSON.stringify(text)}`,
        );
      });
    } finally {
      await model.dispose();
    }
    t.diagnostic(`${name}: ${compared} of ${expected.probes.length} probes tokenized as Hugging Face does`);
  }
});

const CHATML_CONFIG = { chat_template: CHATML_TEMPLATE, eos_token: "<|im_end|>" };
const FAMILIES: { name: string; config: Record<string, unknown>; tokenizer: string }[] = [
  {
    name: "llama with biases, head_dim and llama3 RoPE scaling",
    config: {
      head_dim: 24,
      attention_bias: true,
      mlp_bias: true,
      rope_theta: 500000,
      rope_scaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 32,
      },
    },
    tokenizer: join(WORLD_BASE, "tokenizer.json"),
  },
  {
    name: "llama with linear RoPE scaling",
    config: { rope_scaling: { type: "linear", factor: 4 } },
    tokenizer: join(WORLD_BASE, "tokenizer.json"),
  },
  {
    name: "qwen2 (q/k/v biases, tied embeddings)",
    config: {
      model_type: "qwen2",
      tie_word_embeddings: true,
      use_sliding_window: false,
      rope_theta: 1000000,
    },
    tokenizer: join(FIXTURES, "qwen2-style.tokenizer.json"),
  },
  {
    name: "qwen3 (q/k norms, head_dim != hidden/heads)",
    config: { model_type: "qwen3", head_dim: 32, tie_word_embeddings: true, rope_theta: 1000000 },
    tokenizer: join(FIXTURES, "qwen2-style.tokenizer.json"),
  },
  {
    name: "mistral (head_dim, sliding window longer than the prompts)",
    config: { model_type: "mistral", head_dim: 24, sliding_window: 96 },
    tokenizer: join(WORLD_BASE, "tokenizer.json"),
  },
];

for (const family of FAMILIES)
  test(`a random ${family.name} as GGUF agrees with llama.cpp`, { skip: SKIP }, async (t) => {
    const tokenizerJson = JSON.parse(readFileSync(family.tokenizer, "utf8"));
    const label = family.name.split(" ")[0];
    const dir = randomCheckpoint(
      `family-${label}-${FAMILIES.indexOf(family)}`,
      { ...SMALL, vocab_size: 1040, max_position_embeddings: 256, ...family.config },
      tokenizerJson,
      CHATML_CONFIG,
    );
    assertAgreement(t, family.name, await compareWithLlamaCpp(dir, `family-${FAMILIES.indexOf(family)}`));
  });

// The published shapes (vocabularies of 49K to 152K, hidden sizes to 2048) with one decoder layer:
// `selfsteer model init --like NAME --layers 1`, its tokenizer of the family's kind and chat template.
// smollm2-135m always runs (about a minute); the three with 0.5-1 GB embeddings take several minutes
// each on a loaded 2-core machine, so they run with SELFSTEER_INTEROP_LARGE=1 (every family's layers
// are covered above by the small random checkpoints).
const LARGE = process.env.SELFSTEER_INTEROP_LARGE === "1";
for (const like of ["smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b", "qwen3-0.6b"]) {
  const skip =
    SKIP ||
    (like !== "smollm2-135m" && !LARGE
      ? "a large vocabulary: set SELFSTEER_INTEROP_LARGE=1 to run it"
      : false);
  test(`model init --like ${like} --layers 1 as GGUF agrees with llama.cpp`, { skip }, async (t) => {
    const dir = join(work, `like-${like}`);
    ok("model", "init", "--like", like, "--layers", "1", "--seed", "2", "--std", "0.2", "--out", dir);
    try {
      assertAgreement(t, like, await compareWithLlamaCpp(dir, `like-${like}`));
    } finally {
      // These are large (up to 1 GB each): free the disk before the next one.
      rmSync(dir, { recursive: true, force: true });
      rmSync(join(work, `like-${like}.gguf`), { force: true });
    }
  });
}
