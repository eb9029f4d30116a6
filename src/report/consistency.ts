/**
 * checkReportsAgree(runDir): re-reads the rendered reports of a run (markdown, JUnit, summary, the
 * scap-open layout, the HTML pages) and checks that each says, for every cell, what the results say.
 * It parses the files as a consumer would, not through the renderers, so it catches renderer bugs.
 * A pass with a kernel warning must read as a pass everywhere (🟢 without a link or section in the
 * Markdown, no JUnit failure) and carry its warnings where kmatrix shows them (summary.json, the JUnit
 * system-out, a flagged HTML cell with a dialog); machines' boots and fresh boots as run.json says.
 * Columns the sources rule out (columns.ts) must be absent from the Markdown, HTML and scap-open
 * layout, present in JUnit and summary.json, and named in summary.json's droppedColumns. The
 * Markdown is read in the style it was rendered in (Falco's: matrix_gen's headers, byte-ordered
 * rows and `#<machine>-<test>` links without dots; kmatrix's: GitHub anchors); <arch>/matrix.md
 * must be the same text as matrix_<ARCH>.md.
 * Returns the disagreements, one line each; an empty list means the reports agree.
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { type DroppedColumn, droppedColumns, withoutColumns } from "./columns.js";
import { byteOrder } from "./falco-markdown.js";
import { JUNIT_TYPE } from "./junit.js";
import { archesOf, type Cell, type CellVerdict, type LoadedRun, loadRun, rowsOf } from "./load.js";
import { archMatrixFile, MARKDOWN_FILE } from "./markdown.js";
import { scapOpenPath } from "./scap-open-layout.js";
import type { Summary } from "./summary.js";
import { title } from "./tablewriter.js";
import { slugger } from "./text.js";
import { BASELINE_HEADING, FALCO_SYMBOL, falcoAnchor, headingOf, isWarnedPass, SYMBOL } from "./verdicts.js";

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', "#39": "'", "#10": "\n" };
const unescapeXml = (s: string) =>
  s.replace(/&(amp|lt|gt|quot|#39|#10);/g, (_, e: string) => ENTITIES[e] ?? "");
const attrsOf = (s: string) =>
  Object.fromEntries([...s.matchAll(/([\w-]+)="([^"]*)"/g)].map((m) => [m[1], unescapeXml(m[2] ?? "")]));
const key = (machineId: string, test: string) => `${machineId} ${test}`;
const same = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
/** The WARN() lines a cell carries (none for a cell without them). */
const warningsOf = (c: Cell) => c.record?.kernelWarnings ?? [];

async function read(file: string, problems: string[]): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch {
    problems.push(`${file}: missing`);
    return undefined;
  }
}

/** Compares what a report says per cell with the results; `said` has one entry per cell it shows. */
function compare(name: string, run: LoadedRun, said: Map<string, CellVerdict>, problems: string[]) {
  for (const c of run.cells) {
    const v = said.get(key(c.machineId, c.test));
    if (v !== c.verdict)
      problems.push(`${name}: ${key(c.machineId, c.test)} is ${v ?? "absent"}, expected ${c.verdict}`);
  }
  const grid = new Set(run.cells.map((c) => key(c.machineId, c.test)));
  for (const k of said.keys()) if (!grid.has(k)) problems.push(`${name}: ${k} is not a cell of the run`);
}

function checkSummary(run: LoadedRun, text: string, dropped: DroppedColumn[], problems: string[]) {
  const s = JSON.parse(text) as Summary;
  if (!same(s.droppedColumns ?? [], dropped))
    problems.push(
      `summary.json: droppedColumns is ${JSON.stringify(s.droppedColumns ?? [])}, expected ${JSON.stringify(dropped)}`,
    );
  compare("summary.json", run, new Map(s.cells.map((c) => [key(c.machineId, c.test), c.verdict])), problems);
  for (const c of run.cells) {
    const sc = s.cells.find((x) => x.machineId === c.machineId && x.test === c.test);
    if (sc && sc.reason !== c.reason)
      problems.push(`summary.json: ${key(c.machineId, c.test)} has another reason`);
    if (sc && !same(sc.kernelWarnings ?? [], warningsOf(c)))
      problems.push(`summary.json: ${key(c.machineId, c.test)} has other kernel warnings`);
  }
  for (const m of run.machines) {
    const sm = s.arches[m.arch]?.machines.find((x) => x.machineId === m.machineId);
    if (!sm) problems.push(`summary.json: machine ${m.machineId} is absent`);
    else if (sm.boots !== m.boots || !same(sm.replaced ?? [], m.replaced ?? []))
      problems.push(`summary.json: machine ${m.machineId} has other boots than run.json`);
  }
  for (const arch of archesOf(run)) {
    for (const [v, n] of Object.entries(s.arches[arch]?.counts ?? {})) {
      const expected = run.cells.filter((c) => c.arch === arch && c.verdict === v).length;
      if (n !== expected) problems.push(`summary.json: ${arch} counts ${n} ${v}, expected ${expected}`);
    }
  }
}

