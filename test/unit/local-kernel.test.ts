import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Machine } from "../../src/config/types.js";
import { pickBusybox } from "../../src/images/busybox.js";
import { contentKey } from "../../src/images/cache.js";
import type { DebianArchive, DebPackage } from "../../src/images/debian-archive.js";
import { copyBuildTree, readBuildDir } from "../../src/images/local/build-dir.js";
import { localKernelSource } from "../../src/images/local/index.js";
import { UsageError } from "../../src/util/errors.js";

/** A kernel build directory in miniature: what kmatrix reads, plus what it must leave behind. */
const TREE: Record<string, string> = {
  "include/config/kernel.release": "6.18.0-rc1-kmx\n",
  "include/generated/autoconf.h": "#define CONFIG_X 1\n",
  "include/linux/module.h": "/* header */\n",
  "arch/x86/boot/bzImage": "image v1",
  "arch/x86/Makefile": "# arch makefile\n",
  "arch/x86/include/asm/a.h": "/* asm */\n",
  "arch/x86/include/generated/asm/b.h": "/* generated */\n",
  "arch/x86/kernel/setup.c": "/* source */\n",
  "arch/x86/kernel/setup.o": "object",
  "arch/arm64/include/asm/c.h": "/* other arch */\n",
  ".config": "CONFIG_X=y\n",
  "Module.symvers": "0x1\tsym\tvmlinux\tEXPORT_SYMBOL\t\n",
  Makefile: "# top makefile\n",
  "scripts/basic/fixdep": "#!fixdep\n",
  "scripts/Makefile.modfinal": "# modfinal\n",
  "scripts/mod/modpost.o": "object",
  "scripts/mod/.modpost.o.cmd": "cmd",
  "tools/objtool/objtool": "#!objtool\n",
  "tools/objtool/check.c": "/* source */\n",
  // modules.order lists objects since Linux 6.3; the .ko next to each is the module.
  "modules.order": "drivers/block/virtio_blk.o\nfs/ext4/ext4.o\n",
  "modules.builtin": "kernel/drivers/virtio/virtio.ko\n",
  "drivers/block/virtio_blk.ko": "ko 1",
  "drivers/block/virtio_blk.o": "object",
  "fs/ext4/ext4.ko": "ko 2",
  "drivers/unlisted.ko": "not in modules.order",
  ".git/HEAD": "ref: refs/heads/master\n",
};

async function writeTree(dir: string, files: Record<string, string>): Promise<void> {
  for (const [rel, text] of Object.entries(files)) {
    await mkdir(dirname(join(dir, rel)), { recursive: true });
    await writeFile(join(dir, rel), text);
  }
}

const machine = (path: string, arch: Machine["arch"] = "x86_64"): Machine => ({
  name: "mine",
  arch,
  id: `mine@${arch}`,
  kernel: { source: "local", path },
  rootfs: { source: "debian", suite: "bookworm" },
  packages: [],
  vm: { cpus: 1, memoryMiB: 512, accel: "tcg", bootTimeoutSec: 60, kernelArgs: [], internet: false },
});
const resolve = (path: string, arch: Machine["arch"] = "x86_64") =>
  localKernelSource.resolve({
    machine: machine(path, arch),
    debArch: arch === "x86_64" ? "amd64" : "arm64",
    archive: {} as DebianArchive,
    log: () => {},
  });
const keyOf = async (path: string) => contentKey((await resolve(path)).recipe);

