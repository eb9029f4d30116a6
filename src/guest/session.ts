import type { Arch } from "../config/types.js";
import type { MachineImage } from "../images/index.js";
import type { ExtractResult } from "../util/safe-extract.js";
import type { ConsoleSignal } from "../vm/console.js";
import { KernelLog, type KernelWindow, stepBegins, stepEnds } from "../vm/kernel-log.js";
import { type BootSpec, qemuBackend, type RunningVm, type VmBackend } from "../vm/qemu.js";
import { GUEST_NAMESERVER, type X86Machine } from "../vm/qemu-args.js";
import { type ExecOptions, type ExecResult, GuestChannel } from "./ssh.js";

/** Why a machine never became usable. Always the harness's problem, never the driver's. */
export class BootError extends Error {
  override name = "BootError";
  constructor(
    readonly kind: "panic" | "init-failed" | "exited" | "timeout" | "ssh",
    message: string,
    readonly consoleTail: string,
  ) {
    super(message);
  }
}

/** The machine died or hurt itself while a command ran: a kernel panic, or the VM went away. */
export class GuestFault extends Error {
  override name = "GuestFault";
  constructor(
    readonly kind: "panic" | "exited",
    message: string,
    readonly consoleTail: string,
  ) {
    super(message);
  }
}

export interface SessionOptions {
  machineId: string;
  arch: Arch;
  accel: "kvm" | "tcg";
  cpus: number;
  memoryMiB: number;
  bootTimeoutSec: number;
  image: Pick<MachineImage, "vmlinuz" | "initrd" | "disk">;
  privateKey: string;
  workDir: string;
  consoleLog: string;
  x86Machine?: X86Machine;
  virtioMmio?: boolean;
  kernelArgs?: string[];
  internet?: boolean;
  backend?: VmBackend;
  onConsoleLine?: (line: string) => void;
}

export interface BootTimings {
  /** From starting QEMU to the ready marker on the console. */
  consoleReadyMs: number;
  /** From starting QEMU to a working SSH connection. */
  usableMs: number;
}

/**
 * Everything known about one step once it is over: how its command ended (or why it could not),
 * and what the kernel printed meanwhile. The verdict rules (plan/cells.ts) read nothing else.
 */
export interface StepEvidence {
  result?: ExecResult;
  /** The machine panicked or went away during the step. */
  fault?: { kind: GuestFault["kind"]; message: string; consoleTail: string };
  /** The harness could not run the command at all (e.g. no channel): one line. */
  error?: string;
  kernel: KernelWindow;
  /** The console excerpt to show with a kernel problem. */
  consoleTail?: string;
}

/** How long the step's end marker may take to reach the console (it follows the rest of the step's kernel log). */
const END_MARKER_WAIT_MS = 10_000;

/** A booted machine: its VM and the SSH channel into it. Commands lose the race to a panic. */
export class MachineSession {
  /** The console split into step windows (see vm/kernel-log.ts). */
  private readonly kernelLog = new KernelLog();
  private steps = 0;
  private fault: GuestFault | undefined;
  private stopping = false;
  private panicLine: string | undefined;
  private readonly faultWaiters: ((f: GuestFault) => void)[] = [];

  private constructor(
    readonly vm: RunningVm,
    readonly guest: GuestChannel,
    readonly timings: BootTimings,
  ) {
    vm.onConsoleLine((line) => this.kernelLog.feed(line));
    vm.onSignal((s) => {
      if (s.kind === "panic" && !this.panicLine) {
        this.panicLine = s.line;
        void this.raise();
      }
    });
    void vm.exited.then((e) => this.raise(`the VM exited (code ${e.code ?? e.signal})`));
  }

