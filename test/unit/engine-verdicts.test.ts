// Verdict and fresh-boot logic of the engine over FAKE machines (test/unit/fake-machines.ts).
// The same paths with real kernels: test/integration/faults.test.ts.
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { keepOnResume } from "../../src/cli/run.js";
import { parseMatrix } from "../../src/config/load.js";
import { parsePlan } from "../../src/plan/load.js";
import type { BuilderRecord, CellRecord, MachineSummary } from "../../src/results/types.js";
import { runEngine } from "../../src/run/engine.js";
import { EventBus, type RunEvent } from "../../src/run/events.js";
import { hostArch } from "../../src/vm/accel.js";
import { type FakeScript, fakeMachines } from "./fake-machines.js";

const MATRIX = `machines:\n  - { name: m, arch: x86_64, kernel: { source: debian, suite: bookworm } }\n`;

async function run(
  planYaml: string,
  script: FakeScript,
  kept: CellRecord[] = [],
  opts: {
    cache?: string;
    rebuild?: boolean;
    compileIn?: "auto" | "vm" | "sandbox";
    matrix?: string;
    jobs?: number;
    builders?: "vm" | "container";
  } = {},
) {
  // Builders' artifacts are cached: every run gets its own cache unless a test shares one.
  process.env.KMATRIX_CACHE = opts.cache ?? (await mkdtemp(join(tmpdir(), "kmx-engine-cache-")));
  const matrix = parseMatrix(opts.matrix ?? MATRIX, "fake.yaml");
  const plan = parsePlan(`name: p\n${planYaml}`, "p.yaml", "/");
  const { provider, log } = fakeMachines(script);
  const bus = new EventBus();
  const events: RunEvent[] = [];
  bus.subscribe((e) => events.push(e));
  const dir = await mkdtemp(join(tmpdir(), "kmx-engine-"));
  await runEngine({
    matrix,
    machines: matrix.machines,
    plan,
    sources: new Map(),
    sourceSkips: new Map(),
    outDir: dir,
    runDir: dir,
    jobs: opts.jobs ?? 2,
    bus,
    signal: new AbortController().signal,
    kept: new Map(kept.map((c) => [`${c.machineId}/${c.test}`, c])),
    keptBuilders: new Map(),
    builders: opts.builders ?? "vm",
    rebuild: opts.rebuild,
    compileIn: opts.compileIn,
    provider,
  });
  const cells: Record<string, CellRecord> = {};
  const cellEvents: string[] = [];
  let machine: MachineSummary | undefined;
  const builders: Record<string, BuilderRecord> = {};
  for (const e of events) {
    if (e.type === "cell") {
      cells[e.record.test] = e.record;
      cellEvents.push(e.record.test);
    }
    if (e.type === "machine-ended") machine = e.machine;
    if (e.type === "builder-ended") builders[e.record.builder] = e.record;
  }
  return { cells, cellEvents, machine, builders, log, events };
}

const TESTS = `tests:
  - { name: build, command: do-build }
  - { name: load, command: do-load, needs: [build] }
  - { name: after, command: do-after, needs: [build] }
  - { name: other, command: do-other }
`;

