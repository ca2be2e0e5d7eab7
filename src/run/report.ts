/**
 * Reports of online runs: report.json (machine-readable), report.md (tables like the paper's Table 1
 * and its ablation table) and one plot per metric (SVG and PNG), over one seed or several.
 */
import { join } from "node:path";
import { mean, stddev } from "../eval/metrics.js";
import { type PairedDifference, pairedBootstrap } from "../eval/paired.js";
import { lineChartSvg, type Series, svgToPng } from "../eval/plot.js";
import { markdownTable } from "../eval/table.js";
import { writeFileAtomic, writeJsonAtomic } from "../util/fsio.js";
import type { IterationMetrics } from "./online.js";

/** The metrics every report shows, with their labels. */
export const REPORT_METRICS = [
  { key: "goldScore", label: "gold score (our MT-Bench)" },
  { key: "winRate", label: "win rate vs base" },
  { key: "winRateLC", label: "LC win rate vs base (our AlpacaEval 2 LC)" },
  { key: "exactMatch", label: "exact match (our GSM8K)" },
  { key: "meanLength", label: "mean answer length (chars)" },
  { key: "signalAccuracy", label: "signal accuracy (gold prefers y+)" },
  { key: "onPolicyGap", label: "on-policy gap (nats/token vs y0)" },
] as const;

/** A metric key of REPORT_METRICS. */
export type ReportMetric = (typeof REPORT_METRICS)[number]["key"];

/** One iteration of one method, averaged over seeds: mean and spread (sample std) per metric. */
export interface AggregatedIteration {
  iteration: number;
  seeds: number;
  [metric: string]: number | null;
}

/** The method every other one is compared with, seed by seed: same data, plain loss on the main pair. */
export const PAIRED_BASELINE = "pbaa";
/** The metrics compared seed by seed against the baseline (names as in `iterations`). */
export const PAIRED_METRICS = [
  "goldScore",
  "winRateLC",
  "meanLength",
  "signalAccuracy",
  "onPolicyGap",
] as const;
/** A metric key of PAIRED_METRICS. */
export type PairedMetric = (typeof PAIRED_METRICS)[number];
/** One iteration's paired difference of a method against the baseline. */
export interface PairedRow extends PairedDifference {
  iteration: number;
}

/** One method's rows in report.json. */
export interface MethodReport {
  iterations: AggregatedIteration[];
  perSeed: IterationMetrics[][];
  /** Per metric, method - pbaa per iteration over the seeds both finished (present with >= 2 such seeds). */
  paired?: Record<PairedMetric, PairedRow[]>;
}

/** The content of report.json. */
export interface RunReport {
  name: string;
  seeds: number[];
  methods: Record<string, MethodReport>;
  /** Where the figures came from (command line, settings). */
  provenance: Record<string, unknown>;
}

/** Averages per-seed iteration rows of each method: `metric` is the mean, `metricStd` the spread. */
export function aggregateRuns(
  name: string,
  seeds: number[],
  perMethod: Record<string, IterationMetrics[][]>,
  provenance: Record<string, unknown>,
): RunReport {
  const methods: RunReport["methods"] = {};
  for (const [method, runs] of Object.entries(perMethod)) {
    const n = Math.max(0, ...runs.map((r) => r.length));
    const iterations: AggregatedIteration[] = [];
    for (let k = 0; k < n; k++) {
      const rows = runs.map((r) => r[k]).filter((r): r is IterationMetrics => r !== undefined);
      const agg: AggregatedIteration = { iteration: k, seeds: rows.length };
      for (const { key } of REPORT_METRICS) {
        const values = rows.map((r) => r[key]).filter((v): v is number => typeof v === "number");
        agg[key] = values.length > 0 ? mean(values) : null;
        agg[`${key}Std`] = values.length > 1 ? stddev(values) : null;
      }
      iterations.push(agg);
    }
    methods[method] = { iterations, perSeed: runs };
  }
  const baseline = perMethod[PAIRED_BASELINE];
  if (baseline !== undefined)
    for (const [method, runs] of Object.entries(perMethod)) {
      if (method === PAIRED_BASELINE) continue;
      const paired = pairedAgainst(method, runs, baseline);
      if (paired !== undefined) methods[method].paired = paired;
    }
  return { name, seeds, methods, provenance };
}

/**
 * Paired differences of one method against the baseline. runs[i] and baseline[i] belong to the same
 * seed (the i-th of the experiment's seeds), so only the first min(len) runs pair up; a seed enters an
 * iteration's row when both finished that iteration with the metric present. Undefined when no
 * iteration has two paired seeds (one seed gives no interval).
 */
function pairedAgainst(
  method: string,
  runs: IterationMetrics[][],
  baseline: IterationMetrics[][],
): Record<PairedMetric, PairedRow[]> | undefined {
  const seeds = Math.min(runs.length, baseline.length);
  const iterations = Math.max(0, ...runs.slice(0, seeds).map((r) => r.length));
  const out = {} as Record<PairedMetric, PairedRow[]>;
  let informative = false;
  for (const metric of PAIRED_METRICS) {
    out[metric] = [];
    for (let k = 0; k < iterations; k++) {
      const diffs: number[] = [];
      for (let i = 0; i < seeds; i++) {
        const a = runs[i][k]?.[metric];
        const b = baseline[i][k]?.[metric];
        if (typeof a === "number" && typeof b === "number") diffs.push(a - b);
      }
      if (diffs.length === 0) continue;
      if (diffs.length >= 2) informative = true;
      out[metric].push({ iteration: k, ...pairedBootstrap(diffs, `${method}/${metric}/${k}`) });
    }
  }
  return informative ? out : undefined;
}

