/**
 * Stand-ins for published models: a real model's exact config.json, generation_config.json and a
 * tokenizer of its kind (byte-level BPE with that family's pre-tokenizer, its special tokens at their
 * real ids, the vocabulary padded to the same size, a chat template rendering the family's format), so
 * tests and benchmarks run real shapes and real chat formats without downloading anything. The weights
 * are random (`selfsteer model init --like NAME`); the tokenizer's merges are learned from a small
 * built-in corpus, so it encodes text with far fewer merges than the real one. The configs follow the
 * published config.json files of each model (bf16 there; the engine writes F32).
 */
import { UserError } from "../util/errors.js";
import { type LlamaConfig, LlamaConfigSchema } from "./config.js";
import { splitByPattern, translateSplitPattern } from "./pretokenize.js";
import { BpeTokenizer } from "./tokenizer.js";

/** The models `--like` can stand in for. */
export const LIKE_MODELS = ["smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b", "qwen3-0.6b"] as const;

/** One of LIKE_MODELS. */
export type LikeModel = (typeof LIKE_MODELS)[number];

/** A special token at its real id; `special: false` for tokens HF lists as added but not special. */
interface SpecialToken {
  id: number;
  content: string;
  special?: boolean;
}

/** Everything that makes a stand-in for one published model. */
interface LikeSpec {
  /** The published model this stands in for. */
  source: string;
  config: Record<string, unknown>;
  generationConfig: Record<string, unknown>;
  /** Ids [bpeStart, bpeEnd) hold the BPE vocabulary (learned tokens, then unreachable fillers). */
  bpeStart: number;
  bpeEnd: number;
  specials: SpecialToken[];
  /** How the corpus is cut into words for learning merges (the family's pre-tokenizer). */
  split: { kind: "regex"; pattern: string } | { kind: "digits-then-gpt2" };
  normalizer: unknown;
  preTokenizer: unknown;
  postProcessor: unknown;
  ignoreMerges: boolean;
  /** tokenizer_config.json fields besides added_tokens_decoder and chat_template. */
  tokenizerConfig: Record<string, unknown>;
  chatTemplate: string;
}

// The pre-tokenizer regexes of the Qwen2 and Llama 3 tokenizer.json files (they differ in how many
// digits a number piece holds: one for Qwen, up to three for Llama 3).
const QWEN2_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function splitThenByteLevel(pattern: string, trimOffsets: boolean): unknown {
  return {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: trimOffsets, use_regex: false },
    ],
  };
}

const BYTE_LEVEL_POST = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };

// ChatML turns, as every ChatML model renders them.
const CHATML_TURNS =
  "{%- for message in messages -%}" +
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}" +
  "{%- endfor -%}" +
  "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

/** ChatML with a default system message when the conversation has none (SmolLM2, Qwen2.5). */
function chatMLWithDefaultSystem(system: string): string {
  return (
    "{%- if messages | length == 0 or messages[0]['role'] != 'system' -%}" +
    `{{- '<|im_start|>system\\n${system}<|im_end|>\\n' -}}` +
    "{%- endif -%}" +
    CHATML_TURNS
  );
}

// Qwen3's format without reasoning: ChatML, and assistant turns after the last user message carry the
// empty thinking block that Qwen3 writes when it answers without thinking.
const QWEN3_TEMPLATE =
  "{%- set ns = namespace(last_user=-1) -%}" +
  "{%- for message in messages -%}{%- if message['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}" +
  "{%- for message in messages -%}" +
  "{%- if message['role'] == 'assistant' and loop.index0 > ns.last_user -%}" +
  "{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' + message['content'] + '<|im_end|>\n' -}}" +
  "{%- else -%}" +
  "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}" +
  "{%- endif -%}" +
  "{%- endfor -%}" +
  "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}";

