import { appendFile, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { beforeAll, describe, expect, it } from "vitest";
import type { CellRecord } from "../../src/results/types.js";
import { CLI, EXAMPLE_TESTS, type KeyEntry } from "./helpers.js";
import { buildLocalKernelFixture, type LocalKernelFixture } from "./local-kernel-fixture.js";

const MACHINE = "local-6.1@x86_64";

// `kernel: { source: local }` on a real build directory: Debian bookworm's cloud kernel laid out as
// its build would leave it (local-kernel-fixture.ts), so no kernel is compiled here.
describe("kernel: { source: local, path } (a kernel build directory)", () => {
  let fixture: LocalKernelFixture;
  let config: string;
  const cli = (...args: string[]) =>
    execa("node", [CLI, ...args, "--config", config], { all: true, reject: false });
  const keys = async (): Promise<KeyEntry[]> => {
    const r = await cli("images", "keys", "local-6.1", "--json");
    expect(r.exitCode, r.all).toBe(0);
    return (JSON.parse(r.stdout) as { entries: KeyEntry[] }).entries.filter((e) => e.machineId === MACHINE);
  };
  const manifests = async () =>
    Promise.all(
      (await keys()).map(async (e) => JSON.parse(await readFile(join(e.dir, "manifest.json"), "utf8"))),
    );

  beforeAll(async () => {
    const tmp = await mkdtemp(join(tmpdir(), "kmx-local-"));
    fixture = await buildLocalKernelFixture(join(tmp, "linux-build"));
    config = join(tmp, "kmatrix.yaml");
    await writeFile(
      config,
      [
        "machines:",
        "  - name: local-6.1",
        "    arch: x86_64",
        "    kernel: { source: local, path: linux-build }",
        "    rootfs: { source: debian, suite: bookworm }",
        // The example plan's builders run on these (cached by the global set-up).
        "  - { name: debian-bookworm-6.1, arch: x86_64, kernel: { source: debian, suite: bookworm } }",
        "  - { name: debian-bullseye-5.10, arch: x86_64, kernel: { source: debian, suite: bullseye } }",
        "",
      ].join("\n"),
    );
  });

  it("runs the example plan green on it, with the tree as /lib/modules/<release>/build", async () => {
    const out = join(await mkdtemp(join(tmpdir(), "kmx-local-run-")), "run");
    const r = await cli("run", "--plan", "example", "--machine", "local-6.1", "--output", out);
    for (const test of EXAMPLE_TESTS) {
      const cell: CellRecord = JSON.parse(
        await readFile(join(out, "cells", MACHINE, `${test}.json`), "utf8"),
      );
      expect(cell.verdict, `${test}: ${cell.reason}\n${cell.outputTail}\n${r.all}`).toBe("pass");
    }
    expect(r.exitCode, r.all).toBe(0);
    const run = await readFile(join(out, "run.json"), "utf8");
    expect(run).toContain(fixture.release);
  });

  it("builds nothing again for an unchanged tree; a changed .config is a new kernel", async () => {
    const before = await manifests();
    expect(before.map((m) => m.kind)).toEqual(["kernel", "boot", "rootfs"]);
    expect(before[0].resolved).toMatchObject({ source: "local", release: fixture.release });
    const r = await cli("images", "build", "local-6.1");
    expect(r.exitCode, r.all).toBe(0);
    expect(r.all).not.toMatch(/building/);
    expect((await manifests()).map((m) => m.builtAt)).toEqual(before.map((m) => m.builtAt));

    const oldKeys = await keys();
    await appendFile(join(fixture.dir, ".config"), "# CONFIG_KMATRIX_TEST is not set\n");
    const newKeys = await keys();
    for (const kind of ["kernels", "boot", "rootfs"]) {
      const was = oldKeys.find((e) => e.kind === kind)?.entry;
      const now = newKeys.find((e) => e.kind === kind)?.entry;
      expect(now, kind).not.toBe(was);
    }
  });
});
