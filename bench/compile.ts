/**
 * npm run bench:compile [-- --libs <dir | git-url@ref>] — where compile steps run, and what it costs.
 *
 * In one run, on the same machines (the default matrix; MACHINES=a,b and ARCHES=x86_64 narrow it),
 * warm cache, builders cached (the first run of each plan warms them and is not counted):
 *   P1  boot-to-ready / bare boot, per architecture (bench/boot.ts, ROUNDS rounds);
 *   per machine, the example plan with its compile steps in the VM (`--compile-in vm`) and in a
 *       sandbox of the machine's image (`--compile-in sandbox`), one kmatrix process per machine
 *       and mode, `--jobs 1`: wall time, kmod_build's time, and `kmatrix diff` of the two runs,
 *       which must report nothing (same verdicts both ways);
 *   P5  all machines at once, `--compile-in auto`, `--jobs 2` against `--jobs 1`;
 *   P6  kmatrix's own peak RSS (VmHWM of its process, QEMU excluded) in those all-machine runs;
 *   and with --libs, the falco plan per machine the same two ways (FALCO_MACHINES=name@arch,…,
 *   default debian-bookworm-6.1@x86_64, since each VM-compiled machine takes several minutes).
 * PARTS=p1,example,p5,falco picks the parts (default: all).
 */