describe("engine verdicts (fake machines)", () => {
  it("an oops fails its test; the later tests run on a fresh boot, after re-running their prerequisites", async () => {
    const r = await run(TESTS, {
      steps: { "do-load": { kernel: { oops: ["BUG: kernel NULL pointer dereference, address: 0"] } } },
    });
    expect(r.cells.load).toMatchObject({
      verdict: "fail",
      reason: "kernel oops: BUG: kernel NULL pointer dereference, address: 0",
      boot: 1,
    });
    expect(r.cells.after).toMatchObject({ verdict: "pass", boot: 2 });
    expect(r.cells.other).toMatchObject({ verdict: "pass", boot: 2 });
    expect(r.log.steps).toEqual([
      "m@x86_64#1: do-build",
      "m@x86_64#1: do-load",
      "m@x86_64#2: do-build",
      "m@x86_64#2: do-after",
      "m@x86_64#2: do-other",
    ]);
    // The prerequisite's record is written once, by its first run.
    expect(r.cellEvents).toEqual(["build", "load", "after", "other"]);
    expect(r.machine).toMatchObject({
      boots: 2,
      replaced: [{ afterTest: "load", reason: "the kernel oopsed" }],
    });
    expect(r.events.some((e) => e.type === "step-started" && e.test === "build.rerun")).toBe(true);
  });

  it("a panic fails its test, and the next test passes on a fresh boot", async () => {
    const r = await run(TESTS, {
      steps: {
        "do-load": {
          fault: { kind: "panic", message: "kernel panic: Kernel panic - not syncing: x", consoleTail: "" },
        },
      },
    });
    expect(r.cells.load).toMatchObject({
      verdict: "fail",
      reason: "kernel panic: Kernel panic - not syncing: x",
      console: "fake console",
    });
    expect(r.cells.after?.verdict).toBe("pass");
  });

  it("a hung kernel fails its test (keepalive lost, or a lockup report and no end), with a fresh boot after", async () => {
    const r = await run(TESTS, {
      steps: {
        "do-load": { result: { exitCode: undefined, channelLost: "keepalive" } },
        "do-after": {
          result: { exitCode: undefined, timedOut: true },
          kernel: { hung: ["watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [insmod:99]"] },
        },
      },
    });
    expect(r.cells.load).toMatchObject({
      verdict: "fail",
      reason: expect.stringMatching(/^kernel hung: the machine stopped answering/),
    });
    expect(r.cells.after).toMatchObject({
      verdict: "fail",
      reason: expect.stringContaining("soft lockup"),
      boot: 2,
    });
    expect(r.cells.other).toMatchObject({ verdict: "pass", boot: 3 });
  });

  it("under TCG a hang counts only if it happens again on a fresh boot; once is a harness error", async () => {
    const keepalive = { result: { exitCode: undefined, channelLost: "keepalive" as const } };
    const once = await run(TESTS, { accel: "tcg", steps: { "do-load": (n) => (n === 1 ? keepalive : {}) } });
    expect(once.cells.load).toMatchObject({ verdict: "error", boot: 1 });
    expect(once.cells.load?.reason).toMatch(
      /^kernel hung: the machine stopped answering \(no SSH keepalive reply\) — not on a second run on a fresh boot \(pass\): an emulated machine starved by its host can stall/,
    );
    expect(once.log.steps).toEqual([
      "m@x86_64#1: do-build",
      "m@x86_64#1: do-load",
      "m@x86_64#2: do-build",
      "m@x86_64#2: do-load",
      "m@x86_64#2: do-after",
      "m@x86_64#2: do-other",
    ]);
    const twice = await run(TESTS, { accel: "tcg", steps: { "do-load": keepalive } });
    expect(twice.cells.load).toMatchObject({
      verdict: "fail",
      reason: "kernel hung: the machine stopped answering (no SSH keepalive reply) (again on a fresh boot)",
    });
    expect(twice.cells.after).toMatchObject({ verdict: "pass", boot: 3 });
    // With KVM (or any real CPU) a hang is not re-run: it fails at once.
    const kvm = await run(TESTS, { accel: "kvm", steps: { "do-load": (n) => (n === 1 ? keepalive : {}) } });
    expect(kvm.cells.load).toMatchObject({ verdict: "fail" });
    expect(kvm.log.boots).toEqual({ "m@x86_64": 2 });
  });

  it("a stall report from a command that still finished is judged on the command, and replaces the machine", async () => {
    const stall = "rcu: INFO: rcu_preempt self-detected stall on CPU";
    const r = await run(TESTS, { steps: { "do-load": { kernel: { hung: [stall] } } } });
    expect(r.cells.load).toMatchObject({ verdict: "pass", reason: `kernel stall reported: ${stall}` });
    expect(r.cells.after).toMatchObject({ verdict: "pass", boot: 2 });
  });

  it("a lost channel is a harness error for that test only; a timeout fails it; both replace the machine", async () => {
    const r = await run(TESTS, {
      steps: {
        "do-load": { result: { exitCode: undefined, channelLost: "closed" } },
        "do-after": { result: { exitCode: undefined, timedOut: true } },
      },
    });
    expect(r.cells.load).toMatchObject({
      verdict: "error",
      reason: expect.stringContaining("SSH channel broke"),
    });
    expect(r.cells.after).toMatchObject({ verdict: "fail", reason: "timed out after 900 s", boot: 2 });
    expect(r.cells.other).toMatchObject({ verdict: "pass", boot: 3 });
  });

  it("an oops that reaches the console after its test ended is not blamed on the next test", async () => {
    const r = await run(TESTS, {
      steps: { "do-load": { troubleAfter: ["BUG: unable to handle page fault for address: ffff"] } },
    });
    expect(r.cells.load?.verdict).toBe("pass");
    expect(r.cells.after).toMatchObject({ verdict: "pass", boot: 2 });
    expect(r.machine?.replaced).toEqual([
      {
        afterTest: "load",
        reason: "kernel trouble after load: BUG: unable to handle page fault for address: ffff",
      },
    ]);
  });

  it("a WARN keeps the pass and says 'kernel warning'; a background child is named, not waited for", async () => {
    const warn = "WARNING: CPU: 0 PID: 12 at drivers/x.c:3 x_init+0x1/0x2";
    const r = await run(TESTS, {
      steps: {
        "do-load": { kernel: { warnings: [warn], lines: [warn] } },
        "do-after": { result: { exitCode: 0, leftover: ["123 sleep 1000"] } },
      },
    });
    expect(r.cells.load).toMatchObject({
      verdict: "pass",
      reason: `kernel warning: ${warn}`,
      kernelWarnings: [warn],
      dmesg: [warn],
    });
    expect(r.cells.after).toMatchObject({ verdict: "pass", leftover: ["123 sleep 1000"], boot: 1 });
    expect(r.machine?.boots).toBe(1);
  });

  it("a machine that cannot boot errs every cell, skips included; one that cannot boot again errs the rest", async () => {
    const skipping = `${TESTS}  - { name: too_new, command: "true", minKernel: { x86_64: "99.0" } }\n`;
    const never = await run(skipping, { steps: {}, failingBoots: [1] });
    for (const c of Object.values(never.cells))
      expect(c).toMatchObject({ verdict: "error", reason: "fake boot 1 failed" });
    expect(Object.keys(never.cells)).toHaveLength(5);

    const once = await run(skipping, {
      steps: { "do-load": { kernel: { oops: ["Oops: 0002"] } } },
      failingBoots: [2],
    });
    expect(once.cells.load?.verdict).toBe("fail");
    expect(once.cells.after).toMatchObject({
      verdict: "error",
      reason: "could not boot a fresh machine: fake boot 2 failed",
    });
    expect(once.cells.other?.verdict).toBe("error");
    expect(once.cells.too_new?.verdict).toBe("skip");
  });

  it("a prerequisite that fails when run again on the fresh machine blocks its dependant with that reason", async () => {
    const r = await run(TESTS, {
      steps: {
        "do-build": (n) => (n === 1 ? {} : { result: { exitCode: 2 } }),
        "do-load": { kernel: { oops: ["Oops: 0002"] } },
      },
    });
    expect(r.cells.build?.verdict).toBe("pass");
    expect(r.cells.after).toMatchObject({
      verdict: "fail",
      reason: "needs build, which did not pass when run again on a fresh machine: exit code 2",
    });
  });
});

