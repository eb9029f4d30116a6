import { mkdtemp, readFile } from "node:fs/promises";
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
    "build",
    "slow_command",
    "unsupported",
    "too_new",
    "uses_broken",
    "hang",
    "panic",
    "after_panic",
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
describe("faults: hang, panic, timeout, unbootable kernel, SIGINT and --resume", () => {
  it("gives each fault its verdict, keeps the others apart, and resumes after SIGINT", async () => {
    const out = join(await mkdtemp(join(tmpdir(), "kmx-faults-")), "run");

    // 1. Interrupt as soon as the first test of the good machine has its verdict.
    const first = execa("node", [CLI, ...args, "--output", out], { reject: false, all: true });
    await new Promise<void>((resolve) =>
      first.all?.on("data", (c: Buffer) => {
        if (/good@x86_64: build \S+ pass/.test(c.toString())) resolve();
      }),
    );
    const sent = Date.now();
    first.kill("SIGINT");
    const interrupted = await first;
    expect(Date.now() - sent).toBeLessThan(5000);
    expect(interrupted.exitCode).toBe(130);
    expect(await qemuProcesses(`/runs/${first.pid}-`)).toEqual([]);
    const kept = await cells(out, "good@x86_64");
    expect(kept.build?.verdict).toBe("pass");
    expect(Object.keys(kept)).not.toContain("hang");
    expect(JSON.parse(await readFile(join(out, "run.json"), "utf8")).interrupted).toBe(true);

    // 2. Resume: the finished cells stay as they were, the rest get their verdicts.
    const resuming = execa("node", [CLI, ...args, "--resume", out], { reject: false, all: true });
    const resumed = await resuming;
    expect(resumed.exitCode, resumed.all).toBe(1);
    const good = await cells(out, "good@x86_64");
    expect(good.build).toEqual(kept.build);
    expect(good.slow_command).toMatchObject({
      verdict: "fail",
      timedOut: true,
      reason: "timed out after 5 s",
    });
    expect(good.slow_command?.durationMs).toBeLessThan(5000 + 6000);
    expect(good.unsupported).toMatchObject({
      verdict: "skip",
      reason: expect.stringContaining("no such feature"),
    });
    expect(good.too_new).toMatchObject({
      verdict: "skip",
      reason: expect.stringContaining("older than 99.0"),
    });
    // A builder that fails on the code it builds fails its dependants, naming the builder.
    expect(good.uses_broken).toMatchObject({ verdict: "fail", reason: "builder broken failed: exit code 1" });
    expect(good.hang).toMatchObject({ verdict: "fail", timedOut: true });
    expect(good.hang?.durationMs).toBeLessThan(15_000 + 8000);
    expect(good.panic).toMatchObject({
      verdict: "fail",
      reason: expect.stringContaining("kmatrix fault fixture: deliberate panic"),
    });
    expect(good.panic?.console).toMatch(/Kernel panic - not syncing/);
    expect(good.after_panic).toMatchObject({ verdict: "error", reason: "the kernel panicked during panic" });

    const broken = await cells(out, "broken-boot@x86_64");
    expect(Object.values(broken)).toHaveLength(8);
    for (const c of Object.values(broken)) {
      expect(c.verdict).toBe("error");
      expect(c.reason).toMatch(/^boot failed \(panic\)/);
    }
    expect(await qemuProcesses(`/runs/${resuming.pid}-`)).toEqual([]);
    expect(await checkReportsAgree(out)).toEqual([]);
  });
});
