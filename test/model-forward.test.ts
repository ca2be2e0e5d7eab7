import assert from "node:assert/strict";
import { test } from "node:test";
import { type LlamaConfig, LlamaConfigSchema } from "../src/engine/config.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { fastExp } from "../src/engine/layers.js";
import { LlamaModel, type TokenBatch } from "../src/engine/model.js";
import { Rng } from "../src/util/rng.js";

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
    rms_norm_eps: 1e-5,
    ...overrides,
  });
}

/** A model with weights large enough that attention, norms and RoPE all matter. */
function randomModel(config: LlamaConfig, seed: number, options: { scoreHead?: boolean } = {}): LlamaModel {
  const model = new LlamaModel(config, new PlainKernels(), options);
  const rng = new Rng(seed);
  model.initRandom(rng, 0.25);
  for (const spec of model.specs)
    if (spec.shape.length === 1) {
      const w = model.tensor(spec.name);
      for (let i = 0; i < w.length; i++) w[i] = 1 + 0.3 * rng.normal();
    }
  return model;
}

function makeBatch(
  rows: number[][],
  seqLen: number,
  padId: number,
  mask?: (b: number, t: number) => boolean,
): TokenBatch {
  const B = rows.length;
  const ids = new Int32Array(B * seqLen).fill(padId);
  const lengths = new Int32Array(B);
  const lossMask = new Uint8Array(B * seqLen);
  rows.forEach((row, b) => {
    lengths[b] = row.length;
    row.forEach((id, t) => {
      ids[b * seqLen + t] = id;
      if (t >= 1 && (mask?.(b, t) ?? true)) lossMask[b * seqLen + t] = 1;
    });
  });
  return { ids, batch: B, seqLen, lengths, lossMask };
}

/**
 * An independent reference: one sequence at a time, float64 scalar loops straight from the HF Llama
 * definition, attention recomputed for each query from the per-position keys and values.
 */
function naiveLogprobs(model: LlamaModel, seq: number[]): number[] {
  const cfg = model.config;
  const hidden = cfg.hidden_size;
  const nHeads = cfg.num_attention_heads;
  const nKv = cfg.num_key_value_heads ?? nHeads;
  const headDim = cfg.head_dim ?? hidden / nHeads;
  const W = (name: string) => model.tensor(name);
  const matvec = (w: Float32Array, x: number[], outDim: number): number[] => {
    const inDim = x.length;
    const y: number[] = [];
    for (let o = 0; o < outDim; o++) {
      let s = 0;
      for (let i = 0; i < inDim; i++) s += w[o * inDim + i] * x[i];
      y.push(s);
    }
    return y;
  };
  const rms = (x: number[], w: Float32Array): number[] => {
    const ms = x.reduce((s, v) => s + v * v, 0) / x.length;
    const r = 1 / Math.sqrt(ms + cfg.rms_norm_eps);
    return x.map((v, i) => v * r * w[i]);
  };
  const rotateHalf = (v: number[], pos: number): number[] => {
    const half = headDim / 2;
    const out = v.slice();
    for (let i = 0; i < half; i++) {
      const angle = pos / cfg.rope_theta ** ((2 * i) / headDim);
      out[i] = v[i] * Math.cos(angle) - v[i + half] * Math.sin(angle);
      out[i + half] = v[i + half] * Math.cos(angle) + v[i] * Math.sin(angle);
    }
    return out;
  };
  const embed = W("model.embed_tokens.weight");
  let xs = seq.map((id) => Array.from(embed.subarray(id * hidden, (id + 1) * hidden)));
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    const normed = xs.map((x) => rms(x, W(`${p}.input_layernorm.weight`)));
    const heads = (v: number[], n: number) =>
      Array.from({ length: n }, (_, h) => v.slice(h * headDim, (h + 1) * headDim));
    const qs = normed.map((x, pos) =>
      heads(matvec(W(`${p}.self_attn.q_proj.weight`), x, nHeads * headDim), nHeads).map((q) =>
        rotateHalf(q, pos),
      ),
    );
    const ks = normed.map((x, pos) =>
      heads(matvec(W(`${p}.self_attn.k_proj.weight`), x, nKv * headDim), nKv).map((k) => rotateHalf(k, pos)),
    );
    const vs = normed.map((x) => heads(matvec(W(`${p}.self_attn.v_proj.weight`), x, nKv * headDim), nKv));
    xs = xs.map((x, t) => {
      const concat: number[] = [];
      for (let h = 0; h < nHeads; h++) {
        const kv = Math.floor((h * nKv) / nHeads);
        const scores: number[] = [];
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let i = 0; i < headDim; i++) dot += qs[t][h][i] * ks[s][kv][i];
          scores.push(dot / Math.sqrt(headDim));
        }
        const m = Math.max(...scores);
        const e = scores.map((v) => Math.exp(v - m));
        const z = e.reduce((a, b) => a + b, 0);
        const o = new Array<number>(headDim).fill(0);
        for (let s = 0; s <= t; s++) for (let i = 0; i < headDim; i++) o[i] += (e[s] / z) * vs[s][kv][i];
        concat.push(...o);
      }
      const attnOut = matvec(W(`${p}.self_attn.o_proj.weight`), concat, hidden);
      return x.map((v, i) => v + attnOut[i]);
    });
    xs = xs.map((x) => {
      const n = rms(x, W(`${p}.post_attention_layernorm.weight`));
      const gate = matvec(W(`${p}.mlp.gate_proj.weight`), n, cfg.intermediate_size);
      const up = matvec(W(`${p}.mlp.up_proj.weight`), n, cfg.intermediate_size);
      const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
      const down = matvec(W(`${p}.mlp.down_proj.weight`), act, hidden);
      return x.map((v, i) => v + down[i]);
    });
  }
  const head = cfg.tie_word_embeddings ? embed : W("lm_head.weight");
  const out = [0];
  for (let t = 1; t < seq.length; t++) {
    const logits = matvec(head, rms(xs[t - 1], W("model.norm.weight")), cfg.vocab_size);
    const m = Math.max(...logits);
    const lse = m + Math.log(logits.reduce((s, v) => s + Math.exp(v - m), 0));
    out.push(logits[seq[t]] - lse);
  }
  return out;
}