describe("builder blame (fake machines)", () => {
  const plan = (extra = "") => `builders:
  - { name: b, machine: m, command: do-builder${extra} }
tests:
  - { name: uses_b, command: do-test, uses: [b] }
`;

  it.each([
    [
      "its own non-zero exit: the code's fault",
      { result: { exitCode: 1 } },
      "fail",
      "builder b failed: exit code 1",
    ],
    [
      "no exit status: the harness's",
      { result: { exitCode: undefined } },
      "error",
      "builder b could not run: the command ended without an exit status (the SSH channel broke)",
    ],
    [
      "its machine panicked: the harness's",
      {
        fault: {
          kind: "panic" as const,
          message: "kernel panic: Kernel panic - not syncing: Out of memory",
          consoleTail: "",
        },
      },
      "error",
      "builder b could not run: the builder machine's kernel panicked: kernel panic: Kernel panic - not syncing: Out of memory",
    ],
    [
      "the OOM killer ran: the harness's",
      { result: { exitCode: 137 }, kernel: { oom: ["Out of memory: Killed process 99 (cc1)"] } },
      "error",
      "builder b could not run: the builder machine ran out of memory: Out of memory: Killed process 99 (cc1)",
    ],
    [
      "its machine stopped answering: the harness's",
      { result: { exitCode: undefined, channelLost: "keepalive" as const } },
      "error",
      "builder b could not run: the builder machine stopped answering",
    ],
    [
      "a timeout: the harness's",
      { result: { exitCode: undefined, timedOut: true } },
      "error",
      "builder b could not run: timed out after 1800 s",
    ],
  ])("%s", async (_, step, verdict, reason) => {
    const r = await run(plan(), { steps: { "do-builder": step } });
    expect(r.cells.uses_b).toMatchObject({ verdict, reason, builder: "b" });
    expect(r.builders.b?.fault).toBe(verdict === "fail" ? "code" : "harness");
  });

  it("an exit code the plan declares as 'environment' is the harness's, with the builder's last line", async () => {
    const r = await run(plan(", environmentExitCodes: [78]"), {
      steps: { "do-builder": { result: { exitCode: 78, stderr: "libbpf 1.1 is older than 1.2\n" } } },
    });
    expect(r.cells.uses_b).toMatchObject({
      verdict: "error",
      reason:
        "builder b could not run: the builder's environment is not usable (exit 78): libbpf 1.1 is older than 1.2",
    });
  });
});

