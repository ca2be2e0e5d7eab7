/**
 * A model directory's own chat format: its Jinja `chat_template` (tokenizer_config.json, or
 * chat_template.jinja / chat_template.json beside it) rendered with @huggingface/jinja, the renderer
 * transformers.js uses, and the ids where its turns end (generation_config.json `eos_token_id`, else
 * config.json's, plus the tokenizer's eos_token). Checkpoints without a template, or with exactly our
 * CHATML_TEMPLATE, keep the built-in ChatML encoding of chat.ts unchanged.
 *
 * Encoding follows HF's apply_chat_template(tokenize=True): the whole rendered text is tokenized at
 * once (no BOS/EOS added beyond what the template writes). Two deliberate differences: an empty system
 * message means "no system message" (dropped before rendering, as in ChatML), and special-token text
 * inside message contents stays plain text whenever the contents can be located in the rendering.
 *
 * Which tokens a training loss covers is derived by rendering incrementally: for assistant message i,
 * the prompt P = render(messages[..i], add_generation_prompt) and the rendering T = render(messages[..=i])
 * must be prefixes of the whole text; the learned tokens run from where the tokens of P stop matching
 * the whole to the end of the last end-of-turn token inside T after P: what the model generates after
 * the prompt, its own stop token included, and nothing the template appends after it.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { UserError } from "../util/errors.js";
import {
  CHATML_TEMPLATE,
  type ChatOptions,
  type ChatTurn,
  chatMLPieces,
  type EncodedChat,
  encodeChatML,
  type PromptPiece,
  renderChat,
} from "./chat.js";
import type { BpeTokenizer } from "./tokenizer.js";

/** Where a checkpoint's chat settings come from (file names inside the directory). */
export const CHAT_FILES = {
  tokenizerConfig: "tokenizer_config.json",
  generationConfig: "generation_config.json",
  templateJinja: "chat_template.jinja",
  templateJson: "chat_template.json",
} as const;

/** What a ChatFormat is built from; every field optional (absent: the built-in ChatML). */
export interface ChatFormatSources {
  /** Parsed tokenizer_config.json and the path it came from (for error messages). */
  tokenizerConfig?: unknown;
  tokenizerConfigPath?: string;
  /** A template found outside tokenizer_config.json (chat_template.jinja / .json) and its source. */
  template?: { text: string; source: string };
  /** Parsed generation_config.json and its path. */
  generationConfig?: unknown;
  generationConfigPath?: string;
  /** config.json's eos_token_id, used when there is no generation_config.json eos_token_id. */
  configEosTokenId?: number | number[] | null;
}

// Private-use code points that stand in for message contents to locate them in a rendering.
const SENTINEL_MARK = String.fromCodePoint(0x10fffd);
const sentinel = (i: number): string =>
  `${SENTINEL_MARK}${String.fromCodePoint(0xf0000 + i)}${SENTINEL_MARK}`;

/** A token given in tokenizer_config.json as a string or an AddedToken object {content}. */
function tokenText(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (
    value !== null &&
    typeof value === "object" &&
    typeof (value as { content?: unknown }).content === "string"
  )
    return (value as { content: string }).content;
  return null;
}

/** eos_token_id as int, list of ints, or null; a UserError naming `where` otherwise. */
function eosIds(value: unknown, where: string): number[] {
  if (value === null || value === undefined) return [];
  // A copy: callers append to it, and the parsed file is kept to be saved again.
  const list = Array.isArray(value) ? [...value] : [value];
  for (const id of list)
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0)
      throw new UserError(
        `${where}: expected a token id or a list of token ids, got ${JSON.stringify(value)}`,
      );
  return list as number[];
}

