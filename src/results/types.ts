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
 * fail  — the code under test is at fault (build error, non-zero exit, a panic/oops the test caused).
 * error — the harness or the machine is at fault (image build, boot, ssh, timeout of the harness, a
 *         builder that failed, the machine died in an earlier test); `reason` says which.
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
  /** New kernel warnings (dmesg, level warn and worse) that appeared while the test ran. */
  dmesg?: string[];
  /** Console excerpt when the kernel panicked or oopsed. */
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
  artifacts: string[];
  outputTail?: string;
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
    /** The sources the plan ran against and, when git could tell, their versions. */
    sources?: { name: string; dir: string; revision?: string }[];
  };
  machines: MachineSummary[];
  builders: BuilderRecord[];
  /** The report of a previous run this one is compared with (report --baseline). */
  baseline?: string;
}
