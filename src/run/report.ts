/**
 * Reports of online runs: report.json (machine-readable), report.md (tables like the paper's Table 1
 * and its ablation table) and one plot per metric (SVG and PNG), over one seed or several.
 */
import { join } from "node:path";
import { mean, stddev } from "../eval/metrics.js";
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

/** The content of report.json. */
export interface RunReport {
  name: string;
  seeds: number[];
  methods: Record<string, { iterations: AggregatedIteration[]; perSeed: IterationMetrics[][] }>;
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
  return { name, seeds, methods, provenance };
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
