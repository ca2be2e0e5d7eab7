import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  normalizeEndpoint,
  OpenAIPolicy,
  OpenAIRequestError,
  parseRetryAfter,
} from "../src/policy/openai.js";
import type { GenerateRequest } from "../src/policy/types.js";
import {
  deadEndpointUrl,
  type FakeOpenAIServer,
  fakeAnswer,
  startFakeOpenAIServer,
} from "./helpers/fake-openai-server.js";

const servers: FakeOpenAIServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function server(options: Parameters<typeof startFakeOpenAIServer>[0] = {}): Promise<FakeOpenAIServer> {
  const s = await startFakeOpenAIServer({ lifetimeMs: 60_000, ...options });
  servers.push(s);
  return s;
}

/** Fast backoff so retry tests take milliseconds. */
function policy(endpoints: string[], extra: Partial<ConstructorParameters<typeof OpenAIPolicy>[0]> = {}) {
  return new OpenAIPolicy({
    endpoints,
    model: "m",
    concurrency: 4,
    timeoutMs: 5000,
    maxRetries: 4,
    backoffBaseMs: 1,
    backoffMaxMs: 5,
    ...extra,
  });
}

function request(user: string, extra: Partial<GenerateRequest> = {}): GenerateRequest {
  return {
    messages: [
      { role: "system", content: "Your response should be Helpful." },
      { role: "user", content: user },
    ],
    temperature: 0.7,
    topP: 0.8,
    maxTokens: 256,
    seed: 7,
    ...extra,
  };
}

test("parseRetryAfter reads delta-seconds and HTTP dates, and ignores junk", () => {
  const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT");
  assert.equal(parseRetryAfter("2", now), 2000);
  assert.equal(parseRetryAfter(" 0.5 ", now), 500);
  assert.equal(parseRetryAfter("0", now), 0);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:03 GMT", now), 3000);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:27:00 GMT", now), 0, "a past date means now");
  assert.equal(parseRetryAfter("soon", now), undefined);
  assert.equal(parseRetryAfter("-3", now), undefined);
  assert.equal(parseRetryAfter("", now), undefined);
  assert.equal(parseRetryAfter(null, now), undefined);
});

test("endpoints are accepted with or without /v1 and a trailing slash; bad ones are rejected", () => {
  assert.equal(normalizeEndpoint("http://127.0.0.1:8000"), "http://127.0.0.1:8000/v1");
  assert.equal(normalizeEndpoint("http://127.0.0.1:8000/"), "http://127.0.0.1:8000/v1");
  assert.equal(normalizeEndpoint("http://127.0.0.1:8000/v1"), "http://127.0.0.1:8000/v1");
  assert.equal(normalizeEndpoint("http://127.0.0.1:8000/v1/"), "http://127.0.0.1:8000/v1");
  assert.equal(
    normalizeEndpoint("https://h.example/proxy/v1/chat/completions"),
    "https://h.example/proxy/v1",
  );
  assert.equal(normalizeEndpoint("https://h.example/proxy"), "https://h.example/proxy/v1");
  assert.throws(() => normalizeEndpoint("localhost:8000"), /not a valid URL|only http/);
  assert.throws(() => normalizeEndpoint("ftp://h/v1"), /only http/);
  assert.throws(() => policy([]), /at least one endpoint/);
  assert.throws(() => policy(["http://h"], { concurrency: 0 }), /concurrency/);
});

test("sends the OpenAI fields, returns texts in order, maps finish_reason and tallies usage", async () => {
  const s = await server();
  const p = policy([`${s.url}/`], { apiKey: "sk-test" });
  const reqs = [
    request("What is 2+2?", { stop: ["\n\n"] }),
    request("Name a colour.", { seed: 8 }),
    request("Write a long essay.", { maxTokens: 3 }),
  ];
  const out = await p.generate(reqs);
  assert.equal(out.length, 3);
  assert.deepEqual(
    out.map((g) => g.length),
    [1, 1, 1],
  );
  const bodies = s.requests.map((r) => r.body);
  const first = bodies.find((b) => b?.messages?.[1]?.content === "What is 2+2?");
  assert.deepEqual(first, {
    model: "m",
    messages: reqs[0].messages,
    temperature: 0.7,
    top_p: 0.8,
    max_tokens: 256,
    n: 1,
    seed: 7,
    stop: ["\n\n"],
  });
  assert.ok(
    s.requests.every((r) => r.authorization === "Bearer sk-test" && r.path === "/v1/chat/completions"),
  );
  assert.ok(!("stop" in (bodies.find((b) => b?.seed === 8) ?? {})), "no empty stop list is sent");
  assert.equal(out[0][0].text, fakeAnswer({ messages: reqs[0].messages, seed: 7 }, 0));
  assert.equal(out[1][0].text, fakeAnswer({ messages: reqs[1].messages, seed: 8 }, 0));
  assert.equal(out[0][0].finishReason, "stop");
  assert.equal(out[2][0].finishReason, "length");
  assert.equal(out[2][0].text.split(" ").length, 3);
  const usage = p.usage();
  assert.equal(usage.requests, 3);
  const wordCount = (t: string) => t.trim().split(/\s+/).length;
  const expectedPrompt = reqs.reduce(
    (sum, r) => sum + r.messages.reduce((a, m) => a + wordCount(m.content), 0),
    0,
  );
  const expectedCompletion = out.flat().reduce((sum, g) => sum + wordCount(g.text), 0);
  assert.equal(usage.promptTokens, expectedPrompt);
  assert.equal(usage.completionTokens, expectedCompletion);
});

