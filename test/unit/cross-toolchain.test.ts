import { mkdir, mkdtemp, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { installedPackages, upstreamVersion } from "../../src/images/cross/dpkg-status.js";
import { crossPackages, resolveInside, versionMismatch } from "../../src/images/cross/toolchain.js";

const STATUS = `Package: gcc-12
Status: install ok installed
Architecture: arm64
Version: 12.2.0-14+deb12u1

Package: gcc
Status: install ok installed
Version: 4:12.2.0-3

Package: gcc-11
Status: deinstall ok config-files
Version: 11.3.0-12

Package: binutils-aarch64-linux-gnu
Status: install ok installed
Version: 2.40-2

Package: make
Status: install ok installed
Version: 4.3-4.1
`;

describe("the host's cross compilers for a machine of the other architecture", () => {
  it("reads what a disk has installed, and versions without epoch and revision", () => {
    const installed = installedPackages(STATUS);
    expect([...installed.keys()]).toEqual(["gcc-12", "gcc", "binutils-aarch64-linux-gnu", "make"]);
    expect(upstreamVersion("4:12.2.0-3")).toBe("12.2.0");
    expect(upstreamVersion("12.2.0-14cross1")).toBe("12.2.0");
    expect(upstreamVersion("1.0")).toBe("1.0");
  });

  it("asks for the cross twin of every compiler the machine has", () => {
    const { packages, pairs } = crossPackages(installedPackages(STATUS), "aarch64");
    expect(packages).toEqual([
      "binutils-aarch64-linux-gnu",
      "gcc-12-aarch64-linux-gnu",
      "gcc-aarch64-linux-gnu",
      "libc6-dev-arm64-cross",
    ]);
    expect(pairs.map((p) => p.machine)).toEqual(["binutils-aarch64-linux-gnu", "gcc", "gcc-12"]);
    // Debian spells x86_64's triplet with dashes in package names.
    const x86 = crossPackages(new Map([["gcc-12", "12.2.0-14"]]), "x86_64");
    expect(x86.packages).toEqual(["gcc-12-x86-64-linux-gnu", "libc6-dev-amd64-cross"]);
  });

  it("is used only when every compiler is of the same upstream version", () => {
    const { pairs } = crossPackages(installedPackages(STATUS), "aarch64");
    const same = new Map([
      ["gcc-12-aarch64-linux-gnu", "12.2.0-14cross1"],
      ["gcc-aarch64-linux-gnu", "4:12.2.0-3"],
      ["binutils-aarch64-linux-gnu", "2.40-2"],
    ]);
    expect(versionMismatch(pairs, same)).toBeUndefined();
    same.set("gcc-12-aarch64-linux-gnu", "12.3.0-1cross1");
    expect(versionMismatch(pairs, same)).toBe(
      "the machine's gcc-12 is 12.2.0-14+deb12u1, the host's gcc-12-aarch64-linux-gnu 12.3.0-1cross1",
    );
    same.delete("gcc-12-aarch64-linux-gnu");
    expect(versionMismatch(pairs, same)).toBe("gcc-12-aarch64-linux-gnu is not in the suite");
  });

  it("resolves the loader's links inside the toolchain's tree, never on the host", async () => {
    const tree = await mkdtemp(join(tmpdir(), "kmx-cross-"));
    await mkdir(join(tree, "usr/lib/x86_64-linux-gnu"), { recursive: true });
    await mkdir(join(tree, "usr/lib64"), { recursive: true });
    await writeFile(join(tree, "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"), "");
    await symlink("usr/lib64", join(tree, "lib64"));
    await symlink("usr/lib", join(tree, "lib"));
    // Absolute, as Debian ships it: /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...
    await symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", join(tree, "usr/lib64/ld-linux-x86-64.so.2"));
    expect(await resolveInside(tree, "/lib64/ld-linux-x86-64.so.2")).toBe(
      "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    );
    await symlink("../../..", join(tree, "usr/lib/up"));
    expect(await resolveInside(tree, "/usr/lib/up/etc")).toBe("/etc");
  });
});
