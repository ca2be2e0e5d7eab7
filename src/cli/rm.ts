import { join } from "node:path";
import type { Command } from "commander";
import { z } from "zod";
import { CHECKPOINT_FILES, type LoadedCheckpoint, loadCheckpoint } from "../engine/checkpoint.js";
import type { LlamaConfig } from "../engine/config.js";
import type { CreatedKernels } from "../engine/kernels/index.js";
import { type LoadedModelDir, loadModelDir } from "../engine/load.js";
import { LlamaModel } from "../engine/model.js";
import { BpeTokenizer } from "../engine/tokenizer.js";
import { type RewardBenchReport, rewardBenchReport } from "../eval/rewardbench.js";
import { countFormats, type PreferencePair, pairsDigest, readPairs, readScoreItems } from "../sso/pairs.js";
import { METRIC } from "../train/loop.js";
import { runRewardTraining, scoreItems, scorePairs } from "../train/reward.js";
import { UserError } from "../util/errors.js";
import { readJsonFile, writeFileAtomic } from "../util/fsio.js";
import { Rng } from "../util/rng.js";
import {
  BACKENDS,
  openKernels,
  parseBackend,
  parseIntFlag,
  parseNumberFlag,
  printJson,
  progressBar,
} from "./common.js";
import { checkOutputPath, checkOutputs } from "./output.js";

function tokenizerOf(dir: string, ckpt: LoadedCheckpoint): BpeTokenizer {
  if (ckpt.tokenizerJson === undefined)
    throw new UserError(`${dir}: no ${CHECKPOINT_FILES.tokenizer} (a reward model reads text)`);
  const tokenizer = BpeTokenizer.fromJSON(ckpt.tokenizerJson, join(dir, CHECKPOINT_FILES.tokenizer));
  if (tokenizer.vocabSize > ckpt.config.vocab_size)
    throw new UserError(
      `${dir}: the tokenizer has ${tokenizer.vocabSize} tokens but config vocab_size is ${ckpt.config.vocab_size}`,
    );
  return tokenizer;
}

function defaultMaxLen(config: LlamaConfig): number {
  return Math.min(1024, config.max_position_embeddings);
}

/** A reward model (score head) and its tokenizer from a checkpoint; a causal LM is refused. */
function loadRewardModel(dir: string, kernels: CreatedKernels): LoadedModelDir {
  const loaded = loadModelDir(dir, { kernels });
  if (!loaded.model.hasScoreHead)
    throw new UserError(
      `${dir}: not a reward model (no score.weight); train one with selfsteer rm train --model ${dir}`,
    );
  return loaded;
}

function mean(values: readonly number[]): number | null {
  return values.length === 0 ? null : values.reduce((a, b) => a + b, 0) / values.length;
}

const round = (x: number | null, digits = 4): number | null =>
  x === null ? null : Number(x.toFixed(digits));

interface TrainFlags {
  model: string;
  pairs: string;
  out: string;
  epochs: string;
  lr: string;
  batchSize: string;
  microBatch: string;
  maxLen?: string;
  seed: string;
  saveEvery: string;
  steps?: string;
  warmupRatio: string;
  weightDecay: string;
  maxGradNorm: string;
  restart?: boolean;
  backend: string;
}

