import { join } from "node:path";
import {
  describeDropped,
  diffRuns,
  hasRegressions,
  loadBaseline,
  loadRun,
  type MarkdownStyle,
  renderDiffTable,
  renderReport,
  shouldColour,
} from "../report/index.js";

/** `kmatrix report`: renders every report of a run directory; prints where they are. */
export async function reportCommand(
  runDir: string,
  flags: { baseline?: string; json?: boolean; style?: MarkdownStyle },
): Promise<number> {
  const { files, summary, diff, dropped } = await renderReport(runDir, {
    baseline: flags.baseline,
    style: flags.style,
  });
  if (flags.json) {
    console.log(JSON.stringify({ files, summary }, null, 2));
  } else {
    const t = summary.totals;
    console.log(
      `${t.pass} passed, ${t.skip} skipped, ${t.fail} failed, ${t.error} harness errors, ${t.missing} missing`,
    );
    const droppedLine = describeDropped(dropped);
    if (droppedLine) console.log(droppedLine);
    console.log(`report: ${join(runDir, "report", "html", "index.html")}`);
    for (const f of files.filter((f) => /matrix_\w+\.md$/.test(f))) console.log(`matrix: ${f}`);
    if (diff) console.log(renderDiffTable(diff, { colour: shouldColour() }));
  }
  return diff && hasRegressions(diff) ? 1 : 0;
}

/** `kmatrix diff`: what changed between two runs; exit 1 when anything regressed. */
export async function diffCommand(
  oldRun: string,
  newRun: string,
  flags: { json?: boolean },
): Promise<number> {
  const diff = diffRuns(await loadBaseline(oldRun), await loadRun(newRun));
  console.log(flags.json ? JSON.stringify(diff, null, 2) : renderDiffTable(diff, { colour: shouldColour() }));
  return hasRegressions(diff) ? 1 : 0;
}
