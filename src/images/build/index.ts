/**
 * `kernel: { source: build, tree, config, fragments }`: a kernel tree kmatrix configures and builds.
 *
 * - resolve: the tree (tree.ts) and its digest, the toolchain, then the configuration, done once per
 *   (tree, base, fragments, required items, compiler) into `kernel-configs/` (kconfig only, seconds);
 *   the recipe is (tree digest, final .config, compiler, pahole, arch), so a warm cache resolves
 *   without building and an unchanged kernel is never built again.
 * - materialize: `make -j` into `kernel-builds/<release>-<key>` (an O= directory, kept: it is a
 *   build directory `source: local` can take too), then the same files `source: local` takes
 *   (local/build-dir.ts); for a cross build, the build tree's host programs are rebuilt for the
 *   target (cross-scripts.ts).
 */
import { createHash } from "node:crypto";
import { copyFile, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Arch, KernelBuildSpec } from "../../config/types.js";
import { buildOnce, cacheRoot, contentKey } from "../cache.js";
import { materializeBuildDir, readBuildDir, sha256File } from "../local/build-dir.js";
import type { KernelRecipe, KernelSource, SourceContext } from "../source.js";
import { rebuildHostProgramsForTarget } from "./cross-scripts.js";
import { buildKernel, configure, formatSeconds, readFragments, toolchain } from "./kbuild.js";
import { type Conflict, describeConflict, formatKconfig } from "./kconfig.js";
import { enablerConfig, requiredConfig } from "./required-config.js";
import { checkTarget } from "./spec.js";
import { kernelTree } from "./tree.js";

/** Bump when building or materializing changes in a way the recipe does not show. */
const RECIPE_VERSION = 1;
/** Bump when configuring or its manifest changes (the kernel's key stays while the .config does). */
const CONFIG_VERSION = 2;

interface BuildResolved {
  source: "build";
  debArch: "amd64" | "arm64";
  /** The tree as given, with its revision for git trees. */
  tree: string;
  treeDir: string;
  configDir: string;
  /** The O= directory the build leaves (a build directory `source: local` can take as well). */
  buildDir: string;
  release: string;
  compiler: string;
  cross: boolean;
}

interface ConfigManifest {
  kind: "kernel-config";
  release: string;
  /** By fragment index: a fragment's name (its path) is said as the matrix gives it now. */
  conflicts: Conflict[];
  configureSeconds: number;
}

function buildSpec(ctx: SourceContext): KernelBuildSpec {
  if (ctx.machine.kernel.source !== "build") throw new Error(`${ctx.machine.id}: not a kernel to build`);
  return ctx.machine.kernel;
}

