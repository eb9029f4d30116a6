import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_MATRIX_ORIGIN, DEFAULT_MATRIX_YAML } from "../../src/config/default.js";
import { describeMachines, loadMatrix, parseMatrix, selectMachines } from "../../src/config/load.js";
import type { Matrix } from "../../src/config/types.js";
import { UsageError } from "../../src/util/errors.js";

/** The UsageError message parseMatrix throws for `text` (fails the test if it does not throw one). */
function errorOf(text: string, origin = "kmatrix.yaml"): string {
  try {
    parseMatrix(text, origin);
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    const msg = (err as Error).message;
    expect(msg).not.toContain("\n");
    return msg;
  }
  throw new Error("expected parseMatrix to throw");
}

const ONE = `
machines:
  - name: m
    kernel: { source: debian, suite: bookworm }
`;

describe("default matrix", () => {
  const m = parseMatrix(DEFAULT_MATRIX_YAML, DEFAULT_MATRIX_ORIGIN);

  it("expands to the eight Debian machines", () => {
    expect(m.origin).toBe("<embedded default>");
    expect(m.machines.map((x) => x.id)).toEqual([
      "debian-bullseye-5.10@x86_64",
      "debian-bullseye-5.10@aarch64",
      "debian-bookworm-6.1@x86_64",
      "debian-bookworm-6.1@aarch64",
      "debian-trixie-6.12@x86_64",
      "debian-trixie-6.12@aarch64",
      "debian-sid@x86_64",
      "debian-sid@aarch64",
    ]);
  });

  it("uses cloud kernels, matching rootfs suites and the built-in defaults", () => {
    const trixieArm = m.machines.find((x) => x.id === "debian-trixie-6.12@aarch64");
    expect(trixieArm).toEqual({
      name: "debian-trixie-6.12",
      arch: "aarch64",
      id: "debian-trixie-6.12@aarch64",
      kernel: { source: "debian", suite: "trixie", flavour: "cloud" },
      rootfs: { source: "debian", suite: "trixie" },
      packages: [],
      vm: { cpus: 2, memoryMiB: 2048, accel: "auto", bootTimeoutSec: 300, kernelArgs: [], internet: false },
    });
    expect(m.archive).toEqual({
      mirror: "http://deb.debian.org/debian",
      securityMirror: "http://deb.debian.org/debian-security",
    });
  });
});

