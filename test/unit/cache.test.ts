import { mkdtemp, readFile, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ensureKeyPair } from "../../src/guest/keys.js";
import { buildOnce, contentKey } from "../../src/images/cache.js";
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
