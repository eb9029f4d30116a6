import semver from "semver";
import type { Arch } from "../config/types.js";
import { scapOpenShortfall } from "./scap-open.js";
import type { TestSpec } from "./schema.js";

/** `6.1.0-56-cloud-amd64` → `6.1.0`; `7.2.13+deb14-cloud-arm64` → `7.2.13`. */
export function kernelVersion(release: string): string {
  const v = semver.coerce(release);
  if (!v) throw new Error(`cannot read a kernel version from "${release}"`);
  return v.version;
}

/** The reason a test does not apply to this kernel at all, decided before anything runs. */
export function staticSkip(test: TestSpec, arch: Arch, kernelRelease: string): string | undefined {
  const min = test.minKernel[arch];
  if (!min) return undefined;
  const have = kernelVersion(kernelRelease);
  const need = semver.coerce(min)?.version ?? min;
  return semver.lt(have, need)
    ? `kernel ${have} is older than ${min}, the minimum for ${test.name} on ${arch}`
    : undefined;
}

/**
 * Everything decided before a test runs on a machine: skipped because the sources lack the driver
 * (`sourceSkips`, the same on every machine) or because the kernel is too old for it.
 */
export function plannedSkip(
  test: TestSpec,
  arch: Arch,
  kernelRelease: string,
  sourceSkips: ReadonlyMap<string, string>,
): string | undefined {
  return sourceSkips.get(test.name) ?? staticSkip(test, arch, kernelRelease);
}

export type Outcome = { verdict: "pass" | "skip" | "fail" | "error"; reason?: string };

/**
 * The verdict of a test whose prerequisites did not pass: skipped if one was skipped, failed (as a
 * dependency failure, not a driver failure of this test) if one failed, error if one could not run.
 */
export function prerequisiteOutcome(test: TestSpec, done: Map<string, Outcome>): Outcome | undefined {
  for (const need of test.needs) {
    const prior = done.get(need);
    if (!prior || prior.verdict === "pass") continue;
    if (prior.verdict === "skip")
      return { verdict: "skip", reason: `needs ${need}, which was skipped: ${prior.reason ?? ""}`.trim() };
    if (prior.verdict === "fail") return { verdict: "fail", reason: `needs ${need}, which failed` };
    return { verdict: "error", reason: `needs ${need}, which could not run: ${prior.reason ?? ""}`.trim() };
  }
  return undefined;
}

/** A finished command → its verdict. Exit codes declared "unsupported" skip with the output's last line. */
export function commandOutcome(
  test: TestSpec,
  result: {
    exitCode: number | undefined;
    signal?: string;
    timedOut: boolean;
    stdout: string;
    stderr: string;
  },
): Outcome {
  if (result.timedOut) return { verdict: "fail", reason: `timed out after ${test.timeoutSec} s` };
  if (result.exitCode === undefined)
    // Killed by a signal (a crash) is the code's doing; no status at all means the channel broke.
    return result.signal
      ? { verdict: "fail", reason: `killed by signal ${result.signal}` }
      : { verdict: "error", reason: "the command ended without an exit status (the SSH channel broke)" };
  if (result.exitCode === 0) {
    const shortfall = test.check === "scap-open" ? scapOpenShortfall(result.stdout) : undefined;
    return shortfall ? { verdict: "fail", reason: shortfall } : { verdict: "pass" };
  }
  if (result.exitCode !== undefined && test.unsupportedExitCodes.includes(result.exitCode)) {
    const last = lastLine(result.stderr) || lastLine(result.stdout);
    return {
      verdict: "skip",
      reason: `not supported here (exit ${result.exitCode})${last ? `: ${last}` : ""}`,
    };
  }
  return { verdict: "fail", reason: `exit code ${result.exitCode}` };
}

function lastLine(text: string): string {
  return text.trimEnd().split("\n").at(-1)?.trim() ?? "";
}