  static async boot(opts: SessionOptions): Promise<MachineSession> {
    const backend = opts.backend ?? qemuBackend;
    const spec: BootSpec = {
      machineId: opts.machineId,
      arch: opts.arch,
      accel: opts.accel,
      cpus: opts.cpus,
      memoryMiB: opts.memoryMiB,
      kernel: opts.image.vmlinuz,
      initrd: opts.image.initrd,
      baseDisk: opts.image.disk,
      workDir: opts.workDir,
      consoleLog: opts.consoleLog,
      x86Machine: opts.x86Machine,
      virtioMmio: opts.virtioMmio,
      kernelArgs: opts.kernelArgs,
      internet: opts.internet,
    };
    const started = Date.now();
    const deadline = started + opts.bootTimeoutSec * 1000;
    const vm = await backend.start(spec);
    if (opts.onConsoleLine) vm.onConsoleLine(opts.onConsoleLine);
    try {
      await waitForReady(vm, deadline);
      const consoleReadyMs = Date.now() - started;
      const guest = await connectUntil(vm, opts.privateKey, deadline);
      // pasta answers DNS with the host's resolver (vm/qemu-args.ts); without internet there is
      // nothing to resolve.
      if (opts.internet) await guest.exec(`echo nameserver ${GUEST_NAMESERVER} > /etc/resolv.conf`);
      return new MachineSession(vm, guest, { consoleReadyMs, usableMs: Date.now() - started });
    } catch (err) {
      await vm.stop();
      throw err;
    }
  }

  /** Runs a shell command; rejects with GuestFault the moment the kernel panics or the VM dies. */
  async run(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    return this.guarded(this.guest.exec(command, opts));
  }

  /** From starting QEMU to a working SSH connection. */
  get usableMs(): number {
    return this.timings.usableMs;
  }

  /**
   * Runs one step (a test's or builder's command) between two kernel-log markers and gathers the
   * evidence for its verdict. Never throws: a panic, a dead VM or a broken channel is evidence too.
   * A lockup or stall report does not end the wait: under emulation a starved vCPU can print one
   * and recover, so the command's own end (or the SSH keepalive) decides whether the kernel hung.
   */
  async runStep(command: string, opts: ExecOptions = {}): Promise<StepEvidence> {
    const id = ++this.steps;
    this.kernelLog.open(id);
    const evidence: Omit<StepEvidence, "kernel"> = {};
    try {
      evidence.result = await this.run(`${kmsg(stepBegins(id))}; ${command}`, opts);
    } catch (err) {
      if (err instanceof GuestFault)
        evidence.fault = { kind: err.kind, message: err.message, consoleTail: err.consoleTail };
      else evidence.error = (err as Error)?.message?.split("\n")[0] ?? String(err);
    }
    const answering = evidence.result && !evidence.result.channelLost && !this.fault;
    if (answering)
      await this.guest.exec(kmsg(stepEnds(id)), { timeoutMs: END_MARKER_WAIT_MS }).catch(() => undefined);
    const kernel = await this.kernelLog.close(answering ? END_MARKER_WAIT_MS : 1500);
    const troubled = !!(kernel.panic || kernel.oops.length || kernel.hung.length || evidence.fault);
    return { ...evidence, kernel, ...(troubled && { consoleTail: this.vm.consoleTail(60) }) };
  }

  /** Kernel trouble (panic, oops, hang) printed outside any step since the last call. */
  troubleBetweenSteps(): string[] {
    return this.kernelLog.takeTroubleBetweenSteps();
  }

  copyIn(localPath: string, remoteDir: string, name?: string, files?: string[]): Promise<void> {
    return this.guarded(this.guest.copyIn(localPath, remoteDir, name, files));
  }

  copyOut(remotePath: string, localDir: string): Promise<ExtractResult> {
    return this.guarded(this.guest.copyOut(remotePath, localDir));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.guest.close();
    await this.vm.stop();
  }

