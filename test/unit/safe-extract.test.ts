import { execFileSync } from "node:child_process";
import type { Stats } from "node:fs";
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import * as tar from "tar";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { copyOutOfUpper } from "../../src/guest/container.js";
import { listFiles, safeExtract } from "../../src/util/safe-extract.js";

/** One raw tar entry: node-tar's Header writes exactly what a hostile guest's tar could send. */
interface RawEntry {
  path: string;
  type?: tar.types.EntryTypeName;
  mode?: number;
  uid?: number;
  gid?: number;
  linkpath?: string;
  body?: string;
}

/** A hostile archive: owned by someone else (uid/gid 4242) unless an entry says otherwise. */
function archive(entries: RawEntry[]): Readable {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? "");
    const block = Buffer.alloc(512);
    new tar.Header({
      path: e.path,
      type: e.type ?? "File",
      mode: e.mode ?? 0o644,
      uid: e.uid ?? 4242,
      gid: e.gid ?? 4242,
      size: body.length,
      linkpath: e.linkpath,
      mtime: new Date(0),
    }).encode(block, 0);
    blocks.push(block);
    if (body.length > 0) blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Readable.from([Buffer.concat(blocks)]);
}

/** Everything under `dir` (relative path → lstat), symbolic links not followed. */
async function snapshot(dir: string, prefix = ""): Promise<Map<string, Stats>> {
  const out = new Map<string, Stats>();
  for (const name of await readdir(join(dir, prefix))) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const st = await lstat(join(dir, rel));
    out.set(rel, st);
    if (st.isDirectory()) for (const [k, v] of await snapshot(dir, rel)) out.set(k, v);
  }
  return out;
}

/** Owned by this process, no setuid/setgid/sticky bit, no group/other write, nothing special. */
async function expectSafe(dir: string): Promise<void> {
  for (const [path, st] of await snapshot(dir)) {
    expect.soft(st.isFile() || st.isDirectory() || st.isSymbolicLink(), `${path} is a plain type`).toBe(true);
    if (st.isSymbolicLink()) continue;
    expect.soft(st.uid, `${path} uid`).toBe(process.getuid?.());
    expect.soft(st.gid, `${path} gid`).toBe(process.getgid?.());
    expect.soft(st.mode & 0o7022, `${path} mode ${(st.mode & 0o7777).toString(8)}`).toBe(0);
  }
}

let base: string;
/** The extraction directory: base/target. */
let target: string;
/** A sibling of the target that nothing may write to: base/sentinel. */
let sentinel: string;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), "kmx-safe-extract-"));
  target = join(base, "target");
  sentinel = join(base, "sentinel");
  await mkdir(target);
  await mkdir(sentinel);
  await writeFile(join(sentinel, "passwd"), "root:x:0:0\n");
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

/** The sentinel holds exactly its one file, untouched. */
async function expectSentinelUntouched(): Promise<void> {
  expect([...(await snapshot(sentinel)).keys()]).toEqual(["passwd"]);
  expect(await readFile(join(sentinel, "passwd"), "utf8")).toBe("root:x:0:0\n");
}

