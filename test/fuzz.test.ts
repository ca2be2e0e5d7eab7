/**
 * Random mutations of valid inputs thrown at the parsers: JSONL files (records, prompts, pairs, score
 * items, answers), config.json, safetensors headers and bytes, and HTTP request bodies. Each must end
 * in a valid result or a clear error (UserError; a 4xx in OpenAI's error shape), never another
 * exception, a 5xx, a hang or partial output. Seeded, so a failure reproduces; the counts are quoted
 * in the README's Reliability section.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { loadCheckpoint, saveCheckpoint } from "../src/engine/checkpoint.js";
import { LlamaConfigSchema } from "../src/engine/config.js";
import { initLlamaTensors } from "../src/engine/init.js";
import { numel } from "../src/engine/params.js";
import { parseSafetensors, writeSafetensors } from "../src/engine/safetensors.js";
import { readAnswerFile } from "../src/eval/answer-files.js";
import { type ServerHandle, startServer } from "../src/serve/server.js";
import { exportFile } from "../src/sso/export.js";
import { readPairs, readPreferenceRecords, readScoreItems } from "../src/sso/pairs.js";
import { readPrompts } from "../src/sso/records.js";
import { UserError } from "../src/util/errors.js";
import { makeTinyCheckpoint } from "./helpers/serve-fixture.js";

// SELFSTEER_FUZZ_SEED and SELFSTEER_FUZZ_SCALE (a multiplier of the run counts) give deeper runs.
const SEED = Number(process.env.SELFSTEER_FUZZ_SEED ?? 20261129);
const SCALE = Number(process.env.SELFSTEER_FUZZ_SCALE ?? 1);
const runs = (n: number) => Math.max(1, Math.round(n * SCALE));
const work = mkdtempSync(join(tmpdir(), "selfsteer-fuzz-"));
after(() => rmSync(work, { recursive: true, force: true }));
const tried: Record<string, number> = { jsonl: 0, config: 0, safetensors: 0, http: 0 };

// ---- mutations ------------------------------------------------------------------------------------

type TextOp =
  | { kind: "delete"; at: number; length: number }
  | { kind: "insert"; at: number; text: string }
  | { kind: "replace"; at: number; text: string }
  | { kind: "truncate"; at: number }
  | { kind: "duplicate"; at: number; length: number };

// Characters that matter to JSON and to line splitting, so mutations hit the grammar often.
const JSON_CHARS = [
  ...'{}[]":,\\0123456789-+.eE \n\t\r',
  "true",
  "false",
  "null",
  "\u0000",
  "\uFEFF",
  "é",
  "😀",
];
const insertText = fc.oneof(
  fc.string({ unit: fc.constantFrom(...JSON_CHARS), maxLength: 6 }),
  fc.string({ unit: "binary", maxLength: 6 }),
  fc.constantFrom("1e309", "-0", "NaN", "9007199254740993", '"\\ud800"', "[]", "{}", "null"),
);
const textOp: fc.Arbitrary<TextOp> = fc.oneof(
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), length: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), text: insertText }),
  fc.record({ kind: fc.constant("replace" as const), at: fc.nat(), text: insertText }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant("duplicate" as const),
    at: fc.nat(),
    length: fc.integer({ min: 1, max: 200 }),
  }),
);

function applyTextOps(base: string, ops: readonly TextOp[]): string {
  let s = base;
  for (const op of ops) {
    const at = s.length === 0 ? 0 : op.at % (s.length + 1);
    if (op.kind === "delete") s = s.slice(0, at) + s.slice(at + op.length);
    else if (op.kind === "insert") s = s.slice(0, at) + op.text + s.slice(at);
    else if (op.kind === "replace") s = s.slice(0, at) + op.text + s.slice(at + op.text.length);
    else if (op.kind === "truncate") s = s.slice(0, at);
    else s = s.slice(0, at) + s.slice(at, at + op.length) + s.slice(at);
  }
  return s;
}

type JsonOp = { kind: "set"; pick: number; value: unknown } | { kind: "delete"; pick: number };

// Values chosen to probe limits: wrong types, huge and fractional numbers, deep and long structures.
const hostileValue = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(
    0,
    -1,
    0.5,
    1e10,
    2 ** 53,
    -1e308,
    "",
    "x".repeat(5000),
    [],
    {},
    null,
    true,
    Array.from({ length: 300 }, (_, i) => i),
  ),
);
const jsonOp: fc.Arbitrary<JsonOp> = fc.oneof(
  fc.record({ kind: fc.constant("set" as const), pick: fc.nat(), value: hostileValue }),
  fc.record({ kind: fc.constant("delete" as const), pick: fc.nat() }),
);

/** Every [container, key] inside a JSON value, in a fixed order. */
function slots(value: unknown, out: [Record<string, unknown> | unknown[], string | number][] = []) {
  if (Array.isArray(value))
    value.forEach((v, i) => {
      out.push([value, i]);
      slots(v, out);
    });
  else if (value !== null && typeof value === "object")
    for (const [k, v] of Object.entries(value)) {
      out.push([value as Record<string, unknown>, k]);
      slots(v, out);
    }
  return out;
}

