import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { type Command, CommanderError } from "commander";
import { allCommands, commandPath, ruleFor } from "../src/cli/flags.js";
import { buildProgram } from "../src/cli/program.js";
import { UserError } from "../src/util/errors.js";
import { SELFSTEER_BIN } from "./helpers/cli.js";

/** A fresh program whose commands record that they ran instead of doing anything, and print nothing. */
async function quietProgram(): Promise<{ program: Command; ran: string[] }> {
  const { program, unruled } = await buildProgram();
  assert.deepEqual(unruled, [], "options without a rule in src/cli/flags.ts");
  const ran: string[] = [];
  for (const cmd of allCommands(program)) {
    cmd.configureOutput({ writeOut: () => {}, writeErr: () => {}, outputError: () => {} });
    if (cmd.commands.length === 0 && cmd !== program) cmd.action(() => void ran.push(commandPath(cmd)));
  }
  return { program, ran };
}

const CANDIDATES = ["abc", "-1", "1.5", "", "1e999", "1,x"];

test("every option that takes a value refuses bad values at parse time, naming the option", async () => {
  const { program } = await quietProgram();
  let checked = 0;
  for (const cmd of allCommands(program)) {
    if (cmd.commands.length > 0) continue;
    for (const option of cmd.options) {
      if (!(option.required || option.optional)) continue;
      const rule = ruleFor(cmd, option);
      const choices = option.argChoices;
      if (rule === undefined && choices === undefined) continue;
      const bad = CANDIDATES.filter((v) => (choices ? !choices.includes(v) : rule?.(v) !== null));
      assert.ok(bad.length > 0, `${commandPath(cmd)} ${option.long}: its rule accepts every bad candidate`);
      // The defaults must pass the rule: a rule stricter than a command's own default is a bug.
      if (typeof option.defaultValue === "string" && rule !== undefined)
        assert.equal(rule(option.defaultValue), null, `${commandPath(cmd)} ${option.long}: default refused`);
      for (const value of bad) {
        const fresh = await quietProgram();
        const argv = ["node", "selfsteer", ...commandPath(cmd).split(" "), `${option.long}=${value}`];
        await assert.rejects(
          fresh.program.parseAsync(argv),
          (err: unknown) => {
            if (err instanceof CommanderError)
              assert.equal(err.code, "commander.invalidArgument", `${argv.join(" ")}: ${err.message}`);
            else assert.ok(err instanceof UserError, `${argv.join(" ")}: ${String(err)}`);
            assert.ok((err as Error).message.includes(option.long ?? ""), (err as Error).message);
            return true;
          },
          `${argv.slice(2).join(" ")} was accepted`,
        );
        assert.deepEqual(fresh.ran, [], `${argv.slice(2).join(" ")} ran`);
        checked++;
      }
    }
  }
  assert.ok(checked > 200, `only ${checked} bad values were tried`);
});

test("the two silent coercions are gone: tables --loss and world --split refuse unknown names", async () => {
  for (const argv of [
    ["tables", "offline", "--loss", "simpo"],
    ["world", "queries", "--out", "q.jsonl", "--split", "evaluation"],
  ]) {
    const { program, ran } = await quietProgram();
    await assert.rejects(program.parseAsync(["node", "selfsteer", ...argv]), /invalid/);
    assert.deepEqual(ran, []);
  }
  const { program, ran } = await quietProgram();
  await program.parseAsync(["node", "selfsteer", "world", "queries", "--out", "q.jsonl", "--split", "eval"]);
  assert.deepEqual(ran, ["world queries"]);
});

test("a bad SELFSTEER_MEMORY, or a backend that cannot load, exits 2 with one line in every command that opens kernels", () => {
  const run = (env: Record<string, string>, ...args: string[]) =>
    spawnSync(process.execPath, [SELFSTEER_BIN, ...args], {
      encoding: "utf8",
      env: { ...process.env, ...env },
    });
  for (const args of [
    ["bench", "--preset", "S", "--steps", "1"],
    ["sample", "--model", "nowhere", "--prompt", "hi"],
    ["sft", "--model", "nowhere", "--data", "nowhere.jsonl", "--out", "nowhere-out"],
  ]) {
    const bad = run({ SELFSTEER_MEMORY: "disk" }, ...args);
    assert.equal(bad.status, 2, `${args[0]}: ${bad.stderr}`);
    assert.equal(bad.stderr, 'selfsteer: SELFSTEER_MEMORY must be "wasm" or "heap", got "disk"\n');
  }
  const noBlas = run(
    { SELFSTEER_BLAS: "none" },
    "bench",
    "--preset",
    "S",
    "--steps",
    "1",
    "--backend",
    "blas",
  );
  assert.equal(noBlas.status, 2, noBlas.stderr);
  assert.match(
    noBlas.stderr,
    /^selfsteer: --backend blas: BLAS unavailable: disabled by SELFSTEER_BLAS=none\n$/,
  );
  const serve = run(
    { SELFSTEER_BLAS: "none" },
    "serve",
    "--model",
    "nowhere",
    "--backend",
    "blas",
    "--port",
    "0",
  );
  assert.equal(serve.status, 2, serve.stderr);
  assert.match(serve.stderr, /^selfsteer: --backend blas: BLAS unavailable/);
});
