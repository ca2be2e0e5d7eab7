/**
 * Request checks that run before any expensive work (tokenizing, queueing), kept apart from prompt
 * rendering: conversations a chat prompt cannot be built from, prompts that cannot fit the context
 * whatever they tokenize to, and completions requests with more prompts than the queue can ever hold.
 */
import type { BpeTokenizer } from "../engine/tokenizer.js";
import type { ServeContext } from "./context.js";
import { invalidRequest } from "./protocol.js";
import { tokenBytesOrEmpty } from "./text.js";

const longestTokenCache = new WeakMap<BpeTokenizer, number>();

/** The most UTF-8 bytes any one token stands for (its decoded bytes, or an added token's text). */
export function longestTokenBytes(tokenizer: BpeTokenizer): number {
  const cached = longestTokenCache.get(tokenizer);
  if (cached !== undefined) return cached;
  let longest = 1;
  for (let id = 0; id < tokenizer.vocabSize; id++)
    longest = Math.max(longest, tokenBytesOrEmpty(tokenizer, id).length);
  for (const added of tokenizer.addedTokens) longest = Math.max(longest, Buffer.byteLength(added.content));
  longestTokenCache.set(tokenizer, longest);
  return longest;
}

/**
 * A lower bound on the tokens of a text of `bytes` UTF-8 bytes: no token covers more than the longest
 * token's bytes. Halved once more so that normalisers which shorten text (rare) cannot make it wrong.
 */
export function minTokensFor(tokenizer: BpeTokenizer, bytes: number): number {
  return Math.ceil(bytes / (2 * longestTokenBytes(tokenizer)));
}

/**
 * 400 context_length_exceeded, before tokenizing, when a prompt cannot fit the context whatever it
 * tokenizes to: text by its byte length, token ids by their count. Tokenizing a multi-megabyte prompt
 * would otherwise hold the event loop (every other request waits) and the memory of its pieces.
 */
export function checkPromptSize(ctx: ServeContext, prompt: string | readonly number[], param: string): void {
  const tokens =
    typeof prompt === "string" ? minTokensFor(ctx.tokenizer, Buffer.byteLength(prompt)) : prompt.length;
  if (tokens <= ctx.contextLength) return;
  throw invalidRequest(
    `This model's maximum context length is ${ctx.contextLength} tokens. However, the ${param} alone is ${
      typeof prompt === "string"
        ? `at least ${tokens} tokens (${Buffer.byteLength(prompt)} bytes)`
        : `${tokens} tokens`
    }. Please reduce the length of the ${param}.`,
    param,
    "context_length_exceeded",
  );
}

/**
 * 400 naming the limit when a request queues more samples than the server's queue can ever hold (it
 * would otherwise get 429 "retry shortly" forever). One prompt always fits: an empty queue takes any job.
 */
export function checkQueueFit(ctx: ServeContext, prompts: number, n: number): void {
  const maxQueue = ctx.scheduler.options.maxQueue;
  if (prompts <= 1 || prompts * n <= maxQueue) return;
  throw invalidRequest(
    `prompt: ${prompts} prompts x n ${n} = ${prompts * n} samples exceed this server's queue of ${maxQueue} samples (--max-queue); send at most ${Math.max(1, Math.floor(maxQueue / n))} prompts per request`,
    "prompt",
    "too_many_prompts",
  );
}

/** The parts of a chat message these checks read. */
export interface MessageShape {
  role: string;
  content?: string | readonly { text: string }[] | null | undefined;
}

/**
 * 400 naming the field for conversations no prompt should be built from: a system, developer or user
 * message without content, or no message other than the assistant's (nothing to answer). Also bounds
 * the total text before the chat template renders it (see checkPromptSize).
 */
export function checkChatMessages(ctx: ServeContext, messages: readonly MessageShape[]): void {
  let bytes = 0;
  messages.forEach((m, i) => {
    if ((m.content === null || m.content === undefined) && m.role !== "assistant")
      throw invalidRequest(
        `messages[${i}].content: a ${m.role} message needs content (a string or an array of text parts)`,
        `messages[${i}].content`,
      );
    if (typeof m.content === "string") bytes += Buffer.byteLength(m.content);
    else if (Array.isArray(m.content)) for (const part of m.content) bytes += Buffer.byteLength(part.text);
  });
  if (messages.every((m) => m.role === "assistant"))
    throw invalidRequest(
      "messages: the conversation has only assistant messages; it needs a user (or system) message to answer",
      "messages",
    );
  const tokens = minTokensFor(ctx.tokenizer, bytes);
  if (tokens > ctx.contextLength)
    throw invalidRequest(
      `This model's maximum context length is ${ctx.contextLength} tokens. However, the messages alone are at least ${tokens} tokens (${bytes} bytes of content). Please reduce the length of the messages.`,
      "messages",
      "context_length_exceeded",
    );
}

/**
 * Bounds a completions body's `prompt` arrays before schema validation, which costs time per element
 * (a 4 MB body holds a million token ids): a flat list of ids longer than the context, a nested one
 * with a list longer than the context, or more prompts than the queue can take is refused at once.
 */
export function precheckCompletionBody(ctx: ServeContext, raw: unknown): void {
  precheckStop(raw);
  const prompt = raw !== null && typeof raw === "object" ? (raw as { prompt?: unknown }).prompt : undefined;
  if (!Array.isArray(prompt) || prompt.length === 0) return;
  if (typeof prompt[0] === "number") {
    checkPromptSize(ctx, prompt as number[], "prompt");
    return;
  }
  checkQueueFit(ctx, prompt.length, 1);
  prompt.forEach((p, i) => {
    if (Array.isArray(p)) checkPromptSize(ctx, p as number[], `prompt[${i}]`);
  });
}

/**
 * Bounds a chat body's `messages` before schema validation: every message costs at least one token,
 * so more messages than the context holds can never fit; content parts are held to the same count.
 */
export function precheckChatBody(ctx: ServeContext, raw: unknown): void {
  precheckStop(raw);
  const messages =
    raw !== null && typeof raw === "object" ? (raw as { messages?: unknown }).messages : undefined;
  if (!Array.isArray(messages)) return;
  if (messages.length > ctx.contextLength)
    throw invalidRequest(
      `This model's maximum context length is ${ctx.contextLength} tokens. However, the request has ${messages.length} messages, each at least one token. Please send fewer messages.`,
      "messages",
      "context_length_exceeded",
    );
  let parts = 0;
  for (const m of messages) {
    const content = m !== null && typeof m === "object" ? (m as { content?: unknown }).content : undefined;
    if (Array.isArray(content)) parts += content.length;
  }
  if (parts > ctx.contextLength)
    throw invalidRequest(
      `messages: ${parts} content parts in all; at most ${ctx.contextLength} (the context length) are accepted`,
      "messages",
    );
}

/** The schema's limit of 16 stop strings, checked before it validates every element. */
function precheckStop(raw: unknown): void {
  const stop = raw !== null && typeof raw === "object" ? (raw as { stop?: unknown }).stop : undefined;
  if (Array.isArray(stop) && stop.length > 16)
    throw invalidRequest("stop: expected at most 16 stop strings", "stop");
}
