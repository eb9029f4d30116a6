import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { beforeAll, describe, expect, it } from "vitest";
import { loadMatrix } from "../../src/config/load.js";
import type { Arch } from "../../src/config/types.js";
import { plannedSkip } from "../../src/plan/cells.js";
import { applySettings, bindSources, type GivenLocation, loadPlan, type Plan } from "../../src/plan/load.js";
import { type LocalSource, materializeSources, sourceSkips } from "../../src/plan/sources.js";
import { builderMachine } from "../../src/run/engine.js";

const given = (entries: Record<string, string>) =>
  new Map<string, GivenLocation>(
    Object.entries(entries).map(([name, spec]) => [name, { spec, baseDir: "/", from: `--source ${name}` }]),
  );

/** A stand-in libs tree: only what the plan looks at (the legacy probe's directory, or not). */
function libsTree(withLegacyProbe: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), "kmatrix-libs-"));
  mkdirSync(join(dir, "driver", withLegacyProbe ? "bpf" : "modern_bpf"), { recursive: true });
  return dir;
}

describe("the falco plan", () => {
  let plan: Plan;
  beforeAll(async () => {
    plan = await loadPlan("falco");
  });

  it("has the original's columns, in its order", () => {
    expect(plan.tests.map((t) => t.name)).toEqual([
      "cmake-configure",
      "kmod_build",
      "kmod_scap-open",
      "bpf-probe_build",
      "bpf-probe_scap-open",
      "modern-bpf_scap-open",
    ]);
  });

  it("refuses to start without libs, saying how to get them", () => {
    expect(() => bindSources(plan, new Map())).toThrow(
      /^plan falco needs its libs source: give --libs <dir \| git-url@ref> or sources\.libs in the config file\. Get falcosecurity\/libs with `git clone https:\/\/github\.com\/falcosecurity\/libs`/,
    );
  });

  it("binds --libs, and rejects a source the plan does not have", () => {
    const bound = bindSources(plan, given({ libs: "https://github.com/falcosecurity/libs.git@0.23.2" }));
    expect(bound.sources.find((s) => s.name === "libs")?.location).toEqual({
      kind: "git",
      url: "https://github.com/falcosecurity/libs.git",
      ref: "0.23.2",
    });
    expect(() => bindSources(plan, given({ libs: "/x", lib: "/y" }))).toThrow(
      /--source lib: plan falco has no source "lib" \(its sources: libs, falco, drivers\)/,
    );
  });

  it.each<Arch>(["x86_64", "aarch64"])(
    "on a %s host, builds every architecture's skeleton natively and the rest on each architecture's machines",
    async (host) => {
      const { machines } = await loadMatrix({ cwd: tmpdir() });
      const ranOn = (builder: string, arch: Arch) => {
        const b = plan.builders.find((x) => x.name === builder);
        return b && builderMachine(machines, b, arch, host)?.id;
      };
      for (const arch of ["x86_64", "aarch64"] as const) {
        expect(ranOn("skeleton", arch)).toBe(`debian-bookworm-6.1@${host}`);
        expect(ranOn("libbpf", arch)).toBe(`debian-bookworm-6.1@${arch}`);
        expect(ranOn("scap-open", arch)).toBe(`debian-bullseye-5.10@${arch}`);
      }
      // Without the host's architecture in the matrix, a cross builder stays on the target's machine.
      const b = plan.builders.find((x) => x.name === "skeleton");
      const armOnly = machines.filter((m) => m.arch === "aarch64");
      expect(b && builderMachine(armOnly, b, "aarch64", "x86_64")?.id).toBe("debian-bookworm-6.1@aarch64");
    },
  );

  it("blames the builders' environment checks (libbpf too old, exit 78) on the environment, not libs", () => {
    const codes = Object.fromEntries(plan.builders.map((b) => [b.name, b.environmentExitCodes]));
    expect(codes).toEqual({ skeleton: [78], libbpf: [78], "scap-open": [] });
  });

  it("builds against Debian's packages unless --set USE_BUNDLED_DEPS=ON", () => {
    expect(plan.env).toEqual({ USE_BUNDLED_DEPS: "OFF" });
    expect(applySettings(plan, { USE_BUNDLED_DEPS: "ON" }).env).toEqual({ USE_BUNDLED_DEPS: "ON" });
    expect(() => applySettings(plan, { BUNDLED: "ON" })).toThrow(
      "--set BUNDLED: plan falco has no variable BUNDLED (its variables: USE_BUNDLED_DEPS)",
    );
  });

  /** Test → "run" or its skip reason, for one libs tree and one kernel. */
  async function expand(libs: string, arch: Arch, kernelRelease: string) {
    const sources = await materializeSources(bindSources(plan, given({ libs })).sources, () => {});
    const skips = sourceSkips(plan.tests, sources);
    return Object.fromEntries(
      plan.tests.map((t) => [t.name, plannedSkip(t, arch, kernelRelease, skips) ?? "run"]),
    );
  }

  it("runs every cell on a new kernel when libs still has the legacy probe (0.23.x)", async () => {
    const cells = await expand(libsTree(true), "x86_64", "6.1.0-56-cloud-amd64");
    expect(Object.values(cells)).toEqual(Array(6).fill("run"));
  });

  it("skips the legacy probe's cells everywhere when libs no longer has it (0.24.0 on)", async () => {
    const cells = await expand(libsTree(false), "aarch64", "6.12.118+deb13-cloud-arm64");
    expect(cells).toEqual({
      "cmake-configure": "run",
      kmod_build: "run",
      "kmod_scap-open": "run",
      "bpf-probe_build": "this libs version has no legacy eBPF probe (removed in libs 0.24.0)",
      "bpf-probe_scap-open": "this libs version has no legacy eBPF probe (removed in libs 0.24.0)",
      "modern-bpf_scap-open": "run",
    });
  });

  it.each<[Arch, string, string[]]>([
    // Below 5.8 the modern probe cannot run; the legacy probe needs 4.14 on x86_64, 4.17 on aarch64.
    ["x86_64", "5.4.0-100-generic", ["modern-bpf_scap-open"]],
    ["x86_64", "4.14.336", ["modern-bpf_scap-open"]],
    ["aarch64", "4.14.336", ["bpf-probe_build", "bpf-probe_scap-open", "modern-bpf_scap-open"]],
    ["x86_64", "3.10.0-1160.el7.x86_64", ["bpf-probe_build", "bpf-probe_scap-open", "modern-bpf_scap-open"]],
    // aarch64 has no kmod support before 3.16.
    [
      "aarch64",
      "3.10.0",
      ["kmod_build", "kmod_scap-open", "bpf-probe_build", "bpf-probe_scap-open", "modern-bpf_scap-open"],
    ],
  ])("on %s %s skips only %j by kernel version", async (arch, release, skipped) => {
    const cells = await expand(libsTree(true), arch, release);
    expect(Object.keys(cells).filter((t) => cells[t] !== "run")).toEqual(skipped);
    for (const t of skipped)
      expect(cells[t]).toMatch(/^kernel \d+\.\d+\.\d+ is older than \d+\.\d+, the minimum/);
  });

  it("names the libs version in the skip reason when git knows it", async () => {
    const dir = libsTree(false);
    const git = (...args: string[]) => execa("git", args, { cwd: dir });
    await git("init", "-q");
    await execa("touch", [join(dir, "driver", "modern_bpf", "probe.bpf.c")]);
    await git("add", ".");
    await git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x");
    await git("tag", "0.24.0");
    const sources: Map<string, LocalSource> = await materializeSources(
      bindSources(plan, given({ libs: dir })).sources,
      () => {},
    );
    expect(sources.get("libs")?.revision).toBe("0.24.0");
    expect(sourceSkips(plan.tests, sources).get("bpf-probe_build")).toBe(
      "this libs version has no legacy eBPF probe (removed in libs 0.24.0); libs is 0.24.0",
    );
  });
});

