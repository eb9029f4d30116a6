/**
 * The matrix as Falco's kernel-testing publishes it: for a run whose cells all have a driver verdict
 * (pass, skip, fail), byte for byte what its matrix_gen renders from the run's scap-open layout
 * (report/<arch>/scap-open-test; see scap-open-layout.ts, whose values this reads):
 *
 *   the table (tablewriter.ts): header `Kernel` + the tests in plan order (matrix_gen orders columns by
 *     the files' modification times, which the layout stamps in plan order); one row per machine in
 *     Go's sort.Strings order (bytes: `Ubuntu-6.5` before `amazonlinux2-5.10`, `x-5.10` before
 *     `x-5.4`); a cell is 🟡 when skipped, else ❌ when rc != 0, else 🟢; 🟡 and ❌ link to
 *     `#<machine>-<test>` with the dots removed (falcoAnchor);
 *   "\n\n";
 *   per 🟡/❌ cell, row by row, `# <machine> <test>` + a blank line, then `Skipped Condition:` and
 *     the condition in a ``` block, or `Msg:` and `Err:` blocks (the output, or `Exit Code: <rc>` when
 *     there is none); each block's text is written as it is plus "\n" (an output ending in a newline
 *     leaves a blank line before the fence, and a line of ``` in it ends the block early, as in
 *     Falco's own pages); every section ends with a blank line.
 *
 * kmatrix's additions, only where its own verdicts appear: ⚠ (harness error) and ❔ (no result), one
 * code point each, link and section like the others (`Harness error (not a driver failure):`,
 * `Missing:`; fences longer than any backtick run inside); then, below the last section, the changes
 * since a baseline (when given), the legend and the run line. Nothing ever comes between the table
 * and the sections.
 */
import type { Arch } from "../config/types.js";
import { type RunDiff, renderBaselineSection } from "./diff.js";
import type { Cell, LoadedRun } from "./load.js";
import { scapOpenResult } from "./scap-open-layout.js";
import { renderTable } from "./tablewriter.js";
import { codeBlock } from "./text.js";
import { FALCO_LEGEND, FALCO_SYMBOL, falcoAnchor, headingOf } from "./verdicts.js";

/** Go's sort.Strings: byte order of the UTF-8 encodings. */
export const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** One architecture's rows in matrix_gen's order, each with its cells in column order. */
export function falcoRowsOf(run: LoadedRun, arch: Arch): { machine: string; cells: Cell[] }[] {
  return run.machines
    .filter((m) => m.arch === arch)
    .sort((a, b) => byteOrder(a.machine, b.machine))
    .map((m) => ({
      machine: m.machine,
      cells: run.tests.flatMap((t) => run.cells.filter((c) => c.machineId === m.machineId && c.test === t)),
    }));
}

/** The symbol matrix_gen would show for the cell's scap-open file; kmatrix's own for ⚠ and ❔. */
export function falcoSymbol(c: Cell): string {
  if (c.verdict === "error" || c.verdict === "missing") return FALCO_SYMBOL[c.verdict];
  const r = scapOpenResult(c);
  return r.skipped ? FALCO_SYMBOL.skip : r.rc !== 0 ? FALCO_SYMBOL.fail : FALCO_SYMBOL.pass;
}

// matrix_gen's code block: the text as it is, then a newline, between ``` lines.
const rawBlock = (text: string) => `\`\`\`\n${text}\n\`\`\`\n`;

function section(c: Cell): string {
  const r = scapOpenResult(c);
  let body: string;
  if (c.verdict === "error") {
    body = `Harness error (not a driver failure):\n${codeBlock(c.reason ?? "")}`;
    if (r.stderr) body += `Err:\n${codeBlock(r.stderr)}`;
    if (c.record?.console) body += `Console:\n${codeBlock(c.record.console)}`;
  } else if (c.verdict === "missing") {
    body = `Missing:\n${codeBlock(c.reason ?? "")}`;
  } else if (r.skipped) {
    body = `Skipped Condition:\n${rawBlock(r.false_condition)}`;
  } else {
    body = `Msg:\n${rawBlock(r.msg)}Err:\n${rawBlock(r.stderr !== "" ? r.stderr : `Exit Code: ${r.rc}`)}`;
  }
  return `# ${headingOf(c)}\n\n${body}\n`;
}

export function renderFalcoMarkdown(run: LoadedRun, arch: Arch, about: string, diff?: RunDiff): string {
  const rows = falcoRowsOf(run, arch);
  const linked: Cell[] = [];
  const table = renderTable(
    ["Kernel", ...run.tests],
    rows.map((r) => [
      r.machine,
      ...r.cells.map((c) => {
        const symbol = falcoSymbol(c);
        if (symbol === FALCO_SYMBOL.pass) return symbol;
        linked.push(c);
        return `[${symbol}](#${falcoAnchor(c.machine, c.test)})`;
      }),
    ]),
  );
  const ours = linked.some((c) => c.verdict === "error" || c.verdict === "missing");
  const tail =
    ours || diff
      ? `${diff ? `${renderBaselineSection(diff, "md", arch)}\n` : ""}${FALCO_LEGEND}\n\n${about}\n`
      : "";
  return `${table}\n\n${linked.map(section).join("")}${tail}`;
}
