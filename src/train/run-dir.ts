/**
 * The one run directory every trainer writes (sft, offline and online preference training, reward
 * models, the world's base policy), resumable after a kill at any point:
 *
 *   <out>/run.json          the trainer kind and the run's fingerprint (settings, data digest, digest of
 *                           the starting weights), written once when the run starts
 *   <out>/metrics.jsonl     one line per optimizer step, metric names from loop.ts (METRIC)
 *   <out>/checkpoint-N/     the latest resumable state after N steps: the HF checkpoint files,
 *                           optimizer.safetensors and trainer_state.json
 *   <out>/...               once finished: the final model in HF layout, optimizer.safetensors, any
 *                           extra files of the trainer, and trainer_state.json marked complete
 *
 * A checkpoint is written into checkpoint-N.tmp-<pid>/ (weights first, then the optimizer, then
 * trainer_state.json: the commit record, which names the step, the fingerprint and every file's
 * sha256) and renamed to checkpoint-N; the older checkpoint is removed after. The final files go into
 * <out> one at a time through temp files, trainer_state.json last. A kill at any point therefore leaves
 * the previous committed state or the new one; temp leftovers are removed when the directory is
 * reopened, and a checkpoint whose files do not match its commit record is never resumed from.
 */
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { type TokenizerConfigOptions, tokenizerConfigJson } from "../engine/chat.js";
import {
  CHECKPOINT_FILES,
  type CheckpointContents,
  loadCheckpoint,
  loadTrainerState,
  saveCheckpoint,
  type TrainerState,
  trainerStateFiles,
} from "../engine/checkpoint.js";
import type { LlamaModel } from "../engine/model.js";
import type { AdamW } from "../engine/optim.js";
import type { BpeTokenizer } from "../engine/tokenizer.js";
import { crashPoint } from "../util/crash.js";
import { UserError } from "../util/errors.js";
import { hashFileInto, readJsonFile, writeChunked, writeFileAtomic, writeJsonAtomic } from "../util/fsio.js";

/** File names of a run directory (beside the HF checkpoint files). */
export const RUN_FILES = { run: "run.json", metrics: "metrics.jsonl" } as const;

const RUN_FORMAT = "selfsteer-run-v1";
const CHECKPOINT_DIR = /^checkpoint-(\d+)$/;
const TEMP_NAME = /\.tmp-/;

/** One setting the result depends on: the flag (or description) users know it by, and its value. */
export interface FingerprintEntry {
  label: string;
  value: string | number | boolean | null;
}

/** Everything a run's result depends on, keyed by a stable name. */
export type Fingerprint = Record<string, FingerprintEntry>;

/** What the trainer needs besides the model to write a checkpoint (config and tokenizer files). */
export type CheckpointMeta = Omit<CheckpointContents, "tensors">;

/** How to open a run directory. */
export interface RunDirOptions {
  /** The trainer, e.g. "sft": a directory holding another trainer's run is refused. */
  kind: string;
  fingerprint: Fingerprint;
  /** Discard what an earlier run left in the directory and start over. */
  restart?: boolean;
  /** How users start over, for messages (e.g. "pass --restart"). */
  restartHint: string;
}

/** A committed state found in the directory. */
export interface SavedState {
  dir: string;
  step: number;
  totalSteps: number;
  complete: boolean;
}

const RunFileSchema = z.object({
  format: z.literal(RUN_FORMAT),
  kind: z.string(),
  fingerprint: z.record(
    z.string(),
    z.object({ label: z.string(), value: z.union([z.string(), z.number(), z.boolean(), z.null()]) }),
  ),
});

const CommitSchema = z.object({
  kind: z.string(),
  run: z.string(),
  total_steps: z.number().int().nonnegative(),
  complete: z.boolean(),
  files: z.record(z.string(), z.string()),
});
type Commit = z.infer<typeof CommitSchema>;

/** sha256 of a file's bytes, hex. */
function fileDigest(path: string): string {
  return hashFileInto(createHash("sha256"), path).digest("hex");
}

/** sha256 over the fingerprint's values in key order: links run.json to every commit record. */
function fingerprintDigest(fingerprint: Fingerprint): string {
  const keys = Object.keys(fingerprint).sort();
  return createHash("sha256")
    .update(JSON.stringify(keys.map((k) => [k, fingerprint[k].value])))
    .digest("hex");
}

/** sha256 of a model's parameters: names the starting weights in a fingerprint. */
export function weightsDigest(model: LlamaModel): string {
  // A copy: kernel memory may be a SharedArrayBuffer, which hashing does not take.
  return createHash("sha256").update(new Uint8Array(model.params.slice().buffer)).digest("hex");
}

