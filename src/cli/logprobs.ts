import type { Command } from "commander";
import { z } from "zod";
import { loadCheckpoint } from "../engine/checkpoint.js";
import { nextTokenLogprobs } from "../engine/logprobs.js";
import { LlamaModel } from "../engine/model.js";
import { checkSequenceLengths } from "../engine/validate.js";
import { UserError } from "../util/errors.js";
import { readJsonFile } from "../util/fsio.js";
import { BACKEND_HELP, openKernels, parseBackend, parseIntFlag, printJson } from "./common.js";

const IdsFileSchema = z.object({ sequences: z.array(z.array(z.number().int())) });

/** Registers `selfsteer logprobs --model DIR --ids F.json`: next-token log-probs of given token ids. */
export function register(program: Command): void {
  program
    .command("logprobs")
    .description("score token-id sequences with a checkpoint; prints {logprobs: [[...], ...]} as JSON")
    .requiredOption("--model <dir>", "checkpoint directory (config.json + model.safetensors suffice)")
    .requiredOption("--ids <file>", 'JSON: {"sequences": [[id, ...], ...]}')
    .option("--max-batch-tokens <n>", "padded tokens per forward pass", "4096")
    .option("--allow-nonfinite", "load weights holding NaN or infinite values (for inspection)")
    .option("--backend <name>", BACKEND_HELP, "auto")
    .addHelpText(
      "after",
      `
Entry t of output row i is log p(ids[t+1] | ids[0..t]) for sequence i, so a row has one entry fewer
than its sequence (none for a sequence of 0 or 1 tokens).

Example:
  selfsteer logprobs --model runs/base --ids ids.json`,
    )
    .action(
      (opts: {
        model: string;
        ids: string;
        maxBatchTokens: string;
        allowNonfinite?: boolean;
        backend: string;
      }) => {
        const maxBatchTokens = parseIntFlag("--max-batch-tokens", opts.maxBatchTokens, 1);
        const backend = parseBackend(opts.backend);
        const { sequences } = readJsonFile(opts.ids, IdsFileSchema);
        const checkpoint = loadCheckpoint(opts.model, { allowNonFinite: opts.allowNonfinite === true });
        if (checkpoint.scoreHead && !checkpoint.config.tie_word_embeddings)
          throw new UserError(
            `${opts.model}: is a reward model (score head, no lm_head); it has no next-token log-probs`,
          );
        const vocab = checkpoint.config.vocab_size;
        checkSequenceLengths(
          opts.ids,
          "sequences",
          sequences,
          checkpoint.config.max_position_embeddings,
          opts.model,
        );
        sequences.forEach((seq, i) => {
          seq.forEach((id, t) => {
            if (id < 0 || id >= vocab)
              throw new UserError(
                `${opts.ids}: sequences[${i}][${t}]: token id ${id} is out of range for vocab_size ${vocab} of ${opts.model}`,
              );
          });
        });
        const kernels = openKernels(backend);
        try {
          const model = new LlamaModel(checkpoint.config, kernels, { scoreHead: checkpoint.scoreHead });
          model.loadTensors(checkpoint.tensors.values());
          const rows = nextTokenLogprobs(model, sequences, { maxBatchTokens });
          printJson({ logprobs: rows.map((r) => Array.from(r)) });
        } finally {
          kernels.dispose();
        }
      },
    );
}
