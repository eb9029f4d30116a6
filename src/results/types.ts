/**
 * What a run leaves on disk, and what every report reads. Written as it happens by the result
 * store; never reconstructed from anything else.
 *
 *   <out>/run.json                          RunRecord (rewritten as the run progresses)
 *   <out>/cells/<machineId>/<test>.json     CellRecord, one per (machine, test) that got a verdict
 *   <out>/cells/<machineId>/<test>.log      the step's full output (stdout and stderr interleaved)
 *   <out>/builders/<arch>/<builder>.json    BuilderRecord
 *   <out>/consoles/<machineId>.log          the machine's whole serial console
 *
 * machineId is `<name>@<arch>` (names may contain dots, e.g. debian-bookworm-6.1@x86_64).
 */

export type Verdict = "pass" | "skip" | "fail" | "error";

/**
 * pass  — the test ran and succeeded.
 * skip  — not applicable here (kernel too old, driver unsupported: exit code declared "unsupported",
 *         or a prerequisite was skipped); `reason` says why.
 * fail  — the code under test is at fault (build error, non-zero exit, timeout, a panic, oops or
 *         hang of the kernel during the test, a builder whose own command failed).
 * error — the harness or the machine is at fault (image build, boot, ssh, a builder the harness could
 *         not run, a machine that could not be booted again); `reason` says which.
 * A pass may carry a reason: "kernel warning: …" when the kernel WARN()ed during the test.
 */
export interface CellRecord {
  machineId: string;
  machine: string;
  arch: "x86_64" | "aarch64";
  /** `uname -r` of the machine's kernel, when known. */
  kernelRelease?: string;
  test: string;
  verdict: Verdict;
  /** One line: the skip reason, or what failed / what went wrong. */
  reason?: string;
  command?: string;
  exitCode?: number;
  timedOut?: boolean;
  startedAt?: string;
  durationMs?: number;
  /** The last part of the step's output (the full output is in the .log next to the record). */
  outputTail?: string;
  /** The kernel's messages of level warn and worse printed during the test (its own window of the log). */
  dmesg?: string[];
  /** WARN() lines printed during the test (the test still passes). */
  kernelWarnings?: string[];
  /** Processes the command left running when it exited (they were killed). */
  leftover?: string[];
  /** Which boot of the machine ran the test: 1, or higher after an earlier test left it in doubt. */
  boot?: number;
  /**
   * Where the command ran: the booted machine, or a sandbox of its root disk (a compile step, see
   * TestSpec.compileIn). Absent in records of runs before sandboxes: the VM.
   */
  ranIn?: "vm" | "sandbox";
  /** The builder this verdict comes from, when it is a builder's failure (--resume re-runs those). */
  builder?: string;
  /** Console excerpt when the kernel panicked, oopsed or hung. */
  console?: string;
}

export interface BuilderRecord {
  builder: string;
  /** The architecture the artifacts are for. */
  arch: "x86_64" | "aarch64";
  /** `<machine>@<arch>`: the builder's machine for that architecture. */
  machineId: string;
  /** A cross builder's machine of the host's architecture, where it actually ran. */
  ranOn?: string;
  ok: boolean;
  reason?: string;
  /** Who is at fault when not ok: the code it builds ("code"), or the harness ("harness"). */
  fault?: "code" | "harness";
  durationMs?: number;
  /** Where the command ran: a booted VM, or a container of the same image (no KVM; see guest/container.ts). */
  isolation?: "vm" | "container";
  /** In a container of the other architecture: the host's cross compilers that stood in (images/cross). */
  compilers?: string;
  artifacts: string[];
  /**
   * What the builder left in $KMATRIX_OUT that was not copied to the host (util/safe-extract.ts):
   * device nodes, FIFOs, sockets, links out of its tree, paths leaving it, an output directory
   * that is a symbolic link. Not a failure by itself: the rest are the artifacts. (Setuid/setgid
   * bits and owners are dropped without a word.) Absent when nothing was refused.
   */
  refused?: { path: string; why: string }[];
  /** The digest of everything the artifacts depend on (see run/builder-cache.ts). */
  cacheKey?: string;
  /** The artifacts came from kmatrix's cache (an earlier run with the same inputs); nothing ran. */
  cached?: boolean;
  outputTail?: string;
  /** Console excerpt when the builder machine's kernel panicked, oopsed or hung. */
  console?: string;
}

export interface MachineSummary {
  machineId: string;
  machine: string;
  arch: "x86_64" | "aarch64";
  kernelRelease?: string;
  kernelVersion?: string;
  /** What the image manifests say (keys, resolved packages, build time). */
  image?: unknown;
  accel?: string;
  bootMs?: number;
  /** Set when the machine itself failed (image, boot): every cell of it is then `error`. */
  error?: string;
  /** How many times the machine was booted for its tests (more than 1 after a test left it in doubt). */
  boots?: number;
  /** Why each fresh boot was needed. */
  replaced?: { afterTest: string; reason: string }[];
  /** How its compile steps ran in a sandbox of its image, when not with the image's own compilers natively. */
  compilers?: string;
}

export interface RunRecord {
  runId: string;
  kmatrixVersion: string;
  startedAt: string;
  endedAt?: string;
  /** Set when the run was interrupted (SIGINT) before finishing. */
  interrupted?: boolean;
  host: { arch: string; cpus: number; memoryMiB: number };
  config: { origin: string };
  plan: {
    name: string;
    origin: string;
    tests: string[];
    /** The plan's variables as this run set them. */
    env?: Record<string, string>;
    /** Tests skipped on every machine because the sources lack what they test: test → reason (reports drop those columns). */
    sourceSkips?: Record<string, string>;
    /** The sources the plan ran against and, when git could tell, their versions. */
    sources?: { name: string; dir: string; revision?: string }[];
  };
  machines: MachineSummary[];
  builders: BuilderRecord[];
  /** The report of a previous run this one is compared with (report --baseline). */
  baseline?: string;
}
