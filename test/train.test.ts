import assert from "node:assert/strict";
import { test } from "node:test";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { LlamaModel } from "../src/engine/model.js";
import { AdamW, decayMaskFromSpecs } from "../src/engine/optim.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { objectiveConfigSchema, ssoObjective } from "../src/sso/objective.js";
import type { PreferenceRecord } from "../src/sso/pairs.js";
import { requiredKeys, scoreRecords, sequenceFor, trainPreference } from "../src/train/preference.js";
import { encodeResponse, packBatch } from "../src/train/sequences.js";
import { trainSft } from "../src/train/sft.js";
import { Rng } from "../src/util/rng.js";

const tokenizer = BpeTokenizer.byteLevel();

function tinyModel(seed = 1): LlamaModel {
  const config = LlamaConfigSchema.parse({
    vocab_size: tokenizer.vocabSize,
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
  });
  const model = new LlamaModel(config, new PlainKernels());
  model.initRandom(new Rng(seed));
  return model;
}

const records: PreferenceRecord[] = [
  {
    instruction: "add 2 and 3",
    p_system: "Be accurate.",
    n_system: "Be wrong.",
    chosen: "5",
    rejected: "7",
    raw: "six",
  },
  {
    instruction: "hi",
    p_system: "Be kind.",
    n_system: "Be rude.",
    chosen: "hello!",
    rejected: "go",
    raw: "hey",
  },
];

test("the six sequences of a record follow docs/algorithm.md's three pairs", () => {
  const r = records[0];
  assert.deepEqual(sequenceFor(r, "chosen"), {
    prompt: [{ role: "user", content: r.instruction }],
    response: "5",
  });
  assert.equal(sequenceFor(r, "posRejected").prompt[0].content, "Be accurate.");
  assert.equal(sequenceFor(r, "posRejected").response, "7");
  assert.equal(sequenceFor(r, "negChosen").prompt[0].content, "Be wrong.");
  assert.equal(sequenceFor(r, "negChosen").response, "six");
  assert.equal(sequenceFor(r, "negRejected").response, "5");
  assert.deepEqual(requiredKeys(objectiveConfigSchema.parse({ loss: "dpo" })), ["chosen", "rejected"]);
  assert.equal(requiredKeys(objectiveConfigSchema.parse({ loss: "ipo", sso: {} })).length, 6);
});

test("encodeResponse masks exactly the response and its end token; truncation keeps response tokens", () => {
  const seq = encodeResponse(tokenizer, [{ role: "user", content: "abc" }], "xyz", 1000);
  const scored = seq.ids.filter((_, t) => seq.mask[t] === 1);
  assert.deepEqual(scored, [...tokenizer.encode("xyz"), tokenizer.imEndId]);
  const short = encodeResponse(tokenizer, [{ role: "user", content: "a".repeat(200) }], "xyz", 20);
  assert.equal(short.ids.length, 20);
  assert.equal(
    short.mask.reduce((a, b) => a + b, 0),
    4,
  );
  const batch = packBatch([seq, short], tokenizer.padId);
  assert.equal(batch.seqLen, seq.ids.length);
  assert.equal(batch.lengths[1], 20);
  assert.equal(batch.lossMask[batch.seqLen + 25 - 1], 0);
});