describe("builders' artifacts are cached across runs (fake machines)", () => {
  const plan = `sources: { src: ${JSON.stringify(new URL("../fixtures/faults/modules", import.meta.url).pathname)} }
builders:
  - { name: b, machine: m, command: do-builder }
tests:
  - { name: uses_b, command: do-test, uses: [b] }
`;

  it("a second run with the same inputs reuses them and says so; --rebuild or a changed builder runs it again", async () => {
    const cache = await mkdtemp(join(tmpdir(), "kmx-builder-cache-"));
    const first = await run(plan, { steps: {} }, [], { cache });
    expect(first.builders.b).toMatchObject({ ok: true, cacheKey: expect.any(String) });
    expect(first.builders.b?.cached).toBeUndefined();
    expect(first.log.steps).toContain("m@x86_64#1: do-builder");

    const second = await run(plan, { steps: {} }, [], { cache });
    expect(second.builders.b).toMatchObject({ ok: true, cached: true, cacheKey: first.builders.b?.cacheKey });
    expect(second.log.steps).not.toContain("m@x86_64#1: do-builder");
    expect(second.cells.uses_b?.verdict).toBe("pass");

    const forced = await run(plan, { steps: {} }, [], { cache, rebuild: true });
    expect(forced.builders.b?.cached).toBeUndefined();
    const changed = await run(plan.replace("do-builder", "do-builder --other"), { steps: {} }, [], { cache });
    expect(changed.builders.b?.cached).toBeUndefined();
    expect(changed.builders.b?.cacheKey).not.toBe(first.builders.b?.cacheKey);
  });

  it("a failed builder is never cached", async () => {
    const cache = await mkdtemp(join(tmpdir(), "kmx-builder-cache-"));
    await run(plan, { steps: { "do-builder": { result: { exitCode: 1 } } } }, [], { cache });
    const again = await run(plan, { steps: {} }, [], { cache });
    expect(again.builders.b).toMatchObject({ ok: true });
    expect(again.builders.b?.cached).toBeUndefined();
  });
});

