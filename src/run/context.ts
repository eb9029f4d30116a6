import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Arch, Machine, Matrix } from "../config/types.js";
import { BootError, GuestFault } from "../guest/session.js";
import type { ExecOptions } from "../guest/ssh.js";
import { CROSS_BIN, type CrossToolchain, type MachineImage, type NoCrossToolchain } from "../images/index.js";
import type { Plan } from "../plan/load.js";
import type { LocalSource } from "../plan/sources.js";
import type { BuilderRecord, CellRecord } from "../results/types.js";
import { shellQuote } from "../util/shell-quote.js";
import type { EventBus } from "./events.js";
import type { BootedMachine, BootRequest, MachineProvider, StepSession } from "./machines.js";

/** Where things live inside every machine. */
export const GUEST = {
  root: "/kmatrix",
  src: "/kmatrix/src",
  artifacts: "/kmatrix/artifacts",
  out: "/kmatrix/out",
  /** Sandboxes only, outside /kmatrix so it never follows a compile step's outputs into a machine. */
  sandboxBin: "/opt/kmatrix/bin",
};

export interface EngineOptions {
  matrix: Matrix;
  /** The test machines (already filtered by --arch / --machine). */
  machines: Machine[];
  plan: Plan;
  /** Source name → local directory (git sources already checked out) and the files to copy. */
  sources: Map<string, LocalSource>;
  /** Tests skipped on every machine because the sources lack what they test (see sourceSkips). */
  sourceSkips: Map<string, string>;
  outDir: string;
  runDir: string;
  jobs: number;
  bus: EventBus;
  signal: AbortSignal;
  /** Cells that already have a verdict (--resume): kept as they are. */
  kept: Map<string, CellRecord>;
  /** Builders that already succeeded with their artifacts on disk (--resume). */
  keptBuilders: Map<string, BuilderRecord>;
  /** Where builders run; "auto": a VM when KVM works, else a container if kmatrix is root. */
  builders: "vm" | "container" | "auto";
  /** Images and machines; the real ones unless a unit test scripts them (test/unit/fake-machines.ts). */
  provider?: MachineProvider;
  /** Run every builder even when its artifacts are cached (--rebuild). */
  rebuild?: boolean;
  /** Where compile steps (tests with `compileIn`) run, over what the plan says (--compile-in). */
  compileIn?: "auto" | "vm" | "sandbox";
}

/** The engine's options with the provider chosen, and the sources' digests (computed once, when a builder asks). */
export type Engine = EngineOptions & {
  provider: MachineProvider;
  sourceDigests: () => Promise<Record<string, string>>;
};

export const cellKey = (machineId: string, test: string) => `${machineId}/${test}`;
export const builderKey = (arch: Arch, builder: string) => `${arch}/${builder}`;

/** How much of a step's output its record keeps (the whole output is in its .log). */
export const OUTPUT_TAIL = 8192;

/** Streams a step's output to the event bus. */
export function outputTo(
  e: Engine,
  machineId: string,
  step: string,
): Pick<ExecOptions, "onStdout" | "onStderr"> {
  const emit = (chunk: string) => e.bus.emit({ type: "step-output", machineId, step, chunk });
  return { onStdout: emit, onStderr: emit };
}

/** The machine's image (built first if the cache lacks it), its progress on the event bus. */
export async function imageOf(e: Engine, machine: Machine): Promise<MachineImage> {
  e.bus.emit({ type: "image-preparing", machineId: machine.id });
  return e.provider.image(machine, (line) =>
    e.bus.emit({ type: "image-progress", machineId: machine.id, line }),
  );
}

/**
 * The host's cross compilers for a machine of the other architecture (compile steps and builders),
 * their build's progress on the event bus under `progressId`; a failed build is a reason, as none.
 */
export async function crossToolchainOf(
  e: Engine,
  machine: Machine,
  image: MachineImage,
  progressId = machine.id,
): Promise<CrossToolchain | NoCrossToolchain> {
  return e.provider
    .crossToolchain(machine, image, (line) =>
      e.bus.emit({ type: "image-progress", machineId: progressId, line }),
    )
    .catch((err: unknown) => ({ unusable: `its cross toolchain could not be built: ${harnessReason(err)}` }));
}

