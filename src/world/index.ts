/**
 * The principle world: task families with verifiable answers, gold feature scorers, a response
 * generator, the SFT corpus, off-policy pairs, a RewardBench-style suite and the gold judge.
 */
export * from "./corpus.js";
export * from "./data.js";
export * from "./generator.js";
export * from "./judge.js";
export * from "./rewardbench.js";
export * from "./scorers.js";
export * from "./tasks.js";
