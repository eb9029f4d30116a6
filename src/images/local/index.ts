/**
 * `kernel: { source: local, path }`: a kernel the user built, taken from its build directory without
 * running make (local/build-dir.ts). Keyed by the digests of its image, .config, Module.symvers,
 * modules.builtin and modules: a rebuilt kernel is a new entry, an unchanged one is found again.
 * The root disk gets the build tree as /lib/modules/<release>/build, not a headers package.
 */
import { contentKey } from "../cache.js";
import type { KernelSource } from "../source.js";
import { type BuildDir, buildDirDigests, materializeBuildDir, readBuildDir } from "./build-dir.js";

/** Bump when materialize() changes in a way the recipe does not show. */
const RECIPE_VERSION = 1;

interface LocalResolved {
  source: "local";
  debArch: "amd64" | "arm64";
  path: string;
  release: string;
  image: string;
  modules: number;
}

export const localKernelSource: KernelSource = {
  async resolve({ machine, debArch }) {
    if (machine.kernel.source !== "local") throw new Error(`${machine.id}: not a local kernel`);
    const b = await readBuildDir(machine.kernel.path, machine.arch, `${machine.id}: kernel.path`);
    const resolved: LocalResolved = {
      source: "local",
      debArch,
      path: b.dir,
      release: b.release,
      image: b.image,
      modules: b.modules.length,
    };
    return {
      // The content, not the path: the same kernel elsewhere is the same entry.
      recipe: {
        v: RECIPE_VERSION,
        source: "local",
        arch: machine.arch,
        release: b.release,
        files: await buildDirDigests(b),
      },
      release: b.release,
      version: b.release,
      headers: { tree: true },
      resolved,
    };
  },

  async materialize(recipe, into, { machine }) {
    const r = recipe.resolved as LocalResolved;
    // Read again: the digests were taken from this list (a tree changed since is a new key next time).
    const b: BuildDir = await readBuildDir(r.path, machine.arch, `${machine.id}: kernel.path`);
    const { files } = recipe.recipe as { files: unknown };
    if (contentKey(await buildDirDigests(b)) !== contentKey(files))
      throw new Error(`${machine.id}: ${b.dir} changed while kmatrix read it (a build running?); try again`);
    return materializeBuildDir(b, machine.arch, into);
  },
};
