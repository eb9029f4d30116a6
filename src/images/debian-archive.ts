/**
 * Client for Debian's archive: reads Packages indexes, resolves "the newest kernel of a suite" for a
 * flavour, and downloads .debs. Every file is checked along the archive's signed chain, as apt does:
 * the suite's InRelease is verified with gpgv against the archive keyring (debian-release.ts), its
 * SHA256 table vouches for the Packages index, and the index's SHA256 fields for every .deb. Only
 * verified files enter the cache, `cacheDir/archive/`, each written atomically (temp file + rename
 * in the same dir), so concurrent kmatrix processes sharing a cache are safe: the worst case is that
 * both download the same file.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { execa } from "execa";
import { z } from "zod";
import {
  ArchiveVerificationError,
  DEBIAN_ARCHIVE_KEYRING,
  parseRelease,
  type ReleaseEntry,
  type ReleaseInfo,
  verifyRelease,
} from "./debian-release.js";

export type DebArch = "amd64" | "arm64";

export function debArchOf(arch: "x86_64" | "aarch64"): DebArch {
  return arch === "x86_64" ? "amd64" : "arm64";
}

// ---------------------------------------------------------------------------------------------------
// Version comparison

/**
 * dpkg's version ordering (lib/dpkg/version.c: dpkg_version_compare / verrevcmp), written by hand:
 * the only npm candidate (deb-version-compare) has a single release, no types and few users, and
 * the algorithm is ~30 lines. Returns <0, 0 or >0 like a sort comparator.
 */
export function compareDebianVersions(a: string, b: string): number {
  const pa = splitVersion(a);
  const pb = splitVersion(b);
  if (pa.epoch !== pb.epoch) return pa.epoch < pb.epoch ? -1 : 1;
  return Math.sign(verrevcmp(pa.upstream, pb.upstream) || verrevcmp(pa.revision, pb.revision));
}

function splitVersion(v: string): { epoch: number; upstream: string; revision: string } {
  const colon = v.indexOf(":");
  const epoch = colon >= 0 ? Number.parseInt(v.slice(0, colon), 10) || 0 : 0;
  const rest = v.slice(colon + 1);
  const dash = rest.lastIndexOf("-");
  // A missing revision compares equal to "0", which verrevcmp gives "" too.
  return dash >= 0
    ? { epoch, upstream: rest.slice(0, dash), revision: rest.slice(dash + 1) }
    : { epoch, upstream: rest, revision: "" };
}

