import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { GPT2_SPLIT_PATTERN, splitByPattern, translateSplitPattern } from "../src/engine/pretokenize.js";
import { BpeTokenizer, byteToChar, DEFAULT_SPECIAL_TOKENS } from "../src/engine/tokenizer.js";
import { UserError } from "../src/util/errors.js";

// Compiled to dist/test/, so the fixtures are two levels up.
const fixtures = fileURLToPath(new URL("../../test/fixtures/tokenizer/", import.meta.url));
const corpus = readFileSync(`${fixtures}corpus.txt`, "utf8").split("\n");
const trained = BpeTokenizer.train(corpus, 520);
const byteLevel = BpeTokenizer.byteLevel();
const specials = [...DEFAULT_SPECIAL_TOKENS];

// Text with everything that stresses a byte-level tokenizer: any code point, grapheme clusters
// (emoji with modifiers, combining marks, CJK), whitespace runs and special-token strings.
const anyText = fc
  .array(
    fc.oneof(
      fc.string({ unit: "binary", maxLength: 12 }),
      fc.string({ unit: "grapheme", maxLength: 8 }),
      fc.constantFrom(...specials, " ", "  ", "\n", "\r\n", "\t", "'s", "'LL", "\u0085", "\u00a0", "\ufeff"),
      fc.constantFrom("hello", " the", "world's", "東京", "😀👍🏽", "e\u0301", "1234567"),
    ),
    { maxLength: 12 },
  )
  .map((parts) => parts.join(""));

function countOccurrences(text: string, token: string): number {
  return text.split(token).length - 1;
}

test("byte-level tokenizer: ids 0..255 are bytes, special tokens follow at 256, 257, 258", () => {
  assert.equal(byteLevel.vocabSize, 259);
  assert.deepEqual(byteLevel.encode("Hi é"), [72, 105, 32, 0xc3, 0xa9]);
  assert.equal(byteLevel.endOfTextId, 256);
  assert.equal(byteLevel.imStartId, 257);
  assert.equal(byteLevel.imEndId, 258);
  assert.equal(byteLevel.eosId, 258);
  assert.equal(byteLevel.padId, 256);
  assert.equal(byteLevel.specialId("<|im_end|>"), 258);
  assert.throws(() => byteLevel.specialId("<|nope|>"), UserError);
  assert.deepEqual(byteLevel.encode("a<|im_end|>b"), [97, 258, 98]);
  assert.equal(byteLevel.encode("<|im_end|>", { allowSpecial: false }).length, "<|im_end|>".length);
  // The GPT-2 byte map: printable bytes are themselves, space is U+0120 ('Ġ').
  assert.equal(byteToChar(65), "A");
  assert.equal(byteToChar(32), "Ġ");
  assert.equal(byteToChar(0), "Ā");
});

test("trained tokenizer keeps the id layout, reaches the target size and never merges special tokens", () => {
  assert.equal(trained.vocabSize, 520);
  assert.equal(trained.imStartId, 257);
  assert.equal(trained.mergeCount, 520 - 259);
  for (let id = 259; id < trained.vocabSize; id++) {
    const token = trained.idToToken(id) ?? "";
    assert.ok(!token.includes("<|"), `merge ${token} contains a special-token fragment`);
  }
  // Merges make text shorter than its bytes.
  const text = corpus.join("\n");
  assert.ok(trained.encode(text).length < Buffer.byteLength(text) / 2);
  // Training is deterministic.
  assert.deepEqual(BpeTokenizer.train(corpus, 520).toJSON(), trained.toJSON());
});

test("training stops early when no pair reaches minFrequency, and rejects a vocabulary below the base", () => {
  const small = BpeTokenizer.train(["abc abc xyz"], 400, { minFrequency: 2 });
  // Pairs with count 2: a-b, b-c, Ġ-a; then ab-c, Ġ-abc, ... all from the repeated " abc"/"abc".
  assert.ok(small.vocabSize < 400);
  assert.deepEqual(
    small.encode("abc").map((id) => small.idToToken(id)),
    ["abc"],
  );
  assert.deepEqual(
    small.encode("xyz").map((id) => small.idToToken(id)),
    ["x", "y", "z"],
  );
  assert.throws(() => BpeTokenizer.train(["a"], 258), /vocab size must be an integer >= 259/);
  assert.throws(() => BpeTokenizer.train(["a"], 300, { specialTokens: ["<x>", "<x>"] }), /given twice/);
  const custom = BpeTokenizer.train(["a"], 300, { specialTokens: ["<pad>"] });
  assert.equal(custom.specialId("<pad>"), 256);
  assert.throws(() => custom.eosId, /no end-of-turn token/);
});

