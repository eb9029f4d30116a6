import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import type { ArchiveSettings, Machine } from "../config/types.js";
import { ensureKeyPair } from "../guest/keys.js";
import { buildKernelSource } from "./build/index.js";
import { type DebianBase, resolveDebianBase } from "./busybox.js";
import { buildOnce, cacheRoot, contentKey, readManifest } from "./cache.js";
import { debianKernelSource } from "./debian/index.js";
import { debianRootDiskSource } from "./debian/root-disk.js";
import { ArchiveFileGone, DebianArchive, type DebPackage, debArchOf } from "./debian-archive.js";
import { BARE_INIT, STAGE2_INIT } from "./guest-init.js";
import { BOOT_MODULES, buildBareInitrd, buildInitrd } from "./initrd.js";
import { localKernelSource } from "./local/index.js";
import { ociKernelSource } from "./oci/kernel.js";
import { ociRootDiskSource } from "./oci/root-disk.js";
import { packPvhModule } from "./pvh-shim/index.js";
import type { BuiltRootDisk, RootDiskContext, RootDiskPlan, RootDiskSource } from "./root-disk.js";
import type { KernelRecipe, KernelSource, MaterializedKernel, SourceContext } from "./source.js";

export {
  CROSS_BIN,
  type CrossToolchain,
  type NoCrossToolchain,
  planCrossToolchain,
  prepareCrossToolchain,
} from "./cross/toolchain.js";
export type { KernelRecipe, KernelSource, MaterializedKernel } from "./source.js";

/** Bump when a builder changes in a way its recipe does not show. */
const RECIPE_VERSION = 1;

/** The kernel source of each `kernel.source` of the matrix. */
const KERNEL_SOURCES: Record<Machine["kernel"]["source"], KernelSource> = {
  debian: debianKernelSource,
  local: localKernelSource,
  oci: ociKernelSource,
  build: buildKernelSource,
};

/** The root disk source of each `rootfs.source` of the matrix. */
const ROOT_DISK_SOURCES: Record<Machine["rootfs"]["source"], RootDiskSource> = {
  debian: debianRootDiskSource,
  oci: ociRootDiskSource,
};

/** Everything a VM backend needs to boot a machine. */
export interface MachineImage {
  machineId: string;
  kernelRelease: string;
  kernelVersion: string;
  vmlinuz: string;
  initrd: string;
  /** Busybox-only initrd that powers off once init runs (accelerator probe, benchmarks). */
  bareInitrd: string;
  /** Raw ext4 base image; every run boots a copy-on-write overlay of it. */
  disk: string;
  /** x86_64: the QEMU machine the kernel needs when not the default (microvm for Falco's kernels). */
  x86Machine?: MaterializedKernel["x86Machine"];
  /** The kernel is made for Firecracker's virtio-mmio devices (Falco's layout): see vm/qemu-args.ts. */
  virtioMmio?: boolean;
  /** Kernel arguments the root disk needs at every boot (before the matrix's vm.kernelArgs). */
  kernelArgs?: string[];
  manifests: { kernel: KernelManifest; boot: BootManifest; rootfs: RootfsManifest };
}

interface ManifestBase {
  key: string;
  recipe: unknown;
  builtAt: string;
  buildSeconds: number;
}
/** The kernel entry; its paths are relative to the entry (bootDir absent in entries made before 0.x: tree/boot). */
export interface KernelManifest extends ManifestBase, MaterializedKernel {
  kind: "kernel";
  /** Where the kernel came from, as its source resolved it (a Debian kernel's packages, a build dir). */
  resolved: KernelRecipe["resolved"];
}
export interface BootManifest extends ManifestBase {
  kind: "boot";
  modules: string[];
  files: Record<string, FileFacts>;
}
export interface RootfsManifest extends ManifestBase, Omit<BuiltRootDisk, "bytesUsed"> {
  kind: "rootfs";
  bytesUsed: number;
  files: Record<string, FileFacts>;
}
export interface FileFacts {
  bytes: number;
  sha256: string;
}

export interface PrepareOptions {
  archive: ArchiveSettings;
  /** Re-resolve "the newest kernel" from the archive even if a recent resolution is cached. */
  refresh?: boolean;
  log?: (line: string) => void;
}

/** Where a machine's image parts live in the cache and the recipes that key them; cheap to compute. */
export interface ImagePlan {
  machine: Machine;
  archive: DebianArchive;
  source: KernelSource;
  context: SourceContext;
  /** The kernel as its source resolved it. */
  resolved: KernelRecipe;
  /** The root disk's suite: its busybox (for the initrd) and archive suites. */
  base: DebianBase;
  kernel: { dir: string; key: string; recipe: object };
  boot: { dir: string; key: string; recipe: object; busybox: DebPackage; publicKey: string };
  rootfs: {
    dir: string;
    key: string;
    recipe: object;
    source: RootDiskSource;
    plan: RootDiskPlan;
    context: RootDiskContext;
  };
}

