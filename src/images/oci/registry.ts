/**
 * Pulling OCI images with skopeo and unpacking them with umoci. An image is cached by the digest
 * of its (platform's) manifest in `oci/<name>-<digest>/` (an OCI layout, blobs still compressed),
 * built once under the cache's lock; what a tag resolved to is remembered for a day (`--refresh`
 * asks again), and a digest reference never needs the network once its image is cached.
 * Credentials stay skopeo's business (its auth files, registries.conf): kmatrix never sees them.
 */
import { createHash } from "node:crypto";
import { lstat, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { execa } from "execa";
import type { Arch } from "../../config/types.js";
import { buildOnce, cacheRoot, contentKey } from "../cache.js";
import {
  dockerTransport,
  entryName,
  type ImageRef,
  ociArch,
  parseImageRef,
  selectPlatform,
} from "./reference.js";

/** How long a tag's resolution is trusted before the registry is asked again. */
const TAG_TTL_MS = 24 * 3600 * 1000;
/** The tag skopeo writes into the cached layout and umoci reads back. */
const LAYOUT_TAG = "kmatrix";

export interface PullOptions {
  /** false: plain HTTP or an unverified certificate (a registry on 127.0.0.1). */
  tlsVerify: boolean;
  refresh?: boolean;
  log: (line: string) => void;
}

/** An image pinned to one architecture's manifest. */
export interface ResolvedImage {
  /** As the matrix names it. */
  image: string;
  ref: ImageRef;
  arch: Arch;
  /** The digest of the architecture's image manifest: the cache key. */
  digest: string;
}

interface Resolution {
  digest: string;
  resolvedAt: string;
}

/** Where what `image` resolved to for `arch` is remembered (`oci/resolved/`). */
export function resolutionFile(image: string, arch: Arch): string {
  return join(cacheRoot(), "oci", "resolved", `${contentKey({ image, arch })}.json`);
}

/** The cache entry of an image's pulled layout: `oci/<name>-<digest's first 16 hex digits>`. */
export function pulledLayoutDir(ref: ImageRef, digest: string): string {
  return join(cacheRoot(), "oci", `${entryName(ref)}-${digest.slice(7, 23)}`);
}

/** The architecture's manifest digest of `image`: cached (a day for tags), else from the registry. */
export async function resolveImage(image: string, arch: Arch, opts: PullOptions): Promise<ResolvedImage> {
  const ref = parseImageRef(image);
  const file = resolutionFile(image, arch);
  const cached = await readFile(file, "utf8")
    .then((t) => JSON.parse(t) as Resolution)
    .catch(() => undefined);
  // A digest names its content forever; a tag may move.
  const fresh = cached && (ref.digest || Date.now() - Date.parse(cached.resolvedAt) < TAG_TTL_MS);
  if (cached && fresh && !opts.refresh) return { image, ref, arch, digest: cached.digest };
  let digest: string;
  try {
    const { stdout } = await execa("skopeo", [
      "inspect",
      "--raw",
      ...tlsFlag("--tls-verify", opts.tlsVerify),
      dockerTransport(ref),
    ]);
    const top = `sha256:${createHash("sha256").update(stdout).digest("hex")}`;
    if (ref.digest && ref.digest !== top)
      throw new Error(`${image}: the registry served another manifest (${top})`);
    digest = selectPlatform(stdout, arch, image) ?? top;
  } catch (err) {
    // Offline with an old resolution: better the image we had than none (said so).
    if (cached && !opts.refresh) {
      opts.log(
        `${image}: cannot ask the registry (${firstLine(err)}); using ${cached.digest} from ${cached.resolvedAt}`,
      );
      return { image, ref, arch, digest: cached.digest };
    }
    throw new Error(`${image}: cannot resolve for ${ociArch(arch)}: ${firstLine(err)}`);
  }
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, JSON.stringify({ digest, resolvedAt: new Date().toISOString() } satisfies Resolution));
  await rename(tmp, file);
  return { image, ref, arch, digest };
}

export interface PulledImage {
  /** The OCI layout directory (tag `kmatrix`). */
  layout: string;
  bytes: number;
  pullSeconds: number;
}

/** The cache entry of the image's layout, pulled when missing. */
export async function pullImage(img: ResolvedImage, opts: PullOptions): Promise<PulledImage> {
  const dir = pulledLayoutDir(img.ref, img.digest);
  const { manifest } = await buildOnce(dir, async (tmp) => {
    opts.log(`pulling ${img.image} (${ociArch(img.arch)}, ${img.digest})`);
    const started = Date.now();
    await execa("skopeo", [
      "copy",
      "--quiet",
      ...tlsFlag("--src-tls-verify", opts.tlsVerify),
      "--override-os",
      "linux",
      "--override-arch",
      ociArch(img.arch),
      dockerTransport(img.ref, img.digest),
      `oci:${join(tmp, "layout")}:${LAYOUT_TAG}`,
    ]);
    const pullSeconds = (Date.now() - started) / 1000;
    const bytes = await treeBytes(join(tmp, "layout"));
    opts.log(`pulled ${img.image} in ${pullSeconds.toFixed(1)} s (${(bytes / 1024 ** 2).toFixed(0)} MiB)`);
    return {
      kind: "oci",
      image: img.image,
      registry: img.ref.registry,
      repository: img.ref.repository,
      digest: img.digest,
      arch: img.arch,
      bytes,
      pullSeconds,
      builtAt: new Date().toISOString(),
    };
  });
  return { layout: join(dir, "layout"), bytes: manifest.bytes, pullSeconds: manifest.pullSeconds };
}

/**
 * Unpacks the layout's image into `into` (which must not exist) with umoci, which applies
 * whiteouts and keeps every path inside `into` (symlinks in layers cannot point a write outside).
 * As root the owners are kept (a root disk needs them); device nodes are removed afterwards: the
 * guest's /dev is a devtmpfs, and nothing in the cache should open a host device.
 */
export async function unpackImage(layout: string, into: string): Promise<number> {
  const started = Date.now();
  const rootless = process.getuid?.() !== 0;
  await execa("umoci", [
    "--log",
    "error",
    "raw",
    "unpack",
    ...(rootless ? ["--rootless"] : []),
    "--image",
    `${layout}:${LAYOUT_TAG}`,
    into,
  ]);
  await removeDeviceNodes(into);
  return (Date.now() - started) / 1000;
}

async function removeDeviceNodes(root: string): Promise<void> {
  for (const rel of await readdir(root, { recursive: true })) {
    const st = await lstat(join(root, rel)).catch(() => undefined);
    if (st && (st.isCharacterDevice() || st.isBlockDevice())) await rm(join(root, rel), { force: true });
  }
}

function tlsFlag(flag: string, verify: boolean): string[] {
  return verify ? [] : [`${flag}=false`];
}

function firstLine(err: unknown): string {
  const e = err as { stderr?: string; message?: string };
  const text = (e.stderr?.trim() || e.message || String(err)).split("\n").filter(Boolean);
  return (text[text.length - 1] ?? "").replace(/^time="[^"]*" level=\w+ msg="?/, "").replace(/"$/, "");
}

async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const rel of await readdir(dir, { recursive: true })) {
    const st = await lstat(join(dir, rel)).catch(() => undefined);
    if (st?.isFile()) total += st.size;
  }
  return total;
}