function applyJsonOps(base: unknown, ops: readonly JsonOp[]): unknown {
  const value = structuredClone(base);
  for (const op of ops) {
    const all = slots(value);
    if (all.length === 0) break;
    const [container, key] = all[op.pick % all.length];
    if (op.kind === "set") (container as Record<string | number, unknown>)[key] = op.value;
    else if (Array.isArray(container)) container.splice(key as number, 1);
    else delete (container as Record<string, unknown>)[key as string];
  }
  return value;
}

/** A mutated text of `base`: character edits of its JSON, or structural edits of its value. */
function mutatedJsonText(base: unknown): fc.Arbitrary<string> {
  const text = JSON.stringify(base);
  return fc.oneof(
    fc.array(textOp, { minLength: 1, maxLength: 4 }).map((ops) => applyTextOps(text, ops)),
    fc.array(jsonOp, { minLength: 1, maxLength: 3 }).map((ops) => JSON.stringify(applyJsonOps(base, ops))),
  );
}

/** A mutated JSONL text of `lines`: one or more lines mutated, or the whole text edited. */
function mutatedJsonl(lines: readonly unknown[]): fc.Arbitrary<string> {
  const whole = `${lines.map((l) => JSON.stringify(l)).join("\n")}\n`;
  return fc.oneof(
    fc.array(textOp, { minLength: 1, maxLength: 5 }).map((ops) => applyTextOps(whole, ops)),
    fc
      .nat(lines.length - 1)
      .chain((at) =>
        mutatedJsonText(lines[at]).map((line) =>
          lines.map((l, i) => (i === at ? line : JSON.stringify(l))).join("\n"),
        ),
      ),
  );
}

