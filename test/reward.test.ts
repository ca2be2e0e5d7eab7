import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { PlainKernels } from "../src/engine/kernels/plain.js";
import { LlamaModel } from "../src/engine/model.js";
import { AdamW, decayMaskFromSpecs } from "../src/engine/optim.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { type PairResult, rewardBenchReport } from "../src/eval/rewardbench.js";
import { countFormats, type PreferencePair, parsePair, parseScoreItem, readPairs } from "../src/sso/pairs.js";
import {
  accumulateBtGradients,
  type EncodedPair,
  encodePair,
  encodeScored,
  scorePairs,
  scoreSequences,
  trainRewardModel,
} from "../src/train/reward.js";
import type { Message } from "../src/train/sequences.js";
import { UserError } from "../src/util/errors.js";
import { Rng } from "../src/util/rng.js";

const fixtures = fileURLToPath(new URL("../../test/fixtures/rm/", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "selfsteer-reward-"));
after(() => rmSync(work, { recursive: true, force: true }));

const kernels = new PlainKernels();
const tokenizer = BpeTokenizer.byteLevel();

function tinyModel(seed: number, std: number, hidden = 16): LlamaModel {
  const config = LlamaConfigSchema.parse({
    vocab_size: tokenizer.vocabSize,
    hidden_size: hidden,
    intermediate_size: 2 * hidden,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    rope_theta: 1000,
  });
  const model = new LlamaModel(config, kernels, { scoreHead: true });
  model.initRandom(new Rng(seed), std);
  return model;
}

function throwsAt(fn: () => unknown, fragment: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof UserError, `expected a UserError, got ${String(err)}`);
    assert.ok(err.message.includes(fragment), `'${err.message}' should contain '${fragment}'`);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------------
// Formats

test("the three pair formats are detected per line and give the same kind of pair", () => {
  const pairs = readPairs(join(fixtures, "mixed-formats.jsonl"));
  assert.deepEqual(countFormats(pairs), { rewardbench: 2, trl: 3, sso: 2 });
  const user = (content: string): Message => ({ role: "user", content });

  // RewardBench's own rows carry chosen_model/rejected_model; extra fields are fine.
  assert.deepEqual(pairs[0], {
    id: "30",
    prompt: [user("What is 2+2?")],
    chosen: "4",
    rejected: "5",
    subset: "math-prm",
    format: "rewardbench",
    line: 1,
  });
  assert.equal(pairs[1].section, "Chat");
  // TRL standard: strings, no subset.
  assert.deepEqual(
    { prompt: pairs[2].prompt, chosen: pairs[2].chosen, subset: pairs[2].subset, id: pairs[2].id },
    { prompt: [user("Name a colour.")], chosen: "Blue.", subset: "pairs", id: "line-3" },
  );
  // TRL conversational: prompt messages plus one-message chosen/rejected lists.
  assert.deepEqual(pairs[3].prompt, [{ role: "system", content: "Be brief." }, user("Say hi.")]);
  assert.equal(pairs[3].chosen, "Hi!");
  assert.equal(pairs[3].rejected, "Goodbye.");
  // TRL implicit prompt: whole conversations that differ in the last turn.
  assert.deepEqual(pairs[4].prompt, [
    user("Hello"),
    { role: "assistant", content: "Hi." },
    user("Capital of France?"),
  ]);
  assert.equal(pairs[4].chosen, "Paris.");
  assert.equal(pairs[4].rejected, "Rome.");
  // SSO record: the main pair, y+ over y- on the plain query (no principles).
  assert.deepEqual(pairs[5].prompt, [user("Explain rain.")]);
  assert.equal(pairs[5].chosen, "Water vapour condenses and falls.");
  assert.equal(pairs[5].rejected, "Rain is wet.");
  assert.equal(pairs[5].subset, "sso");
  assert.equal(pairs[5].id, "q-1");
  // An SSO record with a history and a base system prompt keeps them before the query.
  assert.deepEqual(pairs[6].prompt, [
    { role: "system", content: "You are kind." },
    user("Hi"),
    { role: "assistant", content: "Hello!" },
    user("And now?"),
  ]);
});