/** Boots a machine (test or builder), announcing it on the event bus; the console goes to the run's consoles/. */
export async function bootOf(
  e: Engine,
  machine: Machine,
  image: MachineImage,
  req: Omit<BootRequest, "onBooting" | "consoleLog"> & { consoleName: string },
): Promise<{ session: BootedMachine; accel: string }> {
  await mkdir(join(e.outDir, "consoles"), { recursive: true });
  const { consoleName, ...rest } = req;
  const booted = await e.provider.boot(machine, image, {
    ...rest,
    consoleLog: join(e.outDir, "consoles", consoleName),
    onBooting: (accel) =>
      e.bus.emit({ type: "machine-booting", machineId: machine.id, role: req.role, accel }),
  });
  e.bus.emit({ type: "machine-booted", machineId: machine.id, bootMs: booted.session.usableMs });
  return booted;
}

/**
 * Sources and the artifacts of the given builders, where every command expects them. A sandbox
 * standing for a machine whose kernel is `sandboxFor` also gets the `uname` that says so.
 */
export async function provision(
  e: Engine,
  session: StepSession,
  arch: Arch,
  builders: string[],
  sandboxFor?: string,
): Promise<void> {
  for (const [name, src] of e.sources) await session.copyIn(src.dir, GUEST.src, name, src.files);
  for (const b of builders) await session.copyIn(join(e.outDir, "artifacts", arch, b), GUEST.artifacts, b);
  if (sandboxFor) {
    const dir = join(e.runDir, "uname", sandboxFor);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "uname"), unameShim(sandboxFor), { mode: 0o755 });
    await session.copyIn(join(dir, "uname"), GUEST.sandboxBin);
  }
  await session.run(`mkdir -p ${GUEST.src} ${GUEST.artifacts} ${GUEST.out}`);
}

/**
 * A sandbox runs on the host's kernel, but what it builds is for its machine's: Makefiles that
 * find their kernel with `uname -r` (Kbuild's usual `/lib/modules/$(uname -r)/build`) must get the
 * machine's release, never the host's. Everything else uname says is left as it is.
 */
export function unameShim(release: string): string {
  return `#!/bin/sh
# kmatrix: this sandbox stands for a machine whose kernel is ${release}.
/bin/uname "$@" | awk -v h="$(/bin/uname -r)" -v m=${shellQuote(release)} '{ i = index($0, h); if (i) $0 = substr($0, 1, i - 1) m substr($0, i + length(h)); print }'
`;
}

/**
 * The plan's command, run by the guest's shell with kmatrix's environment, from /kmatrix. In a
 * sandbox standing for a machine (`sandboxFor`: its kernel release) $KMATRIX_KERNEL and `uname -r`
 * name that machine's kernel, and the host's cross compilers come first when it has them (a
 * directory that does not exist otherwise).
 */
export function guestCommand(
  command: string,
  arch: Arch,
  env: Record<string, string> = {},
  opts: { mkdirFirst?: string; sandboxFor?: string } = {},
): string {
  const vars = { KMATRIX_SRC: GUEST.src, KMATRIX_ARTIFACTS: GUEST.artifacts, KMATRIX_ARCH: arch, ...env };
  const exports = Object.entries(vars).map(([k, v]) => `${k}=${shellQuote(v)}`);
  const kernel = opts.sandboxFor
    ? `KMATRIX_KERNEL=${shellQuote(opts.sandboxFor)} PATH=${GUEST.sandboxBin}:${CROSS_BIN}:"$PATH"`
    : `KMATRIX_KERNEL="$(uname -r)"`;
  const prep = opts.mkdirFirst ? `mkdir -p ${shellQuote(opts.mkdirFirst)} && ` : "";
  return `${prep}export ${exports.join(" ")} ${kernel} && cd ${GUEST.root} && ${command}`;
}

/** The last part of a step's output, as records keep it. */
export function outputTail(result: { stdout: string; stderr: string } | undefined): string | undefined {
  return result ? (result.stdout + result.stderr).slice(-OUTPUT_TAIL) : undefined;
}

/** One line saying what the harness could not do. */
export function harnessReason(err: unknown): string {
  if (err instanceof BootError) return `boot failed (${err.kind}): ${err.message}`;
  if (err instanceof GuestFault) return err.message;
  return (err as Error)?.message?.split("\n")[0] ?? String(err);
}
