/**
 * A cross-built kernel's build tree carries host programs of the build host (x86_64 fixdep,
 * modpost…), which cannot run in the arm64 guest that builds out-of-tree modules against it.
 *
 * What works (tried on 6.1): Kbuild's own external-module build, pointed at the program
 * directories of the copied build tree (`make -C <tree> M=<tree>/scripts/mod HOSTCC=<cross gcc>`),
 * the way the kernel's install-extmod-build does it since 6.12 ("This leverages external module
 * building"). `make ARCH=arm64 CROSS_COMPILE=… scripts` alone rebuilds nothing for the target
 * (HOSTCC stays the host's), and `HOSTCC=<cross gcc> scripts_basic` at the top level rebuilds
 * kconfig's programs first, which the build then runs. Two of the programs rebuilt here run while
 * building (mk_elfconfig, and fixdep right after it is made): they run through qemu-user's
 * binfmt_misc registration, which kmatrix needs for arm64 root disks anyway. scripts/basic goes
 * last so that the other directories are built with the host's fixdep.
 *
 * Rebuilt: scripts/mod (modpost), scripts/genksyms (with CONFIG_MODVERSIONS), scripts/basic
 * (fixdep): what an out-of-tree module build runs. Not: the programs only vmlinux's link uses
 * (kallsyms, sorttable), kconfig (external builds never reconfigure), sign-file (needs the
 * target's libcrypto; a config that signs modules at build time cannot build them in the guest).
 */
import { existsSync } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import type { Toolchain } from "./kbuild.js";

/** ELF e_machine of the programs each target needs. */
const ELF_MACHINE = { aarch64: 183, x86_64: 62 } as const;

export async function rebuildHostProgramsForTarget(
  headersTree: string,
  tc: Toolchain,
  what: string,
  log: (line: string) => void,
): Promise<void> {
  const started = Date.now();
  const dirs = ["scripts/mod", "scripts/genksyms", "scripts/basic"].filter(
    (d) => d !== "scripts/genksyms" || existsSync(join(headersTree, d, "genksyms")),
  );
  for (const dir of dirs) {
    const r = await execa(
      "make",
      ["-C", headersTree, ...tc.makeVars, "HOSTCC=aarch64-linux-gnu-gcc", `M=${join(headersTree, dir)}`],
      { all: true, reject: false },
    );
    if (r.exitCode !== 0)
      throw new Error(
        `${what}: rebuilding ${dir} of the build tree for ${tc.arch} failed: ${(r.all ?? "").trim().split("\n").slice(-10).join(" | ")}`,
      );
  }
  for (const program of ["scripts/basic/fixdep", "scripts/mod/modpost"]) {
    const machine = await elfMachine(join(headersTree, program));
    if (machine !== ELF_MACHINE[tc.arch])
      throw new Error(
        `${what}: ${program} of the build tree is not an ${tc.arch} program after rebuilding it`,
      );
  }
  log(
    `${what}: build tree's host programs rebuilt for ${tc.arch} (${dirs.join(", ")}) in ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
}

/** e_machine of an ELF file (bytes 18–19, little-endian on both targets). */
async function elfMachine(path: string): Promise<number | undefined> {
  const file = await open(path, "r").catch(() => undefined);
  if (!file) return undefined;
  try {
    const header = Buffer.alloc(20);
    await file.read(header, 0, 20, 0);
    return header.toString("latin1", 1, 4) === "ELF" ? header.readUInt16LE(18) : undefined;
  } finally {
    await file.close();
  }
}
