import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseMatrix } from "../../src/config/load.js";
import { contentKey } from "../../src/images/cache.js";
import {
  ARM64_IMAGE_MAGIC,
  arm64Image,
  arm64ImageFromElf,
  EM_AARCH64,
  EM_X86_64,
  kernelRelease,
  pvhEntry,
  readElf,
  XEN_ELFNOTE_PHYS32_ENTRY,
} from "../../src/images/oci/elf.js";
import { modulesOfInitrd } from "../../src/images/oci/initrd-modules.js";
import { bootableVmlinux } from "../../src/images/oci/kernel.js";
import { assertNoLinks, detectKernelLayout, detectRootDiskLayout } from "../../src/images/oci/layout.js";
import { dockerTransport, parseImageRef, selectPlatform } from "../../src/images/oci/reference.js";
import { packPvhModule, pvhShimRefusal } from "../../src/images/pvh-shim/index.js";
import { UsageError } from "../../src/util/errors.js";

interface Seg {
  type: number;
  paddr: bigint;
  vaddr?: bigint;
  data: Buffer;
  memsz?: number;
}

/** A minimal 64-bit little-endian ELF with the given program segments. */
function elf(machine: number, segs: Seg[]): Buffer {
  const phoff = 64;
  let offset = phoff + 56 * segs.length;
  const header = Buffer.alloc(64);
  header.writeUInt32BE(0x7f454c46, 0);
  header[4] = 2;
  header[5] = 1;
  header[6] = 1;
  header.writeUInt16LE(2, 16);
  header.writeUInt16LE(machine, 18);
  header.writeBigUInt64LE(0x1000000n, 24);
  header.writeBigUInt64LE(BigInt(phoff), 32);
  header.writeUInt16LE(64, 52);
  header.writeUInt16LE(56, 54);
  header.writeUInt16LE(segs.length, 56);
  const phdrs = Buffer.alloc(56 * segs.length);
  segs.forEach((s, i) => {
    const o = i * 56;
    phdrs.writeUInt32LE(s.type, o);
    phdrs.writeBigUInt64LE(BigInt(offset), o + 8);
    phdrs.writeBigUInt64LE(s.vaddr ?? s.paddr, o + 16);
    phdrs.writeBigUInt64LE(s.paddr, o + 24);
    phdrs.writeBigUInt64LE(BigInt(s.data.length), o + 32);
    phdrs.writeBigUInt64LE(BigInt(s.memsz ?? s.data.length), o + 40);
    offset += s.data.length;
  });
  return Buffer.concat([header, phdrs, ...segs.map((s) => s.data)]);
}

/** One ELF note, padded as the kernel's ELFNOTE() macro emits it. */
function note(name: string, type: number, desc: Buffer): Buffer {
  const n = Buffer.from(`${name}\0`);
  const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
  const h = Buffer.alloc(12);
  h.writeUInt32LE(n.length, 0);
  h.writeUInt32LE(desc.length, 4);
  h.writeUInt32LE(type, 8);
  return Buffer.concat([h, pad(n), pad(desc)]);
}

const u64 = (v: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
};
const BANNER = Buffer.from(
  "\0Linux version %s (%s)\0Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists) #1 SMP\0",
);

