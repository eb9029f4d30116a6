import { mkdir, readFile, statfs } from "node:fs/promises";
import { ARCHES, type Arch } from "../config/types.js";
import { cacheRoot } from "../images/cache.js";
import { debArchOf } from "../images/debian-archive.js";
import { findCachedProbeKernel } from "../images/index.js";
import { decideAccel, hostArch } from "../vm/accel.js";
import { hostToolStatus } from "../vm/host-tools.js";

const MIN_FREE_GIB = 20;

interface Check {
  ok: boolean;
  what: string;
  fix?: string;
  /** Only kmatrix's own tests need it: reported, but the host still passes. */
  optional?: boolean;
}

/** Prints what the host has and lacks; true when everything needed is there. */
export async function runDoctor(): Promise<boolean> {
  const checks: Check[] = [];
  // One list (src/vm/host-tools.ts) for the doctor, the integration tests and `make deps`.
  for (const s of await hostToolStatus("all"))
    checks.push({
      ok: s.ok,
      what:
        s.tool.scope === "tests"
          ? `${s.label}, for \`make test\` only`
          : s.tool.scope === "kernel-build"
            ? `${s.label}, for \`kernel: { source: build }\` only`
            : s.label,
      fix: s.fix,
      optional: s.tool.scope !== undefined,
    });
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
  for (const c of checks) {
    const state = c.ok ? "ok     " : c.optional ? "absent " : "MISSING";
    console.log(`${state} ${c.what}${c.ok || !c.fix ? "" : `  ->  ${c.fix}`}`);
  }
  return checks.every((c) => c.ok || c.optional);
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
