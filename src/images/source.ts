/**
 * Where a machine's kernel comes from, behind one interface chosen by the matrix's `kernel.source`:
 * `debian/` (the archive's packages) and `local/` (a kernel build directory on this host). The
 * generic code (index.ts) keys, caches and assembles the parts; a source only says which kernel it
 * means and how to put its files into a cache entry.
 */
import type { Machine } from "../config/types.js";
import type { DebArch, DebianArchive } from "./debian-archive.js";

/** What a source works with: the machine, and the archive client every root disk uses anyway. */
export interface SourceContext {
  machine: Machine;
  debArch: DebArch;
  archive: DebianArchive;
  log: (line: string) => void;
  /** Ask again what a moving name means (a suite's newest kernel, an image tag) even if cached. */
  refresh?: boolean;
}

/** How the root disk gets the headers out-of-tree drivers build against. */
export type KernelHeaders =
  /** A Debian package of the root disk's archive (it makes /lib/modules/<release>/build). */
  | { package: string }
  /** The build tree materialize() puts in the cache entry, copied to /lib/modules/<release>/build. */
  | { tree: true }
  /** None: the root disk brings its own, or has none (an OCI kernel). */
  | { none: true };

/** A kernel resolved to exactly one set of files; cheap once cached, and never builds anything. */
export interface KernelRecipe {
  /** Digested into the kernel entry's key: everything that makes this kernel what it is. */
  recipe: object;
  /** `uname -r` of the kernel. */
  release: string;
  /** The version reports show (a Debian package version, or the release for a local build). */
  version: string;
  /** How the root disk gets this kernel's headers. */
  headers: KernelHeaders;
  /** Archive suites the root disk's apt takes the kernel's build packages from; absent: the disk's own. */
  suites?: string[];
  /** What the kernel manifest records about where the kernel came from (has `debArch`). */
  resolved: { debArch: DebArch } & object;
}

/** The kernel's files in its cache entry, as paths relative to the entry's directory. */
export interface MaterializedKernel {
  /** The image QEMU boots with -kernel. */
  vmlinuz: string;
  /** lib/modules/<release>: the modules (any layout below), modules.order, modules.builtin. */
  modulesDir: string;
  /** Files for the root disk's /boot (config, System.map), when the source has them. */
  bootDir?: string;
  /** The build tree for `headers: { tree }`, copied to the disk's /lib/modules/<release>/build. */
  headersTree?: string;
  /** What kind of image the kernel came from, when the source tells kinds apart (OCI: falco, lvh). */
  layout?: string;
  /** x86_64: the QEMU machine it needs, when not q35 (a kernel made for virtio-mmio). */
  x86Machine?: "microvm";
  /**
   * x86_64: a vmlinux without a PVH entry boots through this shim (images/pvh-shim), with the
   * vmlinux (`vmlinuz`) and the initrd packed as its module.
   */
  pvhShim?: string;
}

/** One kind of kernel source (`kernel.source` in the matrix). */
export interface KernelSource {
  /** Resolves the machine's kernel to a recipe (its key) and its release, building nothing. */
  resolve(ctx: SourceContext): Promise<KernelRecipe>;
  /** Puts the kernel image, its modules directory and (if any) its headers tree under `into`. */
  materialize(recipe: KernelRecipe, into: string, ctx: SourceContext): Promise<MaterializedKernel>;
}
