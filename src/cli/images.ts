import { lstat, readdir } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Machine, Matrix } from "../config/types.js";
import { cacheRoot, isStaleTemp, readManifest, removeEntry, tempOwner } from "../images/cache.js";
import { planImage, prepareImage } from "../images/index.js";
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
      // Another kmatrix's build in progress.
      if (tempOwner(name) !== undefined && !isStaleTemp(name)) continue;
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
    const m = e.manifest as { builtAt?: string; buildSeconds?: number; layout?: string } | undefined;
    const facts = m ? `built ${m.builtAt} in ${m.buildSeconds?.toFixed(0)} s` : "incomplete";
    // OCI entries say which kind of image they came from (kernel: falco, lvh; disk: systemd, container).
    const layout = m?.layout ? `, ${m.layout} layout` : "";
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

/** Removes entries the selected machines do not use (resolving them needs no build) and broken leftovers. */
export async function pruneImages(
  matrix: Matrix,
  machines: Machine[],
  flags: { dryRun?: boolean },
): Promise<void> {
  const keep = new Set<string>();
  // OCI pulls are named by their digest's first 16 hex digits (images/oci/registry.ts).
  const digests = new Set<string>();
  for (const machine of machines) {
    const plan = await planImage(machine, { archive: matrix.archive, log: progress });
    for (const part of [plan.kernel, plan.boot, plan.rootfs]) keep.add(part.dir);
    for (const recipe of [plan.kernel.recipe, plan.rootfs.recipe]) {
      const digest = (recipe as { source?: string; digest?: string }).digest;
      if (digest?.startsWith("sha256:")) digests.add(digest.slice(7, 23));
    }
  }
  let freed = 0;
  for (const e of await entries()) {
    if (keep.has(e.dir) && e.manifest) continue;
    freed += await removeReported(e.dir, flags.dryRun);
  }
  const oci = join(cacheRoot(), "oci");
  for (const name of await readdir(oci).catch(() => [] as string[])) {
    // resolved/ and kernel-facts/ are small and keep cached digests resolvable offline.
    const m = /-([0-9a-f]{16})$/.exec(name);
    if (!m?.[1] || digests.has(m[1])) continue;
    if (tempOwner(name) !== undefined && !isStaleTemp(name)) continue;
    freed += await removeReported(join(oci, name), flags.dryRun);
  }
  console.log(`${flags.dryRun ? "would free" : "freed"} ${(freed / 1024 ** 2).toFixed(0)} MiB`);
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
