import { link, lstat, mkdir, readdir, readFile, readlink, symlink, writeFile } from "node:fs/promises";
import { join, posix } from "node:path";
import { execa } from "execa";
import type { Arch, ArchiveSettings, Machine } from "../../config/types.js";
import { buildOnce, cacheRoot, contentKey } from "../cache.js";
import { type DebArch, debArchOf } from "../debian-archive.js";
import { mmdebstrap } from "../rootfs.js";
import { installedInDisk, installedPackages, upstreamVersion } from "./dpkg-status.js";

/**
 * A compile step of a machine of the other architecture (aarch64 on an x86_64 host) runs in a
 * sandbox of the machine's own root disk, where every program runs under qemu-user: Kbuild of the
 * example kmod took 23–131 s there against 37–56 s in the TCG VM. The compiler is nearly all of
 * that time, so the sandbox gets the same compilers built to run on the host: Debian's cross
 * toolchain of the machine's suite (`gcc-12-aarch64-linux-gnu` is built from the same gcc-12
 * source as the machine's `gcc-12`, and only used when the upstream versions are equal). Everything
 * else (make, sh, the headers' fixdep and modpost, clang) stays the machine's own.
 *
 * The toolchain is a host-architecture Debian tree (mmdebstrap), mounted read-only at
 * {@link CROSS_MOUNT} inside the sandbox. Its programs are patched (patchelf) to find their loader
 * and libraries under that mount, so nothing of the machine's disk is replaced or shadowed, and
 * {@link CROSS_BIN}, first on the sandbox's PATH, holds hard links named as the machine names its
 * tools (`gcc`, `gcc-12`, `aarch64-linux-gnu-gcc-12`, `ld`, `objcopy`…). Hard links in a directory
 * as deep as `usr/bin`: gcc finds cc1 and as relative to the path it was started by.
 */
export const CROSS_MOUNT = "/opt/kmatrix/cross";
export const CROSS_BIN = `${CROSS_MOUNT}/usr/kmatrix-bin`;

export interface CrossToolchain {
  /** The host directory mounted at CROSS_MOUNT. */
  dir: string;
  /** One line for the progress display and the machine's summary. */
  describe: string;
  /**
   * A command that compiles a line of C with the toolchain inside the sandbox: if it fails, the
   * toolchain is broken (a harness error), and a compile step failing with it must not be blamed
   * on the driver.
   */
  check: string;
}

/** Why a machine's compile steps cannot have the host's cross compilers. */
export interface NoCrossToolchain {
  unusable: string;
}

interface ToolchainManifest {
  kind: "cross-toolchain";
  key: string;
  recipe: ToolchainRecipe;
  /** Installed package → version in the toolchain. */
  installed: Record<string, string>;
  builtAt: string;
  buildSeconds: number;
}

interface ToolchainRecipe {
  v: 2;
  suite: string;
  hostDebArch: DebArch;
  targetTriplet: string;
  packages: string[];
  mirror: string;
}

/** A machine compiler package and its cross twin. */
export interface CompilerPair {
  machine: string;
  machineVersion: string;
  cross: string;
}

export function gnuTriplet(arch: Arch): string {
  return arch === "x86_64" ? "x86_64-linux-gnu" : "aarch64-linux-gnu";
}

/**
 * The cross packages that stand for the machine's compilers: each installed `gcc-N`/`g++-N`, the
 * default `gcc`/`g++` (same suite, same gcc-defaults), and the binutils of its triplet.
 */
export function crossPackages(
  installed: Map<string, string>,
  targetArch: Arch,
): { packages: string[]; pairs: CompilerPair[] } {
  const triplet = gnuTriplet(targetArch);
  // Debian's package names spell the triplet with dashes (gcc-12-x86-64-linux-gnu).
  const suffix = triplet.replaceAll("_", "-");
  const pairs: CompilerPair[] = [];
  for (const [name, version] of [...installed].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (/^(gcc|g\+\+)(-\d+)?$/.test(name) || name === `binutils-${suffix}`)
      pairs.push({
        machine: name,
        machineVersion: version,
        cross: name.startsWith("binutils-") ? name : `${name}-${suffix}`,
      });
  }
  const packages = [...pairs.map((p) => p.cross), `libc6-dev-${debArchOf(targetArch)}-cross`];
  return { packages: [...new Set(packages)].sort(), pairs };
}

