import { existsSync } from "node:fs";
import { lstat, readdir, realpath } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Machine, Matrix } from "../config/types.js";
import { buildKernelEntries } from "../images/build/index.js";
import {
  cacheRoot,
  ENTRY_FOLDERS,
  isStaleTemp,
  readManifest,
  removeEntry,
  tempOwner,
} from "../images/cache.js";
import { type ImagePlan, planCrossToolchain, planImage, prepareImage } from "../images/index.js";
import { ociKernelEntries } from "../images/oci/kernel.js";
import { ociRootDiskEntries } from "../images/oci/root-disk.js";
import { hostArch } from "../vm/accel.js";
import { progress } from "./log.js";

const KINDS = ["kernels", "boot", "rootfs"] as const;

export async function buildImages(
  matrix: Matrix,
  machines: Machine[],
  opts: { refresh?: boolean },
): Promise<void> {
  for (const machine of machines) {
    const started = Date.now();
    const image = await prepareImage(machine, {
      archive: matrix.archive,
      refresh: opts.refresh,
      log: progress,
    });
    console.log(
      `${machine.id}\t${image.kernelRelease}\t${((Date.now() - started) / 1000).toFixed(1)} s\t${image.disk}`,
    );
  }
}

/**
 * `kmatrix images keys`: the cache entries (`<kind>/<name>`, named by their recipe's digest) the
 * selected machines' images are, without building anything; the same recipes give the same lines,
 * so a digest of them keys a CI cache of the images (the action's actions/cache step). Boot
 * entries depend on this cache's SSH key as well; kernels and root disks only on the archive.
 */
export async function imageKeys(
  matrix: Matrix,
  machines: Machine[],
  flags: { json?: boolean; refresh?: boolean },
): Promise<void> {
  const entries: { machineId: string; kind: (typeof KINDS)[number]; entry: string; dir: string }[] = [];
  for (const machine of machines) {
    const plan = await planImage(machine, { archive: matrix.archive, refresh: flags.refresh, log: progress });
    const parts = { kernels: plan.kernel, boot: plan.boot, rootfs: plan.rootfs };
    for (const kind of KINDS)
      entries.push({
        machineId: machine.id,
        kind,
        entry: `${kind}/${basename(parts[kind].dir)}`,
        dir: parts[kind].dir,
      });
  }
  if (flags.json) console.log(JSON.stringify({ cacheRoot: cacheRoot(), entries }, null, 2));
  else for (const e of entries) console.log(`${e.entry}\t${e.machineId}`);
}

interface CacheEntry {
  kind: (typeof KINDS)[number];
  dir: string;
  manifest: Record<string, unknown> | undefined;
}

async function entries(): Promise<CacheEntry[]> {
  const out: CacheEntry[] = [];
  for (const kind of KINDS) {
    const base = join(cacheRoot(), kind);
    for (const name of await readdir(base).catch(() => [] as string[])) {
      if (name.endsWith(".lock")) continue;
      const dir = join(base, name);
      out.push({ kind, dir, manifest: await readManifest<Record<string, unknown>>(dir) });
    }
  }
  return out;
}

export async function listImages(flags: { json?: boolean }): Promise<void> {
  const all = await entries();
  if (flags.json) {
    console.log(JSON.stringify(all, null, 2));
    return;
  }
  for (const e of all) {
    const m = e.manifest as
      | { builtAt?: string; buildSeconds?: number; layout?: string; pvhShim?: string }
      | undefined;
    const facts = m ? `built ${m.builtAt} in ${m.buildSeconds?.toFixed(0)} s` : "incomplete";
    // OCI entries say which kind of image they came from (kernel: falco, lvh; disk: systemd, container),
    // and a kernel without a PVH note that it boots through kmatrix's shim.
    const layout = m?.layout ? `, ${m.layout} layout${m.pvhShim ? ", booted through the PVH shim" : ""}` : "";
    console.log(`${e.kind.padEnd(8)} ${e.dir.split("/").pop()?.padEnd(48)} ${facts}${layout}`);
  }
  for (const name of await readdir(join(cacheRoot(), "oci")).catch(() => [] as string[])) {
    const m = await readManifest<{ image?: string; digest?: string; pullSeconds?: number }>(
      join(cacheRoot(), "oci", name),
    );
    if (m?.digest)
      console.log(
        `${"oci".padEnd(8)} ${name.padEnd(48)} ${m.image} pulled in ${m.pullSeconds?.toFixed(0)} s`,
      );
  }
  if (all.length === 0) console.log(`no images in ${cacheRoot()}`);
}

/**
 * `kmatrix images prune`: removes the cache entries no machine of the matrix uses (planning them
 * names them all), broken ones (no manifest) and temporaries of processes that are gone. The
 * machines' entries are those `entriesOf` lists, in every folder of entries (cache.ts).
 */
