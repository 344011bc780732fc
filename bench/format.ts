// Text output of the benchmark: numbers as the tables print them, and the tables.

export const fixed = (value: number, digits = 2): string => (Number.isFinite(value) ? value.toFixed(digits) : "n/a");
/** A rate or count, rounded, with thousands separators. */
export const count = (value: number): string => (Number.isFinite(value) ? Math.round(value).toLocaleString("en-US") : "n/a");
export const ms = (value: number): string => (Number.isFinite(value) ? value.toFixed(value < 10 ? 3 : 1) : "n/a");
export const percent = (value: number): string => (Number.isFinite(value) ? `${Math.round(value * 100)}%` : "n/a");
export const kib = (value: number): string => (Number.isFinite(value) ? value.toFixed(value < 100 ? 1 : 0) : "n/a");

export function mean(values: number[]): number {
  const finite = values.filter(Number.isFinite);
  return finite.length === 0 ? NaN : finite.reduce((sum, value) => sum + value, 0) / finite.length;
}

/** Columns separated by two spaces; the `leftAligned` ones (text) padded right, the others (numbers) left. */
export function formatTable(header: string[], rows: string[][], leftAligned: ReadonlySet<number> = new Set([0])): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)));
  const format = (row: string[]): string =>
    row
      .map((text, column) => (leftAligned.has(column) ? text.padEnd(widths[column] ?? 0) : text.padStart(widths[column] ?? 0)))
      .join("  ")
      .trimEnd();
  const rule = widths.map((width) => "-".repeat(width)).join("  ");
  return [format(header), rule, ...rows.map(format)].join("\n");
}

/** A section's printed text and the data written to results/latest.json. */
export interface SectionReport {
  name: string;
  lines: string[];
  data: unknown;
}
