import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { checkOutputPath } from "../src/cli/output.js";
import { UserError } from "../src/util/errors.js";
import { selfsteer } from "./helpers/cli.js";

const root = mkdtempSync(join(tmpdir(), "selfsteer-output-"));
after(() => rmSync(root, { recursive: true, force: true }));
const aFile = join(root, "a-file.txt");
writeFileSync(aFile, "x\n");
const aDir = join(root, "a-dir");
mkdirSync(aDir);

describe("checkOutputPath", () => {
  const refuses = (fragment: string, path: string, kind: "file" | "dir") =>
    assert.throws(
      () => checkOutputPath("--out", path, kind),
      (err: unknown) =>
        err instanceof UserError && err.message.startsWith("--out") && err.message.includes(fragment),
    );

  test("accepts new paths, existing files as files and existing directories as directories", () => {
    checkOutputPath("--out", join(root, "new", "deeper", "x.jsonl"), "file");
    checkOutputPath("--out", join(root, "new-dir", "run"), "dir");
    checkOutputPath("--out", aFile, "file");
    checkOutputPath("--out", aDir, "dir");
    checkOutputPath("--out", "/dev/null", "file");
  });

  test("refuses a file where a directory is expected and the reverse", () => {
    refuses("is a file, but a directory is expected", aFile, "dir");
    refuses("is a directory, but a file is expected", aDir, "file");
  });

  test("refuses a path under a file", () => {
    refuses(`${aFile} is a file, not a directory`, join(aFile, "sub", "x.jsonl"), "file");
    refuses(`${aFile} is a file, not a directory`, join(aFile, "run"), "dir");
  });

  test("refuses an empty path and a parent it may not write", () => {
    refuses("must not be empty", "", "file");
    // A process directory refuses new entries even to root, so this holds whoever runs the tests.
    refuses("cannot create it under /proc", "/proc/1/selfsteer-test/x.jsonl", "file");
  });
});

// Every command that writes, with its other required flags: the check runs before anything is read,
// so placeholders stand in for inputs.
const commands: { name: string; kind: "file" | "dir"; args: string[] }[] = [
  { name: "sft", kind: "dir", args: ["sft", "--model", "m", "--data", "d.jsonl"] },
  { name: "train", kind: "dir", args: ["train", "--model", "m", "--data", "d.jsonl"] },
  { name: "rm train", kind: "dir", args: ["rm", "train", "--model", "m", "--pairs", "p.jsonl"] },
  { name: "rm score", kind: "file", args: ["rm", "score", "--model", "m", "--data", "d.jsonl"] },
  {
    name: "generate",
    kind: "file",
    args: ["generate", "--endpoint", "http://127.0.0.1:9/v1", "--model", "x", "--prompts", "p.jsonl"],
  },
  // Without a .json/.jsonl suffix export writes a bundle directory.
  { name: "export (bundle)", kind: "dir", args: ["export", "--format", "trl", "--in", "r.jsonl"] },
  { name: "model init", kind: "dir", args: ["model", "init", "--config", "c.json", "--seed", "1"] },
  { name: "model export", kind: "file", args: ["model", "export", "--model", "m"] },
  {
    name: "tokenizer train",
    kind: "file",
    args: ["tokenizer", "train", "--corpus", "c.txt", "--vocab", "300"],
  },
  { name: "world sft", kind: "dir", args: ["world", "sft"] },
  { name: "world corpus", kind: "file", args: ["world", "corpus"] },
  { name: "world rewardbench", kind: "file", args: ["world", "rewardbench"] },
  { name: "world pairs", kind: "file", args: ["world", "pairs"] },
  { name: "world queries", kind: "file", args: ["world", "queries"] },
  { name: "tables offline", kind: "dir", args: ["tables", "offline"] },
  { name: "tables rm", kind: "dir", args: ["tables", "rm"] },
  { name: "iterate", kind: "dir", args: ["iterate"] },
  { name: "demo", kind: "dir", args: ["demo"] },
  { name: "experiment", kind: "dir", args: ["experiment"] },
];

describe("every command checks --out before any work", () => {
  for (const c of commands)
    test(`${c.name} --out <${c.kind === "dir" ? "a file" : "a directory"}>`, () => {
      const wrong = c.kind === "dir" ? aFile : aDir;
      const before = readdirSync(aDir);
      const r = selfsteer(...c.args, "--out", wrong);
      assert.equal(r.status, 2, `${c.name}: ${r.stderr}`);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, `${c.name}: one line expected, got ${r.stderr}`);
      assert.match(lines[0], /^selfsteer: --out .*(is a file, but a directory|is a directory, but a file)/);
      assert.deepEqual(readdirSync(aDir), before, `${c.name} wrote into ${aDir}`);
    });
});
