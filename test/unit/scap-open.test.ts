import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { commandOutcome } from "../../src/plan/cells.js";
import { parseScapOpen, scapOpenShortfall } from "../../src/plan/scap-open.js";
import { TestSchema } from "../../src/plan/schema.js";

// Outputs recorded from real scap-open runs in kmatrix machines (libs version, machine in the name).
const DIR = new URL("../fixtures/scap-open/", import.meta.url).pathname;
const recorded = (name: string) => readFileSync(DIR + name, "utf8");
const passes = readdirSync(DIR).filter((f) => f.includes("-pass."));

const scapOpenTest = TestSchema.parse({
  name: "kmod_scap-open",
  command: "scap-open",
  check: "scap-open",
  unsupportedExitCodes: [95],
});
const run = (exitCode: number | undefined, stdout: string, stderr = "") =>
  commandOutcome(scapOpenTest, { exitCode, timedOut: false, stdout, stderr });

describe("scap-open's output", () => {
  it.each(passes)("%s: 50 events asked, 50 captured, a pass", (file) => {
    const out = recorded(file);
    expect(parseScapOpen(out)).toEqual({ requested: 50, captured: 50, finished: true });
    expect(run(0, out)).toEqual({ verdict: "pass" });
  });

  it("fails a run that exited 0 but was cut short before its statistics", () => {
    const out = recorded(passes[0] ?? "").split("----------------------------- STATS")[0] ?? "";
    expect(run(0, out)).toEqual({
      verdict: "fail",
      reason: "scap-open exited 0 without printing its statistics",
    });
  });

  it("fails a run that captured fewer events than it announced", () => {
    const out = recorded(passes[0] ?? "").replace(
      "(events correctly captured): 50",
      "(events correctly captured): 7",
    );
    expect(scapOpenShortfall(out)).toBe("captured 7 of the 50 events asked for");
    expect(run(0, out).verdict).toBe("fail");
  });

  it("judges the last run when a support probe (--num_events 0) ran first", () => {
    const probe = recorded(passes[0] ?? "")
      .replace("Run until '50'", "Run until '0'")
      .replace("(events correctly captured): 50", "(events correctly captured): 0");
    expect(parseScapOpen(probe + recorded(passes[0] ?? ""))).toMatchObject({ requested: 50, captured: 50 });
    expect(run(0, `${recorded(passes[0] ?? "")}${probe}`)).toEqual({
      verdict: "fail",
      reason: "scap-open did not say how many events it was asked for",
    });
  });

  it("skips on exit 95 (the kernel cannot run the modern probe) with scap-open's last line", () => {
    expect(run(95, "", "Kernel version too old (95)\n")).toEqual({
      verdict: "skip",
      reason: "not supported here (exit 95): Kernel version too old (95)",
    });
  });

  it("fails any other exit code, whatever the output", () => {
    expect(run(1, recorded(passes[0] ?? ""))).toEqual({ verdict: "fail", reason: "exit code 1" });
    expect(run(255, "")).toEqual({ verdict: "fail", reason: "exit code 255" });
  });
});
