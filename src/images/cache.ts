import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import lockfile from "proper-lockfile";

// (Defined in util/ because plan sources live in the cache too; images/ is their door.)
export { cacheRoot, contentKey } from "../util/cache-dir.js";

export const MANIFEST = "manifest.json";

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
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    try {
      const manifest = await build(tmp);
      await writeFile(join(tmp, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
      await rm(dir, { recursive: true, force: true });
      await rename(tmp, dir);
      return { manifest, built: true };
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
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
