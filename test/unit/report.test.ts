import { mkdtemp, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DiffInput, diffRuns, hasRegressions, renderDiffTable } from "../../src/report/diff.js";
import {
  checkReportsAgree,
  loadBaseline,
  loadRun,
  renderReport,
  shouldColour,
} from "../../src/report/index.js";
import { cleanText, codeBlock, escapeXml, slugger } from "../../src/report/text.js";
import { UsageError } from "../../src/util/errors.js";
import { fixtureRun, writeFixtureRun } from "./fixtures/report/run.js";

let tmp: string;
let n = 0;
/** A fresh copy of the fixture run (tests below tamper with theirs). */
async function freshRun(variant: "current" | "baseline" = "current"): Promise<string> {
  const dir = path.join(tmp, `run-${n++}`);
  await writeFixtureRun(dir, variant);
  return dir;
}
async function errorOf(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), "kmatrix-report-"));
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

describe("loadRun", () => {
  it("builds the full grid, with missing cells for what was never recorded", async () => {
    const run = await loadRun(await freshRun());
    expect(run.tests).toHaveLength(6);
    expect(run.cells).toHaveLength(run.machines.length * 6);
    const missing = run.cells.filter((c) => c.verdict === "missing");
    expect(missing.map((c) => `${c.machineId} ${c.test}`)).toEqual([
      "debian-bullseye-5.10@aarch64 bpf-probe_scap-open",
      "debian-bullseye-5.10@aarch64 modern-bpf_scap-open",
    ]);
    expect(missing[0]?.reason).toBe("no result recorded (the run was interrupted)");
    const failed = run.cells.find(
      (c) => c.machineId === "debian-bookworm-6.1@x86_64" && c.test === "kmod_build",
    );
    expect(failed?.logFile).toBe("cells/debian-bookworm-6.1@x86_64/kmod_build.log");
    expect(run.consoles["debian-bookworm-6.1@x86_64"]).toBe("consoles/debian-bookworm-6.1@x86_64.log");
  });

  it("keeps records outside run.json's grid instead of dropping them", async () => {
    const dir = await freshRun();
    const extra = { ...fixtureRun().cells[0], test: "extra-test", verdict: "fail" };
    await writeFile(path.join(dir, "cells", extra.machineId ?? "", "extra-test.json"), JSON.stringify(extra));
    const run = await loadRun(dir);
    expect(run.tests.at(-1)).toBe("extra-test");
    expect(run.cells.filter((c) => c.test === "extra-test" && c.verdict === "fail")).toHaveLength(1);
    expect(run.cells.filter((c) => c.test === "extra-test" && c.verdict === "missing")).toHaveLength(
      run.machines.length - 1,
    );
  });

  it("names the file when run.json is missing or bad", async () => {
    const dir = await freshRun();
    const file = path.join(dir, "run.json");
    await writeFile(file, "{ not json");
    let err = await errorOf(loadRun(dir));
    expect(err).toBeInstanceOf(UsageError);
    expect(err.message).toContain(file);
    await writeFile(file, JSON.stringify({ runId: "x" }));
    err = await errorOf(loadRun(dir));
    expect(err.message).toMatch(new RegExp(`^${file.replace(/[.]/g, "\\.")}: kmatrixVersion: `));
    await unlink(file);
    err = await errorOf(loadRun(dir));
    expect(err).toBeInstanceOf(UsageError);
    expect(err.message).toBe(`${file}: not found (not a kmatrix run directory?)`);
  });

  it("names the file and field when a record's new facts have the wrong shape", async () => {
    const dir = await freshRun();
    const file = path.join(dir, "cells", "debian-bookworm-6.1@x86_64", "modern-bpf_scap-open.json");
    const rec = JSON.parse(await readFile(file, "utf8"));
    await writeFile(file, JSON.stringify({ ...rec, kernelWarnings: "WARNING: one line, not a list" }));
    const err = await errorOf(loadRun(dir));
    expect(err).toBeInstanceOf(UsageError);
    expect(err.message).toMatch(new RegExp(`^${file.replace(/[.]/g, "\\.")}: kernelWarnings: `));
  });

  it("refuses a cell record filed under another cell's path", async () => {
    const dir = await freshRun();
    const file = path.join(dir, "cells", "debian-trixie-6.12@x86_64", "kmod_build.json");
    const rec = JSON.parse(await readFile(file, "utf8"));
    await writeFile(file, JSON.stringify({ ...rec, test: "cmake-configure" }));
    expect((await errorOf(loadRun(dir))).message).toContain(file);
  });
});

