/**
 * What kmatrix takes from a kernel build directory, without running its Makefile: the release, the
 * image, the modules the build produced (with modules.order, modules.builtin*), and the files
 * out-of-tree module builds need (the build tree). Shared by `source: local` and `source: build`
 * (which materializes the build directory it made).
 */
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { copyFile, cp, mkdir, readdir, readFile, readlink, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { execa } from "execa";
import { type Arch, LOCAL_KERNEL_IMAGE, LOCAL_KERNEL_RELEASE_FILE } from "../../config/types.js";
import { UsageError } from "../../util/errors.js";
import type { MaterializedKernel } from "../source.js";

/** The kernel's `SRCARCH` (the directory under arch/). */
const SRCARCH: Record<Arch, string> = { x86_64: "x86", aarch64: "arm64" };

export interface BuildDir {
  dir: string;
  release: string;
  /** Path of the image, relative to dir. */
  image: string;
  /** The modules the build produced, relative to dir (`drivers/block/virtio_blk.ko`), in modules.order's order. */
  modules: string[];
}

/** Reads a build directory's release, image and module list (a UsageError names what is missing). */
export async function readBuildDir(dir: string, arch: Arch, field: string): Promise<BuildDir> {
  const releaseFile = join(dir, LOCAL_KERNEL_RELEASE_FILE);
  if (!existsSync(releaseFile)) throw new UsageError(`${field}: ${dir}: no ${LOCAL_KERNEL_RELEASE_FILE}`);
  const release = (await readFile(releaseFile, "utf8")).trim();
  if (!/^[A-Za-z0-9][A-Za-z0-9._+~-]*$/.test(release))
    throw new UsageError(`${field}: ${dir}: ${LOCAL_KERNEL_RELEASE_FILE} holds no release ("${release}")`);
  const image = LOCAL_KERNEL_IMAGE[arch];
  if (!existsSync(join(dir, image)))
    throw new UsageError(`${field}: ${dir}: no ${image}, the kernel image for ${arch}`);
  return { dir, release, image, modules: await listModules(dir) };
}

/**
 * modules.order names every module the build made (`.o` since Linux 6.3, `.ko` before); without it
 * (an old or odd tree), the `.ko` files found below the directory.
 */
async function listModules(dir: string): Promise<string[]> {
  const order = await readFile(join(dir, "modules.order"), "utf8").catch(() => undefined);
  if (order !== undefined)
    return order
      .split("\n")
      .map((l) => l.trim().replace(/^kernel\//, ""))
      .filter(Boolean)
      .map((l) => l.replace(/\.o$/, ".ko"))
      .filter((l) => existsSync(join(dir, l)));
  const all = await readdir(dir, { recursive: true });
  return all.filter((f) => f.endsWith(".ko") && !f.startsWith(".git/")).sort();
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Digest of a file of the tree, or null when the tree has no such file. */
async function digestOf(dir: string, file: string): Promise<string | null> {
  return existsSync(join(dir, file)) ? sha256File(join(dir, file)) : null;
}

/** The files that make the kernel, by digest: a rebuilt kernel has new ones, an untouched tree the same. */
export async function buildDirDigests(b: BuildDir) {
  const modules: [string, string][] = [];
  for (const m of b.modules) modules.push([m, await sha256File(join(b.dir, m))]);
  return {
    image: await sha256File(join(b.dir, b.image)),
    config: await digestOf(b.dir, ".config"),
    symvers: await digestOf(b.dir, "Module.symvers"),
    builtin: await digestOf(b.dir, "modules.builtin"),
    modules: createHash("sha256").update(JSON.stringify(modules)).digest("hex"),
  };
}

/**
 * `make modules_install` without make: the modules under `<into>/lib/modules/<release>/kernel/` at
 * their paths in the tree, modules.order (as modules_install writes it), modules.builtin*, then
 * depmod. Returns the modules directory.
 */
export async function installModules(b: BuildDir, into: string): Promise<string> {
  const modulesDir = join(into, "lib", "modules", b.release);
  for (const m of b.modules) {
    await mkdir(dirname(join(modulesDir, "kernel", m)), { recursive: true });
    await copyFile(join(b.dir, m), join(modulesDir, "kernel", m));
  }
  await mkdir(modulesDir, { recursive: true });
  await writeFile(join(modulesDir, "modules.order"), b.modules.map((m) => `kernel/${m}\n`).join(""));
  for (const f of ["modules.builtin", "modules.builtin.modinfo"])
    if (existsSync(join(b.dir, f))) await copyFile(join(b.dir, f), join(modulesDir, f));
  await execa("depmod", ["-b", into, b.release]);
  return modulesDir;
}

/** Build products and history the build tree leaves behind (objects, modules, .cmd files, .git). */
const EXCLUDED = /^(.*\.(o|ko|a|mod|mod\.c)|\..*\.cmd|\.git)$/;

/**
 * The files out-of-tree module builds read (what the kernel's own `install-extmod-build` and
 * Debian's headers packages keep): the top Makefile, .config, Module.symvers, include/, scripts/
 * (with its host programs), the architecture's Makefiles and include/, objtool and resolve_btfids;
 * no objects, modules or sources. For a tree built with O=, the source tree's files first, the
 * build directory's over them.
 */
export async function copyBuildTree(dir: string, arch: Arch, into: string): Promise<void> {
  const srcarch = SRCARCH[arch];
  const wanted = [
    "Makefile",
    "Kbuild",
    "Kconfig",
    ".config",
    ".kernelvariables", // (Debian's trees: the compiler the kernel was built with)
    "Module.symvers",
    "include",
    "scripts",
    `arch/${srcarch}/include`,
    // The modules' linker script: scripts/module.lds, or the architecture's in older trees.
    `arch/${srcarch}/module.lds`,
    "tools/objtool/objtool",
    "tools/bpf/resolve_btfids/resolve_btfids",
  ];
  const trees = [dir];
  // An O= build directory links its source tree as `source`.
  const source = await readlink(join(dir, "source")).catch(() => undefined);
  if (source) trees.unshift(resolve(dir, source));
  await mkdir(into, { recursive: true });
  for (const tree of trees) {
    const archMakefiles = (await readdir(join(tree, "arch", srcarch)).catch(() => [] as string[]))
      .filter((f) => f.startsWith("Makefile"))
      .map((f) => `arch/${srcarch}/${f}`);
    const present = [...wanted, ...archMakefiles].filter((p) => existsSync(join(tree, p)));
    // Links are followed: Debian's trees link scripts/ out of the tree; the copy must stand alone.
    for (const p of present) {
      // An O= directory's Makefile only includes the source tree's by its absolute path.
      if (p === "Makefile" && tree !== trees[0] && (await isGeneratedMakefile(join(tree, p)))) continue;
      await cp(join(tree, p), join(into, p), {
        recursive: true,
        dereference: true,
        preserveTimestamps: true,
        filter: (from) => !EXCLUDED.test(basename(from)),
      });
    }
  }
}

async function isGeneratedMakefile(path: string): Promise<boolean> {
  return (await readFile(path, "utf8")).startsWith("# Automatically generated by");
}

/**
 * A build directory as a kernel cache entry (relative paths of `into`): the image as `vmlinuz`,
 * `lib/modules/<release>` (installModules), `boot/` with the config and System.map, and the build
 * tree as `build/`.
 */
export async function materializeBuildDir(
  b: BuildDir,
  arch: Arch,
  into: string,
): Promise<MaterializedKernel> {
  await copyFile(join(b.dir, b.image), join(into, "vmlinuz"));
  const modulesDir = await installModules(b, into);
  await mkdir(join(into, "boot"), { recursive: true });
  for (const [from, to] of [
    [".config", `config-${b.release}`],
    ["System.map", `System.map-${b.release}`],
  ] as const)
    if (existsSync(join(b.dir, from))) await copyFile(join(b.dir, from), join(into, "boot", to));
  await copyBuildTree(b.dir, arch, join(into, "build"));
  return {
    vmlinuz: "vmlinuz",
    modulesDir: modulesDir.slice(into.length + 1),
    bootDir: "boot",
    headersTree: "build",
  };
}
