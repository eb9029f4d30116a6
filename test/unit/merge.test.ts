import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { renderReport } from "../../src/report/index.js";
import { importBuilders, mergeRuns, readRunDir } from "../../src/results/merge.js";
import type { BuilderRecord, CellRecord, RunRecord, Verdict } from "../../src/results/types.js";
import { UsageError } from "../../src/util/errors.js";

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "kmatrix-merge-"));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

type Arch = "x86_64" | "aarch64";
const TESTS = ["kmod_build", "kmod_open", "modern_bpf_open"];

function put(file: string, text: string) {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
}
const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;

interface MachineFixture {
  name: string;
  arch: Arch;
  verdicts: Verdict[];
}

/** A results directory as `kmatrix run` leaves it (results/types.ts), with what the reports read. */
function fixtureRun(
  dir: string,
  opts: {
    runId: string;
    startedAt: string;
    endedAt?: string;
    machines: MachineFixture[];
    builders?: BuilderRecord[];
    version?: string;
    tests?: string[];
    libs?: string;
  },
): string {
  const tests = opts.tests ?? TESTS;
  const run: RunRecord = {
    runId: opts.runId,
    kmatrixVersion: opts.version ?? "0.1.0",
    startedAt: opts.startedAt,
    ...(opts.endedAt && { endedAt: opts.endedAt }),
    host: { arch: "x64", cpus: 2, memoryMiB: 8192 },
    config: { origin: "<embedded default>" },
    plan: {
      name: "example",
      origin: "plans/example.yaml",
      tests,
      sources: [{ name: "libs", dir: join(dir, "..", "libs"), revision: opts.libs ?? "0.23.2" }],
    },
    machines: opts.machines.map((m) => ({
      machineId: `${m.name}@${m.arch}`,
      machine: m.name,
      arch: m.arch,
      kernelRelease: `${m.name}-kernel`,
      bootMs: 7000,
    })),
    builders: opts.builders ?? [],
  };
  put(join(dir, "run.json"), json(run));
  for (const m of opts.machines) {
    const machineId = `${m.name}@${m.arch}`;
    put(join(dir, "consoles", `${machineId}.log`), `console of ${machineId}\n`);
    m.verdicts.forEach((verdict, i) => {
      const test = tests[i] as string;
      const cell: CellRecord = {
        machineId,
        machine: m.name,
        arch: m.arch,
        test,
        verdict,
        // Run-specific facts differ between runs; the Markdown must not show them.
        startedAt: opts.startedAt,
        durationMs: 1000 + i,
        ...(verdict === "skip" && { reason: "not supported here (exit code 95)" }),
        ...(verdict === "fail" && {
          reason: "exit code 2",
          exitCode: 2,
          outputTail: "make: *** [all] Error 2\n",
        }),
        ...(verdict === "error" && { reason: "the machine did not boot" }),
      };
      put(join(dir, "cells", machineId, `${test}.json`), json(cell));
      put(join(dir, "cells", machineId, `${test}.log`), `log of ${machineId} ${test}\n`);
    });
  }
  for (const b of opts.builders ?? []) {
    put(join(dir, "builders", b.arch, `${b.builder}.json`), json(b));
    if (!b.cached) put(join(dir, "builders", b.arch, `${b.builder}.log`), `log of ${b.builder} in ${dir}\n`);
    for (const a of b.artifacts) put(join(dir, "artifacts", b.arch, b.builder, a), `${a} of ${b.cacheKey}\n`);
    put(join(dir, "consoles", `${b.machineId}.builder-${b.builder}.log`), `builder console in ${dir}\n`);
  }
  return dir;
}

const runner = (arch: Arch, extra: Partial<BuilderRecord> = {}): BuilderRecord => ({
  builder: "runner",
  arch,
  machineId: `debian-bullseye-5.10@${arch}`,
  ok: true,
  durationMs: 42_000,
  isolation: "container",
  artifacts: ["kmx-open"],
  cacheKey: `key-${arch}`,
  ...extra,
});