describe("parseMatrix", () => {
  it("fills defaults: both arches, cloud flavour, rootfs of the kernel suite", () => {
    const m = parseMatrix(ONE, "x.yaml");
    expect(m.machines.map((x) => x.id)).toEqual(["m@x86_64", "m@aarch64"]);
    expect(m.machines[0]?.kernel).toEqual({ source: "debian", suite: "bookworm", flavour: "cloud" });
    expect(m.machines[0]?.rootfs).toEqual({ source: "debian", suite: "bookworm" });
  });

  it("merges vm settings: defaults <- file vm <- machine vm", () => {
    const m = parseMatrix(
      `
vm: { cpus: 4, accel: tcg }
archive: { mirror: "https://mirror.example/debian/" }
machines:
  - name: a
    arch: x86_64
    kernel: { source: debian, suite: sid, flavour: rt }
    rootfs: { source: debian, suite: trixie }
    packages: [strace, libc6-dev, g++]
    vm: { memoryMiB: 4096, accel: kvm }
  - name: b
    arch: [aarch64]
    kernel: { source: debian, suite: bookworm }
`,
      "x.yaml",
    );
    const [a, b] = m.machines;
    expect(m.machines).toHaveLength(2);
    expect(a?.vm).toEqual({
      cpus: 4,
      memoryMiB: 4096,
      accel: "kvm",
      bootTimeoutSec: 300,
      kernelArgs: [],
      internet: false,
    });
    expect(b?.vm).toEqual({
      cpus: 4,
      memoryMiB: 2048,
      accel: "tcg",
      bootTimeoutSec: 300,
      kernelArgs: [],
      internet: false,
    });
    expect(a?.kernel.flavour).toBe("rt");
    expect(a?.rootfs.suite).toBe("trixie");
    expect(a?.packages).toEqual(["strace", "libc6-dev", "g++"]);
    expect(b?.id).toBe("b@aarch64");
    expect(m.archive).toEqual({
      mirror: "https://mirror.example/debian",
      securityMirror: "http://deb.debian.org/debian-security",
    });
  });

  it("rejects unknown keys", () => {
    expect(errorOf(`${ONE}bogus: 1\n`)).toBe('kmatrix.yaml: unknown key "bogus"');
    expect(errorOf(ONE.replace("suite: bookworm", "suite: bookworm, flavor: rt"))).toBe(
      'kmatrix.yaml: machines[0].kernel: unknown key "flavor"',
    );
  });

  it("rejects a bad arch, as a string or inside a list", () => {
    const three = `machines:
  - { name: a, kernel: { source: debian, suite: sid } }
  - { name: b, kernel: { source: debian, suite: sid } }
  - { name: c, arch: ARCH, kernel: { source: debian, suite: sid } }
`;
    expect(errorOf(three.replace("ARCH", "arm64"))).toBe(
      'kmatrix.yaml: machines[2].arch: expected "x86_64" or "aarch64", got "arm64"',
    );
    expect(errorOf(three.replace("ARCH", "[x86_64, arm64]"))).toBe(
      'kmatrix.yaml: machines[2].arch[1]: expected "x86_64" or "aarch64", got "arm64"',
    );
    expect(errorOf(three.replace("ARCH", "[]"))).toBe("kmatrix.yaml: machines[2].arch: must not be empty");
  });

  it("rejects bad names, suites, packages, numbers, mirrors and sources", () => {
    expect(errorOf(ONE.replace("name: m", "name: -m"))).toBe(
      `kmatrix.yaml: machines[0].name: expected a name of letters, digits, '.', '_' or '-', got "-m"`,
    );
    expect(errorOf(ONE.replace("name: m", "name: a/b"))).toMatch(
      /^kmatrix\.yaml: machines\[0\]\.name: .*got "a\/b"$/,
    );
    expect(errorOf(ONE.replace("name: m\n", ""))).toBe("kmatrix.yaml: machines[0].name: missing (required)");
    expect(errorOf(ONE.replace("suite: bookworm", "suite: Bookworm"))).toMatch(
      /^kmatrix\.yaml: machines\[0\]\.kernel\.suite: .*got "Bookworm"$/,
    );
    expect(errorOf(`${ONE}    packages: [strace, "bad pkg"]\n`)).toBe(
      'kmatrix.yaml: machines[0].packages[1]: expected a Debian package name, optionally with "/suite" (e.g. bpftool/bookworm-backports), got "bad pkg"',
    );
    expect(errorOf(`vm: { memoryMiB: 128 }\n${ONE}`)).toBe(
      "kmatrix.yaml: vm.memoryMiB: expected at least 256, got 128",
    );
    expect(errorOf(`vm: { cpus: 1.5 }\n${ONE}`)).toBe("kmatrix.yaml: vm.cpus: expected an integer, got 1.5");
    expect(errorOf(`vm: { cpus: 65 }\n${ONE}`)).toBe("kmatrix.yaml: vm.cpus: expected at most 64, got 65");
    expect(errorOf(`archive: { mirror: "ftp://x/debian" }\n${ONE}`)).toBe(
      'kmatrix.yaml: archive.mirror: expected an http:// or https:// URL, got "ftp://x/debian"',
    );
    expect(errorOf(`archive: { keyring: "" }\n${ONE}`)).toBe(
      'kmatrix.yaml: archive.keyring: expected the path of a keyring file, got ""',
    );
    expect(errorOf(`archive: { keyring: [a] }\n${ONE}`)).toMatch(/^kmatrix\.yaml: archive\.keyring: /);
    expect(errorOf(ONE.replace("source: debian", "source: oracle"))).toBe(
      'kmatrix.yaml: machines[0].kernel.source: expected "debian", "local", "oci" or "build", got "oracle"',
    );
    expect(errorOf("machines: []\n")).toBe("kmatrix.yaml: machines: must not be empty");
    expect(errorOf("vm: {}\n")).toBe("kmatrix.yaml: machines: missing (required)");
    expect(errorOf("")).toMatch(/^kmatrix\.yaml: file is empty/);
  });

  it("rejects a boot timeout over 24 h, naming the field (a huge one would make setTimeout fire at once)", () => {
    expect(errorOf(`vm: { bootTimeoutSec: 86401 }\n${ONE}`)).toBe(
      "kmatrix.yaml: vm.bootTimeoutSec: expected at most 86400, got 86401",
    );
    expect(errorOf(`${ONE}    vm: { bootTimeoutSec: 1e21 }\n`)).toBe(
      "kmatrix.yaml: machines[0].vm.bootTimeoutSec: expected at most 86400, got 1e+21",
    );
    expect(errorOf(`vm: { bootTimeoutSec: 0 }\n${ONE}`)).toBe(
      "kmatrix.yaml: vm.bootTimeoutSec: expected at least 1, got 0",
    );
    expect(
      parseMatrix(`vm: { bootTimeoutSec: 86400 }\n${ONE}`, "k.yaml").machines[0]?.vm.bootTimeoutSec,
    ).toBe(86400);
  });

  it("rejects duplicate machine ids, naming both entries", () => {
    const dup = `machines:
  - { name: a, arch: x86_64, kernel: { source: debian, suite: sid } }
  - { name: b, kernel: { source: debian, suite: sid } }
  - { name: a, kernel: { source: debian, suite: bookworm } }
`;
    expect(errorOf(dup)).toBe(
      'kmatrix.yaml: machines[2]: machine "a@x86_64" is already defined by machines[0]',
    );
    expect(errorOf(ONE.replace("name: m", "name: m\n    arch: [aarch64, aarch64]"))).toBe(
      'kmatrix.yaml: machines[0].arch: "aarch64" is listed twice',
    );
  });

  it("keeps builder-only machines out of the matrix's rows, but lets builders use them", () => {
    const m = parseMatrix(
      `${ONE}  - { name: b, builderOnly: true, kernel: { source: debian, suite: bullseye } }\nbuilders:\n  x: { machine: b }\n`,
      "kmatrix.yaml",
    );
    expect(selectMachines(m).map((x) => x.id)).toEqual(["m@x86_64", "m@aarch64"]);
    expect(m.machines.filter((x) => x.builderOnly).map((x) => x.id)).toEqual(["b@x86_64", "b@aarch64"]);
    expect(() => selectMachines(m, { patterns: ["b"] })).toThrow(/no machine matches "b"/);
  });

  it("takes builders' machines from the file, refusing a machine it does not have", () => {
    const m = parseMatrix(`${ONE}builders:\n  scap-open: { machine: m }\n`, "kmatrix.yaml");
    expect(m.builderMachines).toEqual(new Map([["scap-open", "m"]]));
    expect(errorOf(`${ONE}builders:\n  scap-open: { machine: centos-7 }\n`)).toBe(
      'kmatrix.yaml: builders.scap-open.machine: no machine "centos-7" in this file',
    );
    expect(errorOf(`${ONE}builders:\n  scap-open: centos-7\n`)).toMatch(/^kmatrix.yaml: builders.scap-open/);
  });

  it("names file and line on YAML syntax errors", () => {
    expect(errorOf("machines:\n  - name: a\n    kernel: [1, 2\n", "my.yaml")).toMatch(
      /^my\.yaml:4:1: invalid YAML: /,
    );
    expect(errorOf("machines: 1\nmachines: 2\n")).toMatch(
      /^kmatrix\.yaml:2:1: invalid YAML: Map keys must be unique/,
    );
  });
});

