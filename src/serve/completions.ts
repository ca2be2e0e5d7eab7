/**
 * POST /v1/completions: raw prompts (text, or token ids, one or several), n samples each, the legacy
 * logprobs block (tokens, token_logprobs, top_logprobs, text_offset), and echo. With echo and
 * logprobs the prompt's own tokens are scored by the engine's forward pass (the first one null, as
 * OpenAI and vLLM do), so `echo + logprobs + max_tokens 0` scores a given text. Choice i*n + k is
 * sample k of prompt i.
 */
import { setMaxListeners } from "node:events";
import type { ServerResponse } from "node:http";
import {
  type ChoiceOutput,
  emptyOutput,
  type GenerationSpec,
  type ServeContext,
  type StreamHooks,
  samplingSettings,
} from "./context.js";
import { requestId, sendJson, startEventStream, usageOf, writeEvent } from "./http.js";
import { checkPromptSize, checkQueueFit, precheckCompletionBody } from "./limits.js";
import {
  type CompletionRequest,
  CompletionRequestSchema,
  invalidRequest,
  parseBody,
  stopList,
} from "./protocol.js";
import type { SampledToken, ScoreResult, TokenLogprob } from "./scheduler.js";
import { tokenBytesOrEmpty, tokenText } from "./text.js";

/** One prompt of a request: its ids, its text (echoed) and the field that names it in errors. */
interface PromptInput {
  ids: number[];
  text: string;
  param: string;
}

/** An echoed prompt with its scores. */
interface ScoredPrompt {
  ids: number[];
  scored: ScoreResult;
  /** Character offset of each prompt token within the prompt's text. */
  offsets: number[];
}

/** How many prompts a request's `prompt` field holds. */
function promptCount(prompt: CompletionRequest["prompt"]): number {
  return typeof prompt === "string" || typeof prompt[0] === "number" ? 1 : prompt.length;
}

/**
 * The prompts of a request as ids, checked against the vocabulary and, with `maxTokens` more, the
 * context. Every check that needs no tokenizing runs first, in prompt order; then the texts are
 * tokenized (long ones off the event loop, all of the request's at once).
 */
async function promptInputs(
  ctx: ServeContext,
  prompt: CompletionRequest["prompt"],
  maxTokens: number,
  signal: AbortSignal,
): Promise<PromptInput[]> {
  const nested = Array.isArray(prompt) && Array.isArray(prompt[0]);
  const list: (string | number[])[] =
    typeof prompt === "string"
      ? [prompt]
      : typeof prompt[0] === "number"
        ? [prompt as number[]]
        : (prompt as (string | number[])[]);
  const single = typeof prompt === "string" || typeof prompt[0] === "number";
  const params = list.map((_, i) => (single ? "prompt" : `prompt[${i}]`));
  const empty = (param: string) =>
    invalidRequest(`${param}: is empty; a prompt needs at least one token`, param);
  list.forEach((p, i) => {
    checkPromptSize(ctx, p, params[i]);
    if (p.length === 0) throw empty(params[i]);
    if (typeof p === "string") return;
    p.forEach((id, t) => {
      if (id >= ctx.vocabSize) {
        const where = nested ? `prompt[${i}][${t}]` : `prompt[${t}]`;
        throw invalidRequest(
          `${where}: token id ${id} is outside the vocabulary [0, ${ctx.vocabSize})`,
          where,
        );
      }
    });
  });
  const inputs = await Promise.all(
    list.map(async (p, i) =>
      typeof p === "string"
        ? { ids: await ctx.tokenize([{ text: p }], signal), text: p, param: params[i] }
        : { ids: p, text: ctx.tokenizer.decode(p), param: params[i] },
    ),
  );
  // A normalizer can leave nothing of a text.
  for (const input of inputs) if (input.ids.length === 0) throw empty(input.param);
  for (const input of inputs) ctx.checkContext(input.ids.length, maxTokens, input.param, "max_tokens");
  return inputs.map((input) => ({ ...input, ids: Array.from(input.ids) }));
}

/** Character offset of each token within the decoded text of `ids`. */
function textOffsets(ctx: ServeContext, ids: number[]): number[] {
  const decoder = new TextDecoder("utf-8");
  const offsets: number[] = [];
  let length = 0;
  for (const id of ids) {
    offsets.push(length);
    length += decoder.decode(tokenBytesOrEmpty(ctx.tokenizer, id), { stream: true }).length;
  }
  return offsets;
}

/** The legacy logprobs block: echoed prompt tokens first (if any), then sampled ones `shift` chars on. */
function legacyLogprobs(
  ctx: ServeContext,
  prompt: ScoredPrompt | null,
  tokens: SampledToken[],
  offsets: number[],
  shift: number,
) {
  const block = {
    tokens: [] as string[],
    token_logprobs: [] as (number | null)[],
    top_logprobs: [] as (Record<string, number> | null)[],
    text_offset: [] as number[],
  };
  const topDict = (top: TokenLogprob[]) => {
    const dict: Record<string, number> = {};
    for (const t of top) {
      const key = tokenText(ctx.tokenizer, t.id);
      if (!(key in dict)) dict[key] = t.logprob;
    }
    return dict;
  };
  if (prompt !== null)
    prompt.ids.forEach((id, t) => {
      block.tokens.push(tokenText(ctx.tokenizer, id));
      block.token_logprobs.push(t === 0 ? null : prompt.scored.logprobs[t]);
      block.top_logprobs.push(t === 0 ? null : topDict(prompt.scored.top[t]));
      block.text_offset.push(prompt.offsets[t]);
    });
  tokens.forEach((token, i) => {
    block.tokens.push(tokenText(ctx.tokenizer, token.id));
    block.token_logprobs.push(token.logprob);
    block.top_logprobs.push(topDict(token.top));
    block.text_offset.push(shift + offsets[i]);
  });
  return block;
}

