import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { ensureKeyPair } from "../../src/guest/keys.js";
import { buildOnce, contentKey, isStaleTemp, removeStaleTemps, tempOwner } from "../../src/images/cache.js";
import { shellJoin } from "../../src/util/shell-quote.js";

describe("contentKey", () => {
  it("ignores key order and changes with any value", () => {
    expect(contentKey({ a: 1, b: [1, 2] })).toBe(contentKey({ b: [1, 2], a: 1 }));
    expect(contentKey({ a: 1, b: [1, 2] })).not.toBe(contentKey({ a: 1, b: [2, 1] }));
  });
});

describe("buildOnce", () => {
  it("builds once even when two callers race, and never exposes a half-built entry", async () => {
    const dir = join(await mkdtemp(join(tmpdir(), "kmx-cache-")), "entry");
    let builds = 0;
    const build = async (tmp: string) => {
      builds++;
      await writeFile(join(tmp, "data"), "x");
      await new Promise((r) => setTimeout(r, 200));
      return { n: builds };
    };
    const [a, b] = await Promise.all([buildOnce(dir, build), buildOnce(dir, build)]);
    expect(builds).toBe(1);
    expect(a.manifest).toEqual(b.manifest);
    expect([a.built, b.built].sort()).toEqual([false, true]);
    expect(await readFile(join(dir, "data"), "utf8")).toBe("x");
  });

  it("leaves nothing behind when the build fails", async () => {
    const dir = join(await mkdtemp(join(tmpdir(), "kmx-cache-")), "entry");
    await expect(buildOnce(dir, async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    await expect(stat(dir)).rejects.toThrow();
  });
});

describe("ensureKeyPair", () => {
  it("creates one 0600 key pair and returns the same one afterwards", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kmx-keys-"));
    const [a, b] = await Promise.all([ensureKeyPair(dir), ensureKeyPair(dir)]);
    expect(a.publicKey).toBe(b.publicKey);
    expect(a.publicKey).toMatch(/^ssh-ed25519 /);
    expect((await stat(a.privateKeyPath)).mode & 0o777).toBe(0o600);
  });
});

describe("shellJoin", () => {
  it("quotes words for the guest shell", () => {
    expect(shellJoin(["echo", "a b", "it's", "$HOME"])).toBe(`echo 'a b' 'it'\\''s' '$HOME'`);
  });
});

describe("temporary cache entries", () => {
  // Above any pid_max (2^22): never a running process.
  const dead = 99_999_999;

  it("belong to the process their name says", () => {
    expect(tempOwner("6.1.0-13-cloud-amd64-0123456789abcdef.tmp-4242")).toBe(4242);
    expect(tempOwner("0123456789abcdef.json.tmp-17")).toBe(17);
    expect(tempOwner("unpack-99-0123456789abcdef")).toBe(99);
    expect(tempOwner("6.1.0-13-cloud-amd64-0123456789abcdef")).toBeUndefined();
    expect(tempOwner("root-0123456789abcdef.lock")).toBeUndefined();
    expect(isStaleTemp(`x.tmp-${process.pid}`)).toBe(false);
    expect(isStaleTemp(`x.tmp-${dead}`)).toBe(true);
  });

  it("of processes that are gone are removed, the others and finished entries kept", async () => {
    const root = await mkdtemp(join(tmpdir(), "kmx-cache-"));
    const paths = {
      stale: `rootfs/bookworm-amd64-0123456789abcdef.tmp-${dead}`,
      staleBuild: `kernel-builds/6.1.100-0123456789abcdef.tmp-${dead}`,
      staleFile: `oci/resolved/0123456789abcdef.json.tmp-${dead}`,
      staleUnpack: `oci/unpack-${dead}-0123456789abcdef`,
      live: `kernels/6.1.0-13-cloud-amd64-0123456789abcdef.tmp-${process.pid}`,
      done: "kernels/6.1.0-13-cloud-amd64-0123456789abcdef",
    };
    for (const [what, rel] of Object.entries(paths))
      if (what === "staleFile") {
        await mkdir(join(root, dirname(rel)), { recursive: true });
        await writeFile(join(root, rel), "{}");
      } else {
        await mkdir(join(root, rel, "rootfs/usr"), { recursive: true });
        await writeFile(join(root, rel, "rootfs/usr/file"), "x");
      }
    const report = await removeStaleTemps(root);
    expect(report.left).toEqual([]);
    expect(report.removed.sort()).toEqual(
      [paths.stale, paths.staleBuild, paths.staleFile, paths.staleUnpack].map((p) => join(root, p)).sort(),
    );
    expect(existsSync(join(root, paths.live))).toBe(true);
    expect(existsSync(join(root, paths.done))).toBe(true);
  });
});