function randomSeq(rng: Rng, len: number, vocab: number): number[] {
  return Array.from({ length: len }, () => rng.int(vocab));
}

for (const [label, overrides] of [
  ["GQA, untied, head_dim != hidden/heads", {}],
  ["multi-head, tied embeddings", { num_key_value_heads: 4, head_dim: undefined, tie_word_embeddings: true }],
  ["multi-query (one kv head), 3 layers", { num_key_value_heads: 1, num_hidden_layers: 3 }],
] as const) {
  test(`forward matches an independent scalar implementation (${label})`, () => {
    const model = randomModel(tinyConfig(overrides), 11);
    const rng = new Rng(5);
    const rows = [randomSeq(rng, 9, 37), randomSeq(rng, 4, 37), randomSeq(rng, 1, 37), randomSeq(rng, 7, 37)];
    const batch = makeBatch(rows, 9, 0, (b, t) => (b + t) % 3 !== 0);
    const result = model.forward(batch);
    let worst = 0;
    rows.forEach((row, b) => {
      const expected = naiveLogprobs(model, row);
      let seq = 0;
      let count = 0;
      for (let t = 0; t < 9; t++) {
        const got = result.tokenLogprobs[b * 9 + t];
        if (t >= row.length) {
          assert.equal(got, 0, `padding entry row ${b} t ${t}`);
          continue;
        }
        worst = Math.max(worst, Math.abs(got - expected[t]));
        if (batch.lossMask[b * 9 + t]) {
          seq += got;
          count++;
        }
      }
      assert.equal(result.tokenCounts[b], count);
      assert.ok(Math.abs(result.seqLogprobs[b] - seq) < 1e-9);
    });
    assert.ok(worst < 5e-6, `max |logprob - reference| = ${worst}`);
    // the weights are large enough that the model is far from uniform
    const spread = Math.max(...result.tokenLogprobs) - Math.min(...result.tokenLogprobs);
    assert.ok(spread > 1, `log-probs vary (spread ${spread})`);
  });
}

