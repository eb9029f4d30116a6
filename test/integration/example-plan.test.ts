import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { checkReportsAgree } from "../../src/report/index.js";
import type { BuilderRecord, CellRecord, RunRecord } from "../../src/results/types.js";
import { hostArch } from "../../src/vm/accel.js";
import { CLI, EXAMPLE_TESTS, qemuProcesses } from "./helpers.js";

// The whole pipeline on one kernel per architecture: images, builders (skeleton, runner), in-machine
// driver builds, real captures, verdicts and every report.
describe("the example plan on debian-bookworm-6.1, x86_64 and aarch64", () => {
  it("builds and runs all three drivers: every cell green, reports agree", async () => {
    const out = join(await mkdtemp(join(tmpdir(), "kmx-example-")), "run");
    const child = execa(
      "node",
      // --rebuild: the builders run even when an earlier run on this machine cached their artifacts.
      [CLI, "run", "--machine", "debian-bookworm-6.1", "--output", out, "--jobs", "2", "--rebuild"],
      {
        reject: false,
        all: true,
      },
    );
    const r = await child;
    const run: RunRecord = JSON.parse(await readFile(join(out, "run.json"), "utf8"));
    for (const arch of ["x86_64", "aarch64"]) {
      for (const test of EXAMPLE_TESTS) {
        const cell: CellRecord = JSON.parse(
          await readFile(join(out, "cells", `debian-bookworm-6.1@${arch}`, `${test}.json`), "utf8"),
        );
        expect(cell.verdict, `${arch} ${test}: ${cell.reason}\n${cell.outputTail}\n${r.all}`).toBe("pass");
      }
      // A pass means 50 real events were captured, as the runner printed them.
      const log = await readFile(join(out, "cells", `debian-bookworm-6.1@${arch}`, "kmod_open.log"), "utf8");
      expect(log).toMatch(/captured 50 events/);
      // Without KVM (and as root) the compile steps ran in a sandbox of the image, for the
      // machine's kernel: the module they built loaded into it (kmod_open above). The other
      // architecture's with the host's cross compilers of bookworm, same gcc-12.
      const machine = run.machines.find((m) => m.machineId === `debian-bookworm-6.1@${arch}`);
      const sandboxed = machine?.accel !== "kvm" && process.getuid?.() === 0;
      for (const test of ["kmod_build", "bpf_build"]) {
        const cell: CellRecord = JSON.parse(
          await readFile(join(out, "cells", `debian-bookworm-6.1@${arch}`, `${test}.json`), "utf8"),
        );
        expect(cell.ranIn, `${arch} ${test}`).toBe(sandboxed ? "sandbox" : "vm");
      }
      if (sandboxed && arch !== hostArch())
        expect(machine?.compilers).toMatch(/^compilers run natively: gcc-12-[a-z0-9-]+-linux-gnu 12\.2\.0-/);
      // The skeleton needs its machine's kernel (BTF): a VM. The runner may use a container (no KVM).
      const builder = async (name: string): Promise<BuilderRecord> =>
        JSON.parse(await readFile(join(out, "builders", arch, `${name}.json`), "utf8"));
      expect((await builder("modern-skel")).isolation).toBe("vm");
      expect(["vm", "container"]).toContain((await builder("runner")).isolation);
    }
    expect(r.exitCode, r.all).toBe(0);
    expect(r.stdout).toContain(`results: ${out}`);
    expect(await qemuProcesses(`/runs/${child.pid}-`)).toEqual([]);
    expect(await checkReportsAgree(out)).toEqual([]);
    const md = await readFile(join(out, "report", "matrix_ARM64.md"), "utf8");
    const row = md.split("\n").find((l) => l.startsWith("| debian-bookworm-6.1 "));
    expect(row?.replace(/ +/g, " ")).toBe("| debian-bookworm-6.1 | 🟢 | 🟢 | 🟢 | 🟢 | 🟢 |");
  });
});
