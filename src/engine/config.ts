import { z } from "zod";

/**
 * Model configuration with Hugging Face config.json field names, so `config.json` round-trips with
 * transformers. Four decoder families share the engine; they differ only in what the config turns on
 * (docs/extending.md, "A model family"):
 * - `llama` (LlamaForCausalLM): optional q/k/v/o biases (`attention_bias`) and MLP biases (`mlp_bias`),
 *   RoPE scaling of type `linear` or `llama3` (Llama 3.1 / 3.2);
 * - `qwen2` (Qwen2 / Qwen2.5): q/k/v biases always, no o_proj bias (attention_bias is ignored, as
 *   transformers ignores it);
 * - `mistral`: no biases, a `sliding_window` every layer honours;
 * - `qwen3`: per-head RMSNorm of q and k before RoPE (`q_norm`, `k_norm`), optional `attention_bias`.
 * What a config asks for that the engine does not implement (another RoPE scaling, a sliding window
 * on Qwen, a quantization config, ...) is refused by the schema, naming the field. Unknown fields that
 * do not change the computation are kept, so a published config.json saves back unchanged.
 */

/** The decoder families the engine runs, by their config.json `model_type`. */
export const MODEL_FAMILIES = ["llama", "qwen2", "mistral", "qwen3"] as const;

/** One of MODEL_FAMILIES. */
export type ModelFamily = (typeof MODEL_FAMILIES)[number];

/** The transformers class-name prefix of each family (LlamaForCausalLM, Qwen2ForCausalLM, ...). */
const ARCHITECTURE_PREFIX: Record<ModelFamily, string> = {
  llama: "Llama",
  qwen2: "Qwen2",
  mistral: "Mistral",
  qwen3: "Qwen3",
};

/** The `architectures` entry transformers expects for a family's causal LM or reward model. */
export function architectureName(family: ModelFamily, scoreHead: boolean): string {
  return `${ARCHITECTURE_PREFIX[family]}${scoreHead ? "ForSequenceClassification" : "ForCausalLM"}`;
}

/** True for any family's sequence-classification (reward model) architecture name. */
export function isScoreArchitecture(name: string): boolean {
  return name.endsWith("ForSequenceClassification");
}

// What transformers' config classes default to when a field is absent, per family (LlamaConfig keeps
// the engine's historical eps default of 1e-5, which every checkpoint it wrote spells out anyway).
const FAMILY_DEFAULTS: Record<ModelFamily, Record<string, unknown>> = {
  llama: { rms_norm_eps: 1e-5, attention_bias: false, mlp_bias: false, max_position_embeddings: 2048 },
  qwen2: { rms_norm_eps: 1e-6, use_sliding_window: false, max_position_embeddings: 32768 },
  mistral: { rms_norm_eps: 1e-6, sliding_window: 4096, max_position_embeddings: 4096 * 32 },
  qwen3: {
    rms_norm_eps: 1e-6,
    head_dim: 128,
    attention_bias: false,
    use_sliding_window: false,
    max_position_embeddings: 32768,
  },
};

function isFamily(value: unknown): value is ModelFamily {
  return typeof value === "string" && (MODEL_FAMILIES as readonly string[]).includes(value);
}

// Fills the family's defaults for absent fields before validation (model_type itself defaults to llama).
function withFamilyDefaults(raw: unknown): unknown {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return raw;
  const input = raw as Record<string, unknown>;
  const family = input.model_type ?? "llama";
  if (!isFamily(family)) return raw;
  const out: Record<string, unknown> = { ...input, model_type: family };
  for (const [key, value] of Object.entries(FAMILY_DEFAULTS[family]))
    if (out[key] === undefined) out[key] = value;
  return out;
}

const RopeScalingSchema = z
  .object({
    rope_type: z.string().optional(),
    type: z.string().optional(),
    factor: z.number().optional(),
    low_freq_factor: z.number().optional(),
    high_freq_factor: z.number().optional(),
    original_max_position_embeddings: z.number().optional(),
  })
  .passthrough();

