/**
 * Compares two runs cell by cell (keyed by machineId + test). A baseline may be a whole run or just
 * its summary.json, so this works on the little both have in common (DiffInput).
 */
import type { Arch } from "../config/types.js";
import type { CellSummary, CellVerdict } from "./load.js";
import { escapeXml } from "./text.js";
import { BASELINE_HEADING, SYMBOL } from "./verdicts.js";

export type DiffCell = CellSummary;
export interface DiffInput {
  run: { runId: string };
  cells: DiffCell[];
}

/**
 * regressed:   was pass, now fail / error / missing (a lost result must not pass a CI gate silently).
 * fixed:       was fail / error / missing, now pass.
 * skip-reason: skipped in both, for a different reason.
 * changed:     any other verdict change (e.g. pass → skip, fail → error).
 * appeared / disappeared: the cell is in only one of the runs (machine or test added or removed).
 */
export type ChangeKind = "regressed" | "fixed" | "skip-reason" | "changed" | "appeared" | "disappeared";
export const CHANGE_KINDS: readonly ChangeKind[] = [
  "regressed",
  "fixed",
  "skip-reason",
  "changed",
  "appeared",
  "disappeared",
];

export interface CellChange {
  kind: ChangeKind;
  machineId: string;
  machine: string;
  arch: Arch;
  test: string;
  /** Absent when the cell appeared. */
  old?: { verdict: CellVerdict; reason?: string };
  /** Absent when the cell disappeared. */
  new?: { verdict: CellVerdict; reason?: string };
}

export interface RunDiff {
  oldRunId: string;
  newRunId: string;
  counts: Record<ChangeKind, number>;
  changes: CellChange[];
}

const BAD = new Set<CellVerdict>(["fail", "error", "missing"]);
const pick = (c: DiffCell) => ({ verdict: c.verdict, ...(c.reason !== undefined && { reason: c.reason }) });

function kindOf(o: DiffCell, n: DiffCell): ChangeKind | undefined {
  if (o.verdict === n.verdict)
    return o.verdict === "skip" && (o.reason ?? "") !== (n.reason ?? "") ? "skip-reason" : undefined;
  if (o.verdict === "pass" && BAD.has(n.verdict)) return "regressed";
  if (BAD.has(o.verdict) && n.verdict === "pass") return "fixed";
  return "changed";
}

export function diffRuns(oldRun: DiffInput, newRun: DiffInput): RunDiff {
  const id = (c: DiffCell) => `${c.machineId}\u0000${c.test}`;
  const olds = new Map(oldRun.cells.map((c) => [id(c), c]));
  const news = new Set(newRun.cells.map(id));
  const changes: CellChange[] = [];
  const where = (c: DiffCell) => ({ machineId: c.machineId, machine: c.machine, arch: c.arch, test: c.test });
  // The new run's grid order, then what only the old run had.
  for (const n of newRun.cells) {
    const o = olds.get(id(n));
    const kind = o ? kindOf(o, n) : "appeared";
    if (kind) changes.push({ kind, ...where(n), ...(o && { old: pick(o) }), new: pick(n) });
  }
  for (const o of oldRun.cells)
    if (!news.has(id(o))) changes.push({ kind: "disappeared", ...where(o), old: pick(o) });
  // Most important first (regressions on top), grid order within a kind.
  changes.sort((a, b) => CHANGE_KINDS.indexOf(a.kind) - CHANGE_KINDS.indexOf(b.kind));
  const counts = Object.fromEntries(CHANGE_KINDS.map((k) => [k, 0])) as Record<ChangeKind, number>;
  for (const c of changes) counts[c.kind]++;
  return { oldRunId: oldRun.run.runId, newRunId: newRun.run.runId, counts, changes };
}

export const hasRegressions = (d: RunDiff) => d.counts.regressed > 0;

const side = (s: CellChange["old"]) => (s ? s.verdict : "-");
const reasonOf = (c: CellChange) =>
  c.kind === "skip-reason" ? `${c.old?.reason ?? ""} → ${c.new?.reason ?? ""}` : (c.new ?? c.old)?.reason;

const SGR: Partial<Record<ChangeKind, string>> = {
  regressed: "31",
  fixed: "32",
  "skip-reason": "33",
  changed: "33",
};

/** A plain-text table for terminals; `colour` adds ANSI colours (see shouldColour). */
export function renderDiffTable(d: RunDiff, opts: { colour?: boolean } = {}): string {
  const head = `baseline ${d.oldRunId} → ${d.newRunId}: ${CHANGE_KINDS.map((k) => `${d.counts[k]} ${k}`).join(", ")}`;
  if (d.changes.length === 0) return `${head}\nno cell changed\n`;
  const rows = [
    ["CHANGE", "MACHINE", "TEST", "WAS", "NOW", "REASON"],
    ...d.changes.map((c) => [c.kind, c.machineId, c.test, side(c.old), side(c.new), reasonOf(c) ?? ""]),
  ];
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => r[i]?.length ?? 0))) ?? [];
  const lines = rows.map((r, n) => {
    const line = r
      .map((v, i) => (i === r.length - 1 ? v : v.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
    const sgr = n > 0 && opts.colour ? SGR[d.changes[n - 1]?.kind ?? "appeared"] : undefined;
    return sgr ? `\x1b[${sgr}m${line}\x1b[0m` : line;
  });
  return `${head}\n${lines.join("\n")}\n`;
}

const mdCell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");
const symbolOf = (s: CellChange["old"]) => (s ? `${SYMBOL[s.verdict]} ${s.verdict}` : "—");

/**
 * The "Changes since baseline" section embedded in matrix_*.md (format "md") or in the HTML pages
 * ("html"); `arch` keeps only that architecture's cells.
 */
export function renderBaselineSection(d: RunDiff, format: "md" | "html", arch?: Arch): string {
  const changes = d.changes.filter((c) => !arch || c.arch === arch);
  const counts = CHANGE_KINDS.map((k) => `${changes.filter((c) => c.kind === k).length} ${k}`).join(", ");
  // Within one architecture the machine name says it all; across architectures it does not.
  const rows = changes.map((c) => [
    c.kind,
    arch ? c.machine : c.machineId,
    c.test,
    symbolOf(c.old),
    symbolOf(c.new),
    reasonOf(c) ?? "",
  ]);
  const head = ["Change", "Kernel", "Test", "Was", "Now", "Reason"];
  if (format === "md") {
    const intro = `Compared with baseline run \`${d.oldRunId}\`: ${counts}.\n`;
    const table = rows.length
      ? `\n| ${head.join(" | ")} |\n|${head.map(() => " --- |").join("")}\n${rows.map((r) => `| ${r.map(mdCell).join(" | ")} |`).join("\n")}\n`
      : "";
    return `# ${BASELINE_HEADING}\n\n${intro}${table}`;
  }
  const tr = (cells: string[], tag: string) =>
    `<tr>${cells.map((v) => `<${tag}>${escapeXml(v)}</${tag}>`).join("")}</tr>`;
  const table = rows.length
    ? `<div class="scroll"><table class="changes"><thead>${tr(head, "th")}</thead><tbody>${rows
        .map((r, i) => tr(r, "td").replace("<tr>", `<tr data-change="${changes[i]?.kind}">`))
        .join("")}</tbody></table></div>`
    : "";
  return `<section id="changes-since-baseline"><h2>${BASELINE_HEADING}</h2><p>Compared with baseline run <code>${escapeXml(d.oldRunId)}</code>: ${escapeXml(counts)}.</p>${table}</section>\n`;
}
