import { existsSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import type { DebianArchive, ResolvedKernel } from "../debian-archive.js";

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
  // Debian moved modules from /lib to /usr/lib (merged /usr); sid also moved the image next to them.
  const modulesDir = firstExisting(
    ["lib/modules", "usr/lib/modules"].map((d) => join(into, d, kernel.release)),
  );
  const vmlinuz = firstExisting([
    join(into, "boot", `vmlinuz-${kernel.release}`),
    ...(modulesDir ? [join(modulesDir, "vmlinuz")] : []),
  ]);
  if (!vmlinuz)
    throw new Error(
      `kernel ${kernel.release}: no vmlinuz in ${kernel.packages.map((p) => p.name).join(", ")}`,
    );
  if (modulesDir) return { root: into, vmlinuz, modulesDir };
  throw new Error(`kernel ${kernel.release}: no modules directory in ${kernel.imagePackage}`);
}

function firstExisting(paths: string[]): string | undefined {
  return paths.find((p) => existsSync(p));
}