/** A deliberately plain BPE trainer over words of letters and single spaces (split by / ?[a-z]+/). */
function referenceTrain(texts: string[], vocabSize: number, minFrequency: number) {
  const idOf = new Map<string, number>();
  for (let b = 0; b < 256; b++) idOf.set(byteToChar(b), b);
  specials.forEach((s, i) => {
    idOf.set(s, 256 + i);
  });
  const counts = new Map<string, number>();
  for (const t of texts) for (const w of t.match(/ ?[a-z]+/g) ?? []) counts.set(w, (counts.get(w) ?? 0) + 1);
  const words = [...counts].map(([w, c]) => ({ symbols: [...w.replace(/ /g, "Ġ")], count: c }));
  const merges: string[] = [];
  let size = 259;
  while (size < vocabSize) {
    const pairCounts = new Map<string, { a: string; b: string; n: number }>();
    for (const w of words)
      for (let i = 0; i + 1 < w.symbols.length; i++) {
        const key = `${w.symbols[i]} ${w.symbols[i + 1]}`;
        const entry = pairCounts.get(key) ?? { a: w.symbols[i], b: w.symbols[i + 1], n: 0 };
        entry.n += w.count;
        pairCounts.set(key, entry);
      }
    let best: { a: string; b: string; n: number } | null = null;
    for (const p of pairCounts.values()) {
      const better =
        best === null ||
        p.n > best.n ||
        (p.n === best.n &&
          ((idOf.get(p.a) as number) < (idOf.get(best.a) as number) ||
            (p.a === best.a && (idOf.get(p.b) as number) < (idOf.get(best.b) as number))));
      if (better) best = p;
    }
    if (best === null || best.n < minFrequency) break;
    const joined = best.a + best.b;
    if (!idOf.has(joined)) {
      idOf.set(joined, size++);
    }
    merges.push(`${best.a} ${best.b}`);
    for (const w of words) {
      const next: string[] = [];
      for (let i = 0; i < w.symbols.length; i++) {
        if (i + 1 < w.symbols.length && w.symbols[i] === best.a && w.symbols[i + 1] === best.b) {
          next.push(joined);
          i++;
        } else next.push(w.symbols[i]);
      }
      w.symbols = next;
    }
  }
  return { merges, words: [...counts.keys()], segmentation: words.map((w) => w.symbols) };
}

test("incremental training learns exactly the merges of a plain recount-everything trainer", () => {
  const word = fc.string({ unit: fc.constantFrom("a", "b", "c", "d"), minLength: 1, maxLength: 7 });
  const text = fc.array(word, { minLength: 1, maxLength: 12 }).map((ws) => ws.join(" "));
  fc.assert(
    fc.property(
      fc.array(text, { minLength: 1, maxLength: 8 }),
      fc.integer({ min: 259, max: 320 }),
      (texts, size) => {
        const ours = BpeTokenizer.train(texts, size, { minFrequency: 1 });
        const ref = referenceTrain(texts, size, 1);
        assert.deepEqual((ours.toJSON().model as { merges: string[] }).merges, ref.merges);
        // Encoding a training word with the learned merges reproduces the trainer's final segmentation.
        ref.words.forEach((w, i) => {
          assert.deepEqual(
            ours.encode(w).map((id) => ours.idToToken(id)),
            ref.segmentation[i],
          );
        });
      },
    ),
    { numRuns: 60 },
  );
});

test("encode/decode round-trips arbitrary Unicode text, with and without special tokens", () => {
  for (const tok of [byteLevel, trained]) {
    fc.assert(
      fc.property(anyText, (text) => {
        const withSpecial = tok.encode(text);
        assert.equal(tok.decode(withSpecial), text);
        assert.equal(tok.decode(tok.encode(text, { allowSpecial: false })), text);
        // Each special-token string becomes one id, and skipSpecial drops exactly those.
        const specialCount = withSpecial.filter((id) => tok.isSpecial(id)).length;
        assert.equal(
          specialCount,
          specials.reduce((n, s) => n + countOccurrences(text, s), 0),
        );
        assert.equal(
          tok.decode(withSpecial, { skipSpecial: true }),
          specials.reduce((t, s) => t.split(s).join(""), text),
        );
        assert.ok(tok.encode(text, { allowSpecial: false }).every((id) => !tok.isSpecial(id)));
      }),
      { numRuns: 300 },
    );
  }
});