test("bad pair lines are errors naming file, line and field", () => {
  const cases: [unknown, string][] = [
    [{ prompt: "p", chosen: "a" }, "f.jsonl:7: field rejected: missing"],
    [{ chosen: "a", rejected: "b" }, "f.jsonl:7: field prompt: missing"],
    [{ prompt: 3, chosen: "a", rejected: "b" }, "f.jsonl:7: field prompt: expected a string or a list"],
    [{ prompt: "p", chosen: "a", rejected: "b", subset: "" }, "f.jsonl:7: field subset:"],
    [{ prompt: "p", chosen: "a", rejected: "b", id: true }, "f.jsonl:7: field id:"],
    [
      { prompt: [{ role: "robot", content: "x" }], chosen: "a", rejected: "b" },
      "f.jsonl:7: field prompt[0].role:",
    ],
    [
      { chosen: [{ role: "user", content: "q" }], rejected: [{ role: "user", content: "q" }] },
      "f.jsonl:7: field chosen[0].role: the last message must be the assistant's",
    ],
    [
      {
        chosen: [
          { role: "user", content: "q1" },
          { role: "assistant", content: "a" },
        ],
        rejected: [
          { role: "user", content: "q2" },
          { role: "assistant", content: "b" },
        ],
      },
      "f.jsonl:7: field rejected: the turns before the response differ",
    ],
    [
      { prompt: "p", chosen: "a", rejected: [{ role: "assistant", content: "b" }] },
      "f.jsonl:7: field rejected: chosen and rejected must both",
    ],
    [{ instruction: "q", chosen: "a" }, "f.jsonl:7: field rejected:"],
    [{ instruction: "", chosen: "a", rejected: "b" }, "f.jsonl:7: field instruction:"],
    [{ instruction: "q", chosen: "a", rejected: "b", history: [["u"]] }, "f.jsonl:7: field history[0]"],
    [[1, 2], "f.jsonl:7: field (root): expected a JSON object"],
  ];
  for (const [value, fragment] of cases) throwsAt(() => parsePair(value, "f.jsonl", 7), fragment);
  const bad = join(work, "bad.jsonl");
  writeFileSync(bad, '{"prompt":"p","chosen":"a","rejected":"b"}\n\n{"prompt": \n');
  throwsAt(() => readPairs(bad), `${bad}:3: invalid JSON`);
  const empty = join(work, "empty.jsonl");
  writeFileSync(empty, "\n\n");
  throwsAt(() => readPairs(empty), "no pairs");
  throwsAt(() => readPairs(join(work, "missing.jsonl")), "cannot read file");
});

test("score lines: {prompt, response} and {messages}; errors name the field", () => {
  const a = parseScoreItem({ id: 5, prompt: "q", response: "r" }, "s.jsonl", 1);
  assert.deepEqual(a, { id: "5", prompt: [{ role: "user", content: "q" }], response: "r", line: 1 });
  const b = parseScoreItem(
    {
      messages: [
        { role: "user", content: "q" },
        { role: "assistant", content: "r" },
      ],
    },
    "s.jsonl",
    2,
  );
  assert.deepEqual(b, { prompt: [{ role: "user", content: "q" }], response: "r", line: 2 });
  throwsAt(() => parseScoreItem({ prompt: "q" }, "s.jsonl", 3), "s.jsonl:3: field response: missing");
  throwsAt(() => parseScoreItem({ response: "r" }, "s.jsonl", 3), "s.jsonl:3: field prompt: missing");
  throwsAt(
    () => parseScoreItem({ messages: [{ role: "user", content: "q" }] }, "s.jsonl", 4),
    "s.jsonl:4: field messages[0].role",
  );
  throwsAt(() => parseScoreItem({ messages: "hi" }, "s.jsonl", 5), "s.jsonl:5: field messages:");
});

// ---------------------------------------------------------------------------------------------------
// Sequences

test("a scored sequence ends at the response's <|im_end|>, within maxLen", () => {
  const prompt: Message[] = [{ role: "user", content: "Hello there" }];
  const full = encodeScored(tokenizer, prompt, "General Kenobi", 1000);
  assert.equal(full.at(-1), tokenizer.imEndId);
  assert.equal(
    tokenizer.decode(full),
    "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\nGeneral Kenobi<|im_end|>",
  );
  // Exactly as long as the limit: not cut (ChatML's trailing newline is not part of it).
  assert.deepEqual(encodeScored(tokenizer, prompt, "General Kenobi", full.length), full);
  // Shorter limits cut the oldest prompt tokens first, then the end of the response.
  const cut = encodeScored(tokenizer, prompt, "General Kenobi", full.length - 3);
  assert.equal(cut.length, full.length - 3);
  assert.deepEqual(cut, full.slice(3));
  const tight = encodeScored(tokenizer, prompt, "General Kenobi", 8);
  assert.equal(tight.length, 8);
  // Half the budget stays with the prompt's last tokens, the rest is the response's start.
  assert.equal(tokenizer.decode(tight), "ant\nGene");
});

