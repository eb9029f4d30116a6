import type { Stats } from "node:fs";
import { chmod, chown, lstat, readdir, readlink, realpath, unlink } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
import { pipeline } from "node:stream/promises";
import * as tar from "tar";

/** An entry of a copied tree that was not extracted (or was removed after), and why. */
export interface Refusal {
  /** The entry's path as the archive names it (relative to the extraction directory). */
  path: string;
  why: string;
}

export interface ExtractResult {
  refused: Refusal[];
}

export interface SafeExtractOptions {
  /**
   * The one top-level name (file or directory) every entry must lie under, and every link must
   * point into: the copied tree. Default: the whole extraction directory. Without it, entries and
   * links may reach whatever else the directory holds (another builder's artifacts).
   */
  tree?: string;
}

/** The most a file keeps of its mode: the owner's x bit decides between 0o755 and 0o644. */
const FILE_EXEC = 0o755;
const FILE_PLAIN = 0o644;
const DIR_MODE = 0o755;
/** Bits no extracted file or directory keeps: setuid, setgid, sticky, group and other write. */
const UNSAFE_BITS = 0o7022;
/** The kernel's limit on symbolic links followed in one lookup (a loop is refused). */
const MAX_LINK_HOPS = 40;

const FILE_TYPES = new Set(["File", "OldFile", "ContiguousFile"]);
const DIR_TYPES = new Set(["Directory", "GNUDumpDir"]);

/**
 * Extracts a tar stream that untrusted code produced (a builder or test running as root in a
 * guest or container) into `dir`, on a host where kmatrix may itself run as root:
 * - owners are never kept: everything belongs to kmatrix's own user;
 * - modes are at most 0o755 (owner may execute) or 0o644: no setuid/setgid/sticky, no group or
 *   other write;
 * - device nodes, FIFOs (and sockets, which tar cannot carry) are refused;
 * - entries whose path is absolute or leaves the tree (`..`) are refused, not relocated;
 * - symbolic links to absolute paths or out of the tree, and hard links to anything outside it,
 *   are refused, also when the escape goes through other links of the tree (checked on the
 *   extracted tree: a link whose real target leaves it is removed);
 * - nothing is written through a symbolic link, inside the tree or not (node-tar's own rule).
 * The rest is extracted; what was refused is returned, not thrown: one hostile entry does not
 * cost the good artifacts. A damaged or truncated archive, or an unusable `dir`, throws.
 */
export async function safeExtract(
  source: NodeJS.ReadableStream | AsyncIterable<Buffer>,
  dir: string,
  opts: SafeExtractOptions = {},
): Promise<ExtractResult> {
  const refused: Refusal[] = [];
  const refuse = (path: string, why: string) => {
    refused.push({ path, why });
    return false;
  };
  const tree = opts.tree === undefined ? undefined : posix.normalize(opts.tree).replace(/\/+$/, "");
  if (tree !== undefined && (tree === "." || tree === ".." || tree.startsWith("../") || tree.startsWith("/")))
    throw new Error(`safeExtract: the tree must be a name inside the directory, not ${opts.tree}`);
  const inTree = (p: string) =>
    tree === undefined ? p !== ".." && !p.startsWith("../") : p === tree || p.startsWith(`${tree}/`);

  const unpack = tar.x({
    cwd: dir,
    // The default is true when running as root: a guest's root-owned files would stay root-owned
    // on the host. False: what is created belongs to kmatrix's user (no chown at all).
    preserveOwner: false,
    // Not strict: strict turns every warning (one refused entry) into an error that ends the
    // whole extraction. Entries node-tar refuses by itself are collected by onwarn instead; a
    // damaged archive is still an error (node-tar marks it unrecoverable).
    strict: false,
    // Keep node-tar's path protections (the default, spelled out): `..` in paths and escaping
    // link targets are refused, and nothing is extracted through a symbolic link.
    preservePaths: false,
    // Default, spelled out: a symbolic link in the way of an entry makes the entry fail (and be
    // reported) rather than being silently replaced.
    unlink: false,
    // No chmod after creation (the default; it would also call the deprecated process.umask()):
    // the mode given at creation is already the sanitised one set in `filter` below, and the
    // check after extraction fixes whatever still differs.
    chmod: false,
    // Modes for directories and files the archive implies without an entry of their own
    // (node-tar's default is 0o777/0o666 minus a umask it takes as 0 when not chmodding).
    dmode: DIR_MODE,
    fmode: FILE_PLAIN,
    // Runs on every entry, in archive order, before node-tar acts on it (onReadEntry would too,
    // but only by listener order): refuse what must not be extracted, sanitise the mode of the rest.
    filter: (path, entry) => {
      if (!(entry instanceof tar.ReadEntry)) return true; // Stats: only when packing
      const type = entry.type;
      if (path.startsWith("/")) return refuse(path, "absolute path");
      if (path.split("/").includes("..")) return refuse(path, "path contains '..'");
      const norm = posix.normalize(path).replace(/\/+$/, "");
      if (!inTree(norm)) return refuse(path, "outside the copied tree");
      if (FILE_TYPES.has(type)) {
        entry.mode = (entry.mode ?? 0) & 0o100 ? FILE_EXEC : FILE_PLAIN;
        return true;
      }
      if (DIR_TYPES.has(type)) {
        entry.mode = DIR_MODE;
        return true;
      }
      const target = entry.linkpath ?? "";
      if (type === "SymbolicLink") {
        if (target.startsWith("/")) return refuse(path, `symbolic link to an absolute path (${target})`);
        if (target === "") return refuse(path, "symbolic link to nothing");
        const resolved = posix.normalize(posix.join(posix.dirname(norm), target));
        if (!inTree(resolved)) return refuse(path, `symbolic link out of the copied tree (${target})`);
        return true;
      }
      if (type === "Link") {
        // A hard link's target is named from the archive's root, not from the link's directory.
        if (target.startsWith("/")) return refuse(path, `hard link to an absolute path (${target})`);
        if (target.split("/").includes("..")) return refuse(path, `hard link with '..' (${target})`);
        if (!inTree(posix.normalize(target)))
          return refuse(path, `hard link out of the copied tree (${target})`);
        return true;
      }
      return refuse(path, `${describeType(type)} not allowed`);
    },
    // What node-tar refused by itself (a write through a symbolic link, a hard link to nothing,
    // a broken header). Informational messages (TAR_ENTRY_INFO) refuse nothing.
    onwarn: (code, message, data) => {
      if (code === "TAR_ENTRY_INFO") return;
      refuse(warnedPath(data), /^TAR_[A-Z_]+:/.test(message) ? message : `${code}: ${message}`);
    },
  });
  await pipeline(source, unpack);
  await checkTree(await realpath(dir), tree, refused);
  return { refused };
}