/** `rm train`: Bradley-Terry training of a reward model initialised from a checkpoint, resumable. */
function trainCommand(flags: TrainFlags): void {
  checkOutputPath("--out", flags.out, "dir");
  const epochs = parseIntFlag("--epochs", flags.epochs, 1);
  const batchSize = parseIntFlag("--batch-size", flags.batchSize, 1);
  const seed = parseIntFlag("--seed", flags.seed, 0);
  const saveEvery = parseIntFlag("--save-every", flags.saveEvery, 0);
  const stepsNow = flags.steps !== undefined ? parseIntFlag("--steps", flags.steps, 1) : undefined;
  const weightDecay = parseNumberFlag("--weight-decay", flags.weightDecay, 0);
  const backend = parseBackend(flags.backend);
  const pairs = readPairs(flags.pairs);
  const ckpt = loadCheckpoint(flags.model);
  const tokenizer = tokenizerOf(flags.model, ckpt);
  const options = {
    batchSize,
    microBatch: parseIntFlag("--micro-batch", flags.microBatch, 1),
    epochs,
    peakLr: parseNumberFlag("--lr", flags.lr, 0),
    warmupRatio: parseNumberFlag("--warmup-ratio", flags.warmupRatio, 0, 1),
    maxGradNorm: parseNumberFlag("--max-grad-norm", flags.maxGradNorm, 0),
    maxLen:
      flags.maxLen !== undefined ? parseIntFlag("--max-len", flags.maxLen, 2) : defaultMaxLen(ckpt.config),
    seed,
  };
  const kernels = openKernels(backend);
  try {
    const model = new LlamaModel(ckpt.config, kernels, { scoreHead: true });
    let scoreHeadInit: "checkpoint" | "random" = "checkpoint";
    if (ckpt.scoreHead) model.loadTensors(ckpt.tensors.values());
    else {
      // A policy checkpoint: the backbone is the policy's, the score head starts small and random.
      model.loadTensors(ckpt.tensors.values(), { allowMissing: ["score.weight"] });
      const rng = new Rng(seed).fork("score-head");
      const head = model.tensor("score.weight");
      for (let i = 0; i < head.length; i++) head[i] = 0.02 * rng.normal();
      scoreHeadInit = "random";
    }
    const started = Date.now();
    const bar = progressBar();
    const window: { loss: number; accuracy: number }[] = [];
    const result = runRewardTraining(
      {
        out: flags.out,
        restart: flags.restart === true,
        model,
        tokenizer,
        meta: {
          config: ckpt.config,
          tokenizerJson: ckpt.tokenizerJson,
          tokenizerConfigJson: ckpt.tokenizerConfigJson,
        },
        pairs,
        pairsDigest: pairsDigest(pairs),
        options,
        weightDecay,
        saveEvery,
        ...(stepsNow !== undefined ? { maxStepsNow: stepsNow } : {}),
        onWarning: (line) => process.stderr.write(`selfsteer: ${line}\n`),
      },
      {
        onStart: ({ startStep, totalSteps }) => {
          bar.start(totalSteps, "rm train");
          bar.update(startStep);
        },
        onStep: (record) => {
          window.push({ loss: record.loss, accuracy: record.metrics[METRIC.accuracy] ?? 0 });
          if (window.length > 20) window.shift();
          bar.update(record.step + 1, {
            loss: (mean(window.map((r) => r.loss)) ?? 0).toFixed(4),
            acc: (mean(window.map((r) => r.accuracy)) ?? 0).toFixed(3),
          });
        },
      },
    );
    bar.stop();
    if (result.alreadyComplete)
      process.stderr.write(
        `selfsteer: ${flags.out} already complete; nothing to do (--restart trains again)\n`,
      );
    // The summary's "recent" loss and accuracy: the last epoch's worth of steps.
    const recent = result.records.slice(-Math.ceil(pairs.length / batchSize));
    printJson({
      out: flags.out,
      init_from: flags.model,
      score_head_init: result.resumedFrom !== null ? "resumed" : scoreHeadInit,
      pairs: pairs.length,
      formats: countFormats(pairs),
      epochs,
      total_steps: result.totalSteps,
      steps_done: result.step,
      steps_run: result.step - result.startStep,
      complete: result.complete,
      already_complete: result.alreadyComplete,
      resumed_from_step: result.resumedFrom !== null ? result.startStep : null,
      recent_loss: round(mean(recent.map((r) => r.loss))),
      recent_accuracy: round(mean(recent.map((r) => r.metrics[METRIC.accuracy] ?? 0))),
      seconds: round((Date.now() - started) / 1000, 2),
    });
  } finally {
    kernels.dispose();
  }
}

const SectionsFileSchema = z.record(z.string(), z.array(z.string().min(1)));

interface EvalFlags {
  model: string;
  data: string;
  json?: boolean;
  maxLen?: string;
  maxBatchTokens: string;
  sections?: string;
  scoresOut?: string;
  backend: string;
}