export async function pruneImages(
  matrix: Matrix,
  machines: Machine[],
  flags: { dryRun?: boolean },
): Promise<void> {
  const used: string[] = [];
  const host = hostArch();
  for (const machine of machines) {
    const plan = await planImage(machine, { archive: matrix.archive, log: progress });
    used.push(...entriesOf(plan));
    // The cross toolchain of a machine of the other architecture follows from its built disk.
    const disk = join(plan.rootfs.dir, "disk.ext4");
    if (host && machine.arch !== host && existsSync(disk)) {
      const cross = await planCrossToolchain(machine, disk, { archive: matrix.archive, hostArch: host });
      if ("dir" in cross) used.push(cross.dir);
    }
  }
  await pruneCache(cacheRoot(), used, flags);
}

/**
 * Every cache entry (or a path inside one) a machine's image comes from: its kernel, boot and
 * root disk entries, and what its sources keep besides (an OCI image's resolution, kernel facts
 * and pulled layout; a built kernel's config, build directory and unpacked tree; the build
 * directory a local kernel may be).
 */
export function entriesOf(
  plan: Pick<ImagePlan, "machine" | "resolved" | "kernel" | "boot" | "rootfs">,
): string[] {
  const { machine } = plan;
  const used = [plan.kernel.dir, plan.boot.dir, plan.rootfs.dir];
  if (machine.kernel.source === "local") used.push(machine.kernel.path);
  if (machine.kernel.source === "oci") used.push(...ociKernelEntries(plan.resolved, machine.arch));
  if (machine.kernel.source === "build") used.push(...buildKernelEntries(plan.resolved));
  used.push(...ociRootDiskEntries(plan.rootfs.plan, machine));
  return used;
}

/**
 * Removes from the cache at `root` every entry that is not `used` (or holding a used path), every
 * directory entry without a manifest, and every temporary one whose process is gone; says each
 * (`removing <path> (<n> MiB)`) and the total.
 */
export async function pruneCache(root: string, used: string[], flags: { dryRun?: boolean }): Promise<void> {
  const real = (p: string) => realpath(p).catch(() => p);
  const inUse = await Promise.all(used.map(real));
  const isUsed = (entry: string) => inUse.some((p) => p === entry || p.startsWith(`${entry}/`));
  let freed = 0;
  for (const folder of ENTRY_FOLDERS) {
    const base = await real(join(root, folder));
    for (const name of (await readdir(base).catch(() => [] as string[])).sort()) {
      const path = join(base, name);
      // Another kmatrix's build in progress, or what a killed one left.
      if (tempOwner(name) !== undefined) {
        if (isStaleTemp(name)) freed += await removeReported(path, flags.dryRun);
        continue;
      }
      const kind = entryKind(folder, name);
      if (!kind || (isUsed(path) && (kind === "file" || (await readManifest(path))))) continue;
      freed += await removeReported(path, flags.dryRun);
    }
  }
  console.log(`${flags.dryRun ? "would free" : "freed"} ${(freed / 1024 ** 2).toFixed(0)} MiB`);
}

/**
 * What a name in an entry folder is: an entry directory (built by buildOnce, with a manifest), an
 * entry file (oci/resolved/, oci/kernel-facts/: written whole and renamed), or something prune
 * leaves alone (locks; in oci/, the folders of files and anything not named like a pulled layout).
 */
function entryKind(folder: (typeof ENTRY_FOLDERS)[number], name: string): "dir" | "file" | undefined {
  if (name.endsWith(".lock")) return undefined;
  if (folder === "oci/resolved" || folder === "oci/kernel-facts")
    return name.endsWith(".json") ? "file" : undefined;
  if (folder === "oci") return /-[0-9a-f]{16}$/.test(name) ? "dir" : undefined;
  return "dir";
}

/** Removes an entry (never across a mount point: cache.ts), saying so; returns the bytes it freed. */
async function removeReported(path: string, dryRun: boolean | undefined): Promise<number> {
  const bytes = await du(path);
  console.log(`${dryRun ? "would remove" : "removing"} ${path} (${(bytes / 1024 ** 2).toFixed(0)} MiB)`);
  if (dryRun) return bytes;
  const left = await removeEntry(path);
  if (!left) return bytes;
  console.log(`left ${path}: ${left}`);
  return 0;
}

/** Bytes of the files below `dir` on its own filesystem (a stale entry can still have proc mounted). */
async function du(dir: string): Promise<number> {
  const top = await lstat(dir).catch(() => undefined);
  if (!top) return 0;
  if (!top.isDirectory()) return top.blocks * 512;
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    for (const name of await readdir(d).catch(() => [] as string[])) {
      const s = await lstat(join(d, name)).catch(() => undefined);
      if (!s || s.dev !== top.dev) continue;
      if (s.isDirectory()) await walk(join(d, name));
      else if (s.isFile()) total += s.blocks * 512;
    }
  };
  await walk(dir);
  return total;
}
