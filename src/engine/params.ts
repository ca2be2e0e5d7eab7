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
 * The parameters of a LlamaForCausalLM (or, with `scoreHead`, LlamaForSequenceClassification) in a
 * fixed order. This order is the layout of the engine's parameter buffer and of checkpoints.
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
      { name: `${p}.self_attn.o_proj.weight`, shape: [d.hidden, qDim] },
      { name: `${p}.post_attention_layernorm.weight`, shape: [d.hidden] },
      { name: `${p}.mlp.gate_proj.weight`, shape: [d.intermediate, d.hidden] },
      { name: `${p}.mlp.up_proj.weight`, shape: [d.intermediate, d.hidden] },
      { name: `${p}.mlp.down_proj.weight`, shape: [d.hidden, d.intermediate] },
    );
  }
  specs.push({ name: "model.norm.weight", shape: [d.hidden] });
  if (options.scoreHead) specs.push({ name: "score.weight", shape: [1, d.hidden] });
  else if (!d.tied) specs.push({ name: "lm_head.weight", shape: [d.vocab, d.hidden] });
  return specs;
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}
