import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { checkReportsAgree } from "../../src/report/index.js";
import { readRunDir } from "../../src/results/merge.js";
import type { CellRecord, RunRecord } from "../../src/results/types.js";
import { CLI } from "./helpers.js";

// A tiny plan, not the example plan: with the example plan's Kbuilds the three runs took 388 s here
// (unsharded 201 s, both shards 186 s; builders cached), with this one about 70 s. It has a builder,
// a pass, a pass that uses the builder's artifact, a skip by kernel version on one machine, a skip
// by exit code and a failure, so the matrices have links and sections to compare.
const PLAN = `name: shard-check
builders:
  - name: greeting
    machine: debian-bookworm-6.1
    command: echo hello > $KMATRIX_OUT/hello
tests:
  - name: uname
    command: uname -r
  - name: uses_builder
    uses: [greeting]
    command: grep -qx hello $KMATRIX_ARTIFACTS/greeting/hello
  - name: new_kernels
    command: "true"
    minKernel: { x86_64: "6.0" }
  - name: unsupported
    command: echo "no such feature here" >&2; exit 95
    unsupportedExitCodes: [95]
  - name: broken_driver
    command: echo "the driver broke" >&2; exit 3
`;
const MACHINES = ["debian-bookworm-6.1@x86_64", "debian-bullseye-5.10@x86_64"];
const TESTS = ["uname", "uses_builder", "new_kernels", "unsupported", "broken_driver"];

/** What a cell says, without what differs from run to run (times, boots). */
async function verdicts(dir: string): Promise<Record<string, Partial<CellRecord>>> {
  const { cells } = await readRunDir(dir);
  return Object.fromEntries(
    cells.map((c) => [
      `${c.machineId} ${c.test}`,
      { verdict: c.verdict, reason: c.reason, exitCode: c.exitCode, outputTail: c.outputTail },
    ]),
  );
}

const runJson = async (dir: string): Promise<RunRecord> =>
  JSON.parse(await readFile(join(dir, "run.json"), "utf8"));

describe("run --shard 1/2 and 2/2, merged", () => {
  it("gives the same cells and byte-identical matrices as one unsharded run", async () => {
    const base = await mkdtemp(join(tmpdir(), "kmx-shard-"));
    const plan = join(base, "plan.yaml");
    await writeFile(plan, PLAN);
    const common = [
      "run",
      "--plan",
      plan,
      "--arch",
      "x86_64",
      "-m",
      "debian-bookworm-6.1",
      "-m",
      "debian-bullseye-5.10",
    ];
    // The builder boots its machine (a container would need root and bubblewrap; this is about shards).
    const cli = (args: string[]) => execa("node", [CLI, ...args], { reject: false, all: true });
    const t0 = Date.now();

    const whole = join(base, "whole");
    const w = await cli([...common, "--builders", "vm", "--jobs", "2", "-o", whole]);
    expect(w.exitCode, w.all).toBe(1); // broken_driver fails
    const t1 = Date.now();

    // Both shards at once, as a CI matrix would run them; the second takes its builder from the
    // unsharded run, the first runs it (or finds it in the builder cache).
    const [one, two] = [join(base, "shard-1"), join(base, "shard-2")];
    const [s1, s2] = await Promise.all([
      cli([
        ...common,
        "--builders",
        "vm",
        "--jobs",
        "1",
        "--shard",
        "1/2",
        "--balance-from",
        whole,
        "-o",
        one,
      ]),
      cli([
        ...common,
        "--jobs",
        "1",
        "--shard",
        "2/2",
        "--balance-from",
        whole,
        "--builders-from",
        whole,
        "-o",
        two,
      ]),
    ]);
    const t2 = Date.now();
    expect(s1.exitCode, s1.all).toBe(1);
    expect(s2.exitCode, s2.all).toBe(1);
    expect(s1.stderr).toMatch(/shard 1\/2: 1 of 2 machines .*balanced by the durations of/);
    expect(s2.stderr).toMatch(/--builders-from .*: took greeting \(x86_64\)/);

    // Each machine in exactly one shard.
    const [r1, r2] = [await runJson(one), await runJson(two)];
    const shardIds = [...r1.machines, ...r2.machines].map((m) => m.machineId);
    expect(shardIds.sort()).toEqual(MACHINES);
    expect(r1.machines).toHaveLength(1);
    // The second shard's builder is the unsharded run's, record and artifact.
    const wholeRun = await runJson(whole);
    expect(r2.builders).toEqual(wholeRun.builders);
    expect(await readFile(join(two, "artifacts", "x86_64", "greeting", "hello"), "utf8")).toBe("hello\n");

    const merged = join(base, "merged");
    const m = await cli(["merge", one, two, "-o", merged]);
    expect(m.exitCode, m.all).toBe(0);
    expect(m.stdout).toContain(`merged 2 runs (2 machines) into ${merged}`);
    const t3 = Date.now();

    const [ours, theirs] = [await verdicts(merged), await verdicts(whole)];
    expect(Object.keys(ours).sort()).toEqual(MACHINES.flatMap((id) => TESTS.map((t) => `${id} ${t}`)).sort());
    expect(ours).toEqual(theirs);
    expect(ours["debian-bullseye-5.10@x86_64 new_kernels"]?.verdict).toBe("skip");
    expect(ours["debian-bookworm-6.1@x86_64 uses_builder"]?.verdict).toBe("pass");

    for (const rel of ["matrix_X64.md", join("x86_64", "matrix.md")]) {
      const md = await readFile(join(merged, "report", rel), "utf8");
      expect(md, rel).toBe(await readFile(join(whole, "report", rel), "utf8"));
      expect(md).toContain("# debian-bullseye-5.10 broken_driver");
    }
    const mergedRun = await runJson(merged);
    expect(mergedRun.builders.map((b) => `${b.builder}@${b.arch}`)).toEqual(["greeting@x86_64"]);
    expect(mergedRun.startedAt <= r2.startedAt && mergedRun.startedAt <= r1.startedAt).toBe(true);
    expect(await checkReportsAgree(merged)).toEqual([]);
    console.log(
      `shard test: unsharded ${((t1 - t0) / 1000).toFixed(0)} s, two shards ${((t2 - t1) / 1000).toFixed(0)} s, merge ${((t3 - t2) / 1000).toFixed(1)} s`,
    );
  });
});