describe("loadMatrix", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kmatrix-config-"));
    await mkdir(path.join(dir, "with"));
    await writeFile(path.join(dir, "with", "kmatrix.yaml"), ONE);
    await writeFile(path.join(dir, "other.yaml"), ONE.replace("name: m", "name: other"));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("uses --config, resolved against cwd", async () => {
    const m = await loadMatrix({ configPath: "other.yaml", cwd: dir });
    expect(m.origin).toBe("other.yaml");
    expect(m.machines.map((x) => x.id)).toEqual(["other@x86_64", "other@aarch64"]);
  });

  it("keeps plan sources with the config file's directory, for relative paths", async () => {
    await writeFile(path.join(dir, "with", "src.yaml"), `${ONE}sources:\n  libs: ../libs\n`);
    const m = await loadMatrix({ configPath: path.join("with", "src.yaml"), cwd: dir });
    expect(m.sources).toEqual([{ name: "libs", spec: "../libs", baseDir: path.join(dir, "with") }]);
  });

  it("uses kmatrix.yaml in cwd, else the embedded default", async () => {
    const local = await loadMatrix({ cwd: path.join(dir, "with") });
    expect(local.origin.endsWith(path.join("with", "kmatrix.yaml"))).toBe(true);
    expect(local.machines.map((x) => x.id)).toEqual(["m@x86_64", "m@aarch64"]);
    const dflt = await loadMatrix({ cwd: dir });
    expect(dflt.origin).toBe("<embedded default>");
    expect(dflt.machines).toHaveLength(8);
  });

  it("takes the archive keyring relative to the config file (absent: Debian's, chosen by the archive client)", async () => {
    await writeFile(
      path.join(dir, "with", "mirror.yaml"),
      `archive: { mirror: "http://mirror.example/debian", keyring: keys/mirror.gpg }\n${ONE}`,
    );
    const m = await loadMatrix({ configPath: path.join("with", "mirror.yaml"), cwd: dir });
    expect(m.archive).toEqual({
      mirror: "http://mirror.example/debian",
      securityMirror: "http://deb.debian.org/debian-security",
      keyring: path.join(dir, "with", "keys", "mirror.gpg"),
    });
    expect(parseMatrix(`archive: { keyring: /etc/k.asc }\n${ONE}`, "x.yaml").archive.keyring).toBe(
      "/etc/k.asc",
    );
    expect((await loadMatrix({ cwd: dir })).archive.keyring).toBeUndefined();
  });

  it("rejects a missing --config file, naming it", async () => {
    await expect(loadMatrix({ configPath: "nope.yaml", cwd: dir })).rejects.toThrow(UsageError);
    await expect(loadMatrix({ configPath: "nope.yaml", cwd: dir })).rejects.toThrow(
      "nope.yaml: config file not found",
    );
  });
});