const COMPILE = `tests:
  - { name: configure, command: do-configure, compileIn: auto }
  - { name: build, command: do-build, needs: [configure], compileIn: auto }
  - { name: load, command: do-load, needs: [build] }
  - { name: probe, command: do-probe, needs: [load], compileIn: auto }
  - { name: after, command: do-after, needs: [build] }
`;

describe("compile steps in a sandbox of the machine's image (fake machines)", () => {
  it("without KVM they run in the sandbox first, and their outputs come with every boot", async () => {
    const r = await run(COMPILE, { steps: { "do-load": { kernel: { oops: ["BUG: oops"] } } } }, [], {
      compileIn: "sandbox",
    });
    // probe needs a test that ran in the machine: it runs there too.
    expect(r.log.steps).toEqual([
      "m@x86_64#sandbox: do-configure",
      "m@x86_64#sandbox: do-build",
      "m@x86_64#1: do-load",
      "m@x86_64#2: do-after",
    ]);
    expect(r.cells.build).toMatchObject({ verdict: "pass", ranIn: "sandbox" });
    expect(r.cells.build?.boot).toBeUndefined();
    expect(r.cells.load).toMatchObject({ verdict: "fail", ranIn: "vm", boot: 1 });
    expect(r.cells.probe).toMatchObject({ verdict: "fail", reason: "needs load, which failed" });
    // The fresh boot after the oops does not build again: the outputs are copied into each boot.
    expect(r.cells.after).toMatchObject({ verdict: "pass", boot: 2 });
    const carried = r.log.copies.filter((c) => c.endsWith("-> /"));
    expect(carried).toHaveLength(2);
    expect(carried[0]).toMatch(/^m@x86_64#1: .*carried\/m_x86_64\/kmatrix -> \/$/);
    // The sandbox stands for the machine: its kernel release, and the uname that says it.
    const build = r.log.commands[1] ?? "";
    expect(build).toContain("KMATRIX_KERNEL=6.1.0-99-cloud-amd64 PATH=/opt/kmatrix/bin:");
    expect(r.log.commands[2]).toContain('KMATRIX_KERNEL="$(uname -r)"');
    expect(r.events).toContainEqual({
      type: "step-started",
      machineId: "m@x86_64",
      test: "build",
      ranIn: "sandbox",
    });
  });

  it("a compile step that fails in the sandbox fails its cell and its dependants, with no boot if nothing is left", async () => {
    const plan = `tests:
  - { name: build, command: do-build, compileIn: sandbox }
  - { name: load, command: do-load, needs: [build] }
`;
    const r = await run(plan, { steps: { "do-build": { result: { exitCode: 2 } } } });
    expect(r.cells.build).toMatchObject({ verdict: "fail", reason: "exit code 2", ranIn: "sandbox" });
    expect(r.cells.load).toMatchObject({ verdict: "fail", reason: "needs build, which failed" });
    expect(r.log.boots).toEqual({});
    expect(r.machine).toMatchObject({ boots: 0 });
  });

  it("auto compiles for the other architecture in a sandbox only with the host's cross compilers", async () => {
    const other = hostArch() === "x86_64" ? "aarch64" : "x86_64";
    const matrix = `machines:\n  - { name: m, arch: ${other}, kernel: { source: debian, suite: bookworm } }\n`;
    // Its own compilers would run under qemu-user, which gains nothing steady: the VM then.
    const auto = await run(COMPILE, { steps: {} }, [], { matrix });
    expect(auto.log.steps.every((s) => s.startsWith(`m@${other}#1`))).toBe(true);
    const forced = await run(COMPILE, { steps: {} }, [], { matrix, compileIn: "sandbox" });
    expect(forced.log.steps[0]).toBe(`m@${other}#sandbox: do-configure`);
    if (process.getuid?.() !== 0) return; // the sandbox needs root
    expect(auto.events).toContainEqual({
      type: "notice",
      machineId: `m@${other}`,
      line: "compile steps stay in its VM: no cross toolchain, as the fake host has none",
    });
    expect(forced.machine?.compilers).toMatch(/under qemu-user/);
    const cross = await run(COMPILE, { steps: {}, crossToolchain: true }, [], { matrix });
    expect(cross.log.steps.slice(0, 2)).toEqual([
      `m@${other}#sandbox: do-configure`,
      `m@${other}#sandbox: do-build`,
    ]);
    expect(cross.cells.build).toMatchObject({ verdict: "pass", ranIn: "sandbox" });
    expect(cross.machine?.compilers).toBe("compilers run natively: fake-gcc");
    expect(cross.log.commands[1]).toContain("PATH=/opt/kmatrix/bin:/opt/kmatrix/cross/usr/kmatrix-bin:");
  });

  it("a builder's container of the other architecture gets the host's cross compilers when there are some", async () => {
    const other = hostArch() === "x86_64" ? "aarch64" : "x86_64";
    const matrix = `machines:\n  - { name: m, arch: ${other}, kernel: { source: debian, suite: bookworm } }\n`;
    const plan = `builders:
  - { name: b, machine: m, command: do-builder }
tests:
  - { name: t, command: do-test, uses: [b] }
`;
    const cross = await run(plan, { steps: {}, crossToolchain: true }, [], { matrix, builders: "container" });
    expect(cross.log.containers).toEqual([`m@${other}: compilers run natively: fake-gcc`]);
    expect(cross.builders.b).toMatchObject({
      ok: true,
      isolation: "container",
      compilers: "compilers run natively: fake-gcc",
    });
    expect(cross.events).toContainEqual({
      type: "notice",
      machineId: `m@${other}`,
      line: "builder b: compilers run natively: fake-gcc",
    });
    // None: its own compilers under qemu-user, as before, and a notice that says why.
    const own = await run(plan, { steps: {} }, [], { matrix, builders: "container" });
    expect(own.log.containers).toEqual([`m@${other}: own compilers`]);
    expect(own.builders.b?.ok).toBe(true);
    expect(own.builders.b?.compilers).toBeUndefined();
    expect(own.events).toContainEqual({
      type: "notice",
      machineId: `m@${other}`,
      line: "builder b: its compilers run under qemu-user: no cross toolchain, as the fake host has none",
    });
    // The host's own architecture needs none.
    const native = await run(plan, { steps: {}, crossToolchain: true }, [], { builders: "container" });
    expect(native.log.containers).toEqual(["m@x86_64: own compilers"]);
  });

  it("auto keeps compile steps in the VM when KVM works; --compile-in vm does so without KVM", async () => {
    for (const [script, opts] of [
      [{ steps: {}, kvm: true }, {}],
      [{ steps: {} }, { compileIn: "vm" as const }],
    ] as const) {
      const r = await run(COMPILE, script, [], opts);
      expect(r.log.steps.every((s) => s.startsWith("m@x86_64#1"))).toBe(true);
      expect(r.cells.build?.ranIn).toBe("vm");
    }
  });

  it("a sandbox that cannot start is a harness error for the compile steps, never a driver failure", async () => {
    const r = await run(COMPILE, { steps: {}, sandboxFails: true }, [], { compileIn: "sandbox" });
    expect(r.cells.configure).toMatchObject({ verdict: "error" });
    expect(r.cells.configure?.reason).toContain(
      "could not prepare a sandbox of the machine's image: fake sandbox: mount failed",
    );
    expect(r.cells.build).toMatchObject({ verdict: "error" });
    expect(r.cells.load).toMatchObject({
      verdict: "error",
      reason: expect.stringMatching(/^needs build, which could not run/),
    });
  });

  it("with --jobs 1, one machine's compile steps run while another's VM runs its tests", async () => {
    const matrix = `machines:
  - { name: a, arch: x86_64, kernel: { source: debian, suite: bookworm } }
  - { name: b, arch: x86_64, kernel: { source: debian, suite: bookworm } }
`;
    const plan = `tests:
  - { name: build, command: do-build, compileIn: sandbox }
  - { name: load, command: do-load, needs: [build] }
`;
    const r = await run(plan, { steps: { "do-build": { delayMs: 200 }, "do-load": { delayMs: 1500 } } }, [], {
      matrix,
      jobs: 1,
    });
    const order = r.events.flatMap((e) =>
      e.type === "step-started"
        ? [`${e.machineId} ${e.test} starts`]
        : e.type === "step-ended"
          ? [`${e.machineId} ${e.step} ends`]
          : [],
    );
    const at = (what: string) => order.indexOf(what);
    // b's compile step runs while a's VM runs its test (1.5 s; the build 0.2 s): had they shared
    // one slot, b's build would have ended before a's test started.
    expect(at("b@x86_64 build starts")).toBeGreaterThan(at("a@x86_64 build ends"));
    expect(at("b@x86_64 build ends")).toBeGreaterThan(at("a@x86_64 load starts"));
    expect(at("b@x86_64 build ends")).toBeLessThan(at("a@x86_64 load ends"));
    expect(at("a@x86_64 load starts")).toBeLessThan(at("a@x86_64 load ends"));
    // One VM at a time: b's test waits for a's.
    expect(at("b@x86_64 load starts")).toBeGreaterThan(at("a@x86_64 load ends"));
  });

  it("a resumed machine runs its kept compile prerequisites again in the sandbox, without records", async () => {
    const cell = (test: string): CellRecord => ({
      machineId: "m@x86_64",
      machine: "m",
      arch: "x86_64",
      test,
      verdict: "pass",
    });
    const r = await run(COMPILE, { steps: {} }, [cell("configure"), cell("build")], { compileIn: "sandbox" });
    expect(r.cellEvents).toEqual(["load", "probe", "after"]);
    expect(r.log.steps).toEqual([
      "m@x86_64#sandbox: do-configure",
      "m@x86_64#sandbox: do-build",
      "m@x86_64#1: do-load",
      "m@x86_64#1: do-probe",
      "m@x86_64#1: do-after",
    ]);
    expect(
      r.events.filter((e) => e.type === "step-started").map((e) => (e as { test: string }).test),
    ).toContain("build.rerun");
  });
});

describe("--resume keeps results, not harness errors", () => {
  const cell = (over: Partial<CellRecord>): CellRecord => ({
    machineId: "m@x86_64",
    machine: "m",
    arch: "x86_64",
    test: "t",
    verdict: "pass",
    ...over,
  });
  const ok: BuilderRecord = { builder: "b", arch: "x86_64", machineId: "m@x86_64", ok: true, artifacts: [] };

  it("keeps pass, skip and driver failures; re-runs errors and cells failed by a builder that runs again", () => {
    expect(keepOnResume(cell({}), new Map())).toBe(true);
    expect(keepOnResume(cell({ verdict: "skip" }), new Map())).toBe(true);
    expect(keepOnResume(cell({ verdict: "fail" }), new Map())).toBe(true);
    expect(keepOnResume(cell({ verdict: "error" }), new Map())).toBe(false);
    expect(keepOnResume(cell({ verdict: "fail", builder: "b" }), new Map())).toBe(false);
    expect(keepOnResume(cell({ verdict: "fail", builder: "b" }), new Map([["x86_64/b", ok]]))).toBe(true);
  });

  it("a resumed machine re-runs a kept prerequisite on its boot without rewriting its record", async () => {
    const kept = [cell({ test: "build" }), cell({ test: "load" })];
    const r = await run(TESTS, { steps: {} }, kept);
    expect(r.cellEvents).toEqual(["after", "other"]);
    expect(r.log.steps).toEqual(["m@x86_64#1: do-build", "m@x86_64#1: do-after", "m@x86_64#1: do-other"]);
  });
});
