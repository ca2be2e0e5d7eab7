import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { z } from "zod";
import {
  CHECKPOINT_FILES,
  type LoadedCheckpoint,
  loadCheckpoint,
  loadTrainerState,
  saveCheckpoint,
  saveTrainerState,
  type TrainerState,
} from "../engine/checkpoint.js";
import type { LlamaConfig } from "../engine/config.js";
import type { CreatedKernels } from "../engine/kernels/index.js";
import { type LoadedModelDir, loadModelDir } from "../engine/load.js";
import { LlamaModel } from "../engine/model.js";
import { AdamW, decayMaskFromSpecs } from "../engine/optim.js";
import { BpeTokenizer } from "../engine/tokenizer.js";
import { type RewardBenchReport, rewardBenchReport } from "../eval/rewardbench.js";
import { countFormats, type PreferencePair, pairsDigest, readPairs, readScoreItems } from "../sso/pairs.js";
import {
  type RewardStepInfo,
  type RewardTrainOptions,
  rewardTotalSteps,
  scoreItems,
  scorePairs,
  trainRewardModel,
} from "../train/reward.js";
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

/** What trainer_state.json's `extra` holds for a reward-model run. */
const RM_STATE_KIND = "selfsteer-reward-model";

const RmStateExtraSchema = z.object({
  kind: z.literal(RM_STATE_KIND),
  init_from: z.string(),
  pairs_file: z.string(),
  pairs_sha256: z.string(),
  pair_count: z.number().int(),
  total_steps: z.number().int(),
  weights_sha256: z.string(),
  options: z.object({
    batch_size: z.number(),
    epochs: z.number(),
    lr: z.number(),
    warmup_ratio: z.number(),
    weight_decay: z.number(),
    max_grad_norm: z.number(),
    max_len: z.number(),
    seed: z.number(),
  }),
  recent: z.object({ loss: z.number().nullable(), accuracy: z.number().nullable() }),
});
type RmStateExtra = z.infer<typeof RmStateExtraSchema>;

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

function weightsDigest(model: LlamaModel): string {
  // A copy: kernel memory may be a SharedArrayBuffer, which hashing does not take.
  return createHash("sha256").update(new Uint8Array(model.params.slice().buffer)).digest("hex");
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
  backend: string;
}

