import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ARM64_IMAGE_MAGIC, arm64Image, pvhEntry } from "../../src/images/oci/elf.js";
import type { CellRecord, RunRecord } from "../../src/results/types.js";
import { CLI, EXAMPLE_TESTS, type KeyEntry } from "./helpers.js";
import {
  buildOciFixture,
  type OciFixture,
  pushFixture,
  startRegistry,
  vmlinuxFromBzImage,
} from "./oci-fixture.js";

// Machines from OCI images in a real registry (Debian's docker-registry on 127.0.0.1), made by
// oci-fixture.ts from kmatrix's own bookworm machines: Falco's layout (x86_64: ELF vmlinux booted
// through PVH on microvm; aarch64: the raw arm64 Image Firecracker boots, on virt; a systemd root
// disk booted with its own init) and little-vm-helper's (bzImage + modules, a plain container root
// disk booted with kmatrix's init). `falco-kernel:6.1` and `root:systemd` are multi-architecture
// indexes: one reference, each architecture's image.
describe("kernel/rootfs: { source: oci } from a registry on 127.0.0.1", () => {
  let fixture: OciFixture;
  let tmp: string;
  let config: string;
  let registry: Awaited<ReturnType<typeof startRegistry>> | undefined;
  let repo: string;
  const cli = (...args: string[]) =>
    execa("node", [CLI, ...args, "--config", config], { all: true, reject: false });

  beforeAll(async () => {
    fixture = await buildOciFixture((l) => console.log(l));
    tmp = await mkdtemp(join(tmpdir(), "kmx-oci-"));
    registry = await startRegistry(tmp);
    await pushFixture(fixture, registry.host);
    repo = `${registry.host}/kmatrix`;
    config = join(tmp, "kmatrix.yaml");
    await writeFile(
      config,
      [
        `registries: { "${registry.host}": { tlsVerify: false } }`,
        "machines:",
        `  - { name: falco-6.1, arch: x86_64, kernel: { source: oci, image: "${repo}/falco-kernel:6.1-x86_64" }, rootfs: { source: oci, image: "${repo}/root:systemd" } }`,
        `  - { name: falco-6.1, arch: aarch64, kernel: { source: oci, image: "${repo}/falco-kernel:6.1" }, rootfs: { source: oci, image: "${repo}/root:systemd" } }`,
        // Its kernel gzip'd, as distributions ship an arm64 vmlinuz.
        `  - { name: falco-gz, arch: aarch64, kernel: { source: oci, image: "${repo}/falco-kernel:6.1-aarch64-gz" }, rootfs: { source: oci, image: "${repo}/root:systemd" } }`,
        // The same kernel without its PVH note, as Falco's older kernels are: booted through the shim.
        `  - { name: falco-nopvh, arch: x86_64, kernel: { source: oci, image: "${repo}/falco-kernel:6.1-x86_64-nopvh" }, rootfs: { source: oci, image: "${repo}/root:systemd" } }`,
        `  - { name: lvh-6.1, arch: x86_64, kernel: { source: oci, image: "${repo}/lvh-kernel:6.1-main" }, rootfs: { source: oci, image: "${repo}/root:plain" } }`,
        // A kernel image is no root disk: no shell, no sshd.
        `  - { name: no-shell, arch: x86_64, kernel: { source: oci, image: "${repo}/falco-kernel:6.1-x86_64" }, rootfs: { source: oci, image: "${repo}/falco-kernel:6.1-x86_64" } }`,
        // The example plan's builders run on these (cached by the global set-up).
        "  - { name: debian-bookworm-6.1, arch: x86_64, kernel: { source: debian, suite: bookworm } }",
        "  - { name: debian-bullseye-5.10, arch: x86_64, kernel: { source: debian, suite: bullseye } }",
        "  - { name: debian-bookworm-6.1, arch: aarch64, kernel: { source: debian, suite: bookworm } }",
        "  - { name: debian-bullseye-5.10, arch: aarch64, kernel: { source: debian, suite: bullseye } }",
        "",
      ].join("\n"),
    );
  });

  afterAll(async () => {
    await registry?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it("the Falco layout's vmlinux is Debian's kernel with its PVH entry note", async () => {
    const vmlinux = await vmlinuxFromBzImage(await readFile(fixture.debian.vmlinuz));
    expect(pvhEntry(vmlinux)).toBeGreaterThan(0x100000);
  });

  it("pulls, recognises the layouts, and refuses a root disk without a shell by name", async () => {
    const built = await cli("images", "build", "falco-6.1", "falco-nopvh", "lvh-6.1", "--arch", "x86_64");
    expect(built.exitCode, built.all).toBe(0);
    const list = await execa("node", [CLI, "images", "list"], { all: true });
    expect(list.stdout).toMatch(/^kernels .* falco layout$/m);
    expect(list.stdout).toMatch(/^kernels .* falco layout, booted through the PVH shim$/m);
    expect(list.stdout).toMatch(/^kernels .* lvh layout$/m);
    expect(list.stdout).toMatch(/^rootfs +oci-root-amd64-\S+ .* systemd layout$/m);
    expect(list.stdout).toMatch(/^rootfs +oci-root-amd64-\S+ .* container layout$/m);
    const keys = await cli(
      "images",
      "keys",
      "falco-6.1",
      "falco-nopvh",
      "lvh-6.1",
      "--arch",
      "x86_64",
      "--json",
    );
    const entries = (JSON.parse(keys.stdout) as { entries: KeyEntry[] }).entries;
    const kernel = JSON.parse(await readFile(join(entries[0]?.dir ?? "", "manifest.json"), "utf8"));
    expect(kernel).toMatchObject({ layout: "falco", x86Machine: "microvm", vmlinuz: "vmlinux" });
    expect(kernel.pvhShim).toBeUndefined();
    expect(kernel.resolved.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    // Without its PVH note: the shim, built into the kernel's entry, is what QEMU boots.
    const noPvh = entries.find((e) => e.machineId === "falco-nopvh@x86_64" && e.kind === "kernels");
    const noPvhKernel = JSON.parse(await readFile(join(noPvh?.dir ?? "", "manifest.json"), "utf8"));
    expect(noPvhKernel).toMatchObject({ layout: "falco", x86Machine: "microvm", pvhShim: "pvh-shim.elf" });
    const shim = await readFile(join(noPvh?.dir ?? "", "pvh-shim.elf"));
    // A 32-bit x86 ELF (QEMU enters PVH code in 32-bit mode) with the Xen note QEMU looks for.
    expect([shim.readUInt32BE(0), shim[4], shim.readUInt16LE(18)]).toEqual([0x7f454c46, 1, 3]);
    expect(shim.includes(Buffer.from("Xen\0"))).toBe(true);

    // The pulls these machines use are kept by prune.
    const prune = await cli("images", "prune", "--dry-run");
    expect(prune.exitCode, prune.all).toBe(0);
    expect(prune.stdout).not.toMatch(/\/oci\/(root|falco-kernel|lvh-kernel)-/);

    const bad = await cli("images", "build", "no-shell");
    expect(bad.exitCode).not.toBe(0);
    expect(bad.all).toContain(`${repo}/falco-kernel:6.1-x86_64: no /bin/sh: a root disk needs a shell`);
  });

  it("aarch64: the index's arm64 image, its raw Image as is, a gzip'd one decompressed", async () => {
    const built = await cli("images", "build", "falco-6.1", "--arch", "aarch64");
    expect(built.exitCode, built.all).toBe(0);
    const keys = await cli("images", "keys", "falco-6.1", "falco-gz", "--arch", "aarch64", "--json");
    expect(keys.exitCode, keys.all).toBe(0);
    const entries = (JSON.parse(keys.stdout) as { entries: KeyEntry[] }).entries;
    const kernels = entries.filter((e) => e.kind === "kernels");
    expect(kernels.map((e) => e.machineId)).toEqual(["falco-6.1@aarch64", "falco-gz@aarch64"]);
    // Both kernels are the aarch64 machine's, whose release shows in their entries' names.
    for (const k of kernels)
      expect(k.entry.startsWith(`kernels/${fixture.aarch64.release}-`), k.entry).toBe(true);
    const dir = kernels[0]?.dir ?? "";
    const kernel = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8"));
    expect(kernel).toMatchObject({ layout: "falco", vmlinuz: "Image" });
    expect(kernel.x86Machine).toBeUndefined();
    const image = await readFile(join(dir, "Image"));
    expect(image.readUInt32LE(56)).toBe(ARM64_IMAGE_MAGIC);
    // The raw Image is the Debian machine's kernel, byte for byte.
    expect(image.equals(arm64Image(await readFile(fixture.aarch64.debian.vmlinuz)).bytes)).toBe(true);
    // One reference, each architecture's manifest.
    const x86 = await cli("images", "keys", "falco-6.1", "--arch", "x86_64", "--json");
    const x86Kernel = (JSON.parse(x86.stdout) as { entries: KeyEntry[] }).entries.find(
      (e) => e.kind === "kernels",
    );
    const x86Manifest = JSON.parse(await readFile(join(x86Kernel?.dir ?? "", "manifest.json"), "utf8"));
    expect(kernel.resolved.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(kernel.resolved.digest).not.toBe(x86Manifest.resolved.digest);
  });

  it("runs the example plan green on all three, with the registry gone (cached digests need no network)", async () => {
    await registry?.stop();
    registry = undefined;
    const out = join(tmp, "run");
    const r = await cli(
      "run",
      "--plan",
      "example",
      "-m",
      "falco-6.1",
      "-m",
      "falco-nopvh",
      "-m",
      "lvh-6.1",
      "--arch",
      "x86_64",
      // One VM at a time: two 2-vCPU TCG machines on a 2-core host can starve a vCPU into an RCU
      // stall (seen once: kmod_open stalled, then passed on its confirming fresh boot, so ⚠️).
      "--jobs",
      "1",
      "--output",
      out,
    );
    let stalls = 0;
    for (const machine of ["falco-6.1@x86_64", "falco-nopvh@x86_64", "lvh-6.1@x86_64"])
      for (const test of EXAMPLE_TESTS) {
        const cell: CellRecord = JSON.parse(
          await readFile(join(out, "cells", machine, `${test}.json`), "utf8"),
        );
        // Known, not mended yet: on microvm under TCG kmod_open sometimes gets an RCU stall report
        // that a fresh boot does not repeat (a harness error by design, not the driver's). The
        // driver must still have passed on that confirming boot; anything else fails here.
        const stalledOnce =
          cell.verdict === "error" &&
          /— not on a second run on a fresh boot \(pass\)/.test(cell.reason ?? "");
        if (stalledOnce) stalls++;
        else
          expect(cell.verdict, `${machine} ${test}: ${cell.reason}\n${cell.outputTail}\n${r.all}`).toBe(
            "pass",
          );
      }
    expect(r.exitCode, r.all).toBe(stalls > 0 ? 1 : 0);
    // Falco's machine booted its own systemd on microvm; LVH's machine kmatrix's stage 2.
    const consoles = await readdir(join(out, "consoles"));
    const consoleOf = async (prefix: string) =>
      readFile(join(out, "consoles", consoles.find((c) => c.startsWith(prefix)) ?? "none"), "utf8");
    for (const name of ["falco-6.1@x86_64", "falco-nopvh@x86_64"]) {
      const falco = await consoleOf(name);
      expect(falco).toMatch(/kmatrix: own init at/);
      expect(falco).toMatch(/KMATRIX-READY/);
    }
    const lvh = await consoleOf("lvh-6.1@x86_64");
    expect(lvh).toMatch(/kmatrix: stage 2 at/);
    expect(lvh).not.toMatch(/own init/);
  });

  it("aarch64: runs the example plan green on Falco's layout (raw Image on virt, systemd root disk)", async () => {
    // The registry is gone since the test above: the aarch64 digests resolved in the one before.
    const out = join(tmp, "run-aarch64");
    const started = Date.now();
    const r = await cli(
      "run",
      "--plan",
      "example",
      "-m",
      "falco-6.1",
      "--arch",
      "aarch64",
      "--jobs",
      "1",
      "--output",
      out,
    );
    const run: RunRecord = JSON.parse(await readFile(join(out, "run.json"), "utf8"));
    const m = run.machines.find((x) => x.machineId === "falco-6.1@aarch64");
    let stalls = 0;
    for (const test of EXAMPLE_TESTS) {
      const cell: CellRecord = JSON.parse(
        await readFile(join(out, "cells", "falco-6.1@aarch64", `${test}.json`), "utf8"),
      );
      // The same rule as x86_64's above: a stall a fresh boot does not repeat, the driver passing.
      const stalledOnce =
        cell.verdict === "error" && /— not on a second run on a fresh boot \(pass\)/.test(cell.reason ?? "");
      if (stalledOnce) stalls++;
      else
        expect(cell.verdict, `falco-6.1@aarch64 ${test}: ${cell.reason}\n${cell.outputTail}\n${r.all}`).toBe(
          "pass",
        );
    }
    const build: CellRecord = JSON.parse(
      await readFile(join(out, "cells", "falco-6.1@aarch64", "kmod_build.json"), "utf8"),
    );
    console.log(
      `aarch64 example plan on falco-6.1: ${((Date.now() - started) / 1000).toFixed(0)} s; boot to SSH ${((m?.bootMs ?? 0) / 1000).toFixed(1)} s (${m?.accel}); compile steps in the ${build.ranIn}; ${stalls} stall(s)`,
    );
    expect(r.exitCode, r.all).toBe(stalls > 0 ? 1 : 0);
    const log = await readFile(join(out, "cells", "falco-6.1@aarch64", "kmod_open.log"), "utf8");
    expect(log).toMatch(/captured 50 events/);
    const consoles = await readdir(join(out, "consoles"));
    const falco = await readFile(
      join(out, "consoles", consoles.find((c) => c.startsWith("falco-6.1@aarch64")) ?? "none"),
      "utf8",
    );
    expect(falco).toMatch(/kmatrix: own init at/);
    expect(falco).toMatch(/KMATRIX-READY/);
    // Made for Firecracker: its disk is a virtio-mmio device (virt's device tree), not a PCI one.
    const disk = await cli("shell", "falco-6.1", "--arch", "aarch64", "realpath", "/sys/block/vda");
    expect(disk.exitCode, disk.all).toBe(0);
    expect(disk.stdout).toMatch(/^\/sys\/devices\/platform\/[0-9a-f]+\.virtio_mmio\/virtio\d+\/block\/vda$/m);
  }, 1_500_000);
});