describe("kernel source local", () => {
  let root: string;
  let tree: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "kmx-local-unit-"));
    tree = join(root, "linux");
    await writeTree(tree, TREE);
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  it("resolves the release, the modules of modules.order, headers as a tree", async () => {
    const r = await resolve(tree);
    expect(r.release).toBe("6.18.0-rc1-kmx");
    expect(r.version).toBe("6.18.0-rc1-kmx");
    expect(r.headers).toEqual({ tree: true });
    expect(r.suites).toBeUndefined();
    expect(r.resolved).toMatchObject({ source: "local", debArch: "amd64", path: tree, modules: 2 });
    expect(r.recipe).toMatchObject({ v: 1, source: "local", arch: "x86_64", release: "6.18.0-rc1-kmx" });
    expect(Object.keys((r.recipe as { files: object }).files).sort()).toEqual([
      "builtin",
      "config",
      "image",
      "modules",
      "symvers",
    ]);
    const b = await readBuildDir(tree, "x86_64", "f");
    expect(b.modules).toEqual(["drivers/block/virtio_blk.ko", "fs/ext4/ext4.ko"]);
  });

  it("keys by content: same files same key (elsewhere, or only touched), a rebuilt part a new key", async () => {
    const key = await keyOf(tree);
    const copy = join(root, "copy");
    await cp(tree, copy, { recursive: true });
    expect(await keyOf(copy)).toBe(key);
    await utimes(join(copy, ".config"), new Date(), new Date(2030, 1, 1));
    expect(await keyOf(copy)).toBe(key);
    const seen = new Set([key]);
    for (const [file, text] of [
      [".config", "CONFIG_X=m\n"],
      ["arch/x86/boot/bzImage", "image v2"],
      ["Module.symvers", "0x2\tsym\tvmlinux\tEXPORT_SYMBOL\t\n"],
      ["fs/ext4/ext4.ko", "ko 2, rebuilt"],
      ["modules.builtin", ""],
    ] as const) {
      await writeFile(join(copy, file), text);
      const next = await keyOf(copy);
      expect(seen.has(next), file).toBe(false);
      seen.add(next);
    }
    // A module that is not the build's (not in modules.order) is no part of the kernel.
    await writeFile(join(copy, "drivers/unlisted.ko"), "changed");
    expect(seen.has(await keyOf(copy))).toBe(true);
  });

  it("refuses a tree without a release or an image for the machine's architecture, naming the field", async () => {
    await expect(resolve(tree, "aarch64")).rejects.toThrow(UsageError);
    await expect(resolve(tree, "aarch64")).rejects.toThrow(
      `mine@aarch64: kernel.path: ${tree}: no arch/arm64/boot/Image, the kernel image for aarch64`,
    );
    const bare = join(root, "bare");
    await mkdir(bare);
    await expect(resolve(bare)).rejects.toThrow(
      `mine@x86_64: kernel.path: ${bare}: no include/config/kernel.release`,
    );
  });

  it("copies what out-of-tree builds need: no objects, modules, sources, other arches or .git", async () => {
    const out = join(root, "build-copy");
    await copyBuildTree(tree, "x86_64", out);
    const files = (await readdir(out, { recursive: true, withFileTypes: true }))
      .filter((d) => d.isFile())
      .map((d) => join(d.parentPath, d.name).slice(out.length + 1))
      .sort();
    expect(files).toEqual([
      ".config",
      "Makefile",
      "Module.symvers",
      "arch/x86/Makefile",
      "arch/x86/include/asm/a.h",
      "arch/x86/include/generated/asm/b.h",
      "include/config/kernel.release",
      "include/generated/autoconf.h",
      "include/linux/module.h",
      "scripts/Makefile.modfinal",
      "scripts/basic/fixdep",
      "tools/objtool/objtool",
    ]);
  });

  it("takes an O= build directory's source tree through its `source` link", async () => {
    const src = join(root, "src");
    const obj = join(root, "obj");
    await writeTree(src, { Makefile: "# real\n", "include/linux/x.h": "x", "arch/x86/Makefile": "#" });
    await writeTree(obj, { Makefile: "# wrapper\n", ".config": "C", "include/generated/g.h": "g" });
    const { symlink } = await import("node:fs/promises");
    await symlink(src, join(obj, "source"));
    const out = join(root, "obj-copy");
    await copyBuildTree(obj, "x86_64", out);
    expect(await readFile(join(out, "Makefile"), "utf8")).toBe("# wrapper\n");
    for (const f of ["include/linux/x.h", "include/generated/g.h", "arch/x86/Makefile", ".config"])
      expect(existsSync(join(out, f)), f).toBe(true);
  });

  it("keeps the source tree's Makefile over the one kbuild generates in an O= directory", async () => {
    // The generated one only includes the source tree's by its absolute path, absent in a machine.
    const src = join(root, "src2");
    const obj = join(root, "obj2");
    await writeTree(src, { Makefile: "# real\nVERSION = 6\n", "include/linux/x.h": "x" });
    await writeTree(obj, {
      Makefile: `# Automatically generated by ${src}/Makefile: don't edit\ninclude ${src}/Makefile\n`,
      ".config": "C",
    });
    const { symlink } = await import("node:fs/promises");
    await symlink(src, join(obj, "source"));
    const out = join(root, "obj2-copy");
    await copyBuildTree(obj, "x86_64", out);
    expect(await readFile(join(out, "Makefile"), "utf8")).toBe("# real\nVERSION = 6\n");
  });
});

describe("pickBusybox", () => {
  const pkg = (version: string, suite: string) => ({ name: "busybox-static", version, suite }) as DebPackage;
  it("takes the suite's own pool first, then the highest version", () => {
    const own = pkg("1:1.35.0-4", "bookworm");
    const sec = pkg("1:1.35.0-4+deb12u1", "bookworm-security");
    expect(pickBusybox([sec, own, { ...own, name: "busybox" }], "bookworm")).toBe(own);
    expect(pickBusybox([sec], "bookworm")).toBe(sec);
    expect(pickBusybox([], "bookworm")).toBeUndefined();
  });
});
