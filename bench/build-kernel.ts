/**
 * ARCH=aarch64 [TREE=<dir | git-url@ref | tarball>] npm run bench:build-kernel — a kernel kmatrix
 * builds (`kernel: { source: build }`), then the example plan on it.
 *
 * TREE defaults to Debian's /usr/src/linux-source-6.1.tar.xz (apt-get install linux-source-6.1).
 * Builds from tinyconfig plus kmatrix's required items (cross-compiled with gcc-aarch64-linux-gnu
 * on an x86_64 host), prints the image build and the run's wall times; a second run shows the warm
 * resolve. Too slow for `make test` on aarch64 under TCG, hence a benchmark.
 */
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import type { CellRecord } from "../src/results/types.js";

const arch = process.env.ARCH ?? "aarch64";
const tree = process.env.TREE ?? "/usr/src/linux-source-6.1.tar.xz";
const cli = new URL("../src/cli/main.js", import.meta.url).pathname;
const dir = await mkdtemp(join(tmpdir(), "kmx-bench-build-"));
const config = join(dir, "kmatrix.yaml");
await writeFile(join(dir, "kmx.config"), 'CONFIG_LOCALVERSION="-kmx"\n');
await writeFile(
  config,
  [
    "machines:",
    `  - { name: built, arch: ${arch}, kernel: { source: build, tree: "${tree}", config: tinyconfig, fragments: [kmx.config] } }`,
    // The example plan's builders run on these.
    `  - { name: debian-bookworm-6.1, arch: ${arch}, kernel: { source: debian, suite: bookworm } }`,
    `  - { name: debian-bullseye-5.10, arch: ${arch}, kernel: { source: debian, suite: bullseye } }`,
    "",
  ].join("\n"),
);
const kmatrix = (...args: string[]) =>
  execa("node", [cli, ...args, "--config", config], {
    reject: false,
    stdio: ["ignore", "inherit", "inherit"],
  });

let t0 = Date.now();
const images = await kmatrix("images", "build", "built", "-a", arch);
const imagesSeconds = (Date.now() - t0) / 1000;
if (images.exitCode !== 0) process.exit(images.exitCode ?? 1);

const out = join(dir, "run");
t0 = Date.now();
const run = await kmatrix("run", "--plan", "example", "-m", "built", "-a", arch, "-o", out);
const runSeconds = (Date.now() - t0) / 1000;
const verdicts: string[] = [];
for (const test of ["kmod_build", "kmod_open", "bpf_build", "bpf_open", "modern_bpf_open"]) {
  const cell = JSON.parse(
    await readFile(join(out, "cells", `built@${arch}`, `${test}.json`), "utf8"),
  ) as CellRecord;
  verdicts.push(`${test}=${cell.verdict}`);
}
console.log(
  `KMATRIX-BENCH build-kernel ${arch} tree=${tree}: images ${imagesSeconds.toFixed(0)} s, example plan ${runSeconds.toFixed(0)} s (exit ${run.exitCode}): ${verdicts.join(" ")}`,
);
process.exit(run.exitCode ?? 1);
