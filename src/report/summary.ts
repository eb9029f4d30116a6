/** summary.json: the run in numbers plus the full cell list; also usable as a diff baseline. */
import type { Arch } from "../config/types.js";
import type { MachineSummary } from "../results/types.js";
import type { DroppedColumn } from "./columns.js";
import type { RunDiff } from "./diff.js";
import {
  archesOf,
  type Cell,
  type CellSummary,
  type CellVerdict,
  type LoadedRun,
  rowsOf,
  VERDICTS,
} from "./load.js";

/** A cell as summary.json lists it: its verdict and reason, and the WARN() lines of a warned test. */
export type SummaryCell = CellSummary & { kernelWarnings?: string[]; ranIn?: "vm" | "sandbox" };

export interface ArchSummary {
  counts: Record<CellVerdict, number>;
  machines: Pick<
    MachineSummary,
    | "machineId"
    | "machine"
    | "kernelRelease"
    | "kernelVersion"
    | "accel"
    | "bootMs"
    | "error"
    | "boots"
    | "replaced"
  >[];
  /** From the first test's start to the last test's end on this architecture, when cells say. */
  wallMs?: number;
}

export interface Summary {
  /** Bumped when a field changes meaning or goes away. */
  summaryVersion: 1;
  runId: string;
  kmatrixVersion: string;
  plan: { name: string; tests: string[] };
  startedAt: string;
  endedAt?: string;
  durationMs?: number;
  interrupted: boolean;
  totals: Record<CellVerdict, number>;
  arches: Partial<Record<Arch, ArchSummary>>;
  cells: SummaryCell[];
  /**
   * Tests the sources rule out for the whole run (columns.ts): not a column in the Markdown, HTML or
   * scap-open layout (their cells are still listed above, as skips). Absent when there are none.
   */
  droppedColumns?: DroppedColumn[];
  /** Present when the report was rendered with a baseline. */
  baseline?: RunDiff & { origin: string };
}

export function countVerdicts(cells: { verdict: CellVerdict }[]): Record<CellVerdict, number> {
  const counts = Object.fromEntries(VERDICTS.map((v) => [v, 0])) as Record<CellVerdict, number>;
  for (const c of cells) counts[c.verdict]++;
  return counts;
}

function wallMs(cells: Cell[]): number | undefined {
  const spans = cells.flatMap((c) => {
    const start = Date.parse(c.record?.startedAt ?? "");
    return Number.isNaN(start) ? [] : [[start, start + (c.record?.durationMs ?? 0)] as const];
  });
  if (!spans.length) return undefined;
  return Math.max(...spans.map((s) => s[1])) - Math.min(...spans.map((s) => s[0]));
}

export function buildSummary(
  run: LoadedRun,
  baseline?: Summary["baseline"],
  dropped: DroppedColumn[] = [],
): Summary {
  const r = run.run;
  const durationMs = r.endedAt ? Date.parse(r.endedAt) - Date.parse(r.startedAt) : Number.NaN;
  const arches: Summary["arches"] = {};
  for (const arch of archesOf(run)) {
    const cells = run.cells.filter((c) => c.arch === arch);
    const ms = wallMs(cells);
    arches[arch] = {
      counts: countVerdicts(cells),
      machines: rowsOf(run, arch).map(({ machine: m }) => ({
        machineId: m.machineId,
        machine: m.machine,
        ...(m.kernelRelease !== undefined && { kernelRelease: m.kernelRelease }),
        ...(m.kernelVersion !== undefined && { kernelVersion: m.kernelVersion }),
        ...(m.accel !== undefined && { accel: m.accel }),
        ...(m.bootMs !== undefined && { bootMs: m.bootMs }),
        ...(m.error !== undefined && { error: m.error }),
        ...(m.boots !== undefined && { boots: m.boots }),
        ...(m.replaced?.length && { replaced: m.replaced }),
      })),
      ...(ms !== undefined && { wallMs: ms }),
    };
  }
  return {
    summaryVersion: 1,
    runId: r.runId,
    kmatrixVersion: r.kmatrixVersion,
    plan: { name: r.plan.name, tests: run.tests },
    startedAt: r.startedAt,
    ...(r.endedAt !== undefined && { endedAt: r.endedAt }),
    ...(Number.isFinite(durationMs) && { durationMs }),
    interrupted: r.interrupted === true,
    totals: countVerdicts(run.cells),
    arches,
    cells: run.cells.map((c) => ({
      machineId: c.machineId,
      machine: c.machine,
      arch: c.arch,
      test: c.test,
      verdict: c.verdict,
      ...(c.reason !== undefined && { reason: c.reason }),
      ...(c.record?.kernelWarnings?.length && { kernelWarnings: c.record.kernelWarnings }),
      ...(c.record?.ranIn && { ranIn: c.record.ranIn }),
    })),
    ...(dropped.length && { droppedColumns: dropped }),
    ...(baseline && { baseline }),
  };
}
