import { describe, expect, it } from "vitest";
import { commandOutcome, kernelVersion, prerequisiteOutcome, staticSkip } from "../../src/plan/cells.js";
import { loadPlan, parsePlan } from "../../src/plan/load.js";
import { TestSchema } from "../../src/plan/schema.js";
import { parseSource } from "../../src/util/sources.js";

const test = (over: object) => TestSchema.parse({ name: "t", command: "true", ...over });
const result = (exitCode: number | undefined, extra: object = {}) => ({
  exitCode,
  timedOut: false,
  stdout: "",
  stderr: "",
  ...extra,
});

describe("parsePlan", () => {
  const base = `name: p\nsources: { drivers: ../drivers }\n`;

  it("resolves sources against the plan's directory and orders builders by needs", () => {
    const plan = parsePlan(
      `${base}builders:\n  - { name: b, machine: m, command: x, needs: [a] }\n  - { name: a, machine: m, command: y }\ntests:\n  - { name: t1, command: "true", uses: [b] }\n`,
      "p.yaml",
      "/plans",
    );
    expect(plan.sources).toEqual([{ name: "drivers", location: { kind: "dir", path: "/drivers" } }]);
    expect(plan.builders.map((b) => b.name)).toEqual(["a", "b"]);
    expect(plan.tests[0]).toMatchObject({ timeoutSec: 900, needs: [], unsupportedExitCodes: [] });
    expect(plan.builders[0]).toMatchObject({ timeoutSec: 1800, environmentExitCodes: [] });
  });

  it.each([
    [
      "tests:\n  - { name: a, command: x, needs: [b] }\n  - { name: b, command: y }\n",
      /tests\[0\]\.needs: "b" is not a test that comes before "a"/,
    ],
    ["tests:\n  - { name: a, command: x, uses: [nope] }\n", /tests\[0\]\.uses: no builder named "nope"/],
    ["tests:\n  - { name: a, command: x }\n  - { name: a, command: y }\n", /tests: "a" is defined twice/],
    [
      "builders:\n  - { name: a, machine: m, command: x, needs: [b] }\n  - { name: b, machine: m, command: x, needs: [a] }\ntests:\n  - { name: t, command: x }\n",
      /needs itself \(a cycle\)/,
    ],
    ["tests:\n  - { name: a, command: x, minKernel: { arm64: '5.8' } }\n", /p\.yaml: tests\[0\]\.minKernel/],
    ["tests:\n  - { name: a, command: x, timeout: 5 }\n", /unknown key "timeout"/],
    // Over 24 h is a mistake, and a huge value would overflow setTimeout and time out at once.
    [
      "tests:\n  - { name: a, command: x, timeoutSec: 86401 }\n",
      /^p\.yaml: tests\[0\]\.timeoutSec: expected at most 86400, got 86401$/,
    ],
    [
      "tests:\n  - { name: a, command: x }\n  - { name: b, command: x, timeoutSec: 1e21 }\n",
      /^p\.yaml: tests\[1\]\.timeoutSec: expected at most 86400, got 1e\+21$/,
    ],
    [
      "builders:\n  - { name: b, machine: m, command: x, timeoutSec: 9999999999 }\ntests:\n  - { name: t, command: x }\n",
      /^p\.yaml: builders\[0\]\.timeoutSec: expected at most 86400, got 9999999999$/,
    ],
    [
      "tests:\n  - { name: a, command: x, timeoutSec: 0 }\n",
      /tests\[0\]\.timeoutSec: expected at least 1, got 0/,
    ],
    [
      "builders:\n  - { name: b, machine: m, command: x, environmentExitCodes: [0] }\ntests:\n  - { name: t, command: x }\n",
      /^p\.yaml: builders\[0\]\.environmentExitCodes\[0\]: expected at least 1, got 0$/,
    ],
  ])("rejects %j with one line naming the field", (body, message) => {
    expect(() => parsePlan(`${base}${body}`, "p.yaml", "/plans")).toThrow(message);
  });

  it("loads the built-in example plan and says how to find others", async () => {
    const plan = await loadPlan("example");
    expect(plan.tests.map((t) => t.name)).toEqual([
      "kmod_build",
      "kmod_open",
      "bpf_build",
      "bpf_open",
      "modern_bpf_open",
    ]);
    await expect(loadPlan("nope")).rejects.toThrow(/no built-in plan "nope"/);
  });
});

