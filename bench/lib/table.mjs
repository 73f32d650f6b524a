/** Prints a plain-text table: printTable("Title", ["a", "b"], [[1, 2]], { align: ["l", "r"] }). */
export function formatTable(title, columns, rows, { notes = [] } = {}) {
  const cells = rows.map((row) => row.map((c) => String(c ?? "")));
  const widths = columns.map((c, i) => Math.max(String(c).length, ...cells.map((r) => (r[i] ?? "").length)));
  // The first column is text (left-aligned); the others are figures (right-aligned).
  const line = (row) =>
    row.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join("  ").trimEnd();
  const out = [title, "-".repeat(Math.max(title.length, line(columns).length)), line(columns)];
  out.push(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of cells) out.push(line(row));
  for (const note of notes) out.push(`  ${note}`);
  return out.join("\n");
}

export function printTable(title, columns, rows, options) {
  console.log(`\n${formatTable(title, columns, rows, options)}`);
}
