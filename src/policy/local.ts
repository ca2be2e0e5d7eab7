/**
 * The local Policy backend: our own engine sampling from a checkpoint in this process. Requests are
 * rendered in ChatML with a generation prompt, expanded to one sample per n, and decoded together with
 * the KV-cache sampler. Each sample has its own seed, so its text depends on its conversation,
 * settings and seed only: not on which other requests share the call or the batch.
 */
import { chatStopIds, encodeChat } from "../engine/chat.js";
import { type CreatedKernels, createKernels } from "../engine/kernels/index.js";
import { loadModelDir } from "../engine/load.js";
import type { LlamaModel } from "../engine/model.js";
import { generateTokens } from "../engine/sampler.js";
import type { BpeTokenizer } from "../engine/tokenizer.js";
import { hashString } from "../util/rng.js";
import type { GenerateRequest, Generation, Policy, TokenUsage } from "./types.js";

/** Options of a LocalPolicy. */
export interface LocalPolicyOptions {
  /** Name for logs and reports (default "local"). */
  name?: string;
  /** Seeds requests that carry none, together with their position in the policy's request stream (default 0). */
  seed?: number;
  /** Samples decoded together at most (bounds KV-cache memory; default 32). */
  maxBatch?: number;
  /** Keep only the k most likely tokens when sampling (0 = off, the default; requests have no top-k). */
  topK?: number;
}

/** Options of LocalPolicy.fromDir. */
export interface LocalPolicyDirOptions extends LocalPolicyOptions {
  /** Kernels to compute on; by default the policy creates its own (and frees them on dispose). */
  kernels?: CreatedKernels;
}

/** One sample with what the engine knows about it. */
export interface LocalGeneration extends Generation {
  /** The sampled ids, the stop token included when one ended the sample (before stop-string truncation). */
  ids: number[];
  /** log p of each sampled id under the model's unmodified softmax. */
  logprobs: number[];
  /** The seed the sample was drawn with. */
  seed: number;
}

/** A request expanded to one sample. */
interface Sample {
  request: number;
  k: number;
  prompt: number[];
  maxNew: number;
  temperature: number;
  topP: number;
  seed: number;
}

/** A policy over a LlamaModel and its tokenizer, sampling in this process. */
export class LocalPolicy implements Policy {
  readonly name: string;
  private readonly seed: number;
  private readonly maxBatch: number;
  private readonly topK: number;
  private readonly stopIds: number[];
  private readonly maxPositions: number;
  private readonly tally: TokenUsage = { promptTokens: 0, completionTokens: 0, requests: 0 };
  /** Requests served so far; numbers the unseeded ones. */
  private served = 0;
  private ownedKernels: CreatedKernels | null = null;

  /** A policy sampling from `model` (which must have an LM head), text through `tokenizer`. */
  constructor(
    readonly model: LlamaModel,
    readonly tokenizer: BpeTokenizer,
    options: LocalPolicyOptions = {},
  ) {
    if (!model.hasLmHead) throw new Error("LocalPolicy: the model has no LM head (a reward model?)");
    this.name = options.name ?? "local";
    this.seed = options.seed ?? 0;
    this.maxBatch = options.maxBatch ?? 32;
    this.topK = options.topK ?? 0;
    if (!Number.isInteger(this.maxBatch) || this.maxBatch < 1)
      throw new RangeError(`LocalPolicy: maxBatch must be a positive integer, got ${this.maxBatch}`);
    if (!Number.isInteger(this.topK) || this.topK < 0)
      throw new RangeError(`LocalPolicy: topK must be an integer >= 0, got ${this.topK}`);
    // The model's own end-of-turn ids (ChatML: <|im_end|> and <|endoftext|>).
    this.stopIds = [...chatStopIds(tokenizer)];
    this.maxPositions = model.config.max_position_embeddings;
  }

  /** Opens a checkpoint directory (with its tokenizer) as a policy. */
  static fromDir(dir: string, options: LocalPolicyDirOptions = {}): LocalPolicy {
    const kernels = options.kernels ?? createKernels();
    try {
      const { model, tokenizer } = loadModelDir(dir, { kernels, scoreHead: false });
      const policy = new LocalPolicy(model, tokenizer, { name: dir, ...options });
      if (options.kernels === undefined) policy.ownedKernels = kernels;
      return policy;
    } catch (error) {
      if (options.kernels === undefined) kernels.dispose();
      throw error;
    }
  }

