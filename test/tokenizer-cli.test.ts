import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { renderChat } from "../src/engine/chat.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";

// Compiled to dist/test/, so the checkout root is two levels up.
const root = fileURLToPath(new URL("../../", import.meta.url));
const bin = join(root, "bin", "selfsteer");
const corpusFile = join(root, "test", "fixtures", "tokenizer", "corpus.txt");
const dir = mkdtempSync(join(tmpdir(), "selfsteer-tokenizer-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function selfsteer(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, "tokenizer", "train", ...args], {
    encoding: "utf8",
    timeout: 60000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function file(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

test("tokenizer train on a text corpus writes the same tokenizer.json as the library", () => {
  const out = join(dir, "text", "tokenizer.json");
  const r = selfsteer("--corpus", corpusFile, "--vocab", "450", "--out", out);
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as Record<string, unknown>;
  const lines = readFileSync(corpusFile, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "");
  assert.equal(summary.documents, lines.length);
  assert.equal(summary.vocab_size, 450);
  assert.equal(summary.merges, 450 - 259);
  const written = JSON.parse(readFileSync(out, "utf8"));
  assert.deepEqual(written, JSON.parse(JSON.stringify(BpeTokenizer.train(lines, 450).toJSON())));
  assert.equal(BpeTokenizer.fromFile(out).vocabSize, 450);
  assert.deepEqual(readdirSync(join(dir, "text")), ["tokenizer.json"]);
});

test("tokenizer train on JSONL renders chat records in ChatML and adds --special tokens after ours", () => {
  const records = [
    { text: "plain documents are taken as they are" },
    {
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "What is two plus two?" },
        { role: "assistant", content: "Four." },
      ],
    },
    { text: "the tool said <tool> and then <tool> again" },
  ];
  const corpus = file("chat.jsonl", `${records.map((r) => JSON.stringify(r)).join("\n")}\n\n`);
  const out = join(dir, "chat.json");
  const r = selfsteer(
    "--corpus",
    corpus,
    "--vocab",
    "300",
    "--out",
    out,
    "--special",
    "<tool>",
    "<|im_end|>",
  );
  assert.equal(r.status, 0, r.stderr);
  const tok = BpeTokenizer.fromFile(out);
  assert.equal(tok.specialId("<tool>"), 259);
  assert.equal(tok.imEndId, 258);
  assert.deepEqual(tok.encode("<tool>"), [259]);
  const documents = [
    records[0].text as string,
    renderChat(records[1].messages as Parameters<typeof renderChat>[0]),
    records[2].text as string,
  ];
  const expected = BpeTokenizer.train(documents, 300, {
    specialTokens: ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"],
  });
  assert.deepEqual(tok.toJSON(), expected.toJSON());
});

test("bad input exits 2 with a message naming the file, line, field or flag", () => {
  const out = join(dir, "never.json");
  const cases: [string[], RegExp][] = [
    [
      ["--corpus", file("bad-role.jsonl", '{"text":"ok"}\n{"messages":[{"role":"bot","content":"x"}]}\n')],
      /bad-role\.jsonl:2: field messages\[0\]\.role/,
    ],
    [["--corpus", file("bad-json.jsonl", '{"text":"ok"}\n{"text":\n')], /bad-json\.jsonl:2: invalid JSON/],
    [
      ["--corpus", file("no-field.jsonl", '{"content":"x"}\n')],
      /no-field\.jsonl:1: .*"text" string or a "messages" array/,
    ],
    [["--corpus", file("empty.txt", "\n  \n")], /empty\.txt: no documents/],
    [["--corpus", join(dir, "missing.txt")], /missing\.txt: cannot read file/],
  ];
  for (const [args, pattern] of cases) {
    const r = selfsteer(...args, "--vocab", "300", "--out", out);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  }
  const small = selfsteer("--corpus", corpusFile, "--vocab", "258", "--out", out);
  assert.equal(small.status, 2);
  assert.match(small.stderr, /--vocab: expected an integer >= 259/);
  const format = selfsteer("--corpus", corpusFile, "--vocab", "300", "--out", out, "--format", "csv");
  assert.equal(format.status, 2);
  assert.match(format.stderr, /--format: expected one of auto, text, jsonl/);
  const missingFlag = spawnSync(process.execPath, [bin, "tokenizer", "train", "--corpus", corpusFile], {
    encoding: "utf8",
  });
  assert.equal(missingFlag.status, 2);
  assert.match(missingFlag.stderr, /--vocab/);
  assert.throws(() => readFileSync(out));
});
