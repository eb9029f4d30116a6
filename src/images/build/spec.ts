/**
 * `kernel: { source: build, tree, config, fragments }` as the matrix gives it, checked and made
 * absolute at config load: every problem is one UsageError naming its field
 * (`kmatrix.yaml: machines[2].kernel.tree: …`), with exit code 2 before anything runs, rather than
 * a harness error in every cell. Only what needs no network and no build is checked here; what
 * needs the tree itself (a defconfig of a git tree, a tarball's contents, whether a ref exists) is
 * checked when the tree is at hand (tree.ts, kbuild.ts).
 */
import { accessSync, constants, existsSync, readFileSync, statSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Arch, KernelBuildSpec } from "../../config/types.js";
import { UsageError } from "../../util/errors.js";
import { parseSource, type SourceLocation } from "../../util/sources.js";
import { parseKconfig } from "./kconfig.js";

/** The kernel's `SRCARCH` (its directory under arch/) and `ARCH` for make. */
export const KERNEL_ARCH: Record<Arch, { srcarch: string; make: string }> = {
  x86_64: { srcarch: "x86", make: "x86_64" },
  aarch64: { srcarch: "arm64", make: "arm64" },
};

/** Tarballs tar reads by their suffix (`tar -xf` picks the decompressor). */
const TARBALL = /\.(tar|tar\.(xz|gz|bz2|zst)|tgz|txz)$/;

/** Configuration targets of every kernel's scripts/kconfig/Makefile that start a config afresh. */
const GENERIC_TARGETS = new Set(["defconfig", "tinyconfig", "allnoconfig", "allyesconfig", "allmodconfig"]);

export type TreeLocation =
  | { kind: "dir"; path: string }
  | { kind: "git"; url: string; ref: string }
  | { kind: "tarball"; path: string };

/** `git-url@ref` as plan sources spell it (util/sources.ts: parseSource), a tarball, or a directory. */
export function treeLocation(tree: string, baseDir: string): TreeLocation {
  const location = parseSource(tree, baseDir);
  if (location.kind === "git") return location;
  const path = location.kind === "dir" ? location.path : tree; // ("given" is for plans only)
  return TARBALL.test(path) ? { kind: "tarball", path } : { kind: "dir", path };
}

interface GivenBuild {
  tree: string;
  config: string;
  fragments: string[];
}

