import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import {
  CHATML_TEMPLATE,
  type ChatTurn,
  encodeChat,
  renderChat,
  tokenizerConfigJson,
} from "../src/engine/chat.js";
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { UserError } from "../src/util/errors.js";

const fixtures = fileURLToPath(new URL("../../test/fixtures/tokenizer/", import.meta.url));
const corpus = readFileSync(`${fixtures}corpus.txt`, "utf8").split("\n");
const trained = BpeTokenizer.train(corpus, 400);
const byteLevel = BpeTokenizer.byteLevel();

// ---------------------------------------------------------------------------------------------------
// A tiny Jinja interpreter, enough for CHATML_TEMPLATE (for/if blocks, string literals with escapes,
// subscripts, +, ==, !=, and, or, not, parentheses), so the test renders the template text itself
// rather than trusting that it says what renderChat does.

type Value = string | boolean | undefined | Value[] | { [key: string]: Value };
type Scope = Record<string, Value>;
type Node =
  | { kind: "text"; text: string }
  | { kind: "output"; expr: string }
  | { kind: "for"; name: string; iterable: string; body: Node[] }
  | { kind: "if"; cond: string; body: Node[]; orElse: Node[] };

function parseTemplate(template: string): Node[] {
  const parts = template.split(/(\{\{.*?\}\}|\{%.*?%\})/s).filter((p) => p !== "");
  let pos = 0;
  const parseBlock = (terminators: string[]): { nodes: Node[]; end: string } => {
    const nodes: Node[] = [];
    while (pos < parts.length) {
      const part = parts[pos++];
      if (part.startsWith("{{")) nodes.push({ kind: "output", expr: part.slice(2, -2).trim() });
      else if (part.startsWith("{%")) {
        const tag = part.slice(2, -2).trim();
        if (terminators.includes(tag)) return { nodes, end: tag };
        const forMatch = /^for (\w+) in (.+)$/.exec(tag);
        const ifMatch = /^if (.+)$/.exec(tag);
        if (forMatch) {
          const body = parseBlock(["endfor"]).nodes;
          nodes.push({ kind: "for", name: forMatch[1], iterable: forMatch[2], body });
        } else if (ifMatch) {
          const first = parseBlock(["else", "endif"]);
          const orElse = first.end === "else" ? parseBlock(["endif"]).nodes : [];
          nodes.push({ kind: "if", cond: ifMatch[1], body: first.nodes, orElse });
        } else throw new Error(`unsupported tag ${tag}`);
      } else nodes.push({ kind: "text", text: part });
    }
    if (terminators.length > 0) throw new Error(`missing ${terminators.join("/")}`);
    return { nodes, end: "" };
  };
  return parseBlock([]).nodes;
}

