/**
 * Where a machine's root disk comes from, behind one interface chosen by the matrix's
 * `rootfs.source`, as kernels are behind `KernelSource`: `debian/root-disk.ts` (mmdebstrap) and
 * `oci/root-disk.ts` (an image from a registry). The generic code (index.ts) keys and caches the
 * disk; a source says what makes its disk (the recipe), how the initrd hands over to it, and builds it.
 */
import type { ArchiveSettings, Machine } from "../config/types.js";
import type { DebianBase } from "./busybox.js";
import type { DebArch } from "./debian-archive.js";
import type { KernelFiles } from "./rootfs.js";
import type { KernelRecipe } from "./source.js";

export interface RootDiskContext {
  machine: Machine;
  debArch: DebArch;
  archive: ArchiveSettings;
  /** The kernel the disk carries (its modules, headers); its entry's key is in every disk's recipe. */
  kernel: KernelRecipe;
  kernelKey: string;
  /** The Debian suite of `busyboxSuite`, resolved (its busybox and archive suites). */
  base: DebianBase;
  refresh?: boolean;
  log: (line: string) => void;
}

export interface RootDiskPlan {
  /** Digested into the entry's key (the kernel's key included). */
  recipe: object;
  /** The entry's name before its key: `<suite>-<debArch>` for Debian. */
  name: string;
  /** The initrd's stage 1 for this disk (guest-init.ts): how it hands over to the disk's init. */
  stage1: string;
}

export interface BuiltRootDisk {
  bytesUsed: number;
  /** What kind of image the disk was made from, when the source tells kinds apart (OCI). */
  layout?: string;
  /** The image it was made from, as the matrix named it (OCI). */
  image?: string;
  /** Kernel arguments this disk needs at every boot. */
  kernelArgs?: string[];
}

/** One kind of root disk source (`rootfs.source` in the matrix). */
export interface RootDiskSource {
  /** The Debian suite whose static busybox goes into the machine's initrd. */
  busyboxSuite(machine: Machine): string;
  /** The disk's recipe and entry name, building nothing. */
  plan(ctx: RootDiskContext): Promise<RootDiskPlan>;
  /** Writes the raw ext4 image `disk` (work files under `tmp`, which is the entry's directory). */
  build(
    plan: RootDiskPlan,
    kernel: KernelFiles,
    tmp: string,
    disk: string,
    ctx: RootDiskContext,
  ): Promise<BuiltRootDisk>;
}
