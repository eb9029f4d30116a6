/**
 * The one door to the reports. renderReport(runDir) reads a results directory and (re)writes
 * everything under <runDir>/report/:
 *
 *   matrix_X64.md, matrix_ARM64.md      Falco-style matrices (only architectures present in the run)
 *   html/index.html, html/<arch>.html   self-contained site
 *   junit.xml                           for GitLab / Jenkins
 *   summary.json                        counts, machines, cells (+ the diff when given a baseline)
 *   <arch>/scap-open-test/<machine>/<test>.json   the original's layout (see scap-open-layout.ts)
 *
 * Rendering is a pure function of the results directory: no clock, no host, so it can be re-run.
 */
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { UsageError } from "../util/errors.js";
import { type DiffInput, diffRuns, type RunDiff } from "./diff.js";
import { htmlFile, renderArchPage, renderIndexPage } from "./html.js";
import { renderJunit } from "./junit.js";
import { archesOf, type LoadedRun, loadRun } from "./load.js";
import { MARKDOWN_FILE, renderMarkdown } from "./markdown.js";
import { writeScapOpenLayout } from "./scap-open-layout.js";
import { buildSummary, type Summary } from "./summary.js";

export { shouldColour } from "./colour.js";
export { checkReportsAgree } from "./consistency.js";
export type { CellChange, ChangeKind, DiffInput, RunDiff } from "./diff.js";
export { diffRuns, hasRegressions, renderBaselineSection, renderDiffTable } from "./diff.js";
export type { Cell, CellVerdict, LoadedRun } from "./load.js";
export { loadRun } from "./load.js";
export type { Summary } from "./summary.js";

export const REPORT_DIR = "report";

export interface RenderOptions {
  /** A previous run to compare with: its run directory, its report/ directory or its summary.json. */
  baseline?: string;
}

export interface RenderResult {
  /** Every file written, absolute, sorted. */
  files: string[];
  summary: Summary;
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
  const summary = buildSummary(run, diff && { origin: opts.baseline ?? "", ...diff });

  const out = path.join(runDir, REPORT_DIR);
  await rm(out, { recursive: true, force: true }); // stale files would contradict the new ones
  await mkdir(path.join(out, "html"), { recursive: true });
  const files: string[] = [];
  const put = async (rel: string, text: string) => {
    const file = path.join(out, rel);
    await writeFile(file, text);
    files.push(file);
  };
  for (const arch of archesOf(run)) {
    await put(MARKDOWN_FILE[arch], renderMarkdown(run, arch, diff));
    await put(path.join("html", htmlFile(arch)), renderArchPage(run, arch, diff));
  }
  await put(path.join("html", "index.html"), renderIndexPage(run, summary, diff));
  await put("junit.xml", renderJunit(run));
  await put("summary.json", `${JSON.stringify(summary, null, 2)}\n`);
  files.push(...(await writeScapOpenLayout(run, out)));
  return { files: files.sort(), summary, ...(diff && { diff }) };
}