function evaluate(expr: string, scope: Scope): Value {
  const tokens = expr.match(/'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|==|!=|\w+|[+()[\]]/g) ?? [];
  let i = 0;
  const peek = () => tokens[i];
  const take = (expected?: string) => {
    const t = tokens[i++];
    if (expected !== undefined && t !== expected) throw new Error(`expected ${expected}, got ${t}`);
    return t;
  };
  const truthy = (v: Value) =>
    v !== undefined && v !== false && v !== "" && !(Array.isArray(v) && v.length === 0);
  const unquote = (lit: string) =>
    lit.slice(1, -1).replace(/\\(.)/g, (_, c: string) => ({ n: "\n", t: "\t", r: "\r" })[c] ?? c);
  const primary = (): Value => {
    const t = take();
    let v: Value;
    if (t === "(") {
      v = orExpr();
      take(")");
    } else if (t.startsWith("'") || t.startsWith('"')) v = unquote(t);
    else if (t === "true" || t === "false") v = t === "true";
    else v = scope[t];
    while (peek() === "[") {
      take("[");
      const key = primary();
      take("]");
      v = v !== undefined && typeof v === "object" && !Array.isArray(v) ? v[String(key)] : undefined;
    }
    return v;
  };
  const sum = (): Value => {
    let v = primary();
    while (peek() === "+") {
      take();
      v = String(v) + String(primary());
    }
    return v;
  };
  const comparison = (): Value => {
    const left = sum();
    if (peek() === "==" || peek() === "!=") {
      const op = take();
      const right = sum();
      return op === "==" ? left === right : left !== right;
    }
    return left;
  };
  const notExpr = (): Value => {
    if (peek() === "not") {
      take();
      return !truthy(notExpr());
    }
    return comparison();
  };
  const andExpr = (): Value => {
    let v = notExpr();
    while (peek() === "and") {
      take();
      const right = notExpr();
      v = truthy(v) ? right : v;
    }
    return v;
  };
  function orExpr(): Value {
    let v = andExpr();
    while (peek() === "or") {
      take();
      const right = andExpr();
      v = truthy(v) ? v : right;
    }
    return v;
  }
  const result = orExpr();
  if (i !== tokens.length) throw new Error(`trailing tokens in ${expr}`);
  return result;
}

function renderJinja(template: string, scope: Scope): string {
  const run = (nodes: Node[], s: Scope): string =>
    nodes
      .map((n) => {
        if (n.kind === "text") return n.text;
        if (n.kind === "output") return String(evaluate(n.expr, s) ?? "");
        if (n.kind === "for") {
          const items = evaluate(n.iterable, s);
          return Array.isArray(items)
            ? items.map((item) => run(n.body, { ...s, [n.name]: item })).join("")
            : "";
        }
        const cond = evaluate(n.cond, s);
        const holds = cond !== undefined && cond !== false && cond !== "";
        return run(holds ? n.body : n.orElse, s);
      })
      .join("");
  return run(parseTemplate(template), scope);
}

function renderTemplate(messages: readonly ChatTurn[], addGenerationPrompt: boolean): string {
  return renderJinja(CHATML_TEMPLATE, {
    messages: messages.map((m) => ({ role: m.role, content: m.content })),
    add_generation_prompt: addGenerationPrompt,
  });
}

// ---------------------------------------------------------------------------------------------------

const turn: fc.Arbitrary<ChatTurn> = fc.record({
  role: fc.constantFrom("system" as const, "user" as const, "assistant" as const),
  content: fc.oneof(
    fc.constant(""),
    fc.string({ unit: "grapheme", maxLength: 20 }),
    fc.constantFrom(
      "Hello there.",
      " leading space",
      "\n\nblank lines first",
      "2 + 2 = 4",
      "<|im_end|> typed",
      "東京 😀",
    ),
  ),
});
const conversation = fc.array(turn, { maxLength: 6 });

test("encodeChat on a small conversation: the exact ids and mask", () => {
  const { ids, responseMask } = encodeChat(byteLevel, [
    { role: "system", content: "" },
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Yo" },
  ]);
  const bytes = (s: string) => [...Buffer.from(s, "utf8")];
  const expected = [
    ...[257, ...bytes("user\nHi"), 258, 10],
    ...[257, ...bytes("assistant\n")],
    ...bytes("Yo"),
    258,
    10,
  ];
  assert.deepEqual(ids, expected);
  const learned = ids.map((_, t) => t).filter((t) => responseMask[t] === 1);
  // Exactly "Yo" and its <|im_end|>: positions after the second header, up to the last newline.
  const start = expected.length - 4;
  assert.deepEqual(learned, [start, start + 1, start + 2]);
  assert.equal(ids[start + 2], byteLevel.imEndId);
});

test("the Jinja template renders exactly what encodeChat tokenizes", () => {
  fc.assert(
    fc.property(conversation, fc.boolean(), (messages, addGenerationPrompt) => {
      const rendered = renderTemplate(messages, addGenerationPrompt);
      assert.equal(renderChat(messages, { addGenerationPrompt }), rendered);
      const { ids, responseMask } = encodeChat(trained, messages, { addGenerationPrompt });
      assert.equal(ids.length, responseMask.length);
      assert.equal(trained.decode(ids), rendered);
      // Contents that neither start with whitespace nor spell a special token tokenize the same
      // whether encoded turn by turn or as the rendered whole.
      const plain = messages.every((m) => !/^\s/u.test(m.content) && !m.content.includes("<|"));
      if (plain) assert.deepEqual(trained.encode(rendered), ids);
    }),
    { numRuns: 200 },
  );
});

test("the response mask covers assistant contents and their <|im_end|>, nothing else", () => {
  fc.assert(
    fc.property(conversation, fc.boolean(), (messages, addGenerationPrompt) => {
      const { ids, responseMask } = encodeChat(trained, messages, { addGenerationPrompt });
      // Each maximal run of masked tokens decodes to one assistant content plus <|im_end|>.
      const runs: number[][] = [];
      responseMask.forEach((m, t) => {
        if (m === 1 && (t === 0 || responseMask[t - 1] === 0)) runs.push([]);
        if (m === 1) runs[runs.length - 1].push(ids[t]);
      });
      const assistants = messages.filter((m) => m.role === "assistant");
      assert.deepEqual(
        runs.map((r) => trained.decode(r)),
        assistants.map((m) => `${m.content}<|im_end|>`),
      );
      for (const r of runs) assert.equal(r[r.length - 1], trained.imEndId);
      // Typed special-token text inside a content never becomes a special id.
      const specialCount = ids.filter((id) => trained.isSpecial(id)).length;
      const turns = messages.filter((m) => !(m.role === "system" && m.content === "")).length;
      assert.equal(specialCount, 2 * turns + (addGenerationPrompt ? 1 : 0));
    }),
    { numRuns: 200 },
  );
});

test("an empty system prompt adds no turn; a generation prompt ends with the assistant header", () => {
  const user: ChatTurn = { role: "user", content: "What is 2 + 2?" };
  const without = encodeChat(trained, [user], { addGenerationPrompt: true });
  const withEmpty = encodeChat(trained, [{ role: "system", content: "" }, user], {
    addGenerationPrompt: true,
  });
  assert.deepEqual(withEmpty, without);
  const withSystem = encodeChat(trained, [{ role: "system", content: "Be brief." }, user]);
  assert.equal(trained.decode(withSystem.ids).startsWith("<|im_start|>system\nBe brief.<|im_end|>\n"), true);
  const header = [trained.imStartId, ...trained.encode("assistant\n")];
  assert.deepEqual(without.ids.slice(-header.length), header);
  assert.ok(without.responseMask.every((m) => m === 0));
  assert.equal(renderChat([user], { addGenerationPrompt: true }).endsWith("<|im_start|>assistant\n"), true);
});

test("tokenizer_config.json carries the template and the special tokens", () => {
  const config = tokenizerConfigJson(trained, { modelMaxLength: 512 });
  assert.equal(config.chat_template, CHATML_TEMPLATE);
  assert.equal(config.tokenizer_class, "PreTrainedTokenizerFast");
  assert.equal(config.eos_token, "<|im_end|>");
  assert.equal(config.pad_token, "<|endoftext|>");
  assert.equal(config.bos_token, null);
  assert.equal(config.model_max_length, 512);
  assert.deepEqual(config.additional_special_tokens, ["<|im_start|>", "<|im_end|>"]);
  const decoder = config.added_tokens_decoder as Record<string, { content: string; special: boolean }>;
  assert.deepEqual(
    Object.entries(decoder).map(([id, t]) => [id, t.content, t.special]),
    [
      ["256", "<|endoftext|>", true],
      ["257", "<|im_start|>", true],
      ["258", "<|im_end|>", true],
    ],
  );
  assert.equal(tokenizerConfigJson(trained).model_max_length, 2048);
  assert.deepEqual(JSON.parse(JSON.stringify(config)), config);
});

test("a tokenizer without ChatML tokens cannot encode chats but still gets a config", () => {
  const plain = BpeTokenizer.byteLevel(["<|endoftext|>"]);
  assert.throws(() => encodeChat(plain, [{ role: "user", content: "hi" }]), UserError);
  const config = tokenizerConfigJson(plain);
  assert.equal(config.eos_token, "<|endoftext|>");
  assert.equal(config.pad_token, "<|endoftext|>");
  assert.deepEqual(config.additional_special_tokens, []);
});
