import { existsSync } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import { join, sep } from "node:path";
import { execa } from "execa";
import { cacheRoot, contentKey } from "../images/cache.js";
import { UsageError } from "../util/errors.js";
import { PACKAGE_ROOT } from "../util/package-root.js";
import type { SourceRef } from "./load.js";
import type { TestSpec } from "./schema.js";

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
 * Tests whose `skipUnless` path is missing from the sources → the reason they are skipped
 * everywhere. Decided on the host, so a driver the sources do not have never boots a machine.
 */
export function sourceSkips(tests: TestSpec[], sources: Map<string, LocalSource>): Map<string, string> {
  const skips = new Map<string, string>();
  for (const t of tests) {
    if (!t.skipUnless) continue;
    const [name, ...rest] = t.skipUnless.exists.split("/");
    const src = name ? sources.get(name) : undefined;
    if (!src || !existsSync(join(src.dir, ...rest))) {
      const version = src?.revision ? `; ${name} is ${src.revision}` : "";
      skips.set(t.name, `${t.skipUnless.reason}${version}`);
    }
  }
  return skips;
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
