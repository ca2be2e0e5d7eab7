import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { encodeChat } from "../src/engine/chat.js";
import { ChatFormat } from "../src/engine/chat-format.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { LlamaModel } from "../src/engine/model.js";
import { AdamW, decayMaskFromSpecs } from "../src/engine/optim.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { objectiveConfigSchema, ssoObjective } from "../src/sso/objective.js";
import type { PreferenceRecord } from "../src/sso/pairs.js";
import {
  describeSystemCuts,
  requiredKeys,
  scoreRecords,
  sequenceFor,
  systemPromptCuts,
  trainPreference,
} from "../src/train/preference.js";
import { encodeConversation, encodeResponse, packBatch } from "../src/train/sequences.js";
import { trainSft } from "../src/train/sft.js";
import { Rng } from "../src/util/rng.js";
import { QWEN2_TEMPLATE } from "./helpers/templates.js";

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

// Truncation under a system prompt (docs/algorithm.md, "Length limits and truncation"), in three chat
// formats: the built-in ChatML, a Jinja template that adds a default system turn when there is none
// (Qwen2's), and one that folds the system prompt into the first user turn (Llama 2's). A tokenizer
// with merges, so turn boundaries are not token boundaries by construction.
const mergedTokenizer = BpeTokenizer.train(
  readFileSync(
    fileURLToPath(new URL("../../test/fixtures/tokenizer/corpus.txt", import.meta.url)),
    "utf8",
  ).split("\n"),
  420,
);
const FOLDED_SYSTEM_TEMPLATE =
  "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set turns = messages[1:] %}" +
  "{% else %}{% set sys = '' %}{% set turns = messages %}{% endif %}" +
  "{% for message in turns %}{% if message['role'] == 'user' %}{{ '[INST] ' }}" +
  "{% if loop.first and sys != '' %}{{ '<<SYS>>\\n' + sys + '\\n<</SYS>>\\n\\n' }}{% endif %}" +
  "{{ message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + '<|im_end|>' }}{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}{{ ' ' }}{% endif %}";

function withTemplate(template: string): BpeTokenizer {
  const t = BpeTokenizer.fromJSON(mergedTokenizer.toJSON());
  t.chat = ChatFormat.fromSources(t, {
    tokenizerConfig: { chat_template: template, eos_token: "<|im_end|>" },
  });
  return t;
}

const SYSTEM = "Your response must be Literary. Keep to these guidelines: write with craft and imagery.";
const QUERY = `Tell me about the forest ${"and the river ".repeat(30)}END OF QUERY`;
const RESPONSE = "The forest was quiet and green.";
/** Each format with the text of its system part and of what follows the user's query. */
const FORMATS = [
  {
    name: "ChatML",
    tokenizer: mergedTokenizer,
    systemText: `<|im_start|>system\n${SYSTEM}<|im_end|>\n`,
    userOpen: "<|im_start|>user\n",
    afterQuery: `<|im_end|>\n<|im_start|>assistant\n${RESPONSE}<|im_end|>\n`,
  },
  {
    name: "Jinja, default system turn",
    tokenizer: withTemplate(QWEN2_TEMPLATE),
    systemText: `<|im_start|>system\n${SYSTEM}<|im_end|>\n`,
    userOpen: "<|im_start|>user\n",
    afterQuery: `<|im_end|>\n<|im_start|>assistant\n${RESPONSE}<|im_end|>\n`,
  },
  {
    name: "Jinja, system folded into the user turn",
    tokenizer: withTemplate(FOLDED_SYSTEM_TEMPLATE),
    systemText: `[INST] <<SYS>>\n${SYSTEM}\n<</SYS>>\n\n`,
    userOpen: "",
    afterQuery: ` [/INST] ${RESPONSE}<|im_end|>`,
  },
];

/** The cut that keeps the newest prompt tokens (the rule for sequences without a system turn). */
function newestCut(
  full: { ids: number[]; mask: number[] },
  maxLen: number,
): { ids: number[]; mask: number[] } {
  const promptLen = full.mask.indexOf(1);
  const responseLen = full.ids.length - promptLen;
  const keepResponse = Math.min(responseLen, maxLen - Math.min(promptLen, Math.floor(maxLen / 2)));
  const start = promptLen - (maxLen - keepResponse);
  return {
    ids: full.ids.slice(start, promptLen + keepResponse),
    mask: full.mask.slice(start, promptLen + keepResponse),
  };
}

