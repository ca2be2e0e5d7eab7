/**
 * POST /v1/chat/completions: the conversation in ChatML with a generation prompt, n samples with
 * seeds s, s+1, ..., answered as one chat.completion or streamed as chat.completion.chunk events
 * (a role chunk per choice, content deltas, a finish chunk per choice, an optional usage chunk,
 * then [DONE]).
 */
import type { ServerResponse } from "node:http";
import { chatPromptPieces } from "../engine/chat.js";
import { type ChoiceOutput, type ServeContext, type StreamHooks, samplingSettings } from "./context.js";
import { requestId, sendJson, startEventStream, usageOf, writeEvent } from "./http.js";
import { checkChatMessages, precheckChatBody } from "./limits.js";
import { ChatCompletionRequestSchema, invalidRequest, parseBody, stopList } from "./protocol.js";
import type { SampledToken, TokenLogprob } from "./scheduler.js";
import { tokenBytesOrEmpty, tokenText } from "./text.js";

/** One chat logprobs entry: the token's text, log-prob and UTF-8 bytes. */
function logprobEntry(ctx: ServeContext, t: TokenLogprob) {
  return {
    token: tokenText(ctx.tokenizer, t.id),
    logprob: t.logprob,
    bytes: Array.from(tokenBytesOrEmpty(ctx.tokenizer, t.id)),
  };
}

/** The `logprobs` of a chat choice or chunk. */
function chatLogprobs(ctx: ServeContext, tokens: SampledToken[]) {
  return {
    content: tokens.map((t) => ({
      ...logprobEntry(ctx, t),
      top_logprobs: t.top.map((top) => logprobEntry(ctx, top)),
    })),
    refusal: null,
  };
}

function completionTokens(outputs: ChoiceOutput[]): number {
  return outputs.reduce((sum, o) => sum + o.completionTokens, 0);
}

/** Answers one chat-completions request. */
export async function handleChatCompletions(
  ctx: ServeContext,
  raw: unknown,
  res: ServerResponse,
  signal: AbortSignal,
): Promise<void> {
  precheckChatBody(ctx, raw);
  const body = parseBody(ChatCompletionRequestSchema, raw);
  ctx.checkModel(body.model);
  const n = body.n ?? 1;
  ctx.checkSamples(n);
  checkChatMessages(ctx, body.messages);
  if (!ctx.chatReady)
    throw invalidRequest(
      "this model's tokenizer has no <|im_start|>/<|im_end|> tokens, so it has no chat format; use /v1/completions",
      "messages",
    );
  const wantLogprobs = body.logprobs === true;
  if ((body.top_logprobs ?? 0) > 0 && !wantLogprobs)
    throw invalidRequest("top_logprobs: logprobs must be true when top_logprobs is used", "top_logprobs");
  const turns = body.messages.map((m) => ({
    role: m.role === "developer" ? ("system" as const) : m.role,
    content:
      m.content === null || m.content === undefined
        ? ""
        : typeof m.content === "string"
          ? m.content
          : m.content.map((part) => part.text).join(""),
  }));
  // Rendering stays here (cheap); BPE over the rendered text runs on a worker thread when it is long.
  const ids = await ctx.tokenize(
    chatPromptPieces(ctx.tokenizer, turns, { addGenerationPrompt: true }),
    signal,
  );
  const maxParam =
    body.max_completion_tokens !== null && body.max_completion_tokens !== undefined
      ? "max_completion_tokens"
      : "max_tokens";
  // Without a limit a reply may run to the end of the context, as on OpenAI and vLLM.
  const maxTokens =
    body.max_completion_tokens ?? body.max_tokens ?? Math.max(1, ctx.contextLength - ids.length);
  ctx.checkContext(ids.length, maxTokens, "messages", maxParam);
  const prompt = Array.from(ids);
  const spec = {
    prompt,
    maxTokens,
    settings: samplingSettings(body),
    topLogprobs: wantLogprobs ? (body.top_logprobs ?? 0) : 0,
    stops: stopList(body.stop),
    seeds: ctx.seedsFor(body.seed, n, 0),
    ignoreEos: body.ignore_eos === true,
  };
  const id = requestId("chatcmpl");
  const created = Math.floor(Date.now() / 1000);

  if (body.stream !== true) {
    const outputs = await ctx.generate(spec, signal);
    sendJson(res, 200, {
      id,
      object: "chat.completion",
      created,
      model: ctx.modelName,
      system_fingerprint: null,
      choices: outputs.map((o, k) => ({
        index: k,
        message: { role: "assistant", content: o.text, refusal: null },
        logprobs: wantLogprobs ? chatLogprobs(ctx, o.tokens) : null,
        finish_reason: o.finishReason,
      })),
      usage: usageOf(prompt.length, completionTokens(outputs)),
    });
    return;
  }

  const includeUsage = body.stream_options?.include_usage === true;
  const chunk = (choices: unknown[]) => ({
    id,
    object: "chat.completion.chunk",
    created,
    model: ctx.modelName,
    system_fingerprint: null,
    choices,
    ...(includeUsage ? { usage: null } : {}),
  });
  const hooks: StreamHooks = {
    onDelta(k, text, tokens) {
      const logprobs = wantLogprobs ? chatLogprobs(ctx, tokens) : null;
      writeEvent(res, chunk([{ index: k, delta: { content: text }, logprobs, finish_reason: null }]));
    },
    onFinish(k, text, tokens, _offsets, reason) {
      const logprobs = wantLogprobs && tokens.length > 0 ? chatLogprobs(ctx, tokens) : null;
      const delta = text === "" ? {} : { content: text };
      writeEvent(res, chunk([{ index: k, delta, logprobs, finish_reason: reason }]));
    },
  };
  // Queued before the stream starts, so a full queue is still answered with its own status (429).
  const done = ctx.generate(spec, signal, hooks);
  startEventStream(res);
  for (let k = 0; k < n; k++)
    writeEvent(
      res,
      chunk([{ index: k, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]),
    );
  const outputs = await done;
  if (includeUsage)
    writeEvent(res, { ...chunk([]), usage: usageOf(prompt.length, completionTokens(outputs)) });
  writeEvent(res, "[DONE]");
  res.end();
}
