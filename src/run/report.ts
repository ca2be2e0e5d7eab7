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
import type { GridAxis, RunUnit } from "./grid.js";
import type { IterationMetrics } from "./online.js";
import { GENERATOR_STEP_METRICS, STEP_METRICS } from "./step-metrics.js";

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

/**
 * One iteration of one method, averaged over seeds: mean and spread (sample std) per metric. The
 * iteration's mean training metrics (STEP_METRICS) appear as `train/<name>` (e.g. `train/loss/steer`),
 * and a generator's as `generator/<name>`, where present.
 */
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
  /**
   * Per metric, method - its baseline per iteration over the seeds both finished (present with >= 2
   * such seeds). The baseline is pbaa, or for a grid cell the pbaa run with the cell's loss and beta.
   */
  paired?: Record<PairedMetric, PairedRow[]>;
  /** The run this one is paired against, when it is not pbaa itself (grid cells). */
  pairedAgainst?: string;
  /** A grid cell's method and settings. */
  cell?: { method: string } & Record<string, string | number>;
  /** A grid cell with the experiment's own settings: the method whose runs it shares. */
  sameRunsAs?: string;
}

/**
 * The pairs of methods that isolate one part of SSO (docs/protocol.md, "What is compared"): the full
 * method minus the variant without that part, so a positive difference is what the part adds.
 */
export const ABLATION_PAIRS: ReadonlyArray<readonly [string, string]> = [
  ["sso", "no-weight"],
  ["sso", "no-steer"],
  ["sso", "generator"],
  ["generator", "generator-pos"],
  ["generator", "generator-neg"],
];

/** One ablation comparison in report.json: `method - against`, per metric and iteration. */
export interface AblationReport {
  method: string;
  against: string;
  paired: Record<PairedMetric, PairedRow[]>;
}

/** The content of report.json. */
export interface RunReport {
  name: string;
  seeds: number[];
  methods: Record<string, MethodReport>;
  /** SSO against its ablations, for the pairs of ABLATION_PAIRS that both ran on >= 2 seeds. */
  ablations?: AblationReport[];
  /** The steering study's grid, when the experiment ran one (its cells are rows of `methods`). */
  grid?: GridAxis[];
  /** Where the figures came from (command line, settings). */
  provenance: Record<string, unknown>;
}

/** What aggregateRuns needs beyond the rows: which run pairs against which, and the grid. */
export interface AggregateOptions {
  /** The experiment's runs; without them every method other than pbaa pairs against pbaa. */
  units?: readonly RunUnit[];
  grid?: GridAxis[];
}

/** Averages per-seed iteration rows of each method: `metric` is the mean, `metricStd` the spread. */
export function aggregateRuns(
  name: string,
  seeds: number[],
  perMethod: Record<string, IterationMetrics[][]>,
  provenance: Record<string, unknown>,
  options: AggregateOptions = {},
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
      const means = (prefix: string, keys: readonly string[], of: (r: IterationMetrics) => unknown) => {
        for (const key of keys) {
          const values = rows
            .map((r) => (of(r) as Record<string, number> | null | undefined)?.[key])
            .filter((v): v is number => typeof v === "number");
          if (values.length === 0) continue;
          agg[`${prefix}/${key}`] = mean(values);
          agg[`${prefix}/${key}Std`] = values.length > 1 ? stddev(values) : null;
        }
      };
      means("train", STEP_METRICS, (r) => r.train);
      means("generator", GENERATOR_STEP_METRICS, (r) => r.generator?.train);
      iterations.push(agg);
    }
    methods[method] = { iterations, perSeed: runs };
  }
  for (const [method, runs] of Object.entries(perMethod)) {
    const unit = options.units?.find((u) => u.label === method);
    const against = unit !== undefined ? unit.baseline : method === PAIRED_BASELINE ? null : PAIRED_BASELINE;
    if (unit?.cell !== undefined) methods[method].cell = { method: unit.method, ...unit.cell };
    if (unit?.dir !== undefined) methods[method].sameRunsAs = unit.dir;
    if (against === null) continue;
    if (against !== PAIRED_BASELINE) methods[method].pairedAgainst = against;
    const baseline = perMethod[against];
    if (baseline === undefined) continue;
    const paired = pairedAgainst(method, runs, baseline);
    if (paired !== undefined) methods[method].paired = paired;
  }
  const ablations: AblationReport[] = [];
  for (const [method, against] of ABLATION_PAIRS) {
    if (perMethod[method] === undefined || perMethod[against] === undefined) continue;
    const paired = pairedAgainst(`${method}-vs-${against}`, perMethod[method], perMethod[against]);
    if (paired !== undefined) ablations.push({ method, against, paired });
  }
  return {
    name,
    seeds,
    methods,
    ...(ablations.length === 0 ? {} : { ablations }),
    ...(options.grid === undefined ? {} : { grid: options.grid }),
    provenance,
  };
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

