import { mergeRuns } from "../results/merge.js";
import { progress } from "./log.js";
import { reportCommand } from "./report.js";

/**
 * `kmatrix merge <run>… -o <dir>`: one run from the runs of a sharded fan-out (results/merge.ts),
 * then its reports, rendered as `kmatrix report` renders any run.
 */
export async function mergeCommand(runs: string[], flags: { output: string }): Promise<number> {
  const { run, notes } = await mergeRuns(runs, flags.output);
  for (const note of notes) progress(`merge: ${note}`);
  console.log(
    `merged ${runs.length} run${runs.length === 1 ? "" : "s"} (${run.machines.length} machines) into ${flags.output}`,
  );
  return reportCommand(flags.output, {});
}