test("a preference step's gradient equals finite differences of the objective", () => {
  const config = objectiveConfigSchema.parse({ loss: "ipo", beta: 0.5, sso: {} });
  const opts = { maxLen: 64, microBatch: 4 };
  const model = tinyModel(3);
  const keys = requiredKeys(config);
  const reference = scoreRecords(model, tokenizer, records, keys, opts);
  // Nudge the policy away from the reference so every loss term is active.
  const rng = new Rng(9);
  for (let i = 0; i < model.params.length; i++) model.params[i] += 0.01 * rng.normal();
  const lossAt = (): number => {
    const s = scoreRecords(model, tokenizer, records, keys, opts);
    return ssoObjective(
      config,
      s.map((r, i) => ({ policy: r.values, tokens: r.tokens, reference: reference[i].values })),
    ).loss;
  };
  // Analytic gradient through trainPreference's path with lr 0 (the optimizer does not move).
  const optimizer = new AdamW(model.params.length);
  trainPreference(model, tokenizer, optimizer, records, reference, {
    ...opts,
    objective: config,
    batchSize: 2,
    epochs: 1,
    peakLr: 0,
    warmupRatio: 0,
    maxGradNorm: 1e9,
    seed: 1,
  });
  const grads = model.grads.slice();
  const names = [
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
    "lm_head.weight",
  ];
  for (const name of names) {
    const off = model.offsetOf(name);
    for (const j of [0, 7, 13]) {
      const idx = off + j;
      const saved = model.params[idx];
      const eps = 1e-2;
      model.params[idx] = saved + eps;
      const up = lossAt();
      model.params[idx] = saved - eps;
      const down = lossAt();
      model.params[idx] = saved;
      const fd = (up - down) / (2 * eps);
      assert.ok(
        Math.abs(fd - grads[idx]) < 2e-3 + 0.05 * Math.abs(fd),
        `${name}[${j}]: fd ${fd} vs ${grads[idx]}`,
      );
    }
  }
});

test("preference training raises the chosen-over-rejected margin", () => {
  const config = objectiveConfigSchema.parse({ loss: "dpo", beta: 0.5 });
  const model = tinyModel(4);
  const opts = { maxLen: 64, microBatch: 8 };
  const keys = requiredKeys(config);
  const reference = scoreRecords(model, tokenizer, records, keys, opts);
  const optimizer = new AdamW(model.params.length, { decayMask: decayMaskFromSpecs(model.specs) });
  const log = trainPreference(model, tokenizer, optimizer, records, reference, {
    ...opts,
    objective: config,
    batchSize: 2,
    epochs: 30,
    peakLr: 1e-2,
    warmupRatio: 0.1,
    maxGradNorm: 1,
    seed: 2,
  });
  assert.ok(
    log[log.length - 1].loss < 0.5 * log[0].loss,
    `loss ${log[0].loss} -> ${log[log.length - 1].loss}`,
  );
  assert.equal(log[log.length - 1].metrics["rewards/accuracies"], 1);
});

test("SFT lowers the loss, and a resumed run ends with the same weights bit for bit", () => {
  const examples = [
    {
      messages: [
        { role: "user" as const, content: "ping" },
        { role: "assistant" as const, content: "pong" },
      ],
    },
    { text: "the quick brown fox" },
    {
      messages: [
        { role: "user" as const, content: "2+2" },
        { role: "assistant" as const, content: "4" },
      ],
    },
  ];
  const options = {
    batchSize: 2,
    microBatch: 1,
    epochs: 6,
    peakLr: 1e-2,
    warmupRatio: 0.1,
    maxGradNorm: 1,
    maxLen: 64,
    seed: 5,
  };
  const full = tinyModel(6);
  const optFull = new AdamW(full.params.length);
  const log = trainSft(full, tokenizer, optFull, examples, options);
  assert.ok(log[log.length - 1].loss < log[0].loss);

  // Interrupt after `cut` steps, carry weights and optimizer state over, resume with startStep.
  const part = tinyModel(6);
  const optPart = new AdamW(part.params.length);
  const cut = 5;
  assert.throws(
    () =>
      trainSft(part, tokenizer, optPart, examples, options, (info) => {
        if (info.step === cut - 1) throw new StopAt();
      }),
    StopAt,
  );
  const resumed = tinyModel(99);
  resumed.params.set(part.params);
  const optResumed = new AdamW(resumed.params.length);
  optResumed.importState(optPart.exportState());
  trainSft(resumed, tokenizer, optResumed, examples, { ...options, startStep: cut });
  assert.deepEqual(resumed.params, full.params);
});

class StopAt extends Error {}