test("toJSON -> JSON text -> fromJSON gives the same tokenizer and the same encodings", () => {
  for (const tok of [byteLevel, trained]) {
    const json = tok.toJSON();
    const reloaded = BpeTokenizer.fromJSON(JSON.parse(JSON.stringify(json)), "round-trip");
    assert.deepEqual(reloaded.toJSON(), json);
    assert.deepEqual(reloaded.warnings, []);
    fc.assert(
      fc.property(anyText, (text) => {
        assert.deepEqual(reloaded.encode(text), tok.encode(text));
        assert.deepEqual(
          reloaded.encode(text, { allowSpecial: false }),
          tok.encode(text, { allowSpecial: false }),
        );
      }),
      { numRuns: 150 },
    );
  }
});

test("toJSON writes the HF tokenizers layout", () => {
  const json = trained.toJSON() as {
    added_tokens: { id: number; content: string; special: boolean; normalized: boolean }[];
    normalizer: unknown;
    pre_tokenizer: Record<string, unknown>;
    decoder: Record<string, unknown>;
    model: Record<string, unknown> & { vocab: Record<string, number>; merges: string[] };
  };
  assert.deepEqual(
    json.added_tokens.map((a) => [a.id, a.content, a.special, a.normalized]),
    [
      [256, "<|endoftext|>", true, false],
      [257, "<|im_start|>", true, false],
      [258, "<|im_end|>", true, false],
    ],
  );
  assert.equal(json.normalizer, null);
  assert.deepEqual(
    [json.pre_tokenizer.type, json.pre_tokenizer.add_prefix_space, json.pre_tokenizer.use_regex],
    ["ByteLevel", false, true],
  );
  assert.equal(json.decoder.type, "ByteLevel");
  assert.equal(json.model.type, "BPE");
  for (const key of ["dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix"])
    assert.equal(json.model[key], null, key);
  assert.equal(json.model.fuse_unk, false);
  assert.equal(json.model.byte_fallback, false);
  assert.equal(Object.keys(json.model.vocab).length, 520);
  assert.equal(json.model.vocab["Ġ"], 32);
  assert.equal(json.model.vocab["<|im_end|>"], 258);
  assert.equal(json.model.merges.length, 261);
  for (const m of json.model.merges) assert.match(m, /^\S+ \S+$/);
});

test("fromJSON accepts merges in the newer [left, right] form", () => {
  const json = trained.toJSON() as { model: { merges: string[] | string[][] } };
  json.model.merges = (json.model.merges as string[]).map((m) => m.split(" "));
  const tok = BpeTokenizer.fromJSON(json);
  for (const line of corpus) assert.deepEqual(tok.encode(line), trained.encode(line));
});

test("published layouts load and encode like Hugging Face's own tokenizers.js", () => {
  const expected = JSON.parse(readFileSync(`${fixtures}expected.json`, "utf8")) as {
    probes: string[];
    expected: Record<string, number[][]>;
  };
  assert.deepEqual(Object.keys(expected.expected).sort(), ["ignore-merges", "prefix-space", "qwen2-style"]);
  for (const [name, rows] of Object.entries(expected.expected)) {
    const tok = BpeTokenizer.fromFile(`${fixtures}${name}.tokenizer.json`);
    assert.deepEqual(tok.warnings, [], name);
    expected.probes.forEach((probe, i) => {
      assert.deepEqual(tok.encode(probe), rows[i], `${name} probe ${i}: ${JSON.stringify(probe)}`);
    });
    // Writing keeps the published pipeline, so the reloaded copy encodes the same.
    const again = BpeTokenizer.fromJSON(JSON.parse(JSON.stringify(tok.toJSON())), name);
    for (const probe of expected.probes) assert.deepEqual(again.encode(probe), tok.encode(probe));
  }
  // Qwen2 style: NFC normalisation, special tokens outside model.vocab at the end.
  const qwen = BpeTokenizer.fromFile(`${fixtures}qwen2-style.tokenizer.json`);
  assert.equal(qwen.imEndId, qwen.vocabSize - 1);
  fc.assert(
    fc.property(anyText, (text) => {
      assert.equal(qwen.decode(qwen.encode(text)), text.normalize("NFC"));
    }),
    { numRuns: 150 },
  );
});

