import assert from "node:assert/strict";
import { test } from "node:test";
import { type LlamaConfig, LlamaConfigSchema } from "../src/engine/config.js";
import { createKvCache } from "../src/engine/decode.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { LlamaModel } from "../src/engine/model.js";
import { generateTokens, SamplerScratch, sampleFromLogits } from "../src/engine/sampler.js";
import { Rng } from "../src/util/rng.js";
import { singleBatch } from "./helpers/batches.js";

function tinyConfig(overrides: Record<string, unknown> = {}): LlamaConfig {
  return LlamaConfigSchema.parse({
    vocab_size: 37,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 8,
    rope_theta: 500,
    ...overrides,
  });
}

function randomModel(config: LlamaConfig, seed: number): LlamaModel {
  const model = new LlamaModel(config, new PlainKernels());
  model.initRandom(new Rng(seed), 0.3);
  return model;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

function randomPrompt(rng: Rng, len: number, vocab: number): number[] {
  return Array.from({ length: len }, () => rng.int(vocab));
}

test("KV-cache logits equal full recomputation at every step (ragged prompts, GQA)", () => {
  const model = randomModel(tinyConfig(), 1);
  const V = 37;
  const rng = new Rng(2);
  // a long prompt crosses the decoder's row-chunk boundary during prefill
  const prompts = [
    randomPrompt(rng, 5, V),
    randomPrompt(rng, 1, V),
    randomPrompt(rng, 300, V),
    randomPrompt(rng, 2, V),
  ];
  const seqs = prompts.map((p) => p.slice());
  const cache = createKvCache(model, prompts.length, 320);
  let logits = cache.prefill(prompts).slice();
  let active = [0, 1, 2, 3];
  let worst = 0;
  for (let step = 0; step < 6; step++) {
    active.forEach((slot, row) => {
      const full = model.forwardLogits(singleBatch(seqs[slot]));
      const last = full.subarray((seqs[slot].length - 1) * V, seqs[slot].length * V);
      worst = Math.max(worst, maxAbsDiff(logits.subarray(row * V, (row + 1) * V), last));
    });
    // drop a request now and then, so the decoded slots are not always 0..n-1
    if (step === 2) active = active.filter((s) => s !== 1);
    const tokens = active.map((slot) => (slot * 7 + step * 3) % V);
    for (const [i, slot] of active.entries()) seqs[slot].push(tokens[i]);
    logits = cache.decodeStep(Int32Array.from(active), Int32Array.from(tokens)).slice();
    assert.deepEqual(
      active.map((s) => cache.lengths[s]),
      active.map((s) => seqs[s].length),
    );
  }
  assert.ok(worst < 2e-5, `max |cached - recomputed| logit = ${worst}`);
  const small = createKvCache(model, 1, 2);
  small.prefill([[1, 2]]);
  assert.throws(() => small.decodeStep(Int32Array.from([0]), Int32Array.from([3])), /slot 0 is full/);
  assert.throws(() => cache.decodeStep(Int32Array.from([0]), Int32Array.from([0])), /stale/);
});

for (const [name, overrides] of [
  [
    "llama with biases and llama3 RoPE",
    {
      attention_bias: true,
      mlp_bias: true,
      rope_scaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 32,
      },
    },
  ],
  ["qwen2", { model_type: "qwen2" }],
  ["mistral with a sliding window of 4", { model_type: "mistral", sliding_window: 4 }],
  ["qwen3", { model_type: "qwen3", head_dim: 8 }],
] as const) {
  test(`KV-cache logits equal full recomputation for ${name}`, () => {
    const model = randomModel(tinyConfig(overrides), 5);
    // biases and norm weights away from their init, so a missed one shows
    const rng = new Rng(6);
    for (const spec of model.specs)
      if (spec.shape.length === 1) {
        const w = model.tensor(spec.name);
        for (let i = 0; i < w.length; i++) w[i] += 0.3 * rng.normal();
      }
    const V = 37;
    const prompts = [randomPrompt(rng, 7, V), randomPrompt(rng, 1, V), randomPrompt(rng, 3, V)];
    const seqs = prompts.map((p) => p.slice());
    const cache = createKvCache(model, prompts.length, 16);
    let logits = cache.prefill(prompts).slice();
    let worst = 0;
    for (let step = 0; step < 5; step++) {
      seqs.forEach((seq, row) => {
        const full = model.forwardLogits(singleBatch(seq));
        const last = full.subarray((seq.length - 1) * V, seq.length * V);
        worst = Math.max(worst, maxAbsDiff(logits.subarray(row * V, (row + 1) * V), last));
      });
      const tokens = seqs.map((_, slot) => (slot * 5 + step * 3 + 1) % V);
      for (const [slot, t] of tokens.entries()) seqs[slot].push(t);
      logits = cache.decodeStep(Int32Array.from([0, 1, 2]), Int32Array.from(tokens)).slice();
    }
    assert.ok(worst < 2e-5, `max |cached - recomputed| logit = ${worst}`);
  });
}

