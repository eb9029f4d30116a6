/**
 * matrix_X64.md / matrix_ARM64.md in the format of Falco's published matrices (kernel-testing's
 * matrix_gen): the table first, then one `# <machine> <test>` section per non-green cell. kmatrix adds
 * ⚠️ (harness error) and ❔ (missing), a legend, and optionally the changes since a baseline.
 */
import type { Arch } from "../config/types.js";
import { type RunDiff, renderBaselineSection } from "./diff.js";
import { type Cell, type LoadedRun, rowsOf, sourceVersions } from "./load.js";
import { codeBlock } from "./text.js";
import { anchorsOf, headingOf, LEGEND, SYMBOL } from "./verdicts.js";

export const MARKDOWN_FILE: Record<Arch, string> = { x86_64: "matrix_X64.md", aarch64: "matrix_ARM64.md" };

const tableCell = (s: string) => s.replace(/\|/g, "\\|");

function section(c: Cell): string {
  const rec = c.record;
  const exit = rec?.exitCode !== undefined ? `Exit Code: ${rec.exitCode}` : "";
  const parts: string[] = [];
  const block = (label: string, text: string | undefined) => {
    if (text) parts.push(`${label}:\n${codeBlock(text)}`);
  };
  switch (c.verdict) {
    case "skip":
      parts.push(`Skipped Condition:\n${codeBlock(c.reason ?? "")}`);
      break;
    case "missing":
      block("Missing", c.reason);
      break;
    case "error":
      parts.push(`Harness error (not a driver failure):\n${codeBlock(c.reason ?? "")}`);
      block("Err", rec?.outputTail || exit);
      break;
    default:
      parts.push(`Msg:\n${codeBlock(c.reason || exit || "failed")}`);
      // As the original: the output, or the exit code when there is no output.
      parts.push(`Err:\n${codeBlock(rec?.outputTail || exit || "no output")}`);
  }
  block("Dmesg", rec?.dmesg?.join("\n"));
  block("Console", rec?.console);
  return `# ${headingOf(c)}\n\n${parts.join("")}`;
}

export function renderMarkdown(run: LoadedRun, arch: Arch, diff?: RunDiff): string {
  const rows = rowsOf(run, arch);
  const anchors = anchorsOf(rows.flatMap((r) => r.cells));
  const link = (c: Cell) =>
    c.verdict === "pass" ? SYMBOL.pass : `[${SYMBOL[c.verdict]}](#${anchors.get(c)})`;
  const lines = [
    `| Kernel | ${run.tests.map(tableCell).join(" | ")} |`,
    `|${" --- |".repeat(run.tests.length + 1)}`,
    ...rows.map((r) => `| ${tableCell(r.machine.machine)} | ${r.cells.map(link).join(" | ")} |`),
  ];
  const tested = sourceVersions(run)
    .map((v) => ` with ${v}`)
    .join("");
  const about = `Run \`${run.run.runId}\` (plan \`${run.run.plan.name}\`${tested}, kmatrix ${run.run.kmatrixVersion}, ${arch}).`;
  const sections = [...anchors.keys()].map(section);
  return [
    `${lines.join("\n")}\n`,
    `${LEGEND}\n\n${about}\n`,
    ...(diff ? [renderBaselineSection(diff, "md", arch)] : []),
    ...sections,
  ].join("\n");
}