const isDigit = (c: number) => c >= 48 && c <= 57;
const isAlpha = (c: number) => (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
/** Sort weight of one char in a non-digit run: `~` < end of string < letters < everything else. */
function order(c: number): number {
  if (Number.isNaN(c) || isDigit(c)) return 0; // NaN: past the end
  if (isAlpha(c)) return c;
  if (c === 126) return -1; // ~
  return c + 256;
}

function verrevcmp(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    // Non-digit prefix, compared char by char with dpkg's weights.
    while ((i < a.length && !isDigit(a.charCodeAt(i))) || (j < b.length && !isDigit(b.charCodeAt(j)))) {
      const d = order(a.charCodeAt(i)) - order(b.charCodeAt(j));
      if (d) return d;
      i++;
      j++;
    }
    // Digit run, compared numerically without parsing (runs may exceed 2^53).
    while (a.charCodeAt(i) === 48) i++;
    while (b.charCodeAt(j) === 48) j++;
    let firstDiff = 0;
    while (isDigit(a.charCodeAt(i)) && isDigit(b.charCodeAt(j))) {
      if (!firstDiff) firstDiff = a.charCodeAt(i) - b.charCodeAt(j);
      i++;
      j++;
    }
    if (isDigit(a.charCodeAt(i))) return 1;
    if (isDigit(b.charCodeAt(j))) return -1;
    if (firstDiff) return firstDiff;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// Packages index parsing

export interface DebPackage {
  name: string;
  version: string;
  architecture: string;
  filename: string;
  size: number;
  sha256: string;
  depends: string;
  /** base URL of the archive it came from */
  baseUrl: string;
  suite: string;
}

/** The index fields we keep: `Field:` bytes and the DebPackage key each fills. */
const KEPT = (
  [
    ["Package", "name"],
    ["Version", "version"],
    ["Architecture", "architecture"],
    ["Filename", "filename"],
    ["Size", "size"],
    ["SHA256", "sha256"],
    ["Depends", "depends"],
  ] as const
).map(([field, key]) => ({ bytes: Buffer.from(`${field}:`), key }));
type KeptKey = (typeof KEPT)[number]["key"];
/** First byte of a line → the kept fields starting with it (most lines are rejected on this). */
const KEPT_BY_BYTE: (typeof KEPT)[] = Array.from({ length: 256 }, (_, b) =>
  KEPT.filter((k) => k.bytes[0] === b),
);

/**
 * Parses a deb822 Packages index (~65 MB of text for sid). Works on bytes: lines are found with
 * the native Buffer.indexOf and only the kept fields are decoded, so the Descriptions that make up
 * most of the text never become JS strings, and the kept strings are fresh copies that don't pin
 * the index text in memory (slices of one big string would). Any input that ends at a paragraph
 * boundary works, which is how readIndexFile feeds it chunks.
 */
export function parsePackagesIndex(data: string | Uint8Array, baseUrl: string, suite: string): DebPackage[] {
  const buf =
    typeof data === "string" ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.length);
  const out: DebPackage[] = [];
  const p: Record<KeptKey, string> = {
    name: "",
    version: "",
    architecture: "",
    filename: "",
    size: "",
    sha256: "",
    depends: "",
  };
  let last: KeptKey | undefined; // for continuation lines: deb822 may fold any field
  const flush = () => {
    if (p.name && p.filename) {
      const { name, version, architecture, filename, size, sha256, depends } = p;
      out.push({
        name,
        version,
        architecture,
        filename,
        size: Number(size),
        sha256,
        depends,
        baseUrl,
        suite,
      });
    }
    p.name = p.version = p.architecture = p.filename = p.size = p.sha256 = p.depends = "";
  };
  const n = buf.length;
  for (let pos = 0; pos < n; ) {
    let eol = buf.indexOf(10, pos);
    if (eol < 0) eol = n;
    const c = buf[pos] as number;
    if (eol === pos) {
      flush();
      last = undefined;
    } else if (c === 32 || c === 9) {
      if (last) p[last] += ` ${buf.toString("utf8", pos, eol).trim()}`;
    } else {
      last = undefined;
      for (const k of KEPT_BY_BYTE[c] as typeof KEPT) {
        if (!startsWithAt(buf, pos, k.bytes)) continue;
        let from = pos + k.bytes.length;
        while (buf[from] === 32 || buf[from] === 9) from++;
        let to = eol;
        while (to > from && (buf[to - 1] === 32 || buf[to - 1] === 9 || buf[to - 1] === 13)) to--;
        p[k.key] = buf.toString("utf8", from, to);
        last = k.key;
        break;
      }
    }
    pos = eol + 1;
  }
  flush();
  return out;
}

function startsWithAt(buf: Uint8Array, pos: number, prefix: Uint8Array): boolean {
  if (pos + prefix.length > buf.length) return false;
  for (let i = 1; i < prefix.length; i++) if (buf[pos + i] !== prefix[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------------
// Resolution (pure)

export interface ResolvedKernel {
  suite: string;
  flavour: string;
  debArch: DebArch;
  /** `uname -r`, e.g. 6.1.0-56-cloud-amd64 */
  release: string;
  /** Debian version of the image package, e.g. 6.1.192-2 */
  version: string;
  imagePackage: string;
  headersPackage: string;
  /** What to extract: the image package plus its Depends that carry the release in their name. */
  packages: DebPackage[];
  /** the suites (incl. -updates/-security) whose indexes exist */
  suites: string[];
  resolvedAt: string;
  /** The suite's static busybox for the initrd (release pool first), resolved with the kernel so
   *  that a cached machine needs no index at all. */
  busybox?: DebPackage;
}

interface Relation {
  name: string;
  /** set when pinned with `(= v)` */
  exact?: string;
}

/** `a (>= 1) | b:any, c (= 2)` → [[a, b], [c]] */
export function parseDepends(depends: string): Relation[][] {
  if (!depends.trim()) return [];
  return depends.split(",").map((group) =>
    group.split("|").map((alt) => {
      const m = /^\s*([^\s:(]+)(?::\S+)?\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?/.exec(alt);
      const name = m?.[1] ?? alt.trim();
      return m?.[2] === "=" && m[3] ? { name, exact: m[3] } : { name };
    }),
  );
}

/**
 * Picks the kernel of a suite from its (suite, -updates, -security) packages. Not "the highest
 * linux-image-*": security suites also carry other kernel series (bookworm-security has 6.1 and
 * 6.12+deb12). The flavour metapackage `linux-image-<flavour>-<arch>` says which one the suite means;
 * its highest version's Depends names `linux-image-<release>`. `flavour` "" = the generic kernel.
 */
export function resolveFromIndex(
  pkgs: DebPackage[],
  suite: string,
  flavour: string,
  debArch: DebArch,
  now: Date = new Date(),
): ResolvedKernel {
  const suites = [...new Set(pkgs.map((p) => p.suite))];
  const fail = (msg: string) => new Error(`debian ${suite} ${debArch}: ${msg}`);
  const byName = new Map<string, DebPackage[]>();
  for (const p of pkgs) {
    const list = byName.get(p.name);
    if (list) list.push(p);
    else byName.set(p.name, [p]);
  }
  /** Highest version of `name`, or exactly `exact`; ties keep index order (suite before -security). */
  const pick = (name: string, exact?: string) => {
    let best: DebPackage | undefined;
    for (const p of byName.get(name) ?? []) {
      if (exact !== undefined && compareDebianVersions(p.version, exact) !== 0) continue;
      if (!best || compareDebianVersions(p.version, best.version) > 0) best = p;
    }
    return best;
  };
  const where = `in ${suites.join(", ") || suite}`;

  // An empty flavour means Debian's generic kernel: linux-image-amd64 → linux-image-<abi>-amd64.
  const suffix = flavour ? `-${flavour}-${debArch}` : `-${debArch}`;
  const metaName = `linux-image${suffix}`;
  const meta = pick(metaName);
  if (!meta) throw fail(`no package ${metaName} ${where}`);
  const image = parseDepends(meta.depends)
    .flat()
    .find((r) => r.name.startsWith("linux-image-") && r.name.endsWith(suffix) && r.name !== metaName);
  if (!image) throw fail(`${metaName} ${meta.version} does not depend on a linux-image-*${suffix}`);
  const release = image.name.slice("linux-image-".length);

  // Collect the image package and, recursively, its same-release Depends (sid splits the image
  // into linux-binary-*, linux-modules-*, linux-base-*; older suites ship one package).
  const packages: DebPackage[] = [];
  const seen = new Set<string>();
  const visit = (rel: Relation, from: string) => {
    if (seen.has(rel.name)) return;
    seen.add(rel.name);
    const p = pick(rel.name, rel.exact);
    if (!p)
      throw fail(
        `no package ${rel.name}${rel.exact ? ` (= ${rel.exact})` : ""} ${where} (needed by ${from})`,
      );
    packages.push(p);
    for (const group of parseDepends(p.depends)) {
      const alt = group.find((r) => r.name.includes(release));
      if (alt) visit(alt, p.name);
    }
  };
  visit(image, meta.name);
  const imagePkg = packages[0] as DebPackage;
  // The release pool first: security pools drop superseded files, mirrors lag (see rootfs.ts).
  const busyboxes = (byName.get("busybox-static") ?? []).sort((a, b) =>
    compareDebianVersions(b.version, a.version),
  );
  const busybox = busyboxes.find((p) => p.suite === suite) ?? busyboxes[0];

  return {
    suite,
    flavour,
    debArch,
    release,
    version: imagePkg.version,
    imagePackage: imagePkg.name,
    headersPackage: `linux-headers-${release}`,
    packages,
    suites,
    busybox,
    resolvedAt: now.toISOString(),
  };
}

// ---------------------------------------------------------------------------------------------------
// Archive client (network + disk cache)

export interface ArchiveOptions {
  mirror: string;
  securityMirror: string;
  /** The keyring that signs both mirrors' Release files; default: Debian's archive keyring. */
  keyring?: string;
  /** e.g. ~/.cache/kmatrix */
  cacheDir: string;
  /** default 86400 */
  maxAgeSec?: number;
  refresh?: boolean;
  log?: (msg: string) => void;
}

/** The archive could not be reached (as opposed to: it answered, and the answer is unusable). */
class NetworkError extends Error {
  override name = "NetworkError";
}

/**
 * A file a (cached) index names is gone from the archive: the security archive drops superseded
 * versions soon after an update, so the resolution it came from is stale (images/index.ts then
 * resolves once more, afresh).
 */
export class ArchiveFileGone extends Error {
  override name = "ArchiveFileGone";
}

/** A DebPackage as caches store it (resolutions of kernels and busybox). */
export const debPackageSchema = z.object({
  name: z.string(),
  version: z.string(),
  architecture: z.string(),
  filename: z.string(),
  size: z.number(),
  sha256: z.string(),
  depends: z.string(),
  baseUrl: z.string(),
  suite: z.string(),
});
const resolvedSchema = z.object({
  suite: z.string(),
  flavour: z.string(),
  debArch: z.enum(["amd64", "arm64"]),
  release: z.string(),
  version: z.string(),
  imagePackage: z.string(),
  headersPackage: z.string(),
  packages: z.array(debPackageSchema).min(1),
  suites: z.array(z.string()),
  busybox: debPackageSchema.optional(),
  resolvedAt: z.iso.datetime(),
});

export class DebianArchive {
  private readonly mirror: string;
  private readonly securityMirror: string;
  private readonly keyring: string;
  private readonly root: string;
  private readonly maxAgeMs: number;
  private readonly log: (msg: string) => void;

  constructor(private readonly opts: ArchiveOptions) {
    this.mirror = opts.mirror.replace(/\/+$/, "");
    this.securityMirror = opts.securityMirror.replace(/\/+$/, "");
    this.keyring = opts.keyring ?? DEBIAN_ARCHIVE_KEYRING;
    this.root = join(opts.cacheDir, "archive");
    this.maxAgeMs = (opts.maxAgeSec ?? 86_400) * 1000;
    this.log = opts.log ?? (() => {});
  }

  /** Indexes of suite + -updates + -security for the arch, each cached on disk. */
  async packages(suite: string, debArch: DebArch): Promise<DebPackage[]> {
    const sources: [string, string][] = [
      [this.mirror, suite],
      [this.mirror, `${suite}-updates`],
      [this.securityMirror, `${suite}-security`],
    ];
    // allSettled: nothing keeps fetching into the cache after this returns or throws.
    const settled = await Promise.allSettled(sources.map(([base, s]) => this.index(base, s, suite, debArch)));
    const failed = settled.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    const lists = settled.map((r) => (r.status === "fulfilled" ? r.value : undefined));
    if (!lists[0]) {
      throw new Error(`debian ${suite} ${debArch}: no index ${indexUrl(this.mirror, suite, debArch)}`);
    }
    return lists.flatMap((l) => l ?? []);
  }

  async resolveKernel(suite: string, flavour: string, debArch: DebArch): Promise<ResolvedKernel> {
    // (The keyring is part of the key: resolutions from before indexes were verified are not reused.)
    const key = createHash("sha256")
      .update(`${this.mirror}\n${this.securityMirror}\n${this.keyring}`)
      .digest("hex")
      .slice(0, 12);
    const file = join(this.root, "resolved", `${safe(suite)}_${safe(flavour)}_${debArch}_${key}.json`);
    const cached = await readResolved(file);
    // (A resolution from before busybox was part of it is stale.)
    if (cached?.busybox && !this.opts.refresh && Date.now() - Date.parse(cached.resolvedAt) < this.maxAgeMs) {
      return cached;
    }
    let pkgs: DebPackage[];
    try {
      pkgs = await this.packages(suite, debArch);
    } catch (e) {
      if (!(cached && e instanceof NetworkError)) throw e;
      this.log(`warning: ${e.message}; using the kernel resolved at ${cached.resolvedAt}: ${cached.release}`);
      return cached;
    }
    const resolved = await this.firstAvailable(pkgs, suite, flavour, debArch);
    await writeAtomic(file, `${JSON.stringify(resolved, null, 1)}\n`);
    return resolved;
  }

  /**
   * The newest kernel whose files the mirror actually serves. Indexes can name files a mirror
   * does not have (a security pool that moved on, a partial mirror); then the suite index that
   * named them is set aside and the next-newest kernel is taken from the others.
   */
  private async firstAvailable(
    pkgs: DebPackage[],
    suite: string,
    flavour: string,
    debArch: DebArch,
  ): Promise<ResolvedKernel> {
    for (;;) {
      const resolved = resolveFromIndex(pkgs, suite, flavour, debArch);
      const missing = await firstMissing(resolved.packages);
      if (!missing) return resolved;
      this.log(
        `warning: ${missing.baseUrl} lists ${basename(missing.filename)} in ${missing.suite} but does not serve it; ` +
          `taking the newest kernel of the other indexes`,
      );
      pkgs = pkgs.filter((p) => p.suite !== missing.suite);
    }
  }

  /**
   * Downloads into cacheDir/archive/debs/, verifying size and SHA256 against the (signed) index it
   * came from; returns the path. A file that does not match never enters the cache.
   */
  async download(pkg: DebPackage): Promise<string> {
    const what = `debian ${pkg.suite} ${pkg.architecture}: ${pkg.name} ${pkg.version}`;
    const dest = join(this.root, "debs", basename(pkg.filename));
    // Only verified files are ever renamed into place; re-hashing guards against later damage.
    if ((await sizeOf(dest)) === pkg.size && (await sha256File(dest)) === pkg.sha256) return dest;
    await mkdir(dirname(dest), { recursive: true });
    const url = `${pkg.baseUrl}/${pkg.filename}`;
    const res = await get(url, what);
    if (res.status === 404 || res.status === 410)
      throw new ArchiveFileGone(
        `${what}: GET ${url}: HTTP ${res.status} (the archive has moved on: resolve again with refresh)`,
      );
    if (!res.ok || !res.body) throw new Error(`${what}: GET ${url}: HTTP ${res.status}`);
    const tmp = tempName(dest);
    const hash = createHash("sha256");
    const mismatch = () =>
      new ArchiveVerificationError(`${url}: SHA256 does not match the signed Packages index of ${pkg.suite}`);
    let bytes = 0;
    let tooLong = false;
    const out = createWriteStream(tmp);
    try {
      // A web ReadableStream is async-iterable in Node 20; hash while writing, one pass.
      await pipeline(
        res.body as AsyncIterable<Uint8Array>,
        async function* (chunks: AsyncIterable<Uint8Array>) {
          for await (const chunk of chunks) {
            bytes += chunk.length;
            // Longer than signed: stop before it fills the disk.
            if (bytes > pkg.size) {
              tooLong = true;
              throw mismatch();
            }
            hash.update(chunk);
            yield chunk;
          }
        },
        out,
      );
      if (bytes !== pkg.size || hash.digest("hex") !== pkg.sha256) throw mismatch();
      await rename(tmp, dest);
    } catch (e) {
      // The file may still be opening when the download stops: removing it before the stream has
      // closed would race its creation and leave it behind.
      if (!out.closed) await new Promise<void>((closed) => out.once("close", () => closed()).destroy());
      await rm(tmp, { force: true });
      // Stopping the download can make the pipeline fail with the aborted body's error instead.
      if (e instanceof ArchiveVerificationError || tooLong) throw mismatch();
      const msg = (e as Error).message;
      throw msg.startsWith(what) ? e : new Error(`${what}: GET ${url}: ${msg}`);
    }
    this.log(`downloaded ${basename(dest)} (${(pkg.size / 1e6).toFixed(1)} MB)`);
    return dest;
  }

  /**
   * One index, cached as the .xz we downloaded and verified against the suite's signed Release (a
   * third the size of parsed JSON, and what the server said). A suite the mirror does not have
   * (sid has no -updates/-security) is cached as a `.missing` marker so a warm cache needs no
   * network. Returns undefined for a missing index.
   */
  private async index(baseUrl: string, suite: string, forSuite: string, debArch: DebArch) {
    const path = indexPath(debArch);
    const url = `${baseUrl}/dists/${suite}/${path}`;
    // (Not the `indexes/` of kmatrix versions that did not verify them: those are never read.)
    const file = join(
      this.root,
      "signed-indexes",
      safe(baseUrl.replace(/^\w+:\/\//, "")),
      `${suite}_${debArch}.Packages.xz`,
    );
    const missing = `${file}.missing`;
    const what = `debian ${forSuite} ${debArch}`;
    if (!this.opts.refresh) {
      if (this.fresh(await mtimeOf(file))) {
        try {
          return await readIndexFile(file, baseUrl, suite);
        } catch (e) {
          this.log(
            `warning: ${what}: cached ${file} is unreadable, fetching it again: ${(e as Error).message}`,
          );
        }
      } else if (this.fresh(await mtimeOf(missing))) return undefined;
    }
    const release = await this.release(baseUrl, suite, what);
    if (!release) {
      await writeAtomic(missing, "");
      await rm(file, { force: true });
      return undefined;
    }
    const want = release.sha256.get(path);
    if (!want) throw new ArchiveVerificationError(`${url}: not listed in the signed Release file`);
    if ((await sizeOf(file)) === want.size && (await sha256File(file)) === want.sha256) {
      // Unchanged since it was fetched: only the InRelease crossed the network.
      const now = new Date();
      await utimes(file, now, now);
    } else {
      const body = await this.fetchIndex(url, release, want, what);
      this.log(`fetched ${url} (${(body.length / 1e6).toFixed(1)} MB)`);
      await writeAtomic(file, body);
    }
    await rm(missing, { force: true });
    try {
      return await readIndexFile(file, baseUrl, suite);
    } catch (e) {
      await rm(file, { force: true });
      throw new Error(`${what}: cannot read index ${url}: ${(e as Error).message}`);
    }
  }

  /**
   * The suite's Release, verified: `InRelease`, else `Release` + `Release.gpg`. Undefined when
   * the mirror has no such suite (neither file exists).
   */
  private async release(baseUrl: string, suite: string, what: string): Promise<ReleaseInfo | undefined> {
    const dists = `${baseUrl}/dists/${suite}`;
    const fetchSmall = async (url: string) => {
      const res = await get(url, what);
      if (res.status === 404 || res.status === 410) return undefined;
      if (!res.ok) throw new NetworkError(`${what}: GET ${url}: HTTP ${res.status}`);
      return readBody(res, MAX_RELEASE_BYTES, what, url);
    };
    let url = `${dists}/InRelease`;
    let text: string;
    const inRelease = await fetchSmall(url);
    if (inRelease) text = await verifyRelease({ url, inRelease }, this.keyring);
    else {
      url = `${dists}/Release`;
      const release = await fetchSmall(url);
      if (!release) return undefined;
      const signature = await fetchSmall(`${url}.gpg`);
      if (!signature) throw new ArchiveVerificationError(`${url}: not signed (no InRelease, no Release.gpg)`);
      text = await verifyRelease({ url, release, signature }, this.keyring);
    }
    const info = parseRelease(text);
    // A validly signed Release of another suite (an older one, say) must not stand in for this one.
    if (info.suite !== suite && info.codename !== suite) {
      const names = [info.codename, info.suite].filter(Boolean).join(", ") || "no suite";
      throw new ArchiveVerificationError(`${url}: signed for ${names}, not ${suite}`);
    }
    // Snapshot mirrors serve Release files past Valid-Until; like the root disks' apt, accept them.
    if (info.validUntil && info.validUntil.getTime() < Date.now())
      this.log(`warning: ${url}: Valid-Until ${info.validUntil.toISOString()} has passed; using it anyway`);
    return info;
  }

  /** The index's bytes, matching the signed Release (by-hash first when the archive offers it). */
  private async fetchIndex(url: string, release: ReleaseInfo, want: ReleaseEntry, what: string) {
    // By hash, an index can never be paired with another moment's Release (a mirror or CDN mid-update).
    const byHash = `${url.slice(0, url.lastIndexOf("/"))}/by-hash/SHA256/${want.sha256}`;
    const mismatch = (from: string) =>
      new ArchiveVerificationError(`${from}: SHA256 does not match the signed Release file`);
    for (const from of release.acquireByHash ? [byHash, url] : [url]) {
      const res = await get(from, what);
      if (res.status === 404 && from !== url) continue; // by-hash files are optional for mirrors
      if (!res.ok) throw new NetworkError(`${what}: GET ${from}: HTTP ${res.status}`);
      const body = await readBody(res, want.size, what, from, () => mismatch(from));
      if (body.length !== want.size || createHash("sha256").update(body).digest("hex") !== want.sha256)
        throw mismatch(from);
      return body;
    }
    throw mismatch(url); // not reached: the last source always returns or throws
  }

  private fresh(mtimeMs: number | undefined): boolean {
    return mtimeMs !== undefined && Date.now() - mtimeMs < this.maxAgeMs;
  }
}

/** The index below dists/<suite>/, as the Release file names it. */
function indexPath(debArch: DebArch): string {
  return `main/binary-${debArch}/Packages.xz`;
}

function indexUrl(baseUrl: string, suite: string, debArch: DebArch): string {
  return `${baseUrl}/dists/${suite}/${indexPath(debArch)}`;
}

/** InRelease files are ~200 KB; anything this large is not one. */
const MAX_RELEASE_BYTES = 16 << 20;

/**
 * A response's body, at most `max` bytes (the size a signed file promised, or a sanity bound), so
 * that a hostile or broken server cannot fill memory. A transfer that breaks is a NetworkError.
 */
async function readBody(
  res: Response,
  max: number,
  what: string,
  url: string,
  tooLong: () => Error = () => new ArchiveVerificationError(`${url}: larger than ${max} bytes`),
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  try {
    for await (const chunk of (res.body ?? []) as AsyncIterable<Uint8Array>) {
      bytes += chunk.length;
      if (bytes > max) throw tooLong();
      chunks.push(Buffer.from(chunk));
    }
  } catch (e) {
    if (e instanceof ArchiveVerificationError) throw e;
    throw new NetworkError(`${what}: GET ${url}: ${(e as Error).message}`);
  }
  return Buffer.concat(chunks);
}

/** The first package whose file the mirror answers 404 for (a HEAD request each). */
async function firstMissing(pkgs: DebPackage[]): Promise<DebPackage | undefined> {
  for (const p of pkgs) {
    const res = await fetch(`${p.baseUrl}/${p.filename}`, { method: "HEAD" }).catch(() => undefined);
    if (res?.status === 404) return p;
  }
  return undefined;
}

async function get(url: string, what: string): Promise<Response> {
  try {
    return await fetch(url);
  } catch (e) {
    const cause = (e as { cause?: { message?: string } }).cause?.message;
    throw new NetworkError(`${what}: GET ${url}: ${(e as Error).message}${cause ? ` (${cause})` : ""}`);
  }
}

/**
 * Decompresses with the `xz` CLI (Node has no xz) and parses its stdout as it streams, cut at
 * paragraph boundaries: parsing overlaps decompression on another core, and the ~65 MB of text
 * never sits in memory at once.
 */
async function readIndexFile(file: string, baseUrl: string, suite: string): Promise<DebPackage[]> {
  const xz = execa("xz", ["-dc", file], { buffer: { stdout: false } });
  const out: DebPackage[] = [];
  // The pipe delivers ~9 KB chunks; parsing per ~1 MB batch keeps per-call overhead negligible.
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const parse = (final: boolean) => {
    const data = Buffer.concat(pending);
    const cut = final ? data.length : data.lastIndexOf("\n\n") + 1;
    if (cut <= 0) return;
    for (const p of parsePackagesIndex(data.subarray(0, cut), baseUrl, suite)) out.push(p);
    pending = [data.subarray(cut)];
    pendingBytes = data.length - cut;
  };
  for await (const chunk of xz.stdout as AsyncIterable<Buffer>) {
    pending.push(chunk);
    pendingBytes += chunk.length;
    if (pendingBytes >= 1 << 20) parse(false);
  }
  await xz;
  parse(true);
  return out;
}

async function readResolved(file: string): Promise<ResolvedKernel | undefined> {
  try {
    return resolvedSchema.parse(JSON.parse(await readFile(file, "utf8")));
  } catch {
    return undefined; // absent or unreadable: resolve afresh
  }
}

/** Writes via a unique temp file in the same dir + rename, so readers never see a partial file. */
async function writeAtomic(file: string, data: string | Buffer): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = tempName(file);
  try {
    await writeFile(tmp, data);
    await rename(tmp, file); // keeps the temp file's mtime (now): freshness is measured from it
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

function tempName(file: string): string {
  return `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
}

/** Keeps cache paths inside cacheDir whatever a suite or flavour string holds. */
function safe(s: string): string {
  return s.replace(/[^A-Za-z0-9.+-]/g, "_");
}

async function mtimeOf(file: string): Promise<number | undefined> {
  return stat(file).then(
    (s) => s.mtimeMs,
    () => undefined,
  );
}

async function sizeOf(file: string): Promise<number | undefined> {
  return stat(file).then(
    (s) => s.size,
    () => undefined,
  );
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(file), hash);
  return hash.digest("hex");
}
