/**
 * Tokenizer speed: BPE training time on a few MB of seeded synthetic text (Zipf-distributed words
 * made of syllables, some punctuation, digits and non-Latin scripts), encode throughput, a
 * tokenizer.json write/read round trip, and one very long word.
 * Usage: node dist/bench/tokenizer.js [--mb 3]   (prints one JSON document)
 */
import { BpeTokenizer } from "../src/engine/tokenizer.js";
import { Rng } from "../src/util/rng.js";

const SYLLABLES = [
  "ka",
  "to",
  "ri",
  "sen",
  "mo",
  "la",
  "qu",
  "ist",
  "an",
  "de",
  "el",
  "or",
  "un",
  "ph",
  "str",
  "ing",
];
const EXTRAS = ["東京", "タワー", "привет", "über", "😀", "3.14", "2024", "(x)", "—", "don't", "it's"];

function syntheticCorpus(megabytes: number, seed: number): string[] {
  const rng = new Rng(seed);
  const vocabulary: string[] = [];
  for (let i = 0; i < 60_000; i++) {
    let word = "";
    const parts = 1 + rng.int(5);
    for (let p = 0; p < parts; p++) word += rng.pick(SYLLABLES);
    vocabulary.push(i % 7 === 0 ? word[0].toUpperCase() + word.slice(1) : word);
  }
  // Zipf: word i is drawn with probability proportional to 1 / (i + 1).
  const cumulative: number[] = [];
  let total = 0;
  for (let i = 0; i < vocabulary.length; i++) {
    total += 1 / (i + 1);
    cumulative.push(total);
  }
  const drawWord = () => {
    const u = rng.next() * total;
    let lo = 0;
    let hi = cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cumulative[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return vocabulary[lo];
  };
  const lines: string[] = [];
  let bytes = 0;
  while (bytes < megabytes * 1e6) {
    const words: string[] = [];
    const n = 8 + rng.int(24);
    for (let w = 0; w < n; w++) words.push(rng.chance(0.05) ? rng.pick(EXTRAS) : drawWord());
    const line = `${words.join(rng.chance(0.1) ? ", " : " ")}.`;
    lines.push(line);
    bytes += Buffer.byteLength(line) + 1;
  }
  return lines;
}

function seconds(start: number): number {
  return Math.round(performance.now() - start) / 1000;
}

function main(): void {
  const mbFlag = process.argv.indexOf("--mb");
  const megabytes = mbFlag >= 0 ? Number(process.argv[mbFlag + 1]) : 3;
  const lines = syntheticCorpus(megabytes, 1);
  const corpusBytes = lines.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  const results: Record<string, number> = { corpus_mb: corpusBytes / 1e6, documents: lines.length };

  for (const vocab of [2000, 8000]) {
    const start = performance.now();
    const tok = BpeTokenizer.train(lines, vocab);
    results[`train_vocab${vocab}_s`] = seconds(start);
    results[`vocab${vocab}_size`] = tok.vocabSize;
  }

  const tok = BpeTokenizer.train(lines, 2000);
  let start = performance.now();
  let tokens = 0;
  for (const line of lines) tokens += tok.encode(line).length;
  const encodeSeconds = seconds(start);
  results.encode_mb_per_s = Math.round((corpusBytes / 1e6 / encodeSeconds) * 100) / 100;
  results.bytes_per_token = Math.round((corpusBytes / tokens) * 100) / 100;

  start = performance.now();
  const text = JSON.stringify(tok.toJSON());
  BpeTokenizer.fromJSON(JSON.parse(text));
  results.json_round_trip_s = seconds(start);

  const longWord = "kasenmo".repeat(50_000);
  start = performance.now();
  tok.encode(longWord);
  results.long_word_350k_chars_s = seconds(start);

  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
}

main();