/** Checks a `source: build` entry for `arch` and makes its paths absolute (relative to `baseDir`). */
export function checkBuildSpec(
  given: GivenBuild,
  arch: Arch,
  baseDir: string,
  where: string,
): KernelBuildSpec {
  const field = `${where}.kernel`;
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  const location = treeLocation(given.tree, baseDir);
  const tree = location.kind === "git" ? given.tree : location.path;
  if (location.kind === "git") checkGitTree(location, `${field}.tree`, given.tree);
  // (A URL whose ref is missing would otherwise be "no such directory".)
  else if (GIT_URL.test(given.tree))
    throw new UsageError(
      `${field}.tree: ${given.tree}: a git URL needs a ref: git-url@ref (a branch, tag or commit)`,
    );
  if (location.kind === "tarball") {
    if (!isFile(tree)) throw new UsageError(`${field}.tree: ${given.tree}: no such file`);
    checkReadable(tree, `${field}.tree: ${given.tree}`);
  }
  if (location.kind === "dir") checkTreeDir(tree, `${field}.tree`, given.tree);

  const config = configOf(given.config, abs);
  if ("file" in config) {
    if (!isFile(config.file))
      throw new UsageError(
        `${field}.config: ${given.config}: no such file (nor a make target ending in "config")`,
      );
    checkReadable(config.file, `${field}.config: ${given.config}`);
  }
  if ("target" in config && location.kind === "dir")
    checkTarget(config.target, tree, arch, `${field}.config`);

  const fragments = given.fragments.map((f, i) => {
    const path = abs(f);
    const name = `${field}.fragments[${i}]`;
    if (!isFile(path)) throw new UsageError(`${name}: ${f}: no such file`);
    checkReadable(path, `${name}: ${f}`);
    // Read again when configuring (kbuild.ts: readFragments): a bad line is said the same way.
    try {
      parseKconfig(readFileSync(path, "utf8"), name);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    return path;
  });
  return { source: "build", tree, config, fragments, field };
}

/** What parseSource would take for a git URL, before its `@ref`. */
const GIT_URL = /^(?:[a-z+]+:\/\/|git@)/;

/**
 * `git-url@ref` without the network: the ref must be a name git accepts (git-check-ref-format(1),
 * or a commit id; a refspec such as `a:b` is not one), and a `file://` repository must exist.
 */
function checkGitTree(
  location: Extract<SourceLocation, { kind: "git" }>,
  field: string,
  given: string,
): void {
  const bad = refNameProblem(location.ref);
  if (bad) throw new UsageError(`${field}: ${given}: "${location.ref}" is not a git ref name (${bad})`);
  if (!location.url.startsWith("file:")) return;
  let path: string;
  try {
    path = fileURLToPath(location.url);
  } catch (err) {
    throw new UsageError(`${field}: ${given}: ${(err as Error).message}`);
  }
  if (!existsSync(path)) throw new UsageError(`${field}: ${given}: no such repository ${path}`);
}

/** Why git would refuse `ref` as a branch or tag name (git-check-ref-format(1)), or undefined. */
function refNameProblem(ref: string): string | undefined {
  if (ref.startsWith("-")) return "starts with -";
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it finds
  if (/[\x00-\x20\x7f~^:?*[\\]/.test(ref)) return "has a space, control character or one of ~^:?*[\\";
  if (ref.includes("..")) return "has ..";
  if (ref.includes("@{") || ref === "@") return "has @{ or is @";
  if (ref.endsWith("/") || ref.endsWith(".") || ref.includes("//")) return "ends with / or ., or has //";
  if (ref.split("/").some((c) => c.startsWith(".") || c.endsWith(".lock")))
    return "a component starts with . or ends with .lock";
  return undefined;
}

function checkReadable(path: string, what: string): void {
  try {
    accessSync(path, constants.R_OK);
  } catch (err) {
    throw new UsageError(`${what}: cannot read it (${(err as NodeJS.ErrnoException).code})`);
  }
}

/** A word ending in `config` with no `/` that is not a file here is a make target (`defconfig`). */
function configOf(given: string, abs: (p: string) => string): KernelBuildSpec["config"] {
  const path = abs(given);
  if (/^[A-Za-z0-9_.-]*config$/.test(given) && !isFile(path)) return { target: given };
  return { file: path };
}

/** A kernel source tree: top Makefile, Kconfig, the architecture's directory. */
export function checkTreeDir(dir: string, field: string, given: string): void {
  if (!existsSync(dir)) throw new UsageError(`${field}: ${given}: no such directory`);
  if (!statSync(dir).isDirectory()) throw new UsageError(`${field}: ${given}: not a directory or tarball`);
  for (const f of ["Makefile", "Kconfig", "arch"])
    if (!existsSync(join(dir, f)))
      throw new UsageError(`${field}: ${given}: no ${f} (not a kernel source tree)`);
  // kbuild refuses to build out of tree (O=) from a tree configured in place.
  for (const f of [".config", "include/config"])
    if (existsSync(join(dir, f)))
      throw new UsageError(
        `${field}: ${given}: has been configured in place (${f}); kmatrix builds out of tree: run \`make mrproper\` there or give a clean tree`,
      );
}

/** A generic config target, or the architecture's `arch/<srcarch>/configs/<target>`. */
export function checkTarget(target: string, tree: string, arch: Arch, field: string): void {
  const { srcarch } = KERNEL_ARCH[arch];
  if (GENERIC_TARGETS.has(target) || existsSync(join(tree, "arch", srcarch, "configs", target))) return;
  throw new UsageError(
    `${field}: ${target}: no such config target for ${arch} (defconfig, tinyconfig, allnoconfig, or a file of arch/${srcarch}/configs/)`,
  );
}

function isFile(p: string): boolean {
  return existsSync(p) && statSync(p).isFile();
}
