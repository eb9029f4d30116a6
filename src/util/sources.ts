/**
 * Sources kmatrix reads from the user's disk or from git: plan sources and the kernel trees of
 * `source: build` alike. `dir` or `git-url@ref` (parseSource), made local (materializeSources: git's
 * files, a shallow fetch into the cache), and digested by content (digestSource).
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, readlink, rm, stat } from "node:fs/promises";
import { isAbsolute, join, resolve, sep } from "node:path";
import { execa } from "execa";
import { cacheRoot, contentKey } from "./cache-dir.js";
import { UsageError } from "./errors.js";
import { PACKAGE_ROOT } from "./package-root.js";

export type SourceLocation = { kind: "dir"; path: string } | { kind: "git"; url: string; ref: string };

export interface SourceRef {
  name: string;
  /** A local directory, a git URL with a ref, or (until bindSources) one the user must give. */
  location: SourceLocation | { kind: "given"; help: string };
}

/** `https://host/repo.git@v1.2` (or any `scheme://…@ref`, `git@host:repo@ref`) → git; anything else a directory. */
export function parseSource(spec: string, baseDir: string): SourceRef["location"] {
  const git = /^((?:[a-z+]+:\/\/|git@)[^@\s]+(?:@[^@\s:]+:[^@\s]+)?)@([^@\s]+)$/.exec(spec);
  if (git?.[1] && git[2]) return { kind: "git", url: git[1], ref: git[2] };
  return { kind: "dir", path: isAbsolute(spec) ? spec : resolve(baseDir, spec) };
}

export interface LocalSource {
  dir: string;
  /**
   * The files to copy, relative to `dir`, when `dir` is in a git work tree: tracked and untracked
   * but not ignored, so a developer's build products never reach a machine as stale inputs.
   */
  files?: string[];
  /** What version of the source this is, when git can tell (`0.23.2`, `0.25.4-123-gabc1234`). */
  revision?: string;
}

/**
 * Every source as a local directory: directories as they are, `git-url@ref` checked out once into
 * the cache (git runs without a shell; the URL and ref are plain arguments).
 */
export async function materializeSources(
  sources: SourceRef[],
  log: (l: string) => void,
): Promise<Map<string, LocalSource>> {
  const out = new Map<string, LocalSource>();
  for (const s of sources) {
    if (s.location.kind === "dir") {
      const isDir = await stat(s.location.path).then(
        (st) => st.isDirectory(),
        () => false,
      );
      if (!isDir) throw new UsageError(`source ${s.name}: ${s.location.path} is not a directory`);
      const files = await gitFiles(s.location.path);
      // A plan's own files (inside kmatrix) have kmatrix's version, which the run already records.
      const own = s.location.path.startsWith(PACKAGE_ROOT + sep);
      const revision = files && !own ? await describe(s.location.path) : undefined;
      out.set(s.name, { dir: s.location.path, files, revision });
      continue;
    }
    if (s.location.kind === "given") throw new Error(`source ${s.name}: no location bound (bindSources)`);
    const { url, ref } = s.location;
    const dir = join(cacheRoot(), "sources", `${s.name}-${contentKey({ url, ref })}`);
    const have = await stat(join(dir, ".git")).then(
      () => true,
      () => false,
    );
    if (!have) {
      log(`fetching ${url} at ${ref}`);
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      const git = (args: string[]) => execa("git", args, { cwd: dir });
      try {
        await git(["init", "-q"]);
        await git(["fetch", "-q", "--depth", "1", "--", url, ref]);
        await git(["checkout", "-q", "FETCH_HEAD"]);
      } catch (err) {
        await rm(dir, { recursive: true, force: true });
        throw new Error(
          `source ${s.name}: cannot fetch ${url} at ${ref}: ${(err as { stderr?: string }).stderr ?? err}`,
        );
      }
    }
    const commit = await describe(dir, ["rev-parse", "--short=12", "HEAD"]);
    out.set(s.name, { dir, files: await gitFiles(dir), revision: commit ? `${ref} (${commit})` : ref });
  }
  return out;
}

/**
 * The digest of what a source puts into every machine: each copied file's path, executable bit and
 * content (a link's target). A git revision is not enough: a work tree can have local changes, and
 * a plain directory has none. Hashing a libs tree (~4k files) takes about a second, once per run.
 */
export async function digestSource(src: LocalSource): Promise<string> {
  const files = src.files ?? (await walk(src.dir));
  const hash = createHash("sha256");
  for (const rel of [...files].sort()) {
    const path = join(src.dir, rel);
    const st = await stat(path).catch(() => undefined);
    if (!st) {
      const target = await readlink(path).catch(() => undefined);
      hash.update(`${rel}\0link\0${target ?? "missing"}\0`);
      continue;
    }
    if (st.isDirectory()) continue;
    hash.update(`${rel}\0${st.mode & 0o111 ? "x" : "-"}\0${st.size}\0`);
    hash.update(await readFile(path));
  }
  return hash.digest("hex");
}

/** Every file under `dir`, git metadata excluded (as the copy into machines does). */
async function walk(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((d) => !d.isDirectory())
    .map((d) => join(d.parentPath, d.name).slice(dir.length + 1))
    .filter((rel) => !rel.split("/").includes(".git"));
}

async function describe(
  dir: string,
  args = ["describe", "--tags", "--always", "--dirty"],
): Promise<string | undefined> {
  const r = await execa("git", args, { cwd: dir, reject: false });
  return r.exitCode === 0 && r.stdout.trim() ? r.stdout.trim() : undefined;
}

async function gitFiles(dir: string): Promise<string[] | undefined> {
  const r = await execa("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."], {
    cwd: dir,
    reject: false,
  });
  if (r.exitCode !== 0) return undefined; // not a git work tree: copy the directory as it is
  const files = r.stdout.split("\0").filter(Boolean);
  // ls-files lists deleted-but-tracked files too; only what exists can be copied.
  const present = await Promise.all(
    files.map((f) =>
      stat(join(dir, f)).then(
        () => f,
        () => undefined,
      ),
    ),
  );
  return present.filter((f): f is string => !!f);
}
