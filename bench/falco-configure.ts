/**
 * LIBS=<dir | git-url@ref> npm run bench:falco-configure — CMake in every machine, or configure once?
 *
 * Runs bench/plans/falco-configure.yaml on debian-bookworm-6.1 x86_64: a machine with cmake and
 * libs' build dependencies configures libs and builds the kernel module (Falco's kernel-testing
 * way), then a plain test machine builds the same configured tree with Kbuild alone (the falco
 * plan's way). Prints both, and what the CMake way adds to every machine's root disk.
 */
import { mkdtemp, readdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { cacheRoot } from "../src/images/cache.js";
import type { BuilderRecord, CellRecord } from "../src/results/types.js";

const libs = process.env.LIBS;
if (!libs) {
  console.error("set LIBS to a falcosecurity/libs directory or git-url@ref");
  process.exit(2);
}
const machine = "debian-bookworm-6.1";
const cli = new URL("../src/cli/main.js", import.meta.url).pathname;
const planFile = new URL("../../bench/plans/falco-configure.yaml", import.meta.url).pathname;
const out = join(await mkdtemp(join(tmpdir(), "kmx-bench-configure-")), "run");

const t0 = Date.now();
const r = await execa(
  "node",
  // --builders vm: the "CMake in the machine" variant must run in a machine like the test's.
  [
    cli,
    "run",
    "--plan",
    planFile,
    "--libs",
    libs,
    "-m",
    machine,
    "-a",
    "x86_64",
    "--jobs",
    "1",
    "--builders",
    "vm",
    "-o",
    out,
  ],
  { reject: false, stdio: ["ignore", "inherit", "inherit"] },
);
const wallMs = Date.now() - t0;
const builder = JSON.parse(
  await readFile(join(out, "builders", "x86_64", "cmake-in-machine.json"), "utf8"),
) as BuilderRecord;
const cell = JSON.parse(
  await readFile(join(out, "cells", `${machine}@x86_64`, "kbuild-configured-once.json"), "utf8"),
) as CellRecord;
const marks = /KMATRIX-BENCH configure=([\d.]+) kbuild=([\d.]+)/.exec(builder.outputTail ?? "");
if (r.exitCode !== 0 || !marks || cell.verdict !== "pass") {
  console.error(`the benchmark run failed (exit ${r.exitCode}); see ${out}`);
  process.exit(1);
}

// The two bookworm amd64 root disks of this kernel: the plain one and the one with CMake's stack.
const disks: { cmake: boolean; bytesUsed: number; buildSeconds: number }[] = [];
for (const dir of await readdir(join(cacheRoot(), "rootfs"))) {
  if (!dir.startsWith("bookworm-amd64-") || dir.includes(".")) continue;
  const m = JSON.parse(
    await readFile(join(cacheRoot(), "rootfs", dir, "manifest.json"), "utf8").catch(() => "{}"),
  );
  const pkgs: string[] = m.recipe?.packages ?? [];
  if (pkgs.some((p) => p.includes("backports"))) continue;
  const cmake = pkgs.includes("cmake");
  if (cmake && !pkgs.includes("uthash-dev")) continue;
  disks.push({ cmake, bytesUsed: m.bytesUsed, buildSeconds: m.buildSeconds });
}
const newest = (cmake: boolean) => disks.filter((d) => d.cmake === cmake).at(-1);
const plain = newest(false);
const withCmake = newest(true);

const s = (x: number) => `${x.toFixed(1)} s`;
console.log(
  `\nconfigure benchmark: ${machine} x86_64, libs ${libs} (TCG, 2 vCPUs; wall ${s(wallMs / 1000)})`,
);
console.log(`CMake in the machine: configure ${s(Number(marks[1]))} + Kbuild ${s(Number(marks[2]))}`);
console.log(`configured once:      Kbuild ${s((cell.durationMs ?? 0) / 1000)} in the machine`);
if (plain && withCmake)
  console.log(
    `root disk: ${(plain.bytesUsed / 2 ** 20).toFixed(0)} MiB plain, ${(withCmake.bytesUsed / 2 ** 20).toFixed(0)} MiB with cmake + g++ + libs' deps (+${((withCmake.bytesUsed - plain.bytesUsed) / 2 ** 20).toFixed(0)} MiB in every image)`,
  );
