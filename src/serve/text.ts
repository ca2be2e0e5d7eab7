/**
 * Sampled token ids to text, one token at a time: UTF-8 sequences split across tokens are held until
 * complete, special tokens are left out, and stop strings end the text before their first occurrence.
 * While streaming, text that could be the start of a stop string is held back until it is known not
 * to be one, so a client never sees part of a stop string.
 */
import type { BpeTokenizer } from "../engine/tokenizer.js";

/** The bytes of a token, or none for ids the tokenizer does not have (a model vocab can be larger). */
export function tokenBytesOrEmpty(tokenizer: BpeTokenizer, id: number): Uint8Array {
  if (id < 0 || id >= tokenizer.vocabSize) return new Uint8Array(0);
  try {
    return tokenizer.tokenBytes(id);
  } catch {
    return new Uint8Array(0);
  }
}

/** The text of one token on its own (a lone part of a UTF-8 sequence shows as U+FFFD). */
export function tokenText(tokenizer: BpeTokenizer, id: number): string {
  return new TextDecoder("utf-8").decode(tokenBytesOrEmpty(tokenizer, id));
}

/** Builds one sample's text as its tokens arrive. */
export class IncrementalText {
  private readonly decoder = new TextDecoder("utf-8");
  private readonly longestStop: number;
  private text = "";
  private emitted = 0;
  private ended = false;

  /** Text of tokens decoded with `tokenizer`, cut at the first of `stops` (empty strings are ignored). */
  constructor(
    private readonly tokenizer: BpeTokenizer,
    private readonly stops: readonly string[] = [],
  ) {
    this.stops = stops.filter((s) => s.length > 0);
    this.longestStop = Math.max(0, ...this.stops.map((s) => s.length));
  }

  /** True once a stop string matched (no more text will follow). */
  get stopped(): boolean {
    return this.ended;
  }

  /** Characters decoded so far, held-back ones included (the offset of the next token's text). */
  get length(): number {
    return this.text.length;
  }

  /** All text so far that is safe to show (the final text once `finish` was called). */
  get shown(): string {
    return this.text.slice(0, this.emitted);
  }

  /**
   * Adds one token; returns the text that became safe to show. After a stop string matched, further
   * tokens add nothing.
   */
  push(id: number): string {
    if (this.ended || this.tokenizer.isSpecial(id)) return "";
    const before = this.text.length;
    this.text += this.decoder.decode(tokenBytesOrEmpty(this.tokenizer, id), { stream: true });
    if (this.stops.length > 0) {
      // A match must end in the new text, so it starts at most longestStop - 1 characters before it.
      const from = Math.max(0, before - this.longestStop + 1);
      let cut = -1;
      for (const stop of this.stops) {
        const at = this.text.indexOf(stop, from);
        if (at >= 0 && (cut < 0 || at < cut)) cut = at;
      }
      if (cut >= 0) {
        this.text = this.text.slice(0, cut);
        this.ended = true;
        return this.advance(this.text.length);
      }
    }
    return this.advance(this.text.length - this.heldBack());
  }

  /** Ends the text (no more tokens): returns what was still held back. */
  finish(): string {
    if (!this.ended) {
      this.text += this.decoder.decode();
      this.ended = true;
    }
    return this.advance(this.text.length);
  }

  /** Characters at the end that could begin a stop string. */
  private heldBack(): number {
    let longest = 0;
    for (const stop of this.stops) {
      const max = Math.min(stop.length - 1, this.text.length);
      for (let k = max; k > longest; k--) {
        if (this.text.endsWith(stop.slice(0, k))) {
          longest = k;
          break;
        }
      }
    }
    return longest;
  }

  private advance(to: number): string {
    if (to <= this.emitted) return "";
    const delta = this.text.slice(this.emitted, to);
    this.emitted = to;
    return delta;
  }
}
