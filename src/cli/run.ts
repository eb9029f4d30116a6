import { existsSync, readdirSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { loadMatrix, selectMachines } from "../config/load.js";
import type { Arch, Machine, Matrix } from "../config/types.js";
import { applySettings, bindSources, type GivenLocation, loadPlan, type Plan } from "../plan/load.js";
import { materializeSources, sourceSkips } from "../plan/sources.js";
import { checkSameRun, importBuilders, readRunDir } from "../results/merge.js";
import { ResultStore, readExisting } from "../results/store.js";
import type { BuilderRecord, CellRecord, RunRecord } from "../results/types.js";
import { builderKey, cellKey, runEngine } from "../run/engine.js";
import { EventBus } from "../run/events.js";
import { formatShard, machineDurations, type Shard, shardMachines } from "../run/shard.js";
import { UsageError } from "../util/errors.js";
import { onInterrupt } from "../vm/processes.js";
import { createRunDir, removeRunDir } from "../vm/run-dirs.js";
import { progress } from "./log.js";
import { liveProgress, plainProgress } from "./progress.js";

export interface RunFlags {
  config?: string;
  plan: string;
  arch?: Arch;
  machine?: string[];
  output?: string;
  resume?: string;
  jobs?: number;
  /** Where builders run (see EngineOptions.builders). */
  builders?: "vm" | "container" | "auto";
  /** Run builders even when their artifacts are cached. */
  rebuild?: boolean;
  /** Where compile steps run, over the plan's `compileIn` (see EngineOptions.compileIn). */
  compileIn?: "auto" | "vm" | "sandbox";
  /** Plan source locations given on the command line (`--libs`, `--source name=…`). */
  sources?: Record<string, string>;
  /** `--set NAME=VALUE`: plan variables. */
  settings?: Record<string, string>;
  /** `--shard i/n`: only this shard's share of the selected machines (run/shard.ts). */
  shard?: Shard;
  /** `--balance-from <run>`: balance the shards by that run's machine durations. */
  balanceFrom?: string;
  /** `--builders-from <run>`: take that run's successful builders instead of running them. */
  buildersFrom?: string;
}

export interface RunOutcome {
  exitCode: number;
  outDir: string;
}

/** `kmatrix run`: images, builders, machines; results on disk as they happen. */
export async function runCommand(flags: RunFlags, version: string): Promise<RunOutcome> {
  if (flags.balanceFrom && !flags.shard) throw new UsageError("--balance-from: only with --shard i/n");
  if (flags.buildersFrom && flags.resume)
    throw new UsageError("--builders-from: not with --resume (a resumed run keeps its own builders)");
  const matrix = await loadMatrix({ configPath: flags.config });
  const machines = await shardOf(
    selectMachines(matrix, { arch: flags.arch, patterns: flags.machine }),
    flags,
  );
  const buildersFrom = flags.buildersFrom
    ? await readRunDir(flags.buildersFrom, "--builders-from")
    : undefined;
  const given = new Map<string, GivenLocation>();
  for (const s of matrix.sources) given.set(s.name, { ...s, from: `${matrix.origin}: sources.${s.name}` });
  for (const [name, spec] of Object.entries(flags.sources ?? {}))
    given.set(name, { spec, baseDir: process.cwd(), from: name === "libs" ? "--libs" : `--source ${name}` });
  const plan = withBuilderMachines(
    applySettings(bindSources(await loadPlan(flags.plan), given), flags.settings ?? {}),
    matrix,
  );
  for (const b of plan.builders)
    for (const arch of new Set(machines.map((m) => m.arch)))
      if (!matrix.machines.some((m) => m.name === b.machine && m.arch === arch))
        throw new UsageError(
          `${plan.origin}: builder ${b.name}: no machine ${b.machine} for ${arch} in ${matrix.origin}`,
        );
  const sources = await materializeSources(plan.sources, progress);
  const skips = sourceSkips(plan.tests, sources);

  const runId = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "").replace("T", "-");
  const outDir = resolve(flags.resume ?? flags.output ?? join("kmatrix-out", runId));
  if (!flags.resume && existsSync(outDir) && readdirSync(outDir).length > 0)
    throw new UsageError(
      `${outDir} already holds results; pick another --output or continue it with --resume`,
    );
  const kept = new Map<string, CellRecord>();
  const keptBuilders = new Map<string, BuilderRecord>();
  let previous: RunRecord | undefined;
  if (flags.resume) {
    const existing = await readExisting(outDir).catch(() => {
      throw new UsageError(`${flags.resume}: not a kmatrix results directory (no readable run.json)`);
    });
    previous = existing.run;
    for (const b of existing.builders)
      if (b.ok && existsSync(join(outDir, "artifacts", b.arch, b.builder)))
        keptBuilders.set(builderKey(b.arch, b.builder), b);
    for (const c of existing.cells)
      if (keepOnResume(c, keptBuilders)) kept.set(cellKey(c.machineId, c.test), c);
  }

  const jobs = flags.jobs ?? defaultJobs(Math.max(...machines.map((m) => m.vm.memoryMiB)));
  const bus = new EventBus();
  bus.subscribe(new ResultStore(outDir).consume);
  const display = process.stderr.isTTY ? liveProgress(process.stderr) : plainProgress(progress);
  bus.subscribe(display.consume);

  const run: RunRecord = {
    runId: previous?.runId ?? runId,
    kmatrixVersion: version,
    startedAt: previous?.startedAt ?? new Date().toISOString(),
    host: { arch: process.arch, cpus: cpus().length, memoryMiB: Math.round(totalmem() / 1024 ** 2) },
    config: { origin: matrix.origin },
    plan: {
      name: plan.name,
      origin: plan.origin,
      tests: plan.tests.map((t) => t.name),
      ...(Object.keys(plan.env).length ? { env: plan.env } : {}),
      ...(skips.size ? { sourceSkips: Object.fromEntries(skips) } : {}),
      sources: [...sources].map(([name, s]) => ({ name, dir: s.dir, revision: s.revision })),
    },
    machines: previous?.machines ?? machines.map((m) => ({ machineId: m.id, machine: m.name, arch: m.arch })),
    builders: previous?.builders ?? [],
  };
  if (buildersFrom) {
    checkSameRun(
      buildersFrom,
      { dir: "this run", run, cells: [] },
      { tests: false, what: "--builders-from" },
    );
    const taken = await importBuilders(buildersFrom, outDir, {
      arches: [...new Set(machines.map((m) => m.arch))],
      builders: plan.builders.map((b) => b.name),
    });
    for (const b of taken) keptBuilders.set(builderKey(b.arch, b.builder), b);
    run.builders = taken;
    progress(
      `--builders-from ${buildersFrom.dir}: took ${taken.map((b) => `${b.builder} (${b.arch})`).join(", ") || "no builder"}`,
    );
  }
  bus.emit({ type: "run-started", run: structuredClone(run) });

  // SIGINT/SIGTERM: stop every VM now; the engine unwinds without recording the cut-short cells.
  const abort = new AbortController();
  const restoreInterrupt = onInterrupt(() => {
    if (abort.signal.aborted) process.exit(130);
    progress("interrupted: stopping all machines (finished cells are kept; continue with --resume)");
    abort.abort();
  });
  const runDir = await createRunDir();
  try {
    await runEngine({
      matrix,
      machines,
      plan,
      sources,
      sourceSkips: skips,
      outDir,
      runDir,
      jobs,
      bus,
      signal: abort.signal,
      kept,
      keptBuilders,
      builders: flags.builders ?? "auto",
      rebuild: flags.rebuild,
      compileIn: flags.compileIn,
    });
  } finally {
    restoreInterrupt();
    display.stop();
    await removeRunDir(runDir);
  }
  const final = await readExisting(outDir);
  bus.emit({
    type: "run-ended",
    run: { ...final.run, endedAt: new Date().toISOString(), interrupted: abort.signal.aborted || undefined },
  });
  if (abort.signal.aborted) return { exitCode: 130, outDir };
  const expected = machines.length * plan.tests.length;
  const cells = final.cells.filter((c) => machines.some((m) => m.id === c.machineId));
  const bad = cells.filter((c) => c.verdict === "fail" || c.verdict === "error").length;
  return { exitCode: bad > 0 || cells.length < expected ? 1 : 0, outDir };
}