import { mkdtemp, readdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { DEFAULT_MATRIX_ORIGIN, DEFAULT_MATRIX_YAML } from "../src/config/default.js";
import { parseMatrix } from "../src/config/load.js";
import type { CellRecord, RunRecord } from "../src/results/types.js";
import { timedKmatrix } from "./kmatrix-process.js";

const cli = new URL("../src/cli/main.js", import.meta.url).pathname;
const bootBench = new URL("./boot.js", import.meta.url).pathname;
const libsAt = process.argv.indexOf("--libs");
const libs = libsAt > 0 ? process.argv[libsAt + 1] : undefined;
const names = process.env.MACHINES?.split(",");
const arches = (process.env.ARCHES ?? "x86_64,aarch64").split(",");
const machines = parseMatrix(DEFAULT_MATRIX_YAML, DEFAULT_MATRIX_ORIGIN).machines.filter(
  (m) => (!names || names.includes(m.name)) && arches.includes(m.arch),
);
const parts = (process.env.PARTS ?? "p1,example,p5,falco").split(",");
const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

interface Measured {
  out: string;
  wallMs: number;
  peakRssMiB: number;
  exitCode: number | undefined;
}

/** One `kmatrix run` with its own output directory. */
async function kmatrix(args: string[]): Promise<Measured> {
  const out = join(await mkdtemp(join(tmpdir(), "kmx-bench-compile-")), "run");
  return { out, ...(await timedKmatrix(["run", ...args, "--output", out])) };
}

async function cells(out: string): Promise<CellRecord[]> {
  const all: CellRecord[] = [];
  for (const m of await readdir(join(out, "cells")).catch(() => [] as string[]))
    for (const f of await readdir(join(out, "cells", m)))
      if (f.endsWith(".json")) all.push(JSON.parse(await readFile(join(out, "cells", m, f), "utf8")));
  return all;
}

const verdicts = (cs: CellRecord[]) =>
  cs
    .map((c) => `${c.test} ${c.verdict}`)
    .sort()
    .join(", ");

/** `kmatrix diff`: nothing changed, or what did. */
async function diff(a: string, b: string): Promise<string> {
  const r = await execa("node", [cli, "diff", a, b, "--json"], { reject: false });
  const d = JSON.parse(r.stdout) as { changes: unknown[] };
  return d.changes.length === 0 ? "kmatrix diff: nothing" : `kmatrix diff: ${JSON.stringify(d.changes)}`;
}

/** A plan on one machine with its compile steps in the VM and in the sandbox. */
async function bothWays(plan: string[], id: string, buildStep: string): Promise<void> {
  const [name, arch] = id.split("@") as [string, string];
  const base = [...plan, "--machine", name, "--arch", arch, "--jobs", "1"];
  const sandbox = await kmatrix([...base, "--compile-in", "sandbox"]);
  const vm = await kmatrix([...base, "--compile-in", "vm"]);
  const [cv, cs] = [await cells(vm.out), await cells(sandbox.out)];
  const build = (cs: CellRecord[]) => cs.find((c) => c.test === buildStep)?.durationMs ?? Number.NaN;
  console.log(
    `${id}: vm ${s(vm.wallMs)}, sandbox ${s(sandbox.wallMs)} (${(vm.wallMs / sandbox.wallMs).toFixed(1)}x); ` +
      `${buildStep} vm ${s(build(cv))}, sandbox ${s(build(cs))} (${(build(cv) / build(cs)).toFixed(1)}x); ` +
      `${await diff(vm.out, sandbox.out)}`,
  );
  if (verdicts(cv) !== verdicts(cs)) console.log(`  vm: ${verdicts(cv)}\n  sandbox: ${verdicts(cs)}`);
  const run = JSON.parse(await readFile(join(sandbox.out, "run.json"), "utf8")) as RunRecord;
  const compilers = run.machines.find((m) => m.machineId === id)?.compilers;
  if (compilers) console.log(`  sandbox: ${compilers}`);
  console.log(`  runs: ${vm.out} ${sandbox.out}`);
}

console.log(`compile benchmark: ${machines.map((m) => m.id).join(", ")} (warm cache, TCG unless KVM works)`);
if (parts.includes("p1")) {
  console.log("\nP1, boot-to-ready / bare boot (bench/boot.ts):");
  const boot = await execa("node", [bootBench], {
    reject: false,
    all: true,
    env: { ROUNDS: process.env.ROUNDS ?? "3" },
  });
  for (const line of boot.stdout.split("\n")) console.log(`  ${line}`);
}

// Warms the builders' cache (their artifacts are keyed by their inputs, not by where tests compile).
const everyMachine = [...new Set(machines.map((m) => m.name))].flatMap((n) => ["--machine", n]);
const arch = arches.length === 1 ? ["--arch", arches[0] as string] : [];
if (parts.includes("example") || parts.includes("p5"))
  await kmatrix(["--plan", "example", ...everyMachine, ...arch, "--jobs", "2"]);

if (parts.includes("example")) {
  console.log("\nexample plan per machine, compile steps in the VM vs in a sandbox of its image (--jobs 1):");
  for (const m of machines) await bothWays(["--plan", "example"], m.id, "kmod_build");
}

if (parts.includes("p5")) {
  console.log(`\nP5/P6, the example plan on all ${machines.length} machines at once (--compile-in auto):`);
  const one = await kmatrix(["--plan", "example", ...everyMachine, ...arch, "--jobs", "1"]);
  const two = await kmatrix(["--plan", "example", ...everyMachine, ...arch, "--jobs", "2"]);
  console.log(
    `  --jobs 1: ${s(one.wallMs)}; --jobs 2: ${s(two.wallMs)}; speed-up ${(one.wallMs / two.wallMs).toFixed(2)}; ${await diff(one.out, two.out)}`,
  );
  console.log(
    `  peak RSS of kmatrix: ${two.peakRssMiB.toFixed(0)} MiB (--jobs 2), ${one.peakRssMiB.toFixed(0)} MiB (--jobs 1)`,
  );
}

if (libs && parts.includes("falco")) {
  const falco = ["--plan", "falco", "--libs", libs];
  const ids = (process.env.FALCO_MACHINES ?? "debian-bookworm-6.1@x86_64").split(",");
  for (const id of ids) {
    const [name, a] = id.split("@") as [string, string];
    await kmatrix([...falco, "--machine", name, "--arch", a]); // builders cached
  }
  console.log("\nfalco plan per machine, compile steps in the VM vs in a sandbox of its image (--jobs 1):");
  for (const id of ids) await bothWays(falco, id, "kmod_build");
}