/** The first compiler whose cross twin is of another upstream version, as one line. */
export function versionMismatch(
  pairs: CompilerPair[],
  crossInstalled: Map<string, string>,
): string | undefined {
  for (const p of pairs) {
    const cross = crossInstalled.get(p.cross);
    if (!cross) return `${p.cross} is not in the suite`;
    if (upstreamVersion(cross) !== upstreamVersion(p.machineVersion))
      return `the machine's ${p.machine} is ${p.machineVersion}, the host's ${p.cross} ${cross}`;
  }
  return undefined;
}

interface ToolchainPlan {
  dir: string;
  key: string;
  recipe: ToolchainRecipe;
  pairs: CompilerPair[];
}

/**
 * Where the cross toolchain of a machine of the other architecture with a Debian root disk (built
 * as `disk`) lives in the cache, and what it holds; or why it has none. Nothing is built.
 */
export async function planCrossToolchain(
  machine: Machine,
  disk: string,
  opts: { archive: ArchiveSettings; hostArch: Arch },
): Promise<ToolchainPlan | NoCrossToolchain> {
  if (machine.rootfs.source !== "debian")
    return { unusable: "its root disk is not Debian's (no cross toolchain of its distribution)" };
  if (machine.arch === opts.hostArch) return { unusable: "it is of the host's architecture" };
  const { packages, pairs } = crossPackages(await installedInDisk(disk), machine.arch);
  if (!pairs.some((p) => p.machine.startsWith("gcc"))) return { unusable: "its root disk has no gcc" };
  const recipe: ToolchainRecipe = {
    v: 2, // 2: the cross libc's linker scripts relocated too
    suite: machine.rootfs.suite,
    hostDebArch: debArchOf(opts.hostArch),
    targetTriplet: gnuTriplet(machine.arch),
    packages,
    mirror: opts.archive.mirror,
  };
  const key = contentKey(recipe);
  const dir = join(
    cacheRoot(),
    "toolchains",
    `${recipe.suite}-${recipe.hostDebArch}-to-${debArchOf(machine.arch)}-${key}`,
  );
  return { dir, key, recipe, pairs };
}

/**
 * The host's cross compilers for a machine of the other architecture with a Debian root disk,
 * built once per suite and package set into the cache (`toolchains/`), or why there are none.
 */
export async function prepareCrossToolchain(
  machine: Machine,
  disk: string,
  opts: { archive: ArchiveSettings; hostArch: Arch; log: (line: string) => void },
): Promise<CrossToolchain | NoCrossToolchain> {
  const plan = await planCrossToolchain(machine, disk, opts);
  if ("unusable" in plan) return plan;
  const { dir, key, recipe, pairs } = plan;
  const { packages } = recipe;
  const { manifest } = await buildOnce<ToolchainManifest>(dir, async (tmp) => {
    const started = Date.now();
    opts.log(`cross toolchain: ${packages.join(" ")} (${recipe.suite}, ${recipe.hostDebArch})`);
    const tree = join(tmp, "tree");
    await mmdebstrap(
      {
        variant: "essential",
        debArch: recipe.hostDebArch,
        packages,
        suite: recipe.suite,
        suites: [recipe.suite],
      },
      opts.archive,
      tree,
      opts.log,
    );
    await relocate(tree, recipe.targetTriplet, gnuTriplet(opts.hostArch));
    const installed = installedPackages(await readFile(join(tree, "var/lib/dpkg/status"), "utf8"));
    return {
      kind: "cross-toolchain",
      key,
      recipe,
      installed: Object.fromEntries(installed),
      builtAt: new Date().toISOString(),
      buildSeconds: Math.round((Date.now() - started) / 100) / 10,
    };
  });
  const crossInstalled = new Map(Object.entries(manifest.installed));
  const mismatch = versionMismatch(pairs, crossInstalled);
  if (mismatch) return { unusable: `no cross compiler of the same version (${mismatch})` };
  const gcc = pairs.filter((p) => /^gcc-\d+$/.test(p.machine));
  const [first] = gcc;
  return {
    dir: join(dir, "tree"),
    // Compiled, linked against the machine's libc and run (under qemu-user): what builders need.
    check: `echo 'int main(void) { return 0; }' | ${CROSS_BIN}/${recipe.targetTriplet}-${first?.machine ?? "gcc"} -x c -o /tmp/kmatrix-cross-check - && /tmp/kmatrix-cross-check && rm /tmp/kmatrix-cross-check`,
    describe: `compilers run natively: ${gcc.map((p) => `${p.cross} ${crossInstalled.get(p.cross)}`).join(", ")} (the machine's ${gcc.map((p) => `${p.machine} ${p.machineVersion}`).join(", ")})`,
  };
}