test("sampled log-probs are the model's log-probs of the generated sequence", () => {
  const model = randomModel(tinyConfig({ tie_word_embeddings: true }), 3);
  const rng = new Rng(4);
  const prompts = [randomPrompt(rng, 4, 37), randomPrompt(rng, 9, 37)];
  const out = generateTokens(model, prompts, { maxNewTokens: 8, seeds: [1, 2], temperature: 1.3, topP: 0.9 });
  out.forEach((r, i) => {
    assert.equal(r.ids.length, 8);
    assert.equal(r.finishReason, "length");
    const seq = [...prompts[i], ...r.ids];
    const lp = model.forward(singleBatch(seq)).tokenLogprobs.subarray(prompts[i].length);
    assert.ok(maxAbsDiff(lp, r.logprobs) < 2e-5);
  });
});

test("seeds reproduce; different seeds differ; batch composition does not matter", () => {
  const model = randomModel(tinyConfig(), 5);
  const rng = new Rng(6);
  const prompts = [randomPrompt(rng, 3, 37), randomPrompt(rng, 7, 37), randomPrompt(rng, 5, 37)];
  const options = { maxNewTokens: 12, temperature: 1, seeds: [10, 11, 12] };
  const a = generateTokens(model, prompts, options);
  const b = generateTokens(model, prompts, options);
  assert.deepEqual(a, b);
  const c = generateTokens(model, prompts, { ...options, seeds: [20, 21, 22] });
  assert.notDeepEqual(
    a.map((r) => r.ids),
    c.map((r) => r.ids),
  );
  // request 1 alone, in another position among other prompts, or in batches of one
  const alone = generateTokens(model, [prompts[1]], { ...options, seeds: [11] });
  assert.deepEqual(alone[0], a[1]);
  const mixed = generateTokens(model, [randomPrompt(rng, 11, 37), prompts[1], prompts[1]], {
    ...options,
    seeds: [99, 11, 12],
  });
  assert.deepEqual(mixed[1], a[1]);
  assert.notDeepEqual(mixed[2].ids, a[1].ids); // same prompt, another seed
  const chunked = generateTokens(model, prompts, { ...options, maxBatch: 2 });
  assert.deepEqual(chunked, a);
});

test("greedy decoding follows the argmax of full recomputation and ignores the seed", () => {
  const model = randomModel(tinyConfig(), 7);
  const prompt = [3, 1, 4, 1, 5];
  const [g1] = generateTokens(model, [prompt], { maxNewTokens: 6, temperature: 0, seeds: [1] });
  const [g2] = generateTokens(model, [prompt], { maxNewTokens: 6, temperature: 0, seeds: [2] });
  assert.deepEqual(g1, g2);
  const seq = prompt.slice();
  for (let step = 0; step < 6; step++) {
    const logits = model.forwardLogits(singleBatch(seq));
    const row = Array.from(logits.subarray((seq.length - 1) * 37));
    const best = row.indexOf(Math.max(...row));
    assert.equal(g1.ids[step], best);
    seq.push(best);
  }
});