/** Resolves a machine to its cache entries without building anything (no rebuild is ever implied). */
export async function planImage(machine: Machine, opts: PrepareOptions): Promise<ImagePlan> {
  const root = cacheRoot();
  const log = opts.log ?? (() => {});
  const archive = new DebianArchive({
    ...opts.archive,
    cacheDir: root,
    refresh: opts.refresh,
    log: opts.log,
  });
  const debArch = debArchOf(machine.arch);
  const source = KERNEL_SOURCES[machine.kernel.source];
  const context: SourceContext = { machine, debArch, archive, log, refresh: opts.refresh };
  const resolved = await source.resolve(context);

  const kernelKey = contentKey(resolved.recipe);
  const keys = await ensureKeyPair(root);
  // Whatever the kernel, the initrd's static busybox is the root disk's suite's.
  const disks = ROOT_DISK_SOURCES[machine.rootfs.source];
  const base = await resolveDebianBase(archive, opts.archive, root, disks.busyboxSuite(machine), debArch, {
    refresh: opts.refresh,
    log,
  });
  const busybox = base.busybox;
  const diskContext: RootDiskContext = {
    machine,
    debArch,
    archive: opts.archive,
    kernel: resolved,
    kernelKey,
    base,
    refresh: opts.refresh,
    log,
  };
  const disk = await disks.plan(diskContext);

  const bootRecipe = {
    v: RECIPE_VERSION,
    kernelKey,
    busybox: busybox.sha256,
    modules: BOOT_MODULES,
    init: contentKey([disk.stage1, STAGE2_INIT, BARE_INIT]),
    key: keys.publicKey,
  };
  const bootKey = contentKey(bootRecipe);
  const fsKey = contentKey(disk.recipe);
  return {
    machine,
    archive,
    source,
    context,
    resolved,
    base,
    kernel: {
      dir: join(root, "kernels", `${resolved.release}-${kernelKey}`),
      key: kernelKey,
      recipe: resolved.recipe,
    },
    boot: {
      dir: join(root, "boot", `${resolved.release}-${bootKey}`),
      key: bootKey,
      recipe: bootRecipe,
      busybox,
      publicKey: keys.publicKey,
    },
    rootfs: {
      dir: join(root, "rootfs", `${disk.name}-${fsKey}`),
      key: fsKey,
      recipe: disk.recipe,
      source: disks,
      plan: disk,
      context: diskContext,
    },
  };
}

/**
 * Resolves a machine to its kernel, initrd and root disk, building whatever the cache lacks.
 * Each part is keyed by the digest of its recipe, so a changed recipe rebuilds and an unchanged one
 * is found again without any work.
 */
export async function prepareImage(machine: Machine, opts: PrepareOptions): Promise<MachineImage> {
  try {
    return await prepareResolved(machine, opts);
  } catch (err) {
    // A cached resolution can name a file the archive has since dropped: resolve afresh, once.
    if (opts.refresh || !(err instanceof ArchiveFileGone)) throw err;
    opts.log?.(`${machine.id}: ${(err as Error).message}; resolving the kernel again`);
    return prepareResolved(machine, { ...opts, refresh: true });
  }
}

