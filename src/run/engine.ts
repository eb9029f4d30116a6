import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { Arch, Machine, Matrix } from "../config/types.js";
import { ContainerSession } from "../guest/container.js";
import { launchMachine } from "../guest/launch.js";
import { BootError, GuestFault, type MachineSession } from "../guest/session.js";
import { type MachineImage, prepareImage } from "../images/index.js";
import { commandOutcome, type Outcome, plannedSkip, prerequisiteOutcome } from "../plan/cells.js";
import type { Plan } from "../plan/load.js";
import type { BuilderSpec, TestSpec } from "../plan/schema.js";
import type { LocalSource } from "../plan/sources.js";
import type { BuilderRecord, CellRecord, MachineSummary } from "../results/types.js";
import { shellQuote } from "../util/shell-quote.js";
import { decideAccel, hostArch } from "../vm/accel.js";
import type { EventBus } from "./events.js";
import { runPool } from "./pool.js";

/** Where things live inside every machine. */
export const GUEST = {
  root: "/kmatrix",
  src: "/kmatrix/src",
  artifacts: "/kmatrix/artifacts",
  out: "/kmatrix/out",
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
}

export const cellKey = (machineId: string, test: string) => `${machineId}/${test}`;
export const builderKey = (arch: Arch, builder: string) => `${arch}/${builder}`;

const OUTPUT_TAIL = 8192;

/**
 * Runs the plan over the matrix: builders once per architecture, then every machine, each booted
 * once for all its tests, at most `jobs` VMs at a time. Every cell gets exactly one verdict event,
 * except cells an interrupt cut short (those are left for --resume).
 */
export async function runEngine(o: EngineOptions): Promise<void> {
  const arches = [...new Set(o.machines.map((m) => m.arch))];
  const builderResults = new Map<string, Promise<BuilderRecord>>();
  const settle = new Map<string, (r: BuilderRecord) => void>();
  for (const arch of arches)
    for (const b of o.plan.builders) {
      const key = builderKey(arch, b.name);
      builderResults.set(key, new Promise((r) => settle.set(key, r)));
    }

  type Job = { ready: () => Promise<unknown>; run: () => Promise<void> };
  const jobs: Job[] = [];
  for (const arch of arches)
    for (const b of o.plan.builders) {
      const key = builderKey(arch, b.name);
      jobs.push({
        ready: () => Promise.all(b.needs.map((n) => builderResults.get(builderKey(arch, n)))),
        run: async () => settle.get(key)?.(await runBuilder(o, b, arch, builderResults)),
      });
    }
  for (const machine of o.machines) {
    const tests = o.plan.tests.filter((t) => !o.kept.has(cellKey(machine.id, t.name)));
    if (tests.length === 0) continue;
    const used = new Set(o.plan.tests.flatMap((t) => t.uses));
    jobs.push({
      ready: () => Promise.all([...used].map((u) => builderResults.get(builderKey(machine.arch, u)))),
      run: () => runMachine(o, machine, builderResults),
    });
  }
  await runPool(jobs, o.jobs, o.signal);
}

