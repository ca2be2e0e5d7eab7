/**
 * The steering study's grid (docs/protocol.md, "What is compared"): `--grid steerBeta=0.1,0.3,1
 * loss=ipo,dpo` runs `sso` in every cell of the product and `pbaa` once per setting of the base loss's
 * axes (loss, beta), each sso cell paired against the pbaa run with the same base loss. Cells have
 * their own run directories and report rows, named after their settings in the grid's order:
 * `sso@steerBeta=0.3,loss=dpo`, `pbaa@loss=dpo` (plain `pbaa` when the grid varies only steerBeta).
 */
import { UserError } from "../util/errors.js";
import { type Method, ONLINE_LOSSES, type OnlineLoss } from "./online.js";

/** The settings a grid may vary: G_beta, the base loss and its beta. */
export const GRID_KEYS = ["steerBeta", "loss", "beta"] as const;
/** One of GRID_KEYS. */
export type GridKey = (typeof GRID_KEYS)[number];

/** One axis of the grid: a setting and its values, in the order given. */
export interface GridAxis {
  key: GridKey;
  values: string[];
}

/** One run of an experiment: a method with its settings, its directory name and its paired baseline. */
export interface RunUnit {
  /** The key in report.json's `methods`, and by default the directory name under the seed's directory. */
  label: string;
  /**
   * The directory of runs this unit shares (a grid cell whose settings are those of a plain method of
   * the same experiment reads that method's runs instead of repeating them).
   */
  dir?: string;
  method: Method;
  loss?: OnlineLoss;
  beta?: number;
  steerBeta?: number;
  /** The label of the run this one is paired against (null: none, it is a baseline). */
  baseline: string | null;
  /** The grid cell's settings, for the report (absent for plain methods). */
  cell?: Partial<Record<GridKey, string | number>>;
}

/** The problem with one `key=v1,v2,...` item of --grid, or null (the flag's rule in src/cli/flags.ts). */
export function gridAxisProblem(item: string): string | null {
  const eq = item.indexOf("=");
  if (eq <= 0) return `expected key=value[,value...] with key one of ${GRID_KEYS.join(", ")}`;
  const key = item.slice(0, eq).trim();
  if (!(GRID_KEYS as readonly string[]).includes(key))
    return `unknown key '${key}' (expected ${GRID_KEYS.join(", ")})`;
  const values = item
    .slice(eq + 1)
    .split(",")
    .map((v) => v.trim());
  for (const value of values) {
    const bad = valueProblem(key as GridKey, value);
    if (bad !== null) return `${key}: value '${value}': ${bad}`;
  }
  if (new Set(values.map((v) => normalise(key as GridKey, v))).size !== values.length)
    return `${key}: a value is repeated`;
  return null;
}

function valueProblem(key: GridKey, value: string): string | null {
  if (key === "loss")
    return (ONLINE_LOSSES as readonly string[]).includes(value)
      ? null
      : `expected one of ${ONLINE_LOSSES.join(", ")}`;
  const n = Number(value);
  if (value === "" || !Number.isFinite(n)) return "expected a number";
  if (key === "beta" && !(n > 0)) return "expected a number > 0";
  if (key === "steerBeta" && !(n >= 0)) return "expected a number >= 0";
  return null;
}

function normalise(key: GridKey, value: string): string {
  return key === "loss" ? value : String(Number(value));
}

/** Parses the items of --grid into axes; a bad item or a key given twice is a UserError naming --grid. */
export function parseGrid(items: readonly string[]): GridAxis[] {
  const axes: GridAxis[] = [];
  for (const item of items) {
    const problem = gridAxisProblem(item);
    if (problem !== null) throw new UserError(`--grid: ${problem}, got '${item}'`);
    const eq = item.indexOf("=");
    const key = item.slice(0, eq).trim() as GridKey;
    if (axes.some((a) => a.key === key)) throw new UserError(`--grid: key '${key}' is given twice`);
    axes.push({
      key,
      values: item
        .slice(eq + 1)
        .split(",")
        .map((v) => normalise(key, v.trim())),
    });
  }
  if (axes.length === 0)
    throw new UserError("--grid: no axis given (e.g. --grid steerBeta=0.1,0.3,1 loss=ipo,dpo)");
  return axes;
}

/** Every combination of the axes' values, the first axis varying slowest. */
function product(axes: readonly GridAxis[]): Array<Array<[GridKey, string]>> {
  let cells: Array<Array<[GridKey, string]>> = [[]];
  for (const axis of axes)
    cells = cells.flatMap((cell) => axis.values.map((v) => [...cell, [axis.key, v] as [GridKey, string]]));
  return cells;
}

function labelOf(method: Method, settings: ReadonlyArray<[GridKey, string]>): string {
  return settings.length === 0 ? method : `${method}@${settings.map(([k, v]) => `${k}=${v}`).join(",")}`;
}

function unitOf(
  method: Method,
  settings: ReadonlyArray<[GridKey, string]>,
  baseline: string | null,
): RunUnit {
  const unit: RunUnit = { label: labelOf(method, settings), method, baseline, cell: {} };
  for (const [key, value] of settings) {
    if (key === "loss") unit.loss = value as OnlineLoss;
    else if (key === "beta") unit.beta = Number(value);
    else unit.steerBeta = Number(value);
    (unit.cell as Record<string, string | number>)[key] = key === "loss" ? value : Number(value);
  }
  return unit;
}

/**
 * The runs of a grid: the pbaa baselines first (one per setting of loss and beta), then every sso
 * cell, each paired against the pbaa run with its loss and beta.
 */
export function gridUnits(axes: readonly GridAxis[]): RunUnit[] {
  const baseAxes = axes.filter((a) => a.key !== "steerBeta");
  const baselines = product(baseAxes).map((settings) => unitOf("pbaa", settings, null));
  const cells = product(axes).map((settings) =>
    unitOf(
      "sso",
      settings,
      labelOf(
        "pbaa",
        settings.filter(([k]) => k !== "steerBeta"),
      ),
    ),
  );
  return [...baselines, ...cells];
}
