import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { type ChatTurn, encodeChat } from "../src/engine/chat.js";
import { ChatFormat } from "../src/engine/chat-format.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { UserError } from "../src/util/errors.js";

const fixtures = fileURLToPath(new URL("../../test/fixtures/tokenizer/", import.meta.url));
const VARIANTS = ["llama2-legacy", "metaspace-always", "mistral-metaspace"];
const load = (name: string) => BpeTokenizer.fromFile(`${fixtures}${name}.tokenizer.json`);
const legacy = load("llama2-legacy");
const mistral = load("mistral-metaspace");
const MARK = "\u2581";

// Text over pieces the vocabulary has and has not (byte fallback), without "▁" (it decodes to a space).
const anyText = fc.string({
  unit: fc.oneof(
    fc.constantFrom("a", "e", "t", "h", " ", " ", "\n", "\t", ".", "The", " model", "é", "東", "😀", "ß"),
    fc.string({ unit: "grapheme", maxLength: 1 }).filter((c) => !c.includes(MARK)),
  ),
  maxLength: 24,
});

test("SentencePiece-style layouts encode and decode like Hugging Face's tokenizers.js", () => {
  const file = JSON.parse(readFileSync(`${fixtures}sentencepiece-expected.json`, "utf8")) as {
    probes: string[];
    expected: Record<string, { ids: number[]; decoded: string }[]>;
  };
  assert.deepEqual(Object.keys(file.expected).sort(), VARIANTS);
  assert.ok(file.probes.length > 150);
  for (const name of VARIANTS) {
    const tok = load(name);
    assert.deepEqual(tok.warnings, [], name);
    file.probes.forEach((probe, i) => {
      const { ids, decoded } = file.expected[name][i];
      assert.deepEqual(tok.encode(probe), ids, `${name} probe ${i}: ${JSON.stringify(probe)}`);
      assert.equal(tok.decode(ids), decoded, `${name} decode ${i}: ${JSON.stringify(probe)}`);
    });
    // Writing keeps the pipeline and the model fields, so the reloaded copy is the same tokenizer.
    const json = tok.toJSON() as { model: Record<string, unknown> };
    assert.equal(json.model.byte_fallback, true);
    assert.equal(json.model.unk_token, "<unk>");
    assert.equal(json.model.fuse_unk, true);
    const again = BpeTokenizer.fromJSON(JSON.parse(JSON.stringify(json)), name);
    for (const probe of file.probes) assert.deepEqual(again.encode(probe), tok.encode(probe));
  }
});

test("Llama 2 legacy layout: every piece between special tokens gets its ▁; decode gives the text back", () => {
  const hello = legacy.encode("hello");
  assert.equal(legacy.idToToken(hello[0])?.startsWith(MARK), true);
  assert.deepEqual(legacy.encode("<s>hello"), [1, ...hello], "the piece after <s> is prefixed too");
  fc.assert(
    fc.property(anyText, (text) => {
      const ids = legacy.encode(text, { allowSpecial: false });
      assert.equal(legacy.decode(ids), text);
      // Streaming bytes give the same text with the prefix space the decoder strips.
      const streamed = new TextDecoder().decode(legacy.decodeBytes(ids));
      assert.equal(streamed, text === "" ? "" : ` ${text}`);
    }),
    { numRuns: 300, seed: 3 },
  );
});

test("Metaspace prepend_scheme first: only the start of the input gets a ▁, a leading space is that ▁", () => {
  const inst = mistral.specialId("[INST]");
  const hello = mistral.encode("hello");
  assert.equal(mistral.idToToken(hello[0])?.startsWith(MARK), true);
  assert.deepEqual(mistral.encode(" hello"), hello);
  const after = mistral.encode("[INST]hello");
  assert.equal(after[0], inst);
  assert.notDeepEqual(after.slice(1), hello, "no ▁ after a special token");
  assert.deepEqual(after.slice(1), mistral.encode("xhello").slice(mistral.encode("x").length));
  fc.assert(
    fc.property(anyText, (text) => {
      const ids = mistral.encode(text, { allowSpecial: false });
      assert.equal(mistral.decode(ids), text.startsWith(" ") ? text.slice(1) : text);
    }),
    { numRuns: 300, seed: 4 },
  );
});

