import { stripVTControlCharacters } from "node:util";
import type { Verdict } from "../results/types.js";
import type { RunEvent } from "../run/events.js";

const MARK: Record<Verdict, string> = { pass: "🟢", skip: "🟡", fail: "❌", error: "⚠️" };

/** What each machine is doing now: the running step or builder, since when, its last output line. */
class Activity {
  private readonly running = new Map<string, { what: string; since: number; last?: string }>();

  track(e: RunEvent): void {
    switch (e.type) {
      case "builder-started":
        this.running.set(e.machineId, { what: `builder ${e.builder}`, since: Date.now() });
        break;
      case "step-started":
        this.running.set(e.machineId, { what: e.test, since: Date.now() });
        break;
      case "step-output": {
        const a = this.running.get(e.machineId);
        const line = e.chunk
          .split(/[\r\n]+/)
          .map(printable)
          .filter(Boolean)
          .pop();
        if (a && line) a.last = line.length > 120 ? `${line.slice(0, 119)}…` : line;
        break;
      }
      case "step-ended":
        this.running.delete(e.machineId);
        break;
      case "builder-ended":
      case "cell":
        this.running.delete(e.record.machineId);
        break;
      case "machine-ended":
        this.running.delete(e.machine.machineId);
        break;
    }
  }

  /** "builder skeleton, 12m05s: [ 45%] Building …", or undefined when the machine is between steps. */
  describe(machineId: string): string | undefined {
    const a = this.running.get(machineId);
    if (!a) return undefined;
    return `${a.what}, ${elapsed(Date.now() - a.since)}${a.last ? `: ${a.last}` : ""}`;
  }

  machines(): string[] {
    return [...this.running.keys()];
  }
}

/** A line fit for a terminal status line: no colour codes or other control characters. */
function printable(line: string): string {
  return stripVTControlCharacters(line)
    .replace(/\p{Cc}/gu, " ")
    .trim();
}