/** Renders report.md: a per-iteration table per method and a final-iteration comparison; lists `plots`. */
export function reportMarkdown(report: RunReport, plots: readonly string[] = []): string {
  const lines: string[] = [`# ${report.name}`, ""];
  // A partial experiment (resumed or still running) has finished fewer seeds than it lists.
  const finished = Math.min(
    ...Object.values(report.methods).map((m) => m.iterations[m.iterations.length - 1]?.seeds ?? 0),
  );
  const seedsNote =
    report.seeds.length > 1
      ? `Mean ± sample std over seeds ${report.seeds.join(", ")}.` +
        (finished < report.seeds.length
          ? ` Partial: some methods have finished only ${finished} of the ${report.seeds.length} seeds (see each row's seed count in report.json).`
          : "")
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
            ...pairedCells(paired, row.iteration, digitsFor),
          ]),
  );
  if (pairedRows.length > 0) {
    lines.push(`## Paired differences against ${PAIRED_BASELINE}`, "");
    lines.push(
      `Mean over seeds of (method - ${PAIRED_BASELINE}) on the same seed, with a percentile-bootstrap 95% interval` +
        " (grid cells: against the pbaa run with the same base loss).",
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
  if (report.ablations !== undefined) {
    lines.push("## SSO against its ablations", "");
    lines.push(
      "Mean over seeds of (method - ablation) on the same seed, with a percentile-bootstrap 95% interval: what the",
      "part the ablation removes adds (no-weight: W; no-steer: G; generator: the one-policy form against the",
      "generator form; generator-pos / -neg: the other steering pair of the generator).",
      "",
    );
    const ablationRows = report.ablations.flatMap(({ method, against, paired }) =>
      paired.goldScore
        .filter((row) => row.iteration > 0)
        .map((row) => [
          `${method} - ${against}`,
          String(row.iteration),
          String(row.seeds),
          ...pairedCells(paired, row.iteration, digitsFor),
        ]),
    );
    lines.push(
      markdownTable(
        ["comparison", "iter", "seeds", "gold", "LC win", "length", "signal acc", "on-policy gap"],
        ablationRows,
      ),
      "",
    );
  }
  if (report.grid !== undefined) lines.push(...steeringStudy(report, digitsFor));
  lines.push(
    "Iteration 0 is the base policy. gold: mean gold score of greedy answers to the held-out queries (no system",
    "prompt); win / LC win: against the base policy's answers, raw and length-controlled; exact: exact-match",
    "accuracy on verifiable tasks; signal acc: share of the iteration's training pairs whose y+ the gold judge",
    "prefers; on-policy gap: mean per-token log-prob of y+ and y- under the plain prompt minus the policy's own y0.",
    "",
  );
  if (plots.length > 0) {
    lines.push(
      "## Plots",
      "",
      "Per iteration (mean ± std over seeds), and per training step (iterations 1, 2, ... one after the other; mean over",
      "seeds step by step): the losses, W and the reward margins of the three pairs, and the generator's own.",
      "",
      ...plots.map((p) => `- [${p}](${p})`),
      "",
    );
  }
  return lines.join("\n");
}

/** One iteration's paired differences, one "diff [lo, hi]" cell per metric of PAIRED_METRICS. */
function pairedCells(
  paired: Record<PairedMetric, PairedRow[]>,
  iteration: number,
  digitsFor: (key: string) => number,
): string[] {
  return PAIRED_METRICS.map((metric) => {
    const r = paired[metric].find((x) => x.iteration === iteration);
    const d = digitsFor(metric);
    return r === undefined ? "—" : `${r.diff.toFixed(d)} [${r.lo.toFixed(d)}, ${r.hi.toFixed(d)}]`;
  });
}

/**
 * The steering study's table: per sso cell of the grid, its final-iteration gold score and its paired
 * difference against the pbaa run with the same base loss (gold and LC win rate, 95% intervals).
 */
function steeringStudy(report: RunReport, digitsFor: (key: string) => number): string[] {
  const interval = (rows: PairedRow[] | undefined, iteration: number, digits: number): string => {
    const r = rows?.find((x) => x.iteration === iteration);
    return r === undefined
      ? "—"
      : `${r.diff.toFixed(digits)} [${r.lo.toFixed(digits)}, ${r.hi.toFixed(digits)}]`;
  };
  const keys = (report.grid ?? []).map((a) => a.key);
  const rows = Object.entries(report.methods)
    .filter(([, m]) => m.cell !== undefined && m.cell.method === "sso")
    .map(([label, m]) => {
      const last = m.iterations[m.iterations.length - 1];
      const gold = last?.goldScore;
      return [
        label,
        ...keys.map((k) => String(m.cell?.[k] ?? "—")),
        m.pairedAgainst ?? PAIRED_BASELINE,
        String(last?.seeds ?? 0),
        String(last?.iteration ?? "—"),
        typeof gold === "number" ? gold.toFixed(3) : "—",
        interval(m.paired?.goldScore, last?.iteration ?? -1, digitsFor("goldScore")),
        interval(m.paired?.winRateLC, last?.iteration ?? -1, digitsFor("winRateLC")),
      ];
    });
  if (rows.length === 0) return [];
  return [
    "## Steering study",
    "",
    "Each sso cell against the pbaa run with the same base loss, at the final iteration: the cell's mean gold score,",
    "and the mean over seeds of (cell - pbaa) with a percentile-bootstrap 95% interval (— with fewer than 2 seeds).",
    "",
    markdownTable(
      ["cell", ...keys, "against", "seeds", "iter", "gold", "gold diff [95%]", "LC win diff [95%]"],
      rows,
    ),
    "",
  ];
}

/** Per-step training curves of one run, mean over seeds (src/run/step-metrics.ts: stepSeries). */
export interface StepCurves {
  /** The policy's STEP_METRICS per step. */
  policy: Record<string, (number | null)[]>;
  /** The generator's GENERATOR_STEP_METRICS per step (generator methods only). */
  generator: Record<string, (number | null)[]>;
}

const STEP_LABELS: Record<string, string> = {
  "loss/main": "main-pair loss B(main)",
  "loss/steer": "steering loss",
  "sso/weight": "W (sso/weight)",
  "rewards/margins": "reward margin, main pair",
  "p_rewards/margins": "reward margin, pos pair (p+)",
  "n_rewards/margins": "reward margin, neg pair (p-)",
  "loss/sft": "SFT loss",
};

/** plots/steps-<metric>.svg|png (and steps-generator-<metric>) of every run that logged the metric. */
function writeStepPlots(dir: string, name: string, curves: Record<string, StepCurves>): string[] {
  const files: string[] = [];
  const plot = (group: "policy" | "generator", keys: readonly string[], prefix: string, who: string) => {
    for (const key of keys) {
      const series: Series[] = Object.entries(curves)
        .filter(([, c]) => c[group][key] !== undefined)
        .map(([label, c]) => ({ name: label, values: c[group][key] }));
      if (series.length === 0) continue;
      const svg = lineChartSvg(`${name}: ${who}${STEP_LABELS[key] ?? key}`, key, series, "training step");
      const stem = `plots/${prefix}${key.replace(/\//g, "_")}`;
      writeFileAtomic(join(dir, `${stem}.svg`), svg);
      writeFileAtomic(join(dir, `${stem}.png`), svgToPng(svg));
      files.push(`${stem}.png`);
    }
  };
  plot("policy", STEP_METRICS, "steps-", "");
  plot("generator", GENERATOR_STEP_METRICS, "steps-generator-", "generator's ");
  return files;
}

/**
 * Writes report.json, report.md, plots/<metric>.svg|png per iteration and, given the runs' per-step
 * curves, plots/steps-*.svg|png under `dir`; returns the files written.
 */
export function writeReport(
  dir: string,
  report: RunReport,
  curves: Record<string, StepCurves> = {},
): string[] {
  const written: string[] = [];
  const plots: string[] = [];
  writeJsonAtomic(join(dir, "report.json"), report);
  written.push(join(dir, "report.json"));
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
    plots.push(`plots/${key}.png`);
  }
  for (const file of writeStepPlots(dir, report.name, curves)) {
    plots.push(file);
    written.push(join(dir, file), join(dir, file.replace(/\.png$/, ".svg")));
  }
  writeFileAtomic(join(dir, "report.md"), reportMarkdown(report, plots));
  written.push(join(dir, "report.md"));
  return written;
}
