/**
 * A checkpoint directory (HF layout) as the GGUF llama.cpp loads: architecture, hyperparameters,
 * tensors under llama.cpp's names, the tokenizer and the chat template, following the conventions of
 * llama.cpp's own converter (convert_hf_to_gguf.py) so llama.cpp, Ollama and LM Studio read it as
 * they read a model converted there. The container itself is gguf.ts.
 *
 * Families: `llama` and `mistral` become llama.cpp's `llama` architecture, whose RoPE rotates
 * adjacent pairs (x[2i], x[2i+1]), while HF's Llama rotates halves (x[i], x[i + d/2]); so the rows of
 * q and k (and their biases) are permuted within each head, row s·d/2 + i -> row 2i + s, which makes
 * the two rotations the same function. `qwen2` and `qwen3` use NEOX RoPE (halves) in llama.cpp too and
 * need no permutation.
 */

import { existsSync, readFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { UserError } from "../util/errors.js";
import { CHECKPOINT_FILES, loadCheckpoint } from "./checkpoint.js";
import type { LlamaConfig } from "./config.js";
import type { GgmlTypeName, GgufContents, GgufTensor, GgufValue } from "./gguf.js";
import { Q8_0_BLOCK } from "./gguf.js";
import type { NamedTensor } from "./params.js";

/** Tensor encodings `model export --type` offers. */
export const GGUF_EXPORT_TYPES = ["f32", "f16", "q8_0"] as const;
/** One of GGUF_EXPORT_TYPES. */
export type GgufExportType = (typeof GGUF_EXPORT_TYPES)[number];

/** Options of checkpointToGguf. */
export interface GgufExportOptions {
  /** How 2-D weights are stored (1-D tensors, norms and biases, stay F32 as in llama.cpp). */
  type: GgufExportType;
  /** general.name (default: the directory's name). */
  name?: string;
}

// llama.cpp's general.file_type (llama_ftype): what most of the weights are.
const FILE_TYPE: Record<GgufExportType, number> = { f32: 0, f16: 1, q8_0: 7 };
const WEIGHT_TYPE: Record<GgufExportType, GgmlTypeName> = { f32: "F32", f16: "F16", q8_0: "Q8_0" };

// llama.cpp's token types (llama_token_type).
const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

// The Split regexes of published byte-level tokenizers whose pre-tokenizer llama.cpp implements, by
// the name llama.cpp gives it (tokenizer.ggml.pre).
/** Llama 3's Split regex (llama.cpp's "llama-bpe" pre-tokenizer). */
export const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/** Qwen2's Split regex (llama.cpp's "qwen2" pre-tokenizer). */
export const QWEN2_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const KNOWN_SPLITS: Record<string, string> = { [LLAMA3_SPLIT]: "llama-bpe", [QWEN2_SPLIT]: "qwen2" };

/** The llama.cpp architecture a config's model_type becomes. */
function ggufArchitecture(configPath: string, config: LlamaConfig): "llama" | "qwen2" | "qwen3" {
  const modelType = config.model_type;
  if (modelType === "llama" || modelType === "mistral") return "llama";
  if (modelType === "qwen2" || modelType === "qwen3") return modelType;
  throw new UserError(
    `${configPath}: field model_type: "${modelType}" cannot be exported to GGUF (llama, mistral, qwen2, qwen3 can)`,
  );
}

/**
 * Builds the GGUF contents of a checkpoint directory. Throws UserError naming the file and field for
 * what GGUF (or llama.cpp) cannot express: reward models, unknown tensors, unsupported RoPE scaling,
 * tokenizers whose pre-tokenizer llama.cpp does not implement.
 */
export function checkpointToGguf(dir: string, options: GgufExportOptions): GgufContents {
  const ckpt = loadCheckpoint(dir);
  const configPath = join(dir, CHECKPOINT_FILES.config);
  if (ckpt.scoreHead)
    throw new UserError(
      `${dir}: a reward model (score.weight) cannot be exported to GGUF; export a causal LM checkpoint`,
    );
  const config = ckpt.config;
  const raw = config as Record<string, unknown>;
  const arch = ggufArchitecture(configPath, config);
  const heads = config.num_attention_heads;
  const kvHeads = config.num_key_value_heads ?? heads;
  const headDim = config.head_dim ?? config.hidden_size / heads;

  const metadata = new Map<string, GgufValue>();
  const str = (k: string, v: string) => metadata.set(k, { type: "STRING", value: v });
  const u32 = (k: string, v: number) => metadata.set(k, { type: "UINT32", value: v });
  const f32 = (k: string, v: number) => metadata.set(k, { type: "FLOAT32", value: v });
  str("general.architecture", arch);
  str("general.type", "model");
  str("general.name", options.name ?? basename(resolve(dir)));
  u32("general.file_type", FILE_TYPE[options.type]);
  u32("general.quantization_version", 2);

  if (raw.use_sliding_window === true)
    throw new UserError(
      `${configPath}: field use_sliding_window: true cannot be exported to GGUF (llama.cpp's ${arch} has no sliding window)`,
    );
  // Mistral's window: llama.cpp's llama attends to the whole context, which is the same model as long
  // as the context does not exceed the window, so the exported context is the window. (Qwen configs
  // carry a sliding_window that only use_sliding_window turns on.)
  let contextLength = config.max_position_embeddings;
  if (arch === "llama" && typeof raw.sliding_window === "number" && raw.sliding_window < contextLength)
    contextLength = raw.sliding_window;
  u32(`${arch}.context_length`, contextLength);
  u32(`${arch}.embedding_length`, config.hidden_size);
  u32(`${arch}.block_count`, config.num_hidden_layers);
  u32(`${arch}.feed_forward_length`, config.intermediate_size);
  u32(`${arch}.attention.head_count`, heads);
  u32(`${arch}.attention.head_count_kv`, kvHeads);
  u32(`${arch}.attention.key_length`, headDim);
  u32(`${arch}.attention.value_length`, headDim);
  f32(`${arch}.attention.layer_norm_rms_epsilon`, config.rms_norm_eps);
  f32(`${arch}.rope.freq_base`, config.rope_theta);
  u32(`${arch}.rope.dimension_count`, headDim);
  u32(`${arch}.vocab_size`, config.vocab_size);

  const ropeFactors = ropeScaling(configPath, raw.rope_scaling, arch, config.rope_theta, headDim, metadata);

  const tokenizer = tokenizerMetadata(dir, config, ckpt.tokenizerJson, ckpt.tokenizerConfigJson);
  for (const [k, v] of tokenizer) metadata.set(k, v);

  const tensors = ggufTensors(dir, config, arch, ckpt.tensors, WEIGHT_TYPE[options.type]);
  if (ropeFactors !== null)
    tensors.push({ name: "rope_freqs.weight", dims: [ropeFactors.length], type: "F32", data: ropeFactors });
  return { metadata, tensors };
}

/**
 * Writes the RoPE scaling keys; returns llama.cpp's per-frequency divisors (rope_freqs.weight) for
 * Llama 3's scaling, which llama.cpp expresses as a tensor rather than keys. With inv_freq_i =
 * base^(-2i/d), wavelength w_i = 2π / inv_freq_i, L = original_max_position_embeddings:
 *   w_i < L / high_freq_factor: divisor 1; w_i > L / low_freq_factor: divisor factor;
 *   else s = (L / w_i − low) / (high − low) and divisor = 1 / ((1 − s) / factor + s),
 * exactly HF's _compute_llama3_parameters written as inv_freq_i / divisor_i.
 */
function ropeScaling(
  configPath: string,
  scaling: unknown,
  arch: string,
  base: number,
  headDim: number,
  metadata: Map<string, GgufValue>,
): Float32Array | null {
  if (scaling === undefined || scaling === null) return null;
  const s = scaling as Record<string, unknown>;
  const type = s.rope_type ?? s.type;
  const num = (field: string): number => {
    const v = s[field];
    if (typeof v !== "number" || !Number.isFinite(v))
      throw new UserError(
        `${configPath}: field rope_scaling.${field}: expected a number, got ${JSON.stringify(v)}`,
      );
    return v;
  };
  if (type === "default") return null;
  if (type === "linear") {
    metadata.set(`${arch}.rope.scaling.type`, { type: "STRING", value: "linear" });
    metadata.set(`${arch}.rope.scaling.factor`, { type: "FLOAT32", value: num("factor") });
    return null;
  }
  if (type === "llama3" && arch === "llama") {
    const factor = num("factor");
    const low = num("low_freq_factor");
    const high = num("high_freq_factor");
    const original = num("original_max_position_embeddings");
    const lowWavelen = original / low;
    const highWavelen = original / high;
    const divisors = new Float32Array(headDim / 2);
    for (let i = 0; i < headDim / 2; i++) {
      const invFreq = 1 / base ** ((2 * i) / headDim);
      const wavelen = (2 * Math.PI) / invFreq;
      if (wavelen < highWavelen) divisors[i] = 1;
      else if (wavelen > lowWavelen) divisors[i] = factor;
      else {
        const smooth = (original / wavelen - low) / (high - low);
        divisors[i] = 1 / ((1 - smooth) / factor + smooth);
      }
    }
    return divisors;
  }
  throw new UserError(
    `${configPath}: field rope_scaling: type ${JSON.stringify(type)} cannot be exported to GGUF for ${arch} (linear${
      arch === "llama" ? ", llama3" : ""
    } can)`,
  );
}

/**
 * Permutes the rows of a q or k projection (weight [heads·d, in] or bias [heads·d]) from HF's
 * rotate-half order to llama.cpp's interleaved order: within each head, row s·d/2 + i goes to 2i + s.
 */
export function permuteForInterleavedRope(
  data: Float32Array,
  heads: number,
  rowLength: number,
): Float32Array {
  const rows = data.length / rowLength;
  const d = rows / heads;
  const half = d / 2;
  const out = new Float32Array(data.length);
  for (let h = 0; h < heads; h++)
    for (let s = 0; s < 2; s++)
      for (let i = 0; i < half; i++) {
        const from = (h * d + s * half + i) * rowLength;
        const to = (h * d + 2 * i + s) * rowLength;
        out.set(data.subarray(from, from + rowLength), to);
      }
  return out;
}

const LAYER_TENSORS: Record<string, string> = {
  "input_layernorm.weight": "attn_norm.weight",
  "post_attention_layernorm.weight": "ffn_norm.weight",
  "self_attn.q_proj.weight": "attn_q.weight",
  "self_attn.q_proj.bias": "attn_q.bias",
  "self_attn.k_proj.weight": "attn_k.weight",
  "self_attn.k_proj.bias": "attn_k.bias",
  "self_attn.v_proj.weight": "attn_v.weight",
  "self_attn.v_proj.bias": "attn_v.bias",
  "self_attn.o_proj.weight": "attn_output.weight",
  "self_attn.o_proj.bias": "attn_output.bias",
  "self_attn.q_norm.weight": "attn_q_norm.weight",
  "self_attn.k_norm.weight": "attn_k_norm.weight",
  "mlp.gate_proj.weight": "ffn_gate.weight",
  "mlp.gate_proj.bias": "ffn_gate.bias",
  "mlp.up_proj.weight": "ffn_up.weight",
  "mlp.up_proj.bias": "ffn_up.bias",
  "mlp.down_proj.weight": "ffn_down.weight",
  "mlp.down_proj.bias": "ffn_down.bias",
};

/** llama.cpp's name for an HF tensor name, or undefined for one it has no place for. */
export function ggufTensorName(hfName: string): string | undefined {
  if (hfName === "model.embed_tokens.weight") return "token_embd.weight";
  if (hfName === "model.norm.weight") return "output_norm.weight";
  if (hfName === "lm_head.weight") return "output.weight";
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  if (m === null) return undefined;
  const suffix = LAYER_TENSORS[m[2]];
  return suffix === undefined ? undefined : `blk.${m[1]}.${suffix}`;
}

function ggufTensors(
  dir: string,
  config: LlamaConfig,
  arch: string,
  tensors: Map<string, NamedTensor>,
  weightType: GgmlTypeName,
): GgufTensor[] {
  const heads = config.num_attention_heads;
  const kvHeads = config.num_key_value_heads ?? heads;
  const out: GgufTensor[] = [];
  for (const t of tensors.values()) {
    const name = ggufTensorName(t.name);
    if (name === undefined)
      throw new UserError(`${dir}: tensor ${t.name} has no GGUF counterpart for llama.cpp's ${arch}`);
    let data = t.data;
    if (arch === "llama") {
      const cols = t.shape.length === 2 ? t.shape[1] : 1;
      if (/\.attn_q\.(weight|bias)$/.test(name)) data = permuteForInterleavedRope(data, heads, cols);
      else if (/\.attn_k\.(weight|bias)$/.test(name)) data = permuteForInterleavedRope(data, kvHeads, cols);
    }
    const dims = t.shape.slice().reverse();
    let type: GgmlTypeName = "F32";
    if (dims.length === 2) {
      type = weightType;
      // As llama.cpp's converter does: a row that does not split into Q8_0 blocks is stored as F16.
      if (type === "Q8_0" && dims[0] % Q8_0_BLOCK !== 0) type = "F16";
    }
    out.push({ name, dims, type, data });
  }
  return out;
}

// --- the tokenizer -------------------------------------------------------------------------------

interface TokenizerJson {
  model?: {
    type?: unknown;
    vocab?: Record<string, number>;
    merges?: (string | [string, string])[];
    unk_token?: string | null;
    byte_fallback?: boolean;
  };
  added_tokens?: { id: number; content: string; special?: boolean }[] | null;
  normalizer?: unknown;
  pre_tokenizer?: unknown;
  post_processor?: unknown;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The flattened steps of a Sequence (or a single pre-tokenizer / normalizer). */
function steps(v: unknown, key: "pretokenizers" | "normalizers"): Json[] {
  if (!isObject(v)) return [];
  if (v.type === "Sequence" && Array.isArray(v[key]))
    return (v[key] as unknown[]).flatMap((x) => steps(x, key));
  return [v];
}

/**
 * llama.cpp's name for a byte-level tokenizer's pre-tokenizer (tokenizer.ggml.pre), read from the
 * structure of tokenizer.json rather than guessed: GPT-2's ByteLevel regex, SmolLM's digits + GPT-2,
 * Llama 3's and Qwen2's Split regexes.
 */
function byteLevelPreName(source: string, preTokenizer: unknown): string {
  const s = steps(preTokenizer, "pretokenizers");
  const describe = () => JSON.stringify(preTokenizer);
  const byteLevel = s.at(-1);
  if (byteLevel?.type !== "ByteLevel" || byteLevel.add_prefix_space === true)
    throw new UserError(
      `${source}: field pre_tokenizer: ${describe()} has no llama.cpp counterpart (supported: ByteLevel without a prefix space, after nothing, Digits or a Llama 3 / Qwen2 Split)`,
    );
  const useRegex = byteLevel.use_regex !== false;
  if (s.length === 1 && useRegex) return "gpt-2";
  if (s.length === 2 && useRegex && s[0].type === "Digits" && s[0].individual_digits === true)
    return "smollm";
  if (s.length === 2 && !useRegex && s[0].type === "Split" && isObject(s[0].pattern)) {
    const regex = s[0].pattern.Regex;
    const name = typeof regex === "string" ? KNOWN_SPLITS[regex] : undefined;
    if (name !== undefined && s[0].behavior === "Isolated" && s[0].invert !== true) return name;
  }
  throw new UserError(
    `${source}: field pre_tokenizer: ${describe()} has no llama.cpp counterpart (supported: GPT-2 ByteLevel, SmolLM digits, Llama 3 and Qwen2 Split regexes)`,
  );
}

/** Whether a tokenizer.json is SentencePiece-style (▁ for spaces, <0xXX> byte fallback). */
function isSentencePieceStyle(tok: TokenizerJson): boolean {
  if (tok.model?.byte_fallback === true) return true;
  if (steps(tok.pre_tokenizer, "pretokenizers").some((p) => p.type === "Metaspace")) return true;
  return steps(tok.normalizer, "normalizers").some((n) => n.type === "Replace" && n.content === "▁");
}

/** Whether a SentencePiece-style tokenizer prepends ▁ to the text (llama.cpp's add_space_prefix). */
function addsSpacePrefix(tok: TokenizerJson): boolean {
  for (const n of steps(tok.normalizer, "normalizers"))
    if (n.type === "Prepend" && n.prepend === "▁") return true;
  for (const p of steps(tok.pre_tokenizer, "pretokenizers"))
    if (p.type === "Metaspace") return p.prepend_scheme !== "never" && p.add_prefix_space !== false;
  return false;
}

function tokenContent(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (isObject(v) && typeof v.content === "string") return v.content;
  return undefined;
}

/** The tokenizer.* keys: vocabulary, merges or scores, special ids, flags, chat template. */
function tokenizerMetadata(
  dir: string,
  config: LlamaConfig,
  tokenizerJson: unknown,
  tokenizerConfigJson: unknown,
): Map<string, GgufValue> {
  const source = join(dir, CHECKPOINT_FILES.tokenizer);
  if (tokenizerJson === undefined)
    throw new UserError(`${dir}: no ${CHECKPOINT_FILES.tokenizer}; GGUF needs the tokenizer inside`);
  const tok = tokenizerJson as TokenizerJson;
  if (tok.model?.type !== "BPE" || !isObject(tok.model.vocab) || !Array.isArray(tok.model.merges))
    throw new UserError(`${source}: field model: only BPE tokenizers can be exported to GGUF`);
  const tc = isObject(tokenizerConfigJson) ? tokenizerConfigJson : {};
  const tcPath = join(dir, CHECKPOINT_FILES.tokenizerConfig);

  const n = config.vocab_size;
  const tokens: (string | undefined)[] = new Array(n);
  const types: number[] = new Array(n).fill(TOKEN_TYPE.NORMAL);
  const idOf = new Map<string, number>();
  const place = (content: string, id: number, field: string) => {
    if (id < 0 || id >= n)
      throw new UserError(`${source}: field ${field}: id ${id} is outside the model's vocab_size ${n}`);
    tokens[id] = content;
    idOf.set(content, id);
  };
  for (const [content, id] of Object.entries(tok.model.vocab))
    place(content, id, `model.vocab[${JSON.stringify(content)}]`);
  for (const [i, a] of (tok.added_tokens ?? []).entries()) {
    place(a.content, a.id, `added_tokens[${i}].id`);
    types[a.id] = a.special === true ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED;
  }
  // Ids the tokenizer never produces (the embedding is often padded past the vocabulary), named as
  // llama.cpp's converter names them.
  for (let id = 0; id < n; id++)
    if (tokens[id] === undefined) {
      tokens[id] = `[PAD${id}]`;
      types[id] = TOKEN_TYPE.UNUSED;
    }

  const meta = new Map<string, GgufValue>();
  const sentencePiece = isSentencePieceStyle(tok);
  const unk = tok.model.unk_token ?? undefined;
  if (sentencePiece) {
    meta.set("tokenizer.ggml.model", { type: "STRING", value: "llama" });
    meta.set("tokenizer.ggml.pre", { type: "STRING", value: "default" });
    // llama.cpp's SentencePiece tokenizer merges the adjacent pair whose result scores highest; a
    // merge's rank in tokenizer.json is that priority, so a merged token scores -(rank + 1).
    const scores = new Array<number>(n).fill(0);
    tok.model.merges.forEach((m, rank) => {
      const pair = typeof m === "string" ? m.split(" ") : m;
      const id = idOf.get(pair.join(""));
      if (id !== undefined && scores[id] === 0) scores[id] = -(rank + 1);
    });
    for (let id = 0; id < n; id++) {
      if (types[id] !== TOKEN_TYPE.NORMAL) continue;
      if (/^<0x[0-9A-Fa-f]{2}>$/.test(tokens[id]!)) types[id] = TOKEN_TYPE.BYTE;
      else if (unk !== undefined && tokens[id] === unk) types[id] = TOKEN_TYPE.UNKNOWN;
    }
    meta.set("tokenizer.ggml.tokens", { type: "ARRAY", itemType: "STRING", value: tokens as string[] });
    meta.set("tokenizer.ggml.scores", { type: "ARRAY", itemType: "FLOAT32", value: scores });
    meta.set("tokenizer.ggml.token_type", { type: "ARRAY", itemType: "INT32", value: types });
    meta.set("tokenizer.ggml.add_space_prefix", { type: "BOOL", value: addsSpacePrefix(tok) });
  } else {
    const pre = byteLevelPreName(source, tok.pre_tokenizer);
    const normalizers = steps(tok.normalizer, "normalizers");
    if (normalizers.some((x) => x.type !== "NFC") || (normalizers.length > 0 && pre !== "qwen2"))
      throw new UserError(
        `${source}: field normalizer: ${JSON.stringify(tok.normalizer)} has no llama.cpp counterpart for pre-tokenizer ${pre}`,
      );
    meta.set("tokenizer.ggml.model", { type: "STRING", value: "gpt2" });
    meta.set("tokenizer.ggml.pre", { type: "STRING", value: pre });
    meta.set("tokenizer.ggml.tokens", { type: "ARRAY", itemType: "STRING", value: tokens as string[] });
    meta.set("tokenizer.ggml.token_type", { type: "ARRAY", itemType: "INT32", value: types });
    const merges = tok.model.merges.map((m, i) => {
      const pair = typeof m === "string" ? m.split(" ") : m;
      if (pair.length !== 2 || pair.some((p) => p.includes(" ")))
        throw new UserError(
          `${source}: field model.merges[${i}]: ${JSON.stringify(m)} cannot be written as "left right"`,
        );
      return pair.join(" ");
    });
    meta.set("tokenizer.ggml.merges", { type: "ARRAY", itemType: "STRING", value: merges });
  }

  // Special ids: tokenizer_config.json's tokens by name, else config.json's ids.
  const special = (field: string, configId: unknown): number | undefined => {
    const content = tokenContent(tc[field]);
    if (content !== undefined) {
      const id = idOf.get(content);
      if (id === undefined)
        throw new UserError(
          `${tcPath}: field ${field}: ${JSON.stringify(content)} is not a token of ${source}`,
        );
      return id;
    }
    const id = Array.isArray(configId) ? configId[0] : configId;
    return typeof id === "number" && id >= 0 && id < n ? id : undefined;
  };
  const ids: [string, number | undefined][] = [
    ["tokenizer.ggml.bos_token_id", special("bos_token", config.bos_token_id)],
    ["tokenizer.ggml.eos_token_id", special("eos_token", config.eos_token_id)],
    ["tokenizer.ggml.padding_token_id", special("pad_token", config.pad_token_id)],
    ["tokenizer.ggml.unknown_token_id", unk === undefined ? undefined : idOf.get(unk)],
  ];
  for (const [key, id] of ids) if (id !== undefined) meta.set(key, { type: "UINT32", value: id });
  meta.set("tokenizer.ggml.add_bos_token", { type: "BOOL", value: addsBos(tok, tc) });
  meta.set("tokenizer.ggml.add_eos_token", { type: "BOOL", value: tc.add_eos_token === true });

  const template = chatTemplate(tc.chat_template) ?? chatTemplateFile(dir);
  if (template !== undefined) meta.set("tokenizer.chat_template", { type: "STRING", value: template });
  return meta;
}

/** Whether encoding starts with BOS: tokenizer_config's add_bos_token, else a post-processor that adds one. */
function addsBos(tok: TokenizerJson, tc: Json): boolean {
  if (typeof tc.add_bos_token === "boolean") return tc.add_bos_token;
  const post = steps(tok.post_processor, "pretokenizers").find((p) => p.type === "TemplateProcessing");
  const single = post?.single;
  return Array.isArray(single) && isObject(single[0]) && "SpecialToken" in single[0];
}

/** The default template of tokenizer_config's chat_template (a string, or a list of named ones). */
function chatTemplate(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    const named = v.find((t) => isObject(t) && t.name === "default");
    if (isObject(named) && typeof named.template === "string") return named.template;
  }
  return undefined;
}

/** Newer HF checkpoints keep the template in chat_template.jinja beside tokenizer_config.json. */
function chatTemplateFile(dir: string): string | undefined {
  const path = join(dir, "chat_template.jinja");
  return existsSync(path) ? readFileSync(path, "utf8") : undefined;
}
