import { type LlamaConfig, modelDims } from "./config.js";

/** Name and shape of one parameter tensor, in Hugging Face naming. */
export interface ParamSpec {
  name: string;
  shape: number[];
}

/** A parameter tensor with its data (row-major fp32, HF layout: linear weights are [out, in]). */
export interface NamedTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/**
 * The parameters of a causal LM of the config's family (or, with `scoreHead`, its
 * ForSequenceClassification reward model) in a fixed order, with Hugging Face tensor names. This
 * order is the layout of the engine's parameter buffer and of checkpoints; the fused pairs (q/k/v
 * weights, q/k/v biases, gate/up weights, gate/up biases) are adjacent. Optional tensors appear only
 * when the family or config has them: q/k/v biases (qwen2, attention_bias), o_proj bias
 * (attention_bias), MLP biases (mlp_bias), q_norm / k_norm (qwen3).
 */
export function llamaParamSpecs(config: LlamaConfig, options: { scoreHead?: boolean } = {}): ParamSpec[] {
  const d = modelDims(config);
  const qDim = d.heads * d.headDim;
  const kvDim = d.kvHeads * d.headDim;
  const specs: ParamSpec[] = [{ name: "model.embed_tokens.weight", shape: [d.vocab, d.hidden] }];
  for (let l = 0; l < d.layers; l++) {
    const p = `model.layers.${l}`;
    specs.push(
      { name: `${p}.input_layernorm.weight`, shape: [d.hidden] },
      { name: `${p}.self_attn.q_proj.weight`, shape: [qDim, d.hidden] },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kvDim, d.hidden] },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kvDim, d.hidden] },
    );
    if (d.qkvBias)
      specs.push(
        { name: `${p}.self_attn.q_proj.bias`, shape: [qDim] },
        { name: `${p}.self_attn.k_proj.bias`, shape: [kvDim] },
        { name: `${p}.self_attn.v_proj.bias`, shape: [kvDim] },
      );
    specs.push({ name: `${p}.self_attn.o_proj.weight`, shape: [d.hidden, qDim] });
    if (d.oBias) specs.push({ name: `${p}.self_attn.o_proj.bias`, shape: [d.hidden] });
    if (d.qkNorm)
      specs.push(
        { name: `${p}.self_attn.q_norm.weight`, shape: [d.headDim] },
        { name: `${p}.self_attn.k_norm.weight`, shape: [d.headDim] },
      );
    specs.push(
      { name: `${p}.post_attention_layernorm.weight`, shape: [d.hidden] },
      { name: `${p}.mlp.gate_proj.weight`, shape: [d.intermediate, d.hidden] },
      { name: `${p}.mlp.up_proj.weight`, shape: [d.intermediate, d.hidden] },
    );
    if (d.mlpBias)
      specs.push(
        { name: `${p}.mlp.gate_proj.bias`, shape: [d.intermediate] },
        { name: `${p}.mlp.up_proj.bias`, shape: [d.intermediate] },
      );
    specs.push({ name: `${p}.mlp.down_proj.weight`, shape: [d.hidden, d.intermediate] });
    if (d.mlpBias) specs.push({ name: `${p}.mlp.down_proj.bias`, shape: [d.hidden] });
  }
  specs.push({ name: "model.norm.weight", shape: [d.hidden] });
  if (options.scoreHead) specs.push({ name: "score.weight", shape: [1, d.hidden] });
  else if (!d.tied) specs.push({ name: "lm_head.weight", shape: [d.vocab, d.hidden] });
  return specs;
}

/** True for bias tensors, which start at zero (norm weights, the other 1-D tensors, start at one). */
export function isBias(name: string): boolean {
  return name.endsWith(".bias");
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}