/**
 * Makes the tree's cross tools run from CROSS_MOUNT inside a sandbox of the machine's disk: their
 * ELF interpreter and library path point under the mount (DT_RPATH, which unlike RUNPATH also
 * serves the libraries' own dependencies), and CROSS_BIN gets hard links under the machine's names.
 */
async function relocate(tree: string, triplet: string, hostTriplet: string): Promise<void> {
  const usrBin = join(tree, "usr/bin");
  const tools = (await readdir(usrBin)).filter((name) => name.startsWith(`${triplet}-`));
  const programs = tools.map((name) => join(usrBin, name));
  for (const dir of ["usr/lib/gcc-cross", "usr/libexec/gcc-cross", `usr/${triplet}/bin`])
    programs.push(...(await filesUnder(join(tree, dir))));

  let interpreter: string | undefined;
  const libDirs = [`/usr/lib/${hostTriplet}`, `/lib/${hostTriplet}`];
  for (const file of programs) {
    if ((await lstat(file)).isSymbolicLink()) continue;
    const current = await execa("patchelf", ["--print-interpreter", file], { reject: false });
    if (current.exitCode !== 0) continue; // not a dynamically linked program
    interpreter ??= posix.join(CROSS_MOUNT, await resolveInside(tree, current.stdout.trim()));
    await execa("patchelf", [
      "--set-interpreter",
      interpreter,
      "--force-rpath",
      "--set-rpath",
      libDirs.map((d) => posix.join(CROSS_MOUNT, d)).join(":"),
      file,
    ]);
  }
  if (!interpreter) throw new Error(`cross toolchain: no ${triplet} program in ${usrBin}`);

  // The cross libc's linker scripts (libc.so: GROUP ( /usr/<triplet>/lib/libc.so.6 … )) name their
  // libraries by absolute path, which in the sandbox is under the mount: a program would not link.
  const sysrootLib = join(tree, "usr", triplet, "lib");
  for (const name of await readdir(sysrootLib).catch(() => [] as string[])) {
    const file = join(sysrootLib, name);
    if (!name.endsWith(".so") || !(await lstat(file)).isFile()) continue;
    const text = await readFile(file, "latin1");
    if (!text.startsWith("/* GNU ld script")) continue;
    await writeFile(file, text.replaceAll(` /usr/${triplet}/`, ` ${CROSS_MOUNT}/usr/${triplet}/`), "latin1");
  }

  const bin = join(tree, "usr/kmatrix-bin");
  await mkdir(bin, { recursive: true });
  for (const name of tools) {
    const from = join(usrBin, name);
    // Links between the tools (gcc → gcc-12) are relative and kept as they are.
    const linkTo = (await lstat(from)).isSymbolicLink() ? await readlink(from) : undefined;
    for (const as of [name, name.slice(triplet.length + 1)])
      await (linkTo ? symlink(linkTo, join(bin, as)) : link(from, join(bin, as)));
  }
  for (const [name, target] of [
    ["cc", "gcc"],
    ["c++", "g++"],
  ] as const)
    if (await lstat(join(bin, target)).catch(() => undefined)) await symlink(target, join(bin, name));
}

/** `path` (absolute, inside `tree`) with every link resolved inside the tree, never outside it. */
export async function resolveInside(tree: string, path: string): Promise<string> {
  const parts = path.split("/").filter(Boolean);
  let resolved = "/";
  for (let hops = 0; parts.length > 0; ) {
    const part = parts.shift() as string;
    const next = posix.join(resolved, part);
    const st = await lstat(join(tree, next)).catch(() => undefined);
    if (!st?.isSymbolicLink()) {
      resolved = next;
      continue;
    }
    if (++hops > 40) throw new Error(`${path}: too many links in ${tree}`);
    const target = await readlink(join(tree, next));
    parts.unshift(...target.split("/").filter(Boolean));
    resolved = target.startsWith("/") ? "/" : resolved;
  }
  return resolved;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}
