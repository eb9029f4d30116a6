import { appendFileSync, mkdirSync, renameSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { RunEvent } from "../run/events.js";
import type { BuilderRecord, CellRecord, RunRecord } from "./types.js";

export interface ResultStoreOptions {
  /** A step's log keeps this many bytes of the beginning of its output (default 8 MiB)… */
  logHeadBytes?: number;
  /** …and this many of its end (default 8 MiB); what lies between is cut, and one line says how much. */
  logTailBytes?: number;
}

const MiB = 1024 * 1024;

/**
 * Writes a run to disk as it happens (see types.ts for the layout). Synchronous, atomic writes: a
 * crash or SIGINT at any moment leaves every record either whole or absent.
 *
 * Step logs are bounded: a step that prints gigabytes keeps its first and last `logHeadBytes` /
 * `logTailBytes` on disk, in memory at most its tail (see StepLog).
 */
export class ResultStore {
  private run: RunRecord | undefined;
  private readonly headBytes: number;
  private readonly tailBytes: number;
  /** Running steps' logs, by path relative to `dir`. */
  private readonly logs = new Map<string, StepLog>();
  /** Logs this store has started: the first output of a step (re)starts its file, later ones append. */
  private readonly started = new Set<string>();

  constructor(
    readonly dir: string,
    options: ResultStoreOptions = {},
  ) {
    mkdirSync(dir, { recursive: true });
    this.headBytes = options.logHeadBytes ?? 8 * MiB;
    this.tailBytes = options.logTailBytes ?? 8 * MiB;
  }

  readonly consume = (event: RunEvent): void => {
    switch (event.type) {
      case "run-started":
      case "run-ended":
        this.run = event.run;
        this.writeRun();
        break;
      case "machine-ended":
        if (this.run) {
          this.run.machines = [
            ...this.run.machines.filter((m) => m.machineId !== event.machine.machineId),
            event.machine,
          ];
          this.writeRun();
        }
        break;
      case "builder-ended":
        this.endStep(logPath(event.record.machineId, `builder:${event.record.builder}`));
        if (this.run) {
          const r = event.record;
          this.run.builders = [
            ...this.run.builders.filter((b) => b.builder !== r.builder || b.arch !== r.arch),
            r,
          ];
          this.writeRun();
        }
        this.writeJson(join("builders", event.record.arch, `${event.record.builder}.json`), event.record);
        break;
      case "step-output":
        this.stepLog(logPath(event.machineId, event.step)).write(Buffer.from(event.chunk, "utf8"));
        break;
      case "step-started": {
        // A re-run (resume) starts a fresh log.
        const rel = logPath(event.machineId, event.test);
        this.endStep(rel);
        this.write(rel, "");
        this.started.add(rel);
        break;
      }
      case "step-ended":
        this.endStep(logPath(event.machineId, event.step));
        break;
      case "cell":
        // Defensive: the engine ends every step before its record.
        this.endStep(logPath(event.record.machineId, event.record.test));
        this.endStep(logPath(event.record.machineId, `${event.record.test}.rerun`));
        this.writeJson(join("cells", event.record.machineId, `${event.record.test}.json`), event.record);
        break;
    }
    if (event.type === "run-ended") for (const rel of [...this.logs.keys()]) this.endStep(rel);
  };

  /** The running log at `rel`, opened on the step's first output when no step-started did. */
  private stepLog(rel: string): StepLog {
    let log = this.logs.get(rel);
    if (!log) {
      const file = join(this.dir, rel);
      mkdirSync(join(file, ".."), { recursive: true });
      if (!this.started.has(rel)) {
        // The first time this run writes it: a log left by an interrupted run is replaced.
        writeFileSync(file, "");
        this.started.add(rel);
      }
      log = new StepLog(file, this.headBytes, this.tailBytes);
      this.logs.set(rel, log);
    }
    return log;
  }

  private endStep(rel: string): void {
    this.logs.get(rel)?.finish();
    this.logs.delete(rel);
  }

  private writeRun(): void {
    if (this.run) this.writeJson("run.json", this.run);
  }

  private writeJson(rel: string, value: unknown): void {
    this.write(rel, `${JSON.stringify(value, null, 2)}\n`);
  }

  private write(rel: string, text: string): void {
    const file = join(this.dir, rel);
    mkdirSync(join(file, ".."), { recursive: true });
    writeFileSync(`${file}.tmp`, text);
    renameSync(`${file}.tmp`, file);
  }
}

/**
 * One step's log while it runs: its first `headLimit` bytes go to the file and stay there; the
 * rest is appended too (so the file can be followed live), and the last `tailLimit` bytes are also
 * kept in memory, as a list of chunks. When what follows the head grows past twice the tail, the
 * file is cut back to head + one line saying how much was cut + the tail, so the file stays under
 * head + 2 × tail and memory under the tail (plus the chunk it starts in). `finish` leaves exactly
 * head + that line + tail when anything was cut, and the output untouched otherwise.
 *
 * The file is appended to from `base` (its size when the step opened): a step that prints again
 * after it ended appends a second bounded part rather than losing the first.
 */
export class StepLog {
  private readonly base: number;
  private headWritten = 0;
  private headEndsLine = true;
  private afterHead = 0;
  private readonly tail: Buffer[] = [];
  private tailSize = 0;
  /** Bytes after the head in the file (not counting the cut line). */
  private inFile = 0;

  constructor(
    private readonly file: string,
    private readonly headLimit: number,
    private readonly tailLimit: number,
  ) {
    this.base = fileSize(file);
  }

  write(chunk: Buffer): void {
    let rest = chunk;
    if (this.headWritten < this.headLimit) {
      const head = rest.subarray(0, this.headLimit - this.headWritten);
      appendFileSync(this.file, head);
      this.headWritten += head.length;
      if (head.length) this.headEndsLine = head[head.length - 1] === 0x0a;
      rest = rest.subarray(head.length);
    }
    if (rest.length === 0) return;
    appendFileSync(this.file, rest);
    this.inFile += rest.length;
    this.afterHead += rest.length;
    this.keep(rest);
    if (this.inFile > 2 * this.tailLimit) this.rewrite();
  }

  /** Writes the tail behind the cut line if anything was cut; the log is complete afterwards. */
  finish(): void {
    if (this.afterHead > this.tailSize) this.rewrite();
  }

  private keep(chunk: Buffer): void {
    // A chunk larger than the whole tail is copied, so its dropped part is not held in memory.
    const c =
      chunk.length > this.tailLimit ? Buffer.from(chunk.subarray(chunk.length - this.tailLimit)) : chunk;
    this.tail.push(c);
    this.tailSize += c.length;
    while (this.tailSize > this.tailLimit) {
      const first = this.tail[0] as Buffer;
      const excess = this.tailSize - this.tailLimit;
      if (first.length <= excess) {
        this.tail.shift();
        this.tailSize -= first.length;
      } else {
        this.tail[0] = first.subarray(excess);
        this.tailSize -= excess;
      }
    }
  }

  private rewrite(): void {
    truncateSync(this.file, this.base + this.headWritten);
    const cut = this.afterHead - this.tailSize;
    const kept =
      this.headLimit === this.tailLimit
        ? `the first and last ${formatBytes(this.headLimit)} are kept`
        : `the first ${formatBytes(this.headLimit)} and the last ${formatBytes(this.tailLimit)} are kept`;
    const line = `${this.headEndsLine ? "" : "\n"}[kmatrix: ${formatBytes(cut)} of output cut here; ${kept}]\n`;
    appendFileSync(this.file, Buffer.concat([Buffer.from(line, "utf8"), ...this.tail]));
    this.inFile = this.tailSize;
  }
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** 512 bytes, 8 MiB, 1.2 GiB. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} ${n === 1 ? "byte" : "bytes"}`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${Math.round(v * 10) / 10} ${units[u]}`;
}

/** Builder steps are named `builder:<name>` and log next to the builder records. */
function logPath(machineId: string, step: string): string {
  if (step.startsWith("builder:")) {
    const arch = machineId.split("@")[1] ?? "unknown";
    return join("builders", arch, `${step.slice("builder:".length)}.log`);
  }
  return join("cells", machineId, `${step}.log`);
}

/** What an earlier (interrupted) run in `dir` already settled, for --resume. */
export async function readExisting(dir: string): Promise<{
  run: RunRecord;
  cells: CellRecord[];
  builders: BuilderRecord[];
}> {
  const run = JSON.parse(await readFile(join(dir, "run.json"), "utf8")) as RunRecord;
  const cells: CellRecord[] = [];
  for (const machineId of await readdir(join(dir, "cells")).catch(() => [] as string[]))
    for (const f of await readdir(join(dir, "cells", machineId)))
      if (f.endsWith(".json"))
        cells.push(JSON.parse(await readFile(join(dir, "cells", machineId, f), "utf8")));
  return { run, cells, builders: run.builders };
}
