/**
 * The Policy interface: what the SSO pipeline needs from a language model to build data. Backends:
 * `openai.ts` (any OpenAI-compatible HTTP server) and `local.ts` (our own engine).
 */

/** One chat message. */
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** One generation request: a conversation and sampling settings. */
export interface GenerateRequest {
  messages: ChatMessage[];
  temperature: number;
  topP: number;
  maxTokens: number;
  /** Number of samples for this conversation (default 1). */
  n?: number;
  /** Seed for this request; the same seed gives the same text where the backend supports it. */
  seed?: number;
  /** Extra stop strings. */
  stop?: string[];
}

/** One sampled completion. */
export interface Generation {
  text: string;
  /** "stop": ended by a stop token or string; "length": hit maxTokens (possibly truncated). */
  finishReason: "stop" | "length";
}

/** Token usage tallied over calls. */
export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
  requests: number;
}

/** A model that can be sampled from. */
export interface Policy {
  /** A short name for logs and reports. */
  readonly name: string;
  /** Samples `n` completions for each request, in request order. Backends batch or run concurrently. */
  generate(requests: GenerateRequest[]): Promise<Generation[][]>;
  /** Token usage so far. */
  usage(): TokenUsage;
}
