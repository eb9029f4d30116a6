import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import type { DebianArchive, ResolvedKernel } from "./debian-archive.js";

export interface ExtractedKernel {
  /** Root of the unpacked packages: boot/vmlinuz-<release>, lib/modules/<release>/… */
  root: string;
  vmlinuz: string;
  modulesDir: string;
}

/** Downloads the kernel's packages and unpacks them (dpkg-deb reads foreign-architecture .debs). */
export async function extractKernel(
  archive: DebianArchive,
  kernel: ResolvedKernel,
  into: string,
): Promise<ExtractedKernel> {
  await rm(into, { recursive: true, force: true });
  await mkdir(into, { recursive: true });
  for (const pkg of kernel.packages) {
    const deb = await archive.download(pkg);
    await execa("dpkg-deb", ["-x", deb, into]);
  }
  const boot = await readdir(join(into, "boot")).catch(() => [] as string[]);
  const image =
    boot.find((f) => f === `vmlinuz-${kernel.release}`) ?? boot.find((f) => f.startsWith("vmlinu"));
  if (!image) throw new Error(`kernel ${kernel.release}: no /boot/vmlinuz in ${kernel.imagePackage}`);
  // Debian moved modules from /lib to /usr/lib (usrmerge); accept either.
  for (const base of ["lib/modules", "usr/lib/modules"]) {
    const modulesDir = join(into, base, kernel.release);
    if (
      await readdir(modulesDir).then(
        () => true,
        () => false,
      )
    )
      return { root: into, vmlinuz: join(into, "boot", image), modulesDir };
  }
  throw new Error(`kernel ${kernel.release}: no modules directory in ${kernel.imagePackage}`);
}