describe("safeExtract", () => {
  it("runs as root here, so owners would otherwise be kept", () => {
    // Without root every owner test below would pass trivially.
    expect(process.getuid?.()).toBe(0);
  });

  it("keeps good files with safe modes and its own owner, and refuses every hostile entry", async () => {
    const hostile: RawEntry[] = [
      { path: "b/", type: "Directory", mode: 0o1777 },
      { path: "b/tool", mode: 0o775, body: "#!/bin/sh\n" },
      { path: "b/data.txt", mode: 0o666, body: "data\n" },
      { path: "b/lib/", type: "Directory", mode: 0o2777 },
      { path: "b/lib/libfoo.so.1", mode: 0o755, body: "ELF" },
      { path: "b/lib/libfoo.so", type: "SymbolicLink", linkpath: "libfoo.so.1" },
      { path: "b/lib/tool-again", type: "Link", linkpath: "b/tool" },
      // a setuid-root shell, and a setgid one owned by root's group
      { path: "b/su", mode: 0o4755, uid: 0, gid: 0, body: "setuid\n" },
      { path: "b/sg", mode: 0o2711, uid: 0, gid: 0, body: "setgid\n" },
      // special files
      { path: "b/mem", type: "CharacterDevice", mode: 0o666 },
      { path: "b/sda", type: "BlockDevice", mode: 0o666 },
      { path: "b/fifo", type: "FIFO", mode: 0o666 },
      // links out
      { path: "b/passwd", type: "SymbolicLink", linkpath: "/etc/passwd" },
      { path: "b/up", type: "SymbolicLink", linkpath: "../.." },
      { path: "b/sibling", type: "SymbolicLink", linkpath: "../other" },
      { path: "b/shadow", type: "Link", linkpath: "/etc/shadow" },
      { path: "b/sentinel-hard", type: "Link", linkpath: join(sentinel, "passwd") },
      { path: "b/dotdot-hard", type: "Link", linkpath: "b/../../sentinel/passwd" },
      // paths out
      { path: "../escape", body: "escaped\n" },
      { path: "b/../../sentinel/escape", body: "escaped\n" },
      { path: join(sentinel, "absolute"), body: "escaped\n" },
      { path: "other/file", body: "not in the tree\n" },
    ];
    const { refused } = await safeExtract(archive(hostile), target, { tree: "b" });

    const why = new Map(refused.map((r) => [r.path, r.why]));
    expect(why).toEqual(
      new Map([
        ["b/mem", "character device not allowed"],
        ["b/sda", "block device not allowed"],
        ["b/fifo", "FIFO not allowed"],
        ["b/passwd", "symbolic link to an absolute path (/etc/passwd)"],
        ["b/up", "symbolic link out of the copied tree (../..)"],
        ["b/sibling", "symbolic link out of the copied tree (../other)"],
        ["b/shadow", "hard link to an absolute path (/etc/shadow)"],
        ["b/sentinel-hard", `hard link to an absolute path (${join(sentinel, "passwd")})`],
        ["b/dotdot-hard", "hard link with '..' (b/../../sentinel/passwd)"],
        ["../escape", "path contains '..'"],
        ["b/../../sentinel/escape", "path contains '..'"],
        [join(sentinel, "absolute"), "absolute path"],
        ["other/file", "outside the copied tree"],
      ]),
    );
    expect(refused).toHaveLength(why.size);

    const got = await snapshot(target);
    expect([...got.keys()].sort()).toEqual([
      "b",
      "b/data.txt",
      "b/lib",
      "b/lib/libfoo.so",
      "b/lib/libfoo.so.1",
      "b/lib/tool-again",
      "b/sg",
      "b/su",
      "b/tool",
    ]);
    const mode = (p: string) => (got.get(p)?.mode ?? 0) & 0o7777;
    expect(mode("b")).toBe(0o755);
    expect(mode("b/lib")).toBe(0o755);
    expect(mode("b/tool")).toBe(0o755);
    expect(mode("b/data.txt")).toBe(0o644);
    expect(mode("b/su")).toBe(0o755);
    expect(mode("b/sg")).toBe(0o755);
    expect(mode("b/lib/libfoo.so.1")).toBe(0o755);
    expect(got.get("b/lib/tool-again")?.ino).toBe(got.get("b/tool")?.ino);
    expect(await readlink(join(target, "b/lib/libfoo.so"))).toBe("libfoo.so.1");
    expect(await readFile(join(target, "b/su"), "utf8")).toBe("setuid\n");
    await expectSafe(target);
    await expectSentinelUntouched();
    expect(await readdir(base)).toEqual(["sentinel", "target"]);
    expect(await listFiles(join(target, "b"))).toEqual([
      "data.txt",
      "lib/libfoo.so.1",
      "lib/tool-again",
      "sg",
      "su",
      "tool",
    ]);
  });

  it("never writes through a symbolic link, inside the tree or not", async () => {
    // A link the archive made (inside the tree, so kept) and one already in the target (out of it).
    await mkdir(join(target, "b"));
    await symlink(sentinel, join(target, "b/planted"));
    const { refused } = await safeExtract(
      archive([
        { path: "b/sub/", type: "Directory" },
        { path: "b/via", type: "SymbolicLink", linkpath: "sub" },
        { path: "b/via/through", body: "written through a link\n" },
        { path: "b/planted/pwned", body: "pwned\n" },
        { path: "b/planted/deeper/pwned", body: "pwned\n" },
      ]),
      target,
      { tree: "b" },
    );
    expect(refused.map((r) => r.path).sort()).toEqual([
      "b/planted", // the planted link itself: the final check removes it
      "b/planted/deeper/pwned",
      "b/planted/pwned",
      "b/via/through",
    ]);
    expect(refused.find((r) => r.path === "b/via/through")?.why).toMatch(/TAR_SYMLINK_ERROR/);
    expect(await readdir(join(target, "b/sub"))).toEqual([]);
    await expectSentinelUntouched();
    await expectSafe(target);
  });

  it("a refused link does not open the way for a later entry", async () => {
    const { refused } = await safeExtract(
      archive([
        { path: "b/out", type: "SymbolicLink", linkpath: sentinel },
        { path: "b/out/pwned", body: "pwned\n" },
      ]),
      target,
      { tree: "b" },
    );
    expect(refused.map((r) => r.path)).toEqual(["b/out"]);
    // The file landed in a plain directory of the tree, not in the sentinel.
    expect((await lstat(join(target, "b/out"))).isDirectory()).toBe(true);
    expect(await readFile(join(target, "b/out/pwned"), "utf8")).toBe("pwned\n");
    await expectSentinelUntouched();
  });

  it("removes links that only escape through other links of the tree", async () => {
    // Each target stays inside when read as text. node-tar refuses a link whose target passes
    // through a link that already exists (loop2, late); one made before the link it passes
    // through (z, made before a/q) is caught by the check after extraction: z is target/.. = base.
    const { refused } = await safeExtract(
      archive([
        { path: "a/", type: "Directory" },
        { path: "z", type: "SymbolicLink", linkpath: "a/q/.." },
        { path: "fine", type: "SymbolicLink", linkpath: "a/q/a" },
        { path: "a/q", type: "SymbolicLink", linkpath: ".." },
        { path: "loop1", type: "SymbolicLink", linkpath: "loop2" },
        { path: "loop2", type: "SymbolicLink", linkpath: "loop1" },
        { path: "late", type: "SymbolicLink", linkpath: "a/q/a" },
        { path: "dangling", type: "SymbolicLink", linkpath: "a/nothing" },
      ]),
      target,
    );
    expect(new Map(refused.map((r) => [r.path, r.why]))).toEqual(
      new Map([
        ["loop2", "TAR_SYMLINK_ERROR: Cannot extract through symbolic link"],
        ["late", "TAR_SYMLINK_ERROR: Cannot extract through symbolic link"],
        ["z", "symbolic link out of the copied tree (a/q/..)"],
      ]),
    );
    expect([...(await snapshot(target)).keys()].sort()).toEqual(["a", "a/q", "dangling", "fine", "loop1"]);
    await expectSentinelUntouched();
  });

  it("refuses a top-level symbolic link as the tree itself", async () => {
    const { refused } = await safeExtract(
      archive([{ path: "b", type: "SymbolicLink", linkpath: "/" }]),
      target,
      {
        tree: "b",
      },
    );
    expect(refused).toEqual([{ path: "b", why: "symbolic link to an absolute path (/)" }]);
    expect(await readdir(target)).toEqual([]);
    const self = await safeExtract(archive([{ path: "b", type: "SymbolicLink", linkpath: "b" }]), target, {
      tree: "b",
    });
    expect(self.refused).toEqual([{ path: "b", why: "symbolic link out of the copied tree (b)" }]);
    expect(await readdir(target)).toEqual([]);
  });

  it("fixes what was already there: owners and modes of the tree", async () => {
    await mkdir(join(target, "b"));
    await writeFile(join(target, "b/old"), "old\n");
    await chmod(join(target, "b/old"), 0o4777);
    execFileSync("chown", ["4242:4242", join(target, "b/old")]);
    await safeExtract(archive([{ path: "b/old", mode: 0o644, body: "new\n" }]), target, { tree: "b" });
    expect(await readFile(join(target, "b/old"), "utf8")).toBe("new\n");
    await expectSafe(target);
  });

  it("throws on a truncated archive", async () => {
    const whole = Buffer.concat(await archive([{ path: "b/f", body: "x".repeat(2000) }]).toArray());
    await expect(
      safeExtract(Readable.from([whole.subarray(0, 1024)]), target, { tree: "b" }),
    ).rejects.toThrow(/TAR_BAD_ARCHIVE|Truncated/);
  });
});