/** `rm train`: Bradley-Terry training of a reward model initialised from a checkpoint, resumable. */
function trainCommand(flags: TrainFlags): void {
  checkOutputPath("--out", flags.out, "dir");
  const epochs = parseIntFlag("--epochs", flags.epochs, 1);
  const lr = parseNumberFlag("--lr", flags.lr, 0);
  const batchSize = parseIntFlag("--batch-size", flags.batchSize, 1);
  const microBatch = parseIntFlag("--micro-batch", flags.microBatch, 1);
  const seed = parseIntFlag("--seed", flags.seed, 0);
  const saveEvery = parseIntFlag("--save-every", flags.saveEvery, 0);
  const stepsNow = flags.steps !== undefined ? parseIntFlag("--steps", flags.steps, 1) : undefined;
  const warmupRatio = parseNumberFlag("--warmup-ratio", flags.warmupRatio, 0, 1);
  const weightDecay = parseNumberFlag("--weight-decay", flags.weightDecay, 0);
  const maxGradNorm = parseNumberFlag("--max-grad-norm", flags.maxGradNorm, 0);
  const backend = parseBackend(flags.backend);
  const pairs = readPairs(flags.pairs);
  const digest = pairsDigest(pairs);

  const state = loadTrainerState(flags.out);
  let resumed: RmStateExtra | null = null;
  if (state !== null) {
    const parsed = RmStateExtraSchema.safeParse(state.extra);
    if (!parsed.success)
      throw new UserError(
        `--out ${flags.out}: holds trainer state of another kind of run, not a reward model; choose another --out`,
      );
    resumed = parsed.data;
  } else if (existsSync(join(flags.out, CHECKPOINT_FILES.config)))
    throw new UserError(
      `--out ${flags.out}: already holds a checkpoint without trainer state (a finished model?); choose another --out`,
    );

  const sourceDir = resumed !== null ? flags.out : flags.model;
  const ckpt = loadCheckpoint(sourceDir);
  const tokenizer = tokenizerOf(sourceDir, ckpt);
  const maxLen =
    flags.maxLen !== undefined ? parseIntFlag("--max-len", flags.maxLen, 2) : defaultMaxLen(ckpt.config);
  const options: RewardTrainOptions = {
    batchSize,
    microBatch,
    epochs,
    peakLr: lr,
    warmupRatio,
    maxGradNorm,
    maxLen,
    seed,
  };
  const recorded: RmStateExtra["options"] = {
    batch_size: batchSize,
    epochs,
    lr,
    warmup_ratio: warmupRatio,
    weight_decay: weightDecay,
    max_grad_norm: maxGradNorm,
    max_len: maxLen,
    seed,
  };
  const totalSteps = rewardTotalSteps(pairs.length, batchSize, epochs);
  if (resumed !== null) checkResumable(flags, resumed, recorded, digest, pairs.length);

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
    const optimizer = new AdamW(model.numParams, { weightDecay, decayMask: decayMaskFromSpecs(model.specs) });
    let startStep = 0;
    if (state !== null && resumed !== null) {
      if (weightsDigest(model) !== resumed.weights_sha256)
        throw new UserError(
          `${flags.out}: the weights do not match ${CHECKPOINT_FILES.trainerState} (a save interrupted between files?); remove ${flags.out} to start over`,
        );
      optimizer.importState(state.optimizer);
      startStep = state.step;
    }
    const initFrom = resumed?.init_from ?? flags.model;
    const stepsPerEpoch = Math.ceil(pairs.length / batchSize);
    const recent: RewardStepInfo[] = [];
    const save = (stepsDone: number) => {
      saveCheckpoint(flags.out, {
        config: ckpt.config,
        tensors: model.namedTensors(),
        tokenizerJson: ckpt.tokenizerJson,
        tokenizerConfigJson: ckpt.tokenizerConfigJson,
      });
      const extra: RmStateExtra = {
        kind: RM_STATE_KIND,
        init_from: initFrom,
        pairs_file: flags.pairs,
        pairs_sha256: digest,
        pair_count: pairs.length,
        total_steps: totalSteps,
        weights_sha256: weightsDigest(model),
        options: recorded,
        recent: {
          loss: mean(recent.map((r) => r.loss)) ?? resumed?.recent.loss ?? null,
          accuracy: mean(recent.map((r) => r.accuracy)) ?? resumed?.recent.accuracy ?? null,
        },
      };
      const trainerState: TrainerState = { step: stepsDone, optimizer: optimizer.exportState(), extra };
      saveTrainerState(flags.out, trainerState);
      return extra;
    };

    const started = Date.now();
    const bar = progressBar();
    let last: RmStateExtra | null = resumed;
    const endStep = Math.min(totalSteps, stepsNow !== undefined ? startStep + stepsNow : totalSteps);
    if (startStep < endStep) {
      bar.start(totalSteps, "rm train");
      bar.update(startStep);
      trainRewardModel(model, tokenizer, optimizer, pairs, { ...options, startStep, endStep }, (info) => {
        recent.push(info);
        // One epoch's worth of steps: the summary's "recent" loss and accuracy.
        if (recent.length > stepsPerEpoch) recent.shift();
        const window = recent.slice(-20);
        bar.update(info.step + 1, {
          loss: (mean(window.map((r) => r.loss)) ?? 0).toFixed(4),
          acc: (mean(window.map((r) => r.accuracy)) ?? 0).toFixed(3),
        });
        const done = info.step + 1;
        if (done === endStep || (saveEvery > 0 && done % saveEvery === 0)) last = save(done);
      });
      bar.stop();
    }
    printJson({
      out: flags.out,
      init_from: initFrom,
      score_head_init: resumed !== null ? "resumed" : scoreHeadInit,
      pairs: pairs.length,
      formats: countFormats(pairs),
      epochs,
      total_steps: totalSteps,
      steps_done: Math.max(startStep, endStep),
      steps_run: Math.max(0, endStep - startStep),
      complete: endStep >= totalSteps,
      resumed_from_step: resumed !== null ? startStep : null,
      recent_loss: round(last?.recent.loss ?? null),
      recent_accuracy: round(last?.recent.accuracy ?? null),
      seconds: round((Date.now() - started) / 1000, 2),
    });
  } finally {
    kernels.dispose();
  }
}

function checkResumable(
  flags: TrainFlags,
  resumed: RmStateExtra,
  recorded: RmStateExtra["options"],
  digest: string,
  pairCount: number,
): void {
  if (resumed.pairs_sha256 !== digest)
    throw new UserError(
      `--pairs ${flags.pairs}: differs from the pairs the run in ${flags.out} started with (${resumed.pairs_file}, ${resumed.pair_count} pairs, now ${pairCount}); use another --out to train on new data`,
    );
  const flagOf: Record<keyof RmStateExtra["options"], string> = {
    batch_size: "--batch-size",
    epochs: "--epochs",
    lr: "--lr",
    warmup_ratio: "--warmup-ratio",
    weight_decay: "--weight-decay",
    max_grad_norm: "--max-grad-norm",
    max_len: "--max-len",
    seed: "--seed",
  };
  for (const key of Object.keys(flagOf) as (keyof RmStateExtra["options"])[])
    if (resumed.options[key] !== recorded[key])
      throw new UserError(
        `${flagOf[key]}: the run in ${flags.out} was started with ${resumed.options[key]}, got ${recorded[key]}; resume with the same settings or use another --out`,
      );
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