test("decode replaces invalid UTF-8 with U+FFFD per maximal subpart, like HF", () => {
  const bytes = (...bs: number[]) => byteLevel.decode(bs);
  assert.equal(bytes(0xff), "\uFFFD");
  assert.equal(bytes(0xc0, 0x80), "\uFFFD\uFFFD");
  assert.equal(bytes(0xe2, 0x82, 0x41), "\uFFFDA");
  assert.equal(bytes(0xed, 0xa0, 0x80), "\uFFFD\uFFFD\uFFFD");
  assert.equal(bytes(0xf4, 0x90, 0x80, 0x80), "\uFFFD\uFFFD\uFFFD\uFFFD");
  assert.equal(bytes(0xf0, 0x9f, 0x98), "\uFFFD");
  assert.equal(bytes(0xf0, 0x9f, 0x98, 0x80), "😀");
  // A multi-byte character split across tokens decodes once its bytes are together.
  const ids = trained.encode("東京");
  assert.equal(trained.decode(ids), "東京");
  assert.throws(() => byteLevel.decode([259]), /not in the vocabulary/);
});

test("the GPT-2 split: contractions, one leading space per word, whitespace leaves its last space", () => {
  const re = new RegExp(GPT2_SPLIT_PATTERN, "gu");
  assert.deepEqual(splitByPattern("Hello world's  3.14\n\n", re, "Isolated"), [
    "Hello",
    " world",
    "'s",
    " ",
    " 3",
    ".",
    "14",
    "\n\n",
  ]);
  // Unicode White_Space as in Oniguruma: U+0085 is whitespace, U+FEFF is not.
  assert.deepEqual(splitByPattern("a\u0085 b", re, "Isolated"), ["a", "\u0085", " b"]);
  assert.deepEqual(splitByPattern("a \ufeffb", re, "Isolated"), ["a", " \ufeff", "b"]);
});

test("Split behaviours follow the HF definitions", () => {
  const dash = /-/gu;
  const text = "the-final--countdown";
  assert.deepEqual(splitByPattern(text, dash, "Removed"), ["the", "final", "countdown"]);
  assert.deepEqual(splitByPattern(text, dash, "Isolated"), ["the", "-", "final", "-", "-", "countdown"]);
  assert.deepEqual(splitByPattern(text, dash, "MergedWithPrevious"), ["the-", "final-", "-", "countdown"]);
  assert.deepEqual(splitByPattern(text, dash, "MergedWithNext"), ["the", "-final", "-", "-countdown"]);
  assert.deepEqual(splitByPattern(text, dash, "Contiguous"), ["the", "-", "final", "--", "countdown"]);
  assert.deepEqual(splitByPattern(text, dash, "Removed", true), ["-", "-", "-"]);
});

test("Oniguruma Split patterns are translated: (?i:...), possessive and atomic groups, \\s and dot", () => {
  const matches = (pattern: string, text: string) => {
    const re = translateSplitPattern(pattern);
    assert.ok(re, `${pattern} did not compile`);
    return text.match(re) ?? [];
  };
  assert.deepEqual(matches("(?i:'s|'ll)", "it'S we'Ll"), ["'S", "'Ll"]);
  assert.deepEqual(matches("[^\\r\\n\\p{L}]?+\\p{L}+", " ab"), [" ab"]);
  // Possessive and atomic forms never give back what they took, so these find nothing.
  assert.deepEqual(matches("a?+a", "a"), []);
  assert.deepEqual(matches("(?>a+)a", "aaa"), []);
  assert.deepEqual(matches("a?a", "a"), ["a"]);
  assert.deepEqual(matches("\\s+", "x\u0085\ufeff"), ["\u0085"]);
  assert.deepEqual(matches("[\\s]+", "x\u0085 y"), ["\u0085 "]);
  assert.deepEqual(matches(".", "\r\n"), ["\r"]);
  assert.deepEqual(matches("\\p{N}{1,3}", "12345"), ["123", "45"]);
  assert.deepEqual(matches("\\'x", "'x"), ["'x"]);
  assert.equal(translateSplitPattern("(?<!"), null);
});

test("a Split regex JavaScript cannot compile falls back to the GPT-2 split with a warning", () => {
  const json = trained.toJSON();
  json.pre_tokenizer = {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: "(?<bad" }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
    ],
  };
  const tok = BpeTokenizer.fromJSON(json, "odd.json");
  assert.equal(tok.warnings.length, 1);
  assert.match(tok.warnings[0], /odd\.json: pre_tokenizer\.pretokenizers\[0\]\.pattern\.Regex/);
  assert.deepEqual(tok.encode("hello world's"), trained.encode("hello world's"));
});

