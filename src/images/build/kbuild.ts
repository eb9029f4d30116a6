/**
 * Running the kernel's own make for `source: build`: the toolchain (native, or Debian's cross gcc
 * for an arm64 target on an x86_64 host), configuring (base, fragments, required items,
 * olddefconfig, then a check of what survived) and building with progress lines. Every make runs
 * with an argument array (execa, no shell): config values and paths never become shell text.
 */

import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import type { Arch } from "../../config/types.js";
import { UsageError } from "../../util/errors.js";
import {
  type Conflict,
  describeConflict,
  describeDropped,
  droppedRequired,
  formatKconfig,
  type Kconfig,
  mergeKconfig,
  type NamedFragment,
  parseKconfig,
} from "./kconfig.js";
import { enablerConfig, requiredConfig } from "./required-config.js";
import { KERNEL_ARCH } from "./spec.js";

/** The architecture kmatrix runs on, in kmatrix's names. */
export function hostArch(): Arch | undefined {
  return process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "aarch64" : undefined;
}

export interface Toolchain {
  arch: Arch;
  /** `ARCH=…` and, when cross-compiling, `CROSS_COMPILE=…`: the make variables of every call. */
  makeVars: string[];
  cross: boolean;
  /** `gcc --version`'s first line (Debian's revision included) and pahole's version: keyed. */
  compiler: string;
  pahole: string;
}

/** The compiler for `arch` on this host, or a UsageError saying what to install. */
export async function toolchain(arch: Arch, field: string): Promise<Toolchain> {
  const host = hostArch();
  const cross = host !== arch;
  if (cross && !(host === "x86_64" && arch === "aarch64"))
    throw new UsageError(`${field}: building an ${arch} kernel on ${host ?? process.arch} is not supported`);
  const version = async (run: () => Promise<{ stdout: string }>, pkg: string) => {
    try {
      return (await run()).stdout.split("\n")[0]?.trim() ?? "";
    } catch {
      throw new UsageError(`${field}: building ${arch} kernels needs ${pkg}: apt-get install ${pkg}`);
    }
  };
  const compiler = cross
    ? await version(() => execa("aarch64-linux-gnu-gcc", ["--version"]), "gcc-aarch64-linux-gnu")
    : await version(() => execa("gcc", ["--version"]), "gcc");
  // BTF (a required item) needs pahole; kconfig drops DEBUG_INFO_BTF silently without it.
  const pahole = await version(() => execa("pahole", ["--version"]), "pahole");
  await version(() => execa("make", ["--version"]), "make");
  const makeVars = [`ARCH=${KERNEL_ARCH[arch].make}`, ...(cross ? ["CROSS_COMPILE=aarch64-linux-gnu-"] : [])];
  return { arch, makeVars, cross, compiler, pahole };
}

/** `make -C <tree> O=<out> <vars> <args>`; a failure throws with make's last lines. */
async function make(tree: string, out: string, tc: Toolchain, args: string[], what: string): Promise<string> {
  const r = await execa("make", ["-C", tree, `O=${out}`, ...tc.makeVars, ...args], {
    all: true,
    reject: false,
  });
  if (r.exitCode !== 0)
    throw new Error(`${what}: make ${args.join(" ")} failed: ${lastLines(r.all ?? "", 15)}`);
  return r.stdout;
}

function lastLines(text: string, n: number): string {
  return text.trim().split("\n").slice(-n).join(" | ");
}

export type BaseConfig = { target: string } | { file: string };

export interface ConfigureInput {
  tree: string;
  /** The O= directory (empty or new). */
  out: string;
  toolchain: Toolchain;
  base: BaseConfig;
  fragments: NamedFragment[];
  /** `machines[i].kernel`, for messages. */
  field: string;
  log: (line: string) => void;
}

export interface Configured {
  /** The final .config's text. */
  config: string;
  /** `make kernelrelease` of that config. */
  release: string;
  /** The required items fragments set otherwise (`fragment`: its index in the input's fragments). */
  conflicts: Conflict[];
}

/**
 * base (a make target, or a file through olddefconfig), then the enablers, the fragments, the
 * required items over them all, `make olddefconfig`; then every required item must still be there.
 */
