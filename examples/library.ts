import { buildRecords, OpenAIPolicy, objectiveConfigSchema, ssoObjective } from "selfsteer";

// Any OpenAI-compatible server: vLLM, llama.cpp's server, Ollama, SGLang, `selfsteer serve`.
const policy = new OpenAIPolicy({
  endpoints: [process.env.OPENAI_BASE_URL ?? "http://127.0.0.1:8000/v1"],
  model: process.env.OPENAI_MODEL ?? "Qwen2-7B-Instruct",
  concurrency: 8,
  timeoutMs: 120_000,
  maxRetries: 3,
});

// One SSO record per query: the policy picks features, then answers under the good principles (y+),
// under the bad ones (y-) and with no system prompt (y0); the reference filters keep or drop it.
const { records, summary } = await buildRecords(
  policy,
  [
    { id: "tea", prompt: "How do I brew green tea?" },
    { id: "sum", prompt: "What is 17 + 25?" },
  ],
  { seed: 1 },
);
console.log(`records kept: ${summary.kept}, dropped: ${summary.dropped}`);
for (const record of records) console.log(`${record.id}: ${record.principles.map((p) => p.feature).join(", ")}`);

// The SSO objective (IPO with W and G) on per-sequence summed log-probs and response token counts:
// the policy's, and a frozen reference's. Gradients are d(loss)/d(policy log-prob) per sequence.
const config = objectiveConfigSchema.parse({ loss: "ipo", beta: 0.2, sso: {} });
const { loss, grad, metrics } = ssoObjective(config, [
  {
    policy: { chosen: -42, rejected: -58, posChosen: -30, posRejected: -71, negChosen: -35, negRejected: -49 },
    reference: { chosen: -44, rejected: -55, posChosen: -33, posRejected: -66, negChosen: -36, negRejected: -47 },
    tokens: { chosen: 60, rejected: 64, posChosen: 60, posRejected: 64, negChosen: 55, negRejected: 60 },
  },
]);
console.log(`loss ${loss.toFixed(4)}, W ${metrics["sso/weight"].toFixed(4)}, dL/dl(y+) ${grad[0].policy.chosen}`);
