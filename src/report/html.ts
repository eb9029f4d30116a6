/**
 * A self-contained static site (report/html/): index.html (glossary + summary per architecture) and
 * one matrix page per architecture. No network, inline CSS/JS. Every matrix cell carries
 * data-machine / data-machine-id / data-test / data-verdict; each non-green cell links to a <dialog>
 * (id = the cell's Markdown anchor) holding its reason, output tail, dmesg and console excerpt. A pass
 * with a kernel warning stays green, is flagged (⚑, data-kernel-warnings, "kernel warning" in its
 * title and label) and links to a dialog too (its id follows the Markdown anchors: it has no section
 * there). Every dialog also names the processes the test left behind and a boot other than the first,
 * and for a verdict that comes from a builder, that builder's output and console excerpt.
 */
import type { Arch } from "../config/types.js";
import type { DroppedColumn } from "./columns.js";
import { type RunDiff, renderBaselineSection } from "./diff.js";
import { CSS, JS } from "./html-assets.js";
import { archesOf, type Cell, type LoadedRun, rowsOf, sourceVersions, VERDICTS } from "./load.js";
import type { Summary } from "./summary.js";
import { escapeXml as esc, formatDuration } from "./text.js";
import { dialogIdsOf, headingOf, isWarnedPass, LEGEND, MEANING, SYMBOL } from "./verdicts.js";

export const htmlFile = (arch: Arch) => `${arch}.html`;

// HTML only: Falco's Markdown shows a pass with a kernel warning as any other pass.
const WARNED_MEANING = "passed, but the kernel printed a warning during the test";
const WARNED_LEGEND = "⚑ passed with a kernel warning";

/** A run-directory file as a link from report/html/ (percent-encoded: machine ids hold `@`). */
const runLink = (rel: string) => `../../${rel.split(/[\\/]/).map(encodeURIComponent).join("/")}`;