export async function configure(input: ConfigureInput): Promise<Configured> {
  const { tree, out, toolchain: tc, field } = input;
  const dotConfig = join(out, ".config");
  await mkdir(out, { recursive: true });
  if ("target" in input.base) await make(tree, out, tc, [input.base.target], `${field}.config`);
  else {
    await copyFile(input.base.file, dotConfig);
    await make(tree, out, tc, ["olddefconfig"], `${field}.config`);
  }
  const base = parseKconfig(await readFile(dotConfig, "utf8"), `${field}.config`);
  const required = requiredConfig(tc.arch);
  const merged = mergeKconfig(new Map([...base, ...enablerConfig()]), input.fragments, required);
  for (const c of merged.conflicts) input.log(describeConflict(c));
  const conflicts = merged.conflicts.map((c) => ({
    ...c,
    fragment: String(input.fragments.findIndex((f) => f.name === c.fragment)),
  }));
  await writeFile(dotConfig, formatKconfig(merged.config));
  await make(tree, out, tc, ["olddefconfig"], `${field}.config`);
  const config = await readFile(dotConfig, "utf8");
  const dropped = droppedRequired(parseKconfig(config, ".config"), required);
  if (dropped.length)
    throw new UsageError(
      `${field}: the kernel config lacks what kmatrix machines need after olddefconfig: ${describeDropped(dropped)} (their dependencies are off in the config or fragments${dropped.some((d) => d.symbol === "CONFIG_DEBUG_INFO_BTF") ? "; BTF needs pahole >= 1.16 (Debian: pahole)" : ""})`,
    );
  // kernelrelease reads include/config/auto.conf (CONFIG_LOCALVERSION), which syncconfig writes.
  await make(tree, out, tc, ["-s", "syncconfig"], `${field}.config`);
  const release = (
    await make(tree, out, tc, ["-s", "--no-print-directory", "kernelrelease"], `${field}.tree`)
  )
    .trim()
    .split("\n")
    .pop();
  if (!release) throw new Error(`${field}.tree: make kernelrelease printed nothing`);
  return { config, release, conflicts };
}

/** Reads the fragments (a parse error names the fragment's field and line). */
export async function readFragments(paths: string[], field: string): Promise<NamedFragment[]> {
  return Promise.all(
    paths.map(async (path, i) => {
      const name = `${field}.fragments[${i}]`;
      return { name: `${name} (${path})`, config: parseKconfig(await readFile(path, "utf8"), name) };
    }),
  ).catch((err: Error) => {
    throw err instanceof UsageError ? err : new UsageError(err.message);
  });
}

/** Kbuild's short lines: `  CC      kernel/fork.o`, `  LD      vmlinux`, `  BTF     .btf.vmlinux.bin.o`. */
const KBUILD_STEP = /^\s{2}([A-Z][A-Z0-9_ [\]]{1,10}?)\s+(\S+)\s*$/;

/** How often a build says how far it is. */
const PROGRESS_EVERY_MS = 30_000;

export interface BuildProgress {
  steps: number;
  seconds: number;
}

/**
 * `make -j<cpus>` of the configured O= directory: vmlinux, the image, the modules. One progress line
 * every 30 s (steps so far, the last CC/LD target), the total at the end; a failure throws with
 * the compiler's last lines.
 */
export async function buildKernel(
  tree: string,
  out: string,
  tc: Toolchain,
  what: string,
  log: (line: string) => void,
): Promise<BuildProgress> {
  const started = Date.now();
  const jobs = availableParallelism();
  log(`${what}: make -j${jobs} ${tc.makeVars.join(" ")}`);
  const child = execa("make", ["-C", tree, `O=${out}`, ...tc.makeVars, `-j${jobs}`], {
    all: true,
    reject: false,
    buffer: false,
  });
  let steps = 0;
  let last = "";
  const tail: string[] = [];
  let nextReport = started + PROGRESS_EVERY_MS;
  const elapsed = () => formatSeconds((Date.now() - started) / 1000);
  child.all?.setEncoding("utf8");
  let pending = "";
  child.all?.on("data", (chunk: string) => {
    pending += chunk;
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const line of lines) {
      tail.push(line);
      if (tail.length > 30) tail.shift();
      const step = KBUILD_STEP.exec(line);
      if (!step) continue;
      steps++;
      if (/^(CC|LD|AR|AS|BTF)/.test(step[1] ?? "")) last = `${step[1]?.trim()} ${step[2]}`;
      if (Date.now() >= nextReport) {
        nextReport = Date.now() + PROGRESS_EVERY_MS;
        log(`${what}: ${steps} steps, ${elapsed()}, last ${last}`);
      }
    }
  });
  const r = await child;
  if (r.exitCode !== 0)
    throw new Error(
      `${what}: make failed (exit ${r.exitCode}) after ${elapsed()}: ${tail.slice(-15).join(" | ")}`,
    );
  const seconds = (Date.now() - started) / 1000;
  log(`${what}: built in ${formatSeconds(seconds)} (${steps} steps)`);
  return { steps, seconds };
}

export function formatSeconds(s: number): string {
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** The config as a Kconfig map (for recipes and tests). */
export function configMap(text: string): Kconfig {
  return parseKconfig(text, ".config");
}
