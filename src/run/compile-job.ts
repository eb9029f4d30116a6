import { join } from "node:path";
import type { CrossToolchain } from "../images/index.js";
import { judgeTest } from "../plan/cells.js";
import type { BuilderRecord } from "../results/types.js";
import { hostArch } from "../vm/accel.js";
import {
  builderKey,
  crossToolchainOf,
  type Engine,
  GUEST,
  guestCommand,
  harnessReason,
  imageOf,
  outputTo,
  provision,
} from "./context.js";
import { type MachineRun, stepFacts } from "./machine-state.js";
import type { SandboxSession } from "./machines.js";

/**
 * A test machine's first phase: its image, then its compile steps (tests with `compileIn`) in a
 * sandbox of that image, before the machine boots. A compile step needs the machine's compilers
 * and headers, not its CPU: the example kmod's Kbuild takes 30–40 s in a TCG VM and 1.4–1.9 s in a
 * sandbox on x86_64; a machine of the other architecture gets the host's cross compilers of its
 * suite (images/cross), its other programs running under qemu-user (bookworm aarch64: 52 → 7 s;
 * `npm run bench:compile`). What the
 * steps write under /kmatrix is kept on the host (`run.carried`) and copied into every boot of the
 * machine, so the tests that load the results find them where they were built.
 *
 * A compile step runs in the sandbox only when every test it needs does too (its inputs are
 * there); a kept prerequisite of a resumed run is run again here, without a record.
 */
export async function prepareMachine(
  e: Engine,
  run: MachineRun,
  builders: Map<string, Promise<BuilderRecord>>,
): Promise<void> {
  const { machine, summary } = run;
  try {
    const image = await imageOf(e, machine);
    run.image = image;
    summary.kernelRelease = image.kernelRelease;
    summary.kernelVersion = image.kernelVersion;
    summary.image = image.manifests;
  } catch (err) {
    summary.error = harnessReason(err);
    return;
  }
  // The accelerator probe failing leaves every step to the machine, whose boot then says why.
  const { inSandbox, toolchain } = await sandboxedTests(e, run).catch(() => ({
    inSandbox: new Set<string>(),
    toolchain: undefined,
  }));
  const steps = e.plan.tests.filter(
    (t) =>
      inSandbox.has(t.name) &&
      (run.pending.includes(t) || run.pending.some((p) => run.prerequisitesOf(p).includes(t))),
  );
  if (steps.length === 0) return;
  for (const t of steps) if (run.pending.includes(t)) run.sandboxed.add(t.name);

  let sandbox: SandboxSession | undefined;
  try {
    const release = run.image.kernelRelease;
    try {
      sandbox = await e.provider.container(
        machine,
        run.image,
        join(e.runDir, "compile", dirName(machine.id)),
        toolchain,
      );
      const used = new Set(steps.flatMap((t) => t.uses));
      const usedOk: string[] = [];
      for (const b of used) if ((await builders.get(builderKey(machine.arch, b)))?.ok) usedOk.push(b);
      await provision(e, sandbox, machine.arch, usedOk, release);
    } catch (err) {
      const reason = `could not prepare a sandbox of the machine's image: ${harnessReason(err)}`;
      for (const t of steps) if (run.sandboxed.has(t.name)) run.cell(t, { verdict: "error", reason });
      return;
    }
    const before = await sandbox.snapshot(GUEST.root);
    for (const test of steps) {
      if (e.signal.aborted) return;
      const kept = !run.sandboxed.has(test.name);
      if (!kept) {
        const gate = await run.gate(test, builders);
        if (gate) {
          run.cell(test, gate.outcome, gate.builder ? { builder: gate.builder } : {});
          continue;
        }
        const lost = test.needs.find((n) => !run.sandboxed.has(n) && !run.carriedPassed.has(n));
        if (lost) {
          run.cell(test, {
            verdict: "error",
            reason: `needs ${lost}, which did not pass when run again in the sandbox`,
          });
          continue;
        }
      } else if (test.needs.some((n) => !run.carriedPassed.has(n))) continue;
      const name = kept ? `${test.name}.rerun` : test.name;
      e.bus.emit({ type: "step-started", machineId: machine.id, test: name, ranIn: "sandbox" });
      const started = { at: new Date().toISOString(), ms: Date.now() };
      const ev = await sandbox.runStep(
        guestCommand(test.command, machine.arch, e.plan.env, { sandboxFor: release }),
        {
          timeoutMs: test.timeoutSec * 1000,
          ...outputTo(e, machine.id, name),
        },
      );
      e.bus.emit({ type: "step-ended", machineId: machine.id, step: name });
      // No kernel ran the step: its evidence is the command's result alone, and nothing is left in doubt.
      const judged = judgeTest(test, ev);
      if (judged.outcome.verdict === "pass") run.carriedPassed.add(test.name);
      if (!kept) run.cell(test, judged.outcome, stepFacts(test, ev, judged, started, { ranIn: "sandbox" }));
    }
    if (run.carriedPassed.size > 0) {
      run.carried = join(e.runDir, "carried", dirName(machine.id));
      await sandbox.copyChangesOut(GUEST.root, before, run.carried);
    }
  } catch (err) {
    // A bug in kmatrix or a copy that failed: the compile steps still open say so.
    const reason = `kmatrix could not finish the sandbox's steps: ${harnessReason(err)}`;
    run.carriedPassed.clear();
    run.carried = undefined;
    for (const t of steps)
      if (run.sandboxed.has(t.name) && !run.done.has(t.name)) run.cell(t, { verdict: "error", reason });
  } finally {
    await sandbox?.stop();
  }
}