/** The config, tokenizer and generation files saved with a model's weights (HF layout). */
export function checkpointMeta(
  model: LlamaModel,
  tokenizer: BpeTokenizer,
  options: TokenizerConfigOptions = {},
): CheckpointMeta {
  const generationConfig = tokenizer.chat?.generationConfig;
  return {
    config: model.config,
    tokenizerJson: tokenizer.toJSON(),
    tokenizerConfigJson: tokenizerConfigJson(tokenizer, options),
    // The model's own end-of-turn ids and sampling defaults travel with what is trained from it.
    ...(generationConfig === undefined ? {} : { generationConfigJson: generationConfig }),
  };
}

/** sha256 of a file's bytes, for data files in a fingerprint. */
export function dataDigest(path: string): string {
  return fileDigest(path);
}

/** A trainer's run directory: fingerprint check, resume, crash-consistent checkpoints, metrics. */
export class RunDirectory {
  private readonly runDigest: string;
  private metricsFd: number | null = null;

  private constructor(
    readonly dir: string,
    readonly kind: string,
    private readonly options: RunDirOptions,
  ) {
    this.runDigest = fingerprintDigest(options.fingerprint);
  }

  /**
   * Opens `dir` for a run of `kind` with `fingerprint`: removes temp leftovers of an interrupted save,
   * refuses a directory holding another run (naming the first setting that differs) or foreign files,
   * and records the fingerprint when the run is new. Nothing is trained or loaded here.
   */
  static open(dir: string, options: RunDirOptions): RunDirectory {
    const run = new RunDirectory(dir, options.kind, options);
    const restart = options.restart === true;
    if (restart) run.discard();
    mkdirSync(dir, { recursive: true });
    run.removeLeftovers();
    const runPath = join(dir, RUN_FILES.run);
    if (existsSync(runPath)) run.checkFingerprint(readJsonFile(runPath, RunFileSchema));
    else {
      const foreign = readdirSync(dir);
      if (foreign.length > 0 && !restart)
        throw new UserError(
          `${dir}: already holds files that are not from a ${options.kind} run (${foreign.slice(0, 3).join(", ")}${foreign.length > 3 ? ", ..." : ""}); choose another output directory or ${options.restartHint} to overwrite them`,
        );
      writeJsonAtomic(runPath, { format: RUN_FORMAT, kind: options.kind, fingerprint: options.fingerprint });
    }
    return run;
  }

  /** How users start over, for messages. */
  get restartHint(): string {
    return this.options.restartHint;
  }

  /** The finished run in the directory itself, or null while it is not complete. */
  finished(): SavedState | null {
    const state = this.readCommit(this.dir);
    if (state === null) return null;
    if (!state.complete)
      throw new UserError(
        `${join(this.dir, CHECKPOINT_FILES.trainerState)}: not marked complete; ${this.options.restartHint} to start over`,
      );
    return state;
  }

  /** The furthest committed state to resume from (the finished run, else the latest checkpoint-N). */
  latest(): SavedState | null {
    const done = this.finished();
    if (done !== null) return done;
    const found = this.checkpointDirs()
      .map((c) => this.readCommit(c.dir))
      .filter((s): s is SavedState => s !== null);
    found.sort((a, b) => b.step - a.step);
    return found[0] ?? null;
  }

  /**
   * Loads the latest committed state into `model` and `optimizer` (nothing when there is none) and cuts
   * metrics.jsonl back to that state's steps; returns the step to continue from.
   */
  restore(model: LlamaModel, optimizer: AdamW): number {
    const saved = this.latest();
    const step = saved?.step ?? 0;
    if (saved !== null) {
      const scoreHead = model.hasScoreHead;
      model.loadTensors(loadCheckpoint(saved.dir, { scoreHead }).tensors.values());
      const state = loadTrainerState(saved.dir) as TrainerState;
      optimizer.importState(state.optimizer);
    }
    this.truncateMetrics(step);
    return step;
  }

  /** The per-step records in metrics.jsonl, in step order. */
  readMetrics(): Record<string, number>[] {
    const path = join(this.dir, RUN_FILES.metrics);
    if (!existsSync(path)) return [];
    const out: Record<string, number>[] = [];
    for (const line of readFileSync(path, "utf8").split("\n")) {
      if (line.trim() === "") continue;
      try {
        out.push(JSON.parse(line) as Record<string, number>);
      } catch {
        break; // a torn last line of an interrupted run
      }
    }
    return out;
  }