// Llama 3.2's format: BOS, a system header that always carries the knowledge-cutoff lines, then one
// header block per message, contents trimmed, each turn closed by <|eot_id|>.
const LLAMA3_TEMPLATE =
  "{{- bos_token -}}" +
  "{%- if messages | length > 0 and messages[0]['role'] == 'system' -%}" +
  "{%- set system_message = messages[0]['content'] | trim -%}" +
  "{%- set turns = messages[1:] -%}" +
  "{%- else -%}" +
  "{%- set system_message = '' -%}" +
  "{%- set turns = messages -%}" +
  "{%- endif -%}" +
  "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' + system_message + '<|eot_id|>' -}}" +
  "{%- for message in turns -%}" +
  "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' -}}" +
  "{%- endfor -%}" +
  "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}";

const QWEN_SPECIALS: SpecialToken[] = [
  "<|endoftext|>",
  "<|im_start|>",
  "<|im_end|>",
  "<|object_ref_start|>",
  "<|object_ref_end|>",
  "<|box_start|>",
  "<|box_end|>",
  "<|quad_start|>",
  "<|quad_end|>",
  "<|vision_start|>",
  "<|vision_end|>",
  "<|vision_pad|>",
  "<|image_pad|>",
  "<|video_pad|>",
  "<tool_call>",
  "</tool_call>",
  "<|fim_prefix|>",
  "<|fim_middle|>",
  "<|fim_suffix|>",
  "<|fim_pad|>",
  "<|repo_name|>",
  "<|file_sep|>",
].map((content, i) => ({
  id: 151643 + i,
  content,
  special: !content.startsWith("<tool") && !content.startsWith("</tool"),
}));

const QWEN3_SPECIALS: SpecialToken[] = [
  ...QWEN_SPECIALS,
  ...["<tool_response>", "</tool_response>", "<think>", "</think>"].map((content, i) => ({
    id: 151665 + i,
    content,
    special: false,
  })),
];

const SMOLLM2_SPECIALS: SpecialToken[] = [
  "<|endoftext|>",
  "<|im_start|>",
  "<|im_end|>",
  "<repo_name>",
  "<reponame>",
  "<file_sep>",
  "<filename>",
  "<gh_stars>",
  "<issue_start>",
  "<issue_comment>",
  "<issue_closed>",
  "<jupyter_start>",
  "<jupyter_text>",
  "<jupyter_code>",
  "<jupyter_output>",
  "<jupyter_script>",
  "<empty_output>",
].map((content, id) => ({ id, content }));

// Llama 3: <|begin_of_text|> at 128000, the chat header and turn tokens, and reserved tokens filling
// the 256 ids up to 128255 (numbered 0, 1, 2, ... in id order, skipping the named ones).
const LLAMA3_SPECIALS: SpecialToken[] = (() => {
  const named = new Map<number, string>([
    [128000, "<|begin_of_text|>"],
    [128001, "<|end_of_text|>"],
    [128004, "<|finetune_right_pad_id|>"],
    [128006, "<|start_header_id|>"],
    [128007, "<|end_header_id|>"],
    [128008, "<|eom_id|>"],
    [128009, "<|eot_id|>"],
    [128010, "<|python_tag|>"],
  ]);
  const out: SpecialToken[] = [];
  let reserved = 0;
  for (let id = 128000; id < 128256; id++)
    out.push({ id, content: named.get(id) ?? `<|reserved_special_token_${reserved++}|>` });
  return out;
})();

function addedTokensDecoder(specials: readonly SpecialToken[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of specials)
    out[String(s.id)] = {
      content: s.content,
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: s.special !== false,
    };
  return out;
}

const QWEN_TOKENIZER_CONFIG = {
  add_prefix_space: false,
  bos_token: null,
  clean_up_tokenization_spaces: false,
  eos_token: "<|im_end|>",
  errors: "replace",
  model_max_length: 131072,
  pad_token: "<|endoftext|>",
  split_special_tokens: false,
  tokenizer_class: "Qwen2Tokenizer",
  unk_token: null,
};

