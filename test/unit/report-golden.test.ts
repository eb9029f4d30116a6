/**
 * Golden files: the fixture run (test/unit/fixtures/report/run.ts) rendered, compared byte for byte
 * with test/unit/fixtures/report/golden* (golden-kmatrix: the Markdown of `--style kmatrix`, which
 * must not change). After an intended change: UPDATE_GOLDEN=1 npx vitest run
 * test/unit/report-golden.test.ts, then review the diff of the goldens. (The hand-derived Falco
 * matrices in fixtures/report/falco are checked by markdown-falco.test.ts and never rewritten.)
 * Goldens end in .golden so that no formatter or linter rewrites them.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renderDiffTable, renderReport } from "../../src/report/index.js";
import { writeFixtureRun } from "./fixtures/report/run.js";

const FIXTURES = fileURLToPath(new URL("./fixtures/report/", import.meta.url));
const UPDATE = process.env.UPDATE_GOLDEN === "1";

async function listFiles(dir: string, base = dir): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(p, base)));
    else out.push(path.relative(base, p));
  }
  return out.sort();
}

/** Compares (or, with UPDATE_GOLDEN=1, writes) one golden file. */
async function golden(set: string, rel: string, actual: string): Promise<void> {
  const file = path.join(FIXTURES, set, `${rel}.golden`);
  if (UPDATE) {
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, actual);
    return;
  }
  const expected = await readFile(file, "utf8").catch(() => {
    throw new Error(`${file} missing: run with UPDATE_GOLDEN=1 to create it`);
  });
  expect(actual, rel).toBe(expected);
}

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), "kmatrix-report-golden-"));
  await writeFixtureRun(path.join(tmp, "run"));
  await writeFixtureRun(path.join(tmp, "base"), "baseline");
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

describe("golden reports", () => {
  it("renders every report of the fixture run as the goldens say", async () => {
    const runDir = path.join(tmp, "run");
    const { files } = await renderReport(runDir);
    const reportDir = path.join(runDir, "report");
    const rels = await listFiles(reportDir);
    expect(files.map((f) => path.relative(reportDir, f))).toEqual(rels);
    if (!UPDATE) {
      const goldens = (await listFiles(path.join(FIXTURES, "golden"))).map((f) => f.replace(/\.golden$/, ""));
      expect(rels).toEqual(goldens);
    }
    for (const rel of rels) await golden("golden", rel, await readFile(path.join(reportDir, rel), "utf8"));
  });

  it("renders the same bytes twice (no clock, no host in the output)", async () => {
    const runDir = path.join(tmp, "run");
    await renderReport(runDir);
    const first = await readFile(path.join(runDir, "report", "html", "x86_64.html"), "utf8");
    await renderReport(runDir);
    expect(await readFile(path.join(runDir, "report", "html", "x86_64.html"), "utf8")).toBe(first);
  });

  it("stamps scap-open files in plan order, as the original sorts its columns by mtime", async () => {
    const dir = path.join(tmp, "run", "report", "x86_64", "scap-open-test", "debian-trixie-6.12");
    const names = await readdir(dir);
    const times = await Promise.all(
      names.map(async (n) => [n, (await stat(path.join(dir, n))).mtimeMs] as const),
    );
    expect(times.sort((a, b) => a[1] - b[1]).map(([n]) => n.replace(/\.json$/, ""))).toEqual([
      "cmake-configure",
      "kmod_build",
      "kmod_scap-open",
      "bpf-probe_build",
      "bpf-probe_scap-open",
      "modern-bpf_scap-open",
    ]);
  });

  it("renders kmatrix's own Markdown with style kmatrix, as it always was", async () => {
    const runDir = path.join(tmp, "run");
    await renderReport(runDir, { style: "kmatrix" });
    for (const rel of ["matrix_X64.md", "matrix_ARM64.md"]) {
      const md = await readFile(path.join(runDir, "report", rel), "utf8");
      await golden("golden-kmatrix", rel, md);
    }
    expect(await readFile(path.join(runDir, "report", "x86_64", "matrix.md"), "utf8")).toBe(
      await readFile(path.join(runDir, "report", "matrix_X64.md"), "utf8"),
    );
    await renderReport(runDir, { style: "kmatrix", baseline: path.join(tmp, "base") });
    for (const rel of ["matrix_X64.md", "matrix_ARM64.md"])
      await golden(
        "golden-kmatrix",
        `baseline/${rel}`,
        await readFile(path.join(runDir, "report", rel), "utf8"),
      );
  });

  it("renders the baseline sections and diff table as the goldens say", async () => {
    const runDir = path.join(tmp, "run");
    const { summary, diff } = await renderReport(runDir, { baseline: path.join(tmp, "base") });
    expect(diff).toBeDefined();
    expect(summary.baseline?.origin).toBe(path.join(tmp, "base"));
    for (const rel of ["matrix_X64.md", "matrix_ARM64.md", "html/index.html", "html/x86_64.html"])
      await golden("golden-baseline", rel, await readFile(path.join(runDir, "report", rel), "utf8"));
    if (diff) {
      await golden("golden-baseline", "diff.txt", renderDiffTable(diff));
      await golden("golden-baseline", "diff-colour.txt", renderDiffTable(diff, { colour: true }));
    }
  });
});