test("bad tokenizer.json files are rejected naming the file and the field", () => {
  const base = () => JSON.parse(JSON.stringify(trained.toJSON())) as Record<string, Record<string, unknown>>;
  const rejects = (json: unknown, pattern: RegExp) =>
    assert.throws(
      () => BpeTokenizer.fromJSON(json, "bad.json"),
      (err: unknown) => err instanceof UserError && pattern.test(err.message),
    );
  rejects({}, /^bad\.json: field model: /);
  const wrongModel = base();
  wrongModel.model.type = "WordPiece";
  rejects(wrongModel, /bad\.json: field model\.type: only BPE/);
  const badMerge = base();
  (badMerge.model.merges as string[])[3] = "Ġ nosuchtoken";
  rejects(badMerge, /field model\.merges\[3\]: "nosuchtoken" is not in model\.vocab/);
  const threeParts = base();
  (threeParts.model.merges as string[])[0] = "a b c";
  rejects(threeParts, /field model\.merges\[0\]/);
  const missingByte = base();
  delete (missingByte.model.vocab as Record<string, number>)["Ā"];
  rejects(missingByte, /field model\.vocab: no token for byte 0x00/);
  const badId = base();
  (badId.model.vocab as Record<string, number>).x = 1.5;
  rejects(badId, /field model\.vocab(\.x|\["x"\]): /);
  const metaspace = base();
  metaspace.pre_tokenizer = {
    type: "Sequence",
    pretokenizers: [{ type: "Metaspace", replacement: "\u2581" }, { type: "ByteLevel" }],
  };
  rejects(metaspace, /field pre_tokenizer: ByteLevel and Metaspace together are not supported/);
  const unknownPre = base();
  unknownPre.pre_tokenizer = { type: "Sequence", pretokenizers: [{ type: "BertPreTokenizer" }] };
  rejects(
    unknownPre,
    /field pre_tokenizer\.pretokenizers\[0\]\.type: unsupported pre-tokenizer "BertPreTokenizer"/,
  );
  const badSplit = base();
  badSplit.pre_tokenizer = { type: "Split", pattern: { Regex: "x" }, behavior: "Sideways" };
  rejects(badSplit, /field pre_tokenizer\.behavior/);
  const badNormalizer = base();
  badNormalizer.normalizer = { type: "BertNormalizer" };
  rejects(badNormalizer, /field normalizer\.type: unsupported normalizer "BertNormalizer"/);
  const badAdded = base();
  (badAdded.added_tokens as unknown as { id: number }[])[0].id = 65;
  rejects(badAdded, /field added_tokens\[0\]\.id: id 65 is "A" in model\.vocab/);
  const fallback = base();
  fallback.model.byte_fallback = true;
  rejects(fallback, /field model\.byte_fallback: byte fallback with a ByteLevel pre-tokenizer/);
  assert.throws(
    () => BpeTokenizer.fromFile("/nonexistent/tokenizer.json"),
    /\/nonexistent\/tokenizer\.json: cannot read/,
  );
});

test("a vocabulary token named __proto__ survives loading and writing", () => {
  const json = byteLevel.toJSON() as { pre_tokenizer: unknown; model: { vocab: object; merges: string[] } };
  // A null-prototype object takes "__proto__" as an ordinary key, as JSON.parse does.
  const vocab: Record<string, number> = Object.assign(Object.create(null), json.model.vocab);
  const merges = ["_ _", "__ p", "__p r", "__pr o", "__pro t", "__prot o", "__proto __"];
  merges.forEach((m, i) => {
    vocab[m.replace(" ", "")] = 259 + i;
  });
  // Without the regex split the whole text is one word, so the merges can spell it.
  json.pre_tokenizer = { type: "ByteLevel", add_prefix_space: false, use_regex: false };
  json.model = { ...json.model, vocab, merges };
  const raw = JSON.parse(JSON.stringify(json));
  assert.ok(Object.hasOwn(raw.model.vocab, "__proto__"));
  const tok = BpeTokenizer.fromJSON(raw);
  assert.deepEqual(tok.encode("__proto__"), [265]);
  assert.ok(JSON.stringify(tok.toJSON()).includes('"__proto__":265'));
});
