/**
 * llama.cpp through node-llama-cpp, from the separate interop package in test/interop (its platform
 * binaries weigh ~730 MB, so the main package does not depend on it). Used by the GGUF interop test and
 * the llama.cpp bench peer. Only the few calls we make are typed here.
 */
import { existsSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";

/** Where .ci/run installs the interop package (dist/test/helpers -> repo root -> test/interop). */
export const INTEROP_DIR = fileURLToPath(new URL("../../../test/interop", import.meta.url));
const ENTRY = `${INTEROP_DIR}/node_modules/node-llama-cpp/dist/index.js`;

/** The command that installs the interop package, for skip messages. */
export const INTEROP_INSTALL = "npm ci --prefix test/interop";

/** A llama.cpp context sequence (a KV cache) as node-llama-cpp exposes it. */
export interface LlamaSequence {
  evaluate(
    tokens: number[],
    options: { temperature: number; yieldEogToken?: boolean },
  ): AsyncGenerator<number, void, void>;
  clearHistory(): Promise<void>;
}

/** A llama.cpp context: KV cache memory for one or more sequences. */
export interface LlamaContextLike {
  getSequence(): LlamaSequence;
  dispose(): Promise<void>;
}

/** A model loaded by llama.cpp. */
export interface LlamaModelLike {
  tokenize(text: string, specialTokens?: boolean): number[];
  isEogToken(token: number): boolean;
  createContext(options: {
    contextSize: number;
    threads?: number;
    sequences?: number;
    batchSize?: number;
    flashAttention?: boolean;
    experimentalKvCacheKeyType?: string;
    experimentalKvCacheValueType?: string;
  }): Promise<LlamaContextLike>;
  dispose(): Promise<void>;
}

/** The llama.cpp runtime. */
export interface LlamaLike {
  gpu: string | false;
  buildType: string;
  loadModel(options: { modelPath: string; gpuLayers?: number }): Promise<LlamaModelLike>;
  dispose(): Promise<void>;
}

interface NodeLlamaCppModule {
  getLlama(options: Record<string, unknown>): Promise<LlamaLike>;
  LlamaLogLevel: Record<string, string>;
}

/**
 * Context options that keep llama.cpp in fp32 like our engine: its default KV cache is F16, which
 * moves logits by ~1e-2 nats on random models and turns near-ties into different tokens.
 */
export const FP32_CONTEXT = {
  flashAttention: false,
  experimentalKvCacheKeyType: "F32",
  experimentalKvCacheValueType: "F32",
} as const;

/** Whether the interop package is installed. */
export function nodeLlamaCppInstalled(): boolean {
  return existsSync(ENTRY);
}

/**
 * llama.cpp on the CPU with the prebuilt binary that ships in node-llama-cpp's platform package:
 * never a GPU build, never a download or a compile.
 */
export async function openLlamaCpp(): Promise<LlamaLike> {
  process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = "true";
  const mod = (await import(pathToFileURL(ENTRY).href)) as NodeLlamaCppModule;
  return mod.getLlama({
    gpu: false,
    build: "never",
    skipDownload: true,
    progressLogs: false,
    logLevel: mod.LlamaLogLevel.error,
  });
}

/**
 * Greedy continuation in llama.cpp of prompt ids on a fresh sequence: at most `maxTokens` new ids,
 * the end-of-generation token included when one ends it (as our sampler reports ids).
 */
export async function llamaCppGreedy(
  sequence: LlamaSequence,
  model: LlamaModelLike,
  prompt: number[],
  maxTokens: number,
): Promise<number[]> {
  await sequence.clearHistory();
  const out: number[] = [];
  if (maxTokens === 0) return out;
  for await (const token of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
    out.push(token);
    if (out.length >= maxTokens || model.isEogToken(token)) break;
  }
  return out;
}
