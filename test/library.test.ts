import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { objectiveConfigSchema, ssoObjective } from "selfsteer";
import { BpeTokenizer, LlamaConfigSchema } from "selfsteer/engine";
import { startFakeOpenAIServer } from "./helpers/fake-openai-server.js";

const root = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));
const run = promisify(execFile);

test("the package's entry points resolve by name, with type declarations", () => {
  const pkg = JSON.parse(readFileSync(root("package.json"), "utf8")) as {
    exports: Record<string, { types: string; import: string }>;
  };
  for (const entry of [".", "./engine"]) {
    assert.ok(existsSync(root(pkg.exports[entry].import)), `${entry}: ${pkg.exports[entry].import}`);
    assert.ok(existsSync(root(pkg.exports[entry].types)), `${entry}: ${pkg.exports[entry].types}`);
  }
  assert.equal(typeof ssoObjective, "function");
  assert.equal(BpeTokenizer.byteLevel().vocabSize, 259);
  assert.equal(
    LlamaConfigSchema.parse({
      vocab_size: 300,
      hidden_size: 8,
      intermediate_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
    }).model_type,
    "llama",
  );
});

test("the README's library example is examples/library.ts and runs against an OpenAI-compatible server", async () => {
  const readme = readFileSync(root("README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## Library"));
  const block = /```ts\n([\s\S]*?)```/.exec(section);
  assert.ok(block !== null, "README's Library section has a ```ts block");
  assert.equal(
    block[1],
    readFileSync(root("examples/library.ts"), "utf8"),
    "README and examples/library.ts differ",
  );

  const server = await startFakeOpenAIServer({ lifetimeMs: 60_000 });
  try {
    const { stdout } = await run(process.execPath, [root("dist/examples/library.js")], {
      env: { ...process.env, OPENAI_BASE_URL: server.url, OPENAI_MODEL: "fake" },
      timeout: 60_000,
    });
    const kept = /records kept: (\d+), dropped: (\d+)/.exec(stdout);
    assert.ok(kept !== null, stdout);
    assert.equal(Number(kept[1]) + Number(kept[2]), 2);
    assert.ok(Number(kept[1]) >= 1, `no record kept: ${stdout}`);
    assert.ok(server.requests.length >= 3 * Number(kept[1]), "answers came from the server");
    // The objective line is what the library computes for the example's numbers.
    const expected = ssoObjective(objectiveConfigSchema.parse({ loss: "ipo", beta: 0.2, sso: {} }), [
      {
        policy: {
          chosen: -42,
          rejected: -58,
          posChosen: -30,
          posRejected: -71,
          negChosen: -35,
          negRejected: -49,
        },
        reference: {
          chosen: -44,
          rejected: -55,
          posChosen: -33,
          posRejected: -66,
          negChosen: -36,
          negRejected: -47,
        },
        tokens: { chosen: 60, rejected: 64, posChosen: 60, posRejected: 64, negChosen: 55, negRejected: 60 },
      },
    ]);
    assert.match(
      stdout,
      new RegExp(`loss ${expected.loss.toFixed(4)}, W ${expected.metrics["sso/weight"].toFixed(4)}`),
    );
    const w = expected.metrics["sso/weight"];
    assert.ok(w >= 0.5 && w < 1, `W = ${w} lies in [0.5, 1)`);
  } finally {
    await server.close();
  }
});
