/**
 * The original's result layout, so that tools built for falcosecurity/kernel-testing keep working:
 *
 *   <run>/report/<arch>/scap-open-test/<machine>/<test>.json
 *
 * The original has one tree per architecture run and machine names repeat across architectures, so
 * each architecture gets its own tree: point a tool for the original at
 * `<run>/report/<arch>/scap-open-test` (matrix_gen reads every file under the folder it is given as
 * a result, and `<run>/report/<arch>/` also holds matrix.md). Columns a run leaves out (columns.ts)
 * have no files, as kernel-testing has none for them.
 * Each file is an Ansible-style result (to_nice_json: 4 spaces, sorted keys) with `rc`, `skipped`,
 * `stderr`, `msg`, `false_condition`, plus kmatrix's own `verdict` (which the original ignores).
 */
import { mkdir, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Arch } from "../config/types.js";
import { archesOf, type Cell, type CellVerdict, type LoadedRun } from "./load.js";
import { cleanText } from "./text.js";
import { rcOf } from "./verdicts.js";

export interface ScapOpenResult {
  false_condition: string;
  msg: string;
  /** Exit code; 0 for pass, -1 when a non-pass has none (timeout, panic, harness error, missing). */
  rc: number;
  skipped: boolean;
  stderr: string;
  verdict: CellVerdict;
}

export function scapOpenResult(c: Cell): ScapOpenResult {
  const skipped = c.verdict === "skip";
  return {
    false_condition: skipped ? (c.reason ?? "") : "",
    msg: c.verdict === "pass" ? "" : cleanText(c.reason),
    rc: rcOf(c),
    skipped,
    stderr: cleanText(c.record?.outputTail),
    verdict: c.verdict,
  };
}

/** Path of a cell's file, relative to the report directory. */
export const scapOpenPath = (arch: Arch, machine: string, test: string) =>
  path.join(arch, "scap-open-test", machine, `${test}.json`);

/** Writes every cell's file; returns the paths written (absolute). */
export async function writeScapOpenLayout(run: LoadedRun, reportDir: string): Promise<string[]> {
  // The original orders its columns by file modification time: stamp files in plan order.
  const t0 = Date.parse(run.run.startedAt) / 1000 || 0;
  const written: string[] = [];
  for (const arch of archesOf(run)) {
    for (const c of run.cells.filter((x) => x.arch === arch)) {
      const file = path.join(reportDir, scapOpenPath(arch, c.machine, c.test));
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, `${JSON.stringify(scapOpenResult(c), null, 4)}\n`);
      const t = t0 + run.tests.indexOf(c.test);
      await utimes(file, t, t);
      written.push(file);
    }
  }
  return written;
}
