/**
 * Reads a results directory (layout in src/results/types.ts) into the grid every report renders:
 * one Cell per (machine, test), in a fixed order, so that all reports agree cell for cell.
 */
import { access, readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { ARCHES, type Arch } from "../config/types.js";
import type { CellRecord, MachineSummary, RunRecord, Verdict } from "../results/types.js";
import { UsageError } from "../util/errors.js";

/** "missing": the run owed a verdict for this cell and none was recorded (interrupted, crashed). */
export type CellVerdict = Verdict | "missing";
export const VERDICTS: readonly CellVerdict[] = ["pass", "skip", "fail", "error", "missing"];

export interface Cell {
  machineId: string;
  machine: string;
  arch: Arch;
  test: string;
  verdict: CellVerdict;
  /** The record's reason; for a missing cell, why we think it is missing. */
  reason?: string;
  record?: CellRecord;
  /** Relative to the run directory, when the step's full output exists. */
  logFile?: string;
}

/** A cell without its record: what summary.json lists and what a diff compares. */
export type CellSummary = Pick<Cell, "machineId" | "machine" | "arch" | "test" | "verdict" | "reason">;

export interface LoadedRun {
  dir: string;
  run: RunRecord;
  /** Plan order, then tests found only in records (sorted). */
  tests: string[];
  /** run.json order, then machines found only in records. */
  machines: MachineSummary[];
  /** machines × tests, machine-major. */
  cells: Cell[];
  /** machineId → console log, relative to the run directory. */
  consoles: Record<string, string>;
}

// Only what the reports rely on is checked; unknown fields pass through untouched.
const archSchema = z.enum(ARCHES);
const machineSchema = z.looseObject({
  machineId: z.string(),
  machine: z.string(),
  arch: archSchema,
  boots: z.number().optional(),
  replaced: z.array(z.looseObject({ afterTest: z.string(), reason: z.string() })).optional(),
});
const runSchema = z.looseObject({
  runId: z.string(),
  kmatrixVersion: z.string(),
  startedAt: z.string(),
  plan: z.looseObject({
    name: z.string(),
    tests: z.array(z.string()),
    sources: z.array(z.looseObject({ name: z.string(), revision: z.string().optional() })).optional(),
    /** Tests the sources rule out for the whole run → why (columns.ts), when the engine recorded it. */
    sourceSkips: z.record(z.string(), z.string()).optional(),
  }),
  machines: z.array(machineSchema),
  builders: z
    .array(
      // Lenient on identity (older runs are still reported); what the dialogs print must be text.
      z.looseObject({
        outputTail: z.string().optional(),
        console: z.string().optional(),
      }),
    )
    .optional(),
});
const cellSchema = z.looseObject({
  machineId: z.string(),
  machine: z.string(),
  arch: archSchema,
  test: z.string(),
  verdict: z.enum(["pass", "skip", "fail", "error"]),
  reason: z.string().optional(),
  exitCode: z.number().optional(),
  outputTail: z.string().optional(),
  dmesg: z.array(z.string()).optional(),
  kernelWarnings: z.array(z.string()).optional(),
  leftover: z.array(z.string()).optional(),
  boot: z.number().optional(),
  builder: z.string().optional(),
  console: z.string().optional(),
  durationMs: z.number().optional(),
});

async function readJson<T>(file: string, schema: z.ZodType<T>): Promise<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new UsageError(
      `${file}: ${e.code === "ENOENT" ? "not found (not a kmatrix run directory?)" : e.message}`,
    );
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new UsageError(`${file}: ${issue?.path.join(".") || "(root)"}: ${issue?.message}`);
  }
  return parsed.data;
}

const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    // No such directory, or a stray file where a directory was expected: nothing recorded there.
    if (["ENOENT", "ENOTDIR"].includes((err as NodeJS.ErrnoException).code ?? "")) return [];
    throw err;
  }
}

const key = (machineId: string, test: string) => `${machineId}\u0000${test}`;

