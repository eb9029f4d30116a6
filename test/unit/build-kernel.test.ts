import { cp, mkdir, mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { execa } from "execa";
import { beforeAll, describe, expect, it } from "vitest";
import { parseMatrix } from "../../src/config/load.js";
import type { Arch, KernelBuildSpec } from "../../src/config/types.js";
import { buildRecipe } from "../../src/images/build/index.js";
import {
  droppedRequired,
  formatKconfig,
  mergeKconfig,
  parseKconfig,
} from "../../src/images/build/kconfig.js";
import { requiredConfig } from "../../src/images/build/required-config.js";
import { treeLocation } from "../../src/images/build/spec.js";
import { kernelTree } from "../../src/images/build/tree.js";
import { contentKey } from "../../src/images/cache.js";
import { UsageError } from "../../src/util/errors.js";

describe("kernel config merging", () => {
  const base = parseKconfig(
    [
      "CONFIG_BPF=y",
      "# CONFIG_BPF_SYSCALL is not set",
      'CONFIG_LOCALVERSION=""',
      "CONFIG_NR_CPUS=64",
      "",
    ].join("\n"),
    "base",
  );
  const required = parseKconfig("CONFIG_BPF_SYSCALL=y\nCONFIG_VIRTIO_BLK=y\n", "required");

  it("parses assignments and 'is not set', and names a line it cannot read", () => {
    expect([...base]).toEqual([
      ["CONFIG_BPF", "y"],
      ["CONFIG_BPF_SYSCALL", "n"],
      ["CONFIG_LOCALVERSION", '""'],
      ["CONFIG_NR_CPUS", "64"],
    ]);
    expect(() => parseKconfig("CONFIG_A=y\nBPF=y\n", "frag.config")).toThrow(
      "frag.config:2: not a kernel config line: BPF=y",
    );
    expect(formatKconfig(base)).toBe(
      'CONFIG_BPF=y\n# CONFIG_BPF_SYSCALL is not set\nCONFIG_LOCALVERSION=""\nCONFIG_NR_CPUS=64\n',
    );
  });

  it("applies fragments in order over the base, then the required items over everything", () => {
    const f1 = { name: "f1", config: parseKconfig("CONFIG_NR_CPUS=8\nCONFIG_KASAN=y\n", "f1") };
    const f2 = { name: "f2", config: parseKconfig("CONFIG_NR_CPUS=4\n", "f2") };
    const { config, conflicts } = mergeKconfig(base, [f1, f2], required);
    expect(config.get("CONFIG_NR_CPUS")).toBe("4");
    expect(config.get("CONFIG_KASAN")).toBe("y");
    expect(config.get("CONFIG_BPF_SYSCALL")).toBe("y");
    expect(config.get("CONFIG_VIRTIO_BLK")).toBe("y");
    // The base disagreeing with a required item is what required items are for: no conflict.
    expect(conflicts).toEqual([]);
  });

  it("keeps the required value over a conflicting fragment and reports the fragment", () => {
    const off = {
      name: "machines[0].kernel.fragments[1] (no-bpf.config)",
      config: parseKconfig("# CONFIG_BPF_SYSCALL is not set\nCONFIG_VIRTIO_BLK=m\n", "x"),
    };
    const agrees = { name: "agrees", config: parseKconfig("CONFIG_VIRTIO_BLK=y\n", "y") };
    const { config, conflicts } = mergeKconfig(base, [agrees, off], required);
    expect(config.get("CONFIG_BPF_SYSCALL")).toBe("y");
    expect(config.get("CONFIG_VIRTIO_BLK")).toBe("y");
    expect(conflicts).toEqual([
      { symbol: "CONFIG_BPF_SYSCALL", fragment: off.name, fragmentValue: "n", required: "y" },
      { symbol: "CONFIG_VIRTIO_BLK", fragment: off.name, fragmentValue: "m", required: "y" },
    ]);
  });

  it("finds the required items olddefconfig dropped or turned into modules", () => {
    const final = parseKconfig("CONFIG_BPF_SYSCALL=y\nCONFIG_VIRTIO_BLK=m\n", "final");
    expect(droppedRequired(final, required)).toEqual([
      { symbol: "CONFIG_VIRTIO_BLK", required: "y", actual: "m" },
    ]);
    expect(droppedRequired(parseKconfig("", "empty"), required).map((d) => d.actual)).toEqual(["n", "n"]);
    expect(
      droppedRequired(parseKconfig("CONFIG_BPF_SYSCALL=y\nCONFIG_VIRTIO_BLK=y\n", "ok"), required),
    ).toEqual([]);
  });

  it("requires each machine type's serial console and BTF", () => {
    expect(requiredConfig("x86_64").get("CONFIG_SERIAL_8250_CONSOLE")).toBe("y");
    expect(requiredConfig("aarch64").get("CONFIG_SERIAL_AMBA_PL011_CONSOLE")).toBe("y");
    expect(requiredConfig("aarch64").has("CONFIG_SERIAL_8250")).toBe(false);
    for (const arch of ["x86_64", "aarch64"] as const)
      expect(requiredConfig(arch).get("CONFIG_DEBUG_INFO_BTF")).toBe("y");
  });
});

describe("the built kernel's cache key", () => {
  const recipe = {
    arch: "x86_64" as Arch,
    treeDigest: "tarball:abc",
    config: "CONFIG_BPF=y\n",
    compiler: "gcc (Debian 12.2.0-14) 12.2.0",
    pahole: "v1.24",
  };
  const key = (changes: Partial<typeof recipe>) => contentKey(buildRecipe({ ...recipe, ...changes }));

  it("changes with the final config, the compiler, pahole, the tree and the arch", () => {
    const k = key({});
    expect(key({})).toBe(k);
    expect(key({ config: "CONFIG_BPF=y\nCONFIG_KASAN=y\n" })).not.toBe(k);
    expect(key({ compiler: "gcc (Debian 12.2.0-14+deb12u1) 12.2.0" })).not.toBe(k);
    expect(key({ pahole: "v1.25" })).not.toBe(k);
    expect(key({ treeDigest: "tarball:abd" })).not.toBe(k);
    expect(key({ arch: "aarch64" })).not.toBe(k);
  });

  describe("a directory tree's digest", () => {
    let a: string;
    let b: string;
    const spec = (tree: string): KernelBuildSpec => ({
      source: "build",
      tree,
      config: { target: "defconfig" },
      fragments: [],
      field: "test: machines[0].kernel",
    });
    beforeAll(async () => {
      const tmp = await mkdtemp(join(tmpdir(), "kmx-tree-"));
      a = join(tmp, "linux-a");
      for (const [rel, text] of Object.entries({
        Makefile: "VERSION = 6\n",
        Kconfig: 'mainmenu "Linux"\n',
        "arch/x86/Kconfig": "config X86\n",
        "kernel/fork.c": "/* fork */\n",
      })) {
        await mkdir(dirname(join(a, rel)), { recursive: true });
        await writeFile(join(a, rel), text);
      }
      b = join(tmp, "elsewhere", "linux-b");
      await cp(a, b, { recursive: true });
      await utimes(join(b, "kernel/fork.c"), new Date(2001, 1, 1), new Date(2001, 1, 1));
    });

    it("is the same for the same files at another path with other mtimes", async () => {
      const one = await kernelTree(spec(a), () => {});
      const two = await kernelTree(spec(b), () => {});
      expect(one.digest).toBe(two.digest);
      expect(one.dir).toBe(a);
    });

    it("is the commit's tree for a clean git work tree, wherever it is; files again once it changes", async () => {
      const repo = `${a}-git`;
      await cp(a, repo, { recursive: true });
      const git = (cwd: string, ...args: string[]) =>
        execa("git", ["-c", "user.email=k@x", "-c", "user.name=k", ...args], { cwd });
      await git(repo, "init", "-q");
      await git(repo, "add", ".");
      await git(repo, "commit", "-qm", "tree");
      const clone = `${a}-clone`;
      await execa("git", ["clone", "-q", repo, clone]);
      const one = await kernelTree(spec(repo), () => {});
      expect(one.digest).toMatch(/^git-tree:[0-9a-f]{40}$/);
      expect((await kernelTree(spec(clone), () => {})).digest).toBe(one.digest);
      await writeFile(join(clone, "kernel/new.c"), "/* untracked */\n");
      const dirty = `${a}-clone2`;
      await cp(clone, dirty, { recursive: true });
      expect((await kernelTree(spec(dirty), () => {})).digest).toMatch(/^files:/);
    });

    it("fetches git-url@ref into the cache once, as plan sources are", async () => {
      const repo = `${a}-origin`;
      await cp(a, repo, { recursive: true });
      const git = (...args: string[]) =>
        execa("git", ["-c", "user.email=k@x", "-c", "user.name=k", ...args], { cwd: repo });
      await git("init", "-q", "-b", "main");
      await git("add", ".");
      await git("commit", "-qm", "tree");
      const cache = process.env.KMATRIX_CACHE;
      process.env.KMATRIX_CACHE = await mkdtemp(join(tmpdir(), "kmx-cache-"));
      try {
        const lines: string[] = [];
        const fetched = await kernelTree(spec(`file://${repo}@main`), (l) => lines.push(l));
        expect(lines[0]).toBe(`fetching file://${repo} at main`);
        expect(fetched.dir.startsWith(join(process.env.KMATRIX_CACHE, "sources"))).toBe(true);
        expect(fetched.origin).toMatch(new RegExp(`^file://${repo}@main \\(main \\([0-9a-f]{12}\\)\\)$`));
        // The content decides, not where it came from.
        expect(fetched.digest).toBe((await kernelTree(spec(`${a}-git`), () => {})).digest);
        await expect(kernelTree(spec(`file://${repo}@nope`), () => {})).rejects.toThrow(
          /^test: machines\[0\]\.kernel\.tree: cannot fetch file:\/\/.* at nope/,
        );
      } finally {
        if (cache === undefined) delete process.env.KMATRIX_CACHE;
        else process.env.KMATRIX_CACHE = cache;
      }
    });

    it("changes with a file's content", async () => {
      const before = (await kernelTree(spec(b), () => {})).digest;
      await writeFile(join(b, "kernel/fork.c"), "/* fork, patched */\n");
      // (digests are remembered per tree for one process: a new path reads it afresh)
      const c = `${b}-copy`;
      await cp(b, c, { recursive: true });
      expect((await kernelTree(spec(c), () => {})).digest).not.toBe(before);
    });
  });
});

describe("kernel: { source: build } in the matrix file", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "kmx-build-spec-"));
    for (const rel of [
      "linux/Makefile",
      "linux/Kconfig",
      "linux/arch/x86/configs/x86_64_defconfig",
      "frag.config",
    ]) {
      await mkdir(dirname(join(dir, rel)), { recursive: true });
      await writeFile(join(dir, rel), "\n");
    }
    await writeFile(join(dir, "linux-6.1.tar.xz"), "");
  });
  const parse = (kernel: string) =>
    parseMatrix(
      `machines:\n  - { name: a, arch: x86_64, kernel: { source: debian, suite: bookworm } }\n  - { name: b, arch: x86_64, kernel: ${kernel} }\n`,
      "kmatrix.yaml",
      dir,
    );
  const fails = (kernel: string, message: string) => {
    expect(() => parse(kernel)).toThrow(UsageError);
    expect(() => parse(kernel)).toThrow(message);
  };

  it("takes a directory, a make target and fragments, with defaults and absolute paths", () => {
    const m = parse("{ source: build, tree: linux, fragments: [frag.config] }").machines[1];
    expect(m?.kernel).toEqual({
      source: "build",
      tree: join(dir, "linux"),
      config: { target: "defconfig" },
      fragments: [join(dir, "frag.config")],
      field: "kmatrix.yaml: machines[1].kernel",
    });
    expect(m?.rootfs).toEqual({ source: "debian", suite: "bookworm" });
    const t = parse("{ source: build, tree: linux-6.1.tar.xz, config: frag.config }").machines[1]?.kernel;
    expect(t).toMatchObject({
      tree: join(dir, "linux-6.1.tar.xz"),
      config: { file: join(dir, "frag.config") },
    });
    expect(
      parse("{ source: build, tree: linux, config: x86_64_defconfig }").machines[1]?.kernel,
    ).toMatchObject({
      config: { target: "x86_64_defconfig" },
    });
  });

  it("keeps git-url@ref as plan sources spell it", () => {
    const spec = "https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git@v6.1.100";
    expect(parse(`{ source: build, tree: "${spec}" }`).machines[1]?.kernel).toMatchObject({ tree: spec });
    expect(treeLocation(spec, "/")).toEqual({
      kind: "git",
      url: "https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git",
      ref: "v6.1.100",
    });
  });

  it("names the field of every bad input", () => {
    fails(
      "{ source: build, tree: nowhere }",
      "kmatrix.yaml: machines[1].kernel.tree: nowhere: no such directory",
    );
    fails(
      "{ source: build, tree: frag.config }",
      "machines[1].kernel.tree: frag.config: not a directory or tarball",
    );
    fails("{ source: build, tree: gone.tar.xz }", "machines[1].kernel.tree: gone.tar.xz: no such file");
    fails(
      "{ source: build, tree: linux, config: riscv_defconfig }",
      "machines[1].kernel.config: riscv_defconfig: no such config target for x86_64",
    );
    fails(
      "{ source: build, tree: linux, config: my/.config }",
      "machines[1].kernel.config: my/.config: no such file",
    );
    fails(
      "{ source: build, tree: linux, fragments: [frag.config, none.config] }",
      "machines[1].kernel.fragments[1]: none.config: no such file",
    );
    fails("{ source: build, tree: linux, confg: x }", "machines[1].kernel");
    fails("{ source: build }", "machines[1].kernel.tree");
  });

  it("names the field of a git tree or fragment that cannot be planned, before any fetch or build", async () => {
    const url = "https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git";
    fails(
      `{ source: build, tree: "${url}" }`,
      `kmatrix.yaml: machines[1].kernel.tree: ${url}: a git URL needs a ref: git-url@ref (a branch, tag or commit)`,
    );
    fails(`{ source: build, tree: "${url}@" }`, `machines[1].kernel.tree: ${url}@: a git URL needs a ref`);
    fails(
      '{ source: build, tree: "git@github.com:torvalds/linux.git" }',
      "machines[1].kernel.tree: git@github.com:torvalds/linux.git: a git URL needs a ref",
    );
    fails(
      `{ source: build, tree: "${url}@v6.1..v6.2" }`,
      `machines[1].kernel.tree: ${url}@v6.1..v6.2: "v6.1..v6.2" is not a git ref name (has ..)`,
    );
    fails(
      `{ source: build, tree: "${url}@main:refs/heads/x" }`,
      `machines[1].kernel.tree: ${url}@main:refs/heads/x: "main:refs/heads/x" is not a git ref name`,
    );
    fails(`{ source: build, tree: "${url}@-q" }`, "is not a git ref name (starts with -)");
    fails(
      "{ source: build, tree: 'file:///nonexistent/linux@main' }",
      "machines[1].kernel.tree: file:///nonexistent/linux@main: no such repository /nonexistent/linux",
    );
    // Tags, branches with slashes and commit ids are refs; a file:// repository that exists is taken.
    for (const ref of [
      "v6.1.100",
      "linux-6.1.y",
      "stable/linux-6.1.y",
      "0123456789abcdef0123456789abcdef01234567",
    ])
      expect(parse(`{ source: build, tree: "${url}@${ref}" }`).machines[1]?.kernel).toMatchObject({
        tree: `${url}@${ref}`,
      });
    expect(parse(`{ source: build, tree: "file://${dir}/linux@main" }`).machines[1]?.kernel).toMatchObject({
      tree: `file://${dir}/linux@main`,
    });

    await writeFile(join(dir, "bad.config"), "CONFIG_BPF=y\nBPF_JIT=y\n");
    try {
      fails(
        "{ source: build, tree: linux, fragments: [frag.config, bad.config] }",
        "kmatrix.yaml: machines[1].kernel.fragments[1]:2: not a kernel config line: BPF_JIT=y",
      );
    } finally {
      await rm(join(dir, "bad.config"));
    }
  });

  it("refuses a tree configured in place (kbuild cannot build it out of tree)", async () => {
    await writeFile(join(dir, "linux/.config"), "CONFIG_X=y\n");
    try {
      fails(
        "{ source: build, tree: linux }",
        "machines[1].kernel.tree: linux: has been configured in place (.config)",
      );
    } finally {
      await rm(join(dir, "linux/.config"));
    }
  });
});
