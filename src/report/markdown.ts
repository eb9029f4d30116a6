/**
 * matrix_X64.md / matrix_ARM64.md, and the same text as <arch>/matrix.md (the file libs' workflows
 * take from kernel-testing's action as `matrix_output`), in one of two styles:
 *
 *   falco    (default) Falco's published matrices, byte for byte when every cell has a driver
 *            verdict: see falco-markdown.ts.
 *   kmatrix  the table first (natural row order, plain headers), then the legend and the run line,
 *            the changes since a baseline, and one `# <machine> <test>` section per non-green cell
 *            with its dmesg and console; ⚠️ harness errors, ❔ missing cells; GitHub anchors.
 */
import path from "node:path";
import type { Arch } from "../config/types.js";
import type { DroppedColumn } from "./columns.js";
import { type RunDiff, renderBaselineSection } from "./diff.js";
import { renderFalcoMarkdown } from "./falco-markdown.js";
import { type Cell, type LoadedRun, rowsOf, sourceVersions } from "./load.js";
import { codeBlock } from "./text.js";
import { anchorsOf, headingOf, LEGEND, SYMBOL } from "./verdicts.js";

export const MARKDOWN_FILE: Record<Arch, string> = { x86_64: "matrix_X64.md", aarch64: "matrix_ARM64.md" };
/** The same matrix where kernel-testing's action leaves it for libs (`matrix_output`), per arch. */
export const archMatrixFile = (arch: Arch) => path.join(arch, "matrix.md");

export const MARKDOWN_STYLES = ["falco", "kmatrix"] as const;
export type MarkdownStyle = (typeof MARKDOWN_STYLES)[number];

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

/** `Run <id> (plan <name> with libs <version>, kmatrix <version>, <arch>).` */
function aboutLine(run: LoadedRun, arch: Arch): string {
  return `Run \`${run.run.runId}\` (${whatRan(run, arch)}).`;
}

/**
 * `Plan <name> with libs <version>, kmatrix <version>, <arch>.` The Falco-style matrix names what
 * ran, not which run: a run merged from shards renders exactly like the same matrix run at once.
 */
function testedLine(run: LoadedRun, arch: Arch): string {
  return `${whatRan(run, arch).replace(/^plan/, "Plan")}.`;
}

function whatRan(run: LoadedRun, arch: Arch): string {
  const tested = sourceVersions(run)
    .map((v) => ` with ${v}`)
    .join("");
  return `plan \`${run.run.plan.name}\`${tested}, kmatrix ${run.run.kmatrixVersion}, ${arch}`;
}

export interface MarkdownOptions {
  style?: MarkdownStyle;
  diff?: RunDiff;
  /** Columns left out (columns.ts); `run` is already without them. */
  dropped?: DroppedColumn[];
}

/** One architecture's matrix; `run` is the run as shown (without the dropped columns). */
export function renderMarkdown(run: LoadedRun, arch: Arch, opts: MarkdownOptions = {}): string {
  return opts.style === "kmatrix"
    ? renderKmatrixMarkdown(run, arch, opts.diff, opts.dropped ?? [])
    : renderFalcoMarkdown(run, arch, testedLine(run, arch), opts.diff);
}

function renderKmatrixMarkdown(
  run: LoadedRun,
  arch: Arch,
  diff: RunDiff | undefined,
  dropped: DroppedColumn[],
): string {
  const rows = rowsOf(run, arch);
  const anchors = anchorsOf(rows.flatMap((r) => r.cells));
  const link = (c: Cell) =>
    c.verdict === "pass" ? SYMBOL.pass : `[${SYMBOL[c.verdict]}](#${anchors.get(c)})`;
  const lines = [
    `| Kernel | ${run.tests.map(tableCell).join(" | ")} |`,
    `|${" --- |".repeat(run.tests.length + 1)}`,
    ...rows.map((r) => `| ${tableCell(r.machine.machine)} | ${r.cells.map(link).join(" | ")} |`),
  ];
  const notShown = dropped.map((d) => `\`${d.test}\` (${d.reason})`).join(", ");
  const about = `${aboutLine(run, arch)}${notShown ? `\n\nNot shown, skipped everywhere: ${notShown}.` : ""}`;
  const sections = [...anchors.keys()].map(section);
  return [
    `${lines.join("\n")}\n`,
    `${LEGEND}\n\n${about}\n`,
    ...(diff ? [renderBaselineSection(diff, "md", arch)] : []),
    ...sections,
  ].join("\n");
}
