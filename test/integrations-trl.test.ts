import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { SELFSTEER_BIN } from "./helpers/cli.js";

// integrations/trl_sso_loss.py (the SSO loss for PyTorch/TRL trainers) against `selfsteer objective`:
// the same numbers in, the same loss and the same gradient (torch autograd vs our analytic one) out.

const script = fileURLToPath(new URL("../../integrations/trl_sso_loss.py", import.meta.url));

function pythonWithTorch(): string | null {
  for (const py of ["python3", "/usr/bin/python3"]) {
    const r = spawnSync(py, ["-c", "import torch"], { encoding: "utf8" });
    if (r.status === 0) return py;
  }
  return null;
}

const python = pythonWithTorch();
const work = mkdtempSync(join(tmpdir(), "selfsteer-trl-"));
after(() => rmSync(work, { recursive: true, force: true }));
const skip =
  python === null ? "PyTorch is not installed (apt-get install python3-torch to run this check)" : false;

const keys = ["chosen", "rejected", "posChosen", "posRejected", "negChosen", "negRejected"] as const;

function records(seed: number, count: number): unknown[] {
  let s = seed;
  const rand = () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
  return Array.from({ length: count }, () => {
    const tokens = Object.fromEntries(keys.map((k) => [k, 5 + Math.floor(rand() * 60)]));
    const policy = Object.fromEntries(keys.map((k) => [k, -(0.2 + rand() * 2) * tokens[k]]));
    const reference = Object.fromEntries(keys.map((k) => [k, policy[k] + (rand() - 0.5) * 4]));
    return { policy, reference, tokens };
  });
}

interface Variant {
  loss: "dpo" | "ipo" | "hinge";
  sso: {
    weight: "sigmoid" | "none";
    alpha: number;
    steer: boolean;
    steerBeta: number;
    ftx: number;
    detachWeight: boolean;
  };
}

const variants: Variant[] = [
  {
    loss: "ipo",
    sso: { weight: "sigmoid", alpha: 0.66, steer: true, steerBeta: 0.1, ftx: 0, detachWeight: false },
  },
  {
    loss: "dpo",
    sso: { weight: "sigmoid", alpha: 0.5, steer: true, steerBeta: 0.2, ftx: 0.3, detachWeight: false },
  },
  {
    loss: "ipo",
    sso: { weight: "none", alpha: 0.66, steer: true, steerBeta: 0.1, ftx: 0, detachWeight: false },
  },
  {
    loss: "ipo",
    sso: { weight: "sigmoid", alpha: 0.66, steer: false, steerBeta: 0.1, ftx: 0.5, detachWeight: false },
  },
  {
    loss: "hinge",
    sso: { weight: "sigmoid", alpha: 0.66, steer: true, steerBeta: 0.1, ftx: 0, detachWeight: true },
  },
];

test("integrations/trl_sso_loss.py matches selfsteer objective (loss and gradient)", { skip }, () => {
  const cases = variants.map((v, i) => {
    const recs = records(17 + i, 4);
    const inputPath = join(work, `input-${i}.json`);
    writeFileSync(inputPath, JSON.stringify({ loss: v.loss, beta: 0.2, sso: v.sso, records: recs }));
    const r = spawnSync(process.execPath, [SELFSTEER_BIN, "objective", "--input", inputPath], {
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stderr);
    const expected = JSON.parse(r.stdout) as {
      loss: number;
      grad: Array<{ policy: Record<string, number> }>;
    };
    const config = {
      loss_type: v.loss === "dpo" ? "sigmoid" : v.loss,
      beta: 0.2,
      alpha: v.sso.alpha,
      steer_beta: v.sso.steerBeta,
      use_weight: v.sso.weight === "sigmoid",
      use_steer: v.sso.steer,
      ftx: v.sso.ftx,
      detach_weight: v.sso.detachWeight,
    };
    return { variant: v, expected, config, records: recs };
  });
  // One Python process for every case: importing torch takes seconds.
  const py = spawnSync(python ?? "python3", [script], {
    input: JSON.stringify({ cases: cases.map((c) => ({ config: c.config, records: c.records })) }),
    encoding: "utf8",
  });
  assert.equal(py.status, 0, py.stderr);
  const results = JSON.parse(py.stdout) as Array<{ loss: number; grad: Array<Record<string, number>> }>;
  cases.forEach(({ variant, expected }, i) => {
    const got = results[i];
    const close = (a: number, b: number, what: string) =>
      assert.ok(
        Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)),
        `${variant.loss}/${JSON.stringify(variant.sso)}: ${what}: ${a} vs ${b}`,
      );
    close(got.loss, expected.loss, "loss");
    got.grad.forEach((g, j) => {
      for (const k of keys) close(g[k], expected.grad[j].policy[k] ?? 0, `grad[${j}].${k}`);
    });
  });
});
