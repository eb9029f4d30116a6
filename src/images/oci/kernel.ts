/**
 * `kernel: { source: oci, image }`: a kernel from an OCI image, in Falco's layout (`/boot/vmlinux`:
 * an uncompressed ELF on x86_64, on aarch64 an ELF, a raw Image or a gzip'd one; + a busybox
 * `/boot/initrd` that holds the few modules needed to reach the disk) or little-vm-helper's
 * (`/data/kernels/<ver>/boot/vmlinuz-<release>` + its modules).
 * Keyed by the image's manifest digest for the machine's architecture. Either way the machine
 * boots with kmatrix's own initrd (its stage 1 knows kmatrix's disks and key): a Falco kernel's
 * modules are taken out of its initrd, whose own init (DHCP, Firecracker's devices) is not used.
 */
import { copyFile, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import type { Arch } from "../../config/types.js";
import { cacheRoot } from "../cache.js";
import { buildPvhShim, PVH_SHIM, pvhShimKey, pvhShimRefusal } from "../pvh-shim/index.js";
import type { KernelRecipe, KernelSource, MaterializedKernel, SourceContext } from "../source.js";
import { arm64Image, EM_X86_64, kernelRelease, pvhEntry, readElf } from "./elf.js";
import { modulesOfInitrd } from "./initrd-modules.js";
import { detectKernelLayout, type KernelLayout } from "./layout.js";
import { parseImageRef } from "./reference.js";
import {
  type PullOptions,
  pulledLayoutDir,
  pullImage,
  type ResolvedImage,
  resolutionFile,
  resolveImage,
  unpackImage,
} from "./registry.js";

/** Bump when materialize() changes in a way the recipe does not show. */
const RECIPE_VERSION = 1;

interface OciKernelResolved {
  source: "oci";
  debArch: "amd64" | "arm64";
  image: string;
  digest: string;
  layout: KernelLayout["layout"];
}

/** What an image's kernel is, remembered per digest so that a cached kernel resolves offline. */
interface KernelFacts {
  layout: KernelLayout["layout"];
  release: string;
  /** An x86_64 Falco kernel: booted through its PVH note, or through kmatrix's shim (images/pvh-shim). */
  x86Entry?: "pvh" | "shim";
}

function ociKernel(ctx: SourceContext): { image: string; opts: PullOptions } {
  const k = ctx.machine.kernel;
  if (k.source !== "oci") throw new Error(`${ctx.machine.id}: not an OCI kernel`);
  return { image: k.image, opts: { tlsVerify: k.tlsVerify, refresh: ctx.refresh, log: ctx.log } };
}

export const ociKernelSource: KernelSource = {
  async resolve(ctx) {
    const { image, opts } = ociKernel(ctx);
    const img = await resolveImage(image, ctx.machine.arch, opts);
    const facts = await kernelFacts(img, opts);
    const resolved: OciKernelResolved = {
      source: "oci",
      debArch: ctx.debArch,
      image,
      digest: img.digest,
      layout: facts.layout,
    };
    return {
      recipe: {
        v: RECIPE_VERSION,
        source: "oci",
        digest: img.digest,
        arch: ctx.machine.arch,
        // Only kernels booted through the shim carry its key: the others' keys stay as they were.
        ...(facts.x86Entry === "shim" && { pvhShim: await pvhShimKey() }),
      },
      release: facts.release,
      version: facts.release,
      // Neither layout has headers: a root disk that builds drivers brings its own (Falco's do).
      headers: { none: true },
      resolved,
    };
  },

  async materialize(recipe, into, ctx) {
    const { opts } = ociKernel(ctx);
    const r = recipe.resolved as OciKernelResolved;
    const img: ResolvedImage = { ...(await resolveImage(r.image, ctx.machine.arch, opts)), digest: r.digest };
    const tree = join(into, "image");
    await unpackImage((await pullImage(img, opts)).layout, tree);
    const layout = detectKernelLayout(await listTree(tree), r.image);
    const modulesDir = `lib/modules/${recipe.release}`;
    await mkdir(join(into, modulesDir), { recursive: true });
    let out: MaterializedKernel;
    if (layout.layout === "falco") {
      const vmlinux = await readFile(join(tree, layout.vmlinux));
      const kernel = bootableVmlinux(vmlinux, ctx.machine.arch, r.image);
      await writeFile(join(into, kernel.name), kernel.bytes);
      if (kernel.shim) await buildPvhShim(into);
      if (layout.initrd) {
        const dir = join(into, modulesDir, "kernel");
        await mkdir(dir, { recursive: true });
        for (const [name, bytes] of await modulesOfInitrd(await readFile(join(tree, layout.initrd))))
          await writeFile(join(dir, name), bytes);
      }
      out = {
        vmlinuz: kernel.name,
        modulesDir,
        layout: "falco",
        ...(kernel.shim && { pvhShim: PVH_SHIM }),
        // Falco's kernels are made for Firecracker's virtio-mmio devices, which microvm has too.
        ...(ctx.machine.arch === "x86_64" && { x86Machine: "microvm" as const }),
      };
    } else {
      await copyFile(join(tree, layout.vmlinuz), join(into, "vmlinuz"));
      await execa("cp", ["-a", join(tree, layout.modules, "."), join(into, modulesDir)]);
      await mkdir(join(into, "boot"), { recursive: true });
      for (const f of await readdir(join(tree, layout.boot)))
        if (/^(config|System\.map)-/.test(f))
          await copyFile(join(tree, layout.boot, f), join(into, "boot", f));
      out = { vmlinuz: "vmlinuz", modulesDir, bootDir: "boot", layout: "lvh" };
    }
    await rm(tree, { recursive: true, force: true });
    return out;
  },
};

/**
 * The kernel file QEMU boots: on x86_64 the ELF itself, through its PVH entry, or through
 * kmatrix's shim when it has none (`shim`: images/pvh-shim); on arm64 an `Image`: made from an ELF
 * (elf.ts says why QEMU cannot boot an arm64 ELF as Linux), or the file itself when it is a raw
 * Image (Firecracker boots those, so Falco's aarch64 images hold one), or a gzip-compressed Image
 * decompressed. Anything else: one line naming the image and what it holds.
 */
export function bootableVmlinux(
  vmlinux: Buffer,
  arch: "x86_64" | "aarch64",
  image: string,
): { name: string; bytes: Buffer; shim?: boolean } {
  if (arch === "x86_64") {
    let elf: ReturnType<typeof readElf>;
    try {
      elf = readElf(vmlinux);
    } catch (err) {
      throw new Error(`${image}: /boot/vmlinux: ${(err as Error).message}`);
    }
    if (elf.machine !== EM_X86_64) throw new Error(`${image}: /boot/vmlinux is not an x86_64 kernel`);
    if (pvhEntry(vmlinux) !== undefined) return { name: "vmlinux", bytes: vmlinux };
    // No PVH note (before 5.0, or no CONFIG_PVH): Linux's 64-bit boot protocol, as Firecracker.
    const refusal = pvhShimRefusal(vmlinux);
    if (refusal)
      throw new Error(
        `${image}: /boot/vmlinux has no PVH entry note and cannot be booted through its 64-bit entry: ${refusal}`,
      );
    return { name: "vmlinux", bytes: vmlinux, shim: true };
  }
  try {
    return { name: "Image", bytes: arm64Image(vmlinux).bytes };
  } catch (err) {
    throw new Error(
      `${image}: /boot/vmlinux: ${(err as Error).message}; on aarch64 kmatrix boots an ELF vmlinux, a raw arm64 Image or a gzip-compressed Image`,
    );
  }
}

/** Where an image's kernel facts are remembered, per digest (`oci/kernel-facts/`). */
function kernelFactsFile(digest: string): string {
  return join(cacheRoot(), "oci", "kernel-facts", `${digest.slice(7)}.json`);
}

/**
 * The cache entries an OCI kernel comes from besides its kernel entry: the tag's resolution, the
 * kernel facts (both let it resolve offline) and the pulled layout (`images prune` keeps them).
 */
export function ociKernelEntries(recipe: KernelRecipe, arch: Arch): string[] {
  const r = recipe.resolved as OciKernelResolved;
  return [
    resolutionFile(r.image, arch),
    kernelFactsFile(r.digest),
    pulledLayoutDir(parseImageRef(r.image), r.digest),
  ];
}

async function kernelFacts(img: ResolvedImage, opts: PullOptions): Promise<KernelFacts> {
  const file = kernelFactsFile(img.digest);
  const known = await readFile(file, "utf8")
    .then((t) => JSON.parse(t) as KernelFacts)
    .catch(() => undefined);
  // Facts written before x86Entry existed lack it for x86_64 Falco kernels: read the image again.
  if (known && !(known.layout === "falco" && img.arch === "x86_64" && !known.x86Entry)) return known;
  const { layout } = await pullImage(img, opts);
  const tree = join(cacheRoot(), "oci", `unpack-${process.pid}-${img.digest.slice(7, 23)}`);
  await rm(tree, { recursive: true, force: true });
  try {
    await unpackImage(layout, tree);
    const found = detectKernelLayout(await listTree(tree), img.image);
    let release: string | undefined;
    let x86Entry: KernelFacts["x86Entry"];
    if (found.layout === "lvh") release = found.release;
    else {
      // Checked here already, at resolution: a kernel QEMU cannot boot is refused before any build.
      const kernel = bootableVmlinux(await readFile(join(tree, found.vmlinux)), img.arch, img.image);
      // An arm64 kernel's banner is in its Image (compressed in a gzip'd one).
      release = kernelRelease(kernel.bytes);
      if (!release) throw new Error(`${img.image}: /boot/vmlinux has no "Linux version" banner`);
      if (img.arch === "x86_64") x86Entry = kernel.shim ? "shim" : "pvh";
    }
    if (!/^[\w.+~-]+$/.test(release)) throw new Error(`${img.image}: unusable kernel release "${release}"`);
    const facts: KernelFacts = { layout: found.layout, release, ...(x86Entry && { x86Entry }) };
    await mkdir(join(file, ".."), { recursive: true });
    await writeFile(`${file}.tmp-${process.pid}`, JSON.stringify(facts));
    await rename(`${file}.tmp-${process.pid}`, file);
    return facts;
  } finally {
    await rm(tree, { recursive: true, force: true });
  }
}

async function listTree(tree: string): Promise<string[]> {
  return (await readdir(tree, { recursive: true })).map((p) => p.split("\\").join("/"));
}
