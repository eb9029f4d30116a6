import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import lockfile from "proper-lockfile";
import { cacheRoot } from "../util/cache-dir.js";
import { unmountBelow } from "../util/mounts.js";

// (Defined in util/ because plan sources live in the cache too; images/ is their door.)
export { cacheRoot, contentKey } from "../util/cache-dir.js";

export const MANIFEST = "manifest.json";

/**
 * The cache's folders of entries (buildOnce directories, or small files written under a temporary
 * name and renamed), relative to the cache root: where temporary entries can be left behind.
 */
export const ENTRY_FOLDERS = [
  "kernels",
  "boot",
  "rootfs",
  "kernel-builds",
  "kernel-configs",
  "kernel-trees",
  "oci",
  "oci/resolved",
  "oci/kernel-facts",
  "toolchains",
] as const;

/**
 * Returns the manifest of the cache entry at `dir`, building it first if it is missing.
 * The builder writes into a fresh temporary directory that is renamed into place only when it is
 * complete, so a crash never leaves a half-built entry; a lock makes a second kmatrix process wait
 * for the first instead of building the same thing twice.
 */
export async function buildOnce<M extends object>(
  dir: string,
  build: (tmpDir: string) => Promise<M>,
): Promise<{ manifest: M; built: boolean }> {
  const existing = await readManifest<M>(dir);
  if (existing) return { manifest: existing, built: false };
  await mkdir(dirname(dir), { recursive: true });
  const release = await lockfile.lock(dir, {
    realpath: false,
    lockfilePath: `${dir}.lock`,
    // Builds take minutes; keep the lock fresh and wait as long as the other builder needs.
    stale: 60_000,
    update: 10_000,
    retries: { retries: 24 * 60, minTimeout: 1000, maxTimeout: 5000 },
  });
  try {
    const raced = await readManifest<M>(dir);
    if (raced) return { manifest: raced, built: false };
    const tmp = `${dir}.tmp-${process.pid}`;
    await removeOrThrow(tmp);
    await mkdir(tmp, { recursive: true });
    try {
      const manifest = await build(tmp);
      await writeFile(join(tmp, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
      await removeOrThrow(dir);
      await rename(tmp, dir);
      return { manifest, built: true };
    } catch (err) {
      // What the failed build left mounted (mmdebstrap's proc, sys…) is unmounted first; what
      // will not unmount stays, named, for `kmatrix clean`.
      const left = await removeEntry(tmp).catch((e: Error) => e.message);
      if (left) process.stderr.write(`kmatrix: left ${tmp}: ${left}\n`);
      throw err;
    }
  } finally {
    await release();
  }
}

export async function readManifest<M>(dir: string): Promise<M | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, MANIFEST), "utf8")) as M;
  } catch {
    return undefined;
  }
}

/**
 * Deletes a cache entry (or a temporary one) without ever deleting across a mount point: whatever
 * is mounted at or below it is unmounted first (util/mounts.ts). Returns why the entry was left
 * (one line), or undefined once it is gone.
 */
export async function removeEntry(path: string): Promise<string | undefined> {
  const mounted = await unmountBelow(path);
  if (mounted) return mounted;
  await rm(path, { recursive: true, force: true });
  return undefined;
}

async function removeOrThrow(path: string): Promise<void> {
  const left = await removeEntry(path);
  if (left) throw new Error(`${path}: cannot remove it: ${left}`);
}

/**
 * The kmatrix process a temporary entry belongs to: `<entry>.tmp-<pid>` (buildOnce and renamed
 * files) or `unpack-<pid>-<digest>` (oci/kernel.ts unpacking an image to learn its kernel).
 */
export function tempOwner(name: string): number | undefined {
  const m = /\.tmp-(\d+)$/.exec(name) ?? /^unpack-(\d+)-[0-9a-f]{16}$/.exec(name);
  return m?.[1] ? Number(m[1]) : undefined;
}

/** A temporary entry whose process is gone (a reused pid keeps it: better late than under a build). */
export function isStaleTemp(name: string): boolean {
  const pid = tempOwner(name);
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
}

export interface StaleTempReport {
  removed: string[];
  /** Entries left in place, with why (something below them would not unmount). */
  left: { path: string; reason: string }[];
}

/** Removes the temporary entries that killed kmatrix processes left in the cache (`kmatrix clean`). */
export async function removeStaleTemps(root = cacheRoot()): Promise<StaleTempReport> {
  const report: StaleTempReport = { removed: [], left: [] };
  for (const folder of ENTRY_FOLDERS)
    for (const name of await readdir(join(root, folder)).catch(() => [] as string[])) {
      if (!isStaleTemp(name)) continue;
      const path = join(root, folder, name);
      const reason = await removeEntry(path);
      if (reason) report.left.push({ path, reason });
      else report.removed.push(path);
    }
  return report;
}
