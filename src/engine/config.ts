import { z } from "zod";

/**
 * Llama model configuration with Hugging Face LlamaConfig field names, so `config.json` round-trips
 * with transformers. Only the fields our engine reads are required; unknown fields are kept.
 */
export const LlamaConfigSchema = z
  .object({
    architectures: z.array(z.string()).default(["LlamaForCausalLM"]),
    model_type: z.string().default("llama"),
    vocab_size: z.number().int().positive(),
    hidden_size: z.number().int().positive(),
    intermediate_size: z.number().int().positive(),
    num_hidden_layers: z.number().int().positive(),
    num_attention_heads: z.number().int().positive(),
    num_key_value_heads: z.number().int().positive().optional(),
    head_dim: z.number().int().positive().optional(),
    rms_norm_eps: z.number().positive().default(1e-5),
    rope_theta: z.number().positive().default(10000),
    max_position_embeddings: z.number().int().positive().default(2048),
    tie_word_embeddings: z.boolean().default(false),
    hidden_act: z.literal("silu").default("silu"),
    attention_bias: z.literal(false).default(false),
    mlp_bias: z.literal(false).default(false),
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
    const kv = c.num_key_value_heads ?? c.num_attention_heads;
    if (c.num_attention_heads % kv !== 0)
      ctx.addIssue({
        code: "custom",
        path: ["num_key_value_heads"],
        message: `num_attention_heads (${c.num_attention_heads}) must be a multiple of num_key_value_heads (${kv})`,
      });
    if (c.head_dim === undefined && c.hidden_size % c.num_attention_heads !== 0)
      ctx.addIssue({
        code: "custom",
        path: ["hidden_size"],
        message: `hidden_size (${c.hidden_size}) must be divisible by num_attention_heads (${c.num_attention_heads})`,
      });
    const hd = c.head_dim ?? c.hidden_size / c.num_attention_heads;
    if (hd % 2 !== 0)
      ctx.addIssue({ code: "custom", path: ["head_dim"], message: "head_dim must be even for RoPE" });
  });

/** A validated Llama configuration. */
export type LlamaConfig = z.infer<typeof LlamaConfigSchema>;

/** Derived sizes every layer needs. */
export interface ModelDims {
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  ropeTheta: number;
  tied: boolean;
}

/** Computes the derived dimensions of a config. */
export function modelDims(config: LlamaConfig): ModelDims {
  const heads = config.num_attention_heads;
  return {
    vocab: config.vocab_size,
    hidden: config.hidden_size,
    intermediate: config.intermediate_size,
    layers: config.num_hidden_layers,
    heads,
    kvHeads: config.num_key_value_heads ?? heads,
    headDim: config.head_dim ?? config.hidden_size / heads,
    eps: config.rms_norm_eps,
    ropeTheta: config.rope_theta,
    tied: config.tie_word_embeddings,
  };
}
