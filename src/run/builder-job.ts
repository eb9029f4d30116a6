import { lstat, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Arch, Machine } from "../config/types.js";
import type { CrossToolchain, MachineImage } from "../images/index.js";
import { judgeBuilder } from "../plan/cells.js";
import type { BuilderSpec } from "../plan/schema.js";
import type { BuilderRecord } from "../results/types.js";
import { listFiles } from "../util/safe-extract.js";
import { hostArch } from "../vm/accel.js";
import { builderCacheKey, restoreBuilder, storeBuilder } from "./builder-cache.js";
import {
  bootOf,
  builderKey,
  crossToolchainOf,
  type Engine,
  GUEST,
  guestCommand,
  harnessReason,
  imageOf,
  outputTail,
  outputTo,
  provision,
} from "./context.js";
import type { StepSession } from "./machines.js";

/**
 * One builder for one architecture: boot (or enter a container of) its machine, copy the sources
 * and the artifacts of the builders it needs, run its command, bring its $KMATRIX_OUT back.
 * Blame follows judgeBuilder: only the command's own non-zero exit is the code's fault.
 */
export async function runBuilder(
  e: Engine,
  b: BuilderSpec,
  arch: Arch,
  results: Map<string, Promise<BuilderRecord>>,
): Promise<BuilderRecord> {
  const kept = e.keptBuilders.get(builderKey(arch, b.name));
  if (kept) return kept;
  const slot = `${b.machine}@${arch}`;
  const machine = builderMachine(e.matrix.machines, b, arch);
  const ranOn = machine && machine.id !== slot ? machine.id : undefined;
  const base = { builder: b.name, arch, machineId: slot, ranOn, artifacts: [] as string[] };
  const finish = (r: BuilderRecord) => {
    if (!e.signal.aborted) e.bus.emit({ type: "builder-ended", record: r });
    return r;
  };
  if (!machine)
    return finish({ ...base, ok: false, fault: "harness", reason: `no machine ${b.machine} for ${arch}` });
  const needed: BuilderRecord[] = [];
  for (const need of b.needs) {
    const r = await results.get(builderKey(arch, need));
    if (!r?.ok)
      return finish({ ...base, ok: false, fault: r?.fault, reason: `needs builder ${need}, which failed` });
    needed.push(r);
  }
  const started = Date.now();
  const step = `builder:${b.name}`;
  // Two builders may share a machine (a cross builder serves every architecture): name by slot and builder.
  const workName = `${slot}-${b.name}`;
  let session: StepSession | undefined;
  let isolation: "vm" | "container" | undefined;
  let toolchain: CrossToolchain | undefined;
  try {
    const image = await imageOf(e, machine);
    const cacheKey = await builderCacheKey(e, b, arch, machine, image, needed);
    const artifactsDir = join(e.outDir, "artifacts", arch, b.name);
    const hit = e.rebuild ? undefined : await restoreBuilder(b.name, arch, cacheKey, artifactsDir);
    if (hit) return finish({ ...hit, ...base, artifacts: hit.artifacts, cacheKey, cached: true });
    isolation = b.needsKernel ? "vm" : await builderIsolation(e, machine, image);
    e.bus.emit({ type: "builder-started", builder: b.name, arch, machineId: slot, ranOn, isolation });
    if (isolation === "container") {
      toolchain = await builderToolchain(e, machine, image, slot, b.name);
      session = await e.provider.container(
        machine,
        image,
        join(e.runDir, "builder", workName.replace("@", "_")),
        toolchain,
      );
    } else {
      const booted = await bootOf(e, machine, image, {
        role: "builder",
        runDir: join(e.runDir, "builder"),
        workName,
        consoleName: `${slot}.builder-${b.name}.log`,
      });
      session = booted.session;
    }
    // In a sandbox, the machine's kernel is still the one its builds are for.
    const sandboxFor = isolation === "container" ? image.kernelRelease : undefined;
    await provision(e, session, arch, b.needs, sandboxFor);
    const out = `${GUEST.out}/${b.name}`;
    const evidence = await session.runStep(
      guestCommand(b.command, arch, { ...e.plan.env, KMATRIX_OUT: out }, { mkdirFirst: out, sandboxFor }),
      {
        timeoutMs: b.timeoutSec * 1000,
        ...outputTo(e, slot, step),
      },
    );
    e.bus.emit({ type: "step-ended", machineId: slot, step });
    const judged = judgeBuilder(b, evidence);
    const facts = {
      outputTail: outputTail(evidence.result),
      isolation,
      durationMs: Date.now() - started,
      ...(toolchain && { compilers: toolchain.describe }),
    };
    if (!judged.ok)
      return finish({
        ...base,
        ...facts,
        ok: false,
        fault: judged.fault,
        reason: judged.reason,
        console: evidence.consoleTail,
      });
    // A builder that runs again (--resume) starts from nothing: what is listed is what it made now.
    await rm(artifactsDir, { recursive: true, force: true });
    await mkdir(dirname(artifactsDir), { recursive: true });
    // What the builder left that is unsafe on the host (setuid bits are dropped silently; device
    // nodes, links out of its tree…) is refused; the rest is its artifacts, and it stays ok.
    const { refused } = await session.copyOut(out, dirname(artifactsDir));
    // All of it refused (its output directory was a link): who needs it gets an empty one.
    if (!(await lstat(artifactsDir).catch(() => undefined))) await mkdir(artifactsDir);
    // Listed on the host from what was extracted, so the record names only files that exist.
    const artifacts = await listFiles(artifactsDir);
    const record: BuilderRecord = {
      ...base,
      ...facts,
      ok: true,
      durationMs: Date.now() - started,
      artifacts,
      cacheKey,
      ...(refused.length > 0 && { refused }),
    };
    await storeBuilder(record, cacheKey, artifactsDir);
    return finish(record);
  } catch (err) {
    return finish({
      ...base,
      ok: false,
      fault: "harness",
      reason: harnessReason(err),
      durationMs: Date.now() - started,
      isolation,
    });
  } finally {
    await session?.stop();
  }
}

