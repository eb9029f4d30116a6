import { mkdtemp, readFile, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { checkReportsAgree } from "../../src/report/index.js";
import type { CellRecord } from "../../src/results/types.js";
import { CLI, qemuProcesses } from "./helpers.js";

const FIXTURE = new URL("../fixtures/faults/", import.meta.url).pathname;
const args = [
  "run",
  "--config",
  join(FIXTURE, "matrix.yaml"),
  "--plan",
  join(FIXTURE, "plan.yaml"),
  "--jobs",
  "2",
  // The example plan's builders run in containers (auto, as root, without KVM); these run in VMs.
  "--builders",
  "vm",
];

async function cells(out: string, machineId: string): Promise<Record<string, CellRecord>> {
  const tests = [
    "prepare",
    "slow_command",
    "unsupported",
    "too_new",
    "uses_broken",
    "background",
    "big_output",
    "hang",
    "panic",
    "after_panic",
    "oops",
    "after_oops",
  ];
  const entries = await Promise.all(
    tests.map(async (t) => {
      const text = await readFile(join(out, "cells", machineId, `${t}.json`), "utf8").catch(() => undefined);
      return [t, text && JSON.parse(text)] as const;
    }),
  );
  return Object.fromEntries(entries.filter(([, v]) => v));
}

// A machine in every kind of trouble, next to one that cannot boot; interrupted, then resumed.
describe("faults: hang, panic, oops, timeout, background child, huge output, unbootable kernel, SIGINT and --resume", () => {
  it("gives each fault its verdict, replaces a machine in doubt, keeps the others apart, and resumes after SIGINT", async () => {
    const out = join(await mkdtemp(join(tmpdir(), "kmx-faults-")), "run");

    // 1. Interrupt as soon as the first test of the good machine has its verdict.
    const first = execa("node", [CLI, ...args, "--output", out], { reject: false, all: true });
    await new Promise<void>((resolve) =>
      first.all?.on("data", (c: Buffer) => {
        if (/good@x86_64: prepare \S+ pass/.test(c.toString())) resolve();
      }),
    );
    const sent = Date.now();
    first.kill("SIGINT");
    const interrupted = await first;
    expect(Date.now() - sent).toBeLessThan(5000);
    expect(interrupted.exitCode).toBe(130);
    expect(await qemuProcesses(`/runs/${first.pid}-`)).toEqual([]);
    const kept = await cells(out, "good@x86_64");
    expect(kept.prepare?.verdict).toBe("pass");
    expect(Object.keys(kept)).not.toContain("hang");
    expect(JSON.parse(await readFile(join(out, "run.json"), "utf8")).interrupted).toBe(true);

    // 2. Resume: the finished cells stay as they were, the rest get their verdicts.
    const resuming = execa("node", [CLI, ...args, "--resume", out], { reject: false, all: true });
    const resumed = await resuming;
    expect(resumed.exitCode, resumed.all).toBe(1);
    const good = await cells(out, "good@x86_64");
    expect(good.prepare).toEqual(kept.prepare);
    // A timeout leaves the machine in doubt: the next tests run on a fresh boot.
    expect(good.slow_command).toMatchObject({
      verdict: "fail",
      timedOut: true,
      reason: "timed out after 5 s",
      boot: 1,
    });
    expect(good.slow_command?.durationMs).toBeLessThan(5000 + 6000);
    expect(good.unsupported).toMatchObject({
      verdict: "skip",
      reason: expect.stringContaining("no such feature"),
      boot: 2,
    });
    expect(good.too_new).toMatchObject({
      verdict: "skip",
      reason: expect.stringContaining("older than 99.0"),
    });
    // A builder that fails on the code it builds fails its dependants, naming the builder.
    expect(good.uses_broken).toMatchObject({
      verdict: "fail",
      reason: "builder broken failed: exit code 1",
      builder: "broken",
    });
    // The command ends when its shell does; the child it left is named (and killed).
    expect(good.background).toMatchObject({ verdict: "pass", exitCode: 0 });
    expect(good.background?.leftover?.join("\n")).toContain("sleep 1000");
    expect(good.background?.durationMs).toBeLessThan(20_000);
    // 100 MB of output: the log keeps its head and tail, and says how much it cut.
    expect(good.big_output?.verdict).toBe("pass");
    const bigLog = join(out, "cells", "good@x86_64", "big_output.log");
    expect((await stat(bigLog)).size).toBeLessThan(17 * 1024 * 1024);
    expect(await readFile(bigLog, "utf8")).toMatch(/kmatrix: .* cut/);
    expect(good.hang).toMatchObject({ verdict: "fail", timedOut: true });
    expect(good.hang?.durationMs).toBeLessThan(15_000 + 8000);
    expect(good.panic).toMatchObject({
      verdict: "fail",
      reason: expect.stringContaining("kmatrix fault fixture: deliberate panic"),
    });
    expect(good.panic?.console).toMatch(/Kernel panic - not syncing/);
    // Every column gets its own verdict: the tests after a panic and an oops pass on fresh boots.
    expect(good.after_panic).toMatchObject({ verdict: "pass" });
    expect(good.oops).toMatchObject({
      verdict: "fail",
      reason: expect.stringMatching(/^kernel oops: .*BUG: kernel NULL pointer dereference/),
    });
    expect(good.oops?.console).toMatch(/oops_init/);
    // On its fresh machine, its prerequisite ran again (its record untouched); the WARN keeps the pass.
    expect(good.after_oops).toMatchObject({
      verdict: "pass",
      reason: expect.stringMatching(/^kernel warning: .*WARNING: CPU: \d+ PID: \d+ at .*warn_init/),
    });
    expect(good.after_oops?.kernelWarnings?.length).toBe(1);
    expect(good.after_oops?.boot).toBe(5);
    expect(await stat(join(out, "cells", "good@x86_64", "prepare.rerun.log"))).toBeTruthy();
    const run = JSON.parse(await readFile(join(out, "run.json"), "utf8"));
    const summary = run.machines.find((m: { machineId: string }) => m.machineId === "good@x86_64");
    expect(summary.replaced.map((r: { afterTest: string }) => r.afterTest)).toEqual([
      "slow_command",
      "hang",
      "panic",
      "oops",
    ]);

    const broken = await cells(out, "broken-boot@x86_64");
    expect(Object.values(broken)).toHaveLength(12);
    for (const c of Object.values(broken)) {
      expect(c.verdict).toBe("error");
      expect(c.reason).toMatch(/^boot failed \(panic\)/);
    }
    expect(await qemuProcesses(`/runs/${resuming.pid}-`)).toEqual([]);
    expect(await checkReportsAgree(out)).toEqual([]);
  });
});