/** `rm eval`: RewardBench-style accuracy of a reward model on a pair file. */
function evalCommand(flags: EvalFlags): void {
  checkOutputs({ flag: "--scores-out", path: flags.scoresOut, kind: "file" });
  const maxBatchTokens = parseIntFlag("--max-batch-tokens", flags.maxBatchTokens, 1);
  const backend = parseBackend(flags.backend);
  const sections =
    flags.sections !== undefined ? readJsonFile(flags.sections, SectionsFileSchema) : undefined;
  const pairs = readPairs(flags.data);
  const kernels = openKernels(backend);
  try {
    const { model, tokenizer, config } = loadRewardModel(flags.model, kernels);
    const maxLen =
      flags.maxLen !== undefined ? parseIntFlag("--max-len", flags.maxLen, 2) : defaultMaxLen(config);
    const scores = scorePairs(model, tokenizer, pairs, { maxLen, maxBatchTokens });
    const results = pairs.map((p, i) => ({
      subset: p.subset,
      ...(p.section !== undefined ? { section: p.section } : {}),
      ...scores[i],
    }));
    const report = rewardBenchReport(results, sections !== undefined ? { sections } : {});
    if (flags.scoresOut !== undefined) writePairScores(flags.scoresOut, pairs, scores);
    if (flags.json === true) printJson({ model: flags.model, data: flags.data, ...report });
    else process.stdout.write(formatReport(report));
  } finally {
    kernels.dispose();
  }
}

function writePairScores(
  path: string,
  pairs: readonly PreferencePair[],
  scores: readonly { chosenScore: number; rejectedScore: number }[],
): void {
  const lines = pairs.map((p, i) =>
    JSON.stringify({
      id: p.id,
      subset: p.subset,
      chosen_score: scores[i].chosenScore,
      rejected_score: scores[i].rejectedScore,
      correct: scores[i].chosenScore > scores[i].rejectedScore,
    }),
  );
  writeFileAtomic(path, `${lines.join("\n")}\n`);
}

const pct = (x: number) => (100 * x).toFixed(1);

