import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ssh2 from "ssh2";
import { afterAll, describe, expect, it } from "vitest";
import { ensureKeyPair, type KeyPair } from "../../src/guest/keys.js";

const dirs: string[] = [];
async function cacheDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "kmatrix-keys-"));
  dirs.push(dir);
  return dir;
}
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** One pair, whole and usable: its private half parses and its public half matches it. */
async function expectOnePair(pairs: KeyPair[], cache: string): Promise<void> {
  const [first] = pairs;
  for (const p of pairs) expect(p).toEqual(first);
  const key = ssh2.utils.parseKey(first?.privateKey ?? "");
  if (key instanceof Error) throw key;
  expect(first?.publicKey).toBe(`ssh-ed25519 ${key.getPublicSSH().toString("base64")} kmatrix`);
  expect((await stat(join(cache, "keys"))).mode & 0o777).toBe(0o700);
  expect((await stat(join(cache, "keys", "id_ed25519"))).mode & 0o777).toBe(0o600);
  // No temporary directory or lock is left next to it.
  expect(await readdir(cache)).toEqual(["keys"]);
  expect((await readdir(join(cache, "keys"))).sort()).toEqual(["id_ed25519", "id_ed25519.pub"]);
  // And later calls return the same pair.
  expect(await ensureKeyPair(cache)).toEqual(first);
}

describe("ensureKeyPair", () => {
  it("gives concurrent callers one pair", async () => {
    const cache = join(await cacheDir(), "not-yet");
    await expectOnePair(await Promise.all(Array.from({ length: 8 }, () => ensureKeyPair(cache))), cache);
  });

  it("repairs a half-written leftover (only the .pub), also when several callers find it", async () => {
    const cache = await cacheDir();
    await mkdir(join(cache, "keys"), { mode: 0o700 });
    const stale = ssh2.utils.generateKeyPairSync("ed25519", { comment: "kmatrix" });
    await writeFile(join(cache, "keys", "id_ed25519.pub"), `${stale.public}\n`);
    const pairs = await Promise.all(Array.from({ length: 4 }, () => ensureKeyPair(cache)));
    expect(pairs[0]?.publicKey).not.toBe(stale.public);
    await expectOnePair(pairs, cache);
  });

  it("repairs a private key without its public half, and an empty key file", async () => {
    const cache = await cacheDir();
    await mkdir(join(cache, "keys"), { mode: 0o700 });
    await writeFile(join(cache, "keys", "id_ed25519"), "", { mode: 0o600 });
    await expectOnePair([await ensureKeyPair(cache)], cache);
  });
});