/** Answers one completions request. */
export async function handleCompletions(
  ctx: ServeContext,
  raw: unknown,
  res: ServerResponse,
  signal: AbortSignal,
): Promise<void> {
  precheckCompletionBody(ctx, raw);
  const body = parseBody(CompletionRequestSchema, raw);
  ctx.checkModel(body.model);
  const n = body.n ?? 1;
  ctx.checkSamples(n);
  if (body.best_of !== null && body.best_of !== undefined && body.best_of !== n)
    throw invalidRequest("best_of: only best_of equal to n is supported by this server", "best_of");
  checkQueueFit(ctx, promptCount(body.prompt), n);
  const maxTokens = body.max_tokens ?? 16;
  const prompts = await promptInputs(ctx, body.prompt, maxTokens, signal);
  const echo = body.echo === true;
  const topK = body.logprobs ?? null;
  const settings = samplingSettings(body);
  const stops = stopList(body.stop);
  const id = requestId("cmpl");
  const created = Math.floor(Date.now() / 1000);
  const promptTokens = prompts.reduce((sum, p) => sum + p.ids.length, 0);
  // One abort for all of the request's prompts: a client gone, or one prompt failing, stops them all.
  const controller = new AbortController();
  // Each prompt listens for the abort (scoring and sampling): many prompts are many listeners, not a leak.
  setMaxListeners(2 * prompts.length + 10, controller.signal);
  const abortAll = () => controller.abort();
  signal.addEventListener("abort", abortAll, { once: true });

  // Echoed prompts with log-probs are scored first, so a stream can open with them.
  const scoredPrompts: (ScoredPrompt | null)[] = await Promise.all(
    prompts.map(async (p) =>
      echo && topK !== null
        ? {
            ids: p.ids,
            scored: await ctx.scheduler.score(p.ids, topK, controller.signal),
            offsets: textOffsets(ctx, p.ids),
          }
        : null,
    ),
  );

  const specFor = (p: PromptInput, i: number): GenerationSpec => ({
    prompt: p.ids,
    maxTokens,
    settings,
    topLogprobs: topK ?? 0,
    stops,
    seeds: ctx.seedsFor(body.seed, n, i * n),
    ignoreEos: body.ignore_eos === true,
  });
  // Every prompt's samples are queued before anything is sent, so a full queue is still a clean 429.
  const submitAll = (hooksFor?: (i: number) => StreamHooks): Promise<ChoiceOutput[][]> => {
    if (maxTokens === 0) return Promise.resolve(prompts.map(() => Array.from({ length: n }, emptyOutput)));
    const runs: Promise<ChoiceOutput[]>[] = [];
    try {
      prompts.forEach((p, i) => {
        const run = ctx.generate(specFor(p, i), controller.signal, hooksFor?.(i));
        run.catch(abortAll);
        runs.push(run);
      });
    } catch (error) {
      abortAll();
      throw error;
    }
    return Promise.all(runs);
  };

  if (body.stream !== true) {
    const results = await submitAll();
    let completion = 0;
    const choices = results.flatMap((outputs, i) =>
      outputs.map((o, k) => {
        completion += o.completionTokens;
        const prefix = echo ? prompts[i].text : "";
        return {
          index: i * n + k,
          text: prefix + o.text,
          logprobs:
            topK === null ? null : legacyLogprobs(ctx, scoredPrompts[i], o.tokens, o.offsets, prefix.length),
          finish_reason: o.finishReason,
        };
      }),
    );
    sendJson(res, 200, {
      id,
      object: "text_completion",
      created,
      model: ctx.modelName,
      system_fingerprint: null,
      choices,
      usage: usageOf(promptTokens, completion),
    });
    return;
  }

  const includeUsage = body.stream_options?.include_usage === true;
  const chunk = (choice: unknown) => ({
    id,
    object: "text_completion",
    created,
    model: ctx.modelName,
    system_fingerprint: null,
    choices: choice === null ? [] : [choice],
    ...(includeUsage ? { usage: null } : {}),
  });
  const hooksFor = (i: number): StreamHooks => {
    const shift = echo ? prompts[i].text.length : 0;
    const logprobs = (tokens: SampledToken[], offsets: number[]) =>
      topK === null || tokens.length === 0 ? null : legacyLogprobs(ctx, null, tokens, offsets, shift);
    return {
      onDelta(k, text, tokens, offsets) {
        writeEvent(
          res,
          chunk({ index: i * n + k, text, logprobs: logprobs(tokens, offsets), finish_reason: null }),
        );
      },
      onFinish(k, text, tokens, offsets, reason) {
        writeEvent(
          res,
          chunk({ index: i * n + k, text, logprobs: logprobs(tokens, offsets), finish_reason: reason }),
        );
      },
    };
  };
  const all = submitAll(hooksFor);
  startEventStream(res);
  if (echo)
    prompts.forEach((p, i) => {
      const scored = scoredPrompts[i];
      for (let k = 0; k < n; k++)
        writeEvent(
          res,
          chunk({
            index: i * n + k,
            text: p.text,
            logprobs: scored === null ? null : legacyLogprobs(ctx, scored, [], [], 0),
            finish_reason: maxTokens === 0 ? "length" : null,
          }),
        );
    });
  const outputs = (await all).flat();
  if (includeUsage) {
    const completion = outputs.reduce((sum, o) => sum + o.completionTokens, 0);
    writeEvent(res, { ...chunk(null), usage: usageOf(promptTokens, completion) });
  }
  writeEvent(res, "[DONE]");
  res.end();
}
