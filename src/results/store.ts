import { appendFileSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { RunEvent } from "../run/events.js";
import type { BuilderRecord, CellRecord, RunRecord } from "./types.js";

/**
 * Writes a run to disk as it happens (see types.ts for the layout). Synchronous, atomic writes: a
 * crash or SIGINT at any moment leaves every record either whole or absent.
 */
export class ResultStore {
  private run: RunRecord | undefined;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
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
        this.append(logPath(event.machineId, event.step), event.chunk);
        break;
      case "step-started":
        // A re-run (resume) starts a fresh log.
        this.write(logPath(event.machineId, event.test), "");
        break;
      case "cell":
        this.writeJson(join("cells", event.record.machineId, `${event.record.test}.json`), event.record);
        break;
    }
  };

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

  private append(rel: string, text: string): void {
    const file = join(this.dir, rel);
    mkdirSync(join(file, ".."), { recursive: true });
    appendFileSync(file, text);
  }
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
