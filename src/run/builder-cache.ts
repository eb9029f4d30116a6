import { cp, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Arch, Machine } from "../config/types.js";
import { buildOnce, cacheRoot, contentKey, readManifest } from "../images/cache.js";
import type { MachineImage } from "../images/index.js";
import type { BuilderSpec } from "../plan/schema.js";
import type { BuilderRecord } from "../results/types.js";
import type { Engine } from "./context.js";

/** Bumped when what a builder's artifacts depend on changes in kmatrix itself. */
const BUILDER_CACHE_VERSION = 1;

/**
 * A builder's artifacts depend on its definition, the plan's variables, the target architecture,
 * the image it runs on (kernel, initrd and root disk keys: its compilers and libraries), the
 * sources' contents and the artifacts of the builders it needs. Same inputs, same key: a second
 * run with the same libs tree reuses the skeleton and scap-open instead of building them again.
 */
export async function builderCacheKey(
  e: Engine,
  b: BuilderSpec,
  arch: Arch,
  machine: Machine,
  image: MachineImage,
  needs: BuilderRecord[],
): Promise<string> {
  const { name, command, packages, cross, needsKernel, environmentExitCodes } = b;
  return contentKey({
    version: BUILDER_CACHE_VERSION,
    builder: { name, command, packages, cross, needsKernel, environmentExitCodes },
    env: e.plan.env,
    arch,
    machine: machine.id,
    image: {
      kernel: image.manifests.kernel.key,
      boot: image.manifests.boot.key,
      rootfs: image.manifests.rootfs.key,
    },
    sources: await e.sourceDigests(),
    needs: Object.fromEntries(needs.map((r) => [r.builder, r.cacheKey ?? "uncached"])),
  });
}

const entryDir = (b: string, arch: Arch, key: string) => join(cacheRoot(), "builders", `${b}-${arch}-${key}`);

/** Restores a cached builder's artifacts into `artifactsDir`; its record, or undefined on a miss. */
export async function restoreBuilder(
  b: string,
  arch: Arch,
  key: string,
  artifactsDir: string,
): Promise<BuilderRecord | undefined> {
  const dir = entryDir(b, arch, key);
  const record = await readManifest<BuilderRecord>(dir);
  if (!record) return undefined;
  await rm(artifactsDir, { recursive: true, force: true });
  await mkdir(artifactsDir, { recursive: true });
  await cp(join(dir, "artifacts"), artifactsDir, { recursive: true, verbatimSymlinks: true });
  return record;
}

/** Keeps a successful builder's artifacts (already made safe by the copy out of the guest). */
export async function storeBuilder(record: BuilderRecord, key: string, artifactsDir: string): Promise<void> {
  await buildOnce(entryDir(record.builder, record.arch, key), async (tmp) => {
    await cp(artifactsDir, join(tmp, "artifacts"), { recursive: true, verbatimSymlinks: true });
    return record;
  });
}