/**
 * Regular files under `dir`, as sorted paths relative to it; symbolic links are not followed.
 * [] when `dir` is missing or not a directory.
 */
export async function listFiles(dir: string): Promise<string[]> {
  const st = await lstat(dir).catch(() => undefined);
  if (!st?.isDirectory()) return [];
  const files: string[] = [];
  for await (const [path, s] of walk(dir)) if (s.isFile()) files.push(path);
  return files.sort();
}

/**
 * The last word, on what is actually on disk (whatever node-tar did): under the tree, owners are
 * kmatrix's, modes are safe, only files, directories and symbolic links exist, and every symbolic
 * link resolves inside the tree (through the tree's other links, as the kernel would) or to
 * something that does not exist inside it.
 */
async function checkTree(realDir: string, tree: string | undefined, refused: Refusal[]): Promise<void> {
  const top = tree === undefined ? realDir : join(realDir, tree);
  const topStat = await lstat(top).catch(() => undefined);
  if (!topStat) return; // everything was refused
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  const relative = (abs: string) => abs.slice(realDir.length + 1) || ".";
  // The tree's top is checked too, unless it is the caller's directory itself.
  const entries: [string, Stats][] = tree === undefined ? [] : [[top, topStat]];
  if (topStat.isDirectory()) for await (const [path, st] of walk(top)) entries.push([join(top, path), st]);
  for (const [abs, st] of entries) {
    if (st.isSymbolicLink()) {
      if (abs === top || !(await resolvesInside(top, abs))) {
        const target = await readlink(abs);
        await unlink(abs);
        refused.push({ path: relative(abs), why: `symbolic link out of the copied tree (${target})` });
      }
      continue;
    }
    if (!st.isFile() && !st.isDirectory()) {
      await unlink(abs);
      refused.push({ path: relative(abs), why: `${describeStat(st)} not allowed` });
      continue;
    }
    if (uid !== undefined && gid !== undefined && (st.uid !== uid || st.gid !== gid))
      await chown(abs, uid, gid);
    const mode = st.mode & 0o7777;
    if (mode & UNSAFE_BITS) await chmod(abs, mode & ~UNSAFE_BITS);
  }
}

/**
 * Whether the symbolic link `link` (inside `top`) resolves inside `top`, following the links it
 * meets on the way like the kernel does. Components that do not exist are taken as written (the
 * kernel would stop there). A loop, or a link to an absolute path on the way, is "outside".
 */
async function resolvesInside(top: string, link: string): Promise<boolean> {
  const within = (p: string) => p === top || p.startsWith(`${top}/`);
  let current = dirname(link);
  const rest = (await readlink(link)).split("/");
  if (rest[0] === "") return false;
  let hops = 0;
  while (rest.length > 0) {
    const part = rest.shift() as string;
    if (part === "" || part === ".") continue;
    if (part === "..") {
      current = dirname(current);
      if (!within(current)) return false;
      continue;
    }
    const next = join(current, part);
    const st = await lstat(next).catch(() => undefined);
    if (st?.isSymbolicLink()) {
      if (++hops > MAX_LINK_HOPS) return false;
      const target = await readlink(next);
      if (target.startsWith("/")) return false;
      rest.unshift(...target.split("/")); // relative to the directory holding `next`: current
      continue;
    }
    current = next;
  }
  return within(current);
}

/** Every entry under `dir` (not `dir` itself), depth first, without following symbolic links. */
async function* walk(dir: string, prefix = ""): AsyncGenerator<[string, Stats]> {
  for (const name of await readdir(join(dir, prefix))) {
    const path = prefix ? `${prefix}/${name}` : name;
    const st = await lstat(join(dir, path));
    yield [path, st];
    if (st.isDirectory()) yield* walk(dir, path);
  }
}

/** The path a node-tar warning is about, as the archive names it. */
function warnedPath(data: object): string {
  const { entry, header, path } = data as {
    entry?: { path?: unknown };
    header?: { path?: unknown };
    path?: unknown;
  };
  const named = entry?.path ?? header?.path ?? path;
  return typeof named === "string" && named !== "" ? named : "(archive)";
}

function describeType(type: string): string {
  switch (type) {
    case "CharacterDevice":
      return "character device";
    case "BlockDevice":
      return "block device";
    case "FIFO":
      return "FIFO";
    default:
      return `entry of type ${type}`;
  }
}

function describeStat(st: Stats): string {
  if (st.isCharacterDevice()) return "character device";
  if (st.isBlockDevice()) return "block device";
  if (st.isFIFO()) return "FIFO";
  if (st.isSocket()) return "socket";
  return "special file";
}
