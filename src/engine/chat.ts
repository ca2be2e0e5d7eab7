/**
 * ChatML, the chat format of our checkpoints: each turn is `<|im_start|>role\ncontent<|im_end|>\n`,
 * and a generation prompt is `<|im_start|>assistant\n`. A system turn with empty content is left out
 * entirely (an empty system prompt means "no system prompt", so the same conversation with and
 * without one tokenizes the same). `CHATML_TEMPLATE` says the same in Jinja for HF tools.
 */
import type { BpeTokenizer, EncodeOptions } from "./tokenizer.js";

/** One chat message. */
export interface ChatTurn {
  role: "system" | "user" | "assistant";
  content: string;
}

/** Options for rendering or encoding a conversation. */
export interface ChatOptions {
  /** Append `<|im_start|>assistant\n` so the model continues with an assistant turn (default false). */
  addGenerationPrompt?: boolean;
}

/** A tokenized conversation and which tokens the model should learn to produce. */
export interface EncodedChat {
  ids: number[];
  /** 1 for the tokens of assistant contents and their closing <|im_end|>, 0 elsewhere. */
  responseMask: number[];
}

/**
 * The Jinja chat template (HF `tokenizer_config.json` chat_template) equivalent to renderChat:
 * the same turns, the same omission of an empty system turn, the same generation prompt.
 */
export const CHATML_TEMPLATE =
  "{% for message in messages %}" +
  "{% if not (message['role'] == 'system' and message['content'] == '') %}" +
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{% endif %}" +
  "{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const IM_START = "<|im_start|>";
const IM_END = "<|im_end|>";

function isOmitted(turn: ChatTurn): boolean {
  return turn.role === "system" && turn.content === "";
}

/** The ChatML text of a conversation (what CHATML_TEMPLATE renders). */
export function renderChat(messages: readonly ChatTurn[], options: ChatOptions = {}): string {
  let out = "";
  for (const m of messages) if (!isOmitted(m)) out += `${IM_START}${m.role}\n${m.content}${IM_END}\n`;
  if (options.addGenerationPrompt === true) out += `${IM_START}assistant\n`;
  return out;
}

/**
 * Tokenizes a conversation in the tokenizer's chat format: the model's own template when its
 * directory has one (tokenizer.chat, see chat-format.ts), else ChatML (encodeChatML).
 */
export function encodeChat(
  tokenizer: BpeTokenizer,
  messages: readonly ChatTurn[],
  options: ChatOptions = {},
): EncodedChat {
  const format = tokenizer.chat;
  return format === undefined ? encodeChatML(tokenizer, messages, options) : format.encode(messages, options);
}

/** The ids that end a generated turn in the tokenizer's chat format (ChatML: <|im_end|>, <|endoftext|>). */
export function chatStopIds(tokenizer: BpeTokenizer): readonly number[] {
  if (tokenizer.chat !== undefined) return tokenizer.chat.stopIds;
  return ["<|im_end|>", "<|endoftext|>"]
    .filter((t) => tokenizer.hasSpecial(t))
    .map((t) => tokenizer.specialId(t));
}

/**
 * One part of a prompt before tokenizing: text encoded on its own with these options, or ids taken as
 * they are. A prompt's ids are its pieces' ids in order (encodePieces), so the cheap part of building
 * a prompt (rendering) and the costly part (BPE over the text) can run in different places.
 */
export type PromptPiece = { text: string; options?: EncodeOptions } | { ids: readonly number[] };

/** The ids of `pieces`: each text encoded separately, in order. */
export function encodePieces(tokenizer: BpeTokenizer, pieces: readonly PromptPiece[]): number[] {
  const ids: number[] = [];
  for (const piece of pieces)
    for (const id of "ids" in piece ? piece.ids : tokenizer.encode(piece.text, piece.options)) ids.push(id);
  return ids;
}

/**
 * A conversation rendered in the tokenizer's chat format but not yet tokenized: encodePieces of the
 * result equals encodeChat(...).ids (without the response mask, which only training needs).
 */
export function chatPromptPieces(
  tokenizer: BpeTokenizer,
  messages: readonly ChatTurn[],
  options: ChatOptions = {},
): PromptPiece[] {
  const format = tokenizer.chat;
  return format === undefined
    ? chatMLPieces(tokenizer, messages, options)
    : format.promptPieces(messages, options);
}

