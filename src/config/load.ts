/** Reads the matrix file, validates it and expands it into one Machine per (entry, arch). */
import { existsSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { checkBuildSpec } from "../images/build/spec.js";
import { parseImageRef } from "../images/oci/reference.js";
import { UsageError } from "../util/errors.js";
import { parseYamlFile } from "../util/yaml-file.js";
import { DEFAULT_MATRIX_ORIGIN, DEFAULT_MATRIX_YAML } from "./default.js";
import { type MatrixFile, MatrixFileSchema } from "./schema.js";
import {
  type Arch,
  type ArchiveSettings,
  type KernelSource,
  LOCAL_KERNEL_IMAGE,
  LOCAL_KERNEL_RELEASE_FILE,
  type Machine,
  type Matrix,
  type OciSource,
  type RootfsSource,
  type VmSettings,
} from "./types.js";

export const DEFAULT_VM: VmSettings = {
  cpus: 2,
  memoryMiB: 2048,
  accel: "auto",
  bootTimeoutSec: 300,
  kernelArgs: [],
  internet: false,
};
/** The root disk of a machine whose kernel is not Debian's: Debian's newest stable. */
export const DEFAULT_ROOTFS_SUITE = "bookworm";
export const DEFAULT_ARCHIVE: ArchiveSettings = {
  mirror: "http://deb.debian.org/debian",
  securityMirror: "http://deb.debian.org/debian-security",
};

/**
 * `configPath` (relative to cwd) if given, else `kmatrix.yaml` in cwd if it exists, else the embedded
 * default. Every problem is a one-line UsageError.
 */
export async function loadMatrix(opts: { configPath?: string; cwd?: string } = {}): Promise<Matrix> {
  const cwd = opts.cwd ?? process.cwd();
  if (opts.configPath !== undefined) {
    const text = await readIfExists(path.resolve(cwd, opts.configPath), opts.configPath);
    if (text === undefined) throw new UsageError(`${opts.configPath}: config file not found`);
    return parseMatrix(text, opts.configPath, path.dirname(path.resolve(cwd, opts.configPath)));
  }
  const local = path.resolve(cwd, "kmatrix.yaml");
  const origin = displayPath(local);
  const text = await readIfExists(local, origin);
  return text === undefined
    ? parseMatrix(DEFAULT_MATRIX_YAML, DEFAULT_MATRIX_ORIGIN)
    : parseMatrix(text, origin, cwd);
}

async function readIfExists(file: string, shown: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new UsageError(`${shown}: cannot read config file: ${(err as Error).message}`);
  }
}

/** Relative to the process cwd when below it (short messages), else absolute. */
function displayPath(abs: string): string {
  const rel = path.relative(process.cwd(), abs);
  return rel && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel : abs;
}

/** Pure: YAML text → validated, expanded matrix. `origin` prefixes every error message. */
export function parseMatrix(text: string, origin: string, baseDir = process.cwd()): Matrix {
  const file = parseYamlFile(text, origin, MatrixFileSchema, 'expected a "machines:" list');

  const archive: ArchiveSettings = {
    // Without a trailing slash so that consumers can append `/dists/...`.
    mirror: (file.archive?.mirror ?? DEFAULT_ARCHIVE.mirror).replace(/\/+$/, ""),
    securityMirror: (file.archive?.securityMirror ?? DEFAULT_ARCHIVE.securityMirror).replace(/\/+$/, ""),
  };
  // Relative to the config file, like `sources:`.
  if (file.archive?.keyring) archive.keyring = path.resolve(baseDir, file.archive.keyring);
  const machines: Machine[] = [];
  const definedBy = new Map<string, number>(); // machine id → index of its entry
  file.machines.forEach((entry, i) => {
    for (const arch of entry.arch) {
      const id = `${entry.name}@${arch}`;
      const prev = definedBy.get(id);
      if (prev === i) throw new UsageError(`${origin}: machines[${i}].arch: "${arch}" is listed twice`);
      if (prev !== undefined) {
        throw new UsageError(
          `${origin}: machines[${i}]: machine "${id}" is already defined by machines[${prev}]`,
        );
      }
      definedBy.set(id, i);
      const kernel: KernelSource =
        entry.kernel.source === "local"
          ? {
              source: "local",
              path: localBuildDir(entry.kernel.path, arch, baseDir, `${origin}: machines[${i}]`),
            }
          : entry.kernel.source === "oci"
            ? ociSource(entry.kernel.image, file.registries)
            : entry.kernel.source === "build"
              ? checkBuildSpec(entry.kernel, arch, baseDir, `${origin}: machines[${i}]`)
              : { ...entry.kernel };
      const suite = entry.kernel.source === "debian" ? entry.kernel.suite : DEFAULT_ROOTFS_SUITE;
      if (entry.rootfs?.source === "oci" && entry.packages.length > 0)
        throw new UsageError(
          `${origin}: machines[${i}].packages: Debian packages go into Debian root disks only (rootfs.source is oci)`,
        );
      const rootfs: RootfsSource = !entry.rootfs
        ? { source: "debian", suite }
        : entry.rootfs.source === "oci"
          ? ociSource(entry.rootfs.image, file.registries)
          : { ...entry.rootfs };
      machines.push({
        name: entry.name,
        arch,
        id,
        kernel,
        rootfs,
        packages: [...entry.packages],
        vm: { ...DEFAULT_VM, ...file.vm, ...entry.vm },
        ...(entry.builderOnly && { builderOnly: true }),
      });
    }
  });
  const sources = Object.entries(file.sources ?? {}).map(([name, spec]) => ({ name, spec, baseDir }));
  const builderMachines = new Map<string, string>();
  for (const [builder, { machine }] of Object.entries(file.builders ?? {})) {
    if (!machines.some((m) => m.name === machine))
      throw new UsageError(`${origin}: builders.${builder}.machine: no machine "${machine}" in this file`);
    builderMachines.set(builder, machine);
  }
  return { origin, archive, machines, sources, builderMachines };
}