/** Renders report.md: a per-iteration table per method and a final-iteration comparison. */
export function reportMarkdown(report: RunReport): string {
  const lines: string[] = [`# ${report.name}`, ""];
  const seedsNote =
    report.seeds.length > 1
      ? `Mean ± sample std over seeds ${report.seeds.join(", ")}.`
      : `Seed ${report.seeds[0]}.`;
  lines.push(seedsNote, "");
  const cell = (row: AggregatedIteration, key: string, digits = 3): string => {
    const v = row[key];
    if (v === null || v === undefined) return "—";
    const s = row[`${key}Std`];
    return s === null || s === undefined ? v.toFixed(digits) : `${v.toFixed(digits)} ± ${s.toFixed(digits)}`;
  };
  const header = [
    "method",
    "iter",
    "gold",
    "win",
    "LC win",
    "exact",
    "length",
    "signal acc",
    "on-policy gap",
  ];
  const digitsFor = (key: string) => (key === "meanLength" ? 0 : 3);
  lines.push("## Final iteration", "");
  const finalRows = Object.entries(report.methods).map(([method, { iterations }]) => {
    const last = iterations[iterations.length - 1];
    return [
      method,
      String(last.iteration),
      ...REPORT_METRICS.map(({ key }) => cell(last, key, digitsFor(key))),
    ];
  });
  lines.push(markdownTable(header, finalRows), "");
  lines.push("## Per iteration", "");
  const rows = Object.entries(report.methods).flatMap(([method, { iterations }]) =>
    iterations.map((it) => [
      method,
      String(it.iteration),
      ...REPORT_METRICS.map(({ key }) => cell(it, key, digitsFor(key))),
    ]),
  );
  lines.push(markdownTable(header, rows), "");
  const pairedRows = Object.entries(report.methods).flatMap(([method, { paired }]) =>
    paired === undefined
      ? []
      : paired.goldScore
          .filter((row) => row.iteration > 0)
          .map((row) => [
            method,
            String(row.iteration),
            String(row.seeds),
            ...PAIRED_METRICS.map((metric) => {
              const r = paired[metric].find((x) => x.iteration === row.iteration);
              const d = digitsFor(metric);
              return r === undefined ? "—" : `${r.diff.toFixed(d)} [${r.lo.toFixed(d)}, ${r.hi.toFixed(d)}]`;
            }),
          ]),
  );
  if (pairedRows.length > 0) {
    lines.push(`## Paired differences against ${PAIRED_BASELINE}`, "");
    lines.push(
      `Mean over seeds of (method - ${PAIRED_BASELINE}) on the same seed, with a percentile-bootstrap 95% interval.`,
      "",
    );
    lines.push(
      markdownTable(
        ["method", "iter", "seeds", "gold", "LC win", "length", "signal acc", "on-policy gap"],
        pairedRows,
      ),
      "",
    );
  }
  lines.push(
    "Iteration 0 is the base policy. gold: mean gold score of greedy answers to the held-out queries (no system",
    "prompt); win / LC win: against the base policy's answers, raw and length-controlled; exact: exact-match",
    "accuracy on verifiable tasks; signal acc: share of the iteration's training pairs whose y+ the gold judge",
    "prefers; on-policy gap: mean per-token log-prob of y+ and y- under the plain prompt minus the policy's own y0.",
    "",
  );
  return lines.join("\n");
}

/** Writes report.json, report.md and plots/<metric>.svg|png under `dir`; returns the files written. */
export function writeReport(dir: string, report: RunReport): string[] {
  const written: string[] = [];
  writeJsonAtomic(join(dir, "report.json"), report);
  written.push(join(dir, "report.json"));
  writeFileAtomic(join(dir, "report.md"), reportMarkdown(report));
  written.push(join(dir, "report.md"));
  for (const { key, label } of REPORT_METRICS) {
    const series: Series[] = Object.entries(report.methods).map(([method, { iterations }]) => ({
      name: method,
      values: iterations.map((it) => (typeof it[key] === "number" ? (it[key] as number) : null)),
      spread: iterations.map((it) =>
        typeof it[`${key}Std`] === "number" ? (it[`${key}Std`] as number) : null,
      ),
    }));
    if (series.every((s) => s.values.every((v) => v === null))) continue;
    const svg = lineChartSvg(`${report.name}: ${label}`, key, series);
    writeFileAtomic(join(dir, "plots", `${key}.svg`), svg);
    writeFileAtomic(join(dir, "plots", `${key}.png`), svgToPng(svg));
    written.push(join(dir, "plots", `${key}.svg`), join(dir, "plots", `${key}.png`));
  }
  return written;
}
