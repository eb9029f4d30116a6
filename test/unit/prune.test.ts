/**
 * `kmatrix images prune` over a cache directory made here: which entries the matrix's machines
 * use (as their plans name them), and that only the others go. No network, no VM, no build.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { entriesOf, pruneCache } from "../../src/cli/images.js";
import type { Machine } from "../../src/config/types.js";
import type { ImagePlan } from "../../src/images/index.js";
import { parseImageRef } from "../../src/images/oci/reference.js";
import { pulledLayoutDir, resolutionFile } from "../../src/images/oci/registry.js";

const KERNEL_IMAGE = "127.0.0.1:5000/kmx/falco-kernel:6.1-x86_64";
const KERNEL_DIGEST = `sha256:${"a1".repeat(32)}`;
const DISK_IMAGE = "127.0.0.1:5000/kmx/root:bookworm";
const DISK_DIGEST = `sha256:${"b2".repeat(32)}`;
/** Above any pid_max: a process that is gone. */
const DEAD = 99_999_999;

type Plan = Pick<ImagePlan, "machine" | "resolved" | "kernel" | "boot" | "rootfs">;

function machine(name: string, kernel: Machine["kernel"], rootfs: Machine["rootfs"]): Machine {
  return {
    name,
    arch: "x86_64",
    id: `${name}@x86_64`,
    kernel,
    rootfs,
    packages: [],
    vm: { cpus: 2, memoryMiB: 2048, accel: "auto", bootTimeoutSec: 300, kernelArgs: [], internet: false },
  };
}

/** A plan as planImage makes it, with only what prune reads. */
function plan(root: string, m: Machine, key: string, resolved: object, diskRecipe: object = {}): Plan {
  return {
    machine: m,
    resolved: {
      recipe: {},
      release: "6.1",
      version: "6.1",
      headers: { none: true },
      resolved,
    } as Plan["resolved"],
    kernel: { dir: join(root, "kernels", `6.1-${key}`) },
    boot: { dir: join(root, "boot", `6.1-${key}`) },
    rootfs: { dir: join(root, "rootfs", `disk-${key}`), plan: { recipe: diskRecipe } },
  } as Plan;
}

