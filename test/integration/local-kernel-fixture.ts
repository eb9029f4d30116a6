/**
 * A real kernel build directory without compiling a kernel: Debian bookworm's cloud kernel laid out
 * as its build would leave it. The image as arch/x86/boot/bzImage, its modules (decompressed) at
 * their paths in the tree with modules.order and modules.builtin*, System.map, and the rest of the
 * tree from linux-headers-<release> over linux-headers-<abi>-common (x86 only), with linux-kbuild's
 * scripts and tools (host programs) copied in where the packages link to them. The headers package
 * carries .config and Module.symvers as a build tree does, and include/config/kernel.release, but
 * with the upstream version: the fixture writes the release there.
 */
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { execa } from "execa";
import { cacheRoot } from "../../src/images/cache.js";
import { extractKernel } from "../../src/images/debian/extract.js";
import {
  compareDebianVersions,
  DebianArchive,
  type DebPackage,
  parseDepends,
} from "../../src/images/debian-archive.js";
import { defaultMatrix } from "./helpers.js";

export interface LocalKernelFixture {
  dir: string;
  release: string;
  modules: number;
}

/** Builds the fixture into `dir` (which must not exist) from bookworm's amd64 cloud kernel. */
export async function buildLocalKernelFixture(dir: string): Promise<LocalKernelFixture> {
  const archive = new DebianArchive({ ...defaultMatrix.archive, cacheDir: cacheRoot() });
  const kernel = await archive.resolveKernel("bookworm", "cloud", "amd64");
  const work = await mkdtemp(join(dirname(dir), ".fixture-"));
  try {
    const pkgs = await archive.packages("bookworm", "amd64");
    const newest = (name: string): DebPackage => {
      const found = pkgs
        .filter((p) => p.name === name)
        .sort((a, b) => compareDebianVersions(b.version, a.version))[0];
      if (!found) throw new Error(`fixture: no ${name} in bookworm`);
      return found;
    };
    const headers = newest(kernel.headersPackage);
    const deps = parseDepends(headers.depends).flat();
    const common = deps.find((d) => /^linux-headers-.*-common$/.test(d.name))?.name;
    const kbuild = deps.find((d) => d.name.startsWith("linux-kbuild-"))?.name;
    if (!common || !kbuild) throw new Error(`fixture: ${headers.name} depends on no -common or kbuild`);
    const unpacked = join(work, "debs");
    await mkdir(unpacked);
    for (const p of [headers, newest(common), newest(kbuild)])
      await execa("dpkg-deb", ["-x", await archive.download(p), unpacked]);
    const extracted = await extractKernel(archive, kernel, join(work, "kernel"));

    await mkdir(dir, { recursive: true });
    // The tree: -common (top Makefile, include/, arch/x86), then the flavour's files over it
    // (generated headers, .config, Module.symvers), except its Makefile, which only includes -common's.
    const commonDir = join(unpacked, "usr/src", common);
    const flavourDir = join(unpacked, "usr/src", headers.name);
    await tarCopy(commonDir, ["Makefile", "include", "arch/x86", "scripts", "tools"], dir);
    const flavourFiles = (await readdir(flavourDir)).filter((f) => f !== "Makefile");
    await tarCopy(flavourDir, flavourFiles, dir);

    // The image and what the build leaves next to it.
    await mkdir(join(dir, "arch/x86/boot"), { recursive: true });
    await copyFile(extracted.vmlinuz, join(dir, "arch/x86/boot/bzImage"));
    const systemMap = join(extracted.root, "boot", `System.map-${kernel.release}`);
    if (existsSync(systemMap)) await copyFile(systemMap, join(dir, "System.map"));

    // Modules at their paths in the tree (a build has them uncompressed), in modules.order's order.
    const order = (await readFile(join(extracted.modulesDir, "modules.order"), "utf8"))
      .split("\n")
      .filter(Boolean);
    const inTree: string[] = [];
    for (const entry of order) {
      const rel = entry.replace(/^kernel\//, "");
      const packaged = ["", ".xz", ".zst", ".gz"]
        .map((ext) => join(extracted.modulesDir, `kernel/${rel}${ext}`))
        .find((f) => existsSync(f));
      if (!packaged) continue;
      const out = join(dir, rel);
      await mkdir(dirname(out), { recursive: true });
      if (packaged.endsWith(".ko")) await copyFile(packaged, out);
      else {
        const tool = packaged.endsWith(".xz") ? "xz" : packaged.endsWith(".zst") ? "zstd" : "gzip";
        await execa(tool, ["-dc", packaged], { stdout: { file: out } });
      }
      inTree.push(rel);
    }
    await writeFile(join(dir, "modules.order"), inTree.map((m) => `${m}\n`).join(""));
    for (const f of ["modules.builtin", "modules.builtin.modinfo"])
      if (existsSync(join(extracted.modulesDir, f)))
        await copyFile(join(extracted.modulesDir, f), join(dir, f));

    // Debian's headers carry include/config/kernel.release, but with the upstream version (6.1.192):
    // Debian's build overrides KERNELRELEASE (.kernelvariables). A build writes what `uname -r` says,
    // as include/generated/utsrelease.h has it.
    const uts = await readFile(join(dir, "include/generated/utsrelease.h"), "utf8");
    if (!uts.includes(`"${kernel.release}"`))
      throw new Error(`fixture: utsrelease.h is not ${kernel.release}`);
    await writeFile(join(dir, "include/config/kernel.release"), `${kernel.release}\n`);
    return { dir, release: kernel.release, modules: inTree.length };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** `paths` of `from` (those that exist) into `to`, links followed (the packages link to linux-kbuild). */
async function tarCopy(from: string, paths: string[], to: string): Promise<void> {
  const present = paths.filter((p) => existsSync(join(from, p)));
  const pack = execa("tar", ["-C", from, "-chf", "-", "--", ...present], { buffer: false });
  const unpack = execa("tar", ["-C", to, "-xf", "-"]);
  pack.stdout?.pipe(unpack.stdin as NodeJS.WritableStream);
  await Promise.all([pack, unpack]);
}
