/**
 * What kmatrix reads from a Falco-layout kernel file (`/boot/vmlinux`): on x86_64 an ELF, its PVH
 * entry note (how QEMU boots an ELF kernel); on arm64 the flat `Image` QEMU boots, made from an
 * ELF, taken as is, or decompressed from gzip; the release of either.
 * Pure functions over a Buffer; 64-bit little-endian ELF only (every kernel kmatrix boots).
 */
import { gunzipSync } from "node:zlib";

export const PT_LOAD = 1;
const PT_NOTE = 4;
/** XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit physical entry point of the PVH boot protocol. */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;
export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;

export interface ElfSegment {
  type: number;
  offset: number;
  vaddr: bigint;
  paddr: bigint;
  filesz: number;
  memsz: number;
}

export interface ElfHeader {
  machine: number;
  entry: bigint;
  segments: ElfSegment[];
}

export function isElf(buf: Buffer): boolean {
  return buf.length >= 64 && buf.readUInt32BE(0) === 0x7f454c46;
}

/** The header and program headers; throws with the reason when it is not an ELF kmatrix reads. */
export function readElf(buf: Buffer): ElfHeader {
  if (!isElf(buf)) throw new Error("not an ELF file");
  if (buf[4] !== 2) throw new Error("not a 64-bit ELF file");
  if (buf[5] !== 1) throw new Error("not a little-endian ELF file");
  const machine = buf.readUInt16LE(18);
  const entry = buf.readBigUInt64LE(24);
  const phoff = Number(buf.readBigUInt64LE(32));
  const phentsize = buf.readUInt16LE(54);
  const phnum = buf.readUInt16LE(56);
  if (phoff + phnum * phentsize > buf.length) throw new Error("truncated ELF program headers");
  const segments: ElfSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    segments.push({
      type: buf.readUInt32LE(o),
      offset: Number(buf.readBigUInt64LE(o + 8)),
      vaddr: buf.readBigUInt64LE(o + 16),
      paddr: buf.readBigUInt64LE(o + 24),
      filesz: Number(buf.readBigUInt64LE(o + 32)),
      memsz: Number(buf.readBigUInt64LE(o + 40)),
    });
  }
  return { machine, entry, segments };
}

export interface ElfNote {
  name: string;
  type: number;
  desc: Buffer;
}

/** The notes of every PT_NOTE segment (4-byte aligned, as the kernel emits them). */
export function elfNotes(buf: Buffer, elf = readElf(buf)): ElfNote[] {
  const notes: ElfNote[] = [];
  for (const seg of elf.segments.filter((s) => s.type === PT_NOTE)) {
    let o = seg.offset;
    const end = Math.min(seg.offset + seg.filesz, buf.length);
    while (o + 12 <= end) {
      const namesz = buf.readUInt32LE(o);
      const descsz = buf.readUInt32LE(o + 4);
      const type = buf.readUInt32LE(o + 8);
      const nameAt = o + 12;
      const descAt = nameAt + align4(namesz);
      if (descAt + descsz > end) break;
      notes.push({
        name: buf.toString("latin1", nameAt, nameAt + namesz).replace(/\0+$/, ""),
        type,
        desc: buf.subarray(descAt, descAt + descsz),
      });
      o = descAt + align4(descsz);
    }
  }
  return notes;
}

const align4 = (n: number) => (n + 3) & ~3;

/**
 * The PVH entry (XEN_ELFNOTE_PHYS32_ENTRY in a "Xen" note): QEMU's x86 `-kernel` boots an ELF
 * vmlinux only through it, so a kernel without one (built without CONFIG_PVH) cannot boot
 * uncompressed. Returns the physical entry address, or undefined when the note is missing.
 */
export function pvhEntry(buf: Buffer): number | undefined {
  const note = elfNotes(buf).find((n) => n.name === "Xen" && n.type === XEN_ELFNOTE_PHYS32_ENTRY);
  if (!note || note.desc.length < 4) return undefined;
  return note.desc.readUInt32LE(0);
}