/** The chat format of one tokenizer: how conversations become ids, and which ids end a turn. */
export class ChatFormat {
  /** The Jinja template text, or null for the built-in ChatML. */
  readonly template: string | null;
  /** "FILE: field chat_template", named in errors. */
  readonly templateSource: string;
  /** Ids that end a generated turn, in a stable order. */
  readonly stopIds: readonly number[];
  /** The id of tokenizer_config.json's eos_token, when it names one. */
  readonly eosTokenId: number | null;
  /** The tokenizer_config.json this format came from, kept so a saved checkpoint keeps its template. */
  readonly tokenizerConfig: Record<string, unknown> | undefined;
  /** The generation_config.json this format came from, kept so a saved checkpoint keeps its stops. */
  readonly generationConfig: Record<string, unknown> | undefined;
  private readonly compiled: Template | null;
  private readonly specialValues: Record<string, string>;

  private constructor(
    private readonly tokenizer: BpeTokenizer,
    init: {
      template: string | null;
      templateSource: string;
      stopIds: number[];
      eosTokenId?: number | null;
      tokenizerConfig?: Record<string, unknown>;
      generationConfig?: Record<string, unknown>;
      specialValues: Record<string, string>;
    },
  ) {
    this.template = init.template;
    this.templateSource = init.templateSource;
    this.stopIds = init.stopIds;
    this.eosTokenId = init.eosTokenId ?? null;
    this.tokenizerConfig = init.tokenizerConfig;
    this.generationConfig = init.generationConfig;
    this.specialValues = init.specialValues;
    this.compiled = null;
    if (init.template !== null) {
      try {
        this.compiled = new Template(init.template);
      } catch (err) {
        throw new UserError(`${init.templateSource}: cannot parse the template (${(err as Error).message})`);
      }
      // Render a one-message conversation now, so a template asking for what the renderer lacks
      // fails at load, before any work starts.
      this.render([{ role: "user", content: "Hello" }], { addGenerationPrompt: true });
    }
  }

  /** The built-in ChatML format; stops at <|im_end|> and <|endoftext|> where the tokenizer has them. */
  static chatML(
    tokenizer: BpeTokenizer,
    extraStopIds: readonly number[] = [],
    eosTokenId: number | null = null,
    generationConfig?: Record<string, unknown>,
  ): ChatFormat {
    const stops: number[] = [];
    for (const token of ["<|im_end|>", "<|endoftext|>"])
      if (tokenizer.hasSpecial(token)) stops.push(tokenizer.specialId(token));
    for (const id of extraStopIds) if (!stops.includes(id)) stops.push(id);
    return new ChatFormat(tokenizer, {
      template: null,
      templateSource: "built-in ChatML",
      stopIds: stops,
      eosTokenId,
      ...(generationConfig === undefined ? {} : { generationConfig }),
      specialValues: {},
    });
  }