async function runBuilder(
  o: EngineOptions,
  b: BuilderSpec,
  arch: Arch,
  results: Map<string, Promise<BuilderRecord>>,
): Promise<BuilderRecord> {
  const kept = o.keptBuilders.get(builderKey(arch, b.name));
  if (kept) return kept;
  const slot = `${b.machine}@${arch}`;
  const machine = builderMachine(o.matrix.machines, b, arch);
  const ranOn = machine && machine.id !== slot ? machine.id : undefined;
  const base = { builder: b.name, arch, machineId: slot, ranOn, artifacts: [] as string[] };
  const finish = (r: BuilderRecord) => {
    if (!o.signal.aborted) o.bus.emit({ type: "builder-ended", record: r });
    return r;
  };
  if (!machine)
    return finish({ ...base, ok: false, fault: "harness", reason: `no machine ${b.machine} for ${arch}` });
  for (const need of b.needs) {
    const r = await results.get(builderKey(arch, need));
    if (!r?.ok)
      return finish({ ...base, ok: false, fault: r?.fault, reason: `needs builder ${need}, which failed` });
  }
  const started = Date.now();
  const step = `builder:${b.name}`;
  // Two builders may share a machine (a cross builder serves every architecture): name by slot and builder.
  const workName = `${slot}-${b.name}`;
  let session: BuilderSession | undefined;
  let isolation: "vm" | "container" | undefined;
  try {
    const image = await imageOf(o, machine);
    isolation = b.needsKernel ? "vm" : await builderIsolation(o, machine, image);
    o.bus.emit({ type: "builder-started", builder: b.name, arch, machineId: slot, ranOn, isolation });
    session =
      isolation === "container"
        ? await ContainerSession.start({
            disk: image.disk,
            workDir: join(o.runDir, "builder", workName.replace("@", "_")),
            internet: machine.vm.internet,
          })
        : (
            await boot(o, machine, "builder", join(o.outDir, "consoles", `${slot}.builder-${b.name}.log`), {
              image,
              workName,
            })
          ).session;
    await provision(o, session, arch, b.needs);
    const out = `${GUEST.out}/${b.name}`;
    const result = await session.run(
      guestCommand(b.command, arch, { ...o.plan.env, KMATRIX_OUT: out }, out),
      {
        timeoutMs: b.timeoutSec * 1000,
        onStdout: (chunk) => o.bus.emit({ type: "step-output", machineId: slot, step, chunk }),
        onStderr: (chunk) => o.bus.emit({ type: "step-output", machineId: slot, step, chunk }),
      },
    );
    const outputTail = (result.stdout + result.stderr).slice(-OUTPUT_TAIL);
    // The builder's command failing is the code's fault; everything around it is the harness's.
    const failed = (reason: string) =>
      finish({ ...base, ok: false, fault: "code", reason, outputTail, isolation });
    if (result.timedOut) return failed(`timed out after ${b.timeoutSec} s`);
    if (result.exitCode !== 0) return failed(`exit code ${result.exitCode}`);
    const dest = join(o.outDir, "artifacts", arch);
    await mkdir(dest, { recursive: true });
    await session.copyOut(out, dest);
    const listing = await session.run(`cd ${out} && find . -type f | sort`);
    return finish({
      ...base,
      ok: true,
      durationMs: Date.now() - started,
      isolation,
      artifacts: listing.stdout
        .split("\n")
        .filter(Boolean)
        .map((f) => f.replace(/^\.\//, "")),
      outputTail,
    });
  } catch (err) {
    const fault = err instanceof GuestFault && err.kind === "panic" ? "code" : "harness";
    return finish({
      ...base,
      ok: false,
      fault,
      reason: harnessReason(err),
      durationMs: Date.now() - started,
      isolation,
    });
  } finally {
    await session?.stop();
  }
}

async function runMachine(
  o: EngineOptions,
  machine: Machine,
  builders: Map<string, Promise<BuilderRecord>>,
): Promise<void> {
  const summary: MachineSummary = { machineId: machine.id, machine: machine.name, arch: machine.arch };
  const done = new Map<string, Outcome>();
  for (const [key, rec] of o.kept) if (key.startsWith(`${machine.id}/`)) done.set(rec.test, rec);
  // Tests still to run, plus the prerequisites they need again in this fresh machine.
  const pending = new Set(
    o.plan.tests.filter((t) => !o.kept.has(cellKey(machine.id, t.name))).map((t) => t.name),
  );
  for (const t of [...o.plan.tests].reverse())
    if (pending.has(t.name)) for (const n of t.needs) pending.add(n);
  const cell = (test: TestSpec, outcome: Outcome, extra: Partial<CellRecord> = {}) => {
    done.set(test.name, outcome);
    if (o.signal.aborted) return;
    // A kept cell re-run only as a prerequisite keeps its record unless its verdict changed.
    if (o.kept.get(cellKey(machine.id, test.name))?.verdict === outcome.verdict) return;
    const record: CellRecord = {
      machineId: machine.id,
      machine: machine.name,
      arch: machine.arch,
      kernelRelease: summary.kernelRelease,
      test: test.name,
      ...outcome,
      ...extra,
    };
    o.bus.emit({ type: "cell", record });
  };
  const errorAll = (reason: string, console?: string) => {
    for (const t of o.plan.tests)
      if (pending.has(t.name) && !done.has(t.name)) cell(t, { verdict: "error", reason }, { console });
  };

  let session: MachineSession | undefined;
  try {
    let launched: Awaited<ReturnType<typeof boot>>;
    try {
      launched = await boot(o, machine, "test", join(o.outDir, "consoles", `${machine.id}.log`), {
        onImage: (image) => {
          summary.kernelRelease = image.kernelRelease;
          summary.kernelVersion = image.kernelVersion;
          summary.image = image.manifests;
        },
      });
    } catch (err) {
      summary.error = harnessReason(err);
      errorAll(summary.error, err instanceof BootError ? err.consoleTail : undefined);
      return;
    }
    session = launched.session;
    summary.accel = launched.accel.accel;
    summary.bootMs = session.timings.usableMs;
    try {
      const usedOk: string[] = [];
      for (const b of new Set(o.plan.tests.flatMap((t) => t.uses)))
        if ((await builders.get(builderKey(machine.arch, b)))?.ok) usedOk.push(b);
      await provision(o, session, machine.arch, usedOk);
      await session.run("dmesg -C");
    } catch (err) {
      summary.error = `could not copy the plan into the machine: ${harnessReason(err)}`;
      errorAll(summary.error);
      return;
    }

    let dead: string | undefined;
    for (const test of o.plan.tests) {
      if (!pending.has(test.name) || o.signal.aborted) continue;
      if (dead) {
        cell(test, { verdict: "error", reason: dead });
        continue;
      }
      const skip = plannedSkip(test, machine.arch, summary.kernelRelease ?? "0", o.sourceSkips);
      if (skip) {
        cell(test, { verdict: "skip", reason: skip });
        continue;
      }
      const prior = prerequisiteOutcome(test, done);
      if (prior) {
        cell(test, prior);
        continue;
      }
      // A builder that failed on the code it builds fails the cell; one the harness failed errs it.
      const failedBuilders = [];
      for (const b of test.uses) {
        const r = await builders.get(builderKey(machine.arch, b));
        if (!r?.ok) failedBuilders.push({ b, r });
      }
      if (failedBuilders.length) {
        const codeFault = failedBuilders.some(({ r }) => r?.fault === "code");
        const reason = failedBuilders
          .map(({ b, r }) => `builder ${b} failed: ${r?.reason ?? "did not run"}`)
          .join("; ");
        cell(test, { verdict: codeFault ? "fail" : "error", reason });
        continue;
      }
      o.bus.emit({ type: "step-started", machineId: machine.id, test: test.name });
      const startedAt = new Date().toISOString();
      const oopsesBefore = session.oopses.length;
      const base = { command: test.command, startedAt };
      const t0 = Date.now();
      try {
        const result = await session.run(guestCommand(test.command, machine.arch, o.plan.env), {
          timeoutMs: test.timeoutSec * 1000,
          onStdout: (chunk) =>
            o.bus.emit({ type: "step-output", machineId: machine.id, step: test.name, chunk }),
          onStderr: (chunk) =>
            o.bus.emit({ type: "step-output", machineId: machine.id, step: test.name, chunk }),
        });
        const outputTail = (result.stdout + result.stderr).slice(-OUTPUT_TAIL);
        const facts = {
          ...base,
          exitCode: result.exitCode,
          timedOut: result.timedOut,
          durationMs: Date.now() - t0,
          outputTail,
        };
        const newOops = session.oopses.slice(oopsesBefore);
        const dmesg = await kernelWarnings(session);
        if (newOops.length) {
          dead = `the kernel oopsed during ${test.name}`;
          cell(
            test,
            { verdict: "fail", reason: `kernel oops: ${newOops[0]}` },
            { ...facts, dmesg, console: session.vm.consoleTail(60) },
          );
        } else {
          cell(test, commandOutcome(test, result), { ...facts, dmesg });
        }
      } catch (err) {
        if (o.signal.aborted) return;
        if (err instanceof GuestFault) {
          dead =
            err.kind === "panic"
              ? `the kernel panicked during ${test.name}`
              : `the machine died during ${test.name}`;
          const verdict = err.kind === "panic" ? "fail" : "error";
          cell(
            test,
            { verdict, reason: err.message },
            { ...base, durationMs: Date.now() - t0, console: err.consoleTail },
          );
        } else {
          dead = `lost the machine during ${test.name}: ${harnessReason(err)}`;
          cell(
            test,
            { verdict: "error", reason: harnessReason(err) },
            { ...base, durationMs: Date.now() - t0 },
          );
        }
      }
    }
  } finally {
    await session?.stop();
    if (!o.signal.aborted) o.bus.emit({ type: "machine-ended", machine: summary });
  }
}

async function boot(
  o: EngineOptions,
  machine: Machine,
  role: "builder" | "test",
  consoleLog: string,
  prepared: { image?: MachineImage; workName?: string; onImage?: (image: MachineImage) => void } = {},
) {
  const { image, workName, onImage } = prepared;
  if (!image) o.bus.emit({ type: "image-preparing", machineId: machine.id });
  await mkdir(join(o.outDir, "consoles"), { recursive: true });
  return launchMachine(machine, {
    archive: o.matrix.archive,
    image,
    runDir: join(o.runDir, role),
    workName,
    consoleLog,
    log: (line) => o.bus.emit({ type: "image-progress", machineId: machine.id, line }),
    onImage: (image, accel) => {
      onImage?.(image);
      o.bus.emit({ type: "machine-booting", machineId: machine.id, role, accel: accel.accel });
    },
  }).then((launched) => {
    o.bus.emit({ type: "machine-booted", machineId: machine.id, bootMs: launched.session.timings.usableMs });
    return launched;
  });
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
  return machine && { ...machine, packages: [...machine.packages, ...b.packages] };
}

/** What a builder's command needs from where it runs: a VM's session or a container. */
type BuilderSession = Pick<MachineSession, "run" | "copyIn" | "copyOut" | "stop">;

/**
 * For a builder that does not need its machine's kernel: a VM when asked, or when KVM makes it fast; without KVM a container of the same image builds
 * ~50x faster (see guest/container.ts), which needs root for its mounts.
 */
async function builderIsolation(
  o: EngineOptions,
  machine: Machine,
  image: MachineImage,
): Promise<"vm" | "container"> {
  if (o.builders !== "auto") return o.builders;
  if (process.getuid?.() !== 0) return "vm";
  const accel = await decideAccel(machine.vm.accel, machine.arch, {
    kernel: image.vmlinuz,
    bareInitrd: image.bareInitrd,
  });
  return accel.accel === "kvm" ? "vm" : "container";
}

/** The machine's image, built first if needed (cached: a second call costs a lookup). */
function imageOf(o: EngineOptions, machine: Machine): Promise<MachineImage> {
  o.bus.emit({ type: "image-preparing", machineId: machine.id });
  return prepareImage(machine, {
    archive: o.matrix.archive,
    log: (line) => o.bus.emit({ type: "image-progress", machineId: machine.id, line }),
  });
}

/** Sources and the artifacts of the given builders, where every command expects them. */
async function provision(
  o: EngineOptions,
  session: BuilderSession,
  arch: Arch,
  builders: string[],
): Promise<void> {
  for (const [name, src] of o.sources) await session.copyIn(src.dir, GUEST.src, name, src.files);
  for (const b of builders) await session.copyIn(join(o.outDir, "artifacts", arch, b), GUEST.artifacts, b);
  await session.run(`mkdir -p ${GUEST.src} ${GUEST.artifacts} ${GUEST.out}`);
}

/** The plan's command, run by the guest's shell with kmatrix's environment, from /kmatrix. */
function guestCommand(
  command: string,
  arch: Arch,
  env: Record<string, string> = {},
  mkdirFirst?: string,
): string {
  const vars = { KMATRIX_SRC: GUEST.src, KMATRIX_ARTIFACTS: GUEST.artifacts, KMATRIX_ARCH: arch, ...env };
  const exports = Object.entries(vars).map(([k, v]) => `${k}=${shellQuote(v)}`);
  const prep = mkdirFirst ? `mkdir -p ${shellQuote(mkdirFirst)} && ` : "";
  return `${prep}export ${exports.join(" ")} KMATRIX_KERNEL="$(uname -r)" && cd ${GUEST.root} && ${command}`;
}

/** Kernel messages of level warning and worse since the last call (the ring buffer is cleared). */
async function kernelWarnings(session: MachineSession): Promise<string[] | undefined> {
  const r = await session.run("dmesg --level=emerg,alert,crit,err,warn && dmesg -C");
  const lines = r.stdout.split("\n").filter(Boolean);
  return lines.length ? lines : undefined;
}

/** One line saying what the harness could not do. */
function harnessReason(err: unknown): string {
  if (err instanceof BootError) return `boot failed (${err.kind}): ${err.message}`;
  if (err instanceof GuestFault) return err.message;
  return (err as Error)?.message?.split("\n")[0] ?? String(err);
}