function page(run: LoadedRun, title: string, body: string): string {
  const nav = [
    `<a href="index.html">Summary</a>`,
    ...archesOf(run).map((a) => `<a href="${htmlFile(a)}">${a}</a>`),
  ].join("");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>${esc(title)}</title>
<style>${CSS}</style>
<noscript><style>dialog{display:block;position:static;width:auto;margin:1rem 0}</style></noscript>
</head>
<body>
<header><nav>${nav}</nav><h1>${esc(title)}</h1></header>
<main>
${body}
</main>
<script>${JS}</script>
</body>
</html>
`;
}

const counts = (c: Record<string, number>) =>
  VERDICTS.map((v) => `<span title="${v}">${SYMBOL[v]} ${c[v] ?? 0}</span>`).join(" · ");

function dialog(c: Cell, id: string, run: LoadedRun): string {
  const r = c.record;
  const pre = (label: string, text: string | undefined, cls: string) =>
    text ? `<h3>${label}</h3><pre class="${cls}">${esc(text)}</pre>` : "";
  const warned = isWarnedPass(c);
  const warnings = r?.kernelWarnings?.length ? r.kernelWarnings : warned && c.reason ? [c.reason] : [];
  const builder = r?.builder
    ? (run.run.builders ?? []).find((b) => b.builder === r.builder && b.arch === c.arch)
    : undefined;
  const facts = [
    r?.builder &&
      `verdict from builder <code>${esc(r.builder)}</code>${builder?.ranOn ? ` (ran on ${esc(builder.ranOn)})` : ""}`,
    r?.command && `command <code>${esc(r.command)}</code>`,
    r?.ranIn === "sandbox" && "ran in a sandbox of the machine's image (a compile step)",
    r?.exitCode !== undefined && `exit code ${r.exitCode}`,
    r?.timedOut && "timed out",
    r?.durationMs !== undefined && `took ${formatDuration(r.durationMs)}`,
    r?.kernelRelease && `kernel ${esc(r.kernelRelease)}`,
  ].filter(Boolean);
  const links = [
    c.logFile && `<a href="${runLink(c.logFile)}">full output</a>`,
    c.verdict !== "skip" &&
      run.consoles[c.machineId] &&
      `<a href="${runLink(run.consoles[c.machineId] ?? "")}">whole console</a>`,
  ].filter(Boolean);
  const label =
    c.verdict === "skip" ? "Skipped condition" : c.verdict === "error" ? "Harness error" : "Reason";
  const meaning = warned
    ? WARNED_MEANING
    : `${MEANING[c.verdict]}${c.verdict === "error" ? " (not a driver failure)" : ""}`;
  const boot =
    r?.boot !== undefined && r.boot > 1
      ? `<p class="boot">ran on boot ${r.boot} of the machine: an earlier test left it in doubt</p>\n`
      : "";
  return `<dialog id="${esc(id)}" data-machine-id="${esc(c.machineId)}" data-test="${esc(c.test)}" data-verdict="${c.verdict}" aria-labelledby="${esc(id)}-h">
<article>
<div class="bar"><h2 id="${esc(id)}-h">${SYMBOL[c.verdict]} ${esc(headingOf(c))}</h2><form method="dialog"><button>Close</button></form></div>
<p class="meaning">${esc(meaning)}</p>
${c.verdict === "pass" ? "" : pre(label, c.reason, "reason")}${pre(warnings.length > 1 ? "Kernel warnings" : "Kernel warning", warnings.join("\n"), "warning")}${pre("Output (last lines)", r?.outputTail, "output")}${pre("Kernel log during the test (dmesg, warn and worse)", r?.dmesg?.join("\n"), "dmesg")}${pre("Console excerpt", r?.console, "console")}${pre(`Builder ${esc(builder?.builder ?? "")}: output (last lines)`, builder?.outputTail, "builder-output")}${pre(`Builder ${esc(builder?.builder ?? "")}: console excerpt`, builder?.console, "builder-console")}${pre("Processes left behind (killed)", r?.leftover?.join("\n"), "leftover")}
${boot}${facts.length ? `<p class="muted">${facts.join(" · ")}</p>` : ""}${links.length ? `<p>${links.join(" · ")}</p>` : ""}
</article>
</dialog>`;
}

/** One architecture's matrix; `run` is the run as shown (without the `dropped` columns). */
export function renderArchPage(
  run: LoadedRun,
  arch: Arch,
  diff?: RunDiff,
  dropped: DroppedColumn[] = [],
): string {
  const rows = rowsOf(run, arch);
  const cells = rows.flatMap((r) => r.cells);
  const anchors = dialogIdsOf(cells);
  const change = new Map(
    (diff?.changes ?? []).map((c) => [`${c.machineId}\u0000${c.test}`, c.kind] as const),
  );
  const td = (c: Cell) => {
    const kind = change.get(`${c.machineId}\u0000${c.test}`);
    const warned = isWarnedPass(c);
    const nWarnings = c.record?.kernelWarnings?.length || 1;
    const attrs = `data-machine="${esc(c.machine)}" data-machine-id="${esc(c.machineId)}" data-test="${esc(c.test)}" data-verdict="${c.verdict}"${c.record?.ranIn ? ` data-ran-in="${c.record.ranIn}"` : ""}${warned ? ` data-kernel-warnings="${nWarnings}"` : ""}${kind ? ` data-change="${kind}"` : ""}`;
    const id = anchors.get(c);
    const link = (attrs: string, inner: string) =>
      `<a href="#${esc(id ?? "")}" data-open="${esc(id ?? "")}" ${attrs}>${inner}</a>`;
    const inner = !id
      ? `<span title="${esc(c.test)}: passed${c.record?.ranIn === "sandbox" ? " (in a sandbox of the machine's image)" : ""}">${SYMBOL.pass}</span>`
      : warned
        ? link(
            `title="${esc(`${c.test}: passed, ${c.reason ?? "kernel warning"}`)}" aria-label="${esc(c.test)}: passed, kernel warning"`,
            `${SYMBOL.pass}<span class="flag" aria-hidden="true">⚑</span>`,
          )
        : link(`title="${esc(`${c.test}: ${c.reason ?? c.verdict}`)}"`, SYMBOL[c.verdict]);
    return `<td ${attrs}>${inner}</td>`;
  };
  const tr = ({ machine: m, cells: cs }: (typeof rows)[number]) => {
    // A kernel warning is something to look at: its row stays visible under "only problems".
    const green = cs.every((c) => c.verdict === "pass" && !isWarnedPass(c));
    const sub = m.kernelRelease ? `<br><small>${esc(m.kernelRelease)}</small>` : "";
    return `<tr data-machine="${esc(m.machine)}" data-machine-id="${esc(m.machineId)}"${green ? ' class="all-green"' : ""}><th scope="row">${esc(m.machine)}${sub}</th>${cs.map(td).join("")}</tr>`;
  };
  const body = `<p>${counts(Object.fromEntries(VERDICTS.map((v) => [v, cells.filter((c) => c.verdict === v).length])))}</p>
<label class="filter"><input type="checkbox" id="only-problems"> Only problems (hide kernels where everything passed)</label>
<div class="scroll"><table class="matrix" id="matrix">
<thead><tr><th>Kernel</th>${run.tests.map((t) => `<th scope="col">${esc(t)}</th>`).join("")}</tr></thead>
<tbody>
${rows.map(tr).join("\n")}
</tbody>
</table></div>
<p class="muted legend">${esc(LEGEND)} · ${esc(WARNED_LEGEND)}</p>
${dropped.length ? `<p class="muted dropped">Not shown, skipped everywhere: ${dropped.map((d) => `<code data-dropped-test="${esc(d.test)}">${esc(d.test)}</code> (${esc(d.reason)})`).join(", ")}.</p>\n` : ""}${diff ? renderBaselineSection(diff, "html", arch) : ""}
${[...anchors].map(([c, id]) => dialog(c, id, run)).join("\n")}`;
  return page(run, `${arch} · run ${run.run.runId}`, body);
}