export const buildKernelSource: KernelSource = {
  async resolve(ctx) {
    const { machine, debArch, log } = ctx;
    const spec = buildSpec(ctx);
    const tc = await toolchain(machine.arch, spec.field);
    const tree = await kernelTree(spec, log);
    if ("target" in spec.config)
      checkTarget(spec.config.target, tree.dir, machine.arch, `${spec.field}.config`);
    const fragments = await readFragments(spec.fragments, spec.field);
    const configRecipe = {
      v: CONFIG_VERSION,
      arch: machine.arch,
      tree: tree.digest,
      base: "target" in spec.config ? spec.config : { file: await sha256File(spec.config.file) },
      // By content: the same fragment elsewhere is the same config.
      fragments: fragments.map((f) => formatKconfig(f.config)),
      required: formatKconfig(requiredConfig(machine.arch)) + formatKconfig(enablerConfig()),
      compiler: tc.compiler,
      pahole: tc.pahole,
    };
    const configDir = join(cacheRoot(), "kernel-configs", `${machine.arch}-${contentKey(configRecipe)}`);
    const { manifest, built } = await buildOnce<ConfigManifest>(configDir, async (tmp) => {
      const started = Date.now();
      log(`${machine.id}: configuring ${tree.origin} (${describeBase(spec)}, ${fragments.length} fragments)`);
      const out = join(tmp, "o");
      const done = await configure({
        tree: tree.dir,
        out,
        toolchain: tc,
        base: spec.config,
        fragments,
        field: spec.field,
        log,
      });
      await copyFile(join(out, ".config"), join(tmp, ".config"));
      await rm(out, { recursive: true, force: true }); // (kconfig's programs: the .config is what is kept)
      const seconds = (Date.now() - started) / 1000;
      log(`${machine.id}: configured ${done.release} in ${formatSeconds(seconds)}`);
      return {
        kind: "kernel-config",
        release: done.release,
        conflicts: done.conflicts,
        configureSeconds: seconds,
      };
    });
    // Said on every resolve, not only the first: the fragment is still overruled.
    if (!built)
      for (const c of manifest.conflicts)
        log(describeConflict({ ...c, fragment: fragments[Number(c.fragment)]?.name ?? c.fragment }));
    const recipe = buildRecipe({
      arch: machine.arch,
      treeDigest: tree.digest,
      config: await readFile(join(configDir, ".config"), "utf8"),
      compiler: tc.compiler,
      pahole: tc.pahole,
    });
    const resolved: BuildResolved = {
      source: "build",
      debArch,
      tree: tree.origin,
      treeDir: tree.dir,
      configDir,
      buildDir: join(cacheRoot(), "kernel-builds", `${manifest.release}-${contentKey(recipe)}`),
      release: manifest.release,
      compiler: tc.compiler,
      cross: tc.cross,
    };
    return {
      recipe,
      release: manifest.release,
      version: manifest.release,
      headers: { tree: true },
      resolved,
    };
  },

  async materialize(recipe, into, ctx) {
    const { machine, log } = ctx;
    const spec = buildSpec(ctx);
    const r = recipe.resolved as BuildResolved;
    const tc = await toolchain(machine.arch, spec.field);
    const { buildDir } = r;
    const what = `${machine.id}: kernel ${r.release}`;
    await buildOnce(buildDir, async (out) => {
      await copyFile(join(r.configDir, ".config"), join(out, ".config"));
      const { steps, seconds } = await buildKernel(r.treeDir, out, tc, what, log);
      return { kind: "kernel-build", recipe: recipe.recipe, tree: r.tree, steps, buildSeconds: seconds };
    });
    const b = await readBuildDir(buildDir, machine.arch, `${spec.field}.tree`);
    if (b.release !== r.release)
      throw new Error(`${what}: the build says its release is ${b.release}, configuring said ${r.release}`);
    const kernel = await materializeBuildDir(b, machine.arch, into);
    if (tc.cross && kernel.headersTree)
      await rebuildHostProgramsForTarget(join(into, kernel.headersTree), tc, what, log);
    return kernel;
  },
};

/**
 * The cache entries a built kernel comes from besides its kernel entry: its configuration and its
 * build directory, and the tree (a tarball's is unpacked into `kernel-trees/`; a path inside an
 * entry keeps that entry for `images prune`).
 */
export function buildKernelEntries(recipe: KernelRecipe): string[] {
  const r = recipe.resolved as BuildResolved;
  return [r.configDir, r.buildDir, r.treeDir];
}

/**
 * What keys a built kernel: the tree's content, the final .config, the compiler (gcc's first
 * `--version` line, Debian's revision included) and pahole (it writes the BTF), the architecture.
 * Not the tree's path or mtimes, nor how the config was put together (the same final config from
 * other fragments is the same kernel).
 */
export function buildRecipe(r: {
  arch: Arch;
  treeDigest: string;
  config: string;
  compiler: string;
  pahole: string;
}) {
  return {
    v: RECIPE_VERSION,
    source: "build",
    arch: r.arch,
    tree: r.treeDigest,
    config: createHash("sha256").update(r.config).digest("hex"),
    compiler: r.compiler,
    pahole: r.pahole,
  };
}

function describeBase(spec: KernelBuildSpec): string {
  return "target" in spec.config ? spec.config.target : spec.config.file;
}
