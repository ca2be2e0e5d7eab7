/**
 * What every endpoint handler shares: the served model's name and limits, its tokenizer, the batch
 * scheduler, request checks that name the offending field, and `generate`, which turns one prompt's
 * samples into text (stop strings, held-back stream deltas, token offsets) on top of the scheduler.
 */
import { chatStopIds, type PromptPiece } from "../engine/chat.js";
import type { LlamaConfig } from "../engine/config.js";
import type { SamplingSettings } from "../engine/sampler.js";
import type { BpeTokenizer } from "../engine/tokenizer.js";
import { Rng } from "../util/rng.js";
import { ClientGone } from "./http.js";
import { HttpError, invalidRequest } from "./protocol.js";
import type { BatchScheduler, FinishReason, SampledToken } from "./scheduler.js";
import { IncrementalText } from "./text.js";
import type { TokenizePool } from "./tokenize-pool.js";

/** One prompt's generation as a handler describes it. */
export interface GenerationSpec {
  prompt: number[];
  maxTokens: number;
  settings: SamplingSettings;
  topLogprobs: number;
  stops: string[];
  /** One seed per sample. */
  seeds: number[];
  /** Keep sampling past end-of-turn tokens (vLLM's ignore_eos; benchmarks use it for fixed lengths). */
  ignoreEos: boolean;
}

/** One finished sample. */
export interface ChoiceOutput {
  text: string;
  /** Tokens reported to the client (a stop token is counted but not reported). */
  tokens: SampledToken[];
  /** Offset of each reported token's text within `text` (clamped to its length). */
  offsets: number[];
  finishReason: FinishReason;
  /** Tokens sampled, the stop token included. */
  completionTokens: number;
}

/** Streaming callbacks of a generation: text as it becomes safe to show, with the tokens behind it. */
export interface StreamHooks {
  onDelta(sample: number, text: string, tokens: SampledToken[], offsets: number[]): void;
  onFinish(
    sample: number,
    text: string,
    tokens: SampledToken[],
    offsets: number[],
    reason: FinishReason,
  ): void;
}

/** The request fields that pick sampling settings. */
export interface SamplingFields {
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
}

/** Sampling settings of a request: OpenAI's defaults, top_p 0 as greedy, top_k -1 or 0 as off. */
export function samplingSettings(body: SamplingFields): SamplingSettings {
  const topP = body.top_p ?? 1;
  const topK = body.top_k === undefined || body.top_k === null || body.top_k < 0 ? 0 : body.top_k;
  return {
    temperature: body.temperature ?? 1,
    // The limit of nucleus sampling as p -> 0 keeps only the most likely token.
    topP: topP === 0 ? 1 : topP,
    topK: topP === 0 ? 1 : topK,
  };
}

/** An empty output, for requests that sample nothing (max_tokens 0). */
export function emptyOutput(): ChoiceOutput {
  return { text: "", tokens: [], offsets: [], finishReason: "length", completionTokens: 0 };
}

/** Shared state and helpers of the endpoint handlers. */
export class ServeContext {
  /** Unix seconds the server started (the models' `created`). */
  readonly created = Math.floor(Date.now() / 1000);
  readonly contextLength: number;
  readonly vocabSize: number;
  /** Whether chat prompts can be encoded: a template of the model's own, or the ChatML tokens. */
  readonly chatReady: boolean;
  /** Ids that end a sample: the chat format's stop ids and the config's eos_token_id. */
  readonly stopIds: ReadonlySet<number>;
  private readonly seedStream: Rng;

  /** `seed` numbers the requests that carry no seed. */
  constructor(
    readonly modelName: string,
    readonly tokenizer: BpeTokenizer,
    config: LlamaConfig,
    readonly scheduler: BatchScheduler,
    readonly maxBatch: number,
    seed: number,
    private readonly tokenizePool: TokenizePool,
  ) {
    this.contextLength = config.max_position_embeddings;
    this.vocabSize = config.vocab_size;
    this.chatReady =
      (tokenizer.chat !== undefined && !tokenizer.chat.isBuiltinChatML) ||
      (tokenizer.hasSpecial("<|im_start|>") && tokenizer.hasSpecial("<|im_end|>"));
    // The chat format's end-of-turn ids (the model's own, or ChatML's <|im_end|> and <|endoftext|>).
    const stopIds = new Set<number>(chatStopIds(tokenizer));
    const eos = config.eos_token_id;
    for (const id of eos === null || eos === undefined ? [] : Array.isArray(eos) ? eos : [eos])
      if (id >= 0 && id < this.vocabSize) stopIds.add(id);
    this.stopIds = stopIds;
    this.seedStream = new Rng(seed);
  }

  /** The model object of /v1/models. */
  modelCard(): { id: string; object: "model"; created: number; owned_by: string } {
    return { id: this.modelName, object: "model", created: this.created, owned_by: "selfsteer" };
  }