describe("kernel: { source: local }", () => {
  let dir: string;
  const config = (kernelPath: string, arch = "x86_64", rootfs = "") =>
    `machines:\n  - name: mine\n    arch: ${arch}\n    kernel: { source: local, path: ${kernelPath} }\n${rootfs}`;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "kmatrix-local-"));
    await mkdir(path.join(dir, "linux/include/config"), { recursive: true });
    await mkdir(path.join(dir, "linux/arch/x86/boot"), { recursive: true });
    await writeFile(path.join(dir, "linux/include/config/kernel.release"), "6.18.0-rc1\n");
    await writeFile(path.join(dir, "linux/arch/x86/boot/bzImage"), "image");
    await mkdir(path.join(dir, "unbuilt"));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("takes the path relative to the config file; the root disk is bookworm's unless given", async () => {
    await writeFile(path.join(dir, "k.yaml"), config("linux"));
    const m = await loadMatrix({ configPath: "k.yaml", cwd: dir });
    expect(m.machines[0]?.kernel).toEqual({ source: "local", path: path.join(dir, "linux") });
    expect(m.machines[0]?.rootfs).toEqual({ source: "debian", suite: "bookworm" });
    const t = parseMatrix(
      config(path.join(dir, "linux"), "x86_64", "    rootfs: { source: debian, suite: trixie }\n"),
      "x.yaml",
    );
    expect(t.machines[0]?.rootfs).toEqual({ source: "debian", suite: "trixie" });
    expect(describeMachines(t.machines).split("\n")[1]).toContain(`local ${path.join(dir, "linux")}`);
  });

  it("names the field of a missing path, an unbuilt tree, an image missing for the architecture", () => {
    const at = (p: string, arch?: string) => errorOf(config(p, arch), "k.yaml");
    expect(errorOf(`machines:\n  - name: mine\n    kernel: { source: local }\n`, "k.yaml")).toMatch(
      /^k\.yaml: machines\[0\]\.kernel\.path: /,
    );
    expect(at(path.join(dir, "nope"))).toBe(
      `k.yaml: machines[0].kernel.path: ${path.join(dir, "nope")}: no such directory`,
    );
    expect(at(path.join(dir, "unbuilt"))).toBe(
      `k.yaml: machines[0].kernel.path: ${path.join(dir, "unbuilt")}: no include/config/kernel.release (not a built kernel tree: run make first)`,
    );
    expect(at(path.join(dir, "linux"), "[x86_64, aarch64]")).toBe(
      `k.yaml: machines[0].kernel.path: ${path.join(dir, "linux")}: no arch/arm64/boot/Image, the kernel image for aarch64`,
    );
    expect(errorOf(config(`${path.join(dir, "linux")}, suite: bookworm`), "k.yaml")).toBe(
      'k.yaml: machines[0].kernel: unknown key "suite"',
    );
  });
});

