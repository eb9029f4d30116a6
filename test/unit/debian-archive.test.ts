import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  ArchiveFileGone,
  compareDebianVersions,
  DebianArchive,
  type DebPackage,
  debArchOf,
  parseDepends,
  parsePackagesIndex,
  resolveFromIndex,
} from "../../src/images/debian-archive.js";
import { makeTestKey, signedSuite, type TestKey } from "../fixtures/archive/signing.js";

const FIXTURES = join(import.meta.dirname, "fixtures", "debian-archive");
const fixture = (name: string) => readFileSync(join(FIXTURES, `${name}.Packages`), "utf8");
const index = (suite: string, base = "http://mirror/debian") =>
  parsePackagesIndex(fixture(suite), base, suite);

describe("compareDebianVersions", () => {
  it.each([
    ["6.1.192-2", "6.1.176-1", 1],
    ["1.0~rc1", "1.0", -1],
    ["2:1.0", "1.9", 1],
    ["1:1.0", "2:0.1", -1],
    ["6.12.95-1~bpo12+1", "6.12.95-1", -1],
    ["7.2.13-1", "7.2.9-1", 1],
    ["6.12.117-1~deb12u1", "6.12.117-1", -1],
    ["1.0", "1.0-0", 0],
    ["0:1.0-1", "1.0-1", 0],
    ["1.0-1", "1.0-1", 0],
    ["1.0~~", "1.0~", -1],
    ["1.0~", "1.0", -1],
    ["1.0", "1.0a", -1], // end of string sorts before a letter...
    ["1.0a", "1.0+", -1], // ...and letters before non-letters
    ["1.0+deb12u1", "1.0", 1],
    ["1.01", "1.1", 0], // numeric runs compare as numbers
    ["1.10", "1.9", 1],
    ["99999999999999999999-1", "99999999999999999998-1", 1], // beyond 2^53
    ["1.0-1.1", "1.0-1", 1],
  ])("%s vs %s → %i", (a, b, want) => {
    expect(compareDebianVersions(a, b)).toBe(want);
    expect(compareDebianVersions(b, a)).toBe(-want || 0);
  });

  it("sorts", () => {
    const sorted = ["1.0", "1.0~rc1", "1:0.5", "1.0-1", "0.9", "1.0+b1"].sort(compareDebianVersions);
    expect(sorted).toEqual(["0.9", "1.0~rc1", "1.0", "1.0-1", "1.0+b1", "1:0.5"]); // as dpkg orders them
  });
});

describe("debArchOf", () => {
  it("maps QEMU arches to Debian's", () => {
    expect(debArchOf("x86_64")).toBe("amd64");
    expect(debArchOf("aarch64")).toBe("arm64");
  });
});

describe("parsePackagesIndex", () => {
  it("keeps only the needed fields, with folded Depends and UTF-8 descriptions", () => {
    const pkgs = index("bookworm");
    expect(pkgs.map((p) => p.name)).toEqual([
      "0ad",
      "linux-image-cloud-amd64",
      "linux-image-6.1.0-50-cloud-amd64",
      "linux-headers-6.1.0-50-cloud-amd64",
    ]);
    expect(pkgs[0]).toEqual({
      name: "0ad",
      version: "0.0.26-3",
      architecture: "amd64",
      filename: "pool/main/0/0ad/0ad_0.0.26-3_amd64.deb",
      size: 7891488,
      sha256: "3a2118df47bf3f04285de7ccdfe8b1ab3c4d0ba2c1a1a8b3d9e4f9b0e2a4c6d1",
      depends: "0ad-data (>= 0.0.26), 0ad-data (<= 0.0.26-3), libc6 (>= 2.34), libstdc++6 (>= 12)",
      baseUrl: "http://mirror/debian",
      suite: "bookworm",
    });
    expect(pkgs[3]?.depends).toContain("linux-kbuild-6.1");
  });

  it("gives the same result for bytes, chunks cut at paragraph boundaries, and CRLF-free trailing text", () => {
    const text = fixture("sid");
    const whole = parsePackagesIndex(text, "b", "sid");
    expect(whole).toHaveLength(7);
    expect(parsePackagesIndex(Buffer.from(text), "b", "sid")).toEqual(whole);
    const paragraphs = text.split("\n\n");
    const chunked = paragraphs.flatMap((para) => parsePackagesIndex(`${para}\n`, "b", "sid"));
    expect(chunked).toEqual(whole);
    expect(parsePackagesIndex("", "b", "sid")).toEqual([]);
  });
});

