/**
 * OCI image references (`registry/repository[:tag][@sha256:digest]`) and the choice of a
 * platform's manifest in a multi-architecture index. Pure: unit-tested without a registry.
 */
import type { Arch } from "../../config/types.js";

export interface ImageRef {
  /** `host[:port]`; Docker Hub's when the reference names none. */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

const DOCKER_HUB = "docker.io";
// The distribution spec's grammar, simplified: lowercase path components, a tag of up to 128
// word characters, a sha256 digest.
const REF_RE =
  /^(?:(?<registry>[a-zA-Z0-9.-]+(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?)\/)?(?<repository>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)(?::(?<tag>[\w][\w.-]{0,127}))?(?:@(?<digest>sha256:[0-9a-f]{64}))?$/;

/** Whether `parseImageRef` takes it (the config schema's check). */
export function isImageRef(text: string): boolean {
  try {
    parseImageRef(text);
    return true;
  } catch {
    return false;
  }
}

/** Parses a reference; a missing tag and digest means `latest`, as docker and skopeo read it. */
export function parseImageRef(text: string): ImageRef {
  const m = REF_RE.exec(text);
  if (!m?.groups) throw new Error(`${text}: not an image reference (registry/repository:tag or @sha256:…)`);
  const g = m.groups;
  let registry = g.registry;
  let repository = g.repository ?? "";
  // `library/debian` and `debian` are Docker Hub's; a first component with a dot or port is a host.
  if (registry && !/[.:[]/.test(registry) && registry !== "localhost") {
    if (!/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/.test(registry))
      throw new Error(`${text}: not an image reference (repository names are lowercase)`);
    repository = `${registry}/${repository}`;
    registry = undefined;
  }
  if (!registry) {
    registry = DOCKER_HUB;
    if (!repository.includes("/")) repository = `library/${repository}`;
  }
  const ref: ImageRef = { registry, repository };
  if (g.tag) ref.tag = g.tag;
  if (g.digest) ref.digest = g.digest;
  if (!ref.tag && !ref.digest) ref.tag = "latest";
  return ref;
}

/** The reference as skopeo's `docker://` transport takes it, pinned to `digest` when given. */
export function dockerTransport(ref: ImageRef, digest?: string): string {
  const name = `${ref.registry}/${ref.repository}`;
  if (digest) return `docker://${name}@${digest}`;
  return `docker://${name}${ref.tag ? `:${ref.tag}` : ""}${ref.digest ? `@${ref.digest}` : ""}`;
}

/** OCI's architecture names (GOARCH). */
export function ociArch(arch: Arch): "amd64" | "arm64" {
  return arch === "x86_64" ? "amd64" : "arm64";
}

const INDEX_TYPES = new Set([
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
]);

interface IndexEntry {
  digest?: string;
  mediaType?: string;
  platform?: { os?: string; architecture?: string; variant?: string };
}

/**
 * Given the raw manifest a reference resolves to: the digest of `arch`'s image manifest when it
 * is an index (a multi-architecture image), undefined when it is an image manifest itself.
 * An index without the architecture is an error that lists what it has.
 */
export function selectPlatform(raw: string, arch: Arch, shown: string): string | undefined {
  const doc = JSON.parse(raw) as { mediaType?: string; manifests?: IndexEntry[]; layers?: unknown };
  const isIndex = INDEX_TYPES.has(doc.mediaType ?? "") || (!doc.layers && Array.isArray(doc.manifests));
  if (!isIndex) return undefined;
  const want = ociArch(arch);
  const entries = (doc.manifests ?? []).filter((m) => m.platform?.os === "linux" || !m.platform?.os);
  // arm64's variant is v8 when given; an entry without a variant is the same platform.
  const hit = entries.find(
    (m) =>
      m.platform?.architecture === want &&
      (want !== "arm64" || !m.platform.variant || m.platform.variant === "v8"),
  );
  if (!hit?.digest) {
    const have = entries.map((m) => m.platform?.architecture).filter(Boolean);
    throw new Error(`${shown}: no linux/${want} image in its index (it has: ${have.join(", ") || "none"})`);
  }
  return hit.digest;
}

/** A short, path-safe name for cache entries: the repository's last component. */
export function entryName(ref: ImageRef): string {
  return (ref.repository.split("/").pop() ?? "image").replace(/[^a-z0-9._-]/g, "-");
}