const BOOKWORM: MachineFixture = {
  name: "debian-bookworm-6.1",
  arch: "x86_64",
  verdicts: ["pass", "pass", "pass"],
};
const BULLSEYE: MachineFixture = {
  name: "debian-bullseye-5.10",
  arch: "x86_64",
  verdicts: ["pass", "fail", "skip"],
};
const TRIXIE: MachineFixture = {
  name: "debian-Trixie-6.12",
  arch: "x86_64",
  verdicts: ["pass", "pass", "skip"],
};
const ARM: MachineFixture = {
  name: "debian-bookworm-6.1",
  arch: "aarch64",
  verdicts: ["pass", "skip", "fail"],
};

async function expectUsageError(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UsageError);
  const message = (err as Error).message;
  expect(message).not.toContain("\n");
  return message;
}

describe("kmatrix merge", () => {
  it("reassembles one run: cells, logs, consoles, one copy of identical builders, run.json", async () => {
    const base = tmp();
    const a = fixtureRun(join(base, "shard-1"), {
      runId: "20260201-100500",
      startedAt: "2026-02-01T10:05:00.000Z",
      endedAt: "2026-02-01T10:40:00.000Z",
      machines: [BOOKWORM, ARM],
      builders: [runner("x86_64"), runner("aarch64")],
    });
    const b = fixtureRun(join(base, "shard-2"), {
      runId: "20260201-100000",
      startedAt: "2026-02-01T10:00:00.000Z",
      endedAt: "2026-02-01T10:30:00.000Z",
      machines: [BULLSEYE, TRIXIE],
      // Taken from kmatrix's builder cache: the same build.
      builders: [runner("x86_64", { cached: true, durationMs: 5 })],
    });
    const out = join(base, "merged");
    const { run, notes } = await mergeRuns([a, b], out);
    expect(notes).toEqual([]);

    const written = (await readRunDir(out)).run;
    expect(written).toEqual(run);
    expect(run.runId).toBe("20260201-100000");
    expect(run.startedAt).toBe("2026-02-01T10:00:00.000Z");
    expect(run.endedAt).toBe("2026-02-01T10:40:00.000Z");
    expect(run.machines.map((m) => m.machineId)).toEqual([
      "debian-bookworm-6.1@x86_64",
      "debian-bookworm-6.1@aarch64",
      "debian-bullseye-5.10@x86_64",
      "debian-Trixie-6.12@x86_64",
    ]);
    expect(run.plan.tests).toEqual(TESTS);
    // One runner per architecture; of the two records of the same x86_64 build, the one that ran.
    expect(run.builders).toEqual([runner("x86_64"), runner("aarch64")]);
    expect(readFileSync(join(out, "builders", "x86_64", "runner.log"), "utf8")).toContain(a);
    expect(
      readFileSync(join(out, "consoles", "debian-bullseye-5.10@x86_64.builder-runner.log"), "utf8"),
    ).toContain(a);
    expect(existsSync(join(out, "artifacts", "x86_64", "runner", "kmx-open"))).toBe(true);
    expect(existsSync(join(out, "artifacts", "aarch64", "runner", "kmx-open"))).toBe(true);
    for (const [m, from] of [
      [BOOKWORM, a],
      [ARM, a],
      [BULLSEYE, b],
      [TRIXIE, b],
    ] as const) {
      const id = `${m.name}@${m.arch}`;
      for (const t of TESTS) {
        expect(readFileSync(join(out, "cells", id, `${t}.json`), "utf8")).toBe(
          readFileSync(join(from, "cells", id, `${t}.json`), "utf8"),
        );
        expect(readFileSync(join(out, "cells", id, `${t}.log`), "utf8")).toBe(`log of ${id} ${t}\n`);
      }
      expect(readFileSync(join(out, "consoles", `${id}.log`), "utf8")).toBe(`console of ${id}\n`);
    }
  });

  it("renders the same Markdown matrices as the same matrix run unsharded, byte for byte", async () => {
    const base = tmp();
    const whole = fixtureRun(join(base, "whole"), {
      runId: "20260301-090000",
      startedAt: "2026-03-01T09:00:00.000Z",
      endedAt: "2026-03-01T10:00:00.000Z",
      machines: [BOOKWORM, BULLSEYE, TRIXIE, ARM],
      builders: [runner("x86_64"), runner("aarch64")],
    });
    const s1 = fixtureRun(join(base, "s1"), {
      runId: "20260302-120000",
      startedAt: "2026-03-02T12:00:00.000Z",
      endedAt: "2026-03-02T12:20:00.000Z",
      machines: [BULLSEYE, ARM],
      builders: [runner("x86_64", { cacheKey: "other", durationMs: 1 }), runner("aarch64")],
    });
    const s2 = fixtureRun(join(base, "s2"), {
      runId: "20260302-120100",
      startedAt: "2026-03-02T12:01:00.000Z",
      endedAt: "2026-03-02T12:31:00.000Z",
      machines: [TRIXIE, BOOKWORM],
      builders: [runner("x86_64")],
    });
    const merged = join(base, "merged");
    await mergeRuns([s1, s2], merged);
    await renderReport(whole);
    const { files } = await renderReport(merged);
    const md = files.filter((f) => f.endsWith(".md")).map((f) => f.slice(merged.length + 1));
    expect(md.sort()).toEqual([
      "report/aarch64/matrix.md",
      "report/matrix_ARM64.md",
      "report/matrix_X64.md",
      "report/x86_64/matrix.md",
    ]);
    for (const rel of md) {
      const ours = readFileSync(join(merged, rel), "utf8");
      expect(ours, rel).toBe(readFileSync(join(whole, rel), "utf8"));
      expect(ours).not.toContain("2026");
    }
    // Falco's scap-open-test layout too (what matrix_gen would read).
    for (const f of files.filter((f) => f.includes("scap-open-test"))) {
      const rel = f.slice(merged.length + 1);
      expect(readFileSync(f, "utf8"), rel).toBe(readFileSync(join(whole, rel), "utf8"));
    }
    // It has sections (a failure and skips): the comparison is not over a bare table.
    expect(readFileSync(join(merged, "report", "matrix_X64.md"), "utf8")).toContain(
      "# debian-bullseye-5.10 kmod_open",
    );
  });

  it("harness errors too: the merged Markdown is the unsharded one, byte for byte", async () => {
    const base = tmp();
    const broken: MachineFixture = {
      name: "debian-sid-7.2",
      arch: "x86_64",
      verdicts: ["error", "error", "error"],
    };
    const whole = fixtureRun(join(base, "whole"), {
      runId: "20260301-090000",
      startedAt: "2026-03-01T09:00:00.000Z",
      endedAt: "2026-03-01T10:00:00.000Z",
      machines: [BOOKWORM, broken],
    });
    const s1 = fixtureRun(join(base, "s1"), {
      runId: "20260302-120000",
      startedAt: "2026-03-02T12:00:00.000Z",
      endedAt: "2026-03-02T12:20:00.000Z",
      machines: [broken],
    });
    const s2 = fixtureRun(join(base, "s2"), {
      runId: "20260302-120500",
      startedAt: "2026-03-02T12:05:00.000Z",
      endedAt: "2026-03-02T12:30:00.000Z",
      machines: [BOOKWORM],
    });
    const merged = join(base, "merged");
    await mergeRuns([s1, s2], merged);
    await renderReport(whole);
    await renderReport(merged);
    const md = (dir: string) => readFileSync(join(dir, "report", "matrix_X64.md"), "utf8");
    expect(md(merged)).toBe(md(whole));
    expect(md(merged)).toContain("Plan `example` with libs 0.23.2, kmatrix 0.1.0, x86_64.");
  });

  it("refuses a cell that two runs hold, naming it and both runs", async () => {
    const base = tmp();
    const a = fixtureRun(join(base, "a"), {
      runId: "a",
      startedAt: "2026-02-01T10:00:00Z",
      machines: [BOOKWORM],
    });
    const b = fixtureRun(join(base, "b"), {
      runId: "b",
      startedAt: "2026-02-01T10:00:00Z",
      machines: [BULLSEYE, BOOKWORM],
    });
    const msg = await expectUsageError(mergeRuns([a, b], join(base, "out")));
    expect(msg).toBe(`cannot merge: cell debian-bookworm-6.1@x86_64 kmod_build is in both ${a} and ${b}`);
    expect(existsSync(join(base, "out"))).toBe(false);
  });

  it("refuses a machine that two runs list, even without a cell in common", async () => {
    const base = tmp();
    const a = fixtureRun(join(base, "a"), {
      runId: "a",
      startedAt: "2026-02-01T10:00:00Z",
      machines: [BOOKWORM],
    });
    const b = fixtureRun(join(base, "b"), {
      runId: "b",
      startedAt: "2026-02-01T10:00:00Z",
      machines: [{ ...BOOKWORM, verdicts: [] }],
    });
    expect(await expectUsageError(mergeRuns([a, b], join(base, "out")))).toBe(
      `cannot merge: machine debian-bookworm-6.1@x86_64 is in both ${a} and ${b}`,
    );
  });

  it.each([
    ["kmatrix version", { version: "0.2.0" }, '"0.1.0"', '"0.2.0"'],
    ["plan tests", { tests: ["kmod_build", "kmod_open"] }, "modern_bpf_open", '"kmod_build, kmod_open"'],
    ["sources", { libs: "0.24.0" }, '"libs 0.23.2"', '"libs 0.24.0"'],
  ] as const)(
    "refuses runs that differ in %s, naming the field and both runs",
    async (field, diff, ours, theirs) => {
      const base = tmp();
      const a = fixtureRun(join(base, "a"), {
        runId: "a",
        startedAt: "2026-02-01T10:00:00Z",
        machines: [BOOKWORM],
      });
      const b = fixtureRun(join(base, "b"), {
        runId: "b",
        startedAt: "2026-02-01T10:00:00Z",
        machines: [{ ...BULLSEYE, verdicts: ["pass"] }],
        ...diff,
      });
      const msg = await expectUsageError(mergeRuns([a, b], join(base, "out")));
      expect(msg).toMatch(new RegExp(`^cannot merge: the runs differ in ${field}: `));
      expect(msg).toContain(`${a} has `);
      expect(msg).toContain(ours);
      expect(msg).toContain(`${b} has ${theirs}`);
    },
  );

  it("refuses a plan of another name", async () => {
    const base = tmp();
    const a = fixtureRun(join(base, "a"), {
      runId: "a",
      startedAt: "2026-02-01T10:00:00Z",
      machines: [BOOKWORM],
    });
    const b = fixtureRun(join(base, "b"), {
      runId: "b",
      startedAt: "2026-02-01T10:00:00Z",
      machines: [BULLSEYE],
    });
    const run = JSON.parse(readFileSync(join(b, "run.json"), "utf8")) as RunRecord;
    put(join(b, "run.json"), json({ ...run, plan: { ...run.plan, name: "falco" } }));
    expect(await expectUsageError(mergeRuns([a, b], join(base, "out")))).toBe(
      `cannot merge: the runs differ in plan: ${a} has "example", ${b} has "falco"`,
    );
  });

  it("keeps once a builder that every shard took from the same earlier run (equal records)", async () => {
    const base = tmp();
    const taken = runner("x86_64", { cacheKey: undefined });
    const runs = ["a", "b", "c"].map((n, i) =>
      fixtureRun(join(base, n), {
        runId: n,
        startedAt: "2026-02-01T10:00:00Z",
        endedAt: "2026-02-01T11:00:00Z",
        machines: [[BOOKWORM, BULLSEYE, TRIXIE][i] as MachineFixture],
        builders: [taken],
      }),
    );
    const { run, notes } = await mergeRuns(runs, join(base, "out"));
    expect(run.builders).toEqual([taken]);
    expect(notes).toEqual([]);
    expect(run.machines).toHaveLength(3);
  });

  it("keeps one record of a builder that shards built separately: a failed one, else the first", async () => {
    const base = tmp();
    const failed = runner("x86_64", {
      ok: false,
      fault: "code",
      reason: "make failed",
      artifacts: [],
      cacheKey: "k2",
    });
    const a = fixtureRun(join(base, "a"), {
      runId: "a",
      startedAt: "2026-02-01T10:00:00Z",
      endedAt: "2026-02-01T11:00:00Z",
      machines: [BOOKWORM],
      builders: [runner("x86_64", { cacheKey: "k1" })],
    });
    const b = fixtureRun(join(base, "b"), {
      runId: "b",
      startedAt: "2026-02-01T10:00:00Z",
      endedAt: "2026-02-01T11:00:00Z",
      machines: [BULLSEYE],
      builders: [failed],
    });
    const { run, notes } = await mergeRuns([a, b], join(base, "out"));
    expect(run.builders).toEqual([failed]);
    expect(notes).toEqual([
      `builder x86_64/runner ran separately in 2 runs (${a}, ${b}); kept the one of ${b}`,
    ]);
    expect(readFileSync(join(base, "out", "builders", "x86_64", "runner.log"), "utf8")).toContain(b);
    // The failed builder left no artifacts; none are made up.
    expect(existsSync(join(base, "out", "artifacts", "x86_64", "runner"))).toBe(false);
  });

  it("refuses a non-empty output and an output that is one of the runs", async () => {
    const base = tmp();
    const a = fixtureRun(join(base, "a"), {
      runId: "a",
      startedAt: "2026-02-01T10:00:00Z",
      machines: [BOOKWORM],
    });
    put(join(base, "full", "x"), "x");
    expect(await expectUsageError(mergeRuns([a], join(base, "full")))).toMatch(/is not empty/);
    expect(await expectUsageError(mergeRuns([a], a))).toMatch(/is one of the runs to merge/);
    expect(await expectUsageError(mergeRuns([join(base, "nope")], join(base, "o")))).toBe(
      `${join(base, "nope")}: not a kmatrix results directory (no readable run.json)`,
    );
  });

  it("leaves the merged run without an end when a run had not finished", async () => {
    const base = tmp();
    const a = fixtureRun(join(base, "a"), {
      runId: "a",
      startedAt: "2026-02-01T10:00:00Z",
      endedAt: "2026-02-01T11:00:00Z",
      machines: [BOOKWORM],
    });
    const b = fixtureRun(join(base, "b"), {
      runId: "b",
      startedAt: "2026-02-01T10:00:00Z",
      machines: [BULLSEYE],
    });
    const { run, notes } = await mergeRuns([a, b], join(base, "out"));
    expect(run.endedAt).toBeUndefined();
    expect(notes).toEqual(["a run had not finished: the merged run has no end time"]);
  });
});