function elapsed(ms: number): string {
  const s = Math.floor(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

/**
 * One plain line per lifecycle event, plus every `heartbeatMs` a "still running" line per busy
 * machine (CI logs would otherwise go quiet for the hour a builder can take): what CI logs want.
 */
export function plainProgress(
  write: (line: string) => void,
  heartbeatMs = 5 * 60_000,
): { consume: (e: RunEvent) => void; stop: () => void } {
  const activity = new Activity();
  const timer = setInterval(() => {
    for (const id of activity.machines()) write(`${id}: still running ${activity.describe(id)}`);
  }, heartbeatMs);
  timer.unref();
  return {
    consume: (e) => {
      activity.track(e);
      const line = describe(e);
      if (line) write(line);
    },
    stop: () => clearInterval(timer),
  };
}

/**
 * "; refused 2 of its files: b/dev (character device not allowed), …": what a builder left that
 * was not copied out (names are the builder's: printable only). The record lists them all.
 */
function refusedNote(refused: { path: string; why: string }[] | undefined): string {
  if (!refused?.length) return "";
  const shown = refused.slice(0, 3).map((r) => printable(`${r.path} (${r.why})`));
  const more = refused.length > shown.length ? `, and ${refused.length - shown.length} more` : "";
  return `; refused ${refused.length} of its files: ${shown.join(", ")}${more}`;
}

function describe(e: RunEvent): string | undefined {
  switch (e.type) {
    case "run-started":
      return `run ${e.run.runId}: plan ${e.run.plan.name}, ${e.run.machines.length} machine(s)`;
    case "image-preparing":
      return `${e.machineId}: preparing image`;
    case "image-progress":
      // The builder's own chatter stays out of CI logs; its milestones do not.
      return /^(building|built) /.test(e.line) ? `${e.machineId}: ${e.line}` : undefined;
    case "machine-booting":
      return `${e.machineId}: booting (${e.role}, ${e.accel})`;
    case "machine-booted":
      return `${e.machineId}: ready in ${(e.bootMs / 1000).toFixed(1)} s`;
    case "builder-started":
      return `${e.machineId}: builder ${e.builder} started (${e.isolation === "vm" ? "in a VM" : "in a container"} of ${e.ranOn ? `${e.ranOn}, cross-building` : "the image"})`;
    case "builder-ended": {
      const r = e.record;
      const outcome = r.ok ? (r.cached ? "reused (cached)" : "ok") : `FAILED: ${r.reason}`;
      return `${r.machineId}: builder ${r.builder} ${outcome}${refusedNote(r.refused)}`;
    }
    case "step-started": {
      const sandbox = e.ranIn === "sandbox";
      return e.test.endsWith(".rerun")
        ? `${e.machineId}: ${e.test.slice(0, -".rerun".length)} started again (a prerequisite, ${sandbox ? "in a sandbox of its image" : "on the fresh machine"})`
        : `${e.machineId}: ${e.test} started${sandbox ? " (compile step, in a sandbox of its image)" : ""}`;
    }
    case "notice":
      return `${e.machineId}: ${e.line}`;
    case "machine-replaced":
      return `${e.machineId}: in doubt after ${e.afterTest} (${e.reason}): the next tests run on a freshly booted machine`;
    case "cell": {
      const r = e.record;
      return `${r.machineId}: ${r.test} ${MARK[r.verdict]} ${r.verdict}${r.reason ? ` (${r.reason})` : ""}`;
    }
    case "machine-ended":
      return e.machine.error ? `${e.machine.machineId}: ${e.machine.error}` : `${e.machine.machineId}: done`;
    case "run-ended":
      return `run ${e.run.runId} ended${e.run.interrupted ? " (interrupted)" : ""}`;
    default:
      return undefined;
  }
}

/**
 * A live block with one status line per machine, redrawn in place (TTY only). Finished cells also
 * scroll above it, so the terminal keeps a record.
 */
export function liveProgress(stream: NodeJS.WriteStream): {
  consume: (e: RunEvent) => void;
  stop: () => void;
} {
  const activity = new Activity();
  const status = new Map<string, string>();
  const marks = new Map<string, string>();
  let drawn = 0;
  const draw = () => {
    const cols = stream.columns || 100;
    let out = drawn ? `\x1b[${drawn}A\x1b[0J` : "";
    const lines = [...status].map(([id, s]) =>
      `${id.padEnd(32)} ${marks.get(id) ?? ""} ${activity.describe(id) ?? s}`.slice(0, cols - 1),
    );
    out += lines.map((l) => `${l}\n`).join("");
    drawn = lines.length;
    stream.write(out);
  };
  const above = (line: string) => {
    stream.write(drawn ? `\x1b[${drawn}A\x1b[0J${line}\n` : `${line}\n`);
    drawn = 0;
    draw();
  };
  const timer = setInterval(draw, 1000);
  timer.unref();
  return {
    consume: (e) => {
      activity.track(e);
      switch (e.type) {
        case "image-preparing":
          status.set(e.machineId, "preparing image…");
          break;
        case "image-progress":
          status.set(e.machineId, `image: ${e.line}`);
          break;
        case "machine-booting":
          status.set(e.machineId, `booting (${e.role}, ${e.accel})…`);
          break;
        case "builder-started":
          status.set(e.machineId, `building ${e.builder}…`);
          break;
        case "builder-ended":
          status.set(
            e.record.machineId,
            `builder ${e.record.builder} ${e.record.ok ? (e.record.cached ? "reused (cached)" : "ok") : "FAILED"}`,
          );
          above(describe(e) ?? "");
          return;
        case "step-started":
          status.set(e.machineId, `${e.test}${e.ranIn === "sandbox" ? " (sandbox)" : ""}…`);
          break;
        case "machine-replaced":
        case "notice":
          above(describe(e) ?? "");
          return;
        case "cell":
          marks.set(e.record.machineId, (marks.get(e.record.machineId) ?? "") + MARK[e.record.verdict]);
          above(describe(e) ?? "");
          return;
        case "machine-ended":
          status.set(e.machine.machineId, e.machine.error ? `error: ${e.machine.error}` : "done");
          break;
        default:
          return;
      }
      draw();
    },
    stop: () => {
      clearInterval(timer);
      draw();
    },
  };
}
