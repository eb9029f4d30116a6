import { chmod, link, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import ssh2 from "ssh2";

export interface KeyPair {
  privateKeyPath: string;
  privateKey: string;
  publicKey: string;
}

/**
 * One ed25519 key pair per cache: its public half is baked into every initrd, so images never
 * carry a password. Created atomically (written under a temporary name, then hard-linked into
 * place) so two kmatrix processes starting together agree on one key.
 */
export async function ensureKeyPair(cacheDir: string): Promise<KeyPair> {
  const dir = join(cacheDir, "keys");
  const privateKeyPath = join(dir, "id_ed25519");
  const existing = await readPair(privateKeyPath);
  if (existing) return existing;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const pair = ssh2.utils.generateKeyPairSync("ed25519", { comment: "kmatrix" });
  const tmp = `${privateKeyPath}.tmp-${process.pid}`;
  await writeFile(`${tmp}`, pair.private, { mode: 0o600 });
  await writeFile(`${tmp}.pub`, `${pair.public}\n`, { mode: 0o644 });
  try {
    await link(`${tmp}.pub`, `${privateKeyPath}.pub`);
    await link(tmp, privateKeyPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  } finally {
    await rm(tmp, { force: true });
    await rm(`${tmp}.pub`, { force: true });
  }
  const pairOnDisk = await readPair(privateKeyPath);
  if (!pairOnDisk) throw new Error(`cannot create the SSH key pair at ${privateKeyPath}`);
  return pairOnDisk;
}

async function readPair(privateKeyPath: string): Promise<KeyPair | undefined> {
  try {
    const [privateKey, publicKey] = await Promise.all([
      readFile(privateKeyPath, "utf8"),
      readFile(`${privateKeyPath}.pub`, "utf8"),
    ]);
    await chmod(privateKeyPath, 0o600);
    return { privateKeyPath, privateKey, publicKey: publicKey.trim() };
  } catch {
    return undefined;
  }
}
