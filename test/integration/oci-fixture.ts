/**
 * OCI images made from kmatrix's own Debian bookworm machines, in the layouts kmatrix reads.
 * x86_64, from debian-bookworm-6.1@x86_64:
 * - `falco-kernel`: Falco's kernel layout: /boot/vmlinux (the ELF inside Debian's bzImage, which
 *   has the PVH note: CONFIG_PVH=y) + /boot/initrd (busybox + the virtio modules, an init like
 *   Falco's) + /lib/modules/.placeholder;
 * - `lvh-kernel`: little-vm-helper's: /data/kernels/6.1/boot/{vmlinuz,config,System.map}-<release>
 *   + /data/kernels/6.1/lib/modules/<release>;
 * - `root:systemd`: a Falco-like root disk: bookworm with systemd, sshd, compilers and the kernel's
 *   headers (the Debian machine's package list plus systemd-sysv), one layer from mmdebstrap;
 * - `root:plain`: the same plus a layer whose whiteout removes /usr/sbin/init: a container image
 *   without systemd, booted by kmatrix's init (and umoci's whiteouts tested on the way).
 * aarch64, from debian-bookworm-6.1@aarch64 (a second cache entry, so the x86_64 one stands):
 * - `falco-kernel`: /boot/vmlinux is the raw arm64 Image, as Firecracker boots it on aarch64
 *   (Debian's signed arm64 vmlinuz is one already; a gzip'd one would be decompressed), + a
 *   busybox initrd of that machine's boot modules + /lib/modules/.placeholder; tag `6.1-aarch64`;
 *   `6.1-aarch64-gz` holds the same Image gzip'd (a distribution's arm64 vmlinuz);
 * - `root:systemd`: the aarch64 machine's package list plus systemd-sysv (mmdebstrap --arch=arm64,
 *   under qemu-user: minutes).
 * Pushed as multi-architecture indexes where both exist: `falco-kernel:6.1` and `root:systemd`
 * serve linux/amd64 and linux/arm64 from one reference.
 * Hand-made OCI layouts (tar layers + JSON named by their sha256), cached by their inputs.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import {
  chmod,
  copyFile,
  cp,
  link,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip, gzipSync } from "node:zlib";
import { execa } from "execa";
import { buildOnce, cacheRoot, contentKey } from "../../src/images/cache.js";
import { type ImagePlan, type MachineImage, planImage, prepareImage } from "../../src/images/index.js";
import { arm64Image, pvhEntry, readElf, XEN_ELFNOTE_PHYS32_ENTRY } from "../../src/images/oci/elf.js";
import { readInitrd } from "../../src/images/oci/initrd-modules.js";
import { defaultMatrix, machine } from "./helpers.js";

/** Bump when the fixture's making changes (x86_64 images; aarch64's have their own). */
const FIXTURE_VERSION = 1;
const FIXTURE_ARM64_VERSION = 1;

type OciArch = "amd64" | "arm64";

export interface OciFixture {
  /** OCI layout directories, each with its tags. */
  layouts: { name: string; dir: string; tags: string[] }[];
  /** Tags pushed as a multi-architecture index of one image of each layout (by its own tag). */
  indexes: { name: string; tag: string; images: { dir: string; tag: string }[] }[];
  release: string;
  /** The Debian machine the images were made from. */
  debian: MachineImage;
  aarch64: { release: string; debian: MachineImage };
}

