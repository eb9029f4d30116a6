/**
 * Reads the kernel modules out of an initrd (newc cpio, possibly compressed, possibly several
 * archives one after the other): Falco's kernel images ship no lib/modules, only the modules
 * their initrd loads (virtio_mmio, virtio_blk, …), which kmatrix's own initrd then loads.
 * Only regular files named `*.ko[.xz|.zst|.gz]` are taken, by base name: no path, link or device
 * from the archive reaches the host.
 */
import { gunzipSync } from "node:zlib";
import { execa } from "execa";

export interface CpioFile {
  name: string;
  mode: number;
  data: Buffer;
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;

/** Every entry of a (decompressed) newc archive sequence, data included for regular files. */
export async function readInitrd(buf: Buffer): Promise<CpioFile[]> {
  const files: CpioFile[] = [];
  let rest: Buffer | undefined = buf;
  for (let archives = 0; rest && rest.length > 0 && archives < 8; archives++) {
    const plain = await decompress(rest);
    rest = readNewc(plain, files);
  }
  return files;
}

/** Module files of an initrd, by base name (`virtio_blk.ko` → its bytes). */
export async function modulesOfInitrd(buf: Buffer): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const f of await readInitrd(buf)) {
    if ((f.mode & S_IFMT) !== S_IFREG) continue;
    const base = f.name.split("/").pop() ?? "";
    if (/^[A-Za-z0-9_-]+\.ko(\.xz|\.zst|\.gz)?$/.test(base)) out.set(base, f.data);
  }
  return out;
}

/** Parses one newc archive; returns what follows its trailer (the next archive), if anything. */
function readNewc(buf: Buffer, files: CpioFile[]): Buffer | undefined {
  let o = 0;
  while (o + 110 <= buf.length) {
    const magic = buf.toString("latin1", o, o + 6);
    if (magic !== "070701" && magic !== "070702") throw new Error(`initrd: not a newc cpio archive at ${o}`);
    const field = (i: number) => Number.parseInt(buf.toString("latin1", o + 6 + i * 8, o + 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const namesize = field(11);
    const name = buf.toString("latin1", o + 110, o + 110 + namesize - 1);
    const dataAt = align4(o + 110 + namesize);
    if (dataAt + size > buf.length) throw new Error(`initrd: ${name} is truncated`);
    o = align4(dataAt + size);
    if (name === "TRAILER!!!") {
      while (o < buf.length && buf[o] === 0) o++;
      return o < buf.length ? buf.subarray(o) : undefined;
    }
    files.push({ name, mode, data: buf.subarray(dataAt, dataAt + size) });
  }
  return undefined;
}

const align4 = (n: number) => (n + 3) & ~3;

/** By magic number; the kernel's own formats that Debian can undo. */
async function decompress(buf: Buffer): Promise<Buffer> {
  const hex = buf.subarray(0, 6).toString("hex");
  const tool = hex.startsWith("1f8b")
    ? "gzip"
    : hex === "fd377a585a00"
      ? "xz"
      : hex.startsWith("28b52ffd")
        ? "zstd"
        : hex.startsWith("02214c18") || hex.startsWith("04224d18")
          ? "lz4"
          : undefined;
  if (!tool) return buf;
  // gzip in-process (the common case); a concatenated archive after it is not supported by gunzip.
  if (tool === "gzip") return gunzipSync(buf);
  const { stdout } = await execa(tool, ["-dc"], { input: buf, encoding: "buffer", stripFinalNewline: false });
  return Buffer.from(stdout);
}