  /** Builds the format from what a model directory holds (see ChatFormatSources). */
  static fromSources(tokenizer: BpeTokenizer, sources: ChatFormatSources): ChatFormat {
    const configPath = sources.tokenizerConfigPath ?? CHAT_FILES.tokenizerConfig;
    const raw = sources.tokenizerConfig;
    if (raw !== undefined && (raw === null || typeof raw !== "object" || Array.isArray(raw)))
      throw new UserError(`${configPath}: expected a JSON object`);
    const config = raw as Record<string, unknown> | undefined;

    let template: string | null = null;
    let templateSource = `${configPath}: field chat_template`;
    const field = config?.chat_template;
    if (typeof field === "string") template = field;
    else if (Array.isArray(field)) template = pickNamedTemplate(field, templateSource);
    else if (field !== undefined && field !== null)
      throw new UserError(`${templateSource}: expected a string or a list of {name, template}`);
    else if (sources.template !== undefined) {
      template = sources.template.text;
      templateSource = sources.template.source;
    }
    if (template === CHATML_TEMPLATE) template = null;

    const specialValues: Record<string, string> = {};
    for (const name of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
      const value = config?.[name];
      if (value === undefined || value === null) continue;
      const text = tokenText(value);
      if (text === null)
        throw new UserError(`${configPath}: field ${name}: expected a string or {content: string}`);
      specialValues[name] = text;
    }

    // generation_config.json's eos_token_id wins over config.json's, as in HF generate().
    const genPath = sources.generationConfigPath ?? CHAT_FILES.generationConfig;
    const gen = sources.generationConfig;
    if (gen !== undefined && (gen === null || typeof gen !== "object" || Array.isArray(gen)))
      throw new UserError(`${genPath}: expected a JSON object`);
    const genEos = (gen as Record<string, unknown> | undefined)?.eos_token_id;
    const modelStops =
      genEos !== undefined && genEos !== null
        ? eosIds(genEos, `${genPath}: field eos_token_id`)
        : eosIds(sources.configEosTokenId, "config.json: field eos_token_id");
    const eosToken = specialValues.eos_token;
    let eosTokenId: number | null = null;
    if (eosToken !== undefined) {
      const id = tokenizer.tokenToId(eosToken);
      if (id === undefined)
        throw new UserError(
          `${configPath}: field eos_token: ${JSON.stringify(eosToken)} is not a token of the tokenizer`,
        );
      modelStops.push(id);
      eosTokenId = id;
    }
    const generationConfig = gen as Record<string, unknown> | undefined;
    if (template === null) return ChatFormat.chatML(tokenizer, modelStops, eosTokenId, generationConfig);
    const stopIds: number[] = [];
    for (const id of modelStops) if (!stopIds.includes(id)) stopIds.push(id);
    if (stopIds.length === 0)
      throw new UserError(
        `${configPath}: no end-of-turn token: neither eos_token here nor eos_token_id in ${genPath} or config.json`,
      );
    return new ChatFormat(tokenizer, {
      template,
      templateSource,
      stopIds,
      eosTokenId,
      ...(config === undefined ? {} : { tokenizerConfig: config }),
      ...(generationConfig === undefined ? {} : { generationConfig }),
      specialValues,
    });
  }

  /** Whether this is the built-in ChatML (encoded by chat.ts, contents encoded one by one). */
  get isBuiltinChatML(): boolean {
    return this.compiled === null;
  }

  /** The text of a conversation as the template renders it (empty system messages dropped). */
  render(messages: readonly ChatTurn[], options: ChatOptions = {}): string {
    if (this.compiled === null) return renderChat(messages, options);
    return this.renderKept(dropEmptySystem(messages), options.addGenerationPrompt === true);
  }

  /** Ids of a conversation and the mask of the tokens a model learns (assistant turns). */
  encode(messages: readonly ChatTurn[], options: ChatOptions = {}): EncodedChat {
    if (this.compiled === null) return encodeChatML(this.tokenizer, messages, options);
    const kept = dropEmptySystem(messages);
    const full = this.renderKept(kept, options.addGenerationPrompt === true);
    const plain = this.contentRanges(kept, options.addGenerationPrompt === true, full);
    const ids = this.encodePrefix(full, full.length, plain);
    const responseMask: number[] = new Array(ids.length).fill(0);
    kept.forEach((m, i) => {
      if (m.role !== "assistant") return;
      const prompt = this.renderKept(kept.slice(0, i), true);
      const cannot = (why: string) =>
        new UserError(
          `${this.templateSource}: ${why} (message ${i}), so its assistant tokens cannot be located for training`,
        );
      let startChar = prompt.length;
      if (!full.startsWith(prompt)) {
        // A generation prompt that opens more than a finished turn shows (a template that starts a
        // reasoning block there): the reply starts where the two part, if that is after the turns
        // before it.
        const before = this.renderKept(kept.slice(0, i), false);
        startChar = commonTextPrefix(prompt, full);
        if (!full.startsWith(before) || startChar < before.length)
          throw cannot(
            "the template does not render a conversation's prompt as a prefix of the conversation",
          );
      }
      const last = i === kept.length - 1 && options.addGenerationPrompt !== true;
      const through = last ? full : this.renderKept(kept.slice(0, i + 1), false);
      let endChar: number;
      if (through.length >= startChar && full.startsWith(through)) {
        const stops = this.stopEnds(full, startChar, through.length, plain);
        endChar = stops.length > 0 ? stops[stops.length - 1] : through.length;
      } else {
        // The turn renders differently once more messages follow (Qwen3 drops the empty reasoning
        // block of earlier turns): it ends at the first end-of-turn token the template wrote.
        const stops = this.stopEnds(full, startChar, full.length, plain);
        if (stops.length === 0) throw cannot("no end-of-turn token follows the assistant turn");
        endChar = stops[0];
      }
      const start = commonPrefix(this.encodePrefix(full, startChar, plain), ids);
      const end = commonPrefix(this.encodePrefix(full, endChar, plain), ids);
      for (let t = start; t < end; t++) responseMask[t] = 1;
    });
    return { ids, responseMask };
  }

