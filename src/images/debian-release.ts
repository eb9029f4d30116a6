/**
 * The signed half of Debian's archive chain, as apt checks it: `dists/<suite>/InRelease` (or
 * `Release` + `Release.gpg`) is verified with gpgv against an archive keyring, and only the text
 * gpgv says is signed is read. Its SHA256 table then vouches for the Packages index, whose SHA256
 * fields vouch for every .deb (debian-archive.ts).
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";

/** Debian's archive keyring (package debian-archive-keyring); it signs the security archive too. */
export const DEBIAN_ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg";

/** The archive answered, and its answer is not what its keyring vouches for: never cached, never used. */
export class ArchiveVerificationError extends Error {
  override name = "ArchiveVerificationError";
}

export interface ReleaseEntry {
  sha256: string;
  size: number;
}

/** The fields of a (verified) Release file that kmatrix uses. */
export interface ReleaseInfo {
  suite?: string;
  codename?: string;
  validUntil?: Date;
  /** `Acquire-By-Hash: yes`: indexes are also served as `<dir>/by-hash/SHA256/<sha256>`. */
  acquireByHash: boolean;
  /** path below dists/<suite>/ → its SHA256 and size */
  sha256: Map<string, ReleaseEntry>;
}

/** Parses a Release file (one deb822 paragraph); only the SHA256 table's entries are kept. */
export function parseRelease(text: string): ReleaseInfo {
  const fields = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (!line.trim()) {
      if (fields.size) break; // one paragraph
      continue;
    }
    if (line.startsWith(" ") || line.startsWith("\t")) {
      current?.push(line.trim());
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) {
      current = undefined;
      continue;
    }
    current = [];
    const value = line.slice(colon + 1).trim();
    if (value) current.push(value);
    fields.set(line.slice(0, colon).trim().toLowerCase(), current);
  }
  const field = (name: string) => fields.get(name.toLowerCase())?.join(" ") || undefined;

  const sha256 = new Map<string, ReleaseEntry>();
  for (const line of fields.get("sha256") ?? []) {
    const m = /^([0-9a-fA-F]{64})\s+(\d+)\s+(\S+)$/.exec(line);
    if (m) sha256.set(m[3] as string, { sha256: (m[1] as string).toLowerCase(), size: Number(m[2]) });
  }
  const validUntil = field("Valid-Until");
  const until = validUntil ? new Date(validUntil) : undefined;
  return {
    suite: field("Suite"),
    codename: field("Codename"),
    validUntil: until && !Number.isNaN(until.getTime()) ? until : undefined,
    acquireByHash: field("Acquire-By-Hash")?.toLowerCase() === "yes",
    sha256,
  };
}

export type SignedRelease =
  /** `dists/<suite>/InRelease`, clearsigned */
  | { url: string; inRelease: Uint8Array }
  /** `dists/<suite>/Release` and its detached `Release.gpg` */
  | { url: string; release: Uint8Array; signature: Uint8Array };

/**
 * Checks the signature with gpgv against `keyring` and returns the signed text only (for an
 * InRelease, what gpgv prints, never the file as downloaded). Like apt, it needs a good signature
 * by a key of the keyring (GOODSIG + VALIDSIG on gpgv's status output; an expired key's signature
 * is not good), rejects any bad one, and tolerates extra signatures by keys the keyring lacks
 * (Debian signs with several keys). Throws an ArchiveVerificationError naming `url`.
 */