test("different system prompts and seeds give different answers from the fake server", async () => {
  const s = await server();
  const p = policy([s.url]);
  const [a, b, c] = await p.generate([
    request("q"),
    request("q", { messages: [{ role: "user", content: "q" }] }),
    request("q", { seed: 99 }),
  ]);
  assert.notEqual(a[0].text, b[0].text);
  assert.notEqual(a[0].text, c[0].text);
});

test("500s are retried until the server recovers", async () => {
  const s = await server({
    failurePlan: [
      { kind: "status", status: 500 },
      { kind: "status", status: 502 },
    ],
  });
  const p = policy([s.url]);
  const [[g]] = await p.generate([request("hello")]);
  assert.equal(g.text, fakeAnswer({ messages: request("hello").messages, seed: 7 }, 0));
  assert.deepEqual(
    s.requests.map((r) => r.mode),
    ["status", "status", "ok"],
  );
  assert.equal(p.stats().retries, 2);
  assert.equal(p.usage().requests, 1, "only successful responses are tallied");
});

test("429 honours Retry-After before retrying", async () => {
  const s = await server({
    failurePlan: [{ kind: "status", status: 429, retryAfter: "1", message: "slow down" }],
  });
  const p = policy([s.url]);
  const started = Date.now();
  const [[g]] = await p.generate([request("hello")]);
  const elapsed = Date.now() - started;
  assert.ok(g.text.length > 0);
  assert.equal(s.requests.length, 2);
  assert.ok(elapsed >= 950, `waited ${elapsed} ms, expected about 1000 (Retry-After: 1)`);
  assert.ok(elapsed < 4000, `waited ${elapsed} ms`);
});

test("a response slower than the timeout is abandoned and retried", async () => {
  const s = await server({ failurePlan: [{ kind: "slow", delayMs: 3000 }] });
  const p = policy([s.url], { timeoutMs: 200 });
  const started = Date.now();
  const [[g]] = await p.generate([request("hello")]);
  assert.ok(g.text.length > 0);
  assert.equal(s.requests.length, 2);
  assert.ok(Date.now() - started < 2000, "did not wait for the slow answer");
});

test("torn bodies, reset connections and malformed JSON are retried", async () => {
  const s = await server({
    failurePlan: [
      { kind: "truncate" },
      { kind: "reset" },
      { kind: "malformed" },
      { kind: "fewerChoices", count: 0 },
    ],
  });
  const p = policy([s.url]);
  const [[g]] = await p.generate([request("hello")]);
  assert.equal(g.text, fakeAnswer({ messages: request("hello").messages, seed: 7 }, 0));
  assert.deepEqual(
    s.requests.map((r) => r.mode),
    ["truncate", "reset", "malformed", "fewerChoices", "ok"],
  );
  assert.equal(p.stats().retries, 4);
});

test("a 400 fails at once with the server's message, without retrying", async () => {
  const s = await server({
    failurePlan: [{ kind: "status", status: 400, message: "max_tokens is too large: 999999" }],
  });
  const p = policy([s.url]);
  await assert.rejects(p.generate([request("hello")]), (err: unknown) => {
    assert.ok(err instanceof OpenAIRequestError);
    assert.equal(err.status, 400);
    assert.equal(err.retryable, false);
    assert.equal(err.exitCode, 2);
    assert.match(err.message, /HTTP 400/);
    assert.match(err.message, /max_tokens is too large: 999999/);
    assert.match(err.message, new RegExp(s.url.replace(/[.]/g, "\\.")));
    return true;
  });
  assert.equal(s.requests.length, 1);
});

test("a wrong API key (401) fails at once", async () => {
  const s = await server({ apiKey: "right" });
  const p = policy([s.url], { apiKey: "wrong" });
  await assert.rejects(p.generate([request("hello")]), /HTTP 401: Incorrect API key provided/);
  assert.equal(s.requests.length, 1);
});

test("when retries run out the error names the endpoint, the status and the last message", async () => {
  const s = await server({
    failurePlan: () => ({ kind: "status", status: 503, message: "model is loading" }),
  });
  const p = policy([s.url], { maxRetries: 2 });
  await assert.rejects(p.generate([request("hello")]), (err: unknown) => {
    assert.ok(err instanceof OpenAIRequestError);
    assert.equal(err.retryable, true);
    assert.equal(err.status, 503);
    assert.equal(err.endpoint, s.url);
    assert.match(err.message, /giving up after 3 attempts/);
    assert.match(err.message, /HTTP 503: model is loading/);
    return true;
  });
  assert.equal(s.requests.length, 3);
});