export async function buildOciFixture(log: (l: string) => void = () => {}): Promise<OciFixture> {
  const x86 = await buildX86Fixture(log);
  const noPvh = await buildNoPvhFixture(x86.debian);
  const arm = await buildArm64Fixture(log);
  return {
    layouts: [
      { name: "falco-kernel", dir: join(x86.dir, "falco-kernel"), tags: ["6.1-x86_64"] },
      { name: "falco-kernel", dir: noPvh, tags: ["6.1-x86_64-nopvh"] },
      { name: "lvh-kernel", dir: join(x86.dir, "lvh-kernel"), tags: ["6.1-main"] },
      { name: "root", dir: join(x86.dir, "root"), tags: ["plain"] },
      { name: "falco-kernel", dir: join(arm.dir, "falco-kernel"), tags: ["6.1-aarch64", "6.1-aarch64-gz"] },
    ],
    indexes: [
      {
        name: "falco-kernel",
        tag: "6.1",
        images: [
          { dir: join(x86.dir, "falco-kernel"), tag: "6.1-x86_64" },
          { dir: join(arm.dir, "falco-kernel"), tag: "6.1-aarch64" },
        ],
      },
      {
        name: "root",
        tag: "systemd",
        images: [
          { dir: join(x86.dir, "root"), tag: "systemd" },
          { dir: join(arm.dir, "root"), tag: "systemd" },
        ],
      },
    ],
    release: x86.release,
    debian: x86.debian,
    aarch64: { release: arm.release, debian: arm.debian },
  };
}