test("a row's log-probs do not depend on other rows, padding ids or the padded length", () => {
  const model = randomModel(tinyConfig(), 3);
  const rng = new Rng(9);
  const rows = [randomSeq(rng, 6, 37), randomSeq(rng, 3, 37), randomSeq(rng, 8, 37)];
  const padded = makeBatch(rows, 12, 0);
  // garbage (even out-of-range) ids in padding must be ignored
  for (let b = 0; b < rows.length; b++)
    for (let t = rows[b].length; t < 12; t++) padded.ids[b * 12 + t] = t % 2 ? 36 : -5;
  const together = model.forward(padded).tokenLogprobs;
  rows.forEach((row, b) => {
    const alone = model.forward(makeBatch([row], row.length, 0)).tokenLogprobs;
    for (let t = 0; t < row.length; t++)
      assert.ok(
        Math.abs(alone[t] - together[b * 12 + t]) < 1e-6,
        `row ${b} t ${t}: ${alone[t]} vs ${together[b * 12 + t]}`,
      );
  });
  // a bigger batch first grows the arena; a smaller one afterwards reuses it and still agrees
  const again = model.forward(makeBatch([rows[1]], 3, 0)).tokenLogprobs;
  for (let t = 0; t < 3; t++) assert.ok(Math.abs(again[t] - together[12 + t]) < 1e-6);
});

test("an empty row is allowed and scores nothing", () => {
  const model = randomModel(tinyConfig(), 4);
  const batch = makeBatch([[1, 2, 3], []], 3, 0);
  const r = model.forward(batch);
  assert.equal(r.tokenCounts[1], 0);
  assert.equal(r.seqLogprobs[1], 0);
  assert.equal(r.tokenCounts[0], 2);
});

test("forwardLogits rows are the distributions behind tokenLogprobs", () => {
  const model = randomModel(tinyConfig(), 6);
  const seq = [3, 14, 15, 9, 2];
  const batch = makeBatch([seq], 5, 0);
  const logits = model.forwardLogits(batch);
  const lp = model.forward(batch).tokenLogprobs;
  for (let t = 1; t < 5; t++) {
    const row = Array.from(logits.subarray((t - 1) * 37, t * 37));
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
    assert.ok(Math.abs(row[seq[t]] - lse - lp[t]) < 1e-5);
  }
});

test("forwardScores reads score.weight at the last real token", () => {
  const model = randomModel(tinyConfig(), 8, { scoreHead: true });
  assert.ok(!model.hasLmHead);
  assert.throws(() => model.forward(makeBatch([[1, 2]], 2, 0)), /no LM head/);
  const rows = [
    [1, 2, 3, 4],
    [5, 6],
  ];
  const scores = model.forwardScores(makeBatch(rows, 4, 7));
  // the score of a row equals the score of the row alone, i.e. it ignores padding after it
  for (let b = 0; b < 2; b++) {
    const alone = model.forwardScores(makeBatch([rows[b]], rows[b].length, 0));
    assert.ok(Math.abs(alone[0] - scores[b]) < 1e-6);
  }
  // and depends on the last token
  const other = model.forwardScores(makeBatch([[1, 2, 3, 5]], 4, 0));
  assert.ok(Math.abs(other[0] - scores[0]) > 1e-4);
});

test("parameters: spec layout, views, loading and its errors", () => {
  const config = tinyConfig();
  const source = randomModel(config, 1);
  const model = new LlamaModel(config, new PlainKernels());
  assert.equal(model.params.length, source.params.length);
  let offset = 0;
  for (const spec of model.specs) {
    assert.equal(model.offsetOf(spec.name), offset);
    offset += spec.shape.reduce((a, b) => a * b, 1);
  }
  assert.equal(offset, model.params.length);
  model.loadTensors(source.namedTensors());
  assert.deepEqual(model.params, source.params);
  model.tensor("model.norm.weight")[0] = 42;
  assert.equal(model.params[model.offsetOf("model.norm.weight")], 42);

  const missing = source.namedTensors().filter((t) => t.name !== "model.layers.1.mlp.up_proj.weight");
  assert.throws(() => model.loadTensors(missing), /missing tensor "model\.layers\.1\.mlp\.up_proj\.weight"/);
  model.loadTensors(missing, { allowMissing: ["model.layers.1.mlp.up_proj.weight"] });
  const misshaped = source
    .namedTensors()
    .map((t) =>
      t.name === "model.layers.0.self_attn.q_proj.weight" ? { ...t, shape: [t.shape[1], t.shape[0]] } : t,
    );
  assert.throws(
    () => model.loadTensors(misshaped),
    /"model\.layers\.0\.self_attn\.q_proj\.weight" has shape \[16, 32\], expected \[32, 16\]/,
  );
  assert.throws(() => model.tensor("nope"), /unknown parameter "nope"/);
});