for (const format of FORMATS) {
  const tok = format.tokenizer;
  const prompt = (system: string) => [
    { role: "system" as const, content: system },
    { role: "user" as const, content: QUERY },
  ];

  test(`${format.name}: a long query keeps the whole system turn, the assistant header and the response, and loses its own oldest tokens`, () => {
    const full = encodeResponse(tok, prompt(SYSTEM), RESPONSE, 100_000);
    assert.ok(tok.decode(full.ids).startsWith(format.systemText + format.userOpen));
    const maxLen = Math.floor(full.ids.length * 0.6);
    const seq = encodeResponse(tok, prompt(SYSTEM), RESPONSE, maxLen);
    assert.equal(seq.ids.length, maxLen);
    assert.equal(seq.systemCut, undefined);
    // The response, whole.
    const scored = (s: { ids: number[]; mask: number[] }) => s.ids.filter((_, t) => s.mask[t] === 1);
    assert.deepEqual(scored(seq), scored(full));
    // The system part first, then the end of the user turn, the assistant header and the response.
    const text = tok.decode(seq.ids);
    assert.ok(text.startsWith(format.systemText), text);
    assert.ok(text.endsWith(`END OF QUERY${format.afterQuery}`), text);
    const kept = text.slice(format.systemText.length, text.length - format.afterQuery.length);
    assert.ok((format.userOpen + QUERY).endsWith(kept) && kept.length < QUERY.length, kept);
    // In ids: the sequence's own head, then its newest tokens.
    let head = 0;
    while (seq.ids[head] === full.ids[head]) head++;
    assert.deepEqual(seq.ids.slice(head), full.ids.slice(full.ids.length - (maxLen - head)));
    assert.deepEqual(seq.mask.slice(head), full.mask.slice(full.ids.length - (maxLen - head)));
    assert.deepEqual(seq.mask.slice(0, head), new Array(head).fill(0));
  });

  test(`${format.name}: a sequence that fits is the chat encoding unchanged`, () => {
    const { ids, responseMask } = encodeChat(tok, [
      ...prompt(SYSTEM),
      { role: "assistant", content: RESPONSE },
    ]);
    assert.deepStrictEqual(encodeResponse(tok, prompt(SYSTEM), RESPONSE, ids.length), {
      ids,
      mask: responseMask,
    });
  });

  test(`${format.name}: a system turn longer than half the budget falls back to the newest tokens and says so`, () => {
    const longSystem = `${SYSTEM} ${"Use vivid words. ".repeat(20)}`;
    const full = encodeResponse(tok, prompt(longSystem), RESPONSE, 100_000);
    const maxLen = Math.floor(full.ids.length * 0.6);
    const seq = encodeResponse(tok, prompt(longSystem), RESPONSE, maxLen);
    assert.equal(seq.systemCut, true);
    assert.deepEqual({ ids: seq.ids, mask: seq.mask }, newestCut(full, maxLen));
    // Without a system prompt nothing is flagged, and the cut is the same rule.
    const plainFull = encodeResponse(tok, prompt("").slice(1), RESPONSE, 100_000);
    const plain = encodeResponse(tok, prompt("").slice(1), RESPONSE, 40);
    assert.deepStrictEqual(plain, newestCut(plainFull, 40));
  });
}

test("a multi-turn SFT conversation cut for length keeps its system turn and cuts the oldest history", () => {
  const messages = [
    { role: "system" as const, content: SYSTEM },
    { role: "user" as const, content: QUERY },
    { role: "assistant" as const, content: RESPONSE },
    { role: "user" as const, content: "again" },
    { role: "assistant" as const, content: RESPONSE },
  ];
  const full = encodeConversation(mergedTokenizer, messages, 100_000);
  const maxLen = full.ids.length - 20;
  const seq = encodeConversation(mergedTokenizer, messages, maxLen);
  assert.equal(seq.ids.length, maxLen);
  assert.equal(seq.systemCut, undefined);
  assert.ok(mergedTokenizer.decode(seq.ids).startsWith(FORMATS[0].systemText));
  assert.ok(mergedTokenizer.decode(seq.ids).endsWith(`assistant\n${RESPONSE}<|im_end|>\n`));
});

test("systemPromptCuts names the records whose steering sequences lose part of their principles", () => {
  const long: PreferenceRecord & { id: string } = {
    id: "q-long",
    instruction: "hi",
    p_system: "Be kind. ".repeat(12),
    n_system: "Be rude.",
    chosen: "hello!",
    rejected: "go",
    raw: "hey",
  };
  const all = [records[0], long];
  const keys = requiredKeys(objectiveConfigSchema.parse({ loss: "ipo", sso: {} }));
  assert.deepEqual(systemPromptCuts(tokenizer, all, keys, 1000), []);
  // At 80 tokens p+ (108 bytes) no longer fits in half the budget; p- and the other record do.
  const cuts = systemPromptCuts(tokenizer, all, keys, 80);
  assert.deepEqual(cuts, [
    { record: 1, key: "posChosen" },
    { record: 1, key: "posRejected" },
  ]);
  assert.match(
    describeSystemCuts(all, cuts, 80),
    /^1 record\(s\) .* --max-len 80 \(2 sequence\(s\).*: q-long$/,
  );
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
