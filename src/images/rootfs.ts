import { existsSync } from "node:fs";
import { lstat, mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import type { ArchiveSettings } from "../config/types.js";
import type { DebArch } from "./debian-archive.js";

/**
 * What every machine needs to build and run drivers with its own toolchain: compilers, the
 * matching kernel headers, clang/llvm and libbpf for eBPF, kmod to load modules, sshd for us.
 */
export const BASE_PACKAGES = [
  "openssh-server",
  "iproute2",
  "kmod",
  "make",
  "gcc",
  "libc6-dev",
  "libelf-dev",
  "clang",
  "llvm",
  "libbpf-dev",
  "bpftool",
];

/** Room for driver builds on top of what the image holds; the file is sparse, so it costs nothing. */
const FREE_SPACE_BYTES = 4 * 1024 ** 3;

export interface RootfsRecipe {
  suite: string;
  /** apt preferences for the root disk; see aptPreferences(). */
  preferences: string;
  debArch: DebArch;
  /** The kernel whose headers and modules the disk carries. */
  kernelRelease: string;
  /** Archive suites apt may use (the suite, its -updates and -security). */
  suites: string[];
  packages: string[];
}

/**
 * The suite's own pool first; -updates/-security only for the kernel's build packages (headers,
 * kbuild, compiler), whose exact versions live nowhere else. Security pools drop superseded files
 * quickly and mirrors lag behind their indexes (bullseye-security lists bpftool builds it no longer
 * serves), while the release pool is stable.
 */
function aptPreferences(suite: string, suites: string[], fromOtherSuites: Map<string, string[]>): string {
  const kernelBuild = "linux-headers-* linux-kbuild-* linux-compiler-*";
  return [
    `Package: *\nPin: release n=${suite}\nPin-Priority: 990\n`,
    ...suites
      .filter((s) => s !== suite)
      .map((s) => `Package: ${kernelBuild}\nPin: release n=${s}\nPin-Priority: 995\n`),
    ...[...fromOtherSuites].map(
      ([s, names]) => `Package: ${names.join(" ")}\nPin: release n=${s}\nPin-Priority: 995\n`,
    ),
  ].join("\n");
}

/** The kernel as the root disk sees it. */
export interface RootfsKernel {
  release: string;
  debArch: DebArch;
  /** Suites apt may use: a Debian kernel's (its build packages live there), else the disk's suite's. */
  suites: string[];
  /** The Debian package with the kernel's headers; absent when the kernel brings a build tree. */
  headersPackage?: string;
}

/** `extra` may name a package of another suite as `name/suite` (e.g. `bpftool/bookworm-backports`). */
export function rootfsRecipe(kernel: RootfsKernel, suite: string, extra: string[]): RootfsRecipe {
  const fromOtherSuites = new Map<string, string[]>();
  const names = extra.map((p) => {
    const [name = p, from] = p.split("/");
    if (from) fromOtherSuites.set(from, [...(fromOtherSuites.get(from) ?? []), name]);
    return name;
  });
  return {
    suite,
    preferences: aptPreferences(suite, kernel.suites, fromOtherSuites),
    debArch: kernel.debArch,
    kernelRelease: kernel.release,
    suites: [...new Set([...kernel.suites, ...fromOtherSuites.keys()])],
    packages: [
      ...new Set([...BASE_PACKAGES, ...(kernel.headersPackage ? [kernel.headersPackage] : []), ...names]),
    ],
  };
}

/** The kernel's files the root disk takes (absolute paths in the kernel's cache entry). */
export interface KernelFiles {
  /** lib/modules/<release> (named so), copied to the disk's /lib/modules/<release>. */
  modulesDir: string;
  /** Copied into the disk's /boot (config, System.map), when it exists. */
  bootDir?: string;
  /** A kernel build tree, copied to the disk's /lib/modules/<release>/build (instead of a package). */
  headersTree?: string;
}

/**
 * Builds an ext4 root disk without mounting anything: mmdebstrap fills a directory, the kernel's
 * modules (and build tree, if it brings one) are added, and mke2fs -d turns the directory into a
 * filesystem image.
 */
export async function buildRootfs(
  recipe: RootfsRecipe,
  kernel: KernelFiles,
  archive: ArchiveSettings,
  workDir: string,
  outImage: string,
  log: (line: string) => void,
): Promise<{ bytesUsed: number; bytesImage: number }> {
  const tree = join(workDir, "rootfs");
  await rm(tree, { recursive: true, force: true });
  const prefsFile = join(workDir, "apt-preferences");
  await writeFile(prefsFile, recipe.preferences);
  await mmdebstrap(
    {
      variant: "minbase",
      debArch: recipe.debArch,
      packages: recipe.packages,
      suite: recipe.suite,
      suites: recipe.suites,
      preferencesFile: prefsFile,
    },
    archive,
    tree,
    log,
  );

  await addKernelFiles(tree, recipe.kernelRelease, kernel);
  const sizes = await writeExt4(tree, outImage);
  await rm(tree, { recursive: true, force: true });
  return sizes;
}

/** What mmdebstrap installs, and from where. */
export interface DebootstrapSpec {
  variant: "minbase" | "essential";
  debArch: DebArch;
  packages: string[];
  suite: string;
  /** The archive suites apt may use (`-security` ones from the security mirror). */
  suites: string[];
  /** An apt preferences file copied into the tree first. */
  preferencesFile?: string;
}

/**
 * Fills `tree` with a Debian system by mmdebstrap (foreign architectures run their maintainer
 * scripts through qemu-user via binfmt_misc), its output passed to `log` line by line.
 */
export async function mmdebstrap(
  spec: DebootstrapSpec,
  archive: ArchiveSettings,
  tree: string,
  log: (line: string) => void,
): Promise<void> {
  const sources = spec.suites.map((s) =>
    s.endsWith("-security") ? `deb ${archive.securityMirror} ${s} main` : `deb ${archive.mirror} ${s} main`,
  );
  const mm = execa(
    "mmdebstrap",
    [
      `--variant=${spec.variant}`,
      `--arch=${spec.debArch}`,
      `--include=${spec.packages.join(",")}`,
      // Snapshot mirrors serve Release files past their Valid-Until (sid's expire within days);
      // signatures are still checked, and what got installed is recorded by the manifest.
      '--aptopt=Acquire::Check-Valid-Until "false";',
      // apt checks the same signatures as the archive client: a custom mirror's keyring too.
      ...(archive.keyring ? [`--keyring=${archive.keyring}`] : []),
      // mmdebstrap's "upload" hook copies a file in without any shell.
      ...(spec.preferencesFile
        ? [`--setup-hook=upload ${spec.preferencesFile} /etc/apt/preferences.d/kmatrix`]
        : []),
      // Docs and man pages are a third of the tree and nobody reads them in a test VM.
      "--dpkgopt=path-exclude=/usr/share/{doc,man,info,locale}/*",
      "--dpkgopt=path-include=/usr/share/locale/locale.alias",
      spec.suite,
      tree,
      ...sources,
    ],
    { all: true },
  );
  mm.all?.on("data", (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n")) if (line.trim()) log(line);
  });
  await mm;
}

/**
 * The booted kernel's files in a root disk tree: modules (for modprobe inside the guest), /boot
 * (config, System.map) and the build tree when the kernel brings one; then `depmod`.
 */
export async function addKernelFiles(tree: string, release: string, kernel: KernelFiles): Promise<void> {
  const libIsLink = !!(await lstat(join(tree, "lib")).catch(() => undefined))?.isSymbolicLink();
  const modulesDest = join(tree, libIsLink ? "usr/lib/modules" : "lib/modules");
  await mkdir(modulesDest, { recursive: true });
  // (Merged into what a headers package made there, the `build` link; the directory is named <release>.)
  await execa("cp", ["-a", kernel.modulesDir, modulesDest]);
  if (kernel.bootDir && existsSync(kernel.bootDir)) {
    await mkdir(join(tree, "boot"), { recursive: true });
    await execa("cp", ["-a", join(kernel.bootDir, "."), join(tree, "boot")]);
  }
  if (kernel.headersTree) {
    const build = join(modulesDest, release, "build");
    await rm(build, { recursive: true, force: true });
    await execa("cp", ["-a", kernel.headersTree, build]);
  }
  await execa("depmod", ["-b", tree, release]);
}

/** A sparse ext4 image of `tree` with room for driver builds, written by mke2fs -d (no mounting). */
export async function writeExt4(
  tree: string,
  outImage: string,
): Promise<{ bytesUsed: number; bytesImage: number }> {
  const { stdout } = await execa("du", ["-sb", tree]);
  const bytesUsed = Number.parseInt(stdout, 10);
  const bytesImage = Math.ceil((bytesUsed * 1.2 + FREE_SPACE_BYTES) / 1024 ** 2) * 1024 ** 2;
  await execa("mke2fs", [
    "-q",
    "-t",
    "ext4",
    "-L",
    "kmatrix-root",
    "-d",
    tree,
    "-F",
    outImage,
    `${bytesImage / 1024}k`,
  ]);
  return { bytesUsed, bytesImage };
}