/** `--shard i/n` (balanced by `--balance-from`'s durations when given): this shard's machines. */
async function shardOf(selected: Machine[], flags: RunFlags): Promise<Machine[]> {
  if (!flags.shard) return selected;
  const previous = flags.balanceFrom ? await readRunDir(flags.balanceFrom, "--balance-from") : undefined;
  const durations = previous && machineDurations(previous.run, previous.cells);
  const mine = shardMachines(selected, flags.shard, durations);
  progress(
    `shard ${formatShard(flags.shard)}: ${mine.length} of ${selected.length} machines${mine.length ? ` (${mine.map((m) => m.id).join(", ")})` : ""}${previous ? `, balanced by the durations of ${previous.dir}` : ""}`,
  );
  return mine;
}

/**
 * What --resume keeps: passes, skips and driver failures. A harness error is not a result, and a
 * cell that failed only because of a builder is re-run when that builder runs again.
 */
export function keepOnResume(c: CellRecord, keptBuilders: Map<string, BuilderRecord>): boolean {
  if (c.verdict === "error") return false;
  return !c.builder || keptBuilders.has(builderKey(c.arch, c.builder));
}

/** As many VMs as there are cores, as long as their memory fits with room to spare. */
function defaultJobs(vmMemoryMiB: number): number {
  const byMemory = Math.floor((totalmem() / 1024 ** 2 - 1024) / (vmMemoryMiB + 512));
  return Math.max(1, Math.min(cpus().length, byMemory));
}

/** The config's `builders:` choose where the plan's builders run. */
export function withBuilderMachines(plan: Plan, matrix: Matrix): Plan {
  const builders = plan.builders.map((b) => ({
    ...b,
    machine: matrix.builderMachines.get(b.name) ?? b.machine,
  }));
  return { ...plan, builders };
}