/** `uname -r` of a kernel image, from its banner (`Linux version <release> (…`). */
export function kernelRelease(buf: Buffer): string | undefined {
  const needle = Buffer.from("Linux version ");
  for (let at = buf.indexOf(needle); at >= 0; at = buf.indexOf(needle, at + 1)) {
    const m = /^Linux version ([^\s%()]+) \(/.exec(buf.toString("latin1", at, at + 256));
    if (m?.[1]) return m[1];
  }
  return undefined;
}

/** The arm64 boot header's magic ("ARM\x64" at offset 56), which QEMU's virt machine checks. */
export const ARM64_IMAGE_MAGIC = 0x644d5241;

/**
 * An arm64 vmlinux turned into the `Image` QEMU boots (what the kernel's own
 * `objcopy -O binary vmlinux Image` does): the loadable segments' bytes laid out from the lowest
 * address, gaps zeroed, bss left out (the kernel clears it; the header's image_size covers it).
 * QEMU's `-kernel` also accepts an ELF on virt, but boots it as a bare-metal program: no device
 * tree address in x0, and an arm64 vmlinux is linked at virtual addresses outside RAM.
 */
export function arm64ImageFromElf(buf: Buffer): Buffer {
  const elf = readElf(buf);
  if (elf.machine !== EM_AARCH64) throw new Error(`not an arm64 kernel (ELF machine ${elf.machine})`);
  const loads = elf.segments
    .filter((s) => s.type === PT_LOAD && s.filesz > 0)
    .sort((a, b) => (a.paddr < b.paddr ? -1 : 1));
  const base = loads[0]?.paddr;
  if (base === undefined) throw new Error("no loadable segment");
  const end = loads.reduce((m, s) => Math.max(m, Number(s.paddr - base) + s.filesz), 0);
  if (end > 1024 ** 3) throw new Error("loadable segments span more than 1 GiB");
  const out = Buffer.alloc(end);
  for (const s of loads) buf.copy(out, Number(s.paddr - base), s.offset, s.offset + s.filesz);
  if (out.length < 64 || out.readUInt32LE(56) !== ARM64_IMAGE_MAGIC)
    throw new Error("no arm64 boot header (ARM\\x64 magic) at the start of the kernel's text");
  return out;
}

/** The largest arm64 kernel kmatrix decompresses (a gzip bomb stops there). */
const MAX_ARM64_IMAGE = 1024 ** 3;

/** How an arm64 kernel file was turned into the `Image` QEMU boots. */
export type Arm64ImageFrom = "elf" | "image" | "gzip";

/**
 * The arm64 `Image` in a kernel file: an ELF vmlinux laid out as `objcopy -O binary` does, a raw
 * Image (what Firecracker boots, so what Falco's aarch64 images hold) as is, or a gzip-compressed
 * Image (distributions' arm64 vmlinuz) decompressed. Throws with what the file is otherwise.
 */
export function arm64Image(buf: Buffer): { bytes: Buffer; from: Arm64ImageFrom } {
  if (isElf(buf)) return { bytes: arm64ImageFromElf(buf), from: "elf" };
  if (isArm64Image(buf)) return { bytes: checkedArm64Image(buf), from: "image" };
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    let inner: Buffer;
    try {
      inner = gunzipSync(buf, { maxOutputLength: MAX_ARM64_IMAGE });
    } catch (err) {
      throw new Error(`gzip data that does not decompress (${(err as Error).message})`);
    }
    if (isArm64Image(inner)) return { bytes: checkedArm64Image(inner), from: "gzip" };
    throw new Error(`gzip-compressed, but what it holds is ${describeKernelFile(inner)}`);
  }
  throw new Error(describeKernelFile(buf));
}

function isArm64Image(buf: Buffer): boolean {
  return buf.length >= 64 && buf.readUInt32LE(56) === ARM64_IMAGE_MAGIC;
}

/** The header's flags (valid when image_size is set, Linux >= 3.17): bit 0 is big-endian. */
function checkedArm64Image(buf: Buffer): Buffer {
  const imageSize = buf.readBigUInt64LE(16);
  if (imageSize !== 0n && (buf.readBigUInt64LE(24) & 1n) === 1n)
    throw new Error("a big-endian arm64 Image (QEMU's virt runs little-endian kernels)");
  return buf;
}

/** What a file that is no bootable arm64 kernel is, in a few words, for an error message. */
export function describeKernelFile(buf: Buffer): string {
  if (buf.length === 0) return "an empty file";
  if (isElf(buf)) {
    try {
      return `an ELF file for machine ${readElf(buf).machine}`;
    } catch (err) {
      return `an ELF file kmatrix cannot read (${(err as Error).message})`;
    }
  }
  if (buf.length >= 0x206 && buf.toString("latin1", 0x202, 0x206) === "HdrS") return "an x86 bzImage";
  if (buf.length >= 64 && buf.toString("latin1", 0, 2) === "MZ" && buf.toString("latin1", 4, 8) === "zimg") {
    const method = buf.toString("latin1", 24, 56).replace(/\0.*$/s, "");
    return `an EFI zboot image (CONFIG_EFI_ZBOOT, ${method || "unknown"}-compressed), which kmatrix does not unpack`;
  }
  const hex = buf.subarray(0, 8).toString("hex");
  const compressed = hex.startsWith("fd377a585a00")
    ? "xz"
    : hex.startsWith("28b52ffd")
      ? "zstd"
      : hex.startsWith("02214c18") || hex.startsWith("04224d18")
        ? "lz4"
        : hex.startsWith("425a68")
          ? "bzip2"
          : hex.startsWith("5d0000")
            ? "lzma"
            : hex.startsWith("894c5a4f")
              ? "lzo"
              : undefined;
  if (compressed) return `${compressed}-compressed data (kmatrix decompresses gzip only)`;
  return `neither an ELF file nor an arm64 Image (no ARM\\x64 magic at offset 56; first bytes ${hex})`;
}