const SPECS: Record<LikeModel, LikeSpec> = {
  "smollm2-135m": {
    source: "HuggingFaceTB/SmolLM2-135M-Instruct",
    config: {
      architectures: ["LlamaForCausalLM"],
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: 1,
      eos_token_id: 2,
      head_dim: 64,
      hidden_act: "silu",
      hidden_size: 576,
      initializer_range: 0.041666666666666664,
      intermediate_size: 1536,
      is_llama_config: true,
      max_position_embeddings: 8192,
      mlp_bias: false,
      model_type: "llama",
      num_attention_heads: 9,
      num_hidden_layers: 30,
      num_key_value_heads: 3,
      pad_token_id: 2,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_interleaved: false,
      rope_scaling: null,
      rope_theta: 100000,
      tie_word_embeddings: true,
      torch_dtype: "bfloat16",
      use_cache: true,
      vocab_size: 49152,
    },
    generationConfig: { bos_token_id: 1, eos_token_id: 2, pad_token_id: 2 },
    bpeStart: 17,
    bpeEnd: 49152,
    specials: SMOLLM2_SPECIALS,
    split: { kind: "digits-then-gpt2" },
    normalizer: null,
    preTokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Digits", individual_digits: true },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    },
    postProcessor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    ignoreMerges: false,
    tokenizerConfig: {
      additional_special_tokens: ["<|im_start|>", "<|im_end|>"],
      bos_token: "<|im_start|>",
      clean_up_tokenization_spaces: false,
      eos_token: "<|im_end|>",
      model_max_length: 8192,
      pad_token: "<|im_end|>",
      tokenizer_class: "GPT2Tokenizer",
      unk_token: "<|endoftext|>",
      vocab_size: 49152,
    },
    chatTemplate: chatMLWithDefaultSystem(
      "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    ),
  },
  "qwen2.5-0.5b": {
    source: "Qwen/Qwen2.5-0.5B-Instruct",
    config: {
      architectures: ["Qwen2ForCausalLM"],
      attention_dropout: 0.0,
      bos_token_id: 151643,
      eos_token_id: 151645,
      hidden_act: "silu",
      hidden_size: 896,
      initializer_range: 0.02,
      intermediate_size: 4864,
      max_position_embeddings: 32768,
      max_window_layers: 21,
      model_type: "qwen2",
      num_attention_heads: 14,
      num_hidden_layers: 24,
      num_key_value_heads: 2,
      rms_norm_eps: 1e-6,
      rope_theta: 1000000.0,
      sliding_window: 32768,
      tie_word_embeddings: true,
      torch_dtype: "bfloat16",
      use_cache: true,
      use_sliding_window: false,
      vocab_size: 151936,
    },
    generationConfig: {
      bos_token_id: 151643,
      pad_token_id: 151643,
      do_sample: true,
      eos_token_id: [151645, 151643],
      repetition_penalty: 1.05,
      temperature: 0.7,
      top_p: 0.8,
      top_k: 20,
    },
    bpeStart: 0,
    bpeEnd: 151643,
    specials: QWEN_SPECIALS,
    split: { kind: "regex", pattern: QWEN2_SPLIT },
    normalizer: { type: "NFC" },
    preTokenizer: splitThenByteLevel(QWEN2_SPLIT, false),
    postProcessor: BYTE_LEVEL_POST,
    ignoreMerges: false,
    tokenizerConfig: {
      ...QWEN_TOKENIZER_CONFIG,
      additional_special_tokens: QWEN_SPECIALS.slice(1)
        .filter((s) => s.special !== false)
        .map((s) => s.content),
    },
    chatTemplate: chatMLWithDefaultSystem(
      "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    ),
  },
  "llama-3.2-1b": {
    source: "meta-llama/Llama-3.2-1B-Instruct",
    config: {
      architectures: ["LlamaForCausalLM"],
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: 128000,
      eos_token_id: [128001, 128008, 128009],
      head_dim: 64,
      hidden_act: "silu",
      hidden_size: 2048,
      initializer_range: 0.02,
      intermediate_size: 8192,
      max_position_embeddings: 131072,
      mlp_bias: false,
      model_type: "llama",
      num_attention_heads: 32,
      num_hidden_layers: 16,
      num_key_value_heads: 8,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_scaling: {
        factor: 32.0,
        high_freq_factor: 4.0,
        low_freq_factor: 1.0,
        original_max_position_embeddings: 8192,
        rope_type: "llama3",
      },
      rope_theta: 500000.0,
      tie_word_embeddings: true,
      torch_dtype: "bfloat16",
      use_cache: true,
      vocab_size: 128256,
    },
    generationConfig: {
      bos_token_id: 128000,
      do_sample: true,
      eos_token_id: [128001, 128008, 128009],
      temperature: 0.6,
      top_p: 0.9,
    },
    bpeStart: 0,
    bpeEnd: 128000,
    specials: LLAMA3_SPECIALS,
    split: { kind: "regex", pattern: LLAMA3_SPLIT },
    normalizer: null,
    preTokenizer: splitThenByteLevel(LLAMA3_SPLIT, true),
    // Llama 3 tokenizers add <|begin_of_text|> when asked to add special tokens.
    postProcessor: {
      type: "Sequence",
      processors: [
        { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: "TemplateProcessing",
          single: [
            { SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } },
            { Sequence: { id: "A", type_id: 0 } },
          ],
          pair: [
            { SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } },
            { Sequence: { id: "A", type_id: 0 } },
            { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } },
            { Sequence: { id: "B", type_id: 1 } },
          ],
          special_tokens: {
            "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [128000], tokens: ["<|begin_of_text|>"] },
          },
        },
      ],
    },
    ignoreMerges: true,
    tokenizerConfig: {
      bos_token: "<|begin_of_text|>",
      clean_up_tokenization_spaces: true,
      eos_token: "<|eot_id|>",
      model_input_names: ["input_ids", "attention_mask"],
      model_max_length: 131072,
      tokenizer_class: "PreTrainedTokenizerFast",
    },
    chatTemplate: LLAMA3_TEMPLATE,
  },
  "qwen3-0.6b": {
    source: "Qwen/Qwen3-0.6B",
    config: {
      architectures: ["Qwen3ForCausalLM"],
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: 151643,
      eos_token_id: 151645,
      head_dim: 128,
      hidden_act: "silu",
      hidden_size: 1024,
      initializer_range: 0.02,
      intermediate_size: 3072,
      max_position_embeddings: 40960,
      max_window_layers: 28,
      model_type: "qwen3",
      num_attention_heads: 16,
      num_hidden_layers: 28,
      num_key_value_heads: 8,
      rms_norm_eps: 1e-6,
      rope_scaling: null,
      rope_theta: 1000000,
      sliding_window: null,
      tie_word_embeddings: true,
      torch_dtype: "bfloat16",
      use_cache: true,
      use_sliding_window: false,
      vocab_size: 151936,
    },
    generationConfig: {
      bos_token_id: 151643,
      do_sample: true,
      eos_token_id: [151645, 151643],
      pad_token_id: 151643,
      temperature: 0.6,
      top_k: 20,
      top_p: 0.95,
    },
    bpeStart: 0,
    bpeEnd: 151643,
    specials: QWEN3_SPECIALS,
    split: { kind: "regex", pattern: QWEN2_SPLIT },
    normalizer: { type: "NFC" },
    preTokenizer: splitThenByteLevel(QWEN2_SPLIT, false),
    postProcessor: BYTE_LEVEL_POST,
    ignoreMerges: false,
    tokenizerConfig: {
      ...QWEN_TOKENIZER_CONFIG,
      additional_special_tokens: QWEN_SPECIALS.slice(1)
        .filter((s) => s.special !== false)
        .map((s) => s.content),
    },
    chatTemplate: QWEN3_TEMPLATE,
  },
};