/** An OCI source with its registry's settings from the file's `registries:`. */
function ociSource(image: string, registries: MatrixFile["registries"]): OciSource {
  return { source: "oci", image, tlsVerify: registries?.[parseImageRef(image).registry]?.tlsVerify ?? true };
}

/**
 * A local kernel's build directory, absolute (relative to the config file), checked for what kmatrix
 * takes from it: its release and the architecture's image (a UsageError naming the field otherwise).
 */
function localBuildDir(given: string, arch: Arch, baseDir: string, where: string): string {
  const dir = path.resolve(baseDir, given);
  const field = `${where}.kernel.path`;
  if (!existsSync(dir)) throw new UsageError(`${field}: ${given}: no such directory`);
  if (!statSync(dir).isDirectory()) throw new UsageError(`${field}: ${given}: not a directory`);
  if (!existsSync(path.join(dir, LOCAL_KERNEL_RELEASE_FILE)))
    throw new UsageError(
      `${field}: ${given}: no ${LOCAL_KERNEL_RELEASE_FILE} (not a built kernel tree: run make first)`,
    );
  const image = LOCAL_KERNEL_IMAGE[arch];
  if (!existsSync(path.join(dir, image)))
    throw new UsageError(`${field}: ${given}: no ${image}, the kernel image for ${arch}`);
  return dir;
}

/**
 * Filters by arch, then keeps machines whose name matches any glob (`*`, `?`); a pattern containing
 * `@` is matched against the id (`name@arch`) instead. A pattern that matches nothing is a
 * UsageError so that a typo does not silently test nothing.
 */
export function selectMachines(matrix: Matrix, opts: { arch?: Arch; patterns?: string[] } = {}): Machine[] {
  const testMachines = matrix.machines.filter((m) => !m.builderOnly);
  const pool = opts.arch ? testMachines.filter((m) => m.arch === opts.arch) : testMachines;
  const onArch = opts.arch ? ` for ${opts.arch}` : "";
  if (pool.length === 0) throw new UsageError(`${matrix.origin}: no machines${onArch}`);
  const patterns = opts.patterns ?? [];
  if (patterns.length === 0) return pool;
  const matchers = patterns.map((pat) => ({ pat, re: globToRegExp(pat), id: pat.includes("@"), hit: false }));
  const selected = pool.filter((m) => {
    let keep = false;
    for (const g of matchers) {
      if (g.re.test(g.id ? m.id : m.name)) keep = g.hit = true;
    }
    return keep;
  });
  const miss = matchers.find((g) => !g.hit);
  if (miss) {
    const names = [...new Set(pool.map((m) => m.name))].join(", ");
    throw new UsageError(
      `no machine${onArch} matches "${miss.pat}" (machines in ${matrix.origin}: ${names})`,
    );
  }
  return selected;
}

/** `*` = any run of characters, `?` = one character, everything else literal (so `.` is a dot). */
export function globToRegExp(glob: string): RegExp {
  const body = [...glob]
    .map((c) => (c === "*" ? ".*" : c === "?" ? "." : c.replace(/[\\^$.|+()[\]{}]/g, "\\$&")))
    .join("");
  return new RegExp(`^${body}$`);
}

/** Plain aligned table for `kmatrix machines` (no trailing newline). */
export function describeMachines(machines: readonly Machine[]): string {
  const rows = [
    ["NAME", "ARCH", "KERNEL", "ROOTFS", "CPUS", "MEMORY", "ACCEL"],
    ...machines.map((m) => [
      m.builderOnly ? `${m.name} (builders only)` : m.name,
      m.arch,
      m.kernel.source === "debian"
        ? `${m.kernel.source} ${m.kernel.suite} ${m.kernel.flavour}`
        : m.kernel.source === "oci"
          ? `oci ${m.kernel.image}`
          : m.kernel.source === "build"
            ? `${m.kernel.source} ${m.kernel.tree}`
            : `${m.kernel.source} ${m.kernel.path}`,
      m.rootfs.source === "oci" ? `oci ${m.rootfs.image}` : `${m.rootfs.source} ${m.rootfs.suite}`,
      String(m.vm.cpus),
      `${m.vm.memoryMiB} MiB`,
      m.vm.accel,
    ]),
  ];
  const widths = rows[0]?.map((_, col) => Math.max(...rows.map((r) => (r[col] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((cell, col) => cell.padEnd(widths[col] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}
