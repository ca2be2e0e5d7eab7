import { encodeChat } from "../engine/chat.js";
import { commonPrefix } from "../engine/chat-format.js";
import type { TokenBatch } from "../engine/model.js";
import type { BpeTokenizer } from "../engine/tokenizer.js";

/** A chat turn (the engine's and the policy's message shape). */
export interface Message {
  role: "system" | "user" | "assistant";
  content: string;
}

/** A tokenised training sequence: ids and a mask over the tokens the loss scores. */
export interface EncodedSequence {
  ids: number[];
  mask: number[];
  /**
   * Set when the sequence was too long to keep its system turn whole, so the cut took the system
   * turn's oldest tokens (docs/algorithm.md, "Length limits and truncation"); callers report it.
   */
  systemCut?: true;
}

/**
 * Tokenises a conversation whose response is scored: the prompt messages, then `response` as the
 * assistant turn, in the tokenizer's chat format. An empty system prompt adds no system turn. A
 * sequence longer than `maxLen` keeps its system turn, the assistant header and at least half the
 * budget for the response, and loses the oldest tokens of the user turn (see truncate).
 */
export function encodeResponse(
  tokenizer: BpeTokenizer,
  prompt: Message[],
  response: string,
  maxLen: number,
): EncodedSequence {
  const messages = [
    ...prompt.filter((m) => !isEmptySystem(m)),
    { role: "assistant" as const, content: response },
  ];
  const { ids, responseMask } = encodeChat(tokenizer, messages);
  return truncate(tokenizer, messages, { ids, mask: responseMask }, maxLen);
}

/**
 * Tokenises a whole chat example (loss on every assistant turn) for supervised fine-tuning, cut to
 * `maxLen` as encodeResponse's sequences are (the turns before the first assistant turn are its prompt).
 */
export function encodeConversation(
  tokenizer: BpeTokenizer,
  messages: Message[],
  maxLen: number,
): EncodedSequence {
  const kept = messages.filter((m) => !isEmptySystem(m));
  const { ids, responseMask } = encodeChat(tokenizer, kept);
  return truncate(tokenizer, kept, { ids, mask: responseMask }, maxLen);
}

/**
 * One warning line for training items whose sequences lost part of their system prompt to --max-len
 * (docs/algorithm.md, "Length limits and truncation"), naming the first five: `what` names the items
 * ("record", "example", "pair"), `prompt` the kind of system prompt.
 */
export function systemCutWarning(
  what: string,
  prompt: string,
  names: readonly string[],
  sequences: number,
  maxLen: number,
): string {
  const unique = [...new Set(names)];
  const shown = unique.slice(0, 5).join(", ") + (unique.length > 5 ? `, and ${unique.length - 5} more` : "");
  return (
    `${unique.length} ${what}(s) too long to keep their ${prompt} whole at --max-len ${maxLen} ` +
    `(${sequences} sequence(s); their oldest system tokens are cut): ${shown}`
  );
}

function isEmptySystem(m: Message): boolean {
  return m.role === "system" && m.content === "";
}

/**
 * Cuts a sequence to maxLen tokens (docs/algorithm.md, "Length limits and truncation"). The response
 * (from the first scored token on) keeps at least half the budget, all of itself when it fits, so
 * every sequence scores at least one token: keepResponse = min(R, maxLen - min(P, floor(maxLen / 2)))
 * for a prompt of P tokens and a response of R. The prompt gets the rest: a leading system turn stays
 * whole (in a steering sequence it is the principles, the sequence's meaning), and so do the chat
 * header tokens that open the assistant turn; the user turns between them lose their OLDEST tokens
 * first, so the end of the query stays next to the answer. Without a system turn, or when the system
 * turn and the header do not fit in the prompt's budget, the prompt keeps its newest tokens; the
 * latter cuts the system turn, and the sequence says so (`systemCut`).
 */
