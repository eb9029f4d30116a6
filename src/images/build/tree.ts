/**
 * The kernel tree of `source: build` as a directory kmatrix can build from, with the digest that
 * keys everything built from it. A directory and `git-url@ref` go the way plan sources go
 * (util/sources.ts: git's files, a shallow fetch into the cache; digestSource: paths,
 * executable bits, contents), so neither paths nor mtimes change the key. A tarball is keyed by
 * its own sha256 and unpacked once into the cache (`kernel-trees/`).
 */
import { readdir, realpath, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { execa } from "execa";
import type { KernelBuildSpec } from "../../config/types.js";
import { UsageError } from "../../util/errors.js";
import { digestSource, materializeSources } from "../../util/sources.js";
import { buildOnce, cacheRoot } from "../cache.js";
import { sha256File } from "../local/build-dir.js";
import { checkTreeDir, treeLocation } from "./spec.js";

export interface KernelTree {
  /** The source tree (absolute), never written to: kmatrix builds with O=. */
  dir: string;
  /** Digest of the tree's content. */
  digest: string;
  /** What the tree is, for manifests and reports: a path, `url@ref (commit)`, a tarball's name. */
  origin: string;
}

/** Digests of trees already hashed in this process (a matrix names the same tree for both arches). */
const digested = new Map<string, Promise<KernelTree>>();

export function kernelTree(spec: KernelBuildSpec, log: (line: string) => void): Promise<KernelTree> {
  let tree = digested.get(spec.tree);
  if (!tree) {
    tree = findTree(spec, log);
    digested.set(spec.tree, tree);
    tree.catch(() => digested.delete(spec.tree));
  }
  return tree;
}

async function findTree(spec: KernelBuildSpec, log: (line: string) => void): Promise<KernelTree> {
  const field = `${spec.field}.tree`;
  const location = treeLocation(spec.tree, "/");
  if (location.kind === "tarball") return unpackTarball(location.path, field, log);
  const started = Date.now();
  const sources = await materializeSources(
    [{ name: "linux", location: location.kind === "git" ? location : { kind: "dir", path: location.path } }],
    log,
  ).catch((err: Error) => {
    throw new UsageError(`${field}: ${err.message.replace(/^source linux: /, "")}`);
  });
  const source = sources.get("linux");
  if (!source) throw new Error(`${field}: no tree`);
  checkTreeDir(source.dir, field, spec.tree);
  const digest = (await cleanGitTree(source.dir)) ?? `files:${await digestSource(source)}`;
  log(`kernel tree ${spec.tree}: digest in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return {
    dir: source.dir,
    digest,
    origin:
      location.kind === "git" ? `${spec.tree}${source.revision ? ` (${source.revision})` : ""}` : spec.tree,
  };
}

/**
 * A git work tree without changes or untracked files is its commit's tree object, which git has
 * already hashed (paths, modes, contents): a second or so instead of reading every file (15 s for
 * a 6.1 tree). Anything else is hashed file by file.
 */
async function cleanGitTree(dir: string): Promise<string | undefined> {
  const git = (args: string[]) => execa("git", args, { cwd: dir, reject: false });
  const top = await git(["rev-parse", "--show-toplevel"]);
  // Only the tree's own repository: a tree inside another project's work tree is hashed.
  if (top.exitCode !== 0 || (await realpath(top.stdout.trim())) !== (await realpath(dir))) return undefined;
  const status = await git(["status", "--porcelain", "--untracked-files=all"]);
  if (status.exitCode !== 0 || status.stdout.trim() !== "") return undefined;
  const tree = await git(["rev-parse", "HEAD^{tree}"]);
  return tree.exitCode === 0 ? `git-tree:${tree.stdout.trim()}` : undefined;
}

/** A tarball's single top directory (linux-6.1/), unpacked once per content into the cache. */
async function unpackTarball(path: string, field: string, log: (line: string) => void): Promise<KernelTree> {
  const sha256 = await sha256File(path).catch((err: Error) => {
    throw new UsageError(`${field}: ${path}: ${err.message}`);
  });
  const name = basename(path).replace(/\.(tar(\.\w+)?|tgz|txz)$/, "");
  const dir = join(cacheRoot(), "kernel-trees", `${name}-${sha256.slice(0, 16)}`);
  const { manifest } = await buildOnce(dir, async (tmp) => {
    log(`unpacking ${path}`);
    const started = Date.now();
    // tar picks the decompressor from the suffix (-a is implied by -f on GNU tar for reading).
    const r = await execa("tar", ["-xf", path, "-C", tmp, "--no-same-owner"], { reject: false });
    if (r.exitCode !== 0)
      throw new UsageError(`${field}: ${path}: not a readable tarball: ${r.stderr.trim()}`);
    const top = await readdir(tmp);
    if (top.length !== 1 || !top[0] || !(await stat(join(tmp, top[0]))).isDirectory())
      throw new UsageError(`${field}: ${path}: expected one top directory, found ${top.length} entries`);
    checkTreeDir(join(tmp, top[0]), field, path);
    const seconds = (Date.now() - started) / 1000;
    log(`unpacked ${path} in ${seconds.toFixed(1)} s`);
    return { kind: "kernel-tree", tarball: path, sha256, top: top[0], unpackSeconds: seconds };
  });
  const top = (manifest as { top: string }).top;
  return { dir: join(dir, top), digest: `tarball:${sha256}`, origin: basename(path) };
}