test("stop ids end a request (stop id included), others run to maxNewTokens; per-request settings", () => {
  const model = randomModel(tinyConfig(), 8);
  const prompt = [2, 7, 1, 8];
  const [free] = generateTokens(model, [prompt], { maxNewTokens: 10, temperature: 0, seeds: [0] });
  const stopId = free.ids[3];
  const firstAt = free.ids.indexOf(stopId);
  const out = generateTokens(model, [prompt, prompt, prompt], {
    maxNewTokens: [10, 10, 2],
    temperature: 0,
    stopIds: [stopId],
    seeds: [0, 0, 0],
  });
  assert.equal(out[0].finishReason, "stop");
  assert.deepEqual(out[0].ids, free.ids.slice(0, firstAt + 1));
  assert.equal(out[2].finishReason, free.ids.slice(0, 2).includes(stopId) ? "stop" : "length");
  assert.ok(out[2].ids.length <= 2);
  const none = generateTokens(model, [prompt], { maxNewTokens: 0, seeds: [0] });
  assert.deepEqual(none, [{ ids: [], logprobs: [], finishReason: "length" }]);
  assert.throws(() => generateTokens(model, [prompt], { maxNewTokens: 2, seeds: [] }), /seeds/);
  assert.throws(() => generateTokens(model, [prompt], { maxNewTokens: 2, topP: 0, seeds: [1] }), /topP/);
});

test("top-k and top-p restrict the support and keep relative probabilities", () => {
  // probabilities at temperature 1: [0.05, 0.5, 0.15, 0.3, tiny...]
  const probs = [0.05, 0.5, 0.15, 0.3, 1e-4, 1e-4];
  const logits = Float32Array.from(probs.map(Math.log));
  const V = logits.length;
  const scratch = new SamplerScratch(V);
  const draw = (settings: { temperature: number; topP: number; topK: number }, n = 4000) => {
    const rng = new Rng(42);
    const counts = new Array<number>(V).fill(0);
    for (let i = 0; i < n; i++) counts[sampleFromLogits(logits, 0, V, settings, rng, scratch)]++;
    return counts.map((c) => c / n);
  };
  const near = (got: number[], want: number[]) => {
    for (const [i, w] of want.entries())
      assert.ok(Math.abs(got[i] - w) < 0.03, `token ${i}: ${got[i]} vs ${w} (${got})`);
  };
  const sum = (ids: number[]) => ids.reduce((s, i) => s + probs[i], 0);

  const k2 = draw({ temperature: 1, topP: 1, topK: 2 });
  near(k2, [0, 0.5 / 0.8, 0, 0.3 / 0.8, 0, 0]);
  assert.equal(k2[0] + k2[2] + k2[4] + k2[5], 0);

  const p70 = draw({ temperature: 1, topP: 0.7, topK: 0 }); // 0.5 + 0.3 reaches 0.7
  near(p70, [0, 0.5 / 0.8, 0, 0.3 / 0.8, 0, 0]);
  assert.equal(p70[0] + p70[2] + p70[4] + p70[5], 0);

  const p90 = draw({ temperature: 1, topP: 0.9, topK: 0 }); // needs the 0.15 too
  const s3 = sum([1, 3, 2]);
  near(p90, [0, 0.5 / s3, 0.15 / s3, 0.3 / s3, 0, 0]);
  assert.equal(p90[0] + p90[4] + p90[5], 0);

  const k3p = draw({ temperature: 1, topP: 0.5, topK: 3 }); // top-k first, then the nucleus of it
  assert.equal(k3p[1], 1);

  const full = draw({ temperature: 1, topP: 1, topK: 0 });
  near(full, probs);

  const cold = draw({ temperature: 0.25, topP: 1, topK: 0 });
  assert.ok(cold[1] > 0.85, `low temperature concentrates on the mode: ${cold}`);
  assert.equal(sampleFromLogits(logits, 0, V, { temperature: 0, topP: 1, topK: 0 }, new Rng(1)), 1);
});
