/**
 * JUnit XML as GitLab and Jenkins read it: <testsuites> with totals, one <testsuite> per machine,
 * one <testcase> per test (classname = machine id). skip → <skipped>, fail → <failure>,
 * error → <error type="harness-error">, missing → <error type="missing">. A pass with a kernel warning
 * stays a pass (no failure element) and says so in its <system-out>. Jenkins splits a classname at its
 * last dot into package and class, so a machine id with dots shows up split there.
 */
import type { Cell, LoadedRun } from "./load.js";
import { cleanText, escapeXml } from "./text.js";
import { isWarnedPass } from "./verdicts.js";

export const JUNIT_TYPE = { fail: "failure", error: "harness-error", missing: "missing" } as const;

const seconds = (ms: number) => (ms / 1000).toFixed(3);
const attrs = (o: Record<string, string | number | undefined>) =>
  Object.entries(o)
    .filter(([, v]) => v !== undefined)
    // Attribute values keep their newlines only as character references.
    .map(([k, v]) => ` ${k}="${escapeXml(String(v)).replace(/\n/g, "&#10;")}"`)
    .join("");

/**
 * The output shown with a failure or error (and a pass with a kernel warning): output tail, the WARN()
 * lines, the kernel's messages of the test, console excerpts, the builder's output and console when
 * the verdict comes from a builder, processes left behind, a later boot.
 */
function details(c: Cell, run: LoadedRun): string {
  const r = c.record;
  const parts = [cleanText(r?.outputTail).trimEnd()];
  const section = (label: string, lines: string[] | string | undefined) => {
    const text = cleanText(Array.isArray(lines) ? lines.join("\n") : lines).trimEnd();
    if (text) parts.push(`--- ${label} ---\n${text}`);
  };
  section("kernel warnings", r?.kernelWarnings);
  section("dmesg", r?.dmesg);
  section("console", r?.console);
  const builder = r?.builder
    ? (run.run.builders ?? []).find((b) => b.builder === r.builder && b.arch === c.arch)
    : undefined;
  section(`builder ${r?.builder} output`, builder?.outputTail);
  section(`builder ${r?.builder} console`, builder?.console);
  section("processes left behind (killed)", r?.leftover);
  if (r?.boot !== undefined && r.boot > 1)
    parts.push(`(ran on boot ${r.boot} of the machine: an earlier test left it in doubt)`);
  if (r?.ranIn === "sandbox") parts.push("(ran in a sandbox of the machine's image: a compile step)");
  if (c.logFile) parts.push(`(full output: ${c.logFile})`);
  return parts.filter(Boolean).join("\n");
}

function testcase(c: Cell, run: LoadedRun): string {
  const head = `    <testcase${attrs({ name: c.test, classname: c.machineId, time: seconds(c.record?.durationMs ?? 0) })}`;
  const message = c.reason ?? c.verdict;
  switch (c.verdict) {
    case "pass": {
      if (!isWarnedPass(c)) return `${head}/>`;
      const out = escapeXml(`passed, but the kernel printed a warning during the test\n${details(c, run)}`);
      return `${head}>\n      <system-out>${out}</system-out>\n    </testcase>`;
    }
    case "skip":
      return `${head}>\n      <skipped${attrs({ message })}/>\n    </testcase>`;
    default: {
      const tag = c.verdict === "fail" ? "failure" : "error";
      const body = escapeXml(details(c, run));
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
      ...cells.map((c) => testcase(c, run)),
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
