/**
 * A cross-built kernel's build tree carries host programs of the build host (x86_64 fixdep,
 * modpost…), which cannot run in the arm64 guest that builds out-of-tree modules against it.
 * (`make ARCH=arm64 CROSS_COMPILE=… scripts` leaves them as they are: HOSTCC is still the host's.)
 *
 * What works (tried on 6.1): Kbuild's own external-module build pointed at each program directory
 * of the copied build tree, `make -C <tree> M=<tree>/scripts/mod HOSTCC=aarch64-linux-gnu-gcc`, as
 * the kernel's install-extmod-build does since 6.12 ("This leverages external module building"):
 * Kbuild's rules, flags and generated headers, no syncconfig (external builds never reconfigure).
 * Linked statically (HOSTLDFLAGS=-static): mk_elfconfig, and fixdep right after it is made, run
 * during that build through qemu-user's binfmt_misc registration (kmatrix needs it for arm64 root
 * disks anyway), which finds no arm64 loader on the host for a dynamic program; and a static
 * program runs on any suite's root disk whatever its glibc. scripts/basic goes last, so that the
 * other directories are built with the host's fixdep.
 *
 * Rebuilt: scripts/mod (modpost), scripts/genksyms (with CONFIG_MODVERSIONS), scripts/basic
 * (fixdep): what an out-of-tree module build runs. Not: programs only vmlinux's link uses
 * (kallsyms, sorttable), kconfig, sign-file (it needs the target's libcrypto: a config that signs
 * modules while building them cannot build them in the guest).
 */
import { existsSync } from "node:fs";
import { open, readdir, rm } from "node:fs/promises";
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
      [
        "-C",
        headersTree,
        ...tc.makeVars,
        "HOSTCC=aarch64-linux-gnu-gcc",
        "HOSTLDFLAGS=-static",
        `M=${join(headersTree, dir)}`,
      ],
      { all: true, reject: false },
    );
    if (r.exitCode !== 0)
      throw new Error(
        `${what}: rebuilding ${dir} of the build tree for ${tc.arch} failed (is qemu-user registered with binfmt_misc? \`kmatrix doctor\`): ${(r.all ?? "").trim().split("\n").slice(-10).join(" | ")}`,
      );
    // What the external build leaves besides the programs (objects, .cmd files, its empty symvers).
    for (const f of await readdir(join(headersTree, dir)))
      if (/\.o$|^\..*\.cmd$|^Module\.symvers$|^modules\.order$/.test(f)) await rm(join(headersTree, dir, f));
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