describe("parseSource", () => {
  it("tells git sources from directories", () => {
    expect(parseSource("https://github.com/falcosecurity/libs.git@0.23.2", "/x")).toEqual({
      kind: "git",
      url: "https://github.com/falcosecurity/libs.git",
      ref: "0.23.2",
    });
    expect(parseSource("git@github.com:o/r.git@main", "/x")).toEqual({
      kind: "git",
      url: "git@github.com:o/r.git",
      ref: "main",
    });
    expect(parseSource("libs", "/x")).toEqual({ kind: "dir", path: "/x/libs" });
  });
});

describe("verdict rules", () => {
  it("reads kernel versions from Debian releases", () => {
    expect(kernelVersion("6.1.0-56-cloud-amd64")).toBe("6.1.0");
    expect(kernelVersion("7.2.13+deb14-cloud-arm64")).toBe("7.2.13");
  });

  it("skips below the minimum kernel of the architecture only", () => {
    const t = test({ minKernel: { aarch64: "5.11" } });
    expect(staticSkip(t, "aarch64", "5.10.0-46-cloud-arm64")).toBe(
      "kernel 5.10.0 is older than 5.11, the minimum for t on aarch64",
    );
    expect(staticSkip(t, "x86_64", "5.10.0-46-cloud-amd64")).toBeUndefined();
    expect(staticSkip(t, "aarch64", "6.1.0-56-cloud-arm64")).toBeUndefined();
  });

  it("maps exit codes, unsupported codes and timeouts", () => {
    const t = test({ unsupportedExitCodes: [95], timeoutSec: 30 });
    expect(commandOutcome(t, result(0))).toEqual({ verdict: "pass" });
    expect(commandOutcome(t, result(95, { stderr: "x\nno ring buffer\n" }))).toEqual({
      verdict: "skip",
      reason: "not supported here (exit 95): no ring buffer",
    });
    expect(commandOutcome(t, result(1))).toEqual({ verdict: "fail", reason: "exit code 1" });
    expect(commandOutcome(t, result(undefined, { timedOut: true }))).toEqual({
      verdict: "fail",
      reason: "timed out after 30 s",
    });
    // A crash is the code's fault; a missing exit status is the harness's.
    expect(commandOutcome(t, result(undefined, { signal: "SEGV" }))).toEqual({
      verdict: "fail",
      reason: "killed by signal SEGV",
    });
    expect(commandOutcome(t, result(undefined)).verdict).toBe("error");
  });

  it("says which prerequisite stopped a test, and how", () => {
    const t = test({ needs: ["a", "b"] });
    expect(
      prerequisiteOutcome(
        t,
        new Map([
          ["a", { verdict: "pass" }],
          ["b", { verdict: "pass" }],
        ]),
      ),
    ).toBeUndefined();
    expect(prerequisiteOutcome(t, new Map([["a", { verdict: "skip", reason: "old kernel" }]]))).toEqual({
      verdict: "skip",
      reason: "needs a, which was skipped: old kernel",
    });
    expect(
      prerequisiteOutcome(
        t,
        new Map([
          ["a", { verdict: "pass" }],
          ["b", { verdict: "fail" }],
        ]),
      ),
    ).toEqual({
      verdict: "fail",
      reason: "needs b, which failed",
    });
    expect(prerequisiteOutcome(t, new Map([["a", { verdict: "error", reason: "ssh" }]]))?.verdict).toBe(
      "error",
    );
  });
});