  /** Why the kernels fell back to the plain path, when fromDir created them and they did. */
  get kernelsWarning(): string | undefined {
    return this.ownedKernels?.warning;
  }

  /** Samples n completions per request, in request order. */
  async generate(requests: GenerateRequest[]): Promise<Generation[][]> {
    return this.sample(requests).map((samples) =>
      samples.map((s) => ({ text: s.text, finishReason: s.finishReason })),
    );
  }

  /** Like generate, with ids, log-probs and seeds; runs synchronously. */
  sample(requests: readonly GenerateRequest[]): LocalGeneration[][] {
    const samples: Sample[] = [];
    const promptLengths: number[] = [];
    requests.forEach((request, i) => {
      const n = request.n ?? 1;
      if (!Number.isInteger(n) || n < 1) throw new RangeError(`request ${i}: n must be a positive integer`);
      if (!Number.isInteger(request.maxTokens) || request.maxTokens < 0)
        throw new RangeError(`request ${i}: maxTokens must be an integer >= 0`);
      const prompt = encodeChat(this.tokenizer, request.messages, { addGenerationPrompt: true }).ids;
      promptLengths.push(prompt.length);
      const maxNew = Math.max(0, Math.min(request.maxTokens, this.maxPositions - prompt.length));
      const base = request.seed ?? this.derivedSeed(this.served + i);
      for (let k = 0; k < n; k++)
        samples.push({
          request: i,
          k,
          prompt,
          maxNew,
          temperature: request.temperature,
          topP: request.topP,
          seed: (base + k) >>> 0,
        });
    });
    // Batches of similar total length waste little KV cache, and the longest first means later batches
    // fit the cache the first one allocated, so it is allocated once instead of regrown (each growth
    // reallocates it). No sample depends on order.
    const order = samples
      .map((_, j) => j)
      .sort((a, b) => {
        const sa = samples[a];
        const sb = samples[b];
        return sb.prompt.length + sb.maxNew - (sa.prompt.length + sa.maxNew) || a - b;
      });
    const sorted = order.map((j) => samples[j]);
    const sampled = generateTokens(
      this.model,
      sorted.map((s) => s.prompt),
      {
        maxNewTokens: sorted.map((s) => s.maxNew),
        temperature: sorted.map((s) => s.temperature),
        topP: sorted.map((s) => s.topP),
        topK: this.topK,
        stopIds: this.stopIds,
        seeds: sorted.map((s) => s.seed),
        maxBatch: this.maxBatch,
      },
    );
    const byRequest: LocalGeneration[][] = requests.map((r) => new Array<LocalGeneration>(r.n ?? 1));
    order.forEach((j, row) => {
      const s = samples[j];
      const result = sampled[row];
      byRequest[s.request][s.k] = this.finish(
        result.ids,
        result.logprobs,
        result.finishReason,
        s.seed,
        requests[s.request].stop,
      );
    });
    byRequest.forEach((list, i) => {
      this.tally.promptTokens += promptLengths[i];
      for (const g of list) this.tally.completionTokens += g.ids.length;
    });
    this.tally.requests += requests.length;
    this.served += requests.length;
    return byRequest;
  }

  /** Token usage so far: each request's prompt once, every sampled token (stop tokens included). */
  usage(): TokenUsage {
    return { ...this.tally };
  }

  /** Frees the kernels fromDir created (a no-op for kernels passed in). */
  dispose(): void {
    this.ownedKernels?.dispose();
    this.ownedKernels = null;
  }

  /** The seed of the unseeded request at `index` of this policy's request stream. */
  private derivedSeed(index: number): number {
    return hashString(`local-policy:${this.seed}:${index}`);
  }

  /** Text of a sample: without its stop token, cut before the first stop string. */
  private finish(
    ids: number[],
    logprobs: number[],
    reason: "stop" | "length",
    seed: number,
    stop: readonly string[] | undefined,
  ): LocalGeneration {
    const body = reason === "stop" ? ids.slice(0, -1) : ids;
    // A model's vocabulary is often padded beyond its tokenizer's; such ids decode to nothing, as in HF.
    let text = this.tokenizer.decode(body.filter((id) => this.tokenizer.idToToken(id) !== undefined));
    let finishReason = reason;
    let cut = -1;
    for (const s of stop ?? []) {
      if (s === "") continue;
      const at = text.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      text = text.slice(0, cut);
      finishReason = "stop";
    }
    return { text, finishReason, ids, logprobs, seed };
  }
}
