import { join } from "node:path";
import type { Machine } from "../config/types.js";
import { BootError } from "../guest/session.js";
import type { MachineImage } from "../images/index.js";
import { type Judgement, judgeTest, type Outcome, plannedSkip, prerequisiteOutcome } from "../plan/cells.js";
import type { TestSpec } from "../plan/schema.js";
import type { BuilderRecord, CellRecord, MachineSummary } from "../results/types.js";
import {
  bootOf,
  builderKey,
  cellKey,
  type Engine,
  guestCommand,
  harnessReason,
  imageOf,
  outputTail,
  outputTo,
  provision,
} from "./context.js";
import type { BootedMachine } from "./machines.js";

/**
 * One test machine, in phases: its image; a boot with the plan copied in; then per test a gate
 * (planned skip, prerequisites, builders), the step, and its verdict (plan/cells.ts: judgeTest).
 * A test that leaves the machine in doubt (panic, oops, hang, timeout, lost channel) gets its own
 * verdict, and the machine's later tests run on a freshly booted one (new overlay), where the
 * prerequisites they need are run again without rewriting their records. Every cell gets exactly
 * one verdict event, except cells an interrupt cut short.
 */
export async function runMachine(
  e: Engine,
  machine: Machine,
  builders: Map<string, Promise<BuilderRecord>>,
): Promise<void> {
  const summary: MachineSummary = {
    machineId: machine.id,
    machine: machine.name,
    arch: machine.arch,
    boots: 0,
  };
  const byName = new Map(e.plan.tests.map((t) => [t.name, t]));
  /** Verdicts so far: kept ones (--resume) and this run's. */
  const done = new Map<string, Outcome>();
  for (const [key, rec] of e.kept) if (key.startsWith(`${machine.id}/`)) done.set(rec.test, rec);
  const pending = e.plan.tests.filter((t) => !e.kept.has(cellKey(machine.id, t.name)));

  const cell = (test: TestSpec, outcome: Outcome, extra: Partial<CellRecord> = {}) => {
    done.set(test.name, outcome);
    if (e.signal.aborted) return;
    const record: CellRecord = {
      machineId: machine.id,
      machine: machine.name,
      arch: machine.arch,
      kernelRelease: summary.kernelRelease,
      test: test.name,
      ...outcome,
      ...extra,
    };
    e.bus.emit({ type: "cell", record });
  };

  // The machine of the current boot, and the tests that passed on it (prerequisites met here).
  let session: BootedMachine | undefined;
  let passedHere = new Set<string>();
  /** Once a boot has failed, the remaining cells are harness errors with this reason. */
  let unbootable: { reason: string; console?: string } | undefined;
  let lastTest = "";

  const retire = async (afterTest: string, reason: string) => {
    e.bus.emit({ type: "machine-replaced", machineId: machine.id, afterTest, reason });
    summary.replaced = [...(summary.replaced ?? []), { afterTest, reason }];
    await session?.stop();
    session = undefined;
  };

  const bootFresh = async (image: MachineImage): Promise<BootedMachine> => {
    summary.boots = (summary.boots ?? 0) + 1;
    // Every boot of the machine appends to the same console log.
    const booted = await bootOf(e, machine, image, {
      role: "test",
      runDir: join(e.runDir, "test"),
      consoleName: `${machine.id}.log`,
    });
    summary.accel ??= booted.accel;
    summary.bootMs ??= booted.session.usableMs;
    try {
      const usedOk: string[] = [];
      for (const b of new Set(e.plan.tests.flatMap((t) => t.uses)))
        if ((await builders.get(builderKey(machine.arch, b)))?.ok) usedOk.push(b);
      await provision(e, booted.session, machine.arch, usedOk);
    } catch (err) {
      await booted.session.stop();
      throw new Error(`could not copy the plan into the machine: ${harnessReason(err)}`);
    }
    return booted.session;
  };

  /** Runs one step on the current machine and judges it; retires the machine when in doubt. */
  const step = async (
    test: TestSpec,
    name: string,
  ): Promise<{ judged: Judgement; facts: Partial<CellRecord> }> => {
    const current = session as BootedMachine;
    e.bus.emit({ type: "step-started", machineId: machine.id, test: name });
    const startedAt = new Date().toISOString();
    const t0 = Date.now();
    const ev = await current.runStep(guestCommand(test.command, machine.arch, e.plan.env), {
      timeoutMs: test.timeoutSec * 1000,
      ...outputTo(e, machine.id, name),
    });
    e.bus.emit({ type: "step-ended", machineId: machine.id, step: name });
    const judged = judgeTest(test, ev);
    lastTest = test.name;
    if (judged.outcome.verdict === "pass") passedHere.add(test.name);
    if (judged.inDoubt) await retire(test.name, judged.inDoubt);
    const facts: Partial<CellRecord> = {
      command: test.command,
      startedAt,
      durationMs: Date.now() - t0,
      boot: summary.boots,
      ...(ev.result && {
        exitCode: ev.result.exitCode,
        timedOut: ev.result.timedOut,
        outputTail: outputTail(ev.result),
      }),
      ...(ev.kernel.lines.length && { dmesg: ev.kernel.lines }),
      ...(judged.warnings && { kernelWarnings: judged.warnings }),
      ...(judged.leftover && { leftover: judged.leftover }),
      ...(ev.consoleTail && { console: ev.consoleTail }),
    };
    return { judged, facts };
  };

  try {
    let image: MachineImage;
    try {
      image = await imageOf(e, machine);
      summary.kernelRelease = image.kernelRelease;
      summary.kernelVersion = image.kernelVersion;
      summary.image = image.manifests;
    } catch (err) {
      summary.error = harnessReason(err);
      for (const t of pending) cell(t, { verdict: "error", reason: summary.error });
      return;
    }
    // A machine that cannot boot at all errs every cell, skips included: nothing was learnt about it.
    try {
      session = await bootFresh(image);
    } catch (err) {
      summary.error = harnessReason(err);
      const console = err instanceof BootError ? err.consoleTail : undefined;
      for (const t of pending) cell(t, { verdict: "error", reason: summary.error }, { console });
      return;
    }

    for (const test of pending) {
      if (e.signal.aborted) return;
      const gate = await gateOf(e, test, machine, summary.kernelRelease ?? "0", done, builders);
      if (gate) {
        cell(test, gate.outcome, gate.builder ? { builder: gate.builder } : {});
        continue;
      }
      if (unbootable) {
        cell(test, { verdict: "error", reason: unbootable.reason }, { console: unbootable.console });
        continue;
      }
      // Kernel trouble after the last step ended (late output of a test already judged) also
      // makes the machine doubtful: the next test must not inherit it.
      const trouble = session?.troubleBetweenSteps() ?? [];
      if (trouble.length) await retire(lastTest, `kernel trouble after ${lastTest}: ${trouble[0]}`);
      if (!session) {
        try {
          session = await bootFresh(image);
          passedHere = new Set();
        } catch (err) {
          const reason = `could not boot a fresh machine: ${harnessReason(err)}`;
          unbootable = { reason, console: err instanceof BootError ? err.consoleTail : undefined };
          cell(test, { verdict: "error", reason }, { console: unbootable.console });
          continue;
        }
      }
      // Prerequisites that passed on an earlier boot (or an earlier, resumed run) run again here.
      let blocked: Outcome | undefined;
      for (const need of prerequisitesOf(test, e.plan.tests, byName)) {
        if (passedHere.has(need.name)) continue;
        if (!session) break;
        const { judged } = await step(need, `${need.name}.rerun`);
        if (judged.outcome.verdict !== "pass") {
          blocked = {
            verdict: judged.outcome.verdict,
            reason: `needs ${need.name}, which did not pass when run again on a fresh machine: ${judged.outcome.reason ?? judged.outcome.verdict}`,
          };
          break;
        }
      }
      if (blocked || !session) {
        cell(test, blocked ?? { verdict: "error", reason: "no machine to run on" });
        continue;
      }
      const { judged, facts } = await step(test, test.name);
      cell(test, judged.outcome, facts);
    }
  } catch (err) {
    // A bug in kmatrix: the cells still open say so; the other machines go on.
    const reason = `kmatrix crashed while running this machine: ${harnessReason(err)}`;
    summary.error = reason;
    for (const t of pending) if (!done.has(t.name)) cell(t, { verdict: "error", reason });
  } finally {
    await session?.stop();
    if (!e.signal.aborted) e.bus.emit({ type: "machine-ended", machine: summary });
  }
}

