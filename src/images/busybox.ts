/**
 * The initrd's static busybox, from Debian's archive for the machine's architecture whatever the
 * kernel's source: the root disk's suite's `busybox-static` (its release pool first, as the root
 * disk's apt does). Resolved with the suites the archive has for it (suite, -updates, -security),
 * and cached for a day like kernel resolutions, so a cached machine needs no index.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { z } from "zod";
import type { ArchiveSettings } from "../config/types.js";
import { contentKey } from "./cache.js";
import {
  compareDebianVersions,
  type DebArch,
  type DebianArchive,
  type DebPackage,
  debPackageSchema,
} from "./debian-archive.js";

export interface DebianBase {
  suite: string;
  debArch: DebArch;
  /** The suite and whichever of its -updates/-security the archive has. */
  suites: string[];
  busybox: DebPackage;
  resolvedAt: string;
}

const MAX_AGE_MS = 86_400_000;

const baseSchema = z.object({
  suite: z.string(),
  debArch: z.enum(["amd64", "arm64"]),
  suites: z.array(z.string()),
  busybox: debPackageSchema,
  resolvedAt: z.iso.datetime(),
});

/** The pick of resolveFromIndex (debian-archive.ts): highest version, the suite's own pool first. */
export function pickBusybox(pkgs: DebPackage[], suite: string): DebPackage | undefined {
  const all = pkgs
    .filter((p) => p.name === "busybox-static")
    .sort((a, b) => compareDebianVersions(b.version, a.version));
  return all.find((p) => p.suite === suite) ?? all[0];
}

export async function resolveDebianBase(
  archive: DebianArchive,
  settings: ArchiveSettings,
  cacheDir: string,
  suite: string,
  debArch: DebArch,
  opts: { refresh?: boolean; log?: (line: string) => void } = {},
): Promise<DebianBase> {
  const file = join(cacheDir, "archive", "resolved", `base_${suite}_${debArch}_${contentKey(settings)}.json`);
  const cached = await readFile(file, "utf8")
    .then((t) => baseSchema.parse(JSON.parse(t)))
    .catch(() => undefined);
  if (cached && !opts.refresh && Date.now() - Date.parse(cached.resolvedAt) < MAX_AGE_MS) return cached;
  let pkgs: DebPackage[];
  try {
    pkgs = await archive.packages(suite, debArch);
  } catch (e) {
    if (!cached) throw e;
    opts.log?.(`warning: ${(e as Error).message}; using the busybox resolved at ${cached.resolvedAt}`);
    return cached;
  }
  const busybox = pickBusybox(pkgs, suite);
  const suites = [...new Set(pkgs.map((p) => p.suite))];
  if (!busybox) throw new Error(`debian ${suite} ${debArch}: no busybox-static in ${suites.join(", ")}`);
  const base = { suite, debArch, suites, busybox, resolvedAt: new Date().toISOString() };
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(base, null, 1)}\n`);
  await rename(tmp, file);
  return base;
}
