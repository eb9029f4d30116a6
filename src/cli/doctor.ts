import { mkdir, readFile, statfs } from "node:fs/promises";
import { ARCHES, type Arch } from "../config/types.js";
import { cacheRoot } from "../images/cache.js";
import { debArchOf } from "../images/debian-archive.js";
import { findCachedProbeKernel } from "../images/index.js";
import { findProgram } from "../util/find-program.js";
import { decideAccel, hostArch } from "../vm/accel.js";

/** Host programs kmatrix runs, and the Debian package that provides each. */
const TOOLS: [program: string, pkg: string][] = [
  ["qemu-system-x86_64", "qemu-system-x86"],
  ["qemu-system-aarch64", "qemu-system-arm"],
  ["qemu-img", "qemu-utils"],
  ["mmdebstrap", "mmdebstrap"],
  ["mke2fs", "e2fsprogs"],
  ["dpkg-deb", "dpkg"],
  ["cpio", "cpio"],
  ["modinfo", "kmod"],
  ["depmod", "kmod"],
  ["xz", "xz-utils"],
  ["zstd", "zstd"],
  ["setpriv", "util-linux"],
];

const MIN_FREE_GIB = 20;

interface Check {
  ok: boolean;
  what: string;
  fix?: string;
}

/** Prints what the host has and lacks; true when everything needed is there. */
export async function runDoctor(): Promise<boolean> {
  const checks: Check[] = [];
  for (const [program, pkg] of TOOLS) {
    checks.push({
      ok: (await findProgram(program)) !== undefined,
      what: `${program}`,
      fix: `apt-get install ${pkg}`,
    });
  }
  const isRoot = process.getuid?.() === 0;
  checks.push({
    ok: isRoot,
    what: "root (needed to build root disks with mmdebstrap; booting needs none)",
    fix: "run `kmatrix images build` as root once",
  });
  for (const arch of ARCHES) if (arch !== hostArch()) checks.push(await foreignExec(arch));

  const dir = cacheRoot();
  await mkdir(dir, { recursive: true });
  const fs = await statfs(dir);
  const freeGiB = (fs.bavail * fs.bsize) / 1024 ** 3;
  checks.push({
    ok: freeGiB >= MIN_FREE_GIB,
    what: `${freeGiB.toFixed(0)} GiB free in ${dir}`,
    fix: `free at least ${MIN_FREE_GIB} GiB or set KMATRIX_CACHE`,
  });

  for (const arch of ARCHES) {
    // The decisive probe boots a real kernel; without a cached one, only the firmware probe can run.
    const kernel = await findCachedProbeKernel(arch);
    const d = await decideAccel("auto", arch, kernel).catch((e: Error) => ({
      accel: "none",
      reason: e.message,
    }));
    const caveat =
      kernel || arch !== hostArch() ? "" : "; provisional: build an image to probe with a real kernel";
    checks.push({ ok: d.accel !== "none", what: `${arch} guests: ${d.accel} (${d.reason}${caveat})` });
  }
  for (const c of checks)
    console.log(`${c.ok ? "ok     " : "MISSING"} ${c.what}${c.ok || !c.fix ? "" : `  ->  ${c.fix}`}`);
  return checks.every((c) => c.ok);
}

/** Building a foreign root disk runs its maintainer scripts through qemu-user via binfmt_misc. */
async function foreignExec(arch: Arch): Promise<Check> {
  const name = arch === "aarch64" ? "qemu-aarch64" : "qemu-x86_64";
  const state = await readFile(`/proc/sys/fs/binfmt_misc/${name}`, "utf8").catch(() => "");
  return {
    ok: state.startsWith("enabled"),
    what: `binfmt_misc runs ${debArchOf(arch)} programs (to build ${arch} root disks)`,
    fix: "apt-get install qemu-user-static binfmt-support && mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && update-binfmts --enable",
  };
}