describe("text helpers", () => {
  it("makes the anchor GitHub makes from a cell heading", () => {
    const slug = slugger();
    expect(slug("debian-bookworm-6.1 kmod_build")).toBe("debian-bookworm-61-kmod_build");
    expect(slug("Ubuntu_22.04 @ x86_64")).toBe("ubuntu_2204--x86_64");
    // GitHub numbers repeated slugs in document order.
    expect(slug("debian-bookworm-61 kmod_build")).toBe("debian-bookworm-61-kmod_build-1");
  });

  it("strips terminal escapes and characters XML 1.0 forbids", () => {
    expect(cleanText("\x1b[01;31merror:\x1b[m ok\r\nnext\x00\x07\x1b]0;title\x07")).toBe("error: ok\nnext");
    expect(escapeXml(`a<b & "c" 'd'\x1b[0m`)).toBe("a&lt;b &amp; &quot;c&quot; &#39;d&#39;");
  });

  it("fences a code block longer than any backtick run inside", () => {
    expect(codeBlock("a\n```\nb")).toBe("````\na\n```\nb\n````\n");
    expect(codeBlock("plain\n")).toBe("```\nplain\n```\n");
  });
});

describe("diffRuns", () => {
  const cell = (test: string, verdict: DiffInput["cells"][number]["verdict"], reason?: string) => ({
    machineId: "m@x86_64",
    machine: "m",
    arch: "x86_64" as const,
    test,
    verdict,
    ...(reason && { reason }),
  });
  const runOf = (runId: string, cells: DiffInput["cells"]): DiffInput => ({ run: { runId }, cells });

  it("classifies every kind of change", () => {
    const old = runOf("a", [
      cell("t1", "pass"),
      cell("t2", "fail"),
      cell("t3", "skip", "old reason"),
      cell("t4", "pass"),
      cell("t5", "pass"),
      cell("t6", "skip", "same"),
      cell("gone", "pass"),
    ]);
    const now = runOf("b", [
      cell("t1", "error"),
      cell("t2", "pass"),
      cell("t3", "skip", "new reason"),
      cell("t4", "skip", "now unsupported"),
      cell("t5", "missing"),
      cell("t6", "skip", "same"),
      cell("new", "fail"),
    ]);
    const d = diffRuns(old, now);
    expect(d.changes.map((c) => `${c.kind} ${c.test}`)).toEqual([
      "regressed t1",
      "regressed t5",
      "fixed t2",
      "skip-reason t3",
      "changed t4",
      "appeared new",
      "disappeared gone",
    ]);
    expect(d.counts).toEqual({
      regressed: 2,
      fixed: 1,
      "skip-reason": 1,
      changed: 1,
      appeared: 1,
      disappeared: 1,
    });
    expect(hasRegressions(d)).toBe(true);
  });

  it("reports no regression when only fixes happened", () => {
    const d = diffRuns(runOf("a", [cell("t", "error")]), runOf("b", [cell("t", "pass")]));
    expect(hasRegressions(d)).toBe(false);
    expect(d.counts.fixed).toBe(1);
    expect(renderDiffTable(diffRuns(runOf("a", []), runOf("b", [])))).toContain("no cell changed");
  });

  it("colours the table only when asked", () => {
    const d = diffRuns(runOf("a", [cell("t", "pass")]), runOf("b", [cell("t", "fail", "boom")]));
    expect(renderDiffTable(d)).not.toContain("\x1b[");
    expect(renderDiffTable(d, { colour: true })).toContain("\x1b[31mregressed");
  });

  it("takes a baseline as a run directory, a report directory or a summary.json", async () => {
    const base = await freshRun("baseline");
    await renderReport(base);
    const now = await loadRun(await freshRun());
    const counts = async (p: string) => diffRuns(await loadBaseline(p), now).counts;
    const fromRun = await counts(base);
    expect(fromRun).toEqual({
      regressed: 7,
      fixed: 1,
      "skip-reason": 1,
      changed: 1,
      appeared: 6,
      disappeared: 6,
    });
    expect(await counts(path.join(base, "report"))).toEqual(fromRun);
    expect(await counts(path.join(base, "report", "summary.json"))).toEqual(fromRun);
    const err = await errorOf(loadBaseline(path.join(base, "nope")));
    expect(err).toBeInstanceOf(UsageError);
    expect(err.message).toContain("nope");
  });
});