/** The ChatML pieces of a conversation, each with its response-mask value (see encodeChatML). */
export function chatMLPieces(
  tokenizer: BpeTokenizer,
  messages: readonly ChatTurn[],
  options: ChatOptions = {},
): (PromptPiece & { mask: 0 | 1 })[] {
  const imStart = tokenizer.imStartId;
  const imEnd = tokenizer.imEndId;
  const plain = { allowSpecial: false };
  const pieces: (PromptPiece & { mask: 0 | 1 })[] = [];
  const header = (role: string) => {
    pieces.push({ ids: [imStart], mask: 0 });
    pieces.push({ text: `${role}\n`, options: plain, mask: 0 });
  };
  for (const m of messages) {
    if (isOmitted(m)) continue;
    const learned = m.role === "assistant" ? 1 : 0;
    header(m.role);
    pieces.push({ text: m.content, options: plain, mask: learned });
    pieces.push({ ids: [imEnd], mask: learned });
    pieces.push({ text: "\n", options: plain, mask: 0 });
  }
  if (options.addGenerationPrompt === true) header("assistant");
  return pieces;
}

/**
 * Tokenizes a conversation in ChatML with a response mask over assistant contents and their
 * <|im_end|>. Each content is encoded on its own, after its `role\n` header, exactly as the model
 * sees its own sampled reply after a generation prompt; the ids therefore equal encoding
 * renderChat(...) whole whenever no content starts with whitespace. Contents are plain text: a
 * "<|im_end|>" typed by a user stays characters and cannot close a turn.
 */
export function encodeChatML(
  tokenizer: BpeTokenizer,
  messages: readonly ChatTurn[],
  options: ChatOptions = {},
): EncodedChat {
  const ids: number[] = [];
  const responseMask: number[] = [];
  for (const piece of chatMLPieces(tokenizer, messages, options))
    for (const id of "ids" in piece ? piece.ids : tokenizer.encode(piece.text, piece.options)) {
      ids.push(id);
      responseMask.push(piece.mask);
    }
  return { ids, responseMask };
}

/** Options for tokenizerConfigJson. */
export interface TokenizerConfigOptions {
  /** The longest sequence the model takes (HF model_max_length; default 2048). */
  modelMaxLength?: number;
}

/**
 * The HF `tokenizer_config.json` for a checkpoint using this tokenizer: the one it was loaded with
 * when that carries the model's own chat template (so a trained model keeps its format), else a
 * PreTrainedTokenizerFast over tokenizer.json with the ChatML template, no BOS, EOS <|im_end|> (where
 * the model stops) and padding with <|endoftext|> (or the EOS token when there is none).
 */
export function tokenizerConfigJson(
  tokenizer: BpeTokenizer,
  options: TokenizerConfigOptions = {},
): Record<string, unknown> {
  const own = tokenizer.chat;
  if (own !== undefined && own.template !== null) {
    // A template read from chat_template.jinja goes into the config, so one file carries it.
    const base = own.tokenizerConfig ?? chatMLTokenizerConfig(tokenizer, options);
    return {
      ...base,
      chat_template:
        typeof base.chat_template === "string" || Array.isArray(base.chat_template)
          ? base.chat_template
          : own.template,
    };
  }
  return chatMLTokenizerConfig(tokenizer, options);
}

function chatMLTokenizerConfig(
  tokenizer: BpeTokenizer,
  options: TokenizerConfigOptions,
): Record<string, unknown> {
  const addedTokensDecoder: Record<string, unknown> = {};
  for (const a of tokenizer.addedTokens)
    addedTokensDecoder[String(a.id)] = {
      content: a.content,
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: a.special,
    };
  const chatTokens = [IM_START, IM_END].filter((t) => tokenizer.hasSpecial(t));
  return {
    added_tokens_decoder: addedTokensDecoder,
    additional_special_tokens: chatTokens,
    bos_token: null,
    chat_template: CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: tokenizer.idToToken(tokenizer.eosId),
    errors: "replace",
    model_max_length: options.modelMaxLength ?? 2048,
    pad_token: tokenizer.idToToken(tokenizer.padId),
    split_special_tokens: false,
    tokenizer_class: "PreTrainedTokenizerFast",
    unk_token: null,
  };
}
