/**
 * Random initialisation of a model of any family, as HF's _init_weights does it: every weight matrix
 * (and the embedding) drawn from N(0, 0.02^2), biases zero, RMSNorm weights (q/k norms too) one. Each tensor draws from its own Rng
 * stream forked by name, so the same seed gives the same bytes and adding a tensor shifts no other.
 */
import { Rng } from "../util/rng.js";
import type { LlamaConfig } from "./config.js";
import { isBias, llamaParamSpecs, type NamedTensor, numel } from "./params.js";

/** HF's default initializer_range. */
export const DEFAULT_INIT_STD = 0.02;

/** Freshly initialised parameters in llamaParamSpecs order. */
export function initLlamaTensors(
  config: LlamaConfig,
  seed: number,
  options: { scoreHead?: boolean; std?: number } = {},
): NamedTensor[] {
  const std = options.std ?? DEFAULT_INIT_STD;
  const root = new Rng(seed);
  return llamaParamSpecs(config, { scoreHead: options.scoreHead }).map((spec) => {
    const data = new Float32Array(numel(spec.shape));
    if (isBias(spec.name)) data.fill(0);
    else if (spec.shape.length === 1) data.fill(1);
    else {
      const rng = root.fork(spec.name);
      for (let i = 0; i < data.length; i++) data[i] = std * rng.normal();
    }
    return { name: spec.name, shape: spec.shape.slice(), data };
  });
}
