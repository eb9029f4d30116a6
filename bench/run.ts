/**
 * npm run bench:run — how well `kmatrix run` uses the machine, on a warm cache.
 *
 * Runs a plan (default: example) over four machines (bookworm + bullseye, x86_64 + aarch64) twice,
 * with --jobs 2 and --jobs 1, each in a fresh kmatrix process, and prints:
 *   - wall / critical path, where the critical path is the longest chain of builder runs and one
 *     machine's boot + guest work (goal ≤ 1.10);
 *   - wall / (all VM time ÷ jobs): how much of the pool's capacity was used;
 *   - the speed-up of --jobs 2 over --jobs 1 (goal ≥ 1.7 on 2 cores);
 *   - kmatrix's peak RSS (VmHWM of its own process, QEMU excluded), with all machines running.
 */
import { mkdtemp, readdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BuilderRecord, CellRecord, RunRecord } from "../src/results/types.js";
import { timedKmatrix } from "./kmatrix-process.js";

const plan = process.env.PLAN ?? "example";
const machines = ["debian-bookworm-6.1", "debian-bullseye-5.10"];

interface Measured {
  wallMs: number;
  peakRssMiB: number;
  criticalMs: number;
  vmMs: number;
  exitCode: number | undefined;
}

async function measure(jobs: number): Promise<Measured> {
  const out = join(await mkdtemp(join(tmpdir(), "kmx-bench-run-")), "run");
  const args = [
    "run",
    "--plan",
    plan,
    ...machines.flatMap((m) => ["--machine", m]),
    "--jobs",
    String(jobs),
    "--output",
    out,
  ];
  const { wallMs, peakRssMiB, exitCode } = await timedKmatrix(args);
  const run = JSON.parse(await readFile(join(out, "run.json"), "utf8")) as RunRecord;
  const machineMs = new Map<string, number>();
  for (const m of run.machines) {
    let ms = m.bootMs ?? 0;
    for (const f of await readdir(join(out, "cells", m.machineId)).catch(() => [] as string[]))
      if (f.endsWith(".json"))
        ms +=
          (JSON.parse(await readFile(join(out, "cells", m.machineId, f), "utf8")) as CellRecord).durationMs ??
          0;
    machineMs.set(m.machineId, ms);
  }
  const chain = (b: BuilderRecord): number =>
    (b.durationMs ?? 0) +
    Math.max(
      0,
      ...run.builders.filter((x) => x.arch === b.arch && needs(b.builder).includes(x.builder)).map(chain),
    );
  // The example plan's builders form one chain per arch; the longest builder chain of an arch gates its machines.
  const builderGate = (arch: string) =>
    Math.max(0, ...run.builders.filter((b) => b.arch === arch).map(chain));
  const criticalMs = Math.max(
    ...run.machines.map((m) => builderGate(m.arch) + (machineMs.get(m.machineId) ?? 0)),
  );
  const vmMs =
    [...machineMs.values()].reduce((a, b) => a + b, 0) +
    run.builders.reduce((a, b) => a + (b.durationMs ?? 0), 0);
  return { wallMs, peakRssMiB, criticalMs, vmMs, exitCode };
}

let planNeeds: Record<string, string[]> = {};
function needs(builder: string): string[] {
  return planNeeds[builder] ?? [];
}

const { loadPlan } = await import("../src/plan/load.js");
const loaded = await loadPlan(plan);
planNeeds = Object.fromEntries(loaded.builders.map((b) => [b.name, b.needs]));

const s = (ms: number) => `${(ms / 1000).toFixed(0)} s`;
const two = await measure(2);
console.error(`--jobs 2: ${s(two.wallMs)} (exit ${two.exitCode})`);
const one = await measure(1);
console.error(`--jobs 1: ${s(one.wallMs)} (exit ${one.exitCode})`);
console.log(`\nrun benchmark: plan ${plan}, machines ${machines.join(", ")} × x86_64, aarch64 (warm cache)`);
console.log(
  `--jobs 2: wall ${s(two.wallMs)}, critical path ${s(two.criticalMs)}, wall/critical ${(two.wallMs / two.criticalMs).toFixed(2)} (goal <= 1.10), wall/(VM time/2) ${(two.wallMs / (two.vmMs / 2)).toFixed(2)}`,
);
console.log(
  `--jobs 1: wall ${s(one.wallMs)}; speed-up of --jobs 2: ${(one.wallMs / two.wallMs).toFixed(2)} (goal >= 1.7)`,
);
console.log(
  `peak RSS of kmatrix: ${two.peakRssMiB.toFixed(0)} MiB (--jobs 2), ${one.peakRssMiB.toFixed(0)} MiB (--jobs 1)`,
);
