import { encodeChat } from "../engine/chat.js";
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
}

/**
 * Tokenises a conversation whose response is scored: the prompt messages, then `response` as the
 * assistant turn (ChatML). An empty system prompt adds no system turn. Sequences longer than `maxLen`
 * keep at least half the budget for the response and drop the oldest prompt tokens first, so every
 * sequence scores at least one token (averaged losses divide by that count).
 */
export function encodeResponse(
  tokenizer: BpeTokenizer,
  prompt: Message[],
  response: string,
  maxLen: number,
): EncodedSequence {
  const messages = prompt.filter((m) => !(m.role === "system" && m.content === ""));
  const { ids, responseMask } = encodeChat(tokenizer, [
    ...messages,
    { role: "assistant", content: response },
  ]);
  return truncate({ ids, mask: responseMask }, maxLen);
}

/** Tokenises a whole chat example (loss on every assistant turn) for supervised fine-tuning. */
export function encodeConversation(
  tokenizer: BpeTokenizer,
  messages: Message[],
  maxLen: number,
): EncodedSequence {
  const kept = messages.filter((m) => !(m.role === "system" && m.content === ""));
  const { ids, responseMask } = encodeChat(tokenizer, kept);
  return truncate({ ids, mask: responseMask }, maxLen);
}

/**
 * Cuts a sequence to maxLen tokens: the response keeps at least half the budget and the prompt loses
 * its OLDEST tokens first. Known flaw, flagged rather than fixed (docs/algorithm.md, "Length limits
 * and truncation"): the oldest tokens of a steering sequence are its principle system prompt, so a
 * long query cuts p+ / p- first and turns a steering pair into a plain one without a word. The world's
 * settings never reach it; keep maxLen above system prompt + query + half an answer.
 */
function truncate(seq: EncodedSequence, maxLen: number): EncodedSequence {
  if (seq.ids.length <= maxLen) return seq;
  const firstScored = seq.mask.indexOf(1);
  const promptLen = firstScored < 0 ? seq.ids.length : firstScored;
  const responseLen = seq.ids.length - promptLen;
  const keepResponse = Math.min(responseLen, maxLen - Math.min(promptLen, Math.floor(maxLen / 2)));
  const keepPrompt = maxLen - keepResponse;
  const start = promptLen - keepPrompt;
  const end = promptLen + keepResponse;
  return { ids: seq.ids.slice(start, end), mask: seq.mask.slice(start, end) };
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