  /** Appends one step's record to metrics.jsonl. */
  appendMetrics(record: Record<string, number>): void {
    if (this.metricsFd === null) this.metricsFd = openSync(join(this.dir, RUN_FILES.metrics), "a");
    writeSync(this.metricsFd, `${JSON.stringify(record)}\n`);
    crashPoint("metrics");
  }

  /**
   * Commits the state after `step` of `totalSteps` as checkpoint-<step>: written into a temp directory
   * (weights, optimizer, then the commit record) and renamed; the previous checkpoint goes after.
   */
  commitCheckpoint(
    step: number,
    totalSteps: number,
    model: LlamaModel,
    optimizer: AdamW,
    meta: CheckpointMeta,
  ) {
    assertFiniteWeights(model, step);
    const final = join(this.dir, `checkpoint-${step}`);
    const staging = `${final}.tmp-${process.pid}`;
    rmSync(staging, { recursive: true, force: true });
    mkdirSync(staging, { recursive: true });
    saveCheckpoint(staging, { ...meta, tensors: model.namedTensors() });
    crashPoint("weights");
    const { optimizerParts, stateJson } = trainerStateFiles({ step, optimizer: optimizer.stateView() });
    writeChunked(join(staging, CHECKPOINT_FILES.optimizer), optimizerParts);
    crashPoint("optimizer");
    const commit = this.commitRecord(staging, totalSteps, step === totalSteps);
    writeFileSync(
      join(staging, CHECKPOINT_FILES.trainerState),
      `${JSON.stringify({ ...stateJson, extra: commit }, null, 2)}\n`,
    );
    crashPoint("state");
    rmSync(final, { recursive: true, force: true });
    renameSync(staging, final);
    crashPoint("rename");
    for (const c of this.checkpointDirs())
      if (c.dir !== final) rmSync(c.dir, { recursive: true, force: true });
    crashPoint("prune");
  }

  /**
   * Writes the finished run into the directory itself: the model in HF layout, the optimizer, the
   * trainer's `extraFiles` (name -> JSON value), then trainer_state.json marked complete; then the
   * checkpoints go.
   */
  publish(
    totalSteps: number,
    model: LlamaModel,
    optimizer: AdamW,
    meta: CheckpointMeta,
    extraFiles: Record<string, unknown> = {},
  ): void {
    assertFiniteWeights(model, totalSteps);
    this.closeMetrics();
    saveCheckpoint(this.dir, { ...meta, tensors: model.namedTensors() });
    crashPoint("publish-weights");
    const { optimizerParts, stateJson } = trainerStateFiles({
      step: totalSteps,
      optimizer: optimizer.stateView(),
    });
    writeFileAtomic(join(this.dir, CHECKPOINT_FILES.optimizer), optimizerParts);
    crashPoint("publish-optimizer");
    for (const [name, value] of Object.entries(extraFiles)) writeJsonAtomic(join(this.dir, name), value);
    crashPoint("publish-extra");
    const commit = this.commitRecord(this.dir, totalSteps, true);
    writeJsonAtomic(join(this.dir, CHECKPOINT_FILES.trainerState), { ...stateJson, extra: commit });
    crashPoint("publish-state");
    this.removeCheckpoints();
  }

  /** Removes the checkpoint directories (once the final model is committed, they are not needed). */
  removeCheckpoints(): void {
    for (const c of this.checkpointDirs()) rmSync(c.dir, { recursive: true, force: true });
    crashPoint("cleanup");
  }

  /** Closes metrics.jsonl (call when leaving the run early). */
  closeMetrics(): void {
    if (this.metricsFd !== null) closeSync(this.metricsFd);
    this.metricsFd = null;
  }

  /** Every file the state consists of (weights and their shards, tokenizer, optimizer, extras), hashed. */
  private commitRecord(dir: string, totalSteps: number, complete: boolean): Commit {
    const own = new Set<string>([RUN_FILES.run, RUN_FILES.metrics, CHECKPOINT_FILES.trainerState]);
    const names = readdirSync(dir)
      .filter((name) => !own.has(name) && !TEMP_NAME.test(name) && statSync(join(dir, name)).isFile())
      .sort();
    return {
      kind: this.kind,
      run: this.runDigest,
      total_steps: totalSteps,
      complete,
      files: Object.fromEntries(names.map((name) => [name, fileDigest(join(dir, name))])),
    };
  }

