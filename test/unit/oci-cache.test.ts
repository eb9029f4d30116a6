import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseMatrix } from "../../src/config/load.js";
import type { Machine } from "../../src/config/types.js";
import { contentKey } from "../../src/images/cache.js";
import { ociKernelSource } from "../../src/images/oci/kernel.js";
import { resolveImage } from "../../src/images/oci/registry.js";
import { ociRootDiskSource } from "../../src/images/oci/root-disk.js";
import type { RootDiskContext } from "../../src/images/root-disk.js";
import type { SourceContext } from "../../src/images/source.js";

// Nothing listens on 127.0.0.1:1: whatever asks the registry fails at once, so a result proves
// it came from the cache.
const REG = "127.0.0.1:1";
const D1 = `sha256:${"1".repeat(64)}`;
const D2 = `sha256:${"2".repeat(64)}`;
const DAY = 24 * 3600 * 1000;

describe("OCI resolutions and keys, from the cache alone", () => {
  let cache: string;
  const saved = process.env.KMATRIX_CACHE;
  const lines: string[] = [];
  const log = (l: string) => lines.push(l);
  const resolution = async (image: string, arch: string, digest: string, ageMs: number) => {
    const dir = join(cache, "oci", "resolved");
    await mkdir(dir, { recursive: true });
    const resolvedAt = new Date(Date.now() - ageMs).toISOString();
    await writeFile(join(dir, `${contentKey({ image, arch })}.json`), JSON.stringify({ digest, resolvedAt }));
  };
  const machines = (): Machine[] =>
    parseMatrix(
      `registries: { "${REG}": { tlsVerify: false } }
machines:
  - { name: a, arch: x86_64, kernel: { source: oci, image: "${REG}/k:one" }, rootfs: { source: oci, image: "${REG}/r:one" } }
  - { name: b, arch: x86_64, kernel: { source: oci, image: "${REG}/k:two" }, rootfs: { source: oci, image: "${REG}/r:two" } }
  - { name: c, arch: aarch64, kernel: { source: oci, image: "${REG}/k:one" }, rootfs: { source: oci, image: "${REG}/r:one" } }
`,
      "k.yaml",
    ).machines;

  beforeAll(async () => {
    cache = await mkdtemp(join(tmpdir(), "kmx-oci-cache-"));
    process.env.KMATRIX_CACHE = cache;
    // Two tags of the same content, and another architecture's image behind the same tag.
    await resolution(`${REG}/k:one`, "x86_64", D1, 3600_000);
    await resolution(`${REG}/k:two`, "x86_64", D1, 3600_000);
    await resolution(`${REG}/k:one`, "aarch64", D2, 3600_000);
    await resolution(`${REG}/r:one`, "x86_64", D1, 3600_000);
    await resolution(`${REG}/r:two`, "x86_64", D1, 3600_000);
    await resolution(`${REG}/r:one`, "aarch64", D2, 3600_000);
    await mkdir(join(cache, "oci", "kernel-facts"), { recursive: true });
    for (const d of [D1, D2])
      await writeFile(
        join(cache, "oci", "kernel-facts", `${d.slice(7)}.json`),
        // (x86Entry: an x86_64 Falco kernel's facts say how it boots; older ones are read again.)
        JSON.stringify({ layout: "falco", release: "6.1.0-57-cloud-amd64", x86Entry: "pvh" }),
      );
  });
  afterAll(async () => {
    if (saved === undefined) delete process.env.KMATRIX_CACHE;
    else process.env.KMATRIX_CACHE = saved;
    await rm(cache, { recursive: true, force: true });
  });

  it("keys kernels and root disks by the architecture's digest: two tags of one image are one entry", async () => {
    const [a, b, c] = machines() as [Machine, Machine, Machine];
    const kernelOf = async (m: Machine) =>
      ociKernelSource.resolve({
        machine: m,
        debArch: m.arch === "x86_64" ? "amd64" : "arm64",
        log,
      } as SourceContext);
    const [ka, kb, kc] = await Promise.all([a, b, c].map(kernelOf));
    expect(ka?.release).toBe("6.1.0-57-cloud-amd64");
    expect(ka?.headers).toEqual({ none: true });
    expect(contentKey(ka?.recipe)).toBe(contentKey(kb?.recipe));
    expect(contentKey(ka?.recipe)).not.toBe(contentKey(kc?.recipe));

    const diskOf = async (m: Machine, kernelKey: string) =>
      ociRootDiskSource.plan({
        machine: m,
        debArch: m.arch === "x86_64" ? "amd64" : "arm64",
        kernel: ka,
        kernelKey,
        log,
      } as RootDiskContext);
    const [da, db, dOtherKernel] = await Promise.all([diskOf(a, "k1"), diskOf(b, "k1"), diskOf(a, "k2")]);
    expect(contentKey(da.recipe)).toBe(contentKey(db.recipe));
    expect(contentKey(da.recipe)).not.toBe(contentKey(dOtherKernel.recipe));
    expect(da.name).toBe("oci-r-amd64");
    expect(da.stage1).toContain("exec switch_root $R /sbin/init");
    expect(lines).toEqual([]);
  });

  it("asks the registry again after a day, uses the old digest when it cannot (and says so), never with --refresh", async () => {
    const image = `${REG}/k:old`;
    await resolution(image, "x86_64", D1, 2 * DAY);
    lines.length = 0;
    const r = await resolveImage(image, "x86_64", { tlsVerify: false, log });
    expect(r.digest).toBe(D1);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^${image}: cannot ask the registry \\(.+\\); using ${D1} from `));
    await expect(resolveImage(image, "x86_64", { tlsVerify: false, refresh: true, log })).rejects.toThrow(
      new RegExp(`^${image}: cannot resolve for amd64: `),
    );
  });

  it("never asks again for a digest reference", async () => {
    const image = `${REG}/k@${D2}`;
    await resolution(image, "x86_64", D1, 100 * DAY);
    lines.length = 0;
    expect((await resolveImage(image, "x86_64", { tlsVerify: false, log })).digest).toBe(D1);
    expect(lines).toEqual([]);
  });
});
