import { classifyConsoleLine } from "./console.js";

/**
 * Markers the guest writes into its own kernel log (/dev/kmsg) before and after every step. The
 * console prints the kernel log in order, so whatever lies between a step's two markers was
 * printed by the kernel during that step, however late it reached the host: an oops from a timer
 * or an RCU callback is blamed on the step that caused it, never on the next one. Counting console
 * signals when the command returns cannot do that (the serial console lags under emulation).
 */
export const stepBegins = (id: number) => `kmatrix: step ${id} begins`;
export const stepEnds = (id: number) => `kmatrix: step ${id} ends`;

/** What the kernel printed during one step (the console shows levels warn and worse: loglevel=5). */
export interface KernelWindow {
  /** The window's console lines, markers excluded; at most MAX_LINES (the rest are counted). */
  lines: string[];
  cutLines: number;
  panic?: string;
  oops: string[];
  hung: string[];
  oom: string[];
  warnings: string[];
  /** The end marker reached the console: nothing printed during the step can still be in flight. */
  complete: boolean;
}

const MAX_LINES = 400;
const MAX_SIGNALS = 20;

/** A window with nothing in it; `complete` when nothing can still be in flight (no kernel at all). */
export const emptyWindow = (complete: boolean): KernelWindow => ({
  lines: [],
  cutLines: 0,
  oops: [],
  hung: [],
  oom: [],
  warnings: [],
  complete,
});

class WindowBuilder {
  readonly w = emptyWindow(false);

  add(line: string): void {
    const text = line.trimEnd();
    if (!text) return;
    if (this.w.lines.length < MAX_LINES) this.w.lines.push(text);
    else this.w.cutLines++;
    const s = classifyConsoleLine(text);
    if (!s || s.kind === "ready" || s.kind === "init-failed") return;
    if (s.kind === "panic") this.w.panic ??= s.line;
    else if (s.kind === "oops") keep(this.w.oops, s.line);
    else if (s.kind === "hung") keep(this.w.hung, s.line);
    else if (s.kind === "oom") keep(this.w.oom, s.line);
    else if (s.kind === "warning") keep(this.w.warnings, s.line);
  }

  absorb(other: WindowBuilder): void {
    for (const l of other.w.lines) this.add(l);
  }
}

function keep(list: string[], line: string): void {
  if (list.length < MAX_SIGNALS) list.push(line);
}

/**
 * Splits a machine's console into step windows and the time between them. Fed line by line; `open`
 * and `close` bracket one step on the host's side, the markers on the guest's.
 */
export class KernelLog {
  private between = new WindowBuilder();
  private step:
    | {
        id: number;
        begun: boolean;
        ended: boolean;
        pre: WindowBuilder;
        window: WindowBuilder;
        onEnd?: () => void;
      }
    | undefined;

  feed(line: string): void {
    const s = this.step;
    if (s && !s.begun && line.includes(stepBegins(s.id))) {
      // Lines that arrived before the begin marker were printed before the step started.
      this.between.absorb(s.pre);
      s.pre = new WindowBuilder();
      s.begun = true;
      return;
    }
    if (s && !s.ended && line.includes(stepEnds(s.id))) {
      s.ended = true;
      s.onEnd?.();
      return;
    }
    if (!s || s.ended) this.between.add(line);
    else (s.begun ? s.window : s.pre).add(line);
  }

  /** Kernel trouble (panic, oops, hang) printed outside any step since the last call. */
  takeTroubleBetweenSteps(): string[] {
    const w = this.between.w;
    this.between = new WindowBuilder();
    return [...(w.panic ? [w.panic] : []), ...w.oops, ...w.hung];
  }

  open(id: number): void {
    this.step = { id, begun: false, ended: false, pre: new WindowBuilder(), window: new WindowBuilder() };
  }

  /** Waits up to `waitMs` for the step's end marker, then hands over its window. */
  async close(waitMs: number): Promise<KernelWindow> {
    const s = this.step;
    if (!s) throw new Error("no step is open");
    if (!s.ended)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        s.onEnd = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    this.step = undefined;
    // No begin marker (the step silenced the console, or the guest died first): all its lines count.
    if (!s.begun) s.window.absorb(s.pre);
    return { ...s.window.w, complete: s.ended };
  }
}
