import { chmod, mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import lockfile from "proper-lockfile";
import ssh2 from "ssh2";

export interface KeyPair {
  privateKeyPath: string;
  privateKey: string;
  publicKey: string;
}

const PRIVATE = "id_ed25519";

/**
 * One ed25519 key pair per cache: its public half is baked into every initrd, so images never
 * carry a password. Created atomically: both halves are written into a fresh temporary directory
 * next to `keys/`, which is then renamed into place (a directory renamed onto a missing path
 * appears whole or not at all), so a crash never leaves half a pair and two kmatrix processes
 * starting together agree on one key (the loser of the rename takes the winner's). A `keys/`
 * with a half missing (left by an older kmatrix) is replaced, under a lock, so that a complete
 * pair another process may already use is never replaced.
 */
export async function ensureKeyPair(cacheDir: string): Promise<KeyPair> {
  const dir = join(cacheDir, "keys");
  const existing = await readPair(dir);
  if (existing) return existing;
  await mkdir(cacheDir, { recursive: true });
  const tmp = await mkdtemp(join(cacheDir, "keys.tmp-")); // mode 0700
  try {
    const pair = parseableKeyPair();
    await writeFile(join(tmp, PRIVATE), pair.private, { mode: 0o600 });
    await writeFile(join(tmp, `${PRIVATE}.pub`), `${pair.public}\n`, { mode: 0o644 });
    if (await renameUnlessPresent(tmp, dir)) return (await readPair(dir)) ?? fail(dir);
    const theirs = await readPair(dir);
    if (theirs) return theirs;
    return await repair(dir, tmp);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** `dir` is there but incomplete: set it aside and put the new pair in `tmp` in its place. */
async function repair(dir: string, tmp: string): Promise<KeyPair> {
  const release = await lockfile.lock(dir, {
    realpath: false,
    lockfilePath: `${dir}.lock`,
    retries: { retries: 100, minTimeout: 20, maxTimeout: 200 },
  });
  try {
    // Another process may have repaired it while this one waited for the lock.
    const raced = await readPair(dir);
    if (raced) return raced;
    const aside = `${tmp}.broken`;
    await rename(dir, aside).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOENT") throw err;
    });
    await rm(aside, { recursive: true, force: true });
    // Only a process creating the first pair (which never replaces one) can win this race.
    await renameUnlessPresent(tmp, dir);
    return (await readPair(dir)) ?? fail(dir);
  } finally {
    await release();
  }
}

/** Renames `from` to `to`; false when `to` already exists (another process's pair, or a leftover). */
async function renameUnlessPresent(from: string, to: string): Promise<boolean> {
  try {
    await rename(from, to);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST" || code === "ENOTEMPTY") return false;
    throw err;
  }
}

function fail(dir: string): never {
  throw new Error(`cannot create the SSH key pair in ${dir}`);
}

/** The pair in `dir`; undefined when either half is missing. Other errors (permissions) throw. */
async function readPair(dir: string): Promise<KeyPair | undefined> {
  const privateKeyPath = join(dir, PRIVATE);
  try {
    const [privateKey, publicKey] = await Promise.all([
      readFile(privateKeyPath, "utf8"),
      readFile(`${privateKeyPath}.pub`, "utf8"),
    ]);
    if (!privateKey.trim() || !publicKey.trim()) return undefined;
    await chmod(privateKeyPath, 0o600);
    return { privateKeyPath, privateKey, publicKey: publicKey.trim() };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw err;
  }
}

/**
 * ssh2 generates an ed25519 key its own parser rejects about once in 256 tries (mscdex/ssh2#1390):
 * cached, such a key would break every connection, so a pair is only kept once it parses.
 */
function parseableKeyPair(): { private: string; public: string } {
  for (;;) {
    const pair = ssh2.utils.generateKeyPairSync("ed25519", { comment: "kmatrix" });
    if (!(ssh2.utils.parseKey(pair.private) instanceof Error)) return pair;
  }
}