describe("parseDepends", () => {
  it("splits groups and alternatives and keeps exact pins only", () => {
    expect(parseDepends("a (>= 1) | b:any, c (= 2:1.0-1),d")).toEqual([
      [{ name: "a" }, { name: "b" }],
      [{ name: "c", exact: "2:1.0-1" }],
      [{ name: "d" }],
    ]);
    expect(parseDepends("")).toEqual([]);
  });
});

describe("resolveFromIndex", () => {
  const now = new Date("2026-01-02T03:04:05Z");

  it("takes the newest same-series metapackage from -security and ignores other kernel series", () => {
    const pkgs = [...index("bookworm"), ...index("bookworm-security", "http://mirror/debian-security")];
    const r = resolveFromIndex(pkgs, "bookworm", "cloud", "amd64", now);
    expect(r).toMatchObject({
      suite: "bookworm",
      flavour: "cloud",
      debArch: "amd64",
      release: "6.1.0-56-cloud-amd64", // not the higher 6.12.117+deb12 also in bookworm-security
      version: "6.1.192-2",
      imagePackage: "linux-image-6.1.0-56-cloud-amd64",
      headersPackage: "linux-headers-6.1.0-56-cloud-amd64",
      suites: ["bookworm", "bookworm-security"],
      resolvedAt: "2026-01-02T03:04:05.000Z",
    });
    expect(r.packages.map((p) => [p.name, p.suite, p.baseUrl])).toEqual([
      ["linux-image-6.1.0-56-cloud-amd64", "bookworm-security", "http://mirror/debian-security"],
    ]);
  });

  it("uses the suite's own kernel when there is no newer one", () => {
    const r = resolveFromIndex(index("bookworm"), "bookworm", "cloud", "amd64");
    expect(r.release).toBe("6.1.0-50-cloud-amd64");
    expect(r.packages.map((p) => p.filename)).toEqual([
      "pool/main/l/linux-signed-amd64/linux-image-6.1.0-50-cloud-amd64_6.1.170-1_amd64.deb",
    ]);
  });

  it("collects sid's split packages (binary, modules, base) and skips alternatives and the meta's deps", () => {
    const r = resolveFromIndex(index("sid"), "sid", "cloud", "amd64");
    expect(r.release).toBe("7.2.13+deb14-cloud-amd64"); // 7.2.13-1 > 7.2.9-1
    expect(r.version).toBe("7.2.13-1");
    expect(r.imagePackage).toBe("linux-image-7.2.13+deb14-cloud-amd64");
    expect(r.packages.map((p) => p.name)).toEqual([
      "linux-image-7.2.13+deb14-cloud-amd64",
      "linux-base-7.2.13+deb14-cloud-amd64",
      "linux-binary-7.2.13+deb14-cloud-amd64",
      "linux-modules-7.2.13+deb14-cloud-amd64",
    ]);
  });

  it("names suite, arch, package and searched suites when the metapackage is missing", () => {
    const pkgs = [...index("bookworm"), ...index("bookworm-security")];
    expect(() => resolveFromIndex(pkgs, "bookworm", "rt", "arm64")).toThrow(
      "debian bookworm arm64: no package linux-image-rt-arm64 in bookworm, bookworm-security",
    );
  });

  it("fails when a pinned same-release dependency is missing", () => {
    const pkgs = index("sid").filter((p) => !p.name.startsWith("linux-modules-"));
    expect(() => resolveFromIndex(pkgs, "sid", "cloud", "amd64")).toThrow(
      /debian sid amd64: no package linux-modules-7\.2\.13\+deb14-cloud-amd64 \(= 7\.2\.13-1\) in sid \(needed by linux-image-7\.2\.13\+deb14-cloud-amd64\)/,
    );
  });

  it("treats an empty flavour as Debian's generic kernel", () => {
    const pkgs: DebPackage[] = parsePackagesIndex(
      [
        "Package: linux-image-arm64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-arm64 (= 6.1.192-2)\nFilename: a.deb\n",
        "Package: linux-image-6.1.0-56-arm64\nVersion: 6.1.192-2\nFilename: b.deb\n",
      ].join("\n"),
      "b",
      "bookworm",
    );
    expect(resolveFromIndex(pkgs, "bookworm", "", "arm64").release).toBe("6.1.0-56-arm64");
  });
});