export async function loadRun(dir: string): Promise<LoadedRun> {
  const run = (await readJson(path.join(dir, "run.json"), runSchema)) as unknown as RunRecord;

  const records = new Map<string, CellRecord>();
  const logs = new Set<string>();
  for (const machineDir of await listDir(path.join(dir, "cells"))) {
    for (const name of await listDir(path.join(dir, "cells", machineDir))) {
      const rel = path.join("cells", machineDir, name);
      if (name.endsWith(".log")) logs.add(rel);
      if (!name.endsWith(".json")) continue;
      const rec = (await readJson(path.join(dir, rel), cellSchema)) as CellRecord;
      // The path is how the store addresses a cell; a record saying otherwise is corrupt.
      if (rec.machineId !== machineDir || `${rec.test}.json` !== name)
        throw new UsageError(`${path.join(dir, rel)}: record is for ${rec.machineId} ${rec.test}`);
      records.set(key(rec.machineId, rec.test), rec);
    }
  }

  // Never drop a recorded verdict: records outside run.json's grid widen the grid.
  const machines = [...run.machines];
  const tests = [...run.plan.tests];
  const extraTests = new Set<string>();
  for (const rec of records.values()) {
    if (!machines.some((m) => m.machineId === rec.machineId))
      machines.push({ machineId: rec.machineId, machine: rec.machine, arch: rec.arch });
    if (!tests.includes(rec.test)) extraTests.add(rec.test);
  }
  tests.push(...[...extraTests].sort());

  const cells: Cell[] = [];
  for (const m of machines) {
    for (const test of tests) {
      const rec = records.get(key(m.machineId, test));
      const logFile = path.join("cells", m.machineId, `${test}.log`);
      const base = { machineId: m.machineId, machine: m.machine, arch: m.arch, test };
      if (!rec) {
        cells.push({ ...base, verdict: "missing", reason: missingReason(run, m) });
        continue;
      }
      cells.push({
        ...base,
        verdict: rec.verdict,
        ...(rec.reason !== undefined && { reason: rec.reason }),
        record: rec,
        ...(logs.has(logFile) && { logFile }),
      });
    }
  }

  const consoles: Record<string, string> = {};
  for (const m of machines) {
    const rel = path.join("consoles", `${m.machineId}.log`);
    if (await exists(path.join(dir, rel))) consoles[m.machineId] = rel;
  }
  return { dir, run, tests, machines, cells, consoles };
}

function missingReason(run: RunRecord, m: MachineSummary): string {
  if (m.error) return `no result recorded (machine error: ${m.error})`;
  if (run.interrupted) return "no result recorded (the run was interrupted)";
  if (!run.endedAt) return "no result recorded (the run has not finished)";
  return "no result recorded";
}

/** Architectures present in the run, in ARCHES order. */
export function archesOf(run: Pick<LoadedRun, "machines">): Arch[] {
  return ARCHES.filter((a) => run.machines.some((m) => m.arch === a));
}

/** Natural order, so that 5.10 sorts before 6.1 before 6.12. */
export const compareNames = (a: string, b: string) =>
  a.localeCompare(b, "en", { numeric: true }) || (a < b ? -1 : a > b ? 1 : 0);

/** One architecture's rows: machines sorted by name, each with its cells in test order. */
export function rowsOf(run: LoadedRun, arch: Arch): { machine: MachineSummary; cells: Cell[] }[] {
  return run.machines
    .filter((m) => m.arch === arch)
    .sort((a, b) => compareNames(a.machine, b.machine))
    .map((machine) => ({ machine, cells: run.cells.filter((c) => c.machineId === machine.machineId) }));
}

/** `libs 0.23.2` for each source whose version is known, e.g. to say what a matrix tested. */
export function sourceVersions(run: LoadedRun): string[] {
  return (run.run.plan.sources ?? []).flatMap((s) => (s.revision ? [`${s.name} ${s.revision}`] : []));
}
