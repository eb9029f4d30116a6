/**
 * Columns follow the sources' version: a test that the plan's `skipUnless` rules out for the whole
 * run (the sources lack its driver, e.g. libs >= 0.24.0 has no legacy eBPF probe) is not a column in
 * Falco's Markdown, the scap-open layout or the HTML, as kernel-testing has no such column. JUnit and
 * summary.json keep its cells (skips); summary.json and `kmatrix report` say which columns went.
 *
 * How a run tells: run.json's `plan.sourceSkips` (test → the reason the sources rule it out) when the
 * engine recorded it; for runs recorded without it, the cells themselves: every cell of the column
 * skipped before anything ran (no command) with one and the same reason, which names the version
 * of one of the run's sources (`…; libs is master (48dfd53cd23f)`, as the engine words a sources
 * skip) and is not a prerequisite's skip (`needs …`). Either way a cell of a machine that never got
 * that far (harness error, missing) does not keep the column, but at least one cell must be the
 * skip, and a column is never dropped when it would leave the matrix without columns.
 */
import type { Cell, LoadedRun } from "./load.js";

export interface DroppedColumn {
  test: string;
  reason: string;
}

/** run.json's record of the tests the sources rule out (test → reason), when the engine wrote it. */
export function recordedSourceSkips(run: LoadedRun): Record<string, string> | undefined {
  return (run.run.plan as { sourceSkips?: Record<string, string> }).sourceSkips;
}

const undecided = (c: Cell) => c.verdict === "error" || c.verdict === "missing";

function inferredReason(run: LoadedRun, cells: Cell[]): string | undefined {
  const skips = cells.filter((c) => c.verdict === "skip");
  const reason = skips[0]?.reason;
  if (!reason || reason.startsWith("needs ")) return undefined;
  if (skips.some((c) => c.reason !== reason || c.record?.command !== undefined)) return undefined;
  const versions = (run.run.plan.sources ?? []).flatMap((s) =>
    s.revision ? [`; ${s.name} is ${s.revision}`] : [],
  );
  return versions.some((v) => reason.endsWith(v)) ? reason : undefined;
}

/** The columns not shown, in plan order, each with the reason its cells give. */
export function droppedColumns(run: LoadedRun): DroppedColumn[] {
  const recorded = recordedSourceSkips(run);
  const dropped: DroppedColumn[] = [];
  for (const test of run.tests) {
    const cells = run.cells.filter((c) => c.test === test);
    const reason = recorded ? recorded[test] : inferredReason(run, cells);
    if (reason === undefined) continue;
    const isIt = (c: Cell) => c.verdict === "skip" && c.reason === reason;
    if (cells.some(isIt) && cells.every((c) => isIt(c) || undecided(c))) dropped.push({ test, reason });
  }
  return dropped.length < run.tests.length ? dropped : [];
}

/** The run as the Falco-style reports show it: without the dropped columns' tests and cells. */
export function withoutColumns(run: LoadedRun, dropped: DroppedColumn[]): LoadedRun {
  if (!dropped.length) return run;
  const gone = new Set(dropped.map((d) => d.test));
  return {
    ...run,
    tests: run.tests.filter((t) => !gone.has(t)),
    cells: run.cells.filter((c) => !gone.has(c.test)),
  };
}

/** One line for `kmatrix report`: which columns went and why (grouped by reason). */
export function describeDropped(dropped: DroppedColumn[]): string | undefined {
  if (!dropped.length) return undefined;
  const byReason = new Map<string, string[]>();
  for (const d of dropped) byReason.set(d.reason, [...(byReason.get(d.reason) ?? []), d.test]);
  const parts = [...byReason].map(([reason, tests]) => `${tests.join(", ")} (${reason})`);
  return `columns not shown, skipped everywhere because the sources rule them out: ${parts.join("; ")}`;
}