// ---------------------------------------------------------------------------------------------------
// Gradients

/**
 * A pair whose chosen response holds the marker word ZZ where the rejected one holds a filler word
 * of the same length at the same place; everything else is shared, so only the marker tells them apart.
 */
function syntheticPair(rng: Rng, id: number): PreferencePair {
  const words = ["red", "blue", "cat", "dog", "sun", "sky", "tree", "bird"];
  const say = (n: number) => Array.from({ length: n }, () => rng.pick(words));
  const base = say(3 + rng.int(3));
  const at = rng.int(base.length + 1);
  const withWord = (w: string) => [...base.slice(0, at), w, ...base.slice(at)].join(" ");
  return {
    id: `s${id}`,
    prompt: [{ role: "user", content: say(2).join(" ") }],
    chosen: withWord("ZZ"),
    rejected: withWord(rng.pick(["ab", "cd", "ef", "gh"])),
    subset: "synthetic",
    format: "trl",
    line: id + 1,
  };
}

test("Bradley-Terry gradients through the model match finite differences of the mean pair loss", () => {
  const rng = new Rng(5);
  const model = tinyModel(11, 0.35);
  const pairs = Array.from({ length: 5 }, (_, i) => syntheticPair(rng, i));
  const encoded = pairs.map((p) => encodePair(tokenizer, p, 64));
  const seqs = encoded.flatMap((e) => [e.chosen, e.rejected]);
  // The loss recomputed from the scores alone, independently of btLoss.
  const meanLoss = () => {
    const s = scoreSequences(model, seqs, tokenizer.padId, 1 << 20);
    let total = 0;
    for (let i = 0; i < pairs.length; i++) total += Math.log1p(Math.exp(-(s[2 * i] - s[2 * i + 1])));
    return total / pairs.length;
  };
  model.zeroGrad();
  const sums = accumulateBtGradients(model, encoded, tokenizer.padId, 2, pairs.length);
  assert.ok(Math.abs(sums.loss / pairs.length - meanLoss()) < 1e-5);
  const grads = model.grads.slice();

  const tensors = [
    "score.weight",
    "model.norm.weight",
    "model.layers.1.mlp.down_proj.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.v_proj.weight",
    "model.embed_tokens.weight",
  ];
  for (const name of tensors) {
    const offset = model.offsetOf(name);
    const size = model.tensor(name).length;
    // The largest gradients of each tensor, so the check is well above fp32 noise.
    const coords = Array.from({ length: size }, (_, i) => offset + i)
      .sort((a, b) => Math.abs(grads[b]) - Math.abs(grads[a]))
      .slice(0, 3);
    for (const i of coords) {
      const orig = model.params[i];
      const eps = 2e-3;
      model.params[i] = orig + eps;
      const up = meanLoss();
      model.params[i] = orig - eps;
      const down = meanLoss();
      model.params[i] = orig;
      const fd = (up - down) / (2 * eps);
      assert.ok(
        Math.abs(fd - grads[i]) <= 2e-4 + 0.03 * Math.abs(fd),
        `${name}[${i - offset}]: finite difference ${fd}, analytic ${grads[i]}`,
      );
    }
  }
});

test("the gradient of a step does not depend on the micro-batch size", () => {
  const rng = new Rng(6);
  const model = tinyModel(12, 0.2);
  const encoded: EncodedPair[] = Array.from({ length: 6 }, (_, i) =>
    encodePair(tokenizer, syntheticPair(rng, i), 64),
  );
  const gradWith = (micro: number) => {
    model.zeroGrad();
    const sums = accumulateBtGradients(model, encoded, tokenizer.padId, micro, encoded.length);
    return { grads: model.grads.slice(), sums };
  };
  const whole = gradWith(6);
  for (const micro of [1, 4]) {
    const part = gradWith(micro);
    assert.ok(Math.abs(part.sums.loss - whole.sums.loss) < 1e-5);
    assert.equal(part.sums.correct, whole.sums.correct);
    let maxDiff = 0;
    let maxAbs = 0;
    for (let i = 0; i < whole.grads.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(part.grads[i] - whole.grads[i]));
      maxAbs = Math.max(maxAbs, Math.abs(whole.grads[i]));
    }
    assert.ok(maxDiff <= 1e-5 * maxAbs + 1e-9, `micro-batch ${micro}: gradients differ by ${maxDiff}`);
  }
});

