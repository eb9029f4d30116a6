/**
 * The archive's signed chain (InRelease → Packages.xz → .deb) with real signatures made offline by
 * a throwaway key, checked by the real gpgv: src/images/debian-release.ts and the archive client
 * against a local mirror on 127.0.0.1.
 */
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { DebianArchive } from "../../src/images/debian-archive.js";
import { ArchiveVerificationError, parseRelease, verifyRelease } from "../../src/images/debian-release.js";
import {
  buildDeb,
  makeTestKey,
  releaseText,
  sha256,
  signedSuite,
  type TestKey,
  type TestPackage,
} from "../fixtures/archive/signing.js";

let key: TestKey;
let stranger: TestKey; // a key the keyring does not hold
beforeAll(async () => {
  [key, stranger] = await Promise.all([makeTestKey(), makeTestKey("someone else")]);
}, 60_000);
afterAll(async () => {
  await Promise.all([key?.dispose(), stranger?.dispose()]);
});

/** Every file below `dir`, relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const all = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  const files: string[] = [];
  for (const f of all) if ((await stat(join(dir, f))).isFile()) files.push(f);
  return files.sort();
}

/** Matches exactly `message` (a thrown error's whole message). */
const exactly = (message: string) => new RegExp(`^${message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);

/** One byte of `buf` changed at the first occurrence of `at` (which must be there). */
function tamper(buf: Buffer, at: string): Buffer {
  const i = buf.indexOf(at);
  if (i < 0) throw new Error(`"${at}" not found`);
  const out = Buffer.from(buf);
  out[i] = (out[i] as number) ^ 0x01;
  return out;
}

/**
 * `a`'s clearsigned text with the signatures of both `a` and `b`: the signature packets of both
 * armored blocks, one after the other (as `gpg -u A -u B --clearsign` makes when both sign the
 * same text).
 */
function bothSignatures(a: Buffer, b: Buffer): Buffer {
  const split = (m: Buffer) => {
    const text = m.toString();
    const at = text.indexOf("-----BEGIN PGP SIGNATURE-----");
    const armor = text.slice(at).split("\n");
    const blank = armor.findIndex((l, i) => i > 0 && !l.trim());
    const body = armor.slice(blank + 1).filter((l) => l && !l.startsWith("=") && !l.startsWith("-----"));
    return { cleartext: text.slice(0, at), packets: Buffer.from(body.join(""), "base64") };
  };
  const [x, y] = [split(a), split(b)];
  const b64 = Buffer.concat([x.packets, y.packets]).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return Buffer.from(
    `${x.cleartext}-----BEGIN PGP SIGNATURE-----\n\n${lines.join("\n")}\n-----END PGP SIGNATURE-----\n`,
  );
}

describe("parseRelease", () => {
  it("reads the SHA256 table (not MD5Sum's), Suite, Codename, Valid-Until and Acquire-By-Hash", () => {
    const text = [
      "Origin: Debian",
      "Suite: oldstable-security",
      "Codename: bookworm-security",
      "Valid-Until: Sat, 05 Dec 2026 02:53:00 UTC",
      "Acquire-By-Hash: yes",
      "MD5Sum:",
      ` ${"a".repeat(32)}   383216 main/binary-amd64/Packages.xz`,
      "SHA256:",
      ` ${"C".repeat(64)}  2559141 main/binary-amd64/Packages`,
      ` ${"b".repeat(64)}   383216 main/binary-amd64/Packages.xz`,
      ` ${"d".repeat(64)}       32 main/debian-installer/binary-amd64/Packages.xz`,
      "",
    ].join("\n");
    const r = parseRelease(text);
    expect(r.suite).toBe("oldstable-security");
    expect(r.codename).toBe("bookworm-security");
    expect(r.validUntil?.toISOString()).toBe("2026-12-05T02:53:00.000Z");
    expect(r.acquireByHash).toBe(true);
    expect(r.sha256.get("main/binary-amd64/Packages.xz")).toEqual({ sha256: "b".repeat(64), size: 383216 });
    expect(r.sha256.get("main/binary-amd64/Packages")).toEqual({ sha256: "c".repeat(64), size: 2559141 });
    expect(r.sha256.size).toBe(3);
  });

  it("has no by-hash, no expiry and an empty table when the fields are absent", () => {
    const r = parseRelease("Origin: x\nCodename: sid\n");
    expect(r).toEqual({
      suite: undefined,
      codename: "sid",
      validUntil: undefined,
      acquireByHash: false,
      sha256: new Map(),
    });
  });
});

describe("verifyRelease (gpgv)", () => {
  const url = "http://127.0.0.1:8123/debian/dists/bookworm/InRelease";
  const release = releaseText({ suite: "bookworm" }, [["main/binary-amd64/Packages.xz", Buffer.from("x")]]);

  it("returns the signed text of a good InRelease, not the file as downloaded", async () => {
    const inRelease = await key.clearsign(release);
    const text = await verifyRelease({ url, inRelease }, key.keyring);
    expect(text).toBe(release);
    expect(inRelease.toString()).toContain("-----BEGIN PGP SIGNATURE-----");
  });

  it("rejects an InRelease whose signed text changed by one byte, naming the file", async () => {
    const inRelease = tamper(await key.clearsign(release), "Codename: bookworm");
    const err = await verifyRelease({ url, inRelease }, key.keyring).catch((e: Error) => e);
    expect(err).toBeInstanceOf(ArchiveVerificationError);
    expect((err as Error).message).toMatch(
      new RegExp(
        `^${url.replace(/[.?]/g, "\\$&")}: bad signature: BADSIG [0-9A-F]{16} kmatrix test archive <test@kmatrix\\.invalid> \\(gpgv --keyring ${key.keyring}\\)$`,
      ),
    );
  });

  it("rejects a signature by a key outside the keyring", async () => {
    const inRelease = await stranger.clearsign(release);
    await expect(verifyRelease({ url, inRelease }, key.keyring)).rejects.toThrow(
      /: not signed by a key of the keyring \(signed by [0-9A-F]{16}\)/,
    );
  });

  it("accepts a good signature next to one by a key the keyring lacks (Debian signs with several)", async () => {
    // gpgv exits non-zero here; its status lines show one good signature and one unknown key.
    const inRelease = bothSignatures(await key.clearsign(release), await stranger.clearsign(release));
    expect(await verifyRelease({ url, inRelease }, key.keyring)).toBe(release);
    // ...but never a bad one, even next to a good one (both keys in the keyring this time).
    const dir = await mkdtemp(join(tmpdir(), "kmatrix-keys-"));
    try {
      const both = join(dir, "both.gpg");
      await writeFile(both, Buffer.concat([await readFile(key.keyring), await readFile(stranger.keyring)]));
      expect(await verifyRelease({ url, inRelease }, both)).toBe(release);
      const otherText = await stranger.clearsign(release.replace("bookworm", "trixie"));
      const evil = bothSignatures(await key.clearsign(release), otherText);
      await expect(verifyRelease({ url, inRelease: evil }, both)).rejects.toThrow(
        /: bad signature: BADSIG [0-9A-F]{16} someone else </,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("rejects text outside the signed message, and a file that is not clearsigned", async () => {
    const inRelease = await key.clearsign(release);
    await expect(
      verifyRelease(
        { url, inRelease: Buffer.concat([inRelease, Buffer.from("SHA256:\n evil 1 x\n")]) },
        key.keyring,
      ),
    ).rejects.toThrow(`${url}: text after the signature`);
    await expect(
      verifyRelease({ url, inRelease: Buffer.concat([Buffer.from("Suite: x\n"), inRelease]) }, key.keyring),
    ).rejects.toThrow(`${url}: not a clearsigned InRelease file`);
    await expect(
      verifyRelease({ url, inRelease: Buffer.concat([inRelease, inRelease]) }, key.keyring),
    ).rejects.toThrow(`${url}: not exactly one clearsigned message`);
    await expect(verifyRelease({ url, inRelease: Buffer.from(release) }, key.keyring)).rejects.toThrow(
      `${url}: not a clearsigned InRelease file`,
    );
  });

  it("checks Release + Release.gpg, and a tampered Release", async () => {
    const relUrl = url.replace(/InRelease$/, "Release");
    const signature = await key.detachSign(release);
    expect(await verifyRelease({ url: relUrl, release: Buffer.from(release), signature }, key.keyring)).toBe(
      release,
    );
    await expect(
      verifyRelease(
        { url: relUrl, release: tamper(Buffer.from(release), "Codename"), signature },
        key.keyring,
      ),
    ).rejects.toThrow(new RegExp(`^${relUrl.replace(/[.?]/g, "\\$&")}: bad signature: BADSIG `));
  });

  it("reads an ASCII-armored keyring, and names a keyring that is not there", async () => {
    const inRelease = await key.clearsign(release);
    expect(await verifyRelease({ url, inRelease }, key.armoredKeyring)).toBe(release);
    await expect(verifyRelease({ url, inRelease }, "/nonexistent/keyring.gpg")).rejects.toThrow(
      /^archive keyring \/nonexistent\/keyring\.gpg: ENOENT/,
    );
  });
});

describe("DebianArchive against a signed local mirror", () => {
  let server: Server;
  let base: string;
  let cacheDir: string;
  let scratch: string;
  /** URL path → body; `status` overrides the answer for a path. */
  const files = new Map<string, Buffer>();
  const status = new Map<string, number>();
  const requests: string[] = [];
  let offline = false;
  const pkgs: Record<"meta" | "image" | "busybox", TestPackage> = {} as never;

  /** The mirror's bookworm suite (and an empty bookworm-security), signed by `key`. */
  const publish = async (opts: { extraFields?: string[]; suiteField?: string; codename?: string } = {}) => {
    files.clear();
    status.clear();
    for (const p of Object.values(pkgs)) files.set(`/debian/${p.filename}`, p.data);
    const suite = await signedSuite(key, {
      suite: opts.codename ?? "bookworm",
      suiteField: opts.suiteField,
      packages: Object.values(pkgs),
      extraFields: opts.extraFields,
    });
    // A suite published under another codename is served where bookworm's files belong.
    for (const [path, body] of suite)
      files.set(`/debian/${opts.codename ? path.replace(opts.codename, "bookworm") : path}`, body);
    const security = await signedSuite(key, { suite: "bookworm-security", packages: [] });
    for (const [path, body] of security) files.set(`/debian-security/${path}`, body);
  };
  const inRelease = "/debian/dists/bookworm/InRelease";
  const packagesXz = "/debian/dists/bookworm/main/binary-amd64/Packages.xz";

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), "kmatrix-debs-"));
    const deb = async (
      name: string,
      version: string,
      pool: string,
      depends?: string,
    ): Promise<TestPackage> => {
      const data = await buildDeb(scratch, name, version);
      const file = `${name}_${version.replace(/^\d+:/, "")}_amd64.deb`;
      return { name, version, filename: `pool/main/${pool}/${file}`, data, depends };
    };
    pkgs.image = await deb("linux-image-6.1.0-99-cloud-amd64", "6.1.999-1", "l/linux-signed-amd64");
    pkgs.meta = await deb(
      "linux-image-cloud-amd64",
      "6.1.999-1",
      "l/linux-signed-amd64",
      "linux-image-6.1.0-99-cloud-amd64 (= 6.1.999-1)",
    );
    pkgs.busybox = await deb("busybox-static", "1:1.35.0-4+b3", "b/busybox");
    server = createServer((req, res) => {
      const path = req.url ?? "";
      if (offline) {
        req.socket.destroy(); // as unreachable as it gets without a dead port
        return;
      }
      if (req.method === "GET") requests.push(path);
      const body = files.get(path);
      const code = status.get(path) ?? (body ? 200 : 404);
      res.writeHead(code).end(req.method === "HEAD" || code !== 200 ? undefined : body);
    });
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }, 60_000);
  afterAll(async () => {
    await new Promise<void>((ok) => server.close(() => ok()));
    await rm(scratch, { recursive: true, force: true });
  });
  beforeEach(async () => {
    cacheDir = await mkdtemp(join(tmpdir(), "kmatrix-archive-"));
    requests.length = 0;
    offline = false;
    await publish();
    return () => rm(cacheDir, { recursive: true, force: true });
  });
  const archive = (extra: Partial<ConstructorParameters<typeof DebianArchive>[0]> = {}) =>
    new DebianArchive({
      mirror: `${base}/debian`,
      securityMirror: `${base}/debian-security`,
      keyring: key.keyring,
      cacheDir,
      ...extra,
    });
  const cached = () => filesUnder(join(cacheDir, "archive"));

  it("resolves and downloads from an untampered mirror, then resolves again without network", async () => {
    const r = await archive().resolveKernel("bookworm", "cloud", "amd64");
    expect(r.release).toBe("6.1.0-99-cloud-amd64");
    expect(r.suites).toEqual(["bookworm"]); // bookworm-security: signed, empty; -updates: absent
    expect(r.busybox?.name).toBe("busybox-static");
    for (const p of [...r.packages, r.busybox]) {
      const path = await archive().download(p as NonNullable<typeof p>);
      expect(sha256(await readFile(path))).toBe(p?.sha256);
    }
    expect((await cached()).map((f) => f.replace(/_\d+_debian/, "_PORT_debian"))).toEqual([
      "debs/busybox-static_1.35.0-4+b3_amd64.deb",
      "debs/linux-image-6.1.0-99-cloud-amd64_6.1.999-1_amd64.deb",
      expect.stringMatching(/^resolved\/bookworm_cloud_amd64_[0-9a-f]{12}\.json$/),
      "signed-indexes/127.0.0.1_PORT_debian-security/bookworm-security_amd64.Packages.xz",
      "signed-indexes/127.0.0.1_PORT_debian/bookworm-updates_amd64.Packages.xz.missing",
      "signed-indexes/127.0.0.1_PORT_debian/bookworm_amd64.Packages.xz",
    ]);

    // The cached resolution (and debs) need no network at all.
    offline = true;
    requests.length = 0;
    expect(await archive().resolveKernel("bookworm", "cloud", "amd64")).toEqual(r);
    expect(await archive().download(r.packages[0] as (typeof r.packages)[0])).toMatch(/\.deb$/);
    expect(requests).toEqual([]);
  });

  it("re-verifies on refresh, fetching only the InRelease when the index is unchanged", async () => {
    await archive().resolveKernel("bookworm", "cloud", "amd64");
    requests.length = 0;
    await archive({ refresh: true }).resolveKernel("bookworm", "cloud", "amd64");
    expect(requests.filter((u) => u.startsWith("/debian/dists/bookworm/"))).toEqual([inRelease]);
  });

  it("rejects a tampered Packages index, naming it and the mirror, and caches nothing", async () => {
    files.set(packagesXz, tamper(files.get(packagesXz) as Buffer, "7zXZ"));
    await expect(archive().resolveKernel("bookworm", "cloud", "amd64")).rejects.toThrow(
      exactly(
        `${base}/debian/dists/bookworm/main/binary-amd64/Packages.xz: SHA256 does not match the signed Release file`,
      ),
    );
    expect((await cached()).filter((f) => !f.endsWith(".missing"))).toEqual([
      expect.stringMatching(/debian-security\/bookworm-security_amd64\.Packages\.xz$/), // the untouched suite
    ]);
    expect((await cached()).some((f) => f.includes("bookworm_amd64") || f.startsWith("resolved/"))).toBe(
      false,
    );

    // A longer file is cut off at the signed size, with the same message.
    files.set(
      packagesXz,
      Buffer.concat([
        (await signedSuite(key, { suite: "bookworm", packages: Object.values(pkgs) })).get(
          "dists/bookworm/main/binary-amd64/Packages.xz",
        ) as Buffer,
        Buffer.alloc(1 << 20),
      ]),
    );
    await expect(archive().resolveKernel("bookworm", "cloud", "amd64")).rejects.toThrow(
      "Packages.xz: SHA256 does not match the signed Release file",
    );
  });

  it("rejects a tampered .deb, naming it and the mirror, and caches nothing", async () => {
    const r = await archive().resolveKernel("bookworm", "cloud", "amd64");
    const image = r.packages[0] as (typeof r.packages)[0];
    const path = `/debian/${image.filename}`;
    files.set(path, tamper(files.get(path) as Buffer, "debian-binary"));
    await expect(archive().download(image)).rejects.toThrow(
      exactly(`${base}${path}: SHA256 does not match the signed Packages index of bookworm`),
    );
    files.set(path, Buffer.concat([files.get(path) as Buffer, Buffer.from("more")]));
    await expect(archive().download(image)).rejects.toThrow(`${base}${path}: SHA256 does not match`);
    expect(await filesUnder(join(cacheDir, "archive", "debs"))).toEqual([]);
  });

  it("rejects a tampered InRelease and one signed by another key, caching nothing", async () => {
    const good = files.get(inRelease) as Buffer;
    files.set(inRelease, tamper(good, "Codename: bookworm"));
    await expect(archive().resolveKernel("bookworm", "cloud", "amd64")).rejects.toThrow(
      new RegExp(`^${base}/debian/dists/bookworm/InRelease: bad signature: BADSIG `),
    );
    await expect(
      archive({ keyring: stranger.keyring }).resolveKernel("bookworm", "cloud", "amd64"),
    ).rejects.toThrow(`${base}/debian/dists/bookworm/InRelease: not signed by a key of the keyring`);
    files.set(inRelease, good);
    await expect(
      archive({ keyring: stranger.keyring }).resolveKernel("bookworm", "cloud", "amd64"),
    ).rejects.toThrow(`${base}/debian/dists/bookworm/InRelease: not signed by a key of the keyring`);
    expect((await cached()).filter((f) => f.includes("bookworm_amd64") || f.startsWith("resolved/"))).toEqual(
      [],
    );
  });

  it("falls back to Release + Release.gpg, and rejects an unsigned Release", async () => {
    const text = await verifyRelease({ url: "x", inRelease: files.get(inRelease) as Buffer }, key.keyring);
    files.delete(inRelease);
    files.set("/debian/dists/bookworm/Release", Buffer.from(text));
    files.set("/debian/dists/bookworm/Release.gpg", await key.detachSign(text));
    expect((await archive().resolveKernel("bookworm", "cloud", "amd64")).release).toBe(
      "6.1.0-99-cloud-amd64",
    );

    files.delete("/debian/dists/bookworm/Release.gpg");
    await expect(archive({ refresh: true }).resolveKernel("bookworm", "cloud", "amd64")).rejects.toThrow(
      `${base}/debian/dists/bookworm/Release: not signed (no InRelease, no Release.gpg)`,
    );
  });

  it("rejects another suite's validly signed Release", async () => {
    await publish({ codename: "bullseye", suiteField: "oldoldstable" });
    await expect(archive().resolveKernel("bookworm", "cloud", "amd64")).rejects.toThrow(
      `${base}/debian/dists/bookworm/InRelease: signed for bullseye, oldoldstable, not bookworm`,
    );
  });

  it("accepts a Release past Valid-Until (snapshot mirrors), with a warning", async () => {
    await publish({ extraFields: ["Valid-Until: Sat, 01 Jan 2000 00:00:00 UTC"] });
    const logs: string[] = [];
    const r = await archive({ log: (m) => logs.push(m) }).resolveKernel("bookworm", "cloud", "amd64");
    expect(r.release).toBe("6.1.0-99-cloud-amd64");
    expect(logs).toContain(
      `warning: ${base}/debian/dists/bookworm/InRelease: Valid-Until 2000-01-01T00:00:00.000Z has passed; using it anyway`,
    );
  });

  it("fetches indexes by hash when the Release offers it", async () => {
    await publish({ extraFields: ["Acquire-By-Hash: yes"] });
    const xz = files.get(packagesXz) as Buffer;
    const byHash = `/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/${sha256(xz)}`;
    files.set(byHash, xz);
    files.set(packagesXz, Buffer.from("a mirror mid-update serves the next index here"));
    expect((await archive().resolveKernel("bookworm", "cloud", "amd64")).release).toBe(
      "6.1.0-99-cloud-amd64",
    );
    expect(requests).toContain(byHash);
    expect(requests).not.toContain(packagesXz);
  });
});