describe("shouldColour", () => {
  it("colours a TTY unless NO_COLOR is set", () => {
    expect(shouldColour({ isTTY: true }, {})).toBe(true);
    expect(shouldColour({ isTTY: false }, {})).toBe(false);
    expect(shouldColour({}, {})).toBe(false);
    expect(shouldColour({ isTTY: true }, { NO_COLOR: "1" })).toBe(false);
  });
});

describe("checkReportsAgree", () => {
  it("finds the rendered reports in agreement, with and without a baseline", async () => {
    const dir = await freshRun();
    await renderReport(dir);
    expect(await checkReportsAgree(dir)).toEqual([]);
    await renderReport(dir, { baseline: await freshRun("baseline") });
    expect(await checkReportsAgree(dir)).toEqual([]);
  });

  /** Renders, applies `edit` to one report file, and returns what the check says. */
  async function tampered(rel: string, edit: (text: string) => string): Promise<string[]> {
    const dir = await freshRun();
    await renderReport(dir);
    const file = path.join(dir, "report", rel);
    const before = await readFile(file, "utf8");
    const after = edit(before);
    expect(after).not.toBe(before);
    await writeFile(file, after);
    // The matrices' copies where libs expects them (`matrix_output`) are edited alike.
    const copy = { "matrix_X64.md": "x86_64/matrix.md", "matrix_ARM64.md": "aarch64/matrix.md" }[rel];
    if (copy) await writeFile(path.join(dir, "report", copy), after);
    return checkReportsAgree(dir);
  }

  it("catches an <arch>/matrix.md that is not the same text as matrix_<ARCH>.md", async () => {
    const dir = await freshRun();
    await renderReport(dir);
    await writeFile(path.join(dir, "report", "aarch64", "matrix.md"), "| KERNEL |\n");
    expect(await checkReportsAgree(dir)).toEqual(["aarch64/matrix.md: not the same text as matrix_ARM64.md"]);
  });

  it("finds kmatrix's own style in agreement too, and tells a table not followed by the sections", async () => {
    const dir = await freshRun();
    await renderReport(dir, { style: "kmatrix" });
    expect(await checkReportsAgree(dir)).toEqual([]);
    await renderReport(dir);
    for (const rel of ["matrix_X64.md", path.join("x86_64", "matrix.md")]) {
      const file = path.join(dir, "report", rel);
      await writeFile(file, (await readFile(file, "utf8")).replace("\n\n\n# ", "\n\nLegend\n\n# "));
    }
    expect(await checkReportsAgree(dir)).toEqual([
      "matrix_X64.md: something other than the sections follows the table",
    ]);
  });

  it("catches a markdown cell that says something else", async () => {
    const problems = await tampered("matrix_X64.md", (s) =>
      s.replace("[⚠](#debian-sid-72-kmod_build)", "[❌](#debian-sid-72-kmod_build)"),
    );
    expect(problems).toContain("matrix_X64.md: debian-sid-7.2@x86_64 kmod_build is fail, expected error");
  });

  it("catches a markdown link that leads nowhere", async () => {
    const problems = await tampered("matrix_X64.md", (s) =>
      s.replace("# debian-bookworm-6.1 kmod_build\n", "# debian-bookworm-6.1 kmod build\n"),
    );
    expect(problems.join("\n")).toMatch(
      /debian-bookworm-6\.1@x86_64 kmod_build: link #debian-bookworm-61-kmod_build/,
    );
  });

  it("catches a JUnit testcase that says something else", async () => {
    const problems = await tampered("junit.xml", (s) => s.replace('type="missing"', 'type="harness-error"'));
    expect(problems).toContain(
      "junit.xml: debian-bullseye-5.10@aarch64 bpf-probe_scap-open is error, expected missing",
    );
    expect(problems.some((p) => p.startsWith("junit.xml: debian-bullseye-5.10@aarch64 modern"))).toBe(false);
  });

  it("catches a summary cell that says something else", async () => {
    const problems = await tampered("summary.json", (s) =>
      s.replace('"verdict": "skip"', '"verdict": "pass"'),
    );
    expect(problems).toContain(
      "summary.json: debian-bookworm-6.1@x86_64 kmod_scap-open is pass, expected skip",
    );
  });

  it("catches a scap-open file that the original's tools would read as green", async () => {
    const rel = "x86_64/scap-open-test/debian-sid-7.2/kmod_build.json";
    const problems = await tampered(rel, (s) => s.replace('"rc": -1', '"rc": 0'));
    expect(problems).toEqual([`${rel}: reads as pass (rc 0) to the original's tools, expected bad`]);
  });

  it("catches a Markdown section or link for a pass with a kernel warning (Falco's format has none)", async () => {
    const section = "\n# debian-bookworm-6.1 modern-bpf_scap-open\n\nMsg:\n```\nkernel warning\n```\n";
    const nonGreen = (await loadRun(await freshRun())).cells.filter(
      (c) => c.arch === "x86_64" && c.verdict !== "pass",
    ).length;
    const count = `matrix_X64.md: ${nonGreen + 1} cell sections for ${nonGreen} non-green cells`;
    const linked = await tampered("matrix_X64.md", (s) =>
      s
        .replace(
          /^(\| debian-bookworm-6\.1 .*\| )🟢( +\|)$/m,
          "$1[🟢](#debian-bookworm-61-modern-bpf_scap-open)$2",
        )
        .concat(section),
    );
    expect(linked).toEqual([
      "matrix_X64.md: debian-bookworm-6.1@x86_64 modern-bpf_scap-open: pass cell has a link",
      count,
    ]);
    expect(await tampered("matrix_X64.md", (s) => s.concat(section))).toEqual([count]);
  });

  it("catches a pass with a kernel warning that the HTML does not flag or open", async () => {
    const unflagged = await tampered("html/x86_64.html", (s) => s.replace(' data-kernel-warnings="1"', ""));
    expect(unflagged).toEqual([
      "html/x86_64.html: debian-bookworm-6.1@x86_64 modern-bpf_scap-open: a pass with a kernel warning is not flagged as one",
    ]);
    const noDialog = await tampered("html/x86_64.html", (s) =>
      s.replace(/<dialog id="debian-bookworm-61-modern-bpf_scap-open"[\s\S]*?<\/dialog>\n?/, ""),
    );
    expect(noDialog).toEqual([
      "html/x86_64.html: debian-bookworm-6.1@x86_64 modern-bpf_scap-open: no dialog for this cell",
    ]);
  });

  it("catches kernel warnings missing from JUnit and summary.json, and boots that disagree", async () => {
    const junit = await tampered("junit.xml", (s) =>
      s.replace(/<system-out>[\s\S]*?<\/system-out>/, "<system-out/>"),
    );
    expect(junit).toEqual([
      "junit.xml: debian-bookworm-6.1@x86_64 modern-bpf_scap-open: its system-out lacks the kernel warnings",
    ]);
    const summary = await tampered("summary.json", (s) =>
      s.replace(/,\n\s*"kernelWarnings": \[[\s\S]*?\n\s*\]/, "").replace('"boots": 2', '"boots": 1'),
    );
    expect(summary).toEqual([
      "summary.json: debian-bookworm-6.1@x86_64 modern-bpf_scap-open has other kernel warnings",
      "summary.json: machine debian-bookworm-6.1@x86_64 has other boots than run.json",
    ]);
    const index = await tampered("html/index.html", (s) => s.replace(/<li data-machine-id=[^\n]*\n/, ""));
    expect(index).toEqual([
      "html/index.html: lists fresh boots [], expected [debian-bookworm-6.1@x86_64 after bpf-probe_scap-open]",
    ]);
  });

  it("catches an HTML cell that says something else", async () => {
    const problems = await tampered("html/aarch64.html", (s) =>
      s.replace('data-verdict="missing"', 'data-verdict="pass"'),
    );
    expect(problems).toContain(
      "html/aarch64.html: debian-bullseye-5.10@aarch64 bpf-probe_scap-open is pass, expected missing",
    );
  });
});