/**
 * The tests this machine runs in a sandbox: compile steps (`compileIn`, or `--compile-in` for
 * them) whose mode says so, and whose prerequisites all run there too; and, for a machine of the
 * other architecture, the host's cross compilers that stand in for its own (images/cross).
 * `auto`: only when KVM does not run the machine and kmatrix is root (the sandbox's mounts need
 * it); for the other architecture only with a cross toolchain of the same compiler versions: its
 * own compilers under qemu-user measured no steady gain over the TCG VM for a Kbuild (example kmod
 * on aarch64: 1.9x, 1.6x, 1.2x faster, and 2.6x slower on sid; `npm run bench:compile`).
 * `sandbox` asks for it anyway, with the machine's compilers under qemu-user if need be.
 */
async function sandboxedTests(
  e: Engine,
  run: MachineRun,
): Promise<{ inSandbox: Set<string>; toolchain?: CrossToolchain }> {
  const image = run.image as NonNullable<typeof run.image>;
  const { machine } = run;
  const modes = new Map(
    e.plan.tests.filter((t) => t.compileIn).map((t) => [t.name, e.compileIn ?? t.compileIn] as const),
  );
  const wanted = [...modes.values()];
  if (!wanted.some((m) => m === "auto" || m === "sandbox")) return { inSandbox: new Set() };
  const root = process.getuid?.() === 0;
  const foreign = machine.arch !== hostArch();
  const kvm = root && (await e.provider.hasKvm(machine, image));
  let toolchain: CrossToolchain | undefined;
  let noToolchain: string | undefined;
  if (foreign && root && (wanted.includes("sandbox") || !kvm)) {
    const found = await crossToolchainOf(e, machine, image);
    if ("unusable" in found) noToolchain = found.unusable;
    else toolchain = found;
  }
  const auto = root && !kvm && (!foreign || toolchain !== undefined);
  const inSandbox = new Set<string>();
  for (const t of e.plan.tests) {
    const mode = modes.get(t.name) === "auto" ? (auto ? "sandbox" : "vm") : (modes.get(t.name) ?? "vm");
    if (mode === "sandbox" && t.needs.every((n) => inSandbox.has(n))) inSandbox.add(t.name);
  }
  const say = (line: string) => e.bus.emit({ type: "notice", machineId: machine.id, line });
  if (toolchain && inSandbox.size > 0) {
    run.summary.compilers = toolchain.describe;
    say(`compile steps in a sandbox of its image; ${toolchain.describe}`);
  } else if (noToolchain && inSandbox.size > 0) {
    run.summary.compilers = `its own compilers under qemu-user (no cross toolchain: ${noToolchain})`;
    say(`compile steps run its own compilers under qemu-user: no cross toolchain, as ${noToolchain}`);
  } else if (noToolchain && wanted.includes("auto"))
    say(`compile steps stay in its VM: no cross toolchain, as ${noToolchain}`);
  return { inSandbox, toolchain };
}
const dirName = (machineId: string) => machineId.replace("@", "_");
