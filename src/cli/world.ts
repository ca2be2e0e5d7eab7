import { existsSync } from "node:fs";
import { join } from "node:path";
import { type Command, Option } from "commander";
import { trainWorldBase, WORLD_BASE_DEFAULTS, WORLD_BASE_FILE, type WorldBaseOptions } from "../run/base.js";
import { METRIC } from "../train/loop.js";
import { UserError } from "../util/errors.js";
import { writeFileAtomic } from "../util/fsio.js";
import { Rng } from "../util/rng.js";
import { buildSftCorpus, offPolicyPairs } from "../world/corpus.js";
import { buildRewardBench, REWARDBENCH_SECTIONS } from "../world/rewardbench.js";
import { evalQueries, trainQueries, type WorldQuery } from "../world/tasks.js";
import {
  BACKEND_HELP,
  openKernels,
  parseIntFlag,
  parseNumberFlag,
  printJson,
  progressBar,
} from "./common.js";
import { checkOutputPath, checkOutputs } from "./output.js";

function jsonl(rows: unknown[]): string {
  return rows.map((r) => JSON.stringify(r)).join("\n") + (rows.length > 0 ? "\n" : "");
}

/**
 * n distinct training queries: the same draws as trainQueries, repeats skipped (a prompts file must not
 * repeat an id), drawing on until n are distinct.
 */
function distinctTrainQueries(seed: number, n: number): WorldQuery[] {
  const rng = new Rng(seed).fork("queries");
  const seen = new Set<string>();
  const out: WorldQuery[] = [];
  for (let draws = 0; out.length < n && draws < 100 * n; draws++) {
    const [q] = trainQueries(rng, 1);
    if (seen.has(q.id)) continue;
    seen.add(q.id);
    out.push(q);
  }
  if (out.length < n) throw new UserError(`--count: the world has fewer than ${n} distinct training queries`);
  return out;
}