const ConfigObjectSchema = z
  .object({
    architectures: z.array(z.string()).optional(),
    model_type: z
      .enum(MODEL_FAMILIES, {
        error: (issue) =>
          `expected one of ${MODEL_FAMILIES.map((f) => `"${f}"`).join(", ")}, got ${JSON.stringify(issue.input)}`,
      })
      .default("llama"),
    vocab_size: z.number().int().positive(),
    hidden_size: z.number().int().positive(),
    intermediate_size: z.number().int().positive(),
    num_hidden_layers: z.number().int().positive(),
    num_attention_heads: z.number().int().positive(),
    num_key_value_heads: z.number().int().positive().optional(),
    head_dim: z.number().int().positive().optional(),
    rms_norm_eps: z.number().positive().default(1e-5),
    rope_theta: z.number().positive().default(10000),
    rope_scaling: RopeScalingSchema.nullable().optional(),
    max_position_embeddings: z.number().int().positive().default(2048),
    tie_word_embeddings: z.boolean().default(false),
    hidden_act: z.literal("silu").default("silu"),
    attention_bias: z.boolean().optional(),
    mlp_bias: z.boolean().optional(),
    sliding_window: z.number().int().positive().nullable().optional(),
    use_sliding_window: z.boolean().optional(),
    layer_types: z.array(z.string()).optional(),
    partial_rotary_factor: z.number().optional(),
    torch_dtype: z.string().default("float32"),
    bos_token_id: z.number().int().nullable().optional(),
    eos_token_id: z
      .union([z.number().int(), z.array(z.number().int())])
      .nullable()
      .optional(),
    pad_token_id: z.number().int().nullable().optional(),
    num_labels: z.number().int().positive().optional(),
  })
  .passthrough()
  .superRefine((c, ctx) => {
    const fail = (path: (string | number)[], message: string): void => {
      ctx.addIssue({ code: "custom", path, message });
    };
    const family = c.model_type;
    const kv = c.num_key_value_heads ?? c.num_attention_heads;
    if (c.num_attention_heads % kv !== 0)
      fail(
        ["num_key_value_heads"],
        `num_attention_heads (${c.num_attention_heads}) must be a multiple of num_key_value_heads (${kv})`,
      );
    if (c.head_dim === undefined && c.hidden_size % c.num_attention_heads !== 0)
      fail(
        ["hidden_size"],
        `hidden_size (${c.hidden_size}) must be divisible by num_attention_heads (${c.num_attention_heads})`,
      );
    const hd = c.head_dim ?? c.hidden_size / c.num_attention_heads;
    if (hd % 2 !== 0) fail(["head_dim"], "head_dim must be even for RoPE");
    if (c.rope_scaling !== undefined && c.rope_scaling !== null) checkRopeScaling(c.rope_scaling, fail);
    if (c.partial_rotary_factor !== undefined && c.partial_rotary_factor !== 1)
      fail(
        ["partial_rotary_factor"],
        `only 1 is supported (RoPE on the whole head), got ${c.partial_rotary_factor}`,
      );
    const extra = c as Record<string, unknown>;
    if (extra.quantization_config !== undefined && extra.quantization_config !== null)
      fail(
        ["quantization_config"],
        "quantized checkpoints are not supported (save the weights as F32, F16 or BF16)",
      );
    if (family !== "llama" && c.mlp_bias === true)
      fail(["mlp_bias"], `true is not part of the ${family} architecture (only llama has MLP biases)`);
    if (family === "mistral" && c.attention_bias === true)
      fail(["attention_bias"], "true is not part of the mistral architecture");
    if ((family === "qwen2" || family === "qwen3") && c.use_sliding_window === true)
      fail(
        ["use_sliding_window"],
        `sliding-window attention on ${family} layers is not supported (use_sliding_window must be false)`,
      );
    if (c.layer_types !== undefined) {
      if (c.layer_types.length !== c.num_hidden_layers)
        fail(["layer_types"], `has ${c.layer_types.length} entries for ${c.num_hidden_layers} layers`);
      const expected =
        family === "mistral" && c.sliding_window != null ? "sliding_attention" : "full_attention";
      const i = c.layer_types.findIndex((t) => t !== expected);
      if (i >= 0)
        fail(
          ["layer_types", i],
          `"${c.layer_types[i]}" is not supported here (every layer is "${expected}")`,
        );
    }
  });