  /**
   * Races guest work against the machine's death. Work that ends abnormally (an error, or a
   * command that got no exit status because its channel was cut) waits a moment for a fault to
   * be declared: if the machine is dying, the fault is the story, not the broken channel.
   */
  private async guarded<T>(work: Promise<T>): Promise<T> {
    if (this.fault) throw this.fault;
    let waiter: ((f: GuestFault) => void) | undefined;
    const faulted = new Promise<{ fault: GuestFault }>((resolve) => {
      waiter = (fault) => resolve({ fault });
      this.faultWaiters.push(waiter);
    });
    try {
      const outcome = await Promise.race([
        work.then(
          (value) => ({ value }),
          (error: unknown) => ({ error }),
        ),
        faulted,
      ]);
      if ("fault" in outcome) throw outcome.fault;
      if ("error" in outcome || cutShort(outcome.value)) {
        await Promise.race([faulted, this.vm.exited.then(() => sleep(1600)), sleep(2000)]);
        if (this.fault) throw this.fault;
      }
      if ("error" in outcome) throw outcome.error;
      return outcome.value;
    } finally {
      this.faultWaiters.splice(this.faultWaiters.indexOf(waiter as (f: GuestFault) => void), 1);
    }
  }

  /** `exited` is set when the VM process is gone; a panic seen before that is still the story. */
  private async raise(exited?: string): Promise<void> {
    if (this.fault || this.stopping) return;
    // The panic line comes first; give the trace a moment to finish printing (or QEMU to exit).
    if (!exited) await Promise.race([this.vm.exited, sleep(1500)]);
    if (this.fault || this.stopping) return;
    const tail = this.vm.consoleTail(60);
    this.fault = this.panicLine
      ? new GuestFault("panic", `kernel panic: ${this.panicLine}`, tail)
      : new GuestFault("exited", exited ?? "the VM went away", tail);
    for (const w of this.faultWaiters.splice(0)) w(this.fault);
  }
}

function waitForReady(vm: RunningVm, deadline: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let panicLine: string | undefined;
    const fail = (err: BootError) => {
      clearTimeout(timer);
      reject(err);
    };
    const panicked = () =>
      fail(new BootError("panic", `kernel panic during boot: ${panicLine}`, vm.consoleTail()));
    const timer = setTimeout(
      () => fail(new BootError("timeout", "not ready within the boot timeout", vm.consoleTail())),
      Math.max(0, deadline - Date.now()),
    );
    vm.onSignal((s: ConsoleSignal) => {
      if (s.kind === "ready") {
        clearTimeout(timer);
        resolve();
      } else if (s.kind === "panic" && !panicLine) {
        panicLine = s.line;
        // Let the rest of the trace arrive (QEMU exits right after it, see panic=-1) before reporting.
        setTimeout(panicked, 1500);
      } else if (s.kind === "init-failed")
        fail(new BootError("init-failed", `guest init failed: ${s.line}`, vm.consoleTail()));
    });
    void vm.exited.then((e) => {
      if (panicLine) return panicked();
      const stderr = e.stderr.trim() ? `: ${e.stderr.trim()}` : "";
      fail(
        new BootError(
          "exited",
          `QEMU exited during boot (code ${e.code ?? e.signal})${stderr}`,
          vm.consoleTail(),
        ),
      );
    });
  });
}

/** sshd is listening when the marker appears, but the first handshake can still be refused by slirp. */
async function connectUntil(vm: RunningVm, privateKey: string, deadline: number): Promise<GuestChannel> {
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      return await GuestChannel.connect({
        port: vm.sshPort,
        privateKey,
        timeoutMs: Math.max(1000, Math.min(30_000, deadline - Date.now())),
      });
    } catch (err) {
      lastError = err;
      await sleep(200);
    }
  }
  throw new BootError(
    "ssh",
    `no SSH connection before the boot timeout: ${String(lastError)}`,
    vm.consoleTail(),
  );
}

/** A command result without an exit status that was not our timeout: its channel was cut. */
function cutShort(value: unknown): boolean {
  const r = value as Partial<ExecResult> | undefined;
  return !!r && typeof r === "object" && "timedOut" in r && r.exitCode === undefined && !r.timedOut;
}

/** A shell command that writes one line into the guest's kernel log, at warning level so the console shows it. */
const kmsg = (text: string) => `printf '<4>%s\\n' '${text}' 2>/dev/null >/dev/kmsg`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