/** Registers `selfsteer world ...`: the principle world's base policy and data sets. */
export function register(program: Command): void {
  const world = program
    .command("world")
    .description("the embedded principle world: base policy and data sets");

  world
    .command("sft")
    .description("train the world's base policy (tokenizer + small Llama) on its SFT corpus; resumable")
    .requiredOption("--out <dir>", "checkpoint directory to write")
    .option("--seed <n>", "seed of corpus, tokenizer and init", String(WORLD_BASE_DEFAULTS.seed))
    .option("--corpus-size <n>", "SFT examples", String(WORLD_BASE_DEFAULTS.corpusSize))
    .option(
      "--follow-rate <p>",
      "probability that a feature named by the system prompt follows its principle",
      String(WORLD_BASE_DEFAULTS.followRate),
    )
    .option(
      "--base-rate <p>",
      "probability that a feature no principle names is behaved well",
      String(WORLD_BASE_DEFAULTS.baseRate),
    )
    .option("--vocab <n>", "BPE vocabulary size", String(WORLD_BASE_DEFAULTS.vocab))
    .option("--hidden <n>", "hidden size", String(WORLD_BASE_DEFAULTS.hidden))
    .option("--intermediate <n>", "MLP size", String(WORLD_BASE_DEFAULTS.intermediate))
    .option("--layers <n>", "layers", String(WORLD_BASE_DEFAULTS.layers))
    .option("--heads <n>", "attention heads", String(WORLD_BASE_DEFAULTS.heads))
    .option("--kv-heads <n>", "key/value heads", String(WORLD_BASE_DEFAULTS.kvHeads))
    .option("--max-len <n>", "longest training sequence in tokens", String(WORLD_BASE_DEFAULTS.maxLen))
    .option("--epochs <n>", "epochs", String(WORLD_BASE_DEFAULTS.epochs))
    .option("--lr <x>", "peak learning rate", String(WORLD_BASE_DEFAULTS.peakLr))
    .option("--batch-size <n>", "sequences per step", String(WORLD_BASE_DEFAULTS.batchSize))
    .option("--micro-batch <n>", "sequences per forward pass", String(WORLD_BASE_DEFAULTS.microBatch))
    .option("--save-every <n>", "save a resumable state every n steps", String(WORLD_BASE_DEFAULTS.saveEvery))
    .option("--backend <name>", BACKEND_HELP, "auto")
    .option("--restart", "discard what --out holds from an earlier run and train from scratch")
    .addOption(new Option("--force", "the same as --restart").hideHelp())
    .action((o: Record<string, string | boolean | undefined>) => {
      checkOutputPath("--out", String(o.out), "dir");
      const str = (k: string) => String(o[k]);
      const options: WorldBaseOptions = {
        out: str("out"),
        seed: parseIntFlag("--seed", str("seed"), 0),
        corpusSize: parseIntFlag("--corpus-size", str("corpusSize"), 1),
        followRate: parseNumberFlag("--follow-rate", str("followRate"), 0, 1),
        baseRate: parseNumberFlag("--base-rate", str("baseRate"), 0, 1),
        vocab: parseIntFlag("--vocab", str("vocab"), 260),
        hidden: parseIntFlag("--hidden", str("hidden"), 2),
        intermediate: parseIntFlag("--intermediate", str("intermediate"), 1),
        layers: parseIntFlag("--layers", str("layers"), 1),
        heads: parseIntFlag("--heads", str("heads"), 1),
        kvHeads: parseIntFlag("--kv-heads", str("kvHeads"), 1),
        maxLen: parseIntFlag("--max-len", str("maxLen"), 8),
        epochs: parseIntFlag("--epochs", str("epochs"), 1),
        peakLr: parseNumberFlag("--lr", str("lr"), 0),
        batchSize: parseIntFlag("--batch-size", str("batchSize"), 1),
        microBatch: parseIntFlag("--micro-batch", str("microBatch"), 1),
        warmupRatio: WORLD_BASE_DEFAULTS.warmupRatio,
        weightDecay: WORLD_BASE_DEFAULTS.weightDecay,
        maxGradNorm: WORLD_BASE_DEFAULTS.maxGradNorm,
        saveEvery: parseIntFlag("--save-every", str("saveEvery"), 1),
      };
      const restart = o.force === true || o.restart === true;
      // A base trained before run directories existed has world_base.json but no run.json.
      if (
        existsSync(join(options.out, WORLD_BASE_FILE)) &&
        !existsSync(join(options.out, "run.json")) &&
        !restart
      ) {
        process.stderr.write(
          `world sft: ${options.out} already holds a trained base (use --restart to retrain)\n`,
        );
        return;
      }
      const kernels = openKernels(str("backend"));
      const bar = progressBar();
      let started = false;
      let tokens = 0;
      const t0 = Date.now();
      try {
        const result = trainWorldBase(
          options,
          kernels,
          (record) => {
            if (!started) {
              bar.start(record.totalSteps, "world sft");
              started = true;
            }
            tokens += record.metrics[METRIC.tokens] ?? 0;
            bar.update(record.step + 1, {
              loss: record.loss.toFixed(3),
              "tok/s": Math.round(tokens / Math.max(1e-3, (Date.now() - t0) / 1000)),
            });
          },
          restart,
        );
        bar.stop();
        if (result.alreadyComplete)
          process.stderr.write(`world sft: ${options.out} already complete (use --restart to retrain)\n`);
        printJson({ out: options.out, ...result, seconds: (Date.now() - t0) / 1000, backend: kernels.name });
      } finally {
        bar.stop();
        kernels.dispose();
      }
    });

  world
    .command("corpus")
    .description("write the SFT corpus as chat JSONL ({messages}) for `selfsteer sft`")
    .requiredOption("--out <file>", "JSONL file")
    .option("--seed <n>", "seed", "1")
    .option("--size <n>", "examples", String(WORLD_BASE_DEFAULTS.corpusSize))
    .action((o: { out: string; seed: string; size: string }) => {
      checkOutputPath("--out", o.out, "file");
      const corpus = buildSftCorpus({
        seed: parseIntFlag("--seed", o.seed, 0),
        size: parseIntFlag("--size", o.size, 1),
      });
      writeFileAtomic(o.out, jsonl(corpus.map((e) => ({ messages: e.messages }))));
      printJson({ out: o.out, examples: corpus.length });
    });

  world
    .command("rewardbench")
    .description("write the held-out RewardBench-style suite (prompt, chosen, rejected, subset, id)")
    .requiredOption("--out <file>", "JSONL file")
    .option("--seed <n>", "seed", "0")
    .option("--per-subset <n>", "rows per subset", "50")
    .option("--sections <file>", "also write the subset-to-section map here (for `rm eval --sections`)")
    .action((o: { out: string; seed: string; perSubset: string; sections?: string }) => {
      checkOutputs(
        { flag: "--out", path: o.out, kind: "file" },
        { flag: "--sections", path: o.sections, kind: "file" },
      );
      const rows = buildRewardBench({
        seed: parseIntFlag("--seed", o.seed, 0),
        perSubset: parseIntFlag("--per-subset", o.perSubset, 1),
      });
      writeFileAtomic(o.out, jsonl(rows));
      if (o.sections) writeFileAtomic(o.sections, `${JSON.stringify(REWARDBENCH_SECTIONS, null, 2)}\n`);
      printJson({ out: o.out, rows: rows.length, sections: o.sections ?? null });
    });

  world
    .command("pairs")
    .description("write gold-labelled off-policy pairs (the analog of UltraFeedback) on training queries")
    .requiredOption("--out <file>", "JSONL file (prompt, chosen, rejected, subset, id)")
    .option("--seed <n>", "seed", "0")
    .option("--count <n>", "queries", "512")
    .action((o: { out: string; seed: string; count: string }) => {
      checkOutputPath("--out", o.out, "file");
      const seed = parseIntFlag("--seed", o.seed, 0);
      const rng = new Rng(seed).fork("offpolicy-pairs");
      const pairs = offPolicyPairs(
        rng,
        trainQueries(rng.fork("queries"), parseIntFlag("--count", o.count, 1)),
      );
      writeFileAtomic(
        o.out,
        jsonl(
          pairs.map((p) => ({
            prompt: p.prompt,
            chosen: p.chosen,
            rejected: p.rejected,
            subset: "offpolicy",
            id: p.id,
          })),
        ),
      );
      printJson({ out: o.out, pairs: pairs.length });
    });

  world
    .command("queries")
    .description("write world queries as a prompts file ({id, prompt}) for `selfsteer generate`")
    .requiredOption("--out <file>", "JSONL file")
    .addOption(new Option("--split <name>", "which queries").choices(["train", "eval"]).default("train"))
    .option("--seed <n>", "seed (train split)", "0")
    .option("--count <n>", "queries", "256")
    .action((o: { out: string; split: string; seed: string; count: string }) => {
      checkOutputPath("--out", o.out, "file");
      const n = parseIntFlag("--count", o.count, 1);
      const seed = parseIntFlag("--seed", o.seed, 0);
      const queries = o.split === "eval" ? evalQueries(n) : distinctTrainQueries(seed, n);
      writeFileAtomic(o.out, jsonl(queries.map((q) => ({ id: q.id, prompt: q.prompt }))));
      printJson({ out: o.out, queries: queries.length });
    });
}
