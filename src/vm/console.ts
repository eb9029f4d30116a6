import { FATAL_MARKER, READY_MARKER } from "../images/guest-init.js";

/** What a console line tells us about the guest. */
export type ConsoleSignal =
  | { kind: "ready" }
  | { kind: "panic"; line: string }
  /** An oops or BUG: the kernel hurt itself and is no longer trustworthy. */
  | { kind: "oops"; line: string }
  /** Soft lockup, RCU stall, hung task, workqueue lockup: the kernel stopped making progress. */
  | { kind: "hung"; line: string }
  /** The OOM killer ran. */
  | { kind: "oom"; line: string }
  /** A WARN(): the kernel noticed something wrong but carries on. */
  | { kind: "warning"; line: string }
  | { kind: "init-failed"; line: string };

// Kernel messages that mean the kernel is dying or has just hurt itself. A panic ends the VM;
// an oops (or BUG) leaves it running but unreliable.
const PANIC = /Kernel panic - not syncing/;
const HUNG =
  /(?:BUG: soft lockup|BUG: workqueue lockup|rcu: INFO: \S+ (?:self-)?detected stall|rcu_\w+ (?:self-)?detected stalls?|INFO: task .+ blocked for more than)/;
const OOPS =
  /(?:^|\] )(?:Oops(?::| -)|Internal error: Oops|BUG: (?!.*(?:soft lockup|workqueue lockup|hung task))|general protection fault|kernel BUG at)/;
const OOM = /(?:Out of memory: Killed process|invoked oom-killer)/;
const WARNING = /(?:^|\] )WARNING: (?:CPU: \d+ PID: \d+ )?at /;

export function classifyConsoleLine(line: string): ConsoleSignal | undefined {
  if (line.includes(READY_MARKER)) return { kind: "ready" };
  if (line.includes(FATAL_MARKER)) return { kind: "init-failed", line: line.trim() };
  if (PANIC.test(line)) return { kind: "panic", line: line.trim() };
  if (HUNG.test(line)) return { kind: "hung", line: line.trim() };
  if (OOPS.test(line)) return { kind: "oops", line: line.trim() };
  if (OOM.test(line)) return { kind: "oom", line: line.trim() };
  if (WARNING.test(line)) return { kind: "warning", line: line.trim() };
  return undefined;
}

/**
 * Splits the console byte stream into lines and keeps a bounded tail for error reports, so a
 * chatty guest cannot grow kmatrix's memory.
 */
export class ConsoleTail {
  private pending = "";
  private lines: string[] = [];

  constructor(private readonly keep = 60) {}

  /** Feeds raw bytes; returns the complete lines they finished. */
  push(chunk: string): string[] {
    const parts = (this.pending + chunk).replaceAll("\r", "").split("\n");
    this.pending = parts.pop() ?? "";
    for (const line of parts) {
      this.lines.push(line);
      if (this.lines.length > this.keep) this.lines.shift();
    }
    return parts;
  }

  tail(n = this.keep): string {
    return [...this.lines, this.pending]
      .filter((l, i, all) => i < all.length - 1 || l)
      .slice(-n)
      .join("\n");
  }
}