describe("vmlinux (ELF) reading", () => {
  const notes = Buffer.concat([
    note("Linux", 6, Buffer.from("6.1\0")),
    note("Xen", 1, u64(0)),
    note("Xen", XEN_ELFNOTE_PHYS32_ENTRY, u64(0x1000850)),
  ]);
  const withPvh = elf(EM_X86_64, [
    { type: 1, paddr: 0x1000000n, data: Buffer.concat([Buffer.alloc(64), BANNER]) },
    { type: 4, paddr: 0x2000000n, data: notes },
  ]);
  const withoutPvh = elf(EM_X86_64, [
    { type: 1, paddr: 0x1000000n, data: BANNER },
    { type: 4, paddr: 0x2000000n, data: note("Xen", 1, u64(0)) },
  ]);

  it("finds the PVH entry among the Xen notes, and its absence", () => {
    expect(readElf(withPvh).machine).toBe(EM_X86_64);
    expect(pvhEntry(withPvh)).toBe(0x1000850);
    expect(pvhEntry(withoutPvh)).toBeUndefined();
  });

  it("reads the release from the banner, not the format string", () => {
    expect(kernelRelease(withPvh)).toBe("6.1.0-57-cloud-amd64");
    expect(kernelRelease(Buffer.from("no banner here"))).toBeUndefined();
  });

  it("boots an x86_64 vmlinux through its PVH note, else through the shim, and says when it cannot", () => {
    expect(bootableVmlinux(withPvh, "x86_64", "img")).toMatchObject({ name: "vmlinux", bytes: withPvh });
    expect(bootableVmlinux(withPvh, "x86_64", "img").shim).toBeUndefined();
    expect(bootableVmlinux(withoutPvh, "x86_64", "img")).toMatchObject({ name: "vmlinux", shim: true });
    // The shim lives at 1 MiB and enters 32-bit code: a kernel below 2 MiB or above 4 GiB is refused.
    const low = elf(EM_X86_64, [{ type: 1, paddr: 0x100000n, data: BANNER }]);
    expect(() => bootableVmlinux(low, "x86_64", "img")).toThrow(
      "img: /boot/vmlinux has no PVH entry note and cannot be booted through its 64-bit entry: a segment's physical address 0x100000 is outside 2 MiB–4 GiB",
    );
    const high = elf(EM_X86_64, [{ type: 1, paddr: 0xffff0000n, data: BANNER, memsz: 0x20000 }]);
    expect(pvhShimRefusal(high)).toMatch(/0xffff0000 is outside 2 MiB–4 GiB/);
    expect(pvhShimRefusal(withoutPvh)).toBeUndefined();
    expect(() => bootableVmlinux(Buffer.from("MZ not an elf".padEnd(80)), "x86_64", "img")).toThrow(
      "img: /boot/vmlinux: not an ELF file",
    );
    expect(() => bootableVmlinux(withPvh, "aarch64", "img")).toThrow(/not an arm64 kernel/);
  });

  it("turns an arm64 vmlinux into the flat Image QEMU boots (segments laid out, gaps zeroed, bss left out)", () => {
    const text = Buffer.alloc(0x100, 0x11);
    text.writeUInt32LE(ARM64_IMAGE_MAGIC, 56);
    const data = Buffer.alloc(0x20, 0x22);
    const base = 0xffff800008000000n;
    const vmlinux = elf(EM_AARCH64, [
      // Out of order on purpose; the second has bss beyond its file size.
      { type: 1, paddr: base + 0x200n, data, memsz: 0x1000 },
      { type: 1, paddr: base, data: text },
    ]);
    const image = bootableVmlinux(vmlinux, "aarch64", "img");
    expect(image.name).toBe("Image");
    expect(image.bytes.length).toBe(0x220);
    expect(image.bytes.subarray(0, 0x100)).toEqual(text);
    expect(image.bytes.subarray(0x100, 0x200)).toEqual(Buffer.alloc(0x100));
    expect(image.bytes.subarray(0x200)).toEqual(data);
    const noMagic = elf(EM_AARCH64, [{ type: 1, paddr: base, data: Buffer.alloc(0x100) }]);
    expect(() => arm64ImageFromElf(noMagic)).toThrow(/no arm64 boot header/);
  });

  /** A raw arm64 Image as the kernel's build writes it: the boot header, then text with the banner. */
  function rawImage(flags = 0n): Buffer {
    const img = Buffer.alloc(0x400, 0x11);
    img.writeBigUInt64LE(0x200000n, 16); // image_size: set, so the flags mean something
    img.writeBigUInt64LE(flags, 24);
    img.writeUInt32LE(ARM64_IMAGE_MAGIC, 56);
    Buffer.from(BANNER.toString("latin1").replace("amd64", "arm64"), "latin1").copy(img, 0x100);
    return img;
  }
  const ARM64_HINT =
    "; on aarch64 kmatrix boots an ELF vmlinux, a raw arm64 Image or a gzip-compressed Image";

  it("boots a raw arm64 Image (Firecracker's format, so Falco's) as is", () => {
    const raw = rawImage();
    expect(arm64Image(raw).from).toBe("image");
    const image = bootableVmlinux(raw, "aarch64", "img");
    expect(image.name).toBe("Image");
    expect(image.bytes).toBe(raw);
    expect(kernelRelease(image.bytes)).toBe("6.1.0-57-cloud-arm64");
  });

  it("decompresses a gzip'd arm64 Image (a distribution's vmlinuz) and checks what it holds", () => {
    const raw = rawImage();
    const gz = gzipSync(raw);
    expect(kernelRelease(gz)).toBeUndefined();
    expect(arm64Image(gz).from).toBe("gzip");
    const image = bootableVmlinux(gz, "aarch64", "img");
    expect(image.name).toBe("Image");
    expect(image.bytes).toEqual(raw);
    expect(kernelRelease(image.bytes)).toBe("6.1.0-57-cloud-arm64");
    expect(() => bootableVmlinux(gzipSync(Buffer.alloc(0x400)), "aarch64", "img")).toThrow(
      `img: /boot/vmlinux: gzip-compressed, but what it holds is neither an ELF file nor an arm64 Image (no ARM\\x64 magic at offset 56; first bytes 0000000000000000)${ARM64_HINT}`,
    );
    expect(() => bootableVmlinux(gz.subarray(0, gz.length - 30), "aarch64", "img")).toThrow(
      /^img: \/boot\/vmlinux: gzip data that does not decompress \(.*\); on aarch64/,
    );
  });

  it("refuses anything else on aarch64 in one line that names the image and what it found", () => {
    const refused = (buf: Buffer) => {
      try {
        bootableVmlinux(buf, "aarch64", "ghcr.io/x/k:1");
      } catch (err) {
        const msg = (err as Error).message;
        expect(msg).not.toContain("\n");
        expect(msg.startsWith("ghcr.io/x/k:1: /boot/vmlinux: ")).toBe(true);
        expect(msg.endsWith(ARM64_HINT)).toBe(true);
        return msg.slice("ghcr.io/x/k:1: /boot/vmlinux: ".length, -ARM64_HINT.length);
      }
      throw new Error("accepted");
    };
    expect(refused(Buffer.alloc(0))).toBe("an empty file");
    expect(refused(Buffer.from("plain text, not a kernel at all".padEnd(100)))).toMatch(
      /^neither an ELF file nor an arm64 Image \(no ARM\\x64 magic at offset 56; first bytes 706c61696e207465\)$/,
    );
    expect(refused(Buffer.concat([Buffer.from("fd377a585a00", "hex"), Buffer.alloc(100)]))).toBe(
      "xz-compressed data (kmatrix decompresses gzip only)",
    );
    expect(refused(Buffer.concat([Buffer.from("28b52ffd", "hex"), Buffer.alloc(100)]))).toBe(
      "zstd-compressed data (kmatrix decompresses gzip only)",
    );
    const zboot = Buffer.alloc(0x100);
    zboot.write("MZ", 0, "latin1");
    zboot.write("zimg", 4, "latin1");
    zboot.write("zstd\0", 24, "latin1");
    expect(refused(zboot)).toBe(
      "an EFI zboot image (CONFIG_EFI_ZBOOT, zstd-compressed), which kmatrix does not unpack",
    );
    const bz = Buffer.alloc(0x400);
    bz.write("HdrS", 0x202, "latin1");
    expect(refused(bz)).toBe("an x86 bzImage");
    expect(refused(rawImage(1n))).toBe("a big-endian arm64 Image (QEMU's virt runs little-endian kernels)");
    expect(refused(elf(EM_X86_64, [{ type: 1, paddr: 0x1000000n, data: BANNER }]))).toBe(
      "not an arm64 kernel (ELF machine 62)",
    );
  });

  it("keeps x86_64 to the ELF: a raw arm64 Image or a gzip'd one is no x86_64 vmlinux", () => {
    expect(() => bootableVmlinux(rawImage(), "x86_64", "img")).toThrow("img: /boot/vmlinux: not an ELF file");
    expect(() => bootableVmlinux(gzipSync(rawImage()), "x86_64", "img")).toThrow(
      "img: /boot/vmlinux: not an ELF file",
    );
  });
});

