/** How each verdict is shown, in one place so that every report and the consistency check agree. */
import type { Cell, CellVerdict } from "./load.js";
import { slugger } from "./text.js";

export const SYMBOL: Record<CellVerdict, string> = {
  pass: "🟢",
  skip: "🟡",
  fail: "❌",
  error: "⚠️",
  missing: "❔",
};

/**
 * Falco's Markdown (matrix_gen's symbols for pass, skip and fail). kmatrix's own verdicts are one
 * code point each, so that libs' release notes strip their links as they strip the others
 * (`sed 's/\[\(.\)\]([^)]*)/\1/g'`: one character inside the brackets): ⚠ without the emoji
 * variation selector, ❔.
 */
export const FALCO_SYMBOL: Record<CellVerdict, string> = { ...SYMBOL, error: "⚠" };

export const MEANING: Record<CellVerdict, string> = {
  pass: "passed",
  skip: "skipped: not applicable here (its condition says why)",
  fail: "failed: the driver or test is at fault",
  error: "harness error: the harness or the machine is at fault, not the driver",
  missing: "no result was recorded (run interrupted or machine lost)",
};

export const LEGEND =
  "🟢 passed · 🟡 skipped · ❌ failed (driver) · ⚠️ harness error (not the driver) · ❔ no result recorded";

export const FALCO_LEGEND =
  "🟢 passed · 🟡 skipped · ❌ failed (driver) · ⚠ harness error (not the driver) · ❔ no result recorded";

/** matrix_gen's link to a cell's section: `<machine>-<test>` with every dot removed, capitals kept. */
export const falcoAnchor = (machine: string, test: string) => `${machine}-${test}`.replace(/\./g, "");

/** The heading of a cell's section; its GitHub slug is the cell's anchor in Markdown and HTML. */
export const headingOf = (c: Pick<Cell, "machine" | "test">) => `${c.machine} ${c.test}`;

/** Falco-compatible exit code: 0 for pass, the exit code when there is one, else -1. */
export function rcOf(c: Cell): number {
  if (c.verdict === "pass") return 0;
  const code = c.record?.exitCode;
  if (c.verdict === "skip") return code ?? 0;
  // A non-pass must never read as rc 0, or tools built for the original would show it green.
  return code !== undefined && code !== 0 ? code : -1;
}

/**
 * A pass during which the kernel WARN()ed (its reason says "kernel warning: …"). Still a pass: 🟢 and
 * no section in Falco's Markdown, rc 0, no JUnit failure; the HTML, JUnit output and JSON show it.
 */
export const KERNEL_WARNING_PREFIX = "kernel warning:";
export const isWarnedPass = (c: Pick<Cell, "verdict" | "reason" | "record">): boolean =>
  c.verdict === "pass" &&
  ((c.record?.kernelWarnings?.length ?? 0) > 0 || (c.reason?.startsWith(KERNEL_WARNING_PREFIX) ?? false));

/**
 * Anchor of every non-pass cell, given the cells in section order. The baseline heading is always
 * reserved first so that anchors do not move when a report is rendered with or without a baseline.
 */
export function anchorsOf(cells: Cell[]): Map<Cell, string> {
  return idsOf(cells, false);
}

/**
 * The HTML dialogs' ids: every Markdown anchor as anchorsOf gives it, then the passes with a kernel
 * warning (which have no Markdown section), numbered after them so that no Markdown anchor moves.
 */
export function dialogIdsOf(cells: Cell[]): Map<Cell, string> {
  return idsOf(cells, true);
}

function idsOf(cells: Cell[], warnedPasses: boolean): Map<Cell, string> {
  const slug = slugger();
  slug(BASELINE_HEADING);
  const ids = new Map(cells.filter((c) => c.verdict !== "pass").map((c) => [c, slug(headingOf(c))]));
  if (warnedPasses) for (const c of cells.filter(isWarnedPass)) ids.set(c, slug(headingOf(c)));
  return ids;
}
export const BASELINE_HEADING = "Changes since baseline";
