/**
 * Booting an x86_64 ELF vmlinux without a PVH entry note (a kernel before 5.0, or one built without
 * CONFIG_PVH: CentOS 7's 3.10, RHEL 8's 4.18) the way Firecracker boots Falco's kernels. QEMU's
 * `-kernel` boots an ELF only through that note, so it boots kmatrix's shim instead
 * (entry.S, shim.c: a small freestanding program with a PVH note, compiled here with the host's gcc
 * into the kernel's cache entry), with the vmlinux and the initrd packed as its one module
 * (`packPvhModule`). The shim lays the kernel out and enters it through Linux's 64-bit boot
 * protocol; a fault it finds is one `KMATRIX-FATAL:` console line, which ends the boot with it.
 */
import { createReadStream, createWriteStream } from "node:fs";
import { readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { execa } from "execa";
import { PACKAGE_ROOT } from "../../util/package-root.js";
import { contentKey } from "../cache.js";
import { PT_LOAD, readElf } from "../oci/elf.js";

const SOURCES = join(PACKAGE_ROOT, "src/images/pvh-shim");
const SOURCE_FILES = ["entry.S", "shim.c", "shim.ld"];
/** The shim's file in a kernel's cache entry. */
export const PVH_SHIM = "pvh-shim.elf";

/** shim.c: struct module_header. */
const MODULE_MAGIC = "KMXPVH01";
const PAGE = 4096;
/** The shim is linked at 1 MiB and uses memory below 0x21000: a kernel's segments must lie above both. */
const LOWEST_SEGMENT = 0x200000n;
const FOUR_GIB = 2n ** 32n;

let shimKey: Promise<string> | undefined;
/** The shim's recipe: its sources and the compiler and linker that build it (read once per process). */
export function pvhShimKey(): Promise<string> {
  shimKey ??= (async () => {
    const sources = await Promise.all(SOURCE_FILES.map((f) => readFile(join(SOURCES, f), "utf8")));
    const firstLine = (r: { stdout: string }) => r.stdout.split("\n")[0];
    const gcc = firstLine(await execa("gcc", ["--version"]));
    const ld = firstLine(await execa("ld", ["--version"]));
    return contentKey({ sources, gcc, ld });
  })();
  return shimKey;
}

/** Compiles and links the shim into `into/pvh-shim.elf` (32-bit code, linked at 1 MiB). */
export async function buildPvhShim(into: string): Promise<string> {
  const cflags = ["-m32", "-ffreestanding", "-fno-pic", "-fno-pie", "-fno-stack-protector", "-fno-builtin"];
  const objects = [join(into, "pvh-entry.o"), join(into, "pvh-shim.o")];
  await execa("gcc", ["-m32", "-c", join(SOURCES, "entry.S"), "-o", objects[0] as string]);
  await execa("gcc", [
    ...cflags,
    "-O2",
    "-Wall",
    "-Werror",
    "-c",
    join(SOURCES, "shim.c"),
    "-o",
    objects[1] as string,
  ]);
  const out = join(into, PVH_SHIM);
  await execa("ld", [
    ...["-m", "elf_i386", "-T", join(SOURCES, "shim.ld"), "-nostdlib", "--build-id=none"],
    ...["-z", "noexecstack", "--no-warn-rwx-segments", "-o", out, ...objects],
  ]);
  await Promise.all(objects.map((o) => rm(o, { force: true })));
  return out;
}

/**
 * Whether the shim can boot this vmlinux: an entry and loadable segments at physical addresses
 * below 4 GiB and above the shim's own memory (a kernel links at 16 MiB). Returns the reason when
 * it cannot, for the one line that refuses the image.
 */
export function pvhShimRefusal(vmlinux: Buffer): string | undefined {
  const elf = readElf(vmlinux);
  if (elf.entry >= FOUR_GIB)
    return `its entry 0x${elf.entry.toString(16)} is not a physical address below 4 GiB`;
  for (const s of elf.segments.filter((x) => x.type === PT_LOAD && x.memsz > 0))
    if (s.paddr < LOWEST_SEGMENT || s.paddr + BigInt(s.memsz) > FOUR_GIB)
      return `a segment's physical address 0x${s.paddr.toString(16)} is outside 2 MiB–4 GiB`;
  return undefined;
}

/**
 * The shim's module: a header (shim.c: struct module_header), the vmlinux at 4 KiB, the initrd
 * after it at the next page (the kernel frees the initrd's pages whole).
 */
export async function packPvhModule(vmlinux: string, initrd: string, out: string): Promise<void> {
  const [k, i] = await Promise.all([stat(vmlinux), stat(initrd)]);
  const initrdOffset = Math.ceil((PAGE + k.size) / PAGE) * PAGE;
  const header = Buffer.alloc(PAGE); // 24 bytes of header, then zeros up to the vmlinux
  header.write(MODULE_MAGIC, 0, "latin1");
  header.writeUInt32LE(PAGE, 8);
  header.writeUInt32LE(k.size, 12);
  header.writeUInt32LE(initrdOffset, 16);
  header.writeUInt32LE(i.size, 20);
  const padding = Buffer.alloc(initrdOffset - PAGE - k.size);
  await pipeline(
    (async function* () {
      yield header;
      for await (const chunk of createReadStream(vmlinux)) yield chunk as Buffer;
      yield padding;
      for await (const chunk of createReadStream(initrd)) yield chunk as Buffer;
    })(),
    createWriteStream(out),
  );
}