/** Which published model a stand-in follows (its Hugging Face repository name). */
export function likeSource(name: LikeModel): string {
  return SPECS[name].source;
}

/** Parses a --like value; a UserError listing the choices otherwise. */
export function parseLikeModel(value: string, flag = "--like"): LikeModel {
  if ((LIKE_MODELS as readonly string[]).includes(value)) return value as LikeModel;
  throw new UserError(`${flag}: unknown model "${value}" (choose one of ${LIKE_MODELS.join(", ")})`);
}

/** The model's exact config, or with `layers` the same config with fewer (or more) decoder layers. */
export function likeConfig(name: LikeModel, options: { layers?: number } = {}): LlamaConfig {
  const raw: Record<string, unknown> = { ...SPECS[name].config };
  if (options.layers !== undefined) {
    raw.num_hidden_layers = options.layers;
    if (typeof raw.max_window_layers === "number")
      raw.max_window_layers = Math.min(options.layers, raw.max_window_layers);
  }
  return LlamaConfigSchema.parse(raw);
}

/** generation_config.json of the model (its end-of-turn ids and sampling defaults). */
export function likeGenerationConfig(name: LikeModel): Record<string, unknown> {
  return { ...SPECS[name].generationConfig, transformers_version: "4.46.0" };
}

/** tokenizer_config.json of the model: its special tokens, eos/pad/bos names and chat template. */
export function likeTokenizerConfig(name: LikeModel): Record<string, unknown> {
  const spec = SPECS[name];
  return {
    added_tokens_decoder: addedTokensDecoder(spec.specials),
    ...spec.tokenizerConfig,
    chat_template: spec.chatTemplate,
  };
}