/** Accepts RoPE scaling of type default, linear or llama3 with the fields transformers requires. */
function checkRopeScaling(
  s: z.infer<typeof RopeScalingSchema>,
  fail: (path: (string | number)[], message: string) => void,
): void {
  const type = s.rope_type ?? s.type ?? "default";
  const need = (
    key: "factor" | "low_freq_factor" | "high_freq_factor" | "original_max_position_embeddings",
  ) => {
    const v = s[key];
    if (v === undefined || !(v > 0))
      fail(["rope_scaling", key], `a positive number is required for rope_type "${type}"`);
  };
  if (type === "default") return;
  if (type === "linear") {
    need("factor");
    return;
  }
  if (type === "llama3") {
    need("factor");
    need("low_freq_factor");
    need("high_freq_factor");
    need("original_max_position_embeddings");
    if (
      s.low_freq_factor !== undefined &&
      s.high_freq_factor !== undefined &&
      s.high_freq_factor <= s.low_freq_factor
    )
      fail(["rope_scaling", "high_freq_factor"], "must be greater than low_freq_factor");
    return;
  }
  fail(
    ["rope_scaling", s.rope_type !== undefined ? "rope_type" : "type"],
    `"${type}" is not supported (default, linear or llama3)`,
  );
}

/**
 * Validates a config.json object (any supported family). The name is historical: every family parses
 * through it.
 */
export const LlamaConfigSchema = z.preprocess(withFamilyDefaults, ConfigObjectSchema);

/** A validated model configuration (any supported family). */
export type LlamaConfig = z.infer<typeof ConfigObjectSchema>;

/** How RoPE inverse frequencies are derived from the plain ones (transformers' rope_type). */
export type RopeScaling =
  | { type: "none" }
  | { type: "linear"; factor: number }
  | {
      type: "llama3";
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositions: number;
    };

/** Derived sizes and switches every layer needs. */
export interface ModelDims {
  family: ModelFamily;
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  tied: boolean;
  /** q_proj, k_proj and v_proj have biases. */
  qkvBias: boolean;
  /** o_proj has a bias. */
  oBias: boolean;
  /** gate_proj, up_proj and down_proj have biases. */
  mlpBias: boolean;
  /** Per-head RMSNorm of q and k before RoPE (self_attn.q_norm / k_norm, weight [head_dim]). */
  qkNorm: boolean;
  /** Each query attends to at most this many most recent keys (itself included); 0 = unlimited. */
  slidingWindow: number;
}

/** Computes the derived dimensions of a config. */
export function modelDims(config: LlamaConfig): ModelDims {
  const heads = config.num_attention_heads;
  const family = config.model_type;
  const attentionBias = config.attention_bias === true;
  return {
    family,
    vocab: config.vocab_size,
    hidden: config.hidden_size,
    intermediate: config.intermediate_size,
    layers: config.num_hidden_layers,
    heads,
    kvHeads: config.num_key_value_heads ?? heads,
    headDim: config.head_dim ?? config.hidden_size / heads,
    eps: config.rms_norm_eps,
    ropeTheta: config.rope_theta,
    ropeScaling: ropeScalingOf(config),
    tied: config.tie_word_embeddings,
    qkvBias: family === "qwen2" || attentionBias,
    oBias: family !== "qwen2" && attentionBias,
    mlpBias: family === "llama" && config.mlp_bias === true,
    qkNorm: family === "qwen3",
    slidingWindow: family === "mistral" ? (config.sliding_window ?? 0) : 0,
  };
}

function ropeScalingOf(config: LlamaConfig): RopeScaling {
  const s = config.rope_scaling;
  if (s === undefined || s === null) return { type: "none" };
  const type = s.rope_type ?? s.type ?? "default";
  if (type === "linear") return { type: "linear", factor: s.factor! };
  if (type === "llama3")
    return {
      type: "llama3",
      factor: s.factor!,
      lowFreqFactor: s.low_freq_factor!,
      highFreqFactor: s.high_freq_factor!,
      originalMaxPositions: s.original_max_position_embeddings!,
    };
  return { type: "none" };
}