test("bad batches are rejected with the offending position", () => {
  const model = randomModel(tinyConfig(), 2);
  const batch = makeBatch([[1, 2, 3]], 3, 0);
  batch.ids[2] = 37;
  assert.throws(() => model.forward(batch), /token id 37 at row 0, position 2/);
  const short = makeBatch([[1, 2, 3]], 3, 0);
  short.lengths[0] = 4;
  assert.throws(() => model.forward(short), /lengths\[0\] = 4/);
});

test("fastExp agrees with Math.exp to 1e-8 relative over the fp32 range and handles the edges", () => {
  const rng = new Rng(12);
  let worst = 0;
  for (let i = 0; i < 20000; i++) {
    const x = (rng.next() - 0.5) * 200;
    const e = Math.exp(x);
    if (e < 1e-37 || e > 1e38) continue;
    worst = Math.max(worst, Math.abs(fastExp(x) - e) / e);
  }
  assert.ok(worst < 1e-8, `worst relative error ${worst}`);
  assert.equal(fastExp(0), 1);
  assert.equal(fastExp(Number.NEGATIVE_INFINITY), 0);
  assert.equal(fastExp(-1000), 0);
  assert.equal(fastExp(1000), Number.POSITIVE_INFINITY);
  assert.ok(Number.isNaN(fastExp(Number.NaN)));
});

test("a scoring forward (keep: false) gives the same bytes in a fraction of the memory and allows no backward", () => {
  class CountingKernels extends PlainKernels {
    floats = 0;
    override alloc(length: number): Float32Array {
      this.floats += length;
      return super.alloc(length);
    }
  }
  const config = tinyConfig({ num_hidden_layers: 6 });
  const rng = new Rng(41);
  const rows = [randomSeq(rng, 12, 37), randomSeq(rng, 7, 37), randomSeq(rng, 12, 37)];
  const batch = makeBatch(rows, 12, 0);
  const scored = (keep: boolean) => {
    const kernels = new CountingKernels();
    const model = new LlamaModel(config, kernels);
    model.initRandom(new Rng(5), 0.25);
    const before = kernels.floats;
    const lp = model.forward(batch, { keep });
    const activations = kernels.floats - before;
    const rm = new LlamaModel(config, new PlainKernels(), { scoreHead: true });
    rm.initRandom(new Rng(6), 0.25);
    const scores = rm.forwardScores(batch, { keep });
    return { model, rm, lp, scores, activations };
  };
  const kept = scored(true);
  const light = scored(false);
  assert.deepEqual(light.lp, kept.lp);
  assert.deepEqual(light.scores, kept.scores);
  assert.ok(
    light.activations * 3 < kept.activations,
    `scoring activations ${light.activations} floats, training ${kept.activations}`,
  );
  assert.throws(() => light.model.backward(new Float32Array(36)), /activations of a preceding forward/);
  assert.throws(() => light.rm.backwardScores([1, 1, 1]), /activations of a preceding forwardScores/);
  // a training forward after scoring ones re-plans the arena; its gradients equal a fresh model's
  const dTok = Array.from({ length: 36 }, (_, i) => Math.sin(i));
  for (const { model } of [light, kept]) {
    model.zeroGrad();
    model.forward(batch);
    model.backward(dTok);
  }
  assert.deepEqual(light.model.grads, kept.model.grads);
  // after a training forward, a scoring forward leaves no backward behind it either
  kept.model.forward(batch, { keep: false });
  assert.throws(() => kept.model.backward(dTok), /activations of a preceding forward/);
});
