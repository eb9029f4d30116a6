import type { Machine } from "../config/types.js";
import type { StepEvidence } from "../guest/session.js";
import type { MachineImage } from "../images/index.js";
import { type Judgement, type Outcome, plannedSkip, prerequisiteOutcome } from "../plan/cells.js";
import type { TestSpec } from "../plan/schema.js";
import type { BuilderRecord, CellRecord, MachineSummary } from "../results/types.js";
import { builderKey, cellKey, type Engine, outputTail } from "./context.js";

/**
 * One test machine's run, shared by its two phases: the compile steps in a sandbox of its image
 * (compile-job.ts) and the rest in the booted machine (machine-job.ts). Every cell gets exactly
 * one verdict event through `cell`, except cells an interrupt cut short.
 */
export class MachineRun {
  readonly summary: MachineSummary;
  /** Verdicts so far: kept ones (--resume) and this run's. */
  readonly done = new Map<string, Outcome>();
  /** The tests this run gives a verdict (not kept by --resume), in plan order. */
  readonly pending: TestSpec[];
  readonly byName: Map<string, TestSpec>;
  image?: MachineImage;
  /** Tests the sandbox phase handled: they get no step in the machine. */
  readonly sandboxed = new Set<string>();
  /** Sandboxed tests that passed: their outputs are in `carried`, copied into every boot. */
  readonly carriedPassed = new Set<string>();
  /** A host directory holding what the sandboxed steps wrote under /kmatrix (`<dir>/kmatrix/…`). */
  carried?: string;

  constructor(
    private readonly e: Engine,
    readonly machine: Machine,
  ) {
    this.summary = { machineId: machine.id, machine: machine.name, arch: machine.arch, boots: 0 };
    this.byName = new Map(e.plan.tests.map((t) => [t.name, t]));
    for (const [key, rec] of e.kept) if (key.startsWith(`${machine.id}/`)) this.done.set(rec.test, rec);
    this.pending = e.plan.tests.filter((t) => !e.kept.has(cellKey(machine.id, t.name)));
  }

  cell(test: TestSpec, outcome: Outcome, extra: Partial<CellRecord> = {}): void {
    this.done.set(test.name, outcome);
    if (this.e.signal.aborted) return;
    const { machine, summary } = this;
    const record: CellRecord = {
      machineId: machine.id,
      machine: machine.name,
      arch: machine.arch,
      kernelRelease: summary.kernelRelease,
      test: test.name,
      ...outcome,
      ...extra,
    };
    this.e.bus.emit({ type: "cell", record });
  }

  /** Everything decided before a test's command runs: a planned skip, its prerequisites, its builders. */
  async gate(
    test: TestSpec,
    builders: Map<string, Promise<BuilderRecord>>,
  ): Promise<{ outcome: Outcome; builder?: string } | undefined> {
    const { e, machine } = this;
    const skip = plannedSkip(test, machine.arch, this.summary.kernelRelease ?? "0", e.sourceSkips);
    if (skip) return { outcome: { verdict: "skip", reason: skip } };
    const prior = prerequisiteOutcome(test, this.done);
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
  prerequisitesOf(test: TestSpec): TestSpec[] {
    const all = new Set<string>();
    const visit = (t: TestSpec) => {
      for (const n of t.needs) {
        const need = this.byName.get(n);
        if (need && !all.has(n)) {
          all.add(n);
          visit(need);
        }
      }
    };
    visit(test);
    return this.e.plan.tests.filter((t) => all.has(t.name));
  }
}

/** What a step's record says about how it ran, from its evidence and verdict. */
export function stepFacts(
  test: TestSpec,
  ev: StepEvidence,
  judged: Judgement,
  started: { at: string; ms: number },
  extra: Partial<CellRecord>,
): Partial<CellRecord> {
  return {
    command: test.command,
    startedAt: started.at,
    durationMs: Date.now() - started.ms,
    ...extra,
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
}
