/**
 * The Falco-format matrices (src/report/falco-markdown.ts):
 * - byte for byte the hand-derived expectations in fixtures/report/falco/ (never rewritten by a
 *   test: they were derived from matrix_gen's and tablewriter 0.0.5's rules, not from the renderer);
 * - the same text as matrix_gen's own procedure applied to the run's scap-open layout (walk the
 *   files, columns by modification time, rows by bytes), for runs whose cells all have a driver verdict;
 * - columns the sources rule out are left out (libs >= 0.24: no bpf-probe_* columns);
 * - libs' three consumers replayed on the output: the PR comment (lines up to the first that does
 *   not start with `|`), the release notes (`sed -n '/# /q;p'` then
 *   `sed 's/\[\(.\)\]([^)]*)/\1/g'`), and the pages (front matter prepended, every table link
 *   checked against the heading ids mkdocs' default toc extension gives).
 */
import { mkdtemp, readdir, readFile, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { reportCommand } from "../../src/cli/report.js";
import { describeDropped, droppedColumns } from "../../src/report/columns.js";
import { checkReportsAgree, loadRun, renderReport } from "../../src/report/index.js";
import { renderTable, runeWidth, stringWidth, title } from "../../src/report/tablewriter.js";
import { slugger } from "../../src/report/text.js";
import { falcoAnchor } from "../../src/report/verdicts.js";
import {
  awkwardRun,
  FALCO_TESTS,
  harnessRun,
  libs024Run,
  NO_LEGACY_PROBE,
} from "./fixtures/report/falco-runs.js";
import { type FixtureRun, writeFixtureRun, writeRun } from "./fixtures/report/run.js";

const EXPECTED = fileURLToPath(new URL("./fixtures/report/falco/", import.meta.url));
const FILES = { x86_64: "matrix_X64.md", aarch64: "matrix_ARM64.md" } as const;

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), "kmatrix-markdown-falco-"));
});

/** Writes and renders a fixture run; returns its report directory. */
async function rendered(name: string, fixture: FixtureRun | "main"): Promise<string> {
  const dir = path.join(tmp, name);
  if (fixture === "main") await writeFixtureRun(dir);
  else await writeRun(dir, fixture);
  await renderReport(dir);
  return path.join(dir, "report");
}

const read = (dir: string, rel: string) => readFile(path.join(dir, rel), "utf8");

// --- matrix_gen's own procedure, on the files it reads -----------------------------------------

interface ScapOpen {
  rc: number;
  skipped: boolean;
  stderr: string;
  msg: string;
  false_condition: string;
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else out.push(p);
  }
  return out;
}

/** What matrix_gen writes for a --root-folder (its Loop and Store, re-stated). */
async function matrixGen(root: string): Promise<string> {
  const entries = new Map<string, Map<string, ScapOpen>>();
  const firstSeen = new Map<string, number>();
  for (const file of await walk(root)) {
    const parts = file.split("/");
    const test = (parts.at(-1) ?? "").replace(/\.json$/, "");
    const machine = parts.at(-2) ?? "";
    const tests = entries.get(machine) ?? new Map<string, ScapOpen>();
    tests.set(test, JSON.parse(await readFile(file, "utf8")));
    entries.set(machine, tests);
    if (!firstSeen.has(test)) firstSeen.set(test, (await stat(file)).mtimeMs);
  }
  const testList = [...firstSeen].sort((a, b) => a[1] - b[1]).map(([t]) => t);
  const kernels = [...entries.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const link = (k: string, t: string) => `#${k}-${t}`.replaceAll(".", "");
  const block = (s: string) => `\`\`\`\n${s}\n\`\`\`\n`;
  let sections = "";
  const rows = kernels.map((k) => [
    k,
    ...testList.map((t) => {
      const r = entries.get(k)?.get(t) ?? { rc: 0, skipped: false, stderr: "", msg: "", false_condition: "" };
      const head = `# ${k} ${t}\n\n`;
      if (r.skipped) {
        sections += `${head}Skipped Condition:\n${block(r.false_condition)}\n`;
        return `[🟡](${link(k, t)})`;
      }
      if (r.rc !== 0) {
        sections += `${head}Msg:\n${block(r.msg)}Err:\n${block(r.stderr !== "" ? r.stderr : `Exit Code: ${r.rc}`)}\n`;
        return `[❌](${link(k, t)})`;
      }
      return "🟢";
    }),
  ]);
  return `${renderTable(["Kernel", ...testList], rows)}\n\n${sections}`;
}

// --- libs' consumers -----------------------------------------------------------------------------

/** drivers_ci: the PR comment takes the lines up to the first that does not start with `|`. */
const prComment = (md: string) => {
  const lines = md.split("\n");
  return lines.slice(
    0,
    lines.findIndex((l) => !l.startsWith("|")),
  );
};

/** release-body: `sed -n '/# /q;p'` then `sed 's/\[\(.\)\]([^)]*)/\1/g'` (UTF-8: `.` is one character). */
const releaseNotes = (md: string) => {
  const lines = md.split("\n");
  const cut = lines.findIndex((l) => l.includes("# "));
  return lines
    .slice(0, cut < 0 ? undefined : cut)
    .map((l) => l.replace(/\[(.)\]\([^)]*\)/gu, "$1"))
    .join("\n");
};

