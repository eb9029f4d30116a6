import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { beforeAll, describe, expect, it } from "vitest";
import { parseMatrix } from "../../src/config/load.js";
import type { Machine } from "../../src/config/types.js";
import type { DebianArchive } from "../../src/images/debian-archive.js";
import { localKernelSource } from "../../src/images/local/index.js";
import type { CellRecord } from "../../src/results/types.js";
import { CLI, EXAMPLE_TESTS, type KeyEntry } from "./helpers.js";
import { type LinuxSource, linuxSourceTarball } from "./linux-source.js";

// `kernel: { source: build }` on a real tree: Debian's linux-source-6.1 tarball, configured from
// tinyconfig (the smallest start; kmatrix adds what a machine and the example plan need), built
// once (2-core host: make 6 min 40 s, root disk 57 s, example plan 56 s; the whole file 9.3 min
// cold, 110 s warm), then found again in the cache (0.6 s). Its build directory then
// serves `source: local`.
describe("kernel: { source: build } (Debian's linux-source-6.1, tinyconfig)", () => {
  let source: LinuxSource;
  let dir: string;
  let config: string;
  const cli = (...args: string[]) =>
    execa("node", [CLI, ...args, "--config", config], { all: true, reject: false });
  const keys = async (name: string): Promise<KeyEntry[]> => {
    const r = await cli("images", "keys", name, "--json");
    expect(r.exitCode, r.all).toBe(0);
    return (JSON.parse(r.stdout) as { entries: KeyEntry[] }).entries;
  };
  const manifests = async (name: string) =>
    Promise.all(
      (await keys(name)).map(async (e) => JSON.parse(await readFile(join(e.dir, "manifest.json"), "utf8"))),
    );
  const writeConfig = (machines: string[]) =>
    writeFile(
      config,
      [
        "machines:",
        ...machines,
        // The example plan's builders run on these (cached by the global set-up).
        "  - { name: debian-bookworm-6.1, arch: x86_64, kernel: { source: debian, suite: bookworm } }",
        "  - { name: debian-bullseye-5.10, arch: x86_64, kernel: { source: debian, suite: bullseye } }",
        "",
      ].join("\n"),
    );
  const builtMachine = [
    "  - name: built-6.1",
    "    arch: x86_64",
    "    kernel: { source: build, tree: src/usr/src/linux-source-6.1.tar.xz, config: tinyconfig, fragments: [kmx.config] }",
  ];
  const runExample = async (machine: string) => {
    const out = join(await mkdtemp(join(tmpdir(), "kmx-build-run-")), "run");
    const started = Date.now();
    const r = await cli("run", "--plan", "example", "--machine", machine, "--output", out);
    const seconds = (Date.now() - started) / 1000;
    for (const test of EXAMPLE_TESTS) {
      const cell: CellRecord = JSON.parse(
        await readFile(join(out, "cells", `${machine}@x86_64`, `${test}.json`), "utf8"),
      );
      expect(cell.verdict, `${test}: ${cell.reason}\n${cell.outputTail}\n${r.all}`).toBe("pass");
    }
    expect(r.exitCode, r.all).toBe(0);
    return { out, seconds, all: r.all ?? "" };
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "kmx-build-"));
    source = await linuxSourceTarball(join(dir, "src"));
    // A fragment: its own release suffix, and an item kmatrix needs turned off (reported, overruled).
    await writeFile(join(dir, "kmx.config"), 'CONFIG_LOCALVERSION="-kmx"\n# CONFIG_BPF_JIT is not set\n');
    config = join(dir, "kmatrix.yaml");
    await writeConfig(builtMachine);
  });

  it("configures and builds it with progress, and runs the example plan green on it", async () => {
    const started = Date.now();
    const built = await cli("images", "build", "built-6.1");
    const seconds = (Date.now() - started) / 1000;
    expect(built.exitCode, built.all).toBe(0);
    console.log(`linux-source ${source.version}: images built in ${seconds.toFixed(0)} s\n${built.all}`);
    // What it does and how long, whether built now or by an earlier run of this test.
    expect(built.all).toMatch(/kmx\.config\) sets CONFIG_BPF_JIT=n, which kmatrix needs as y: kept y/);
    const [kernel] = await manifests("built-6.1");
    expect(kernel.resolved).toMatchObject({ source: "build", tree: "linux-source-6.1.tar.xz" });
    expect(kernel.resolved.release).toMatch(/^6\.1\.\d+-kmx$/);
    const buildManifest = JSON.parse(await readFile(join(kernel.resolved.buildDir, "manifest.json"), "utf8"));
    console.log(`kernel build: ${buildManifest.buildSeconds.toFixed(0)} s, ${buildManifest.steps} steps`);
    if (/make -j/.test(built.all ?? "")) expect(built.all).toMatch(/built in \d+ min \d+ s \(\d+ steps\)/);

    const run = await runExample("built-6.1");
    console.log(`example plan on the built kernel: ${run.seconds.toFixed(0)} s`);
    expect(await readFile(join(run.out, "run.json"), "utf8")).toContain(kernel.resolved.release);
  });

  it("resolves again from the cache without configuring or building anything", async () => {
    const before = await manifests("built-6.1");
    const started = Date.now();
    const r = await cli("images", "build", "built-6.1");
    const seconds = (Date.now() - started) / 1000;
    expect(r.exitCode, r.all).toBe(0);
    console.log(`warm resolve: ${seconds.toFixed(1)} s`);
    expect(r.all).not.toMatch(/building|configuring|make -j/);
    expect((await manifests("built-6.1")).map((m) => m.builtAt)).toEqual(before.map((m) => m.builtAt));
  });

  it("reports a required item a fragment's dependency took away (exit 2, naming the field)", async () => {
    await writeFile(join(dir, "no-net.config"), "# CONFIG_NET_CORE is not set\n");
    await writeConfig([
      "  - name: broken",
      "    arch: x86_64",
      "    kernel: { source: build, tree: src/usr/src/linux-source-6.1.tar.xz, config: tinyconfig, fragments: [no-net.config] }",
    ]);
    try {
      const r = await cli("images", "keys", "broken");
      expect(r.exitCode, r.all).toBe(2);
      expect(r.stderr).toMatch(
        /machines\[0\]\.kernel: the kernel config lacks what kmatrix machines need after olddefconfig: CONFIG_VIRTIO_NET=y \(got n\)/,
      );
    } finally {
      await writeConfig(builtMachine);
    }
  });

  // Through the source itself, not `images build`: a root disk of the same files again would add
  // minutes and prove nothing more than the files being the same as those the plan ran on.
  it("serves its build directory to `source: local` as well, as the same kernel", async () => {
    const [kernel] = await keys("built-6.1");
    const built = JSON.parse(await readFile(join(kernel?.dir ?? "", "manifest.json"), "utf8"));
    const matrix = parseMatrix(
      `machines:\n  - { name: local-from-build, arch: x86_64, kernel: { source: local, path: ${built.resolved.buildDir} } }\n`,
      "kmatrix.yaml",
    );
    const machine = matrix.machines[0] as Machine;
    const context = {
      machine,
      debArch: "amd64" as const,
      archive: undefined as unknown as DebianArchive,
      log: () => {},
    };
    const recipe = await localKernelSource.resolve(context);
    expect(recipe.release).toBe(built.resolved.release);
    const into = await mkdtemp(join(tmpdir(), "kmx-local-from-build-"));
    const local = await localKernelSource.materialize(recipe, into, context);
    const files = async (root: string, rel: string) =>
      (await readdir(join(root, rel), { recursive: true })).sort();
    expect(await files(into, local.headersTree ?? "")).toEqual(
      await files(kernel?.dir ?? "", built.headersTree),
    );
    for (const file of ["vmlinuz", "build/Makefile", "build/.config", "build/Module.symvers"])
      expect(await readFile(join(into, file))).toEqual(await readFile(join(kernel?.dir ?? "", file)));
    await rm(into, { recursive: true, force: true });
  });
});
