/** Renders a Markdown table; numbers are formatted with `digits` decimals, null as an em dash. */
export function markdownTable(header: string[], rows: (string | number | null)[][], digits = 3): string {
  const fmt = (c: string | number | null) =>
    c === null ? "—" : typeof c === "number" ? c.toFixed(digits) : c;
  const lines = [`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`];
  for (const r of rows) lines.push(`| ${r.map(fmt).join(" | ")} |`);
  return lines.join("\n");
}