describe("images prune", () => {
  let root: string;
  const cache = process.env.KMATRIX_CACHE;
  const entry = async (rel: string, manifest = true) => {
    await mkdir(join(root, rel, "data"), { recursive: true });
    if (manifest) await writeFile(join(root, rel, "manifest.json"), "{}");
  };
  const file = async (path: string) => {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, "{}");
  };
  let used: string[];
  /** Everything in the cache (two levels, oci three), relative to it. */
  const listing = async () => {
    const out: string[] = [];
    for (const top of await readdir(root))
      for (const name of await readdir(join(root, top)).catch(() => [])) {
        out.push(`${top}/${name}`);
        if (top === "oci" && (name === "resolved" || name === "kernel-facts"))
          for (const f of await readdir(join(root, top, name))) out.push(`${top}/${name}/${f}`);
      }
    return out.sort();
  };

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "kmx-prune-"));
    process.env.KMATRIX_CACHE = root;
    const oci = plan(
      root,
      machine(
        "falco",
        { source: "oci", image: KERNEL_IMAGE, tlsVerify: false },
        { source: "oci", image: DISK_IMAGE, tlsVerify: false },
      ),
      "0000000000000001",
      { source: "oci", debArch: "amd64", image: KERNEL_IMAGE, digest: KERNEL_DIGEST, layout: "falco" },
      { digest: DISK_DIGEST },
    );
    const tree = join(root, "kernel-trees", "linux-6.1-00000000000000aa", "linux-6.1");
    const built = plan(
      root,
      machine(
        "built",
        {
          source: "build",
          tree: "/src/linux-6.1.tar.xz",
          config: { target: "tinyconfig" },
          fragments: [],
          field: "x",
        },
        { source: "debian", suite: "bookworm" },
      ),
      "0000000000000002",
      {
        source: "build",
        debArch: "amd64",
        treeDir: tree,
        configDir: join(root, "kernel-configs", "x86_64-00000000000000bb"),
        buildDir: join(root, "kernel-builds", "6.1-0000000000000002"),
      },
    );
    // A local kernel whose build directory is a kernel-builds/ entry (source: local can take one).
    const local = plan(
      root,
      machine(
        "local",
        { source: "local", path: join(root, "kernel-builds", "6.1-00000000000000cc") },
        { source: "debian", suite: "bookworm" },
      ),
      "0000000000000003",
      { source: "local", debArch: "amd64" },
    );
    used = [oci, built, local].flatMap(entriesOf);

    for (const p of [oci, built, local])
      for (const d of [p.kernel.dir, p.boot.dir, p.rootfs.dir]) await entry(relative(root, d));
    await entry("kernels/6.1-00000000000000ff"); // a machine that left the matrix
    await entry("kernels/6.1-00000000000000fe", false); // no manifest: broken
    await rm(join(local.boot.dir, "manifest.json")); // in use, but broken
    await entry(`rootfs/disk-0000000000000001.tmp-${DEAD}`, false); // a killed build's
    await entry(`rootfs/disk-0000000000000009.tmp-${process.pid}`, false); // a build in progress
    await mkdir(join(root, "rootfs/disk-0000000000000001.lock"));
    await entry("kernel-builds/6.1-0000000000000002");
    await entry("kernel-builds/6.1-00000000000000cc");
    await entry("kernel-builds/6.0-00000000000000dd");
    await entry("kernel-configs/x86_64-00000000000000bb");
    await entry("kernel-configs/x86_64-00000000000000de");
    await entry("kernel-trees/linux-6.1-00000000000000aa");
    await mkdir(tree, { recursive: true });
    await entry("kernel-trees/linux-6.0-00000000000000ab");
    await entry(relative(root, pulledLayoutDir(parseImageRef(KERNEL_IMAGE), KERNEL_DIGEST)));
    await entry(relative(root, pulledLayoutDir(parseImageRef(DISK_IMAGE), DISK_DIGEST)));
    await entry(relative(root, pulledLayoutDir(parseImageRef(KERNEL_IMAGE), `sha256:${"c3".repeat(32)}`)));
    await entry(`oci/unpack-${DEAD}-${"c3".repeat(8)}`, false);
    await file(resolutionFile(KERNEL_IMAGE, "x86_64"));
    await file(resolutionFile(DISK_IMAGE, "x86_64"));
    await file(resolutionFile(KERNEL_IMAGE, "aarch64"));
    await file(join(root, "oci", "resolved", `0123456789abcdef.json.tmp-${DEAD}`));
    await file(join(root, "oci", "kernel-facts", `${KERNEL_DIGEST.slice(7)}.json`));
    await file(join(root, "oci", "kernel-facts", `${"c3".repeat(32)}.json`));
    // Not image entries: left alone.
    await entry("sources/libs-0000000000000001");
    await entry("archive/debs", false);
  });

  afterAll(() => {
    if (cache === undefined) delete process.env.KMATRIX_CACHE;
    else process.env.KMATRIX_CACHE = cache;
  });

  it("names each machine's entries where their sources make them", () => {
    const rel = used.map((p) => relative(root, p));
    expect(rel).toEqual(
      expect.arrayContaining([
        "kernels/6.1-0000000000000001",
        `oci/resolved/${relative(join(root, "oci/resolved"), resolutionFile(KERNEL_IMAGE, "x86_64"))}`,
        `oci/kernel-facts/${"a1".repeat(32)}.json`,
        `oci/falco-kernel-${"a1".repeat(8)}`,
        `oci/root-${"b2".repeat(8)}`,
        "kernel-configs/x86_64-00000000000000bb",
        "kernel-builds/6.1-0000000000000002",
        "kernel-trees/linux-6.1-00000000000000aa/linux-6.1",
        "kernel-builds/6.1-00000000000000cc",
      ]),
    );
  });

  it("removes what no machine uses, broken entries and a killed build's, and keeps the rest", async () => {
    const before = await listing();
    const log = vi.spyOn(console, "log").mockImplementation(() => {});
    try {
      await pruneCache(root, used, { dryRun: true });
      expect(await listing()).toEqual(before);
      const said = log.mock.calls.map(([line]) => String(line));
      log.mockClear();
      await pruneCache(root, used, {});
      const removed = log.mock.calls
        .map(([line]) => /^removing (\S+) \(\d+ MiB\)$/.exec(String(line))?.[1])
        .filter((p): p is string => !!p)
        .map((p) => relative(root, p));
      expect(said.filter((l) => l.startsWith("would remove ")).length).toBe(removed.length);
      expect(log.mock.calls.at(-1)?.[0]).toMatch(/^freed \d+ MiB$/);
      expect(removed.sort()).toEqual(
        [
          "kernels/6.1-00000000000000ff",
          "kernels/6.1-00000000000000fe",
          "boot/6.1-0000000000000003",
          `rootfs/disk-0000000000000001.tmp-${DEAD}`,
          "kernel-builds/6.0-00000000000000dd",
          "kernel-configs/x86_64-00000000000000de",
          "kernel-trees/linux-6.0-00000000000000ab",
          `oci/falco-kernel-${"c3".repeat(8)}`,
          `oci/unpack-${DEAD}-${"c3".repeat(8)}`,
          relative(root, resolutionFile(KERNEL_IMAGE, "aarch64")),
          `oci/resolved/0123456789abcdef.json.tmp-${DEAD}`,
          `oci/kernel-facts/${"c3".repeat(32)}.json`,
        ].sort(),
      );
      expect(await listing()).toEqual(before.filter((p) => !removed.includes(p)));
      expect(existsSync(join(root, `rootfs/disk-0000000000000009.tmp-${process.pid}`))).toBe(true);
      expect(existsSync(join(root, "sources/libs-0000000000000001"))).toBe(true);
    } finally {
      log.mockRestore();
    }
  });
});
