import { createHash } from "node:crypto";
import { readdir, readFile, readlink, stat } from "node:fs/promises";
import { join } from "node:path";
import type { LocalSource } from "./sources.js";

/**
 * The digest of what a source puts into every machine: each copied file's path, executable bit and
 * content (a link's target). A git revision is not enough: a work tree can have local changes, and
 * a plain directory has none. Hashing a libs tree (~4k files) takes about a second, once per run.
 */
export async function digestSource(src: LocalSource): Promise<string> {
  const files = src.files ?? (await walk(src.dir));
  const hash = createHash("sha256");
  for (const rel of [...files].sort()) {
    const path = join(src.dir, rel);
    const st = await stat(path).catch(() => undefined);
    if (!st) {
      const target = await readlink(path).catch(() => undefined);
      hash.update(`${rel}\0link\0${target ?? "missing"}\0`);
      continue;
    }
    if (st.isDirectory()) continue;
    hash.update(`${rel}\0${st.mode & 0o111 ? "x" : "-"}\0${st.size}\0`);
    hash.update(await readFile(path));
  }
  return hash.digest("hex");
}

/** Every file under `dir`, git metadata excluded (as the copy into machines does). */
async function walk(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((d) => !d.isDirectory())
    .map((d) => join(d.parentPath, d.name).slice(dir.length + 1))
    .filter((rel) => !rel.split("/").includes(".git"));
}