/**
 * The machine a builder runs on for `arch`: its own, or for a cross builder the one of the host's
 * architecture when the matrix has it. The builder's own packages make its image differ from the
 * test machine's of the same name.
 */
export function builderMachine(
  machines: Machine[],
  b: BuilderSpec,
  arch: Arch,
  host: Arch | undefined = hostArch(),
): Machine | undefined {
  const find = (a: Arch | undefined) => machines.find((m) => m.name === b.machine && m.arch === a);
  const machine = (b.cross && find(host)) || find(arch);
  // A builder's packages are Debian's: another distribution's image must bring what it needs.
  const packages = machine?.rootfs.source === "debian" ? b.packages : [];
  return machine && { ...machine, packages: [...machine.packages, ...packages] };
}

/**
 * A builder's container on a machine of the other architecture gets the host's cross compilers
 * of the machine's own compiler versions, as compile steps do (images/cross): its gcc then runs
 * natively instead of under qemu-user (the falco plan's aarch64 scap-open builder: 142 s under
 * qemu-user, 34 s so). Without one it runs the machine's own under qemu-user, and a notice says
 * why. `--builders vm` keeps a builder away from both.
 */
async function builderToolchain(
  e: Engine,
  machine: Machine,
  image: MachineImage,
  slot: string,
  builder: string,
): Promise<CrossToolchain | undefined> {
  if (machine.arch === hostArch()) return undefined;
  const say = (line: string) => e.bus.emit({ type: "notice", machineId: slot, line });
  const found = await crossToolchainOf(e, machine, image, slot);
  if ("unusable" in found) {
    say(`builder ${builder}: its compilers run under qemu-user: no cross toolchain, as ${found.unusable}`);
    return undefined;
  }
  say(`builder ${builder}: ${found.describe}`);
  return found;
}

/**
 * For a builder that does not need its machine's kernel: a VM when asked, or when KVM makes it
 * fast; without KVM a container of the same image builds ~50x faster (see guest/container.ts),
 * which needs root for its mounts.
 */
async function builderIsolation(
  e: Engine,
  machine: Machine,
  image: MachineImage,
): Promise<"vm" | "container"> {
  if (e.builders !== "auto") return e.builders;
  if (process.getuid?.() !== 0) return "vm";
  return (await e.provider.hasKvm(machine, image)) ? "vm" : "container";
}
