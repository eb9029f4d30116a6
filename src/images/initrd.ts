import { createReadStream, createWriteStream } from "node:fs";
import { chmod, copyFile, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { execa } from "execa";
import type { Arch } from "../config/types.js";
import { BARE_INIT, STAGE1_INIT, STAGE2_INIT } from "./guest-init.js";

/**
 * What the initrd must load before the root disk can be mounted and the guest reached. Listed by
 * module name; whichever of them a kernel has built in is simply skipped.
 * virtio_mmio serves QEMU's `microvm` machine, virtio_pci everything else; virtio_rng keeps sshd
 * from waiting for entropy on old kernels.
 */
export const BOOT_MODULES = ["virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_rng", "ext4"];

export interface InitrdInputs {
  arch: Arch;
  /** lib/modules/<release> of the unpacked kernel. */
  modulesDir: string;
  /** A static busybox for the target architecture. */
  busybox: string;
  authorizedKey: string;
  /** The stage 1 init for the machine's root disk (guest-init.ts); default STAGE1_INIT. */
  stage1?: string;
}

/** Builds a gzip'd newc initrd; returns the modules it loads, in load order. */
export async function buildInitrd(inputs: InitrdInputs, workDir: string, out: string): Promise<string[]> {
  const root = join(workDir, "initrd-root");
  await rm(root, { recursive: true, force: true });
  for (const d of ["bin", "dev", "proc", "sys", "newroot", "modules"])
    await mkdir(join(root, d), { recursive: true });
  await copyFile(inputs.busybox, join(root, "bin/busybox"));
  await chmod(join(root, "bin/busybox"), 0o755);
  await writeFile(join(root, "init"), inputs.stage1 ?? STAGE1_INIT, { mode: 0o755 });
  await writeFile(join(root, "stage2"), STAGE2_INIT, { mode: 0o755 });
  await writeFile(join(root, "authorized_keys"), `${inputs.authorizedKey}\n`, { mode: 0o600 });

  const index = await indexModules(inputs.modulesDir);
  const order = await loadOrder(BOOT_MODULES, index);
  for (const name of order) {
    const file = index.files.get(name);
    if (!file) continue;
    await decompressModule(file, join(root, "modules", `${name}.ko`));
  }
  await writeFile(join(root, "modules/order"), `${order.join("\n")}\n`);
  await writeCpio(root, out);
  return order;
}

/** An initrd of busybox alone whose init prints BARE_MARKER and powers off. */
export async function buildBareInitrd(busybox: string, workDir: string, out: string): Promise<void> {
  const root = join(workDir, "bare-root");
  await rm(root, { recursive: true, force: true });
  await mkdir(join(root, "bin"), { recursive: true });
  await copyFile(busybox, join(root, "bin/busybox"));
  await chmod(join(root, "bin/busybox"), 0o755);
  await writeFile(join(root, "init"), BARE_INIT, { mode: 0o755 });
  await writeCpio(root, out);
  await rm(root, { recursive: true, force: true });
}

interface ModuleIndex {
  /** Module name (underscores) → path of its .ko / .ko.xz / .ko.zst file. */
  files: Map<string, string>;
  builtin: Set<string>;
  /** Whether the kernel says what it has built in (modules.builtin); OCI kernels may not. */
  knowsBuiltin: boolean;
}

const normalise = (name: string) => name.replaceAll("-", "_");

async function indexModules(modulesDir: string): Promise<ModuleIndex> {
  const files = new Map<string, string>();
  for (const entry of await readdir(modulesDir, { recursive: true })) {
    const m = /([^/]+)\.ko(\.xz|\.zst|\.gz)?$/.exec(entry);
    if (m?.[1]) files.set(normalise(m[1]), join(modulesDir, entry));
  }
  const builtinText = await readFile(join(modulesDir, "modules.builtin"), "utf8").catch(() => undefined);
  const knowsBuiltin = builtinText !== undefined;
  const builtin = new Set(
    (builtinText ?? "")
      .split("\n")
      .map((l) => /([^/]+)\.ko$/.exec(l.trim())?.[1])
      .filter((n): n is string => !!n)
      .map(normalise),
  );
  return { files, builtin, knowsBuiltin };
}

/**
 * Dependencies first. Debian's kernel packages ship no modules.dep, so the order comes from each
 * module's own `.modinfo` (`depends=`), read with modinfo(8), which handles foreign architectures
 * and compressed modules.
 */
async function loadOrder(wanted: string[], index: ModuleIndex): Promise<string[]> {
  const order: string[] = [];
  const visiting = new Set<string>();
  const visit = async (name: string, requiredBy?: string): Promise<void> => {
    if (order.includes(name) || visiting.has(name) || index.builtin.has(name)) return;
    const file = index.files.get(name);
    if (!file) {
      // Only a dependency that is missing is fatal; a wanted module may just not exist here.
      if (requiredBy) throw new Error(`module ${requiredBy} depends on ${name}, which the kernel lacks`);
      return;
    }
    visiting.add(name);
    const { stdout } = await execa("modinfo", ["-F", "depends", file]);
    for (const dep of stdout
      .split(",")
      .map((d) => normalise(d.trim()))
      .filter(Boolean))
      await visit(dep, name);
    visiting.delete(name);
    order.push(name);
  };
  for (const name of wanted) await visit(name);
  // A kernel that does not list its built-in modules (Falco's images) is trusted to have
  // virtio_blk built in; stage 1 says so plainly if /dev/vda never shows up.
  if (!order.includes("virtio_blk") && !index.builtin.has("virtio_blk") && index.knowsBuiltin)
    throw new Error(`kernel has no virtio_blk module: cannot reach the root disk`);
  return order;
}

/** busybox insmod takes plain ELF only, so modules are stored decompressed. */
async function decompressModule(file: string, out: string): Promise<void> {
  const tool = file.endsWith(".xz")
    ? "xz"
    : file.endsWith(".zst")
      ? "zstd"
      : file.endsWith(".gz")
        ? "gzip"
        : "";
  if (!tool) return copyFile(file, out);
  await execa(tool, ["-dc", file], { stdout: { file: out } });
}

/** The newc archive is written by cpio(1) from a file list, then gzip'd in-process. */
async function writeCpio(root: string, out: string): Promise<void> {
  const entries = (await readdir(root, { recursive: true })).map((e) => relative(root, join(root, e)));
  const raw = `${out}.cpio`;
  await execa("cpio", ["--create", "--format=newc", "--quiet", "--owner=0:0", `--file=${raw}`], {
    cwd: root,
    input: `${[".", ...entries].join("\n")}\n`,
  });
  await pipeline(createReadStream(raw), createGzip({ level: 6 }), createWriteStream(out));
  await rm(raw);
}