/** A newc archive, as cpio(1) writes it. */
function newc(entries: { name: string; mode: number; data?: string }[]): Buffer {
  const parts: Buffer[] = [];
  const pad = () => {
    const len = parts.reduce((n, p) => n + p.length, 0);
    parts.push(Buffer.alloc((4 - (len % 4)) % 4));
  };
  for (const e of [...entries, { name: "TRAILER!!!", mode: 0 }]) {
    const data = Buffer.from(e.data ?? "");
    const f = (v: number) => v.toString(16).padStart(8, "0");
    const fields = [1, e.mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, e.name.length + 1, 0];
    parts.push(Buffer.from(`070701${fields.map(f).join("")}${e.name}\0`));
    pad();
    parts.push(data);
    pad();
  }
  return Buffer.concat(parts);
}

describe("the PVH shim's module", () => {
  it("packs a header, the vmlinux at 4 KiB and the initrd at the next page after it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kmx-pvh-"));
    try {
      const vmlinux = Buffer.alloc(5000, 0xaa);
      const initrd = Buffer.alloc(300, 0xbb);
      await writeFile(join(dir, "vmlinux"), vmlinux);
      await writeFile(join(dir, "initrd"), initrd);
      await packPvhModule(join(dir, "vmlinux"), join(dir, "initrd"), join(dir, "module"));
      const m = await readFile(join(dir, "module"));
      // shim.c: struct module_header { magic[8]; vmlinux_offset, vmlinux_size, initrd_offset, initrd_size }
      expect(m.toString("latin1", 0, 8)).toBe("KMXPVH01");
      expect([8, 12, 16, 20].map((o) => m.readUInt32LE(o))).toEqual([4096, 5000, 12288, 300]);
      expect(m.subarray(4096, 4096 + 5000).equals(vmlinux)).toBe(true);
      expect(m.subarray(12288).equals(initrd)).toBe(true);
      expect(m.length).toBe(12288 + 300);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("modules out of a Falco initrd", () => {
  it("takes regular *.ko files by base name from every archive, nothing else", async () => {
    const first = newc([{ name: "kernel/x86/microcode/GenuineIntel.bin", mode: 0o100644, data: "ucode" }]);
    const second = newc([
      { name: "lib/modules/6.1/kernel/drivers/block/virtio_blk.ko", mode: 0o100644, data: "blk" },
      { name: "lib/modules/6.1/virtio_mmio.ko.xz", mode: 0o100644, data: "mmio" },
      { name: "../../etc/evil.ko", mode: 0o100644, data: "evil" },
      { name: "lib/link.ko", mode: 0o120777, data: "/etc/passwd" },
      { name: "dev/console.ko", mode: 0o020600 },
      { name: "init", mode: 0o100755, data: "#!/bin/sh" },
    ]);
    // An uncompressed archive followed by a gzip'd one, as early-microcode initrds are.
    const mods = await modulesOfInitrd(Buffer.concat([first, Buffer.alloc(512), gzipSync(second)]));
    expect([...mods.keys()].sort()).toEqual(["evil.ko", "virtio_blk.ko", "virtio_mmio.ko.xz"]);
    expect(mods.get("virtio_blk.ko")?.toString()).toBe("blk");
  });

  it("refuses what is not a newc archive", async () => {
    await expect(
      modulesOfInitrd(gzipSync(Buffer.from("not cpio at all, just text".repeat(5)))),
    ).rejects.toThrow(/not a newc cpio archive/);
  });
});

describe("layouts", () => {
  it("recognises Falco's and little-vm-helper's kernel images", () => {
    expect(
      detectKernelLayout(["boot", "boot/vmlinux", "boot/initrd", "lib/modules/.placeholder"], "i"),
    ).toEqual({
      layout: "falco",
      vmlinux: "boot/vmlinux",
      initrd: "boot/initrd",
    });
    expect(
      detectKernelLayout(
        [
          "data/kernels/6.6/boot/vmlinuz-6.6.0",
          "data/kernels/6.6/boot/config-6.6.0",
          "data/kernels/6.6/lib/modules/6.6.0/modules.dep",
          "bin/busybox",
        ],
        "i",
      ),
    ).toEqual({
      layout: "lvh",
      version: "6.6",
      release: "6.6.0",
      vmlinuz: "data/kernels/6.6/boot/vmlinuz-6.6.0",
      modules: "data/kernels/6.6/lib/modules/6.6.0",
      boot: "data/kernels/6.6/boot",
    });
  });

  it("names the image and what it expected when it finds no kernel", () => {
    expect(() => detectKernelLayout(["bin/sh", "boot/vmlinuz"], "quay.io/x/y:1")).toThrow(
      /^quay\.io\/x\/y:1: no kernel found \(expected \/boot\/vmlinux \+ \/boot\/initrd/,
    );
    expect(() => detectKernelLayout(["data/kernels/6.6/boot/vmlinuz-6.6.0"], "i")).toThrow(
      "i: /data/kernels/6.6/boot/vmlinuz-6.6.0 has no /data/kernels/6.6/lib/modules/6.6.0",
    );
    expect(() =>
      detectKernelLayout(
        ["data/kernels/a/boot/vmlinuz-1", "data/kernels/b/boot/vmlinuz-2", "data/kernels/a/lib/modules/1/x"],
        "i",
      ),
    ).toThrow(/several kernels/);
  });

  let tree: string;
  beforeAll(async () => {
    tree = await mkdtemp(join(tmpdir(), "kmx-oci-layout-"));
  });
  afterAll(async () => {
    await rm(tree, { recursive: true, force: true });
  });

  const disk = async (name: string, files: Record<string, string>, links: Record<string, string>) => {
    const root = join(tree, name);
    for (const [p, text] of Object.entries(files)) {
      await mkdir(join(root, p, ".."), { recursive: true });
      await writeFile(join(root, p), text);
    }
    for (const [p, target] of Object.entries(links)) {
      await mkdir(join(root, p, ".."), { recursive: true });
      await symlink(target, join(root, p));
    }
    return root;
  };

  it("tells systemd root disks from plain ones, following links inside the image only", async () => {
    // Merged /usr with absolute and relative links, as Debian and Fedora images have them.
    const merged = { bin: "usr/bin", sbin: "usr/sbin" };
    const files = { "usr/bin/dash": "", "usr/sbin/sshd": "", "usr/lib/systemd/systemd": "" };
    const systemd = await disk("systemd", files, {
      ...merged,
      "usr/bin/sh": "dash",
      "usr/sbin/init": "/usr/lib/systemd/systemd",
    });
    expect(await detectRootDiskLayout(systemd, "i")).toBe("systemd");
    const plain = await disk("plain", files, { ...merged, "usr/bin/sh": "/bin/dash" });
    expect(await detectRootDiskLayout(plain, "i")).toBe("container");
    // A link that climbs out of the image stays inside it (as in the guest): no host file is found.
    const climbing = await disk("escape", { "usr/sbin/sshd": "" }, { bin: "../../../../../../usr/bin" });
    await expect(detectRootDiskLayout(climbing, "img:1")).rejects.toThrow(
      "img:1: no /bin/sh: a root disk needs a shell",
    );
    const nossh = await disk("nossh", { "bin/sh": "" }, {});
    await expect(detectRootDiskLayout(nossh, "img:2")).rejects.toThrow(
      /^img:2: no \/usr\/sbin\/sshd: kmatrix reaches/,
    );
  });

  it("never writes through a link the image left in the way", async () => {
    const root = await disk("links", { "etc/hostname": "" }, { "etc/ssh": "/root/.ssh" });
    await expect(assertNoLinks(root, ["etc/ssh"], "img")).rejects.toThrow(
      "img: /etc/ssh is not a directory; kmatrix will not write through it",
    );
    await expect(assertNoLinks(root, ["etc/systemd/system"], "img")).resolves.toBeUndefined();
  });
});

describe("image references", () => {
  it("parses registries, ports, tags and digests as docker does", () => {
    const d = `sha256:${"a".repeat(64)}`;
    expect(parseImageRef("debian")).toEqual({
      registry: "docker.io",
      repository: "library/debian",
      tag: "latest",
    });
    expect(parseImageRef("falcosecurity/x:1")).toEqual({
      registry: "docker.io",
      repository: "falcosecurity/x",
      tag: "1",
    });
    expect(parseImageRef("127.0.0.1:5000/kmatrix/root:plain")).toEqual({
      registry: "127.0.0.1:5000",
      repository: "kmatrix/root",
      tag: "plain",
    });
    expect(
      parseImageRef(`ghcr.io/falcosecurity/kernel-testing/ubuntu-kernel:6.5-x86_64-v0.4.0@${d}`),
    ).toEqual({
      registry: "ghcr.io",
      repository: "falcosecurity/kernel-testing/ubuntu-kernel",
      tag: "6.5-x86_64-v0.4.0",
      digest: d,
    });
    expect(dockerTransport(parseImageRef("localhost/a:b"), d)).toBe(`docker://localhost/a@${d}`);
    expect(() => parseImageRef("UPPER/case")).toThrow(/not an image reference/);
  });

  it("picks the machine's architecture out of a multi-architecture index", () => {
    const index = JSON.stringify({
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [
        { digest: "sha256:amd", platform: { os: "linux", architecture: "amd64" } },
        { digest: "sha256:v7", platform: { os: "linux", architecture: "arm", variant: "v7" } },
        { digest: "sha256:arm", platform: { os: "linux", architecture: "arm64", variant: "v8" } },
      ],
    });
    expect(selectPlatform(index, "x86_64", "i")).toBe("sha256:amd");
    expect(selectPlatform(index, "aarch64", "i")).toBe("sha256:arm");
    const amdOnly = JSON.stringify({
      mediaType: "application/vnd.docker.distribution.manifest.list.v2+json",
      manifests: [{ digest: "sha256:amd", platform: { os: "linux", architecture: "amd64" } }],
    });
    expect(() => selectPlatform(amdOnly, "aarch64", "reg/x:1")).toThrow(
      "reg/x:1: no linux/arm64 image in its index (it has: amd64)",
    );
    // An image manifest is the image: no choice to make.
    expect(selectPlatform(JSON.stringify({ schemaVersion: 2, layers: [] }), "aarch64", "i")).toBeUndefined();
  });
});

describe("OCI machines in the matrix", () => {
  const REG = "127.0.0.1:5000";
  const text = `
registries: { "${REG}": { tlsVerify: false } }
machines:
  - name: falco
    arch: x86_64
    kernel: { source: oci, image: ${REG}/k:6.1 }
    rootfs: { source: oci, image: ghcr.io/o/root:1 }
  - name: mixed
    arch: [x86_64, aarch64]
    kernel: { source: oci, image: quay.io/lvh-images/kernel-images:6.6-main }
`;
  it("expands sources, the registry's TLS setting, and a Debian root disk by default", () => {
    const m = parseMatrix(text, "k.yaml");
    expect(m.machines.map((x) => [x.id, x.kernel, x.rootfs])).toEqual([
      [
        "falco@x86_64",
        { source: "oci", image: `${REG}/k:6.1`, tlsVerify: false },
        { source: "oci", image: "ghcr.io/o/root:1", tlsVerify: true },
      ],
      [
        "mixed@x86_64",
        { source: "oci", image: "quay.io/lvh-images/kernel-images:6.6-main", tlsVerify: true },
        { source: "debian", suite: "bookworm" },
      ],
      [
        "mixed@aarch64",
        { source: "oci", image: "quay.io/lvh-images/kernel-images:6.6-main", tlsVerify: true },
        { source: "debian", suite: "bookworm" },
      ],
    ]);
  });

  it("rejects a bad reference in one line naming the field", () => {
    const bad = text.replace("ghcr.io/o/root:1", "ghcr.io/O/root:1");
    expect(() => parseMatrix(bad, "k.yaml")).toThrow(UsageError);
    expect(() => parseMatrix(bad, "k.yaml")).toThrow(
      /^k\.yaml: machines\[0\]\.rootfs\.image: expected an image reference/,
    );
    expect(() => parseMatrix(text.replace("k:6.1", "K/x:6.1"), "k.yaml")).toThrow(
      /^k\.yaml: machines\[0\]\.kernel\.image: expected an image reference/,
    );
    expect(() =>
      parseMatrix(
        text.replace(
          "rootfs: { source: oci, image: ghcr.io/o/root:1 }",
          "rootfs: { source: oci, image: ghcr.io/o/root:1 }\n    packages: [strace]",
        ),
        "k.yaml",
      ),
    ).toThrow(
      "k.yaml: machines[0].packages: Debian packages go into Debian root disks only (rootfs.source is oci)",
    );
    expect(() => parseMatrix(text.replace("tlsVerify: false", "tlsVerify: no-way"), "k.yaml")).toThrow(
      /^k\.yaml: registries\.127\.0\.0\.1:5000\.tlsVerify: /,
    );
  });

  it("keys an OCI kernel by its manifest digest for the architecture, not by the tag", () => {
    const key = (digest: string, arch: string) => contentKey({ v: 1, source: "oci", digest, arch });
    expect(key("sha256:a", "x86_64")).toBe(key("sha256:a", "x86_64"));
    expect(key("sha256:a", "x86_64")).not.toBe(key("sha256:b", "x86_64"));
    expect(key("sha256:a", "x86_64")).not.toBe(key("sha256:a", "aarch64"));
  });
});
