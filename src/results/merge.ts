/**
 * Runs made of parts: `kmatrix merge` reassembles one run from the runs of a sharded fan-out
 * (`kmatrix run --shard i/n`), and `kmatrix run --builders-from` takes builders from an earlier run.
 * Both work on the on-disk format of types.ts and nothing else.
 *
 * Runs can be merged when they ran the same plan (name, tests, variables) on the same sources
 * (name and revision) with the same kmatrix; otherwise a UsageError names the field and both runs.
 * A cell or machine in two runs is an error too. The merged directory gets every run's cells
 * (records and logs) and machine consoles, one record per builder (records that describe the same
 * build, equal or sharing a cache key, are one builder: kept once) with its artifacts, log and
 * console, and a run.json whose machines are the runs' machines in argument order, started at the
 * earliest start and ended at the latest end.
 */
import { cp, mkdir, readdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { isDeepStrictEqual } from "node:util";
import type { Arch } from "../config/types.js";
import { UsageError } from "../util/errors.js";
import { readExisting } from "./store.js";
import type { BuilderRecord, CellRecord, RunRecord } from "./types.js";

export interface RunOnDisk {
  dir: string;
  run: RunRecord;
  cells: CellRecord[];
}

/** A results directory, or a one-line usage error naming it. */
export async function readRunDir(dir: string, flag?: string): Promise<RunOnDisk> {
  try {
    const { run, cells } = await readExisting(dir);
    return { dir, run, cells };
  } catch {
    throw new UsageError(
      `${flag ? `${flag} ` : ""}${dir}: not a kmatrix results directory (no readable run.json)`,
    );
  }
}

/** What two runs must share, field by field, as they are named in errors. */
export function identity(run: RunRecord, opts: { tests?: boolean } = {}): [field: string, value: string][] {
  const env = Object.entries(run.plan.env ?? {})
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`);
  const sources = [...(run.plan.sources ?? [])]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((s) => `${s.name} ${s.revision ?? "(revision unknown)"}`);
  return [
    ["kmatrix version", run.kmatrixVersion],
    ["plan", run.plan.name],
    ...(opts.tests === false ? [] : ([["plan tests", run.plan.tests.join(", ")]] as [string, string][])),
    ["plan variables", env.join(" ") || "(none)"],
    ["sources", sources.join(", ") || "(none)"],
  ];
}

/** Throws a one-line UsageError when `b` differs from `a` in what they must share. */
export function checkSameRun(
  a: RunOnDisk,
  b: RunOnDisk,
  opts: { tests?: boolean; what?: string } = {},
): void {
  const ours = identity(a.run, opts);
  const theirs = new Map(identity(b.run, opts));
  for (const [field, value] of ours) {
    const other = theirs.get(field);
    if (other !== value)
      throw new UsageError(
        `${opts.what ?? "cannot merge"}: the runs differ in ${field}: ${a.dir} has "${value}", ${b.dir} has "${other}"`,
      );
  }
}

/**
 * Builder records that describe the same build: equal, or successful with the same cache key (the
 * same inputs; one run built it, another took it from kmatrix's builder cache).
 */
export function sameBuild(a: BuilderRecord, b: BuilderRecord): boolean {
  if (isDeepStrictEqual(a, b)) return true;
  return a.ok && b.ok && a.cacheKey !== undefined && a.cacheKey === b.cacheKey;
}

/** Where a builder's files live in a run directory. */
export function builderFiles(r: Pick<BuilderRecord, "arch" | "builder" | "machineId">): string[] {
  return [
    join("artifacts", r.arch, r.builder),
    join("builders", r.arch, `${r.builder}.json`),
    join("builders", r.arch, `${r.builder}.log`),
    join("consoles", `${r.machineId}.builder-${r.builder}.log`),
  ];
}

async function copyIfThere(from: string, to: string): Promise<boolean> {
  try {
    await mkdir(join(to, ".."), { recursive: true });
    await cp(from, to, { recursive: true, verbatimSymlinks: true, errorOnExist: true, force: false });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** Copies a builder's artifacts, record, log and console from one run directory to another. */
export async function copyBuilder(r: BuilderRecord, fromDir: string, toDir: string): Promise<void> {
  for (const rel of builderFiles(r)) await copyIfThere(join(fromDir, rel), join(toDir, rel));
}

/**
 * `kmatrix run --builders-from <run>`: the successful builders of `from` for these architectures
 * whose artifacts are on disk, copied into `outDir` (records, logs, consoles, artifacts); the run
 * treats them as kept, as --resume does its own.
 */
export async function importBuilders(
  from: RunOnDisk,
  outDir: string,
  wanted: { arches: Arch[]; builders: string[] },
): Promise<BuilderRecord[]> {
  const taken: BuilderRecord[] = [];
  for (const r of from.run.builders) {
    if (!r.ok || !wanted.arches.includes(r.arch) || !wanted.builders.includes(r.builder)) continue;
    if (!(await exists(join(from.dir, "artifacts", r.arch, r.builder)))) continue;
    await copyBuilder(r, from.dir, outDir);
    taken.push(r);
  }
  return taken;
}

async function exists(p: string): Promise<boolean> {
  return readdir(p).then(
    () => true,
    () => false,
  );
}

export interface MergeOutcome {
  run: RunRecord;
  /** One line each: what the reader of the merged run should know (builders ran twice, …). */
  notes: string[];
}

/** `YYYYMMDD-HHMMSS`, as kmatrix run names its runs. */
export const runIdAt = (iso: string) =>
  new Date(iso).toISOString().replace(/[-:]/g, "").replace(/\..*/, "").replace("T", "-");

/** Merges the runs in `dirs` into the empty (or new) directory `outDir`; see the file's comment. */
export async function mergeRuns(dirs: string[], outDir: string): Promise<MergeOutcome> {
  if (dirs.length === 0) throw new UsageError("merge: no runs to merge");
  const out = resolve(outDir);
  for (const d of dirs)
    if (resolve(d) === out) throw new UsageError(`merge: -o ${outDir} is one of the runs to merge`);
  const leftover = await readdir(out).catch(() => [] as string[]);
  if (leftover.length > 0) throw new UsageError(`merge: ${outDir} is not empty; pick another -o`);
  const runs: RunOnDisk[] = [];
  for (const d of dirs) runs.push(await readRunDir(d));
  const first = runs[0] as RunOnDisk;
  for (const r of runs.slice(1)) checkSameRun(first, r);

  // No cell, and no machine, in two runs.
  const cellOwner = new Map<string, string>();
  for (const r of runs)
    for (const c of r.cells) {
      const key = `${c.machineId} ${c.test}`;
      const other = cellOwner.get(key);
      if (other !== undefined)
        throw new UsageError(`cannot merge: cell ${key} is in both ${other} and ${r.dir}`);
      cellOwner.set(key, r.dir);
    }
  const machineOwner = new Map<string, string>();
  for (const r of runs) {
    const ids = new Set([...r.run.machines.map((m) => m.machineId), ...r.cells.map((c) => c.machineId)]);
    for (const id of ids) {
      const other = machineOwner.get(id);
      if (other !== undefined)
        throw new UsageError(`cannot merge: machine ${id} is in both ${other} and ${r.dir}`);
      machineOwner.set(id, r.dir);
    }
  }

  await mkdir(out, { recursive: true });
  const notes: string[] = [];
  // Cells (records, logs, re-run logs) and machine consoles: each machine's come from its own run.
  for (const r of runs) {
    for (const id of await readdir(join(r.dir, "cells")).catch(() => [] as string[]))
      await copyIfThere(join(r.dir, "cells", id), join(out, "cells", id));
    for (const f of await readdir(join(r.dir, "consoles")).catch(() => [] as string[]))
      if (!f.includes(".builder-")) await copyIfThere(join(r.dir, "consoles", f), join(out, "consoles", f));
  }

  // Builders: one record per (arch, builder). Records of the same build are one (the one that ran
  // is kept: it has the log); different builds of it (shards that each ran it) keep a failed one
  // (the cells it failed point at it), else the first.
  const groups = new Map<string, { record: BuilderRecord; dir: string }[]>();
  for (const r of runs)
    for (const b of r.run.builders) {
      const key = `${b.arch}/${b.builder}`;
      groups.set(key, [...(groups.get(key) ?? []), { record: b, dir: r.dir }]);
    }
  const builders: BuilderRecord[] = [];
  for (const [key, all] of groups) {
    const distinct: { record: BuilderRecord; dir: string }[] = [];
    for (const x of all) {
      const same = distinct.findIndex((d) => sameBuild(d.record, x.record));
      if (same < 0) distinct.push(x);
      else if (distinct[same]?.record.cached && !x.record.cached) distinct[same] = x;
    }
    const kept =
      distinct.find((d) => !d.record.ok) ?? (distinct[0] as { record: BuilderRecord; dir: string });
    if (distinct.length > 1)
      notes.push(
        `builder ${key} ran separately in ${distinct.length} runs (${distinct.map((d) => d.dir).join(", ")}); kept the one of ${kept.dir}`,
      );
    await copyBuilder(kept.record, kept.dir, out);
    builders.push(kept.record);
  }

  const starts = runs.map((r) => r.run.startedAt).sort((a, b) => Date.parse(a) - Date.parse(b));
  const ends = runs.flatMap((r) => (r.run.endedAt ? [r.run.endedAt] : []));
  const allEnded = ends.length === runs.length;
  const startedAt = starts[0] as string;
  const run: RunRecord = {
    runId: runIdAt(startedAt),
    kmatrixVersion: first.run.kmatrixVersion,
    startedAt,
    ...(allEnded && { endedAt: ends.sort((a, b) => Date.parse(b) - Date.parse(a))[0] }),
    ...(runs.some((r) => r.run.interrupted) && { interrupted: true }),
    host: first.run.host,
    config: first.run.config,
    plan: first.run.plan,
    machines: runs.flatMap((r) => r.run.machines),
    builders,
  };
  if (!allEnded) notes.push("a run had not finished: the merged run has no end time");
  await writeFile(join(out, "run.json"), `${JSON.stringify(run, null, 2)}\n`);
  return { run, notes };
}