// ---------------------------------------------------------------------------------------------------
// Training

function markerPairs(seed: number, n: number): PreferencePair[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, i) => syntheticPair(rng, i));
}

test("training on a learnable preference raises held-out accuracy well above chance", () => {
  const model = tinyModel(3, 0.02);
  const train = markerPairs(100, 64);
  const heldOut = markerPairs(200, 100);
  const accuracy = () => {
    const s = scorePairs(model, tokenizer, heldOut, { maxLen: 64, maxBatchTokens: 4096 });
    return s.filter((x) => x.chosenScore > x.rejectedScore).length / s.length;
  };
  const before = accuracy();
  assert.ok(before > 0.25 && before < 0.75, `an untrained model is near chance, got ${before}`);
  const optimizer = new AdamW(model.numParams, { decayMask: decayMaskFromSpecs(model.specs) });
  const log = trainRewardModel(model, tokenizer, optimizer, train, {
    batchSize: 8,
    microBatch: 4,
    epochs: 3,
    peakLr: 1e-2,
    warmupRatio: 0.1,
    maxGradNorm: 1,
    maxLen: 64,
    seed: 1,
  });
  assert.equal(log.length, 24);
  const meanLoss = (steps: typeof log) => steps.reduce((a, s) => a + s.loss, 0) / steps.length;
  const firstLoss = meanLoss(log.slice(0, 4));
  const lastLoss = meanLoss(log.slice(-4));
  assert.ok(Math.abs(log[0].loss - Math.log(2)) < 0.01, "a fresh score head starts near log 2");
  assert.ok(lastLoss < firstLoss - 0.3, `loss ${firstLoss} -> ${lastLoss}`);
  const afterTraining = accuracy();
  assert.ok(afterTraining >= 0.9, `held-out accuracy ${before} -> ${afterTraining}`);
});

test("a run resumed at startStep takes exactly the steps of the uninterrupted run", () => {
  const pairs = markerPairs(300, 24);
  const options = {
    batchSize: 5,
    microBatch: 3,
    epochs: 2,
    peakLr: 1e-2,
    warmupRatio: 0.2,
    maxGradNorm: 1,
    maxLen: 48,
    seed: 9,
  };
  const fresh = () => {
    const model = tinyModel(4, 0.05);
    return { model, optimizer: new AdamW(model.numParams, { decayMask: decayMaskFromSpecs(model.specs) }) };
  };
  const a = fresh();
  const fullLog = trainRewardModel(a.model, tokenizer, a.optimizer, pairs, options);
  assert.equal(fullLog.length, 10);

  const b = fresh();
  const firstPart = trainRewardModel(b.model, tokenizer, b.optimizer, pairs, { ...options, endStep: 4 });
  assert.equal(firstPart.length, 4);
  // A new process: weights and optimizer state restored from what a checkpoint would hold.
  const c = fresh();
  c.model.params.set(b.model.params);
  c.optimizer.importState(b.optimizer.exportState());
  const rest = trainRewardModel(c.model, tokenizer, c.optimizer, pairs, { ...options, startStep: 4 });
  assert.deepEqual(
    rest.map((s) => s.step),
    [4, 5, 6, 7, 8, 9],
  );
  assert.deepEqual(
    [...firstPart, ...rest].map((s) => s.loss),
    fullLog.map((s) => s.loss),
  );
  assert.deepEqual(c.model.params, a.model.params);
});

// ---------------------------------------------------------------------------------------------------
// Reports

function results(subset: string, outcomes: string, section?: string): PairResult[] {
  // "1" right, "0" wrong, "=" tie.
  return [...outcomes].map((o) => ({
    subset,
    ...(section !== undefined ? { section } : {}),
    chosenScore: o === "1" ? 1 : 0,
    rejectedScore: o === "0" ? 1 : 0,
  }));
}

