import { join } from "node:path";
import { BootError } from "../guest/session.js";
import type { MachineImage } from "../images/index.js";
import { type Judgement, judgeTest, type Outcome, prerequisiteOutcome } from "../plan/cells.js";
import type { TestSpec } from "../plan/schema.js";
import type { BuilderRecord, CellRecord } from "../results/types.js";
import {
  bootOf,
  builderKey,
  type Engine,
  guestCommand,
  harnessReason,
  outputTo,
  provision,
} from "./context.js";
import { type MachineRun, stepFacts } from "./machine-state.js";
import type { BootedMachine } from "./machines.js";

/**
 * A test machine's second phase (after compile-job.ts: its image and compile steps): a boot with
 * the plan copied in; then per test a gate (planned skip, prerequisites, builders), the step, and
 * its verdict (plan/cells.ts: judgeTest). A test that leaves the machine in doubt (panic, oops,
 * hang, timeout, lost channel) gets its own verdict, and the machine's later tests run on a
 * freshly booted one (new overlay), where the prerequisites they need are run again without
 * rewriting their records (those that ran in the sandbox are not: their outputs come with every
 * boot). Every cell gets exactly one verdict event, except cells an interrupt cut short.
 */
export async function runMachine(
  e: Engine,
  run: MachineRun,
  builders: Map<string, Promise<BuilderRecord>>,
): Promise<void> {
  const { machine, summary, pending, done } = run;
  const cell = run.cell.bind(run);
  /** The tests left for the booted machine (the sandbox judged the others). */
  const inVm = pending.filter((t) => !run.sandboxed.has(t.name));

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
      // What the sandbox's compile steps wrote, over the sources and artifacts they started from.
      if (run.carried) await booted.session.copyIn(join(run.carried, "kmatrix"), "/", "kmatrix");
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
    e.bus.emit({ type: "step-started", machineId: machine.id, test: name, ranIn: "vm" });
    const started = { at: new Date().toISOString(), ms: Date.now() };
    const ev = await current.runStep(guestCommand(test.command, machine.arch, e.plan.env), {
      timeoutMs: test.timeoutSec * 1000,
      ...outputTo(e, machine.id, name),
    });
    e.bus.emit({ type: "step-ended", machineId: machine.id, step: name });
    const judged = judgeTest(test, ev);
    lastTest = test.name;
    if (judged.outcome.verdict === "pass") passedHere.add(test.name);
    if (judged.inDoubt) await retire(test.name, judged.inDoubt);
    const facts = stepFacts(test, ev, judged, started, { boot: summary.boots, ranIn: "vm" });
    return { judged, facts };
  };

  try {
    const image = run.image;
    if (!image) {
      summary.error ??= "the machine's image could not be prepared";
      for (const t of pending) if (!done.has(t.name)) cell(t, { verdict: "error", reason: summary.error });
      return;
    }
    // Nothing to boot for when the sandbox's verdicts already decide every test left.
    if (inVm.every((t) => prerequisiteOutcome(t, done))) {
      for (const t of inVm) cell(t, prerequisiteOutcome(t, done) as Outcome);
      return;
    }
    // A machine that cannot boot at all errs every cell left, skips included: nothing was learnt
    // about it (the sandbox's compile steps keep their verdicts: they did not need it).
    try {
      session = await bootFresh(image);
    } catch (err) {
      summary.error = harnessReason(err);
      const console = err instanceof BootError ? err.consoleTail : undefined;
      for (const t of inVm) cell(t, { verdict: "error", reason: summary.error }, { console });
      return;
    }

    /**
     * A machine ready for `test`: booted afresh if the last one was retired, with the
     * prerequisites it needs run again there. Returns the test's verdict when it cannot run.
     */
    const readyFor = async (test: TestSpec): Promise<Outcome | undefined> => {
      if (unbootable) return { verdict: "error", reason: unbootable.reason };
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
          return { verdict: "error", reason };
        }
      }
      // Prerequisites that passed on an earlier boot (or an earlier, resumed run) run again here;
      // those the sandbox ran came with the boot.
      for (const need of run.prerequisitesOf(test)) {
        if (passedHere.has(need.name) || run.carriedPassed.has(need.name)) continue;
        if (!session) break;
        const { judged } = await step(need, `${need.name}.rerun`);
        if (judged.outcome.verdict !== "pass")
          return {
            verdict: judged.outcome.verdict,
            reason: `needs ${need.name}, which did not pass when run again on a fresh machine: ${judged.outcome.reason ?? judged.outcome.verdict}`,
          };
      }
      return session ? undefined : { verdict: "error", reason: "no machine to run on" };
    };

    for (const test of inVm) {
      if (e.signal.aborted) return;
      const gate = await run.gate(test, builders);
      if (gate) {
        cell(test, gate.outcome, gate.builder ? { builder: gate.builder } : {});
        continue;
      }
      const blocked = await readyFor(test);
      if (blocked) {
        cell(test, blocked, unbootable ? { console: unbootable.console } : {});
        continue;
      }
      const { judged, facts } = await step(test, test.name);
      // An emulated machine (TCG) whose vCPUs the host starves can stall or stop answering
      // with nothing wrong in the driver: a hang counts only if it happens again on a fresh boot.
      if (judged.hung && summary.accel === "tcg" && !e.signal.aborted) {
        const again = (await readyFor(test)) ?? (await step(test, `${test.name}.confirm`)).judged.outcome;
        if (again.verdict === "pass" || again.verdict === "skip" || again.verdict === "error") {
          const reason = `${judged.outcome.reason} — not on a second run on a fresh boot (${again.verdict}${again.reason ? `: ${again.reason}` : ""}): an emulated machine starved by its host can stall, so this is not blamed on the driver`;
          cell(test, { verdict: "error", reason }, facts);
          continue;
        }
        const twice = again.reason === judged.outcome.reason ? "" : `; on a fresh boot: ${again.reason}`;
        cell(
          test,
          { verdict: "fail", reason: `${judged.outcome.reason} (again on a fresh boot${twice})` },
          facts,
        );
        continue;
      }
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
