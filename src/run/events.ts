import type { Arch } from "../config/types.js";
import type { BuilderRecord, CellRecord, MachineSummary, RunRecord } from "../results/types.js";

/**
 * The engine's lifecycle, as a typed stream. The progress display, the result store and anything
 * else consume it; none of them reaches into the engine.
 */
export type RunEvent =
  | { type: "run-started"; run: RunRecord }
  | { type: "image-preparing"; machineId: string }
  /** What the image builder says while it builds (mmdebstrap's progress and the like). */
  | { type: "image-progress"; machineId: string; line: string }
  | { type: "machine-booting"; machineId: string; role: "builder" | "test"; accel: string }
  | { type: "machine-booted"; machineId: string; bootMs: number }
  | { type: "machine-ended"; machine: MachineSummary }
  | {
      type: "builder-started";
      builder: string;
      arch: Arch;
      machineId: string;
      /** A cross builder's machine of the host's architecture (see BuilderRecord). */
      ranOn?: string;
      isolation: "vm" | "container";
    }
  | { type: "builder-ended"; record: BuilderRecord }
  /** A test's step (or `<test>.rerun`) starts: in the booted machine, or in a sandbox of its image (a compile step). */
  | { type: "step-started"; machineId: string; test: string; ranIn?: "vm" | "sandbox" }
  | { type: "step-output"; machineId: string; step: string; chunk: string }
  /**
   * Every command step ends with this, before its verdict: `step` as in step-output (a test,
   * `builder:<name>`, or `<test>.rerun` for a prerequisite re-run on a fresh machine).
   */
  | { type: "step-ended"; machineId: string; step: string }
  /** The machine is in doubt after `afterTest` (oops, hang, timeout, lost channel): the rest of its tests run on a fresh boot. */
  | { type: "machine-replaced"; machineId: string; afterTest: string; reason: string }
  | { type: "console-line"; machineId: string; line: string }
  /** Something the user should know that is not a verdict (e.g. a sandbox's outputs could not be kept). */
  | { type: "notice"; machineId: string; line: string }
  | { type: "cell"; record: CellRecord }
  | { type: "run-ended"; run: RunRecord };

export type RunListener = (event: RunEvent) => void;

/** Fans events out to every consumer; a consumer that throws must not take the run down. */
export class EventBus {
  private readonly listeners: RunListener[] = [];

  subscribe(listener: RunListener): void {
    this.listeners.push(listener);
  }

  emit(event: RunEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        process.stderr.write(`kmatrix: event consumer failed on ${event.type}: ${String(err)}\n`);
      }
    }
  }
}