/** Everything decided before a test's command runs: a planned skip, its prerequisites, its builders. */
async function gateOf(
  e: Engine,
  test: TestSpec,
  machine: Machine,
  kernelRelease: string,
  done: Map<string, Outcome>,
  builders: Map<string, Promise<BuilderRecord>>,
): Promise<{ outcome: Outcome; builder?: string } | undefined> {
  const skip = plannedSkip(test, machine.arch, kernelRelease, e.sourceSkips);
  if (skip) return { outcome: { verdict: "skip", reason: skip } };
  const prior = prerequisiteOutcome(test, done);
  if (prior) return { outcome: prior };
  // A builder whose own command failed fails the cell; one the harness could not run errs it.
  for (const b of test.uses) {
    const r = await builders.get(builderKey(machine.arch, b));
    if (r?.ok) continue;
    const outcome: Outcome =
      r?.fault === "code"
        ? { verdict: "fail", reason: `builder ${b} failed: ${r.reason}` }
        : { verdict: "error", reason: `builder ${b} could not run: ${r?.reason ?? "it did not run"}` };
    return { outcome, builder: b };
  }
  return undefined;
}

/** The tests `test` needs, directly or through others, in plan order. */
function prerequisitesOf(test: TestSpec, tests: TestSpec[], byName: Map<string, TestSpec>): TestSpec[] {
  const all = new Set<string>();
  const visit = (t: TestSpec) => {
    for (const n of t.needs) {
      const need = byName.get(n);
      if (need && !all.has(n)) {
        all.add(n);
        visit(need);
      }
    }
  };
  visit(test);
  return tests.filter((t) => all.has(t.name));
}