/** The human-readable report: subsets grouped by section, then section scores and the overall score. */
function formatReport(report: RewardBenchReport): string {
  const rows: string[][] = [["section", "subset", "pairs", "accuracy"]];
  for (const s of report.subsets) rows.push([s.section ?? "-", s.subset, String(s.n), pct(s.accuracy)]);
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]) =>
    r.map((cell, c) => (c >= 2 ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join("  ");
  const out = rows.map(line);
  out.push("");
  for (const s of report.sections) out.push(`${s.section}: ${pct(s.score)} (${s.n} pairs)`);
  out.push(`overall: ${pct(report.overall)} (${report.n} pairs; plain accuracy ${pct(report.accuracy)})`);
  return `${out.join("\n")}\n`;
}

interface ScoreFlags {
  model: string;
  data: string;
  out?: string;
  maxLen?: string;
  maxBatchTokens: string;
  backend: string;
}

/** `rm score`: one score per (prompt, response) line. */
function scoreCommand(flags: ScoreFlags): void {
  checkOutputs({ flag: "--out", path: flags.out, kind: "file" });
  const maxBatchTokens = parseIntFlag("--max-batch-tokens", flags.maxBatchTokens, 1);
  const backend = parseBackend(flags.backend);
  const items = readScoreItems(flags.data);
  const kernels = openKernels(backend);
  try {
    const { model, tokenizer, config } = loadRewardModel(flags.model, kernels);
    const maxLen =
      flags.maxLen !== undefined ? parseIntFlag("--max-len", flags.maxLen, 2) : defaultMaxLen(config);
    const scores = scoreItems(model, tokenizer, items, { maxLen, maxBatchTokens });
    const text = items
      .map(
        (it, i) =>
          `${JSON.stringify(it.id !== undefined ? { id: it.id, score: scores[i] } : { score: scores[i] })}\n`,
      )
      .join("");
    if (flags.out !== undefined) {
      writeFileAtomic(flags.out, text);
      printJson({ out: flags.out, items: items.length });
    } else process.stdout.write(text);
  } finally {
    kernels.dispose();
  }
}

/** Registers `selfsteer rm train|eval|score`: Bradley-Terry reward models. */
export function register(program: Command): void {
  const rm = program
    .command("rm")
    .description("reward models: train (Bradley-Terry), evaluate (RewardBench-style), score");

  rm.command("train")
    .description("train a reward model (Llama backbone + score head) on preference pairs")
    .requiredOption("--model <dir>", "checkpoint to start from (a policy, or a reward model to continue)")
    .requiredOption("--pairs <file>", "JSONL pairs: RewardBench-style, TRL, or SSO records (mixed freely)")
    .requiredOption("--out <dir>", "output checkpoint directory (rerun to resume)")
    .option("--epochs <n>", "passes over the pairs", "1")
    .option("--lr <x>", "peak learning rate (cosine schedule)", "1e-4")
    .option("--batch-size <n>", "pairs per optimizer step", "32")
    .option("--micro-batch <n>", "pairs per forward pass (2 sequences each)", "4")
    .option("--max-len <n>", "tokens per sequence (default: min(1024, max_position_embeddings))")
    .option("--seed <n>", "seed for the score head and the data order", "0")
    .option("--save-every <n>", "also save every n steps (0: only at the end)", "100")
    .option("--steps <n>", "run at most n steps now, save and exit (rerun to continue)")
    .option("--restart", "discard what --out holds from an earlier run and start over")
    .option("--warmup-ratio <x>", "fraction of steps warming up", "0.1")
    .option("--weight-decay <x>", "AdamW weight decay (matrices only)", "0.1")
    .option("--max-grad-norm <x>", "global gradient-norm clip", "1")
    .option("--backend <name>", `kernels: ${BACKENDS.join(", ")}`, "auto")
    .addHelpText(
      "after",
      `
The loss is -log sigmoid(r(x, y_chosen) - r(x, y_rejected)), averaged over the pairs of a step; the
score is read at the response's closing end-of-turn token (<|im_end|> in ChatML, the model's own with
its chat template). A policy checkpoint gets a new score head
(normal, std 0.02, seeded); a reward model keeps its own. The output is an HF checkpoint
(LlamaForSequenceClassification, num_labels 1) with trainer state beside it: rerun the same command
to resume after an interruption. Prints a JSON summary.

Example:
  selfsteer rm train --model runs/base --pairs pairs.jsonl --out runs/rm --epochs 2`,
    )
    .action(trainCommand);

  rm.command("eval")
    .description("accuracy of a reward model per subset and RewardBench section")
    .requiredOption("--model <dir>", "reward-model checkpoint")
    .requiredOption(
      "--data <file>",
      "JSONL pairs (RewardBench's rows {prompt, chosen, rejected, subset, id} work as is)",
    )
    .option("--json", "print one JSON object instead of a table")
    .option("--max-len <n>", "tokens per sequence (default: min(1024, max_position_embeddings))")
    .option("--max-batch-tokens <n>", "padded tokens per forward pass", "4096")
    .option("--sections <file>", 'JSON {"Section": ["subset", ...]} overriding the built-in section map')
    .option("--scores-out <file>", "also write per-pair scores as JSONL")
    .option("--backend <name>", `kernels: ${BACKENDS.join(", ")}`, "auto")
    .addHelpText(
      "after",
      `
A pair is right when the chosen response scores strictly higher. Sections follow RewardBench (Chat,
Chat Hard, Safety, Reasoning; subsets weighted by RewardBench's example counts, else by pairs
present); subsets named after a section (chat, chat-hard, safety, reasoning) map to it, a pair's
"section" field names its own, and other subsets stand alone. The world suite's subsets (chat-easy,
chat-length, chat-hard, refuse-unsafe, respond-benign, math, math-steps) get their sections from the
file \`selfsteer world rewardbench --sections\` writes: pass it as --sections. Overall is the mean of
the section scores (and of stand-alone subsets).

Example:
  selfsteer rm eval --model runs/rm --data rewardbench.jsonl --json`,
    )
    .action(evalCommand);

  rm.command("score")
    .description("score responses: lines {id?, prompt, response} or {id?, messages}")
    .requiredOption("--model <dir>", "reward-model checkpoint")
    .requiredOption("--data <file>", "JSONL lines to score")
    .option("--out <file>", "write {id?, score} lines here (default: stdout)")
    .option("--max-len <n>", "tokens per sequence (default: min(1024, max_position_embeddings))")
    .option("--max-batch-tokens <n>", "padded tokens per forward pass", "4096")
    .option("--backend <name>", `kernels: ${BACKENDS.join(", ")}`, "auto")
    .action(scoreCommand);
}
