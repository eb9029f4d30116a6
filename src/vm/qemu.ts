import { createWriteStream, existsSync } from "node:fs";
import { mkdir, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { isAbsolute, join, relative, resolve, sep } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { execa, type ResultPromise } from "execa";
import { type ConsoleSignal, ConsoleTail, classifyConsoleLine } from "./console.js";
import { startOwned } from "./processes.js";
import {
  hostTscKhzOf,
  NETNS_WRAPPER,
  pastaArgs,
  type QemuLaunch,
  qemuArgs,
  qemuBinary,
  type X86Machine,
} from "./qemu-args.js";

export interface BootSpec {
  machineId: string;
  arch: QemuLaunch["arch"];
  accel: "kvm" | "tcg";
  cpus: number;
  memoryMiB: number;
  kernel: string;
  initrd: string;
  /** The machine's base disk; the VM writes to a copy-on-write overlay of it. */
  baseDisk: string;
  /** Scratch directory for this VM (overlay, pid file); `stop()` removes it. */
  workDir: string;
  /** Where the whole console output goes; kept by `stop()`, even inside `workDir`. */
  consoleLog: string;
  x86Machine?: X86Machine;
  virtioMmio?: boolean;
  kernelArgs?: string[];
  internet?: boolean;
}

export interface VmExit {
  code: number | undefined;
  signal: string | undefined;
  stderr: string;
}

/**
 * A started VM. The backend's whole surface: small on purpose, so that another hypervisor
 * (Firecracker) can stand behind the same interface.
 */
export interface RunningVm {
  readonly machineId: string;
  readonly sshPort: number;
  readonly consoleLog: string;
  /** Console signals (ready, panic, oops, init failure) as they happen. */
  onSignal(listener: (signal: ConsoleSignal) => void): void;
  onConsoleLine(listener: (line: string) => void): void;
  /** Settles when the VM process ends, for whatever reason. */
  readonly exited: Promise<VmExit>;
  consoleTail(lines?: number): string;
  /**
   * Kills the VM (there is nothing in it worth a clean shutdown), waits for it to be gone (or
   * finds it gone already, when it exited on its own), and deletes its scratch at once: the qcow2
   * overlay (up to the size of everything the guest wrote) and the pid file, i.e. the whole
   * `workDir`, except the console log when it lives there. Call it for every started VM, and start
   * no VM on the same `workDir` before it settles.
   */
  stop(): Promise<void>;
}

export interface VmBackend {
  readonly name: string;
  start(spec: BootSpec): Promise<RunningVm>;
}

export const qemuBackend: VmBackend = {
  name: "qemu",
  async start(spec) {
    await mkdir(spec.workDir, { recursive: true });
    const disk = join(spec.workDir, OVERLAY);
    try {
      await execa("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", spec.baseDisk, disk]);
      const sshPort = await freeLoopbackPort();
      const args = qemuArgs({
        ...spec,
        disk,
        sshPort,
        pidFile: join(spec.workDir, PID_FILE),
        hostTscKhz: await hostTscKhz(),
      });
      const vm = new QemuVm(spec, sshPort, args);
      if (spec.internet)
        await vm.connectNetwork().catch(async (err: unknown) => {
          await vm.stop();
          throw err;
        });
      return vm;
    } catch (err) {
      await removeScratch(spec);
      throw err;
    }
  },
};

let tscKhz: Promise<number | undefined> | undefined;
/** The host's TSC rate when /proc/cpuinfo tells it (qemu-args.ts: hostTscKhzOf), read once. */
function hostTscKhz(): Promise<number | undefined> {
  tscKhz ??= readFile("/proc/cpuinfo", "utf8").then(
    (text) => hostTscKhzOf(text, existsSync("/sys/devices/system/cpu/cpu0/cpufreq")),
    () => undefined,
  );
  return tscKhz;
}

const OVERLAY = "disk.qcow2";
const PID_FILE = "qemu.pid";
const PASTA_PID_FILE = "pasta.pid";
const PASTA_LOG = "pasta.log";

/**
 * Deletes a VM's scratch: its whole `workDir`, or only the overlay and the pid file when the
 * console log is inside it (`kmatrix shell` keeps its console there).
 */
export async function removeScratch(spec: Pick<BootSpec, "workDir" | "consoleLog">): Promise<void> {
  const rel = relative(resolve(spec.workDir), resolve(spec.consoleLog));
  const logInside = rel !== "" && rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
  if (logInside)
    await Promise.all(
      [OVERLAY, PID_FILE, PASTA_PID_FILE, PASTA_LOG].map((f) => rm(join(spec.workDir, f), { force: true })),
    );
  else await rm(spec.workDir, { recursive: true, force: true });
}