/** pages.yml: `sed -i '1s/^/---\nhide:\n- toc\n---\n\n/'`. */
const PAGES_FRONT_MATTER = "---\nhide:\n- toc\n---\n\n";

/** Python-Markdown's default toc slugify (mkdocs' default): ASCII, no punctuation but `_`/`-`, lower case, runs of `-`/space → `-`. */
const mkdocsSlug = (heading: string) =>
  heading
    .normalize("NFKD")
    .replace(/[\u0080-\u{10ffff}]/gu, "")
    .replace(/[^\w\s-]/g, "")
    .trim()
    .toLowerCase()
    .replace(/[-\s]+/g, "-");

/**
 * The heading ids of a page as mkdocs builds it: front matter off, fenced code blocks (Python-Markdown's
 * fenced_code: a block ends at the first line that is exactly its opening fence) are not headings,
 * repeated ids get `_1`, `_2`.
 */
function mkdocsIds(page: string): Set<string> {
  const body = page.replace(/^---\n[\s\S]*?\n---\n/, "");
  const prose = body.replace(/^(`{3,}|~{3,})[^\n]*\n[\s\S]*?(?<=\n)\1[ ]*$/gm, "");
  const ids = new Set<string>();
  for (const m of prose.matchAll(/^#{1,6} (.+?)\s*$/gm)) {
    let id = mkdocsSlug(m[1] ?? "");
    while (ids.has(id) || !id) {
      const n = /^(.*)_([0-9]+)$/.exec(id);
      id = n ? `${n[1]}_${Number(n[2]) + 1}` : `${id}_1`;
    }
    ids.add(id);
  }
  return ids;
}

const tableLinks = (md: string) =>
  prComment(md).flatMap((l) => [...l.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1] ?? ""));

/** The table's links that mkdocs' page of this matrix does not resolve. */
const unresolvedOnPages = (md: string) => {
  const ids = mkdocsIds(PAGES_FRONT_MATTER + md);
  return tableLinks(md).filter((a) => !ids.has(a));
};

// --- tests ---------------------------------------------------------------------------------------

describe("tablewriter 0.0.5's rules", () => {
  it("counts display widths as go-runewidth 0.0.9: 🟢 🟡 ❌ ❔ two columns, ⚠ and U+FE0F one", () => {
    expect(["🟢", "🟡", "❌", "❔", "⚠", "\ufe0f", "a", "\u0301"].map(runeWidth)).toEqual([
      2, 2, 2, 2, 1, 1, 1, 0,
    ]);
    expect(stringWidth("[⚠️](#x)")).toBe(8);
  });

  it("prints headers as Title() does", () => {
    expect(title("Kernel")).toBe("KERNEL");
    expect(title("kmod_scap-open")).toBe("KMOD SCAP-OPEN");
    expect(title("Legacy.probe_v1.2")).toBe("LEGACY PROBE V1.2");
    expect(title("v5.10")).toBe("V5.10");
    expect(title("a_.5")).toBe("A .5"); // the dot sees the space the underscore became
    expect(title("probe_")).toBe("PROBE");
  });

  it("wraps a cell over 30 columns at its spaces with minimal raggedness", () => {
    const table = renderTable(["Kernel", "t"], [["m", "one two three four five six seven eight"]]);
    expect(table).toBe(
      [
        "| KERNEL |               T                |",
        "|--------|--------------------------------|",
        "| m      | one two three four five six    |",
        "|        | seven eight                    |",
        "",
      ].join("\n"),
    );
  });
});

describe("Falco's Markdown, byte for byte", () => {
  const cases: [string, () => FixtureRun, (keyof typeof FILES)[]][] = [
    ["awkward", awkwardRun, ["x86_64", "aarch64"]],
    ["libs-0.24", () => libs024Run("recorded"), ["x86_64", "aarch64"]],
    ["harness", harnessRun, ["x86_64"]],
  ];
  for (const [name, fixture, arches] of cases)
    it(`renders the ${name} run as derived by hand, matrix.md alike, reports agreeing`, async () => {
      const report = await rendered(name, fixture());
      for (const arch of arches) {
        const md = await read(report, FILES[arch]);
        expect(md, `${name}/${FILES[arch]}`).toBe(await read(EXPECTED, `${name}/${FILES[arch]}.golden`));
        expect(await read(report, `${arch}/matrix.md`)).toBe(md);
      }
      expect(await checkReportsAgree(path.dirname(report))).toEqual([]);
    });

  it("is what matrix_gen makes of the run's scap-open layout when every cell has a driver verdict", async () => {
    for (const [name, fixture] of [
      ["awkward-gen", awkwardRun()],
      ["libs-0.24-gen", libs024Run("inferred")],
    ] as const) {
      const report = await rendered(name, fixture);
      for (const arch of ["x86_64", "aarch64"] as const)
        expect(await matrixGen(path.join(report, arch, "scap-open-test")), `${name} ${arch}`).toBe(
          await read(report, FILES[arch]),
        );
    }
  });

  it("differs from matrix_gen's only where kmatrix's own verdicts are (⚠, ❔)", async () => {
    const report = await rendered("harness-gen", harnessRun());
    const ours = await read(report, FILES.x86_64);
    const theirs = await matrixGen(path.join(report, "x86_64", "scap-open-test"));
    // matrix_gen shows a harness error or a missing cell as a driver failure, with Msg/Err sections.
    for (const a of ["Debian-Sid-72-cmake-configure", "debian-bookworm-61-kmod_build"]) {
      expect(theirs).toContain(`[❌](#${a})`);
      expect(ours).toContain(`[⚠](#${a})`);
    }
    expect(theirs).toContain("[❌](#debian-trixie-612-kmod_build)");
    expect(ours).toContain("[❔](#debian-trixie-612-kmod_build)");
    const rows = (md: string) => prComment(md).map((l) => l.split("|")[1]?.trim());
    expect(rows(ours)).toEqual(rows(theirs));
    const headings = (md: string) => [...md.matchAll(/^# .+$/gm)].map((m) => m[0]);
    expect(headings(ours)).toEqual(headings(theirs));
  });
});

describe("columns follow the libs version", () => {
  it("leaves out both legacy-probe columns on libs >= 0.24, recorded or inferred, with the same text", async () => {
    const recorded = await rendered("libs-recorded", libs024Run("recorded"));
    const inferred = await rendered("libs-inferred", libs024Run("inferred"));
    const reason = `${NO_LEGACY_PROBE}; libs is master (48dfd53cd23f)`;
    for (const report of [recorded, inferred]) {
      const run = await loadRun(path.dirname(report));
      expect(droppedColumns(run)).toEqual([
        { test: "bpf-probe_build", reason },
        { test: "bpf-probe_scap-open", reason },
      ]);
      const summary = JSON.parse(await read(report, "summary.json"));
      expect(summary.droppedColumns.map((d: { test: string }) => d.test)).toEqual([
        "bpf-probe_build",
        "bpf-probe_scap-open",
      ]);
      // JUnit and summary.json keep the cells; the layout and HTML do not.
      expect(summary.cells.filter((c: { test: string }) => c.test.startsWith("bpf-probe")).length).toBe(6);
      expect(await read(report, "junit.xml")).toContain('name="bpf-probe_build"');
      expect(await readdir(path.join(report, "x86_64", "scap-open-test", "debian-bookworm-6.1"))).toEqual([
        "cmake-configure.json",
        "kmod_build.json",
        "kmod_scap-open.json",
        "modern-bpf_scap-open.json",
      ]);
      const html = await read(report, "html/x86_64.html");
      expect(html).not.toContain('data-test="bpf-probe_build"');
      expect(html).toContain('<code data-dropped-test="bpf-probe_build">bpf-probe_build</code>');
      expect(await checkReportsAgree(path.dirname(report))).toEqual([]);
    }
    for (const f of Object.values(FILES)) expect(await read(inferred, f)).toBe(await read(recorded, f));
    await renderReport(path.dirname(recorded), { style: "kmatrix" });
    const kmatrixStyle = await read(recorded, FILES.x86_64);
    expect(kmatrixStyle.split("\n")[0]).toBe(
      "| Kernel | cmake-configure | kmod_build | kmod_scap-open | modern-bpf_scap-open |",
    );
    expect(kmatrixStyle).toContain(
      `Not shown, skipped everywhere: \`bpf-probe_build\` (${reason}), \`bpf-probe_scap-open\``,
    );
    expect(await checkReportsAgree(path.dirname(recorded))).toEqual([]);
    expect(describeDropped(droppedColumns(await loadRun(path.dirname(recorded))))).toBe(
      `columns not shown, skipped everywhere because the sources rule them out: bpf-probe_build, bpf-probe_scap-open (${reason})`,
    );
  });

  it("kmatrix report says in one line which columns it left out and why", async () => {
    const dir = await writeTo("libs-cli", libs024Run("recorded"));
    const log = vi.spyOn(console, "log").mockImplementation(() => {});
    try {
      expect(await reportCommand(dir, {})).toBe(0);
      const lines = log.mock.calls.map((c) => String(c[0]));
      expect(lines.filter((l) => l.includes("bpf-probe_build"))).toEqual([
        `columns not shown, skipped everywhere because the sources rule them out: bpf-probe_build, bpf-probe_scap-open (${NO_LEGACY_PROBE}; libs is master (48dfd53cd23f))`,
      ]);
      expect(lines.filter((l) => l.startsWith("matrix: "))).toEqual([
        `matrix: ${path.join(dir, "report", "matrix_ARM64.md")}`,
        `matrix: ${path.join(dir, "report", "matrix_X64.md")}`,
      ]);
    } finally {
      log.mockRestore();
    }
  });

  it("keeps a column whose cells were skipped for any other reason", async () => {
    const one = libs024Run("inferred");
    // Only bullseye: modern-bpf_scap-open is skipped (exit code 95) on every machine of the run.
    one.run.machines = one.run.machines.filter((m) => m.machine === "debian-bullseye-5.10");
    one.cells = one.cells.filter((c) => c.machine === "debian-bullseye-5.10");
    // A skip with the same wording but after a command ran, and a prerequisite's skip.
    const bpf = one.cells.filter((c) => c.test.startsWith("bpf-probe"));
    for (const c of bpf) c.reason = `needs kmod_build, which was skipped: ${c.reason}`;
    let run = await loadRun(await writeTo("keep-1", one));
    expect(droppedColumns(run)).toEqual([]);
    for (const c of bpf) {
      c.reason = c.reason?.replace(/^needs kmod_build, which was skipped: /, "");
      c.command = "true";
    }
    run = await loadRun(await writeTo("keep-2", one));
    expect(droppedColumns(run)).toEqual([]);
    // Recorded: only what run.json names goes, and only while every cell is that skip.
    (one.run.plan as { sourceSkips?: Record<string, string> }).sourceSkips = {
      "bpf-probe_build": bpf[0]?.reason ?? "",
    };
    run = await loadRun(await writeTo("keep-3", one));
    expect(droppedColumns(run).map((d) => d.test)).toEqual(["bpf-probe_build"]);
  });

  it("still leaves them out when a machine could not boot (its cells are ⚠ everywhere)", async () => {
    const f = libs024Run("recorded");
    f.run.machines.push({
      machineId: "debian-sid-7.2@x86_64",
      machine: "debian-sid-7.2",
      arch: "x86_64",
      error: "boot: no SSH",
    });
    for (const test of FALCO_TESTS)
      f.cells.push({
        machineId: "debian-sid-7.2@x86_64",
        machine: "debian-sid-7.2",
        arch: "x86_64",
        test,
        verdict: "error",
        reason: "machine did not boot: no SSH within 120 s",
      });
    const report = await rendered("libs-noboot", f);
    const md = await read(report, FILES.x86_64);
    expect(md.split("\n")[0]).not.toContain("BPF-PROBE");
    expect(md).toContain("[⚠](#debian-sid-72-kmod_build)");
    expect(await checkReportsAgree(path.dirname(report))).toEqual([]);
  });
});

async function writeTo(name: string, f: FixtureRun): Promise<string> {
  const dir = path.join(tmp, name);
  await writeRun(dir, f);
  return dir;
}

describe("libs' consumers of matrix.md", () => {
  const all: [string, () => FixtureRun | "main"][] = [
    ["awkward", awkwardRun],
    ["libs-0.24", () => libs024Run("recorded")],
    ["harness", harnessRun],
    ["main", () => "main"],
  ];

  it("PR comment: the table, whole, and nothing else", async () => {
    for (const [name, f] of all) {
      const report = await rendered(`pr-${name}`, f());
      const run = await loadRun(path.dirname(report));
      for (const arch of ["x86_64", "aarch64"] as const) {
        if (!run.machines.some((m) => m.arch === arch)) continue;
        const md = await read(report, FILES[arch]);
        const comment = prComment(md);
        expect(comment.length, `${name} ${arch}`).toBe(
          2 + run.machines.filter((m) => m.arch === arch).length,
        );
        expect(md.startsWith(`${comment.join("\n")}\n\n\n`)).toBe(true);
      }
    }
  });

  it("release notes: every link stripped (⚠ and ❔ too), the table alone", async () => {
    for (const [name, f] of all) {
      const report = await rendered(`rn-${name}`, f());
      for (const file of Object.values(FILES)) {
        const md = await read(report, file).catch(() => undefined);
        if (md === undefined) continue;
        const notes = releaseNotes(md);
        expect(notes, `${name} ${file}`).not.toContain("](");
        expect(notes).toMatch(/^(\|.*\|\n)+\n+$/);
        expect(notes.split("\n")[0]).toBe(md.split("\n")[0]);
      }
    }
    // The old two-code-point ⚠️ kept its link: the reason for ⚠.
    expect(releaseNotes("| [⚠️](#a-b) |\n")).toContain("](#a-b)");
  });

  it("pages: every link of Falco's own matrix resolves (lower-case names without `--`)", () => {
    const x86 =
      "amazonlinux2022-5.15 amazonlinux2023-6.1 amazonlinux2-5.4 amazonlinux2-5.10 amazonlinux2-5.15 archlinux-6.0 archlinux-6.7 centos-3.10 centos-4.18 centos-5.14 fedora-5.8 fedora-5.17 fedora-6.2 oraclelinux-3.10 oraclelinux-4.14 oraclelinux-5.4 oraclelinux-5.15 ubuntu-5.8 ubuntu-6.5";
    const tests = ["cmake-configure", "kmod_build", "kmod_scap-open", "modern-bpf_scap-open"];
    for (const m of x86.split(" "))
      for (const t of tests) expect(falcoAnchor(m, t)).toBe(mkdocsSlug(`${m} ${t}`));
  });

  it("pages: the links mkdocs cannot resolve are exactly those with capitals or `--` (matrix_gen keeps them)", async () => {
    const awkward = await read(await rendered("pages-awkward", awkwardRun()), FILES.x86_64);
    expect(unresolvedOnPages(awkward)).toEqual([
      "Ubuntu-65-kmod_build",
      "Ubuntu-65-kmod_scap-open",
      "Ubuntu-65-Legacyprobe_v12",
      "fedora--68-modern-bpf_scap-open",
    ]);
    // GitHub's ids (lower case, `--` kept) miss the capitals only.
    const gh = slugger();
    const ghIds = new Set([...awkward.matchAll(/^# (.+)$/gm)].map((m) => gh(m[1] ?? "")));
    expect(tableLinks(awkward).filter((a) => !ghIds.has(a))).toEqual([
      "Ubuntu-65-kmod_build",
      "Ubuntu-65-kmod_scap-open",
      "Ubuntu-65-Legacyprobe_v12",
    ]);
    for (const [name, f] of [
      ["libs-0.24", libs024Run("recorded")],
      ["harness", harnessRun()],
    ] as const) {
      const report = await rendered(`pages-${name}`, f);
      const unresolved = unresolvedOnPages(await read(report, FILES.x86_64));
      expect(unresolved, name).toEqual(
        name === "harness" ? ["Debian-Sid-72-cmake-configure", "Debian-Sid-72-kmod_build"] : [],
      );
    }
  });

  it("pages: a line of ``` in a driver's output ends matrix_gen's code block early, hiding later headings", async () => {
    // The main fixture's failed kmod_build printed a line of ```: matrix_gen writes output as it is,
    // so on the pages the block closes there and the next fence swallows the sections that follow
    // (as it would in Falco's own pages); the file itself keeps every heading.
    const md = await read(await rendered("pages-main", "main"), FILES.x86_64);
    const links = tableLinks(md);
    expect(unresolvedOnPages(md)).toEqual(links.slice(links.indexOf("debian-bookworm-61-kmod_build") + 1));
    const headings = new Set([...md.matchAll(/^# (.+)$/gm)].map((m) => mkdocsSlug(m[1] ?? "")));
    expect(tableLinks(md).filter((a) => !headings.has(a))).toEqual([]);
  });
});