describe("renderReport", () => {
  it("writes files only for the architectures present in the run", async () => {
    const dir = await freshRun();
    const runFile = path.join(dir, "run.json");
    const run = JSON.parse(await readFile(runFile, "utf8"));
    run.machines = run.machines.filter((m: { arch: string }) => m.arch === "x86_64");
    await writeFile(runFile, JSON.stringify(run));
    await rm(path.join(dir, "cells", "debian-bookworm-6.1@aarch64"), { recursive: true });
    await rm(path.join(dir, "cells", "debian-bullseye-5.10@aarch64"), { recursive: true });
    const { files, summary } = await renderReport(dir);
    const rels = files.map((f) => path.relative(path.join(dir, "report"), f));
    expect(rels.filter((f) => !f.includes("scap-open-test"))).toEqual([
      "html/index.html",
      "html/x86_64.html",
      "junit.xml",
      "matrix_X64.md",
      "summary.json",
      "x86_64/matrix.md",
    ]);
    expect(rels.every((f) => !f.startsWith("aarch64"))).toBe(true);
    expect(Object.keys(summary.arches)).toEqual(["x86_64"]);
    expect(await checkReportsAgree(dir)).toEqual([]);
  });
});

describe("a pass with a kernel warning, leftovers and fresh boots", () => {
  const WARNED = "debian-bookworm-6.1@x86_64/modern-bpf_scap-open";
  let report: string;
  const read = (rel: string) => readFile(path.join(report, rel), "utf8");
  beforeAll(async () => {
    const dir = await freshRun();
    await renderReport(dir);
    report = path.join(dir, "report");
  });

  it("stays a plain 🟢 in Falco's Markdown: no link, no section, no reason", async () => {
    const md = await read("matrix_X64.md");
    const row = md.split("\n").find((l) => l.startsWith("| debian-bookworm-6.1 "));
    expect(row?.split("|").at(-2)?.trim()).toBe("🟢");
    expect(md).not.toContain("# debian-bookworm-6.1 modern-bpf_scap-open");
    expect(md).not.toMatch(/kernel warning|WARNING|boot 2|sleep 1000/);
  });

  it("flags the HTML cell, opens a dialog with the warning, the dmesg window and the boot", async () => {
    const html = await read("html/x86_64.html");
    const td = /<td [^>]*data-test="modern-bpf_scap-open"[^>]*data-kernel-warnings="1">(.*?)<\/td>/.exec(
      html,
    );
    expect(td?.[1]).toContain('aria-label="modern-bpf_scap-open: passed, kernel warning"');
    expect(td?.[1]).toContain("⚑");
    const dialog = /<dialog id="debian-bookworm-61-modern-bpf_scap-open"[\s\S]*?<\/dialog>/.exec(html)?.[0];
    expect(dialog).toContain('<h3>Kernel warning</h3><pre class="warning">[  142.318201] WARNING: CPU: 1');
    expect(dialog).toContain("Modules linked in: &lt;scap&gt; &amp; friends");
    expect(dialog).toContain("ran on boot 2 of the machine: an earlier test left it in doubt");
    expect(dialog).not.toContain('class="reason"');
    // The failed cell's dialog names the processes its test left behind; boot 1 is not worth a line.
    const failed = /<dialog id="debian-bullseye-510-kmod_scap-open"[\s\S]*?<\/dialog>/.exec(html)?.[0];
    expect(failed).toContain(
      '<h3>Processes left behind (killed)</h3><pre class="leftover">4121 sleep 1000\n',
    );
    expect(failed).not.toContain("ran on boot");
  });

  it("keeps every Markdown anchor as the HTML dialog of the same cell", async () => {
    const md = await read("matrix_X64.md");
    const html = await read("html/x86_64.html");
    const anchors = [...md.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]);
    const dialogs = [...html.matchAll(/<dialog id="([^"]+)"/g)].map((m) => m[1]);
    expect(dialogs).toEqual([...anchors, "debian-bookworm-61-modern-bpf_scap-open"]);
  });

  it("is a JUnit pass whose system-out has the warning; summary.json carries warnings and boots", async () => {
    const xml = await read("junit.xml");
    const tc =
      /<testcase name="modern-bpf_scap-open" classname="debian-bookworm-6.1@x86_64"[\s\S]*?<\/testcase>/.exec(
        xml,
      )?.[0];
    expect(tc).not.toMatch(/<failure|<error|<skipped/);
    expect(tc).toContain("<system-out>passed, but the kernel printed a warning during the test\n");
    expect(tc).toContain("--- kernel warnings ---\n[  142.318201] WARNING: CPU: 1 PID: 2231");
    const s = JSON.parse(await read("summary.json"));
    const cell = s.cells.find(
      (c: { machineId: string; test: string }) => `${c.machineId}/${c.test}` === WARNED,
    );
    expect(cell).toMatchObject({ verdict: "pass", reason: expect.stringMatching(/^kernel warning: /) });
    expect(cell.kernelWarnings).toHaveLength(1);
    expect(s.arches.x86_64.machines[0]).toMatchObject({
      boots: 2,
      replaced: [{ afterTest: "bpf-probe_scap-open", reason: "the kernel panicked" }],
    });
  });

  it("shows, for a verdict that comes from a builder, the builder's output and console", async () => {
    const html = await read("html/aarch64.html");
    const dialog = /<dialog id="debian-bookworm-61-modern-bpf_scap-open"[\s\S]*?<\/dialog>/.exec(html)?.[0];
    expect(dialog).toContain(
      "verdict from builder <code>skeleton</code> (ran on debian-bookworm-6.1@x86_64)",
    );
    expect(dialog).toContain('<pre class="builder-output">  CLANG-BPF  syscall_enter.bpf.o');
    expect(dialog).toMatch(/<pre class="builder-console">[^<]*Kernel panic - not syncing/);
    expect(await read("junit.xml")).toContain(
      "--- builder skeleton console ---\n[  512.000001] Out of memory",
    );
    // Falco's Markdown keeps its own sections: the reason names the builder.
    expect(await read("matrix_ARM64.md")).not.toContain("Out of memory: Killed process");
  });

  it("lists each fresh boot on the summary page", async () => {
    expect(await read("html/index.html")).toContain(
      "debian-bookworm-6.1: boot 2 after <code>bpf-probe_scap-open</code> (the kernel panicked)</li>",
    );
  });
});

describe("JUnit", () => {
  it("holds only XML 1.0 characters and escaped specials", async () => {
    const dir = await freshRun();
    await renderReport(dir);
    const xml = await readFile(path.join(dir, "report", "junit.xml"), "utf8");
    // biome-ignore lint/suspicious/noControlCharactersInRegex: looking for exactly those
    expect(xml).not.toMatch(/[\x00-\x08\x0b\x0c\x0e-\x1f]/);
    expect(xml).not.toMatch(/&(?!(amp|lt|gt|quot|#39|#10);)/);
    expect(xml).toContain('<error message="no result recorded (the run was interrupted)" type="missing"/>');
    expect(xml).toMatch(
      /<testsuites name="kmatrix [^"]+" tests="36" failures="3" errors="11" skipped="4" time="/,
    );
  });
});