export async function verifyRelease(input: SignedRelease, keyring: string): Promise<string> {
  const { url } = input;
  const fail = (why: string) => new ArchiveVerificationError(`${url}: ${why}`);
  if ("inRelease" in input) {
    const problem = clearsignedShape(Buffer.from(input.inRelease).toString("latin1"));
    if (problem) throw fail(problem);
  }
  const dir = await mkdtemp(join(tmpdir(), "kmatrix-gpgv-"));
  try {
    const keyringFile = await usableKeyring(keyring, dir);
    const args = ["--keyring", keyringFile, "--status-fd", "2"];
    let r: { exitCode?: number; stdout: string; stderr: string; code?: string };
    if ("inRelease" in input) {
      r = await execa("gpgv", [...args, "--output", "-"], {
        input: input.inRelease,
        reject: false,
        stripFinalNewline: false,
        env: { LC_ALL: "C" },
      });
    } else {
      const sig = join(dir, "Release.gpg");
      await writeFile(sig, input.signature);
      r = await execa("gpgv", [...args, sig, "-"], {
        input: input.release,
        reject: false,
        env: { LC_ALL: "C" },
      });
      r = { ...r, stdout: Buffer.from(input.release).toString("utf8") };
    }
    // Not started at all (no gpgv on the host): not the archive's fault.
    if (r.exitCode === undefined)
      throw new Error(`${url}: cannot check the signature: gpgv did not start (${r.code}; package gpgv)`);
    const verdict = judgeStatus(r.stderr, r.exitCode, "inRelease" in input);
    if (verdict) throw fail(`${verdict} (gpgv --keyring ${keyring})`);
    return r.stdout;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Why a downloaded InRelease is not exactly one clearsigned message, or undefined. Text outside
 * the signed part (before, after, or a second message) is what apt's parser was once fooled by.
 */
function clearsignedShape(text: string): string | undefined {
  const count = (s: string) => text.split(s).length - 1;
  const begin = "-----BEGIN PGP SIGNED MESSAGE-----";
  const end = "-----END PGP SIGNATURE-----";
  if (!text.startsWith(begin)) return "not a clearsigned InRelease file";
  if (count(begin) !== 1 || count("-----BEGIN PGP SIGNATURE-----") !== 1 || count(end) !== 1)
    return "not exactly one clearsigned message";
  if (text.slice(text.indexOf(end) + end.length).trim()) return "text after the signature";
  return undefined;
}

/** undefined when gpgv's status lines show a good signature and nothing wrong, else the reason. */
function judgeStatus(stderr: string, exitCode: number, clearsigned: boolean): string | undefined {
  const status = stderr
    .split("\n")
    .filter((l) => l.startsWith("[GNUPG:] "))
    .map((l) => l.slice(9).trim());
  const of = (kw: string) => status.filter((s) => s === kw || s.startsWith(`${kw} `));
  const bad = [...of("BADSIG"), ...of("REVKEYSIG")];
  if (bad.length) return `bad signature: ${bad.join("; ")}`;
  if (of("ERROR").length || of("FAILURE").length)
    return `gpgv failed: ${[...of("ERROR"), ...of("FAILURE")].join("; ")}`;
  if (clearsigned && of("PLAINTEXT").length !== 1) return "not exactly one signed text";
  // An expired key's or expired signature's VALIDSIG comes without a GOODSIG: it counts for nothing.
  if (!of("GOODSIG").length || !of("VALIDSIG").length) {
    const expired = [...of("EXPKEYSIG"), ...of("EXPSIG")];
    if (expired.length) return `signed by expired keys only: ${expired.join("; ")}`;
    const missing = of("NO_PUBKEY").map((s) => s.split(" ")[1]);
    if (missing.length) return `not signed by a key of the keyring (signed by ${missing.join(", ")})`;
    const said = stderr
      .split("\n")
      .filter((l) => l.startsWith("gpgv: "))
      .pop();
    return `no good signature${said ? ` (${said})` : ""}`;
  }
  // gpgv exits non-zero when one of several signatures is by a key the keyring lacks (or an expired
  // one): fine next to a good one, as long as that is all it is.
  const tolerated = of("ERRSIG").length + of("EXPKEYSIG").length + of("EXPSIG").length;
  if (exitCode !== 0 && !tolerated) return `gpgv exited with ${exitCode}`;
  return undefined;
}

/**
 * gpgv reads binary keyrings only; an ASCII-armored one (`.asc`, as custom repositories publish
 * them) is dearmored into `dir` first.
 */
async function usableKeyring(keyring: string, dir: string): Promise<string> {
  let data: Buffer;
  try {
    data = await readFile(keyring);
  } catch (e) {
    throw new ArchiveVerificationError(`archive keyring ${keyring}: ${(e as Error).message}`);
  }
  const text = data.subarray(0, 64).toString("latin1");
  if (!text.includes("-----BEGIN PGP PUBLIC KEY BLOCK-----")) return keyring;
  const blocks = [
    ...data.toString("latin1").matchAll(/-----BEGIN PGP PUBLIC KEY BLOCK-----([\s\S]*?)-----END PGP/g),
  ];
  const binary = Buffer.concat(
    blocks.map((b) => {
      const lines = (b[1] ?? "").split(/\r?\n/);
      const blank = lines.findIndex((l, i) => i > 0 && !l.trim()); // armor headers end at a blank line
      const body = lines.slice(blank + 1).filter((l) => l.trim() && !l.startsWith("="));
      return Buffer.from(body.join(""), "base64");
    }),
  );
  if (!binary.length) throw new ArchiveVerificationError(`archive keyring ${keyring}: no key in its armor`);
  const out = join(dir, "keyring.gpg");
  await writeFile(out, binary);
  return out;
}
