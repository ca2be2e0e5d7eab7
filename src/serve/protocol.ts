/**
 * The OpenAI wire format as this server reads it: zod schemas of the chat-completions and completions
 * request bodies, and OpenAI-style errors ({error: {message, type, param, code}}) that name the field.
 * Fields the server does not know are ignored, as OpenAI-compatible servers do; fields it knows but
 * cannot honour (penalties, logit_bias, tools, suffix) are rejected rather than silently dropped.
 */
import { z } from "zod";
import { formatPath } from "../util/errors.js";

/** An error answered as an HTTP status with an OpenAI-style body. */
export class HttpError extends Error {
  /** `param` names the offending request field (null when none); `code` is a machine-readable reason. */
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpError";
  }

  /** The JSON body OpenAI clients parse. */
  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A 400 invalid_request_error naming `param`. */
export function invalidRequest(message: string, param: string | null, code: string | null = null): HttpError {
  return new HttpError(400, message, "invalid_request_error", param, code);
}

const inRange = (lo: number, hi: number) =>
  z
    .number({ error: `expected a number in [${lo}, ${hi}]` })
    .min(lo, { error: `expected a number in [${lo}, ${hi}]` })
    .max(hi, { error: `expected a number in [${lo}, ${hi}]` });
const integer = (what: string) => z.number({ error: `expected ${what}` }).int({ error: `expected ${what}` });
const penalty = z
  .number({ error: "expected a number" })
  .refine((v) => v === 0, { error: "is not supported by this server (only 0)" })
  .nullish();
const stopField = z
  .union([z.string(), z.array(z.string()).max(16, { error: "expected at most 16 stop strings" })], {
    error: "expected a string or an array of strings",
  })
  .nullish();
const notSupported = (what: string) =>
  z
    .unknown()
    .refine((v) => v === undefined || v === null || (Array.isArray(v) && v.length === 0), {
      error: `${what} are not supported by this server`,
    })
    .optional();

/** Sampling fields shared by both endpoints. */
const samplingFields = {
  model: z.string({ error: "expected the model name (a string)" }).min(1, { error: "must not be empty" }),
  n: integer("an integer").min(1, { error: "expected an integer >= 1" }).nullish(),
  temperature: inRange(0, 2).nullish(),
  top_p: inRange(0, 1).nullish(),
  top_k: integer("an integer")
    .min(-1, { error: "expected -1 (off), 0 (off) or a positive integer" })
    .nullish(),
  stop: stopField,
  seed: integer("an integer").refine(Number.isSafeInteger, { error: "expected a safe integer" }).nullish(),
  stream: z.boolean({ error: "expected true or false" }).nullish(),
  stream_options: z
    .object(
      { include_usage: z.boolean({ error: "expected true or false" }).nullish() },
      { error: "expected an object" },
    )
    .nullish(),
  presence_penalty: penalty,
  frequency_penalty: penalty,
  logit_bias: z
    .record(z.string(), z.unknown(), { error: "expected an object" })
    .refine((v) => Object.keys(v).length === 0, { error: "is not supported by this server" })
    .nullish(),
  user: z.string({ error: "expected a string" }).nullish(),
  /** vLLM's extension: sample past end-of-turn tokens, so every sample has max_tokens tokens. */
  ignore_eos: z.boolean({ error: "expected true or false" }).nullish(),
};

const textPart = z.object(
  {
    type: z.literal("text", { error: 'only "text" content parts are supported' }),
    text: z.string({ error: "expected a string" }),
  },
  { error: "expected a content part object" },
);

const chatMessage = z.object(
  {
    role: z.enum(["system", "developer", "user", "assistant"], {
      error: 'expected "system", "developer", "user" or "assistant"',
    }),
    content: z
      .union([z.string(), z.array(textPart)], { error: "expected a string or an array of text parts" })
      .nullish(),
    name: z.string({ error: "expected a string" }).nullish(),
  },
  { error: "expected a message object" },
);

/** POST /v1/chat/completions. */
export const ChatCompletionRequestSchema = z.object(
  {
    ...samplingFields,
    messages: z
      .array(chatMessage, { error: "expected an array of messages" })
      .min(1, { error: "expected at least one message" }),
    max_tokens: integer("an integer").min(1, { error: "expected an integer >= 1" }).nullish(),
    max_completion_tokens: integer("an integer").min(1, { error: "expected an integer >= 1" }).nullish(),
    logprobs: z.boolean({ error: "expected true or false" }).nullish(),
    top_logprobs: integer("an integer")
      .min(0, { error: "expected an integer in [0, 20]" })
      .max(20, { error: "expected an integer in [0, 20]" })
      .nullish(),
    tools: notSupported("tools"),
    functions: notSupported("functions"),
  },
  { error: "expected a JSON object" },
);

/** A validated chat-completions request. */
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;

const tokenIds = z.array(integer("a token id (integer)").min(0, { error: "expected a token id >= 0" }));

/** POST /v1/completions. */
export const CompletionRequestSchema = z.object(
  {
    ...samplingFields,
    // Token ids before lists of strings: a union tries its options in order, and a long id list that
    // first failed as strings would cost an error object per element.
    prompt: z.union([z.string(), tokenIds.min(1), z.array(z.string()).min(1), z.array(tokenIds).min(1)], {
      error: "expected a string, an array of strings, an array of token ids, or an array of those",
    }),
    max_tokens: integer("an integer").min(0, { error: "expected an integer >= 0" }).nullish(),
    echo: z.boolean({ error: "expected true or false" }).nullish(),
    logprobs: integer("an integer")
      .min(0, { error: "expected an integer in [0, 20]" })
      .max(20, { error: "expected an integer in [0, 20]" })
      .nullish(),
    best_of: integer("an integer").min(1, { error: "expected an integer >= 1" }).nullish(),
    suffix: z
      .string({ error: "expected a string" })
      .refine((s) => s === "", { error: "is not supported by this server" })
      .nullish(),
  },
  { error: "expected a JSON object" },
);

/** A validated completions request. */
export type CompletionRequest = z.infer<typeof CompletionRequestSchema>;

/** Validates a body; the first problem becomes a 400 that names its field. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const param = issue.path.length === 0 ? null : formatPath(issue.path);
  throw invalidRequest(param === null ? issue.message : `${param}: ${issue.message}`, param);
}

/** Stop strings as a list. */
export function stopList(stop: string | string[] | null | undefined): string[] {
  if (stop === null || stop === undefined) return [];
  return typeof stop === "string" ? [stop] : stop;
}