describe("selectMachines", () => {
  const matrix: Matrix = parseMatrix(DEFAULT_MATRIX_YAML, DEFAULT_MATRIX_ORIGIN);
  const ids = (opts: Parameters<typeof selectMachines>[1]) => selectMachines(matrix, opts).map((m) => m.id);

  it("returns everything without filters, in matrix order", () => {
    expect(ids({})).toHaveLength(8);
  });

  it("filters by arch", () => {
    expect(ids({ arch: "aarch64" })).toEqual([
      "debian-bullseye-5.10@aarch64",
      "debian-bookworm-6.1@aarch64",
      "debian-trixie-6.12@aarch64",
      "debian-sid@aarch64",
    ]);
  });

  it("matches globs against names with dots literally", () => {
    expect(ids({ patterns: ["debian-bookworm-6.1"] })).toEqual([
      "debian-bookworm-6.1@x86_64",
      "debian-bookworm-6.1@aarch64",
    ]);
    expect(ids({ patterns: ["*-6.1?"], arch: "x86_64" })).toEqual(["debian-trixie-6.12@x86_64"]);
    expect(ids({ patterns: ["*-5.*", "debian-s?d"], arch: "x86_64" })).toEqual([
      "debian-bullseye-5.10@x86_64",
      "debian-sid@x86_64",
    ]);
    // `.` is not a wildcard: "6x1" must not match "6.1".
    expect(() => ids({ patterns: ["debian-bookworm-6x1"] })).toThrow(UsageError);
  });

  it("matches patterns with @ against the id", () => {
    expect(ids({ patterns: ["debian-sid@aarch64", "*trixie*@x86_64"] })).toEqual([
      "debian-trixie-6.12@x86_64",
      "debian-sid@aarch64",
    ]);
  });

  it("rejects a pattern that matches nothing", () => {
    expect(() => ids({ patterns: ["debian-*", "ubuntu-*"] })).toThrow(/no machine matches "ubuntu-\*"/);
  });
});

describe("describeMachines", () => {
  it("renders an aligned table", () => {
    const m = parseMatrix(DEFAULT_MATRIX_YAML, DEFAULT_MATRIX_ORIGIN);
    const lines = describeMachines(m.machines.slice(0, 2)).split("\n");
    expect(lines).toEqual([
      "NAME                  ARCH     KERNEL                 ROOTFS           CPUS  MEMORY    ACCEL",
      "debian-bullseye-5.10  x86_64   debian bullseye cloud  debian bullseye  2     2048 MiB  auto",
      "debian-bullseye-5.10  aarch64  debian bullseye cloud  debian bullseye  2     2048 MiB  auto",
    ]);
  });
});