  /** 404 model_not_found unless `name` is the served model. */
  checkModel(name: string): void {
    if (name !== this.modelName)
      throw new HttpError(
        404,
        `The model '${name}' does not exist; this server serves '${this.modelName}'`,
        "invalid_request_error",
        "model",
        "model_not_found",
      );
  }

  /** 400 on `n` when a request wants more samples than the server decodes at once. */
  checkSamples(n: number): void {
    if (n > this.maxBatch)
      throw invalidRequest(
        `n: at most ${this.maxBatch} samples per request on this server (--max-batch)`,
        "n",
      );
  }

  /** 400 context_length_exceeded when prompt + completion do not fit, naming the part to shorten. */
  checkContext(promptTokens: number, maxTokens: number, promptParam: string, maxParam: string): void {
    if (promptTokens + maxTokens <= this.contextLength) return;
    const tooLongPrompt = promptTokens >= this.contextLength;
    throw invalidRequest(
      `This model's maximum context length is ${this.contextLength} tokens. However, you requested ` +
        `${promptTokens + maxTokens} tokens (${promptTokens} in the ${promptParam}, ${maxTokens} in the completion). ` +
        `Please reduce the length of the ${tooLongPrompt ? promptParam : maxParam}.`,
      tooLongPrompt ? promptParam : maxParam,
      "context_length_exceeded",
    );
  }

  /**
   * A prompt's ids, tokenized off the event loop when long (see tokenize-pool.ts); turn them into an
   * array (GenerationSpec.prompt) only once checkContext has passed.
   */
  tokenize(pieces: readonly PromptPiece[], signal: AbortSignal): Promise<Int32Array> {
    return this.tokenizePool.encode(pieces, signal);
  }

  /**
   * Seeds of `count` samples: base + first, base + first + 1, ..., where base is the request's seed
   * or, without one, the next number of the server's seed stream.
   */
  seedsFor(seed: number | null | undefined, count: number, first: number): number[] {
    const base = seed ?? this.seedStream.int(2 ** 31);
    return Array.from({ length: count }, (_, k) => base + first + k);
  }

  /**
   * Queues one prompt's samples (throwing QueueFullError at once when the queue is full) and returns
   * a promise of their outputs, rejected on engine failure or with ClientGone when `signal` aborts.
   */
  generate(spec: GenerationSpec, signal: AbortSignal, hooks?: StreamHooks): Promise<ChoiceOutput[]> {
    let resolveAll: (outputs: ChoiceOutput[]) => void = () => {};
    let rejectAll: (error: Error) => void = () => {};
    const done = new Promise<ChoiceOutput[]>((resolve, reject) => {
      resolveAll = resolve;
      rejectAll = reject;
    });
    const outputs = spec.seeds.map(emptyOutput);
    // Tokens not yet handed to a stream chunk, with their offsets.
    const pending = spec.seeds.map(() => ({ tokens: [] as SampledToken[], offsets: [] as number[] }));
    let open = spec.seeds.length;
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      fn();
    };
    const stopIds = spec.ignoreEos ? new Set<number>() : this.stopIds;
    const samples = spec.seeds.map((seed, k) => {
      const text = new IncrementalText(this.tokenizer, spec.stops);
      const out = outputs[k];
      return {
        seed,
        onToken(token: SampledToken): boolean {
          out.completionTokens++;
          if (stopIds.has(token.id)) return false;
          if (text.stopped) return true;
          const offset = text.length;
          out.tokens.push(token);
          out.offsets.push(offset);
          pending[k].tokens.push(token);
          pending[k].offsets.push(offset);
          const delta = text.push(token.id);
          if (hooks && delta !== "") {
            hooks.onDelta(k, delta, pending[k].tokens, pending[k].offsets);
            pending[k] = { tokens: [], offsets: [] };
          }
          return text.stopped;
        },
        onFinish(reason: FinishReason): void {
          const rest = text.finish();
          out.text = text.shown;
          out.finishReason = reason;
          out.offsets = out.offsets.map((o) => Math.min(o, out.text.length));
          if (!settled) hooks?.onFinish(k, rest, pending[k].tokens, pending[k].offsets, reason);
          open--;
          if (open === 0) settle(() => resolveAll(outputs));
        },
      };
    });
    const handle = this.scheduler.submit({
      prompt: spec.prompt,
      maxTokens: spec.maxTokens,
      settings: spec.settings,
      stopIds,
      topLogprobs: spec.topLogprobs,
      samples,
      onError: (error) => settle(() => rejectAll(error)),
    });
    const onAbort = () => {
      handle.cancel();
      settle(() => rejectAll(new ClientGone("client disconnected")));
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    return done;
  }
}