test("byte fallback: characters outside the vocabulary become their UTF-8 bytes as <0xXX> tokens", () => {
  for (const ch of ["ア", "😀", "\u0000", "Ω", "\u{10FFFF}"]) {
    const ids = legacy.encode(ch, { allowSpecial: false });
    const bytes = [...Buffer.from(ch, "utf8")];
    // The first token is the ▁ the normalizer put in front.
    assert.equal(legacy.idToToken(ids[0]), MARK);
    assert.deepEqual(
      ids.slice(1).map((id) => legacy.idToToken(id)),
      bytes.map((b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`),
    );
    assert.deepEqual([...legacy.decodeBytes(ids.slice(1))], bytes);
    assert.equal(legacy.decode(ids), ch);
  }
  // A lone surrogate is U+FFFD, as in a Rust string; invalid byte runs decode to one U+FFFD per byte.
  assert.deepEqual(legacy.encode("\uD800"), legacy.encode("\uFFFD"));
  const e3 = legacy.tokenToId("<0xE3>") as number;
  const a = legacy.tokenToId("a") as number;
  assert.equal(legacy.decode([a, e3, e3, a]), "a\uFFFD\uFFFDa");
});

/** A hand-written SentencePiece-style tokenizer.json over a tiny vocabulary. */
function tiny(extra: { pre_tokenizer?: unknown; normalizer?: unknown; decoder?: unknown; model?: object }) {
  const vocab: Record<string, number> = { "<unk>": 0, [MARK]: 1, a: 2, b: 3, "a▁": 4, "▁a": 5 };
  return {
    added_tokens: [{ id: 0, content: "<unk>", special: true }],
    normalizer: extra.normalizer ?? null,
    pre_tokenizer: extra.pre_tokenizer ?? null,
    decoder: extra.decoder ?? { type: "Metaspace", replacement: MARK, prepend_scheme: "always" },
    model: {
      type: "BPE",
      unk_token: "<unk>",
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges: ["a ▁", "▁ a"],
      ...extra.model,
    },
  };
}

test("Metaspace split (the default of older files) keeps merges inside ▁-started words", () => {
  // "a a" -> "▁a▁a". Split: words "▁a", "▁a", each merged by "▁ a". No split: "a ▁" ranks first.
  const split = BpeTokenizer.fromJSON(
    tiny({ pre_tokenizer: { type: "Metaspace", replacement: MARK, add_prefix_space: true } }),
  );
  assert.deepEqual(split.encode("a a"), [5, 5]);
  const whole = BpeTokenizer.fromJSON(
    tiny({ pre_tokenizer: { type: "Metaspace", replacement: MARK, prepend_scheme: "always", split: false } }),
  );
  assert.deepEqual(whole.encode("a a"), [1, 4, 2]);
  const never = BpeTokenizer.fromJSON(
    tiny({ pre_tokenizer: { type: "Metaspace", replacement: MARK, prepend_scheme: "never", split: true } }),
  );
  assert.deepEqual(never.encode("a  a"), [2, 1, 5]);
  // Unknown characters: one <unk> each, or one per run with fuse_unk; none at all without unk_token.
  assert.deepEqual(whole.encode("axyb"), [5, 0, 0, 3]);
  const fused = BpeTokenizer.fromJSON(
    tiny({
      pre_tokenizer: { type: "Metaspace", replacement: MARK, split: false },
      model: { fuse_unk: true },
    }),
  );
  assert.deepEqual(fused.encode("axyb"), [5, 0, 3]);
  const dropping = BpeTokenizer.fromJSON(
    tiny({
      pre_tokenizer: { type: "Metaspace", replacement: MARK, split: false },
      model: { unk_token: null },
    }),
  );
  assert.deepEqual(dropping.encode("axyb"), [5, 3]);
  // The Metaspace decoder drops the first token's ▁ and turns the others into spaces.
  assert.equal(whole.decode([1, 4, 2]), "a a");
  assert.equal(whole.decode([5, 5]), "a a");
});

test("bad SentencePiece-style files are UserErrors naming the file and field", () => {
  const rejects = (json: unknown, pattern: RegExp) =>
    assert.throws(
      () => BpeTokenizer.fromJSON(json, "sp.json"),
      (err: unknown) => err instanceof UserError && pattern.test(err.message),
    );
  rejects(
    tiny({ decoder: { type: "WordPiece" } }),
    /^sp\.json: field decoder\.type: unsupported decoder "WordPiece"/,
  );
  rejects(
    tiny({ decoder: { type: "Strip", content: " ", start: -1, stop: 0 } }),
    /^sp\.json: field decoder\.start/,
  );
  rejects(
    tiny({ model: { unk_token: "<nope>" } }),
    /field model\.unk_token: "<nope>" is not in model\.vocab/,
  );
  rejects(
    tiny({
      pre_tokenizer: {
        type: "Metaspace",
        replacement: MARK,
        add_prefix_space: false,
        prepend_scheme: "first",
      },
    }),
    /field pre_tokenizer\.add_prefix_space: false does not match prepend_scheme "first"/,
  );
  rejects(
    tiny({ pre_tokenizer: { type: "Metaspace", replacement: "ab" } }),
    /field pre_tokenizer\.replacement/,
  );
  rejects(tiny({ normalizer: { type: "Replace", pattern: { String: " " } } }), /field normalizer\.content/);
  rejects(tiny({ normalizer: { type: "Prepend" } }), /field normalizer\.prepend: expected a string/);
  const mixed = tiny({
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [{ type: "Metaspace", replacement: MARK }, { type: "ByteLevel" }],
    },
  });
  rejects(mixed, /field pre_tokenizer: ByteLevel and Metaspace together are not supported/);
});

test("a Mistral-style chat template on a SentencePiece tokenizer: the reply and </s> are learned", () => {
  const t = BpeTokenizer.fromFile(`${fixtures}mistral-metaspace.tokenizer.json`);
  t.chat = ChatFormat.fromSources(t, {
    tokenizerConfig: {
      chat_template:
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}" +
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}",
      bos_token: "<s>",
      eos_token: "</s>",
    },
  });
  const messages: ChatTurn[] = [
    { role: "user", content: "What is the reward?" },
    { role: "assistant", content: "It goes up." },
    { role: "user", content: "And then?" },
    { role: "assistant", content: "The model learns." },
  ];
  const { ids, responseMask } = encodeChat(t, messages);
  assert.equal(
    t.decode(ids),
    "<s>[INST] What is the reward? [/INST] It goes up.</s>[INST] And then? [/INST] The model learns.</s>",
  );
  const runs: number[][] = [];
  ids.forEach((id, i) => {
    if (responseMask[i] === 0) return;
    if (i === 0 || responseMask[i - 1] === 0) runs.push([]);
    runs[runs.length - 1].push(id);
  });
  const eos = t.specialId("</s>");
  // After [/INST] the reply's leading space is its ▁ (prepend_scheme first adds none there).
  assert.deepEqual(runs, [
    [...t.encode(" It goes up.", { allowSpecial: false }), eos],
    [...t.encode(" The model learns.", { allowSpecial: false }), eos],
  ]);
  assert.deepEqual([...t.chat.stopIds], [eos]);
  const prompt = encodeChat(t, messages.slice(0, 1), { addGenerationPrompt: true }).ids;
  assert.deepEqual(ids.slice(0, prompt.length), prompt);
});