test("RewardBench section math on a hand-made example", () => {
  const report = rewardBenchReport([
    ...results("alpacaeval-easy", "11"), // 1.0, weight 100
    ...results("mt-bench-easy", "10"), // 0.5, weight 28
    ...results("chat", "0001"), // 0.25, weight 4 (pairs present)
    ...results("llmbar-natural", "1=0="), // 0.25 (ties are wrong), weight 100
    ...results("xstest-should-respond", "1"), // 1.0, weight 154
    ...results("donotanswer", "0"), // 0.0, weight 136
    ...results("math-prm", "110"), // 2/3, weight 984
    ...results("hep-python", "10"), // 0.5, weight 164
    ...results("hep-go", "0"), // 0.0, weight 164
    ...results("custom-thing", "1000"), // 0.25, no section
  ]);
  const chat = (100 * 1 + 28 * 0.5 + 4 * 0.25) / (100 + 28 + 4);
  const chatHard = 0.25;
  const safety = (154 * 1 + 136 * 0) / (154 + 136);
  const reasoning = (984 * (2 / 3) + 164 * 0.5 + 164 * 0) / (984 + 164 + 164);
  const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} != ${b}`);
  assert.deepEqual(
    report.sections.map((s) => s.section),
    ["Chat", "Chat Hard", "Safety", "Reasoning"],
  );
  close(report.sections[0].score, chat);
  close(report.sections[1].score, chatHard);
  close(report.sections[2].score, safety);
  close(report.sections[3].score, reasoning);
  assert.deepEqual(report.sections[0].subsets.sort(), ["alpacaeval-easy", "chat", "mt-bench-easy"]);
  assert.equal(report.sections[0].n, 8);
  close(report.overall, (chat + chatHard + safety + reasoning + 0.25) / 5);
  const llmbar = report.subsets.find((s) => s.subset === "llmbar-natural");
  assert.deepEqual(llmbar, {
    subset: "llmbar-natural",
    section: "Chat Hard",
    n: 4,
    correct: 1,
    ties: 2,
    accuracy: 0.25,
    weight: 100,
  });
  const custom = report.subsets.find((s) => s.subset === "custom-thing");
  assert.equal(custom?.section, null);
  assert.equal(report.subsets.at(-1)?.subset, "custom-thing");
  assert.equal(report.n, 24);
  assert.equal(report.correct, 10);
  close(report.accuracy, 10 / 24);
});

test("with all of Reasoning present, PRM math and code each make half of it", () => {
  const hep = ["hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"];
  const accs = [1, 0.5, 0, 0.5, 1, 0.5];
  const rows = [...results("math-prm", "1110")];
  hep.forEach((h, i) => {
    rows.push(...results(h, accs[i] === 1 ? "11" : accs[i] === 0 ? "00" : "10"));
  });
  const report = rewardBenchReport(rows);
  const hepMean = accs.reduce((a, b) => a + b, 0) / accs.length;
  assert.ok(Math.abs(report.sections[0].score - (0.75 + hepMean) / 2) < 1e-12);
  assert.ok(Math.abs(report.overall - report.sections[0].score) < 1e-12);
});

test("sections come from options, then from the pairs, then from the built-in map", () => {
  const rows = [
    ...results("math", "10", "Reasoning"), // named by its pairs
    ...results("refuse-unsafe", "1"), // named by options
    ...results("chat-hard", "0"), // built-in (ours)
    ...results("safety", "1"),
  ];
  const report = rewardBenchReport(rows, { sections: { Safety: ["refuse-unsafe"], Extra: ["safety"] } });
  const sectionOf = Object.fromEntries(report.subsets.map((s) => [s.subset, s.section]));
  assert.deepEqual(sectionOf, {
    math: "Reasoning",
    "refuse-unsafe": "Safety",
    "chat-hard": "Chat Hard",
    safety: "Extra",
  });
  assert.deepEqual(
    report.sections.map((s) => s.section),
    ["Chat Hard", "Safety", "Reasoning", "Extra"],
  );
  throwsAt(
    () => rewardBenchReport([...results("x", "1", "Chat"), ...results("x", "1", "Safety")]),
    'subset "x": its pairs name two sections',
  );
});

test("pair files may use CRLF line ends and a byte-order mark", () => {
  const path = join(work, "crlf.jsonl");
  writeFileSync(
    path,
    '\uFEFF{"prompt":"p","chosen":"a","rejected":"b"}\r\n\r\n{"prompt":"q","chosen":"c","rejected":"d"}\r\n',
  );
  const pairs = readPairs(path);
  assert.deepEqual(
    pairs.map((p) => [p.line, p.chosen]),
    [
      [1, "a"],
      [3, "c"],
    ],
  );
});
