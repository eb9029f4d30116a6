/**
 * The one door to the reports. renderReport(runDir) reads a results directory and (re)writes
 * everything under <runDir>/report/:
 *
 *   matrix_X64.md, matrix_ARM64.md      Falco's matrices (only architectures present in the run);
 *                                       --style kmatrix: kmatrix's richer Markdown (markdown.ts)
 *   <arch>/matrix.md                    the same text, where libs' workflows expect `matrix_output`
 *   html/index.html, html/<arch>.html   self-contained site
 *   junit.xml                           for GitLab / Jenkins
 *   summary.json                        counts, machines, cells (+ the diff when given a baseline)
 *   <arch>/scap-open-test/<machine>/<test>.json   the original's layout (see scap-open-layout.ts)
 *
 * A test that the plan's sources rule out for the whole run (columns.ts) is no column in the
 * matrices, the HTML pages or the scap-open layout; JUnit and summary.json keep its cells.
 *
 * Rendering is a pure function of the results directory: no clock, no host, so it can be re-run.
 */
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { UsageError } from "../util/errors.js";
import { type DroppedColumn, droppedColumns, withoutColumns } from "./columns.js";
import { type DiffInput, diffRuns, type RunDiff } from "./diff.js";
import { htmlFile, renderArchPage, renderIndexPage } from "./html.js";
import { renderJunit } from "./junit.js";
import { archesOf, type LoadedRun, loadRun } from "./load.js";
import { archMatrixFile, MARKDOWN_FILE, type MarkdownStyle, renderMarkdown } from "./markdown.js";
import { writeScapOpenLayout } from "./scap-open-layout.js";
import { buildSummary, type Summary } from "./summary.js";

export { shouldColour } from "./colour.js";
export type { DroppedColumn } from "./columns.js";
export { describeDropped } from "./columns.js";
export { checkReportsAgree } from "./consistency.js";
export type { CellChange, ChangeKind, DiffInput, RunDiff } from "./diff.js";
export { diffRuns, hasRegressions, renderBaselineSection, renderDiffTable } from "./diff.js";
export type { Cell, CellVerdict, LoadedRun } from "./load.js";
export { loadRun } from "./load.js";
export type { MarkdownStyle } from "./markdown.js";
export { MARKDOWN_STYLES } from "./markdown.js";
export type { Summary } from "./summary.js";

export const REPORT_DIR = "report";

export interface RenderOptions {
  /** A previous run to compare with: its run directory, its report/ directory or its summary.json. */
  baseline?: string;
  /** The Markdown matrices' style: Falco's (default) or kmatrix's own. */
  style?: MarkdownStyle;
}

export interface RenderResult {
  /** Every file written, absolute, sorted. */
  files: string[];
  summary: Summary;
  /** Columns the matrices, HTML pages and scap-open layout leave out, and why. */
  dropped: DroppedColumn[];
  /** Present when a baseline was given. */
  diff?: RunDiff;
}

/** Loads a baseline from a run directory (run.json), a report directory or a summary.json file. */
export async function loadBaseline(p: string): Promise<DiffInput> {
  const st = await stat(p).catch(() => {
    throw new UsageError(`${p}: baseline not found`);
  });
  if (st.isDirectory()) {
    if (await stat(path.join(p, "run.json")).catch(() => undefined)) return loadRun(p);
    return loadBaseline(path.join(p, "summary.json"));
  }
  let s: Partial<Summary>;
  try {
    s = JSON.parse(await readFile(p, "utf8"));
  } catch (err) {
    throw new UsageError(`${p}: not a kmatrix summary.json (${(err as Error).message})`);
  }
  if (typeof s.runId !== "string" || !Array.isArray(s.cells))
    throw new UsageError(`${p}: not a kmatrix summary.json (no runId or cells)`);
  return { run: { runId: s.runId }, cells: s.cells };
}

export async function renderReport(runDir: string, opts: RenderOptions = {}): Promise<RenderResult> {
  const run: LoadedRun = await loadRun(runDir);
  // Before clearing report/, which may be where the baseline lives.
  const diff = opts.baseline ? diffRuns(await loadBaseline(opts.baseline), run) : undefined;
  const dropped = droppedColumns(run);
  const shown = withoutColumns(run, dropped);
  const summary = buildSummary(run, diff && { origin: opts.baseline ?? "", ...diff }, dropped);

  const out = path.join(runDir, REPORT_DIR);
  await rm(out, { recursive: true, force: true }); // stale files would contradict the new ones
  await mkdir(path.join(out, "html"), { recursive: true });
  const files: string[] = [];
  const put = async (rel: string, text: string) => {
    const file = path.join(out, rel);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, text);
    files.push(file);
  };
  for (const arch of archesOf(run)) {
    const md = renderMarkdown(shown, arch, { style: opts.style, diff, dropped });
    await put(MARKDOWN_FILE[arch], md);
    await put(archMatrixFile(arch), md);
    await put(path.join("html", htmlFile(arch)), renderArchPage(shown, arch, diff, dropped));
  }
  await put(path.join("html", "index.html"), renderIndexPage(run, summary, diff));
  await put("junit.xml", renderJunit(run));
  await put("summary.json", `${JSON.stringify(summary, null, 2)}\n`);
  files.push(...(await writeScapOpenLayout(shown, out)));
  return { files: files.sort(), summary, dropped, ...(diff && { diff }) };
}
