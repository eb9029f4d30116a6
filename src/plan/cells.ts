import semver from "semver";
import type { Arch } from "../config/types.js";
import type { StepEvidence } from "../guest/session.js";
import type { KernelWindow } from "../vm/kernel-log.js";
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

/** What the verdict rules read about a finished step (see guest/session.ts: StepEvidence). */
export type Evidence = Pick<StepEvidence, "result" | "fault" | "error"> & {
  kernel: Pick<KernelWindow, "panic" | "oops" | "hung" | "oom" | "warnings">;
};

export interface Judgement {
  outcome: Outcome;
  /**
   * Set when the machine can no longer be trusted after this step (panic, oops, hang, timeout, lost
   * channel): the machine's later tests run on a freshly booted one. Says why.
   */
  inDoubt?: string;
  /** WARN() lines of the step: the test still passes, and the record says "kernel warning". */
  warnings?: string[];
  /** Processes the command left behind (killed when it ended). */
  leftover?: string[];
  /** The failure is a hang (a stall report with the command unfinished, or no keepalive reply). */
  hung?: boolean;
}

/**
 * The verdict of a test step, from its evidence alone. The command's own outcome is decided here,
 * before anything else runs on the machine. Kernel trouble in the step's window comes first: the
 * test caused it, whatever its exit code says.
 */
export function judgeTest(test: TestSpec, ev: Evidence): Judgement {
  const k = ev.kernel;
  const leftover = ev.result?.leftover?.length ? { leftover: ev.result.leftover } : {};
  const fail = (reason: string, inDoubt: string): Judgement => ({
    outcome: { verdict: "fail", reason },
    inDoubt,
    ...leftover,
  });
  if (ev.fault?.kind === "panic" || k.panic)
    return fail(
      ev.fault?.kind === "panic" ? ev.fault.message : `kernel panic: ${k.panic}`,
      "the kernel panicked",
    );
  // A lockup or stall report fails the test when its command never finished; one that finished
  // is judged on its own (see below), since an emulated vCPU starved by the host can print one.
  const unfinished = !ev.result || ev.result.timedOut || ev.result.exitCode === undefined;
  if (k.hung.length && unfinished)
    return { ...fail(`kernel hung: ${k.hung[0]}`, "the kernel hung"), hung: true };
  if (ev.result?.channelLost === "keepalive")
    return {
      ...fail("kernel hung: the machine stopped answering (no SSH keepalive reply)", "the kernel hung"),
      hung: true,
    };
  if (k.oops.length) return fail(`kernel oops: ${k.oops[0]}`, "the kernel oopsed");
  if (ev.fault)
    return { outcome: { verdict: "error", reason: ev.fault.message }, inDoubt: "the machine went away" };
  if (ev.error || !ev.result)
    return {
      outcome: { verdict: "error", reason: `could not run the command: ${ev.error ?? "no result"}` },
      inDoubt: "the harness lost the machine",
    };
  const outcome = commandOutcome(test, ev.result);
  const lost = ev.result.exitCode === undefined && !ev.result.signal && !ev.result.timedOut;
  const inDoubt = ev.result.timedOut
    ? "a command timed out"
    : lost
      ? "the SSH channel broke"
      : k.hung.length
        ? `the kernel reported a stall: ${k.hung[0]}`
        : undefined;
  if (outcome.verdict === "pass" && k.hung.length)
    return {
      outcome: { verdict: "pass", reason: `kernel stall reported: ${k.hung[0]}` },
      inDoubt,
      ...leftover,
    };
  const warnings = k.warnings.length ? { warnings: k.warnings } : {};
  if (outcome.verdict === "pass" && k.warnings.length)
    return {
      outcome: { verdict: "pass", reason: `kernel warning: ${k.warnings[0]}` },
      ...warnings,
      ...leftover,
    };
  return { outcome, ...(inDoubt && { inDoubt }), ...warnings, ...leftover };
}

export type BuilderJudgement =
  | { ok: true; warnings?: string[] }
  | { ok: false; fault: "code" | "harness"; reason: string };

/**
 * A builder's verdict: only its command's own non-zero exit is the code's fault. Everything else
 * (no exit status, a timeout, the builder machine panicking, hanging or running out of memory, an
 * exit code the plan declares as "environment") is the harness's, and never a driver failure.
 */
export function judgeBuilder(
  b: { timeoutSec: number; environmentExitCodes?: number[] },
  ev: Evidence,
): BuilderJudgement {
  const k = ev.kernel;
  const harness = (reason: string) => ({ ok: false as const, fault: "harness" as const, reason });
  if (ev.fault?.kind === "panic" || k.panic)
    return harness(`the builder machine's kernel panicked: ${k.panic ?? ev.fault?.message}`);
  if (ev.fault) return harness(`the builder machine went away: ${ev.fault.message}`);
  const unfinished = !ev.result || ev.result.timedOut || ev.result.exitCode === undefined;
  if ((k.hung.length && unfinished) || ev.result?.channelLost === "keepalive")
    return harness(`the builder machine stopped answering${k.hung[0] ? `: ${k.hung[0]}` : ""}`);
  if (k.oom.length) return harness(`the builder machine ran out of memory: ${k.oom[0]}`);
  if (ev.error || !ev.result) return harness(`could not run the builder: ${ev.error ?? "no result"}`);
  const r = ev.result;
  if (r.timedOut) return harness(`timed out after ${b.timeoutSec} s`);
  if (r.exitCode === undefined)
    return harness(
      r.signal
        ? `killed by signal ${r.signal}`
        : "the command ended without an exit status (the SSH channel broke)",
    );
  if (r.exitCode === 0) return k.warnings.length ? { ok: true, warnings: k.warnings } : { ok: true };
  if (b.environmentExitCodes?.includes(r.exitCode)) {
    const last = lastLine(r.stderr) || lastLine(r.stdout);
    return harness(`the builder's environment is not usable (exit ${r.exitCode})${last ? `: ${last}` : ""}`);
  }
  return { ok: false, fault: "code", reason: `exit code ${r.exitCode}` };
}