async function prepareResolved(machine: Machine, opts: PrepareOptions): Promise<MachineImage> {
  const log = opts.log ?? (() => {});
  const plan = await planImage(machine, opts);
  const { archive, resolved } = plan;

  const kernel = await timed(plan.kernel, log, `${machine.id}: kernel ${resolved.release}`, async (tmp) => ({
    kind: "kernel" as const,
    resolved: resolved.resolved,
    ...(await plan.source.materialize(resolved, tmp, plan.context)),
  }));
  const inKernel = (p: string) => join(plan.kernel.dir, p);
  const files = {
    vmlinuz: inKernel(kernel.vmlinuz),
    modulesDir: inKernel(kernel.modulesDir),
    // (Debian kernel entries from before kernel sources name no bootDir: theirs is tree/boot.)
    bootDir: inKernel(kernel.bootDir ?? "tree/boot"),
    ...(kernel.headersTree !== undefined && { headersTree: inKernel(kernel.headersTree) }),
  };

  const boot = await timed(plan.boot, log, `${machine.id}: initrd`, async (tmp) => {
    const bbTree = join(tmp, "busybox");
    await execa("dpkg-deb", ["-x", await archive.download(plan.boot.busybox), bbTree]);
    // Newer suites ship it in /usr/bin (merged /usr).
    const busybox = existsSync(join(bbTree, "bin/busybox"))
      ? join(bbTree, "bin/busybox")
      : join(bbTree, "usr/bin/busybox");
    const initrd = join(tmp, "initrd.img");
    const modules = await buildInitrd(
      {
        arch: machine.arch,
        modulesDir: files.modulesDir,
        busybox,
        authorizedKey: plan.boot.publicKey,
        stage1: plan.rootfs.plan.stage1,
      },
      tmp,
      initrd,
    );
    await buildBareInitrd(busybox, tmp, join(tmp, "bare.img"));
    if (kernel.pvhShim)
      for (const [from, to] of Object.entries(PVH_MODULES))
        await packPvhModule(files.vmlinuz, join(tmp, from), join(tmp, to));
    await rm(bbTree, { recursive: true, force: true });
    await rm(join(tmp, "initrd-root"), { recursive: true, force: true });
    return { kind: "boot" as const, modules, files: { "initrd.img": await fileFacts(initrd) } };
  });

  const rootfs = await timed(plan.rootfs, log, `${machine.id}: root disk`, async (tmp) => {
    const disk = join(tmp, "disk.ext4");
    const built = await plan.rootfs.source.build(plan.rootfs.plan, files, tmp, disk, plan.rootfs.context);
    return { kind: "rootfs" as const, ...built, files: { "disk.ext4": await fileFacts(disk) } };
  });

  // A kernel booted through the PVH shim: QEMU boots the shim, the kernel rides in its module.
  const inBoot = (initrd: keyof typeof PVH_MODULES) =>
    join(plan.boot.dir, kernel.pvhShim ? PVH_MODULES[initrd] : initrd);
  return {
    machineId: machine.id,
    kernelRelease: resolved.release,
    kernelVersion: resolved.version,
    vmlinuz: kernel.pvhShim ? inKernel(kernel.pvhShim) : files.vmlinuz,
    initrd: inBoot("initrd.img"),
    bareInitrd: inBoot("bare.img"),
    disk: join(plan.rootfs.dir, "disk.ext4"),
    ...(kernel.x86Machine && { x86Machine: kernel.x86Machine }),
    ...(kernel.layout === "falco" && { virtioMmio: true }),
    ...(rootfs.kernelArgs && { kernelArgs: rootfs.kernelArgs }),
    manifests: { kernel, boot, rootfs },
  };
}

/** The boot entry's initrds packed with the vmlinux, for a kernel booted through the PVH shim. */
const PVH_MODULES = { "initrd.img": "pvh-initrd.img", "bare.img": "pvh-bare.img" } as const;

/** buildOnce plus the facts every manifest carries (key, recipe, when, how long). */
async function timed<M extends object>(
  { dir, key, recipe }: { dir: string; key: string; recipe: unknown },
  log: (line: string) => void,
  what: string,
  build: (tmp: string) => Promise<M>,
): Promise<M & ManifestBase> {
  const { manifest } = await buildOnce(dir, async (tmp) => {
    log(`building ${what}`);
    const started = Date.now();
    const body = await build(tmp);
    const buildSeconds = (Date.now() - started) / 1000;
    log(`built ${what} in ${buildSeconds.toFixed(1)} s`);
    return { ...body, key, recipe, builtAt: new Date().toISOString(), buildSeconds };
  });
  return manifest;
}

async function fileFacts(path: string): Promise<FileFacts> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return { bytes: (await stat(path)).size, sha256: hash.digest("hex") };
}

/** Any cached kernel of `arch` with its bare initrd, for probing the accelerator without a build. */
export async function findCachedProbeKernel(
  arch: Machine["arch"],
): Promise<{ kernel: string; bareInitrd: string } | undefined> {
  const root = cacheRoot();
  for (const name of await readdir(join(root, "boot")).catch(() => [] as string[])) {
    const boot = await readManifest<BootManifest>(join(root, "boot", name));
    const kernelKey = (boot?.recipe as { kernelKey?: string } | undefined)?.kernelKey;
    if (!kernelKey) continue;
    for (const k of await readdir(join(root, "kernels")).catch(() => [] as string[])) {
      if (!k.endsWith(`-${kernelKey}`)) continue;
      const kernel = await readManifest<KernelManifest>(join(root, "kernels", k));
      // (A kernel booted through the PVH shim needs its packed module: not worth finding here.)
      if (kernel?.resolved.debArch === debArchOf(arch) && !kernel.pvhShim)
        return {
          kernel: join(root, "kernels", k, kernel.vmlinuz),
          bareInitrd: join(root, "boot", name, "bare.img"),
        };
    }
  }
  return undefined;
}