function truncate(
  tokenizer: BpeTokenizer,
  messages: readonly Message[],
  seq: EncodedSequence,
  maxLen: number,
): EncodedSequence {
  if (seq.ids.length <= maxLen) return seq;
  const firstScored = seq.mask.indexOf(1);
  const promptLen = firstScored < 0 ? seq.ids.length : firstScored;
  const responseLen = seq.ids.length - promptLen;
  const keepResponse = Math.min(responseLen, maxLen - Math.min(promptLen, Math.floor(maxLen / 2)));
  const keepPrompt = maxLen - keepResponse;
  const end = promptLen + keepResponse;
  const newest = {
    ids: seq.ids.slice(promptLen - keepPrompt, end),
    mask: seq.mask.slice(promptLen - keepPrompt, end),
  };
  if (keepPrompt >= promptLen || messages[0]?.role !== "system") return newest;
  const { systemEnd, headerStart } = promptLayout(tokenizer, messages, seq.ids, promptLen);
  if (systemEnd === 0 || systemEnd + (promptLen - headerStart) > keepPrompt)
    return { ...newest, systemCut: true };
  // keepPrompt < promptLen, so the kept tail starts after the system turn.
  const tail = promptLen - (keepPrompt - systemEnd);
  return {
    ids: [...seq.ids.slice(0, systemEnd), ...seq.ids.slice(tail, end)],
    mask: [...seq.mask.slice(0, systemEnd), ...seq.mask.slice(tail, end)],
  };
}

/**
 * Where the leading system turn ends and the assistant turn's header starts in the prompt part of
 * `ids` (the tokens before the first scored one), found by encoding parts of the conversation in the
 * same chat format, so any template works, not only ChatML:
 * - the header starts where the turns before the first assistant message, rendered without a
 *   generation prompt, stop matching `ids`;
 * - the system turn ends where the system message rendered alone stops matching `ids`, or where the
 *   turns before the assistant's stop matching the same turns rendered without the system message
 *   (compared from the end: this finds the system text of templates that fold it into the first
 *   user turn). The later of the two protects the whole system turn when either finds it; a template
 *   that renders the user turns differently once a system turn precedes them protects a few more.
 * systemEnd 0: the system turn was not found.
 */
function promptLayout(
  tokenizer: BpeTokenizer,
  messages: readonly Message[],
  ids: readonly number[],
  promptLen: number,
): { systemEnd: number; headerStart: number } {
  const firstAssistant = messages.findIndex((m) => m.role === "assistant");
  const before = firstAssistant < 0 ? messages : messages.slice(0, firstAssistant);
  const turns = encodeProbe(tokenizer, before);
  const headerStart =
    firstAssistant < 0 || turns === null ? promptLen : Math.min(promptLen, commonPrefix(turns, ids));
  // Without a user turn to cut, everything before the header is the system's.
  if (before.length === 1) return { systemEnd: headerStart, headerStart };
  const alone = encodeProbe(tokenizer, before.slice(0, 1));
  const byTurn = alone === null ? 0 : commonPrefix(alone, ids);
  const withoutSystem = encodeProbe(tokenizer, before.slice(1));
  const bySuffix =
    turns === null || withoutSystem === null ? 0 : turns.length - commonSuffix(turns, withoutSystem);
  return { systemEnd: Math.min(headerStart, Math.max(byTurn, bySuffix)), headerStart };
}

/** The ids of a part of a conversation, or null when the chat template refuses to render it alone. */
function encodeProbe(tokenizer: BpeTokenizer, messages: readonly Message[]): number[] | null {
  try {
    return encodeChat(tokenizer, messages).ids;
  } catch {
    // A template may refuse a conversation that is not a whole exchange (e.g. one without a user
    // turn); the other probe, or the flagged fallback, covers it.
    return null;
  }
}

/** How many trailing ids two sequences share. */
function commonSuffix(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[a.length - 1 - n] === b[b.length - 1 - n]) n++;
  return n;
}

/**
 * Packs sequences into one right-padded TokenBatch. The mask marks target positions: position t is
 * scored when mask[t] = 1 (predicted from tokens < t); position 0 is never scored.
 */
export function packBatch(seqs: EncodedSequence[], padId: number): TokenBatch {
  const batch = seqs.length;
  let seqLen = 1;
  for (const s of seqs) seqLen = Math.max(seqLen, s.ids.length);
  const ids = new Int32Array(batch * seqLen).fill(padId);
  const lossMask = new Uint8Array(batch * seqLen);
  const lengths = new Int32Array(batch);
  seqs.forEach((s, b) => {
    lengths[b] = s.ids.length;
    for (let t = 0; t < s.ids.length; t++) {
      ids[b * seqLen + t] = s.ids[t];
      if (t > 0 && s.mask[t] === 1) lossMask[b * seqLen + t] = 1;
    }
  });
  return { ids, batch, seqLen, lengths, lossMask };
}
