/**
 * JUnit XML as GitLab and Jenkins read it: <testsuites> with totals, one <testsuite> per machine,
 * one <testcase> per test (classname = machine id). skip → <skipped>, fail → <failure>,
 * error → <error type="harness-error">, missing → <error type="missing">. Jenkins splits a classname
 * at its last dot into package and class, so a machine id with dots shows up split there.
 */
import type { Cell, LoadedRun } from "./load.js";
import { cleanText, escapeXml } from "./text.js";

export const JUNIT_TYPE = { fail: "failure", error: "harness-error", missing: "missing" } as const;

const seconds = (ms: number) => (ms / 1000).toFixed(3);
const attrs = (o: Record<string, string | number | undefined>) =>
  Object.entries(o)
    .filter(([, v]) => v !== undefined)
    // Attribute values keep their newlines only as character references.
    .map(([k, v]) => ` ${k}="${escapeXml(String(v)).replace(/\n/g, "&#10;")}"`)
    .join("");

/** The output shown with a failure or error: output tail, then new kernel warnings and console. */
function details(c: Cell): string {
  const r = c.record;
  const parts = [cleanText(r?.outputTail).trimEnd()];
  if (r?.dmesg?.length) parts.push(`--- dmesg ---\n${cleanText(r.dmesg.join("\n"))}`);
  if (r?.console) parts.push(`--- console ---\n${cleanText(r.console).trimEnd()}`);
  if (c.logFile) parts.push(`(full output: ${c.logFile})`);
  return parts.filter(Boolean).join("\n");
}

function testcase(c: Cell): string {
  const head = `    <testcase${attrs({ name: c.test, classname: c.machineId, time: seconds(c.record?.durationMs ?? 0) })}`;
  const message = c.reason ?? c.verdict;
  switch (c.verdict) {
    case "pass":
      return `${head}/>`;
    case "skip":
      return `${head}>\n      <skipped${attrs({ message })}/>\n    </testcase>`;
    default: {
      const tag = c.verdict === "fail" ? "failure" : "error";
      const body = escapeXml(details(c));
      const el = `<${tag}${attrs({ message, type: JUNIT_TYPE[c.verdict] })}`;
      return `${head}>\n      ${body ? `${el}>${body}</${tag}>` : `${el}/>`}\n    </testcase>`;
    }
  }
}

const totals = (cells: Cell[]) => ({
  tests: cells.length,
  failures: cells.filter((c) => c.verdict === "fail").length,
  errors: cells.filter((c) => c.verdict === "error" || c.verdict === "missing").length,
  skipped: cells.filter((c) => c.verdict === "skip").length,
  time: seconds(cells.reduce((t, c) => t + (c.record?.durationMs ?? 0), 0)),
});

export function renderJunit(run: LoadedRun): string {
  const suites = run.machines.map((m) => {
    const cells = run.cells.filter((c) => c.machineId === m.machineId);
    const props = { arch: m.arch, kernelRelease: m.kernelRelease, accel: m.accel, machineError: m.error };
    const properties = Object.entries(props)
      .filter(([, v]) => v !== undefined)
      .map(([name, value]) => `      <property${attrs({ name, value })}/>`);
    return [
      `  <testsuite${attrs({ name: m.machineId, ...totals(cells) })}>`,
      ...(properties.length ? ["    <properties>", ...properties, "    </properties>"] : []),
      ...cells.map(testcase),
      "  </testsuite>",
    ].join("\n");
  });
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites${attrs({ name: `kmatrix ${run.run.runId}`, ...totals(run.cells) })}>`,
    ...suites,
    "</testsuites>",
    "",
  ].join("\n");
}