describe("--builders-from (importBuilders)", () => {
  it("copies the successful builders of the wanted architectures with their files", async () => {
    const base = tmp();
    const from = await readRunDir(
      fixtureRun(join(base, "from"), {
        runId: "a",
        startedAt: "2026-02-01T10:00:00Z",
        machines: [BOOKWORM],
        builders: [
          runner("x86_64"),
          runner("aarch64"),
          runner("x86_64", { builder: "broken", ok: false, artifacts: [] }),
          runner("x86_64", { builder: "other-plan", artifacts: ["x"] }),
        ],
      }),
    );
    const out = join(base, "out");
    const taken = await importBuilders(from, out, { arches: ["x86_64"], builders: ["runner", "broken"] });
    expect(taken).toEqual([runner("x86_64")]);
    expect(readFileSync(join(out, "artifacts", "x86_64", "runner", "kmx-open"), "utf8")).toBe(
      "kmx-open of key-x86_64\n",
    );
    expect(JSON.parse(readFileSync(join(out, "builders", "x86_64", "runner.json"), "utf8"))).toEqual(
      runner("x86_64"),
    );
    expect(existsSync(join(out, "builders", "x86_64", "runner.log"))).toBe(true);
    expect(existsSync(join(out, "consoles", "debian-bullseye-5.10@x86_64.builder-runner.log"))).toBe(true);
    expect(existsSync(join(out, "artifacts", "aarch64"))).toBe(false);
    expect(existsSync(join(out, "builders", "x86_64", "broken.json"))).toBe(false);
  });
});