async function buildX86Fixture(
  log: (l: string) => void,
): Promise<{ dir: string; release: string; debian: MachineImage }> {
  const m = machine("debian-bookworm-6.1", "x86_64");
  const debian = await prepareImage(m, { archive: defaultMatrix.archive });
  const plan = await planImage(m, { archive: defaultMatrix.archive });
  const release = debian.kernelRelease;
  const recipe = {
    v: FIXTURE_VERSION,
    kernel: debian.manifests.kernel.key,
    rootfs: plan.rootfs.recipe,
  };
  const dir = join(cacheRoot(), "test-fixtures", `oci-${contentKey(recipe)}`);
  await buildOnce(dir, async (tmp) => {
    const started = Date.now();
    const kernel = debian.manifests.kernel;
    const kdir = join(cacheRoot(), "kernels", `${release}-${kernel.key}`);
    const modulesDir = join(kdir, kernel.modulesDir);
    const bootDir = join(kdir, kernel.bootDir ?? "tree/boot");

    // Falco's layout.
    const falco = join(tmp, "falco-tree");
    await mkdir(join(falco, "boot"), { recursive: true });
    await mkdir(join(falco, "lib/modules"), { recursive: true });
    await writeFile(join(falco, "lib/modules/.placeholder"), "");
    await writeFile(join(falco, "boot/vmlinux"), await vmlinuxFromBzImage(await readFile(debian.vmlinuz)));
    await writeFile(join(falco, "boot/initrd"), await falcoInitrd(debian, modulesDir, release, tmp));
    await ociLayout(join(tmp, "falco-kernel"), [
      { tag: "6.1-x86_64", layers: [await tarLayer(falco, tmp, "falco")] },
    ]);
    await rm(falco, { recursive: true });

    // little-vm-helper's layout.
    const lvh = join(tmp, "lvh-tree");
    const base = join(lvh, "data/kernels/6.1");
    await mkdir(join(base, "boot"), { recursive: true });
    await mkdir(join(base, "lib/modules"), { recursive: true });
    await copyFile(debian.vmlinuz, join(base, "boot", `vmlinuz-${release}`));
    for (const f of await readdir(bootDir))
      if (/^(config|System\.map)-/.test(f)) await copyFile(join(bootDir, f), join(base, "boot", f));
    await cp(modulesDir, join(base, "lib/modules", release), { recursive: true });
    await ociLayout(join(tmp, "lvh-kernel"), [
      { tag: "6.1-main", layers: [await tarLayer(lvh, tmp, "lvh")] },
    ]);
    await rm(lvh, { recursive: true });

    // The root disk: the Debian machine's packages plus systemd, straight into a tar.
    log("fixture: mmdebstrap (systemd root disk)");
    const rootLayer = await systemdRootLayer(plan, "amd64", tmp);
    const wh = join(tmp, "whiteout-tree");
    await mkdir(join(wh, "usr/sbin"), { recursive: true });
    await writeFile(join(wh, "usr/sbin/.wh.init"), "");
    await ociLayout(join(tmp, "root"), [
      { tag: "systemd", layers: [rootLayer] },
      { tag: "plain", layers: [rootLayer, await tarLayer(wh, tmp, "whiteout")] },
    ]);
    await rm(wh, { recursive: true });
    for (const f of await readdir(tmp))
      if (f.endsWith(".tar.gz") || f === "apt-preferences") await rm(join(tmp, f));
    log(`fixture: OCI images made in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    return { kind: "oci-fixture", recipe, release };
  });
  return { dir, release, debian };
}

/**
 * Falco's x86_64 layout with a kernel as old ones are (before 5.0, or built without CONFIG_PVH):
 * the same vmlinux with its PVH entry note's type changed, so QEMU cannot boot it directly and
 * kmatrix boots it through its shim (src/images/pvh-shim). Its own entry: the bigger x86_64
 * fixture stays as it was.
 */
async function buildNoPvhFixture(debian: MachineImage): Promise<string> {
  const recipe = { v: 1, kernel: debian.manifests.kernel.key };
  const dir = join(cacheRoot(), "test-fixtures", `oci-nopvh-${contentKey(recipe)}`);
  await buildOnce(dir, async (tmp) => {
    const kernel = debian.manifests.kernel;
    const kdir = join(cacheRoot(), "kernels", `${debian.kernelRelease}-${kernel.key}`);
    const falco = join(tmp, "falco-tree");
    await mkdir(join(falco, "boot"), { recursive: true });
    await mkdir(join(falco, "lib/modules"), { recursive: true });
    await writeFile(join(falco, "lib/modules/.placeholder"), "");
    const vmlinux = withoutPvhNote(await vmlinuxFromBzImage(await readFile(debian.vmlinuz)));
    await writeFile(join(falco, "boot/vmlinux"), vmlinux);
    await writeFile(
      join(falco, "boot/initrd"),
      await falcoInitrd(debian, join(kdir, kernel.modulesDir), debian.kernelRelease, tmp),
    );
    await ociLayout(join(tmp, "falco-kernel"), [
      { tag: "6.1-x86_64-nopvh", layers: [await tarLayer(falco, tmp, "falco-nopvh")] },
    ]);
    await rm(falco, { recursive: true });
    for (const f of await readdir(tmp)) if (f.endsWith(".tar.gz")) await rm(join(tmp, f));
    return { kind: "oci-fixture", recipe };
  });
  return join(dir, "falco-kernel");
}

/** A copy of an x86_64 vmlinux whose PVH entry note (Xen, XEN_ELFNOTE_PHYS32_ENTRY) is no longer one. */
export function withoutPvhNote(vmlinux: Buffer): Buffer {
  const out = Buffer.from(vmlinux);
  for (const seg of readElf(out).segments.filter((s) => s.type === 4 /* PT_NOTE */))
    for (let o = seg.offset; o + 12 <= seg.offset + seg.filesz; ) {
      const namesz = out.readUInt32LE(o);
      const descsz = out.readUInt32LE(o + 4);
      const name = out.toString("latin1", o + 12, o + 12 + namesz).replace(/\0+$/, "");
      if (name === "Xen" && out.readUInt32LE(o + 8) === XEN_ELFNOTE_PHYS32_ENTRY)
        out.writeUInt32LE(0x7fff, o + 8);
      o += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3);
    }
  if (pvhEntry(out) !== undefined) throw new Error("the vmlinux's PVH note is still there");
  return out;
}

async function buildArm64Fixture(
  log: (l: string) => void,
): Promise<{ dir: string; release: string; debian: MachineImage }> {
  const m = machine("debian-bookworm-6.1", "aarch64");
  const debian = await prepareImage(m, { archive: defaultMatrix.archive });
  const plan = await planImage(m, { archive: defaultMatrix.archive });
  const release = debian.kernelRelease;
  const recipe = {
    v: FIXTURE_ARM64_VERSION,
    arch: "aarch64",
    kernel: debian.manifests.kernel.key,
    rootfs: plan.rootfs.recipe,
  };
  const dir = join(cacheRoot(), "test-fixtures", `oci-arm64-${contentKey(recipe)}`);
  await buildOnce(dir, async (tmp) => {
    const started = Date.now();
    const kernel = debian.manifests.kernel;
    const kdir = join(cacheRoot(), "kernels", `${release}-${kernel.key}`);
    const modulesDir = join(kdir, kernel.modulesDir);

    // Falco's layout as Firecracker needs it on aarch64: the raw Image.
    const image = arm64Image(await readFile(debian.vmlinuz));
    const what = { elf: "an ELF", image: "a raw Image", gzip: "a gzip'd Image" }[image.from];
    log(`fixture: debian-bookworm-6.1@aarch64's vmlinuz is ${what}`);
    const falco = join(tmp, "falco-tree");
    await mkdir(join(falco, "boot"), { recursive: true });
    await mkdir(join(falco, "lib/modules"), { recursive: true });
    await writeFile(join(falco, "lib/modules/.placeholder"), "");
    await writeFile(join(falco, "boot/initrd"), await falcoInitrd(debian, modulesDir, release, tmp));
    await writeFile(join(falco, "boot/vmlinux"), image.bytes);
    const rawLayer = await tarLayer(falco, tmp, "falco");
    await writeFile(join(falco, "boot/vmlinux"), gzipSync(image.bytes));
    const gzLayer = await tarLayer(falco, tmp, "falco-gz");
    await ociLayout(
      join(tmp, "falco-kernel"),
      [
        { tag: "6.1-aarch64", layers: [rawLayer] },
        { tag: "6.1-aarch64-gz", layers: [gzLayer] },
      ],
      "arm64",
    );
    await rm(falco, { recursive: true });

    log("fixture: mmdebstrap --arch=arm64 (systemd root disk, under qemu-user)");
    const t0 = Date.now();
    const rootLayer = await systemdRootLayer(plan, "arm64", tmp);
    log(`fixture: arm64 root disk in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    await ociLayout(join(tmp, "root"), [{ tag: "systemd", layers: [rootLayer] }], "arm64");
    for (const f of await readdir(tmp)) if (f.endsWith(".tar.gz")) await rm(join(tmp, f));
    log(`fixture: aarch64 OCI images made in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    return { kind: "oci-fixture", recipe, release };
  });
  return { dir, release, debian };
}

/** The Debian machine's root disk packages plus systemd-sysv, one gzip'd tar layer (mmdebstrap). */
async function systemdRootLayer(plan: ImagePlan, debArch: OciArch, tmp: string): Promise<string> {
  const r = plan.rootfs.recipe as {
    suite: string;
    suites: string[];
    packages: string[];
    preferences: string;
  };
  const prefs = join(tmp, "apt-preferences");
  await writeFile(prefs, r.preferences);
  const rootTar = join(tmp, "root.tar");
  await execa("mmdebstrap", [
    "--variant=minbase",
    `--arch=${debArch}`,
    `--include=${[...r.packages, "systemd-sysv"].join(",")}`,
    '--aptopt=Acquire::Check-Valid-Until "false";',
    `--setup-hook=upload ${prefs} /etc/apt/preferences.d/kmatrix`,
    "--dpkgopt=path-exclude=/usr/share/{doc,man,info,locale}/*",
    r.suite,
    rootTar,
    ...r.suites.map((s) =>
      s.endsWith("-security")
        ? `deb ${defaultMatrix.archive.securityMirror} ${s} main`
        : `deb ${defaultMatrix.archive.mirror} ${s} main`,
    ),
  ]);
  const rootLayer = join(tmp, `root-${debArch}.tar.gz`);
  await pipeline(createReadStream(rootTar), createGzip({ level: 1 }), createWriteStream(rootLayer));
  await rm(rootTar);
  await rm(prefs);
  return rootLayer;
}

/**
 * The ELF vmlinux inside an x86 bzImage (what the kernel's scripts/extract-vmlinux does): the
 * setup header's payload_offset/payload_length point at the compressed kernel, whose format
 * shows in its magic.
 */
export async function vmlinuxFromBzImage(bz: Buffer): Promise<Buffer> {
  if (bz.toString("latin1", 0x202, 0x206) !== "HdrS") throw new Error("not a bzImage (no HdrS)");
  const setupSects = bz[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + bz.readUInt32LE(0x248);
  const payload = bz.subarray(start, start + bz.readUInt32LE(0x24c));
  const hex = payload.subarray(0, 6).toString("hex");
  const tool = hex.startsWith("02214c18")
    ? "lz4"
    : hex === "fd377a585a00"
      ? "xz"
      : hex.startsWith("28b52ffd")
        ? "zstd"
        : hex.startsWith("1f8b")
          ? "gzip"
          : undefined;
  if (!tool) throw new Error(`bzImage payload of unknown format (${hex})`);
  // The kernel appends the uncompressed size after the stream: tools may complain, the ELF is whole.
  const r = await execa(tool, ["-dc"], { input: payload, encoding: "buffer", reject: false });
  const out = Buffer.from(r.stdout);
  if (out.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${tool} did not give an ELF: ${r.stderr}`);
  return out;
}

/** A busybox initrd like Falco's: its init loads the virtio modules and switches to /dev/vda. */
async function falcoInitrd(
  debian: MachineImage,
  modulesDir: string,
  release: string,
  tmp: string,
): Promise<Buffer> {
  const root = join(tmp, "falco-initrd");
  const kmods = join(root, "lib/modules", release);
  await mkdir(join(root, "bin"), { recursive: true });
  await mkdir(kmods, { recursive: true });
  // kmatrix's own initrd of the Debian machine holds a static busybox.
  const files = await readInitrd(await readFile(debian.initrd));
  const busybox = files.find((f) => f.name === "bin/busybox");
  if (!busybox) throw new Error("no busybox in the Debian machine's initrd");
  await writeFile(join(root, "bin/busybox"), busybox.data);
  await chmod(join(root, "bin/busybox"), 0o755);
  const wanted = new Set(debian.manifests.boot.modules);
  const order: string[] = [];
  for (const rel of await readdir(modulesDir, { recursive: true })) {
    const name = /([^/]+)\.ko(\.xz|\.zst)?$/.exec(rel)?.[1]?.replaceAll("-", "_");
    if (!name || !wanted.has(name)) continue;
    await copyFile(join(modulesDir, rel), join(kmods, rel.split("/").pop() as string));
    order.push(name);
  }
  await writeFile(
    join(root, "init"),
    `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in ${debian.manifests.boot.modules.join(" ")}; do insmod /lib/modules/${release}/$m.ko; done
mount /dev/vda /mnt && exec switch_root /mnt /sbin/init
`,
    { mode: 0o755 },
  );
  for (const d of ["proc", "sys", "dev", "mnt"]) await mkdir(join(root, d));
  const entries = (await readdir(root, { recursive: true })).map((e) => `./${e}`);
  const cpio = join(tmp, "falco-initrd.cpio");
  await execa("cpio", ["--create", "--format=newc", "--quiet", "--owner=0:0", `--file=${cpio}`], {
    cwd: root,
    input: `.\n${entries.join("\n")}\n`,
  });
  const gz = join(tmp, "falco-initrd.gz");
  await pipeline(createReadStream(cpio), createGzip(), createWriteStream(gz));
  const out = await readFile(gz);
  await rm(cpio);
  await rm(gz);
  await rm(root, { recursive: true });
  if (order.length === 0) throw new Error("no virtio module for the Falco-style initrd");
  return out;
}

async function tarLayer(tree: string, tmp: string, name: string): Promise<string> {
  const out = join(tmp, `${name}.tar.gz`);
  await execa("tar", ["--numeric-owner", "--owner=0", "--group=0", "-C", tree, "-czf", out, "."]);
  return out;
}

async function sha256File(path: string, gunzip = false): Promise<string> {
  const hash = createHash("sha256");
  const input = createReadStream(path);
  await pipeline(gunzip ? input.pipe(createGunzip()) : input, async (source) => {
    for await (const chunk of source) hash.update(chunk as Buffer);
  });
  return `sha256:${hash.digest("hex")}`;
}

/** Writes an OCI image layout: blobs by digest, one image manifest per tag (of `arch`), index.json. */
async function ociLayout(
  dir: string,
  images: { tag: string; layers: string[] }[],
  arch: OciArch = "amd64",
): Promise<void> {
  const blobs = join(dir, "blobs/sha256");
  await mkdir(blobs, { recursive: true });
  const putJson = async (value: unknown) => {
    const bytes = Buffer.from(JSON.stringify(value));
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    await writeFile(join(blobs, digest.slice(7)), bytes);
    return { digest, size: bytes.length };
  };
  const manifests = [];
  for (const img of images) {
    const layers = [];
    const diffIds = [];
    for (const layer of img.layers) {
      const digest = await sha256File(layer);
      await copyFile(layer, join(blobs, digest.slice(7)));
      layers.push({
        mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
        digest,
        size: (await stat(layer)).size,
      });
      diffIds.push(await sha256File(layer, true));
    }
    const config = await putJson({
      architecture: arch,
      os: "linux",
      config: {},
      rootfs: { type: "layers", diff_ids: diffIds },
    });
    const manifest = await putJson({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
      layers,
    });
    manifests.push({
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      ...manifest,
      platform: { architecture: arch, os: "linux" },
      annotations: { "org.opencontainers.image.ref.name": img.tag },
    });
  }
  await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await writeFile(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests }));
}

/** Debian's docker-registry on 127.0.0.1:<port>, storage in `dir`; stop() ends it. */
export async function startRegistry(dir: string): Promise<{ host: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const config = join(dir, "config.yml");
  await writeFile(
    config,
    `version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: ${join(dir, "storage")} }, delete: { enabled: true } }
http: { addr: "127.0.0.1:${port}" }
`,
  );
  const child = execa("docker-registry", ["serve", config], { reject: false, all: true });
  const host = `127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const ok = await fetch(`http://${host}/v2/`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (i > 100 || child.exitCode !== null) {
      child.kill();
      throw new Error(`docker-registry did not start: ${(await child).all}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host,
    stop: async () => {
      child.kill("SIGTERM");
      await child;
    },
  };
}

async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a ? a.port : 0));
    });
  });
}

/**
 * Pushes every tag of the fixture's layouts to `host` as `<host>/kmatrix/<layout name>:<tag>`, then
 * each multi-architecture tag: an OCI layout made for it (the images' blobs hard-linked, one
 * image index naming each manifest with its platform), copied with all its images.
 */
export async function pushFixture(f: OciFixture, host: string): Promise<void> {
  for (const l of f.layouts)
    for (const tag of l.tags)
      await execa("skopeo", [
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        `oci:${l.dir}:${tag}`,
        `docker://${host}/kmatrix/${l.name}:${tag}`,
      ]);
  for (const idx of f.indexes) {
    const dir = await mkdtemp(join(tmpdir(), "kmx-oci-index-"));
    try {
      const blobs = join(dir, "blobs/sha256");
      await mkdir(blobs, { recursive: true });
      const manifests = [];
      for (const img of idx.images) {
        const index = JSON.parse(await readFile(join(img.dir, "index.json"), "utf8")) as {
          manifests: { annotations?: Record<string, string>; [k: string]: unknown }[];
        };
        const found = index.manifests.find(
          (m) => m.annotations?.["org.opencontainers.image.ref.name"] === img.tag,
        );
        if (!found) throw new Error(`${img.dir}: no tag ${img.tag}`);
        const { annotations: _, ...descriptor } = found;
        manifests.push(descriptor);
        for (const b of await readdir(join(img.dir, "blobs/sha256")))
          await link(join(img.dir, "blobs/sha256", b), join(blobs, b)).catch(
            async (err: NodeJS.ErrnoException) => {
              if (err.code === "EEXIST") return;
              if (err.code !== "EXDEV") throw err;
              await copyFile(join(img.dir, "blobs/sha256", b), join(blobs, b));
            },
          );
      }
      const mediaType = "application/vnd.oci.image.index.v1+json";
      const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, manifests }));
      const digest = createHash("sha256").update(bytes).digest("hex");
      await writeFile(join(blobs, digest), bytes);
      await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
      await writeFile(
        join(dir, "index.json"),
        JSON.stringify({
          schemaVersion: 2,
          manifests: [
            {
              mediaType,
              digest: `sha256:${digest}`,
              size: bytes.length,
              annotations: { "org.opencontainers.image.ref.name": idx.tag },
            },
          ],
        }),
      );
      await execa("skopeo", [
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        `oci:${dir}:${idx.tag}`,
        `docker://${host}/kmatrix/${idx.name}:${idx.tag}`,
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}