  /**
   * The conversation rendered but not tokenized: encodePieces of the result equals encode(...).ids.
   * With a template that is one text (added tokens not matched inside message contents).
   */
  promptPieces(messages: readonly ChatTurn[], options: ChatOptions = {}): PromptPiece[] {
    if (this.compiled === null) return chatMLPieces(this.tokenizer, messages, options);
    const kept = dropEmptySystem(messages);
    const full = this.renderKept(kept, options.addGenerationPrompt === true);
    const plain = this.contentRanges(kept, options.addGenerationPrompt === true, full);
    return [{ text: full, options: { plainRanges: plain } }];
  }

  private renderKept(messages: readonly ChatTurn[], addGenerationPrompt: boolean): string {
    const compiled = this.compiled as Template;
    try {
      return compiled.render({
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: addGenerationPrompt,
        ...this.specialValues,
      });
    } catch (err) {
      throw new UserError(`${this.templateSource}: cannot render (${(err as Error).message})`);
    }
  }

  /** Tokens of text[0, limit), with added tokens not matched inside message contents. */
  private encodePrefix(text: string, limit: number, plain: readonly (readonly [number, number])[]): number[] {
    const clipped = plain.filter(([s]) => s < limit).map(([s, e]) => [s, Math.min(e, limit)] as const);
    return this.tokenizer.encode(text.slice(0, limit), { plainRanges: clipped });
  }

  /**
   * Where the end-of-turn tokens the template wrote in text[from, to) end, in order (occurrences
   * inside message contents are text, not turn ends).
   */
  private stopEnds(
    text: string,
    from: number,
    to: number,
    plain: readonly (readonly [number, number])[],
  ): number[] {
    const ends: number[] = [];
    for (const id of this.stopIds) {
      if (!this.tokenizer.isSpecial(id)) continue;
      const token = this.tokenizer.idToToken(id);
      if (token === undefined) continue;
      for (
        let at = text.indexOf(token, from);
        at >= 0 && at + token.length <= to;
        at = text.indexOf(token, at + 1)
      )
        if (!plain.some(([s, e]) => at < e && at + token.length > s)) ends.push(at + token.length);
    }
    return ends.sort((a, b) => a - b);
  }

  /**
   * Character ranges of the message contents in `full`, found by rendering with a sentinel in place
   * of each content; empty when the template transforms contents (then nothing is protected).
   */
  private contentRanges(
    messages: readonly ChatTurn[],
    addGenerationPrompt: boolean,
    full: string,
  ): [number, number][] {
    if (messages.some((m) => m.content.includes(SENTINEL_MARK))) return [];
    let marked: string;
    try {
      marked = this.renderKept(
        messages.map((m, i) => ({ role: m.role, content: sentinel(i) })),
        addGenerationPrompt,
      );
    } catch {
      return [];
    }
    const ranges: [number, number][] = [];
    let rebuilt = "";
    let last = 0;
    const pattern = new RegExp(`${SENTINEL_MARK}(.)${SENTINEL_MARK}`, "gu");
    const seen = new Set<number>();
    for (const m of marked.matchAll(pattern)) {
      const i = (m[1].codePointAt(0) ?? 0) - 0xf0000;
      if (i < 0 || i >= messages.length || seen.has(i)) return [];
      seen.add(i);
      rebuilt += marked.slice(last, m.index);
      ranges.push([rebuilt.length, rebuilt.length + messages[i].content.length]);
      rebuilt += messages[i].content;
      last = m.index + m[0].length;
    }
    rebuilt += marked.slice(last);
    return rebuilt === full ? ranges.filter(([s, e]) => e > s) : [];
  }
}