  /** The commit record of `dir` if it has one that belongs to this run and whose files match it. */
  private readCommit(dir: string): SavedState | null {
    const statePath = join(dir, CHECKPOINT_FILES.trainerState);
    if (!existsSync(statePath)) return null;
    const state = loadTrainerState(dir) as TrainerState;
    const parsed = CommitSchema.safeParse(state.extra);
    if (!parsed.success || parsed.data.kind !== this.kind)
      throw new UserError(
        `${statePath}: not the trainer state of a ${this.kind} run; choose another output directory or ${this.options.restartHint} to start over`,
      );
    const commit = parsed.data;
    if (commit.run !== this.runDigest)
      throw new UserError(
        `${statePath}: belongs to a run with other settings than ${join(this.dir, RUN_FILES.run)}; ${this.options.restartHint} to start over`,
      );
    for (const [name, digest] of Object.entries(commit.files)) {
      const path = join(dir, name);
      if (!existsSync(path) || fileDigest(path) !== digest)
        throw new UserError(
          `${path}: does not match ${statePath} (changed or damaged after it was saved); ${this.options.restartHint} to start over`,
        );
    }
    return { dir, step: state.step, totalSteps: commit.total_steps, complete: commit.complete };
  }

  private checkFingerprint(previous: z.infer<typeof RunFileSchema>): void {
    const { kind, fingerprint } = this.options;
    if (previous.kind !== kind)
      throw new UserError(
        `${this.dir}: holds a ${previous.kind} run, not a ${kind} run; choose another output directory or ${this.options.restartHint} to start over`,
      );
    const keys = [...new Set([...Object.keys(previous.fingerprint), ...Object.keys(fingerprint)])];
    for (const key of keys) {
      const before = previous.fingerprint[key];
      const now = fingerprint[key];
      if (before?.value === now?.value) continue;
      const label = now?.label ?? before?.label ?? key;
      const show = (e: FingerprintEntry | undefined) =>
        e === undefined ? "(unset)" : JSON.stringify(e.value);
      throw new UserError(
        `${this.dir}: holds a ${kind} run started with ${label} ${show(before)}, this command has ${show(now)}; rerun with the same inputs to resume, or ${this.options.restartHint} to discard it and start over`,
      );
    }
  }

  /** Removes what a run of this trainer writes into the directory (for a restart). */
  private discard(): void {
    if (!existsSync(this.dir)) return;
    if (!statSync(this.dir).isDirectory()) return;
    for (const name of readdirSync(this.dir))
      if (CHECKPOINT_DIR.test(name) || TEMP_NAME.test(name))
        rmSync(join(this.dir, name), { recursive: true, force: true });
    for (const name of [
      RUN_FILES.run,
      RUN_FILES.metrics,
      CHECKPOINT_FILES.trainerState,
      CHECKPOINT_FILES.optimizer,
      CHECKPOINT_FILES.config,
      CHECKPOINT_FILES.weights,
      CHECKPOINT_FILES.tokenizer,
      CHECKPOINT_FILES.tokenizerConfig,
    ])
      rmSync(join(this.dir, name), { force: true });
  }

  /** Temp files and directories of interrupted saves. */
  private removeLeftovers(): void {
    removeTempLeftovers(this.dir);
  }

  private checkpointDirs(): { dir: string; step: number }[] {
    return readdirSync(this.dir)
      .map((name) => ({ name, m: CHECKPOINT_DIR.exec(name) }))
      .filter((e): e is { name: string; m: RegExpExecArray } => e.m !== null)
      .map((e) => ({ dir: join(this.dir, e.name), step: Number(e.m[1]) }));
  }

  /** Keeps the records of steps before `step` in metrics.jsonl and drops the rest. */
  private truncateMetrics(step: number): void {
    const path = join(this.dir, RUN_FILES.metrics);
    const kept = this.readMetrics().filter((r) => r.step < step);
    if (kept.length !== step)
      throw new UserError(
        `${path}: holds ${kept.length} of the ${step} steps the saved state has done; ${this.options.restartHint} to start over`,
      );
    writeFileAtomic(path, kept.map((r) => `${JSON.stringify(r)}\n`).join(""));
  }
}

/** Removes the temp files and directories interrupted atomic writes left in `dir` (not below it). */
export function removeTempLeftovers(dir: string): void {
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir))
    if (TEMP_NAME.test(name)) rmSync(join(dir, name), { recursive: true, force: true });
}

/** Refuses to save weights that are not all finite (they would poison every later load). */
function assertFiniteWeights(model: LlamaModel, step: number): void {
  const params = model.params;
  for (let i = 0; i < params.length; i++)
    if (!Number.isFinite(params[i]))
      throw new UserError(`step ${step}: the weights hold a non-finite value; nothing was saved`);
}