class QemuVm implements RunningVm {
  readonly exited: Promise<VmExit>;
  private readonly child: ResultPromise;
  private readonly tail = new ConsoleTail(200);
  private readonly signalListeners: ((s: ConsoleSignal) => void)[] = [];
  private readonly lineListeners: ((l: string) => void)[] = [];
  readonly machineId: string;
  readonly consoleLog: string;
  private readonly workDir: string;
  private removed: Promise<void> | undefined;
  /** The network of a machine with internet (see `connectNetwork`). */
  private pasta: ResultPromise | undefined;

  constructor(
    spec: BootSpec,
    readonly sshPort: number,
    args: string[],
  ) {
    this.machineId = spec.machineId;
    this.consoleLog = spec.consoleLog;
    this.workDir = spec.workDir;
    const options = {
      stdin: "ignore",
      reject: false,
      buffer: { stdout: false, stderr: true },
      encoding: "utf8",
    } as const;
    // With internet, in network namespaces of its own (qemu-args.ts: userNetdev).
    this.child = spec.internet
      ? startOwned("unshare", [...NETNS_WRAPPER, qemuBinary(spec.arch), ...args], options)
      : startOwned(qemuBinary(spec.arch), args, options);
    const log = createWriteStream(spec.consoleLog, { flags: "a" });
    this.child.stdout?.setEncoding("utf8");
    this.child.stdout?.on("data", (chunk: string) => {
      log.write(chunk);
      for (const line of this.tail.push(chunk)) {
        for (const l of this.lineListeners) l(line);
        const signal = classifyConsoleLine(line);
        if (signal) for (const l of this.signalListeners) l(signal);
      }
    });
    this.exited = this.child.then((r) => {
      log.end();
      return { code: r.exitCode, signal: r.signal, stderr: String(r.stderr ?? "") };
    });
  }

  onSignal(listener: (signal: ConsoleSignal) => void): void {
    this.signalListeners.push(listener);
  }

  onConsoleLine(listener: (line: string) => void): void {
    this.lineListeners.push(listener);
  }

  consoleTail(lines = 40): string {
    return this.tail.tail(lines);
  }

  /**
   * Connects the network namespace QEMU runs in to the host's network with pasta, once QEMU runs
   * there (unshare has exec'd it), and waits until pasta is ready (its SSH forward listens). pasta
   * dies with QEMU, and with kmatrix.
   */
  async connectNetwork(): Promise<void> {
    const pid = this.child.pid;
    if (pid === undefined) throw new Error(`${this.machineId}: QEMU did not start`);
    const qemuGone = this.exited.then((e) => `QEMU exited (${e.code ?? e.signal}): ${e.stderr.trim()}`);
    await waitFor(
      `${this.machineId}: QEMU in its network namespace`,
      () =>
        readFile(`/proc/${pid}/comm`, "utf8").then(
          (c) => c.startsWith("qemu-system"),
          () => false,
        ),
      qemuGone,
    );
    const pidFile = join(this.workDir, PASTA_PID_FILE);
    const logFile = join(this.workDir, PASTA_LOG);
    const uid = process.getuid?.() ?? 0;
    const pasta = startOwned("pasta", pastaArgs({ pid, sshPort: this.sshPort, uid, pidFile, logFile }), {
      stdin: "ignore",
      stdout: "ignore",
      reject: false,
      encoding: "utf8",
    });
    this.pasta = pasta;
    void this.exited.then(() => pasta.kill("SIGKILL"));
    const pastaGone = pasta.then(async (r) => {
      const log = await readFile(logFile, "utf8").catch(() => "");
      return `pasta exited (${r.exitCode ?? r.signal}): ${`${String(r.stderr ?? "")}\n${log}`.trim()}`;
    });
    await waitFor(
      `${this.machineId}: pasta, the network of a machine with internet`,
      () =>
        readFile(pidFile, "utf8").then(
          (t) => t.trim() !== "",
          () => false,
        ),
      Promise.race([pastaGone, qemuGone]),
    );
  }

  async stop(): Promise<void> {
    this.child.kill("SIGKILL");
    await this.exited;
    if (this.pasta) {
      this.pasta.kill("SIGKILL");
      await this.pasta;
    }
    this.removed ??= removeScratch({ workDir: this.workDir, consoleLog: this.consoleLog });
    await this.removed;
  }
}

/**
 * Polls `ready` (every 20 ms, 10 s at most) until it holds; fails at once, with the reason, when
 * `gone` settles first (the process waited for has died).
 */
async function waitFor(what: string, ready: () => Promise<boolean>, gone: Promise<string>): Promise<void> {
  let died: string | undefined;
  void gone.then((why) => {
    died = why;
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (await ready()) return;
    if (died !== undefined) throw new Error(`${what}: ${died}`);
    if (Date.now() > deadline) throw new Error(`${what}: not ready within 10 s`);
    await sleep(20);
  }
}

/** Asks the kernel for a free port on 127.0.0.1 (forwards never listen on other addresses). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        address && typeof address === "object" ? resolve(address.port) : reject(new Error("no port")),
      );
    });
  });
}