function checkJunit(run: LoadedRun, xml: string, problems: string[]) {
  const said = new Map<string, CellVerdict>();
  const byType = Object.fromEntries(Object.entries(JUNIT_TYPE).map(([v, t]) => [t, v as CellVerdict]));
  for (const m of xml.matchAll(/<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const a = attrsOf(m[1] ?? "");
    const child = /<(skipped|failure|error)\b([^>]*?)\/?>/.exec(m[2] ?? "");
    const type = attrsOf(child?.[2] ?? "").type ?? "";
    const v = !child
      ? "pass"
      : child[1] === "skipped"
        ? "skip"
        : child[1] === "failure"
          ? "fail"
          : byType[type];
    said.set(key(a.classname ?? "", a.name ?? ""), v ?? (`unknown error type ${type}` as CellVerdict));
    const c = run.cells.find((x) => x.machineId === a.classname && x.test === a.name);
    if (c && isWarnedPass(c)) {
      const out = unescapeXml(/<system-out>([\s\S]*?)<\/system-out>/.exec(m[2] ?? "")?.[1] ?? "");
      if (!warningsOf(c).every((w) => out.includes(w)) || !out.includes("kernel"))
        problems.push(`junit.xml: ${key(c.machineId, c.test)}: its system-out lacks the kernel warnings`);
    }
  }
  compare("junit.xml", run, said, problems);
  const root = attrsOf(/<testsuites\b([^>]*)>/.exec(xml)?.[1] ?? "");
  const n = (...vs: CellVerdict[]) => String(run.cells.filter((c) => vs.includes(c.verdict)).length);
  const want = {
    tests: String(run.cells.length),
    failures: n("fail"),
    errors: n("error", "missing"),
    skipped: n("skip"),
  };
  for (const [k, v] of Object.entries(want))
    if (root[k] !== v) problems.push(`junit.xml: <testsuites ${k}="${root[k]}">, expected ${v}`);
}

const SECTION_LABEL: Record<Exclude<CellVerdict, "pass">, string> = {
  skip: "Skipped Condition:",
  fail: "Msg:",
  error: "Harness error (not a driver failure):",
  missing: "Missing:",
};

function checkMarkdown(run: LoadedRun, arch: Cell["arch"], md: string, problems: string[]) {
  const name = MARKDOWN_FILE[arch];
  const lines = md.split("\n");
  const split = (l: string) =>
    l
      .replace(/^\|\s*|\s*\|$/g, "")
      .split(/\s*(?<!\\)\|\s*/)
      .map((x) => x.replace(/\\\|/g, "|"));
  const header = split(lines[0] ?? "");
  // kmatrix's style says `Kernel` and the tests as they are; Falco's says them as tablewriter does.
  const falco = header[0] !== "Kernel";
  const symbols = falco ? FALCO_SYMBOL : SYMBOL;
  const expectedHeader = falco ? ["KERNEL", ...run.tests.map(title)] : ["Kernel", ...run.tests];
  if (header.join("\0") !== expectedHeader.join("\0")) problems.push(`${name}: header is ${lines[0]}`);
  const end = lines.findIndex((l) => !l.startsWith("|"));
  // matrix_gen: the table, two blank lines, then the sections (nothing in between).
  if (falco && !/^\n(# |$)/.test(lines.slice(end + 1).join("\n")))
    problems.push(`${name}: something other than the sections follows the table`);

  // The sections: by heading text. Falco's links are matrix_gen's; kmatrix's, GitHub's slugs.
  const headings = [...md.matchAll(/^# (.+)$/gm)].map((m) => ({ text: m[1] ?? "", at: m.index ?? 0 }));
  const slug = slugger();
  if (headings[0]?.text !== BASELINE_HEADING) slug(BASELINE_HEADING); // reserved, as the renderer does
  const sections = new Map(
    headings.map((h, i) => [
      h.text,
      { slug: slug(h.text), body: md.slice(h.at, headings[i + 1]?.at ?? md.length) },
    ]),
  );

  const said = new Map<string, CellVerdict>();
  const machines = rowsOf(run, arch).map((r) => r.machine);
  if (falco) machines.sort((a, b) => byteOrder(a.machine, b.machine));
  const tableRows = lines.slice(2, end).map(split);
  if (tableRows.map((r) => r[0]).join("\0") !== machines.map((m) => m.machine).join("\0"))
    problems.push(
      `${name}: rows are not the run's ${arch} machines sorted by ${falco ? "bytes (Go's sort.Strings)" : "name"}`,
    );
  for (const r of tableRows) {
    const m = machines.find((x) => x.machine === r[0]);
    r.slice(1).forEach((cell, i) => {
      const test = run.tests[i] ?? "?";
      const id = key(m?.machineId ?? `${r[0]}?`, test);
      const link = /^\[(.+)\]\(#(.+)\)$/.exec(cell);
      const symbol = link ? link[1] : cell;
      const v = (Object.entries(symbols).find(([, s]) => s === symbol)?.[0] ??
        `symbol ${symbol}`) as CellVerdict;
      said.set(id, v);
      if ((v === "pass") !== !link)
        problems.push(`${name}: ${id}: ${v} cell ${link ? "has" : "lacks"} a link`);
      if (!link) return;
      const heading = headingOf({ machine: r[0] ?? "", test });
      const section = sections.get(heading);
      const anchor = falco ? falcoAnchor(r[0] ?? "", test) : section?.slug;
      if (!section || link[2] !== anchor)
        problems.push(
          `${name}: ${id}: link #${link[2]} does not lead to "# ${heading}"${section ? ` (#${anchor})` : " (no such heading)"}`,
        );
      else if (v !== "pass" && !section.body.includes(`\n\n${SECTION_LABEL[v]}\n`))
        problems.push(`${name}: ${id}: its section lacks "${SECTION_LABEL[v]}"`);
    });
  }
  compare(name, { ...run, cells: run.cells.filter((c) => c.arch === arch) }, said, problems);
  // Falco's format: a section for each non-green cell and for nothing else (not a warned pass).
  const cellSections = headings.filter((h) => h.text !== BASELINE_HEADING).length;
  const nonGreen = run.cells.filter((c) => c.arch === arch && c.verdict !== "pass").length;
  if (cellSections !== nonGreen)
    problems.push(`${name}: ${cellSections} cell sections for ${nonGreen} non-green cells`);
}

async function checkScapOpen(run: LoadedRun, reportDir: string, problems: string[]) {
  const said = new Map<string, CellVerdict>();
  for (const c of run.cells) {
    const rel = scapOpenPath(c.arch, c.machine, c.test);
    const text = await read(path.join(reportDir, rel), problems);
    if (!text) continue;
    const r = JSON.parse(text);
    said.set(key(c.machineId, c.test), r.verdict);
    // What a tool for the original concludes: skipped → 🟡, rc != 0 → ❌, else 🟢.
    const original = r.skipped ? "skip" : r.rc !== 0 ? "bad" : "pass";
    const expected = c.verdict === "skip" || c.verdict === "pass" ? c.verdict : "bad";
    if (original !== expected || !Number.isInteger(r.rc))
      problems.push(
        `${rel}: reads as ${original} (rc ${r.rc}) to the original's tools, expected ${expected}`,
      );
    if (r.false_condition !== (c.verdict === "skip" ? (c.reason ?? "") : ""))
      problems.push(`${rel}: false_condition is not the skip reason`);
  }
  compare("scap-open-test", run, said, problems);
  let files = 0;
  for (const arch of archesOf(run)) {
    const dir = path.join(reportDir, arch, "scap-open-test");
    for (const m of await readdir(dir).catch(() => [])) files += (await readdir(path.join(dir, m))).length;
  }
  if (files !== run.cells.length)
    problems.push(`scap-open-test: ${files} files for ${run.cells.length} cells`);
}

function checkHtml(run: LoadedRun, arch: Cell["arch"], html: string, problems: string[]) {
  const name = `html/${arch}.html`;
  const said = new Map<string, CellVerdict>();
  const dialogs = new Map(
    [...html.matchAll(/<dialog\b([^>]*)>/g)].map((m) => attrsOf(m[1] ?? "")).map((a) => [a.id, a]),
  );
  for (const m of html.matchAll(/<td\b([^>]*)>(.*?)<\/td>/g)) {
    const a = attrsOf(m[1] ?? "");
    if (!a["data-machine-id"]) continue;
    const id = key(a["data-machine-id"], a["data-test"] ?? "");
    said.set(id, a["data-verdict"] as CellVerdict);
    const open = attrsOf(m[2] ?? "")["data-open"];
    const d = open ? dialogs.get(open) : undefined;
    const c = run.cells.find((x) => key(x.machineId, x.test) === id);
    const warned = c !== undefined && isWarnedPass(c);
    if (
      (a["data-verdict"] !== "pass" || warned) &&
      (!d || key(d["data-machine-id"] ?? "", d["data-test"] ?? "") !== id)
    )
      problems.push(`${name}: ${id}: no dialog for this cell`);
    const flagged = a["data-kernel-warnings"] !== undefined;
    const inner = attrsOf(m[2] ?? "");
    const says = /kernel warning/.test(`${inner.title ?? ""} ${inner["aria-label"] ?? ""}`);
    if (warned !== flagged || (warned && !says))
      problems.push(
        `${name}: ${id}: ${warned ? "a pass with a kernel warning is not flagged as one" : "flagged with a kernel warning it does not have"}`,
      );
  }
  compare(name, { ...run, cells: run.cells.filter((c) => c.arch === arch) }, said, problems);
}

/** index.html lists every fresh boot of every machine (one line each), and no other. */
function checkIndex(run: LoadedRun, html: string, problems: string[]) {
  const listed = [...html.matchAll(/<li\b([^>]*)>/g)]
    .map((m) => attrsOf(m[1] ?? ""))
    .filter((a) => a["data-after-test"] !== undefined)
    .map((a) => `${a["data-machine-id"]} after ${a["data-after-test"]}`);
  const expected = run.machines.flatMap((m) =>
    (m.replaced ?? []).map((r) => `${m.machineId} after ${r.afterTest}`),
  );
  if (!same(listed.sort(), expected.sort()))
    problems.push(
      `html/index.html: lists fresh boots [${listed.join(", ")}], expected [${expected.join(", ")}]`,
    );
}

export async function checkReportsAgree(runDir: string): Promise<string[]> {
  const run = await loadRun(runDir);
  const dropped = droppedColumns(run);
  const shown = withoutColumns(run, dropped);
  const dir = path.join(runDir, "report");
  const problems: string[] = [];
  const summary = await read(path.join(dir, "summary.json"), problems);
  if (summary) checkSummary(run, summary, dropped, problems);
  const junit = await read(path.join(dir, "junit.xml"), problems);
  if (junit) checkJunit(run, junit, problems);
  for (const arch of archesOf(run)) {
    const md = await read(path.join(dir, MARKDOWN_FILE[arch]), problems);
    if (md) checkMarkdown(shown, arch, md, problems);
    const copy = await read(path.join(dir, archMatrixFile(arch)), problems);
    if (md !== undefined && copy !== undefined && copy !== md)
      problems.push(`${archMatrixFile(arch)}: not the same text as ${MARKDOWN_FILE[arch]}`);
    const html = await read(path.join(dir, "html", `${arch}.html`), problems);
    if (html) checkHtml(shown, arch, html, problems);
  }
  const index = await read(path.join(dir, "html", "index.html"), problems);
  if (index) checkIndex(run, index, problems);
  await checkScapOpen(shown, dir, problems);
  return problems;
}
