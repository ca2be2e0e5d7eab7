import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { z } from "zod";
import { renderChat } from "../engine/chat.js";
import { BpeTokenizer, DEFAULT_SPECIAL_TOKENS } from "../engine/tokenizer.js";
import { UserError } from "../util/errors.js";
import { writeJsonAtomic } from "../util/fsio.js";
import { readJsonl } from "../util/jsonl.js";
import { parseIntFlag, printJson } from "./common.js";
import { checkOutputPath } from "./output.js";

const MessageSchema = z.object({
  role: z.enum(["system", "user", "assistant"]),
  content: z.string(),
});
const CorpusLineSchema = z
  .looseObject({ text: z.string().optional(), messages: z.array(MessageSchema).optional() })
  .refine((v) => v.text !== undefined || v.messages !== undefined, {
    message: 'expected a "text" string or a "messages" array',
  });

/** Reads the training documents: one per line of a text file, or one per JSONL record. */
function readCorpus(path: string, format: "text" | "jsonl"): string[] {
  if (format === "jsonl")
    return readJsonl(path, CorpusLineSchema).rows.map(({ value }) =>
      value.messages !== undefined ? renderChat(value.messages) : (value.text as string),
    );
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new UserError(`${path}: cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return text.split("\n").filter((line) => line.trim() !== "");
}

interface TrainFlags {
  corpus: string;
  vocab: string;
  out: string;
  special?: string[];
  minFrequency: string;
  format: string;
}

function trainCommand(opts: TrainFlags): void {
  checkOutputPath("--out", opts.out, "file");
  const specials = [...DEFAULT_SPECIAL_TOKENS, ...(opts.special ?? [])].filter(
    (s, i, all) => all.indexOf(s) === i,
  );
  const vocab = parseIntFlag("--vocab", opts.vocab, 256 + specials.length);
  const minFrequency = parseIntFlag("--min-frequency", opts.minFrequency, 1);
  if (!["auto", "text", "jsonl"].includes(opts.format))
    throw new UserError(`--format: expected auto, text or jsonl, got '${opts.format}'`);
  const format =
    opts.format === "auto"
      ? opts.corpus.endsWith(".jsonl")
        ? "jsonl"
        : "text"
      : (opts.format as "text" | "jsonl");
  const started = Date.now();
  const documents = readCorpus(opts.corpus, format);
  if (documents.length === 0)
    throw new UserError(`${opts.corpus}: no documents (the file has no non-blank lines)`);
  const tokenizer = BpeTokenizer.train(documents, vocab, { specialTokens: specials, minFrequency });
  writeJsonAtomic(opts.out, tokenizer.toJSON());
  printJson({
    out: opts.out,
    documents: documents.length,
    vocab_size: tokenizer.vocabSize,
    requested_vocab_size: vocab,
    merges: tokenizer.mergeCount,
    special_tokens: specials,
    seconds: (Date.now() - started) / 1000,
  });
}

/** Registers `selfsteer tokenizer train`: learns a byte-level BPE tokenizer from a corpus. */
export function register(program: Command): void {
  const tokenizer = program.command("tokenizer").description("byte-level BPE tokenizers (HF tokenizer.json)");
  tokenizer
    .command("train")
    .description("learn a byte-level BPE tokenizer from a corpus and write it as HF tokenizer.json")
    .requiredOption(
      "--corpus <file>",
      "text (one document per line) or JSONL ({text} or {messages} per line)",
    )
    .requiredOption("--vocab <n>", "target vocabulary size: 256 bytes + special tokens + merges")
    .requiredOption("--out <file>", "where to write tokenizer.json (atomically)")
    .option("--special <tokens...>", "extra special tokens after <|endoftext|> <|im_start|> <|im_end|>")
    .option("--min-frequency <n>", "stop merging when the best pair occurs fewer times", "2")
    .option("--format <kind>", "auto (JSONL when the name ends in .jsonl), text or jsonl", "auto")
    .addHelpText(
      "after",
      `
Ids: 0..255 are the bytes, the special tokens follow (256 <|endoftext|>, 257 <|im_start|>,
258 <|im_end|>, then any --special), then the merges. Chat records ({"messages": [...]}) are
rendered in ChatML first; special tokens in the corpus are never merged into other tokens. The
vocabulary can come out smaller than --vocab when no pair is frequent enough to merge.

Example:
  selfsteer tokenizer train --corpus corpus.jsonl --vocab 2048 --out runs/tok/tokenizer.json`,
    )
    .action((opts: TrainFlags) => trainCommand(opts));
}
