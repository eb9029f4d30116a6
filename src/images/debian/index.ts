/** `kernel: { source: debian, suite, flavour }`: the newest kernel of a suite, from Debian's archive. */
import type { ResolvedKernel } from "../debian-archive.js";
import type { KernelRecipe, KernelSource } from "../source.js";
import { extractKernel } from "./extract.js";

/** Bump when extraction changes in a way the recipe does not show. */
const RECIPE_VERSION = 1;

export const debianKernelSource: KernelSource = {
  async resolve({ machine, debArch, archive }) {
    if (machine.kernel.source !== "debian") throw new Error(`${machine.id}: not a Debian kernel`);
    const resolved = await archive.resolveKernel(machine.kernel.suite, machine.kernel.flavour, debArch);
    return {
      // (The same recipe as before kernel sources existed: warm caches stay warm.)
      recipe: {
        v: RECIPE_VERSION,
        packages: resolved.packages.map((p) => ({ name: p.name, version: p.version, sha256: p.sha256 })),
      },
      release: resolved.release,
      version: resolved.version,
      headers: { package: resolved.headersPackage },
      suites: resolved.suites,
      resolved,
    };
  },

  async materialize(recipe: KernelRecipe, into, { archive }) {
    const resolved = recipe.resolved as ResolvedKernel;
    const tree = `${into}/tree`;
    const extracted = await extractKernel(archive, resolved, tree);
    const rel = (p: string) => p.slice(into.length + 1);
    return {
      vmlinuz: rel(extracted.vmlinuz),
      modulesDir: rel(extracted.modulesDir),
      bootDir: "tree/boot",
    };
  },
};