test("an endpoint that is down is skipped; every request still succeeds on the other one", async () => {
  const s = await server();
  const dead = await deadEndpointUrl();
  const p = policy([dead, s.url], { concurrency: 1, unhealthyAfterFailures: 2, cooldownMs: 60_000 });
  const out = await p.generate(Array.from({ length: 12 }, (_, i) => request(`question ${i}`)));
  assert.equal(out.length, 12);
  assert.ok(out.every((g) => g.length === 1 && g[0].text.length > 0));
  const stats = p.stats();
  const deadStats = stats.endpoints.find((e) => e.url === dead);
  assert.ok(deadStats);
  assert.equal(deadStats.failures, 2, "tried until marked unhealthy, then skipped");
  assert.equal(deadStats.healthy, false);
  assert.equal(s.requests.length, 12);
});

test("requests are spread round-robin over healthy endpoints", async () => {
  const a = await server();
  const b = await server();
  const p = policy([a.url, b.url], { concurrency: 2 });
  await p.generate(Array.from({ length: 10 }, (_, i) => request(`q${i}`)));
  assert.equal(a.requests.length, 5);
  assert.equal(b.requests.length, 5);
});

test("an unhealthy endpoint is probed again after its cool-down", async () => {
  const a = await server({ failurePlan: (r) => (r.index < 2 ? { kind: "status", status: 500 } : undefined) });
  const b = await server();
  const p = policy([a.url, b.url], { concurrency: 1, unhealthyAfterFailures: 2, cooldownMs: 500 });
  // Sequential requests: a fails twice (its 2 failures are retried on b) and is then cooled down.
  for (let i = 0; i < 4; i++) await p.generate([request(`before ${i}`)]);
  assert.equal(a.requests.length, 2);
  assert.equal(p.stats().endpoints[0].healthy, false);
  await new Promise((resolve) => setTimeout(resolve, 550));
  for (let i = 0; i < 4; i++) await p.generate([request(`after ${i}`)]);
  assert.equal(a.requests.length, 4, "a is back in the rotation after the cool-down");
  assert.equal(p.stats().endpoints[0].healthy, true);
});

test("the concurrency limit holds over all requests and endpoints", async () => {
  const solo = await server({ latencyMs: 25 });
  await policy([solo.url], { concurrency: 3 }).generate(
    Array.from({ length: 20 }, (_, i) => request(`q${i}`)),
  );
  assert.equal(solo.maxInFlight, 3, "the server saw exactly the limit in flight");

  const a = await server({ latencyMs: 25 });
  const b = await server({ latencyMs: 25 });
  let inFlight = 0;
  let maxInFlight = 0;
  const countingFetch: typeof fetch = async (input, init) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    try {
      const response = await fetch(input, init);
      await response.clone().text();
      return response;
    } finally {
      inFlight--;
    }
  };
  const p = policy([a.url, b.url], { concurrency: 4, fetchImpl: countingFetch });
  await p.generate(Array.from({ length: 32 }, (_, i) => request(`q${i}`)));
  assert.equal(maxInFlight, 4, "the limit is shared by both endpoints");
  assert.ok(a.maxInFlight <= 4 && b.maxInFlight <= 4);
  assert.ok(a.maxInFlight + b.maxInFlight >= 4, "both servers worked concurrently");
});

test("n > 1 against a server that returns fewer choices asks again for the rest", async () => {
  const s = await server({ maxChoices: 1 });
  const p = policy([s.url]);
  const [gens] = await p.generate([request("hello", { n: 3, seed: 10 })]);
  assert.equal(gens.length, 3);
  assert.equal(new Set(gens.map((g) => g.text)).size, 3, "shifted seeds give distinct samples");
  assert.deepEqual(
    s.requests.map((r) => [r.body?.n, r.body?.seed]),
    [
      [3, 10],
      [2, 11],
      [1, 12],
    ],
  );
  assert.equal(p.stats().topUps, 2);
  const full = await server();
  const [all] = await policy([full.url]).generate([request("hello", { n: 3 })]);
  assert.equal(all.length, 3);
  assert.equal(full.requests.length, 1);
});

test("one request failing for good stops the rest of its batch", async () => {
  const s = await server({
    latencyMs: 20,
    failurePlan: (r) =>
      r.body?.messages?.[1]?.content === "bad"
        ? { kind: "status", status: 400, message: "bad request" }
        : { kind: "status", status: 500 },
  });
  const p = policy([s.url], { maxRetries: 50, backoffBaseMs: 20, backoffMaxMs: 20, concurrency: 8 });
  const started = Date.now();
  await assert.rejects(
    p.generate([request("bad"), ...Array.from({ length: 5 }, (_, i) => request(`q${i}`))]),
    /bad request/,
  );
  assert.ok(Date.now() - started < 2000);
  // Requests already on the wire may still land; after that, nothing new arrives.
  await new Promise((resolve) => setTimeout(resolve, 100));
  const seen = s.requests.length;
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(s.requests.length, seen, "no retries continue in the background");
  assert.ok(seen <= 12, `${seen} requests: the batch kept retrying`);
});