export function renderIndexPage(run: LoadedRun, summary: Summary, diff?: RunDiff): string {
  const glossary = `<section><h2>Glossary</h2><dl class="glossary">${VERDICTS.map(
    (v) => `<dt>${SYMBOL[v]}</dt><dd>${esc(MEANING[v])}</dd>`,
  ).join("")}<dt>${SYMBOL.pass}⚑</dt><dd>${esc(WARNED_MEANING)}</dd></dl></section>`;
  const about = [
    `plan <code>${esc(run.run.plan.name)}</code> (${run.tests.length} tests)`,
    ...sourceVersions(run).map((v) => esc(v)),
    `kmatrix ${esc(summary.kmatrixVersion)}`,
    `started ${esc(summary.startedAt)}`,
    `run time ${formatDuration(summary.durationMs)}`,
    ...(summary.interrupted ? ["<strong>interrupted</strong>"] : []),
  ].join(" · ");
  const arches = archesOf(run).map((arch) => {
    const a = summary.arches[arch];
    if (!a) return "";
    const machines = a.machines
      .map(
        (m) =>
          `<tr data-machine-id="${esc(m.machineId)}"><th scope="row">${esc(m.machine)}</th><td>${esc(m.kernelRelease ?? "")}</td><td>${esc(m.accel ?? "")}</td><td>${m.bootMs !== undefined ? formatDuration(m.bootMs) : ""}</td><td>${esc(m.error ?? "")}</td></tr>`,
      )
      .join("\n");
    // One line per fresh boot: which test left the machine in doubt, and how.
    const boots = a.machines
      .flatMap((m) =>
        (m.replaced ?? []).map(
          (r, i) =>
            `<li data-machine-id="${esc(m.machineId)}" data-after-test="${esc(r.afterTest)}">${esc(m.machine)}: boot ${i + 2} after <code>${esc(r.afterTest)}</code> (${esc(r.reason)})</li>`,
        ),
      )
      .join("\n");
    const replaced = boots
      ? `\n<h3>Fresh boots</h3><p class="muted">A test left these machines in doubt; their later tests ran on a freshly booted machine.</p>\n<ul class="replaced">\n${boots}\n</ul>`
      : "";
    // Which machine made each shared artifact, and how: the runner's glibc is that machine's.
    const builderRows = (run.run.builders ?? [])
      .filter((b) => b.arch === arch)
      .map(
        (b) =>
          `<tr data-builder="${esc(b.builder)}"><th scope="row">${esc(b.builder)}</th><td>${esc(b.ranOn ? `${b.ranOn} (cross, for ${b.machineId})` : b.machineId)}</td><td${b.compilers ? ` title="${esc(b.compilers)}"` : ""}>${esc(b.cached ? "cached" : `${b.isolation ?? ""}${b.compilers ? ", host's cross compilers" : ""}`)}</td><td>${b.ok ? SYMBOL.pass : esc(`${b.fault === "code" ? SYMBOL.fail : SYMBOL.error} ${b.reason ?? ""}`)}</td></tr>`,
      )
      .join("\n");
    const builders = builderRows
      ? `\n<h3>Builders</h3><div class="scroll"><table class="builders"><thead><tr><th>Builder</th><th>Machine</th><th>Ran in</th><th>Result</th></tr></thead>\n<tbody>\n${builderRows}\n</tbody></table></div>`
      : "";
    return `<section data-arch="${arch}"><h2><a href="${htmlFile(arch)}">${arch}</a></h2>
<p class="counts">${counts(a.counts)}</p>
<p class="muted">run time ${formatDuration(a.wallMs)} · kmatrix ${esc(summary.kmatrixVersion)}</p>
<div class="scroll"><table><thead><tr><th>Kernel</th><th>Release</th><th>Accel</th><th>Boot</th><th>Machine error</th></tr></thead>
<tbody>
${machines}
</tbody></table></div>${builders}${replaced}</section>`;
  });
  const body = `<p class="muted">${about}</p>
${diff ? renderBaselineSection(diff, "html") : ""}
${arches.join("\n")}
${glossary}`;
  return page(run, `kmatrix run ${run.run.runId}`, body);
}