describe("builders' machines from the config", () => {
  it("run the falco plan's scap-open where the config says (e.g. Falco's CentOS 7 builder), the rest as planned", async () => {
    const { parseMatrix } = await import("../../src/config/load.js");
    const { withBuilderMachines } = await import("../../src/cli/run.js");
    const matrix = parseMatrix(
      `machines:
  - { name: debian-bookworm-6.1, kernel: { source: debian, suite: bookworm } }
  - { name: oldest, kernel: { source: debian, suite: bullseye } }
builders:
  scap-open: { machine: oldest }
  not-in-this-plan: { machine: oldest }
`,
      "k.yaml",
    );
    const plan = withBuilderMachines(await loadPlan("falco"), matrix);
    const machineOf = (name: string) => plan.builders.find((b) => b.name === name)?.machine;
    expect(machineOf("scap-open")).toBe("oldest");
    expect(machineOf("skeleton")).toBe(
      (await loadPlan("falco")).builders.find((b) => b.name === "skeleton")?.machine,
    );
    // The plan's Debian packages go only into Debian root disks: another image brings its own.
    const skeleton = plan.builders.find((b) => b.name === "skeleton");
    const oci = parseMatrix(
      `machines:\n  - { name: debian-bookworm-6.1, arch: x86_64, kernel: { source: debian, suite: bookworm }, rootfs: { source: oci, image: "example.org/builder:1" } }\n`,
      "k.yaml",
    );
    expect(skeleton && builderMachine(oci.machines, skeleton, "x86_64", "x86_64")?.packages).toEqual([]);
    expect(skeleton && builderMachine(matrix.machines, skeleton, "x86_64", "x86_64")?.packages).toContain(
      "cmake",
    );
    const scapOpen = plan.builders.find((b) => b.name === "scap-open");
    expect(scapOpen && builderMachine(matrix.machines, scapOpen, "aarch64", "x86_64")?.id).toBe(
      "oldest@aarch64",
    );
  });
});
