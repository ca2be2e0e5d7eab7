import { Resvg } from "@resvg/resvg-js";

/** One line of a chart: a name and y values at x = 0, 1, 2, ... (null = missing). */
export interface Series {
  name: string;
  values: (number | null)[];
  /** Optional error bar half-widths (e.g. a standard deviation over seeds). */
  spread?: (number | null)[];
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

/**
 * Renders a line chart of several series over x = 0, 1, 2, ... (iterations, or training steps) as a
 * standalone SVG document. Long series get thinned x labels and no point markers; the legend widens
 * for long series names.
 */
export function lineChartSvg(title: string, yLabel: string, series: Series[], xLabel = "iteration"): string {
  const longestName = Math.max(0, ...series.map((s) => s.name.length));
  const legendWidth = Math.max(150, 48 + Math.ceil(longestName * 6.8));
  const width = 410 + legendWidth;
  const height = Math.max(340, 110 + series.length * 20); // the legend lists every series
  const m = { left: 64, right: legendWidth, top: 40, bottom: 48 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const points = series.flatMap((s) =>
    s.values.flatMap((v, i) => (v === null ? [] : [v - (s.spread?.[i] ?? 0), v + (s.spread?.[i] ?? 0)])),
  );
  let yMin = points.length ? Math.min(...points) : 0;
  let yMax = points.length ? Math.max(...points) : 1;
  if (yMax - yMin < 1e-9) {
    yMin -= 0.5;
    yMax += 0.5;
  }
  const pad = (yMax - yMin) * 0.08;
  yMin -= pad;
  yMax += pad;
  const nX = Math.max(2, ...series.map((s) => s.values.length));
  const tickEvery = niceStep(nX / 10);
  const markers = nX <= 40;
  const xAt = (i: number) => m.left + (plotW * i) / (nX - 1);
  const yAt = (v: number) => m.top + plotH * (1 - (v - yMin) / (yMax - yMin));
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Arial, sans-serif">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${m.left}" y="24" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
  );
  for (let k = 0; k <= 4; k++) {
    const v = yMin + ((yMax - yMin) * k) / 4;
    const y = yAt(v);
    parts.push(
      `<line x1="${m.left}" y1="${y.toFixed(1)}" x2="${m.left + plotW}" y2="${y.toFixed(1)}" stroke="#e5e5e5"/>`,
      `<text x="${m.left - 6}" y="${(y + 4).toFixed(1)}" font-size="11" text-anchor="end">${formatTick(v)}</text>`,
    );
  }
  for (let i = 0; i < nX; i += tickEvery)
    parts.push(
      `<text x="${xAt(i).toFixed(1)}" y="${m.top + plotH + 16}" font-size="11" text-anchor="middle">${i}</text>`,
    );
  parts.push(
    `<rect x="${m.left}" y="${m.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#444"/>`,
    `<text x="${m.left + plotW / 2}" y="${height - 10}" font-size="12" text-anchor="middle">${escapeXml(xLabel)}</text>`,
    `<text x="16" y="${m.top + plotH / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 16 ${m.top + plotH / 2})">${escapeXml(yLabel)}</text>`,
  );
  series.forEach((s, si) => {
    const color = PALETTE[si % PALETTE.length];
    const pts = s.values.flatMap((v, i) => (v === null ? [] : [`${xAt(i).toFixed(1)},${yAt(v).toFixed(1)}`]));
    if (pts.length > 1)
      parts.push(`<polyline points="${pts.join(" ")}" fill="none" stroke="${color}" stroke-width="2.2"/>`);
    s.values.forEach((v, i) => {
      if (v === null) return;
      const sp = s.spread?.[i];
      if (sp) {
        parts.push(
          `<line x1="${xAt(i).toFixed(1)}" y1="${yAt(v - sp).toFixed(1)}" x2="${xAt(i).toFixed(1)}" y2="${yAt(v + sp).toFixed(1)}" stroke="${color}" stroke-width="1.2"/>`,
        );
      }
      if (markers || pts.length === 1)
        parts.push(`<circle cx="${xAt(i).toFixed(1)}" cy="${yAt(v).toFixed(1)}" r="3.5" fill="${color}"/>`);
    });
    const ly = m.top + 14 + si * 20;
    parts.push(
      `<line x1="${m.left + plotW + 14}" y1="${ly - 4}" x2="${m.left + plotW + 34}" y2="${ly - 4}" stroke="${color}" stroke-width="3"/>`,
      `<text x="${m.left + plotW + 40}" y="${ly}" font-size="12">${escapeXml(s.name)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n");
}

/** Rasterises an SVG document to PNG bytes (system fonts are used for text when present). */
export function svgToPng(svg: string): Uint8Array {
  const resvg = new Resvg(svg, {
    background: "white",
    font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans" },
  });
  return resvg.render().asPng();
}

/** The smallest of 1, 2, 5, 10, 20, 50, ... that is at least `x`. */
function niceStep(x: number): number {
  if (x <= 1) return 1;
  for (let p = 1; ; p *= 10) for (const f of [1, 2, 5]) if (f * p >= x) return f * p;
}

function formatTick(v: number): string {
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(3);
}

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}