/** Runs `fn`, which must return or throw a UserError (exit 2, a message); returns whether it returned. */
function cleanOutcome(fn: () => unknown, input: string): boolean {
  const started = performance.now();
  try {
    fn();
    return true;
  } catch (err) {
    if (!(err instanceof UserError))
      assert.fail(
        `not a UserError: ${err instanceof Error ? err.stack : String(err)}\ninput: ${JSON.stringify(input.slice(0, 500))}`,
      );
    assert.ok(err.message.length > 0 && !err.message.includes("\n    at "), err.message);
    return false;
  } finally {
    const ms = performance.now() - started;
    assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms on ${JSON.stringify(input.slice(0, 200))}`);
  }
}

// ---- JSONL --------------------------------------------------------------------------------------

const record = (id: string) => ({
  id,
  instruction: `question ${id}`,
  principles: [{ feature: "Helpfulness", good: "g", bad: "b", source: "catalog" }],
  p_system: "be good",
  n_system: "be bad",
  system: "",
  chosen: "good answer",
  rejected: "bad answer",
  raw: "plain answer",
  history: [["hi", "hello"]],
});
const jsonlTargets: { name: string; lines: unknown[]; read: (path: string) => unknown }[] = [
  {
    name: "SSO records (export, atomic output)",
    lines: [record("a"), record("b"), record("c")],
    read: (path) => {
      const out = `${path}.out.jsonl`;
      rmSync(out, { force: true });
      try {
        const result = exportFile(path, out, "trl");
        // A complete output: every line parses.
        for (const line of readFileSync(out, "utf8")
          .split("\n")
          .filter((l) => l !== ""))
          JSON.parse(line);
        return result;
      } catch (err) {
        assert.ok(!existsSync(out), "no output is left behind by a failed export");
        throw err;
      }
    },
  },
  {
    name: "prompts",
    lines: [{ id: "p1", prompt: "Say hi." }, { instruction: "Count to 3." }, { id: 7, prompt: "x" }],
    read: readPrompts,
  },
  {
    name: "preference pairs (mixed formats)",
    lines: readFileSync(new URL("../../test/fixtures/rm/mixed-formats.jsonl", import.meta.url), "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l)),
    read: readPairs,
  },
  {
    name: "training records (SSO or pairs)",
    lines: [record("a"), { prompt: "p", chosen: "c", rejected: "r" }],
    read: (path) => readPreferenceRecords(path, false),
  },
  {
    name: "score items",
    lines: readFileSync(new URL("../../test/fixtures/rm/score-items.jsonl", import.meta.url), "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l)),
    read: readScoreItems,
  },
  {
    name: "judge answers",
    lines: [
      { id: "1", instruction: "q", output: "a" },
      { instruction: "q2", output: "b" },
    ],
    read: (path) => readAnswerFile(path),
  },
];

describe("fuzz: JSONL readers", () => {
  for (const target of jsonlTargets)
    test(target.name, () => {
      const path = join(work, `${target.name.replace(/\W+/g, "-")}.jsonl`);
      let valid = 0;
      fc.assert(
        fc.property(mutatedJsonl(target.lines), (text) => {
          tried.jsonl++;
          writeFileSync(path, text);
          if (cleanOutcome(() => target.read(path), text)) valid++;
        }),
        { numRuns: runs(100), seed: SEED },
      );
      // The mutations must not all be rejected: some valid variants show the reader was exercised.
      assert.ok(valid > 0, "no mutation was accepted");
    });
});

// ---- config.json ----------------------------------------------------------------------------------

describe("fuzz: config.json", () => {
  const config = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    vocab_size: 13,
    hidden_size: 8,
    intermediate_size: 12,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    max_position_embeddings: 32,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: false,
    eos_token_id: [1, 2],
  };
  const dir = join(work, "config-ckpt");

  before(() => {
    const parsed = LlamaConfigSchema.parse(config);
    saveCheckpoint(dir, { config: parsed, tensors: initLlamaTensors(parsed, 1) });
  });

  test("loadCheckpoint on mutated configs", () => {
    let valid = 0;
    fc.assert(
      fc.property(mutatedJsonText(config), (text) => {
        tried.config++;
        writeFileSync(join(dir, "config.json"), text);
        if (cleanOutcome(() => loadCheckpoint(dir), text)) valid++;
      }),
      { numRuns: runs(200), seed: SEED },
    );
    assert.ok(valid > 0);
  });
});

// ---- safetensors ----------------------------------------------------------------------------------

describe("fuzz: safetensors", () => {
  const tensors = [
    { name: "a", shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
    { name: "b.weight", shape: [4], data: Float32Array.from([-1, 0.5, 1e-3, 7]) },
    { name: "empty", shape: [0, 5], data: new Float32Array(0) },
  ];
  const file = writeSafetensors(tensors, { step: "3" });
  const headerLength = Number(new DataView(file.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + headerLength)));
  const data = file.subarray(8 + headerLength);

  /** A file with `headerText` as its header (its length prefix correct) and the original data. */
  const withHeader = (headerText: string): Uint8Array => {
    const bytes = new TextEncoder().encode(headerText);
    const out = new Uint8Array(8 + bytes.length + data.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(bytes.length), true);
    out.set(bytes, 8);
    out.set(data, 8 + bytes.length);
    return out;
  };
  const byteFlips = fc
    .array(fc.record({ at: fc.nat(), value: fc.nat(255) }), { minLength: 1, maxLength: 6 })
    .map((flips) => {
      const out = file.slice();
      for (const f of flips) out[f.at % out.length] = f.value;
      return out;
    });
  const truncations = fc.nat(file.length - 1).map((n) => file.slice(0, n));
  const files = fc.oneof(
    mutatedJsonText(header).map(withHeader),
    byteFlips,
    truncations,
    // A length prefix anywhere in 64 bits.
    fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((n) => {
      const out = file.slice();
      new DataView(out.buffer).setBigUint64(0, n, true);
      return out;
    }),
  );

  test("parseSafetensors on mutated files", () => {
    let valid = 0;
    fc.assert(
      fc.property(files, (bytes) => {
        tried.safetensors++;
        const ok = cleanOutcome(
          () => {
            const parsed = parseSafetensors(bytes, "fuzz.safetensors");
            // A valid result is a whole one: every tensor holds exactly its shape's values.
            for (const [name, t] of parsed.tensors)
              assert.equal(t.data.length, numel(t.shape), `tensor ${name}`);
          },
          Buffer.from(bytes.subarray(0, 300)).toString("latin1"),
        );
        if (ok) valid++;
      }),
      { numRuns: runs(400), seed: SEED },
    );
    assert.ok(valid > 0);
  });
});

// ---- HTTP bodies ----------------------------------------------------------------------------------

describe("fuzz: HTTP request bodies", () => {
  let server: ServerHandle;
  const NAME = "tiny";

  before(async () => {
    const modelDir = makeTinyCheckpoint(join(work, "tiny"));
    // A short context keeps every accepted request quick, whatever max_tokens a mutation asks for.
    server = await startServer({
      modelDir,
      modelName: NAME,
      port: 0,
      backend: "plain",
      maxBatch: 4,
      maxQueue: 16,
      maxModelLen: 48,
      maxBodyBytes: 256 * 1024,
    });
  });
  after(() => server.close());

  const bodies: [string, Record<string, unknown>][] = [
    [
      "/chat/completions",
      {
        model: NAME,
        messages: [
          { role: "system", content: "Be terse." },
          { role: "user", content: [{ type: "text", text: "Say hi." }] },
          { role: "assistant", content: "Hi." },
          { role: "user", content: "Again." },
        ],
        max_tokens: 4,
        n: 2,
        seed: 1,
        temperature: 0.7,
        top_p: 0.9,
        stop: ["\n"],
        logprobs: true,
        top_logprobs: 2,
        stream: false,
        stream_options: null,
      },
    ],
    [
      "/completions",
      {
        model: NAME,
        prompt: ["Once", "Upon"],
        max_tokens: 3,
        echo: true,
        logprobs: 1,
        n: 1,
        seed: 2,
        top_k: 5,
        stream: true,
        stream_options: { include_usage: true },
      },
    ],
    ["/completions", { model: NAME, prompt: [[1, 2, 3], [4]], max_tokens: 0, echo: true, logprobs: 0 }],
  ];

  test("POSTs of mutated bodies: 200 with a whole answer, or a 4xx in OpenAI's error shape", async () => {
    let ok = 0;
    await fc.assert(
      fc.asyncProperty(
        fc
          .nat(bodies.length - 1)
          .chain((i) => mutatedJsonText(bodies[i][1]).map((text) => [bodies[i][0], text] as const)),
        async ([path, text]) => {
          tried.http++;
          const started = performance.now();
          const response = await fetch(`${server.url}${path}`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: text,
            signal: AbortSignal.timeout(10_000),
          });
          const answer = await response.text();
          const ms = performance.now() - started;
          const where = `${path} ${JSON.stringify(text.slice(0, 300))} -> ${response.status} ${answer.slice(0, 300)}`;
          assert.ok(ms < 10_000, `took ${ms} ms: ${where}`);
          assert.ok(response.status === 200 || (response.status >= 400 && response.status < 500), where);
          if (response.status !== 200) {
            const error = JSON.parse(answer).error;
            assert.equal(typeof error.message, "string", where);
            assert.equal(typeof error.type, "string", where);
            return;
          }
          ok++;
          if ((response.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
            // A whole stream: data events, the last one [DONE], no error event.
            assert.ok(answer.endsWith("data: [DONE]\n\n"), where);
            assert.ok(!answer.includes('"error"'), where);
          } else JSON.parse(answer);
        },
      ),
      { numRuns: runs(120), seed: SEED },
    );
    assert.ok(ok > 0, "no mutated body was served");
  });
});

test("count of mutations tried (quoted in the README's Reliability section)", (t) => {
  const total = Object.values(tried).reduce((a, b) => a + b, 0);
  t.diagnostic(
    `fuzz mutations tried: ${total} (JSONL ${tried.jsonl}, config ${tried.config}, safetensors ${tried.safetensors}, HTTP ${tried.http})`,
  );
  assert.ok(total > 0);
});