// A small English, numbers and code corpus for learning merges (the stand-in's tokenizer only needs to
// be a valid, non-trivial tokenizer of the family's kind, not a good one).
const CORPUS = `The quick brown fox jumps over the lazy dog. A helpful assistant answers questions
clearly and safely. What is 7 + 5? It is 12. What is 128 times 3? It is 384.
The weather today is sunny, with a high of 23 degrees and a light breeze from the west.
Please write a short poem about the sea: the waves roll in, the waves roll out, the gulls call.
def add(a, b):
    return a + b

for i in range(10):
    print(add(i, i * 2))
I'm sure you'll like it; we've tested it and they're happy. Don't worry, it's fine.
Machine learning models are trained on large amounts of text. Language models predict the next token.
Alignment makes a model's answers helpful, honest and harmless. Self-steering optimization builds
preference pairs from the model itself, with good and bad principles in the system prompt.
The capital of France is Paris. The capital of Japan is Tokyo. Water boils at 100 degrees Celsius.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 2024 3.14159 -42 1,000,000.
User: Can you help me plan a trip? Assistant: Of course! Where would you like to go, and for how long?
`;

/** The corpus cut into words the way the family's pre-tokenizer cuts text. */
function corpusWords(spec: LikeSpec): string[] {
  const text = CORPUS.repeat(3);
  if (spec.split.kind === "digits-then-gpt2") return text.split(/(\p{N})/u).filter((w) => w !== "");
  const re = translateSplitPattern(spec.split.pattern);
  if (re === null) throw new Error(`like: the split pattern of ${spec.source} does not compile`);
  return splitByPattern(text, re, "Isolated");
}

/** Merges learned from the corpus for a stand-in tokenizer (byte-level BPE, no special tokens). */
const LEARNED_VOCAB = 1200;

/**
 * The model's tokenizer.json: byte-level BPE learned from a small corpus with the family's
 * pre-tokenizer, its tokens laid out from the family's first BPE id, unreachable filler tokens
 * (`<|bpe_pad_N|>`, no merge produces them) up to the first special id, and the special tokens at
 * their real ids.
 */
export function likeTokenizerJson(name: LikeModel): Record<string, unknown> {
  const spec = SPECS[name];
  const learned = BpeTokenizer.train(corpusWords(spec), LEARNED_VOCAB, { specialTokens: [] }).toJSON() as {
    model: { vocab: Record<string, number>; merges: unknown[] };
  };
  const learnedTokens = Object.entries(learned.model.vocab)
    .sort((a, b) => a[1] - b[1])
    .map(([token]) => token);
  const size = spec.bpeEnd - spec.bpeStart;
  if (learnedTokens.length > size)
    throw new Error(`like: ${learnedTokens.length} learned tokens exceed ${size}`);
  const vocab: Record<string, number> = Object.create(null);
  for (let i = 0; i < size; i++)
    vocab[i < learnedTokens.length ? learnedTokens[i] : `<|bpe_pad_${i}|>`] = spec.bpeStart + i;
  for (const s of spec.specials) vocab[s.content] = s.id;
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: spec.specials.map((s) => ({
      id: s.id,
      content: s.content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: s.special !== false,
    })),
    normalizer: spec.normalizer,
    pre_tokenizer: spec.preTokenizer,
    post_processor: spec.postProcessor,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ...(spec.ignoreMerges ? { ignore_merges: true } : {}),
      vocab,
      merges: learned.model.merges,
    },
  };
}