describe("copyOutOfUpper (a builder container's copyOut)", () => {
  let upper: string;
  let dest: string;
  beforeEach(async () => {
    upper = join(base, "upper");
    dest = join(base, "dest");
    await mkdir(join(upper, "kmatrix/out"), { recursive: true });
    await mkdir(dest);
  });

  it("refuses a source that is a symbolic link (to the host's /)", async () => {
    await symlink("/", join(upper, "kmatrix/out/b"));
    const { refused } = await copyOutOfUpper(upper, "/kmatrix/out/b", dest);
    expect(refused).toEqual([
      { path: "/kmatrix/out/b", why: "/kmatrix/out/b is a symbolic link in the container (not followed)" },
    ]);
    expect(await readdir(dest)).toEqual([]);
  });

  it("refuses a source below a symbolic link (a host directory)", async () => {
    await rm(join(upper, "kmatrix/out"), { recursive: true });
    await mkdir(join(sentinel, "b"));
    await writeFile(join(sentinel, "b/host-secret"), "secret\n");
    await symlink(sentinel, join(upper, "kmatrix/out"));
    const { refused } = await copyOutOfUpper(upper, "/kmatrix/out/b", dest);
    expect(refused).toEqual([
      { path: "/kmatrix/out/b", why: "/kmatrix/out is a symbolic link in the container (not followed)" },
    ]);
    expect(await readdir(dest)).toEqual([]);
  });

  it("copies a tree, leaving out special files and links out, and dropping setuid", async () => {
    const out = join(upper, "kmatrix/out/b");
    await mkdir(join(out, "sub"), { recursive: true });
    await writeFile(join(out, "sub/probe.o"), "ELF");
    await writeFile(join(out, "su"), "setuid\n");
    await chmod(join(out, "su"), 0o4755);
    execFileSync("mkfifo", [join(out, "fifo")]);
    await symlink("/etc/passwd", join(out, "passwd"));
    await symlink("sub/probe.o", join(out, "probe.o"));
    const { refused } = await copyOutOfUpper(upper, "/kmatrix/out/b", dest);
    expect(refused).toEqual([
      { path: "b/fifo", why: "FIFO not allowed" },
      { path: "b/passwd", why: "symbolic link to an absolute path (/etc/passwd)" },
    ]);
    expect(await listFiles(join(dest, "b"))).toEqual(["su", "sub/probe.o"]);
    expect(await readlink(join(dest, "b/probe.o"))).toBe("sub/probe.o");
    expect((await lstat(join(dest, "b/su"))).mode & 0o7777).toBe(0o755);
    await expectSafe(dest);
  });

  it("throws when the source does not exist", async () => {
    await expect(copyOutOfUpper(upper, "/kmatrix/out/missing", dest)).rejects.toThrow(/ENOENT/);
  });
});