describe("DebianArchive (against a local HTTP server)", () => {
  let server: Server;
  let base: string;
  let cacheDir: string;
  let key: TestKey;
  const requests: string[] = [];
  const files = new Map<string, Buffer>();
  /** URL path → the HTTP status the server answers instead */
  const status = new Map<string, number>();
  const gone = new Set<string>();
  const deb = Buffer.from("!<arch>\nnot really a deb\n");

  beforeAll(async () => {
    // A mirror signed by a throwaway key (archive-signature.test.ts tests the signatures themselves).
    key = await makeTestKey();
    // The served bookworm index also has the busybox the initrd needs.
    const busybox = `\nPackage: busybox-static\nVersion: 1:1.35.0-4+b3\nArchitecture: amd64\nFilename: pool/main/b/busybox/busybox-static_1.35.0-4+b3_amd64.deb\nSize: 1\nSHA256: ${"0".repeat(64)}\n`;
    const suites = [
      ["debian", "bookworm", `${fixture("bookworm")}${busybox}`],
      ["debian-security", "bookworm-security", fixture("bookworm-security")],
    ];
    for (const [root, suite, packagesText] of suites as [string, string, string][])
      for (const [path, body] of await signedSuite(key, { suite, packagesText }))
        files.set(`/${root}/${path}`, body);
    files.set("/debian/pool/main/t/test/test_1.0-1_amd64.deb", deb);
    server = createServer((req, res) => {
      // kmatrix checks that the kernel's files are served before it settles on a kernel.
      if (req.method === "HEAD") {
        res.writeHead(gone.has(req.url ?? "") ? 404 : 200).end();
        return;
      }
      requests.push(req.url ?? "");
      const body = files.get(req.url ?? "");
      const code = status.get(req.url ?? "") ?? (body ? 200 : 404);
      res.writeHead(code).end(code === 200 ? body : undefined);
    });
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }, 60_000);
  afterAll(async () => {
    await new Promise<void>((ok) => server.close(() => ok()));
    await key?.dispose();
  });
  beforeEach(async () => {
    cacheDir = await mkdtemp(join(tmpdir(), "kmatrix-archive-"));
    requests.length = 0;
    // bookworm-updates is served broken only where a test asks for it
    status.clear();
    return () => rm(cacheDir, { recursive: true, force: true });
  });
  const archive = (extra: Partial<ConstructorParameters<typeof DebianArchive>[0]> = {}) =>
    new DebianArchive({
      mirror: `${base}/debian/`,
      securityMirror: `${base}/debian-security`,
      keyring: key.keyring,
      cacheDir,
      ...extra,
    });
  // Per suite: InRelease, then Packages.xz; bookworm-updates: InRelease and Release, both 404.
  const FETCHES = 6;

  it("resolves from suite + -security, treats a missing suite as absent, and caches without network", async () => {
    const r = await archive().resolveKernel("bookworm", "cloud", "amd64");
    expect(r.release).toBe("6.1.0-56-cloud-amd64");
    expect(r.suites).toEqual(["bookworm", "bookworm-security"]);
    expect(r.packages[0]?.baseUrl).toBe(`${base}/debian-security`);
    expect(requests).toHaveLength(FETCHES);

    requests.length = 0;
    expect(await archive().resolveKernel("bookworm", "cloud", "amd64")).toEqual(r);
    expect(await archive().packages("bookworm", "amd64")).toHaveLength(9); // indexes cached, 404 too
    expect(requests).toEqual([]);

    // Refreshed: the InReleases again; the unchanged indexes are not fetched a second time.
    await archive({ refresh: true }).resolveKernel("bookworm", "cloud", "amd64");
    expect(requests.filter((u) => u.endsWith("/InRelease"))).toHaveLength(3);
    expect(requests.filter((u) => u.endsWith("/Packages.xz"))).toEqual([]);
  });

  it("takes the next-newest kernel when the mirror does not serve the newest one's files", async () => {
    const newest = await archive().resolveKernel("bookworm", "cloud", "amd64");
    gone.add(`/debian-security/${newest.packages[0]?.filename}`);
    const logs: string[] = [];
    const r = await archive({ refresh: true, log: (m) => logs.push(m) }).resolveKernel(
      "bookworm",
      "cloud",
      "amd64",
    );
    gone.clear();
    expect(r.release).toBe("6.1.0-50-cloud-amd64");
    expect(logs.join("\n")).toMatch(
      /lists linux-image-6\.1\.0-56-cloud-amd64_.* in bookworm-security but does not serve it/,
    );
  });

  it("falls back to a cached resolution, with a warning, when the archive is unreachable", async () => {
    const first = await archive().resolveKernel("bookworm", "cloud", "amd64");
    status.set("/debian/dists/bookworm-updates/InRelease", 503);
    const logs: string[] = [];
    const r = await archive({ refresh: true, log: (m) => logs.push(m) }).resolveKernel(
      "bookworm",
      "cloud",
      "amd64",
    );
    expect(r).toEqual(first);
    expect(logs.join("\n")).toMatch(
      /^warning: debian bookworm amd64: GET http:.*\/bookworm-updates\/InRelease: HTTP 503; using the kernel resolved at .*: 6\.1\.0-56-cloud-amd64$/,
    );
  });

  it("errors on a missing suite and on a missing flavour without a cached resolution", async () => {
    await expect(archive().resolveKernel("bookwrom", "cloud", "amd64")).rejects.toThrow(
      /^debian bookwrom amd64: no index http:.*\/dists\/bookwrom\/main\/binary-amd64\/Packages\.xz$/,
    );
    await expect(archive().resolveKernel("bookworm", "rt", "amd64")).rejects.toThrow(
      "debian bookworm amd64: no package linux-image-rt-amd64 in bookworm, bookworm-security",
    );
  });

  it("downloads with SHA256 verification, reuses a verified file, and leaves nothing behind on mismatch", async () => {
    const pkg: DebPackage = {
      name: "test",
      version: "1.0-1",
      architecture: "amd64",
      filename: "pool/main/t/test/test_1.0-1_amd64.deb",
      size: deb.length,
      sha256: createHash("sha256").update(deb).digest("hex"),
      depends: "",
      baseUrl: `${base}/debian`,
      suite: "bookworm",
    };
    const path = await archive().download(pkg);
    expect(path).toBe(join(cacheDir, "archive", "debs", "test_1.0-1_amd64.deb"));
    expect(await readFile(path)).toEqual(deb);
    requests.length = 0;
    expect(await archive().download(pkg)).toBe(path);
    expect(requests).toEqual([]);

    await writeFile(path, Buffer.alloc(deb.length)); // damaged: fetched again
    await archive().download(pkg);
    expect(await readFile(path)).toEqual(deb);

    await rm(path);
    await expect(archive().download({ ...pkg, sha256: "0".repeat(64) })).rejects.toThrow(
      `${base}/debian/pool/main/t/test/test_1.0-1_amd64.deb: SHA256 does not match the signed Packages index of bookworm`,
    );
    const gone = archive().download({ ...pkg, filename: "pool/main/t/test/gone.deb" });
    await expect(gone).rejects.toThrow(/HTTP 404 \(the archive has moved on/);
    // Typed, so that a stale resolution is resolved again (images/index.ts) without reading messages.
    await expect(gone).rejects.toBeInstanceOf(ArchiveFileGone);
    expect(await readdir(join(cacheDir, "archive", "debs"))).toEqual([]);
  });
});

describe("busybox for the initrd", () => {
  it("comes with the kernel, from the release pool before -security", () => {
    const pkgs = [
      ...parsePackagesIndex(fixture("bookworm"), "http://m/debian", "bookworm"),
      ...parsePackagesIndex(fixture("bookworm-security"), "http://m/debian-security", "bookworm-security"),
    ];
    const bb = (suite: string, version: string) => ({
      name: "busybox-static",
      version,
      architecture: "amd64",
      filename: `pool/b/busybox-static_${version}_amd64.deb`,
      size: 1,
      sha256: "0".repeat(64),
      depends: "",
      baseUrl: "http://m",
      suite,
    });
    const r = resolveFromIndex(
      [...pkgs, bb("bookworm", "1:1.35.0-4+b3"), bb("bookworm-security", "1:1.35.0-4+deb12u1")],
      "bookworm",
      "cloud",
      "amd64",
    );
    expect(r.busybox?.version).toBe("1:1.35.0-4+b3");
  });
});