function dropEmptySystem(messages: readonly ChatTurn[]): ChatTurn[] {
  return messages.filter((m) => !(m.role === "system" && m.content === ""));
}

/** How many leading characters two strings share. */
function commonTextPrefix(a: string, b: string): number {
  let n = 0;
  while (n < a.length && n < b.length && a.charCodeAt(n) === b.charCodeAt(n)) n++;
  return n;
}

/** How many leading ids two sequences share. */
export function commonPrefix(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/** HF's list form of chat_template: the entry named "default" (or the only one). */
function pickNamedTemplate(list: unknown[], source: string): string {
  const named = new Map<string, string>();
  list.forEach((entry, i) => {
    const e = entry as { name?: unknown; template?: unknown } | null;
    if (e === null || typeof e !== "object" || typeof e.name !== "string" || typeof e.template !== "string")
      throw new UserError(`${source}[${i}]: expected {name: string, template: string}`);
    named.set(e.name, e.template);
  });
  const chosen = named.get("default") ?? (named.size === 1 ? [...named.values()][0] : undefined);
  if (chosen === undefined)
    throw new UserError(
      `${source}: no template named "default" among ${JSON.stringify([...named.keys()])} (named templates such as tool_use are not selected automatically)`,
    );
  return chosen;
}

function readOptional(path: string): string | undefined {
  if (!existsSync(path)) return undefined;
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new UserError(`${path}: cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}

function parseJson(text: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UserError(`${path}: invalid JSON (${(err as Error).message})`);
  }
}

/**
 * Reads a checkpoint directory's chat format: tokenizer_config.json (given parsed, when the caller
 * has read it already), chat_template.jinja / chat_template.json when that has no chat_template, and
 * generation_config.json. `configEosTokenId` is config.json's eos_token_id.
 */
export function loadChatFormat(
  dir: string,
  tokenizer: BpeTokenizer,
  tokenizerConfig: unknown,
  configEosTokenId?: number | number[] | null,
): ChatFormat {
  const sources: ChatFormatSources = {
    tokenizerConfigPath: join(dir, CHAT_FILES.tokenizerConfig),
    generationConfigPath: join(dir, CHAT_FILES.generationConfig),
  };
  if (tokenizerConfig !== undefined) sources.tokenizerConfig = tokenizerConfig;
  if (configEosTokenId !== undefined) sources.configEosTokenId = configEosTokenId;
  const genText = readOptional(sources.generationConfigPath as string);
  if (genText !== undefined)
    sources.generationConfig = parseJson(genText, sources.generationConfigPath as string);
  const jinjaPath = join(dir, CHAT_FILES.templateJinja);
  const jinja = readOptional(jinjaPath);
  if (jinja !== undefined) sources.template = { text: jinja, source: jinjaPath };
  else {
    const jsonPath = join(dir, CHAT_FILES.templateJson);
    const jsonText = readOptional(jsonPath);
    if (jsonText !== undefined) {
      const value = (parseJson(jsonText, jsonPath) as { chat_template?: unknown } | null)?.chat_template;
      if (typeof value !== "string")
        throw new UserError(`${jsonPath}: field chat_template: expected a string`);
      sources.template = { text: value, source: `${jsonPath}: field chat_template` };
    }
  }
  return ChatFormat.fromSources(tokenizer, sources);
}
