/**
 * `rootfs: { source: debian, suite }`: a disk built by mmdebstrap from the archive (rootfs.ts),
 * booted with kmatrix's two-stage init. Its recipes are those from before root-disk sources
 * existed, so warm caches stayed warm.
 */
import type { Machine } from "../../config/types.js";
import { STAGE1_INIT } from "../guest-init.js";
import type { RootDiskSource } from "../root-disk.js";
import { buildRootfs, type RootfsRecipe, rootfsRecipe } from "../rootfs.js";

/** Bump when a builder changes in a way its recipe does not show (index.ts's RECIPE_VERSION before). */
const RECIPE_VERSION = 1;

type DebianDiskRecipe = RootfsRecipe & { v: number; kernelKey: string };

function suiteOf(machine: Machine): string {
  if (machine.rootfs.source !== "debian") throw new Error(`${machine.id}: not a Debian root disk`);
  return machine.rootfs.suite;
}

export const debianRootDiskSource: RootDiskSource = {
  busyboxSuite: suiteOf,

  async plan({ machine, debArch, kernel, kernelKey, base }) {
    const suite = suiteOf(machine);
    const recipe: DebianDiskRecipe = {
      v: RECIPE_VERSION,
      kernelKey,
      ...rootfsRecipe(
        {
          release: kernel.release,
          debArch,
          suites: kernel.suites ?? base.suites,
          ...("package" in kernel.headers && { headersPackage: kernel.headers.package }),
        },
        suite,
        machine.packages,
      ),
    };
    return { recipe, name: `${suite}-${debArch}`, stage1: STAGE1_INIT };
  },

  async build(plan, kernel, tmp, disk, { archive, log }) {
    const { bytesUsed } = await buildRootfs(plan.recipe as DebianDiskRecipe, kernel, archive, tmp, disk, log);
    return { bytesUsed };
  },
};
