import type { ArchiveSettings, Machine } from "../config/types.js";
import { type ChangesOut, ContainerSession, type Snapshot } from "../guest/container.js";
import { launchMachine } from "../guest/launch.js";
import type { StepEvidence } from "../guest/session.js";
import type { ExecOptions, ExecResult } from "../guest/ssh.js";
import {
  type CrossToolchain,
  type MachineImage,
  type NoCrossToolchain,
  prepareCrossToolchain,
  prepareImage,
} from "../images/index.js";
import type { ExtractResult } from "../util/safe-extract.js";
import { decideAccel, hostArch } from "../vm/accel.js";
import { emptyWindow } from "../vm/kernel-log.js";
import { TCG_AARCH64_CPU } from "../vm/qemu-args.js";

/** Where a step's command runs: a booted machine, or a container of its image (builders only). */
export interface StepSession {
  /** Runs one plan step and gathers the evidence for its verdict; never throws. */
  runStep(command: string, opts: ExecOptions): Promise<StepEvidence>;
  /** A harness command (mkdir, find): throws when the machine is gone. */
  run(command: string, opts?: ExecOptions): Promise<ExecResult>;
  copyIn(localPath: string, remoteDir: string, name?: string, files?: string[]): Promise<void>;
  /** Through util/safe-extract.ts: what the guest left that was not copied is in `refused`. */
  copyOut(remotePath: string, localDir: string): Promise<ExtractResult>;
  /** Stops the machine and deletes its scratch files (overlay disk); the console log stays. */
  stop(): Promise<void>;
}

/** A sandbox of a machine's root disk (guest/container.ts): builders, and compile steps of tests. */
export interface SandboxSession extends StepSession {
  snapshot(remoteDir: string): Promise<Snapshot>;
  /** What commands wrote under `remoteDir` since `since`, copied out safely into `localDir`. */
  copyChangesOut(remoteDir: string, since: Snapshot, localDir: string): Promise<ChangesOut>;
}

/** A booted machine. */
export interface BootedMachine extends StepSession {
  readonly usableMs: number;
  /** Kernel trouble (panic, oops, hang) printed outside any step since the last call. */
  troubleBetweenSteps(): string[];
}

export interface BootRequest {
  role: "builder" | "test";
  /** This process's scratch directory and this VM's name in it. */
  runDir: string;
  workName?: string;
  consoleLog: string;
  /** Called once the accelerator is chosen, just before the VM starts. */
  onBooting: (accel: string) => void;
}

/**
 * Everything the engine needs from images and hypervisors, in one seam: the real one below, and a
 * scripted fake in the unit tests of the verdict logic (test/unit/fake-machines.ts), which never
 * produces a verdict a user sees.
 */
export interface MachineProvider {
  image(machine: Machine, log: (line: string) => void): Promise<MachineImage>;
  boot(
    machine: Machine,
    image: MachineImage,
    req: BootRequest,
  ): Promise<{ session: BootedMachine; accel: string }>;
  /**
   * A sandbox of the machine's image, for builders and compile steps that do not need its kernel;
   * with `toolchain`, the host's cross compilers stand in for the machine's (images/cross).
   */
  container(
    machine: Machine,
    image: MachineImage,
    workDir: string,
    toolchain?: CrossToolchain,
  ): Promise<SandboxSession>;
  /** The host's cross compilers for a machine of the other architecture, or why there are none. */
  crossToolchain(
    machine: Machine,
    image: MachineImage,
    log: (line: string) => void,
  ): Promise<CrossToolchain | NoCrossToolchain>;
  /** Whether KVM really runs this machine (builders then boot a VM: as fast as a container). */
  hasKvm(machine: Machine, image: MachineImage): Promise<boolean>;
}

/** Images from the cache (built when missing), QEMU machines, containers of the root disk. */
export function realMachines(archive: ArchiveSettings): MachineProvider {
  return {
    image: (machine, log) => prepareImage(machine, { archive, log }),
    async boot(machine, image, req) {
      const launched = await launchMachine(machine, {
        archive,
        image,
        runDir: req.runDir,
        workName: req.workName,
        consoleLog: req.consoleLog,
        onImage: (_image, accel) => req.onBooting(accel.accel),
      });
      return { session: launched.session, accel: launched.accel.accel };
    },
    async container(machine, image, workDir, toolchain) {
      const session = await ContainerSession.start({
        disk: image.disk,
        workDir,
        internet: machine.vm.internet,
        toolchain,
        // qemu-user's default CPU emulates pointer authentication slowly (sid's gcc: 2.5x slower
        // than on the CPU the machine's VM gets).
        ...(machine.arch !== hostArch() && machine.arch === "aarch64" && { qemuCpu: TCG_AARCH64_CPU }),
      });
      return withoutKernel(session);
    },
    crossToolchain(machine, image, log) {
      const host = hostArch();
      if (!host) return Promise.resolve({ unusable: `no cross toolchain for a ${process.arch} host` });
      return prepareCrossToolchain(machine, image.disk, { archive, hostArch: host, log });
    },
    async hasKvm(machine, image) {
      const accel = await decideAccel(machine.vm.accel, machine.arch, {
        kernel: image.vmlinuz,
        bareInitrd: image.bareInitrd,
      });
      return accel.accel === "kvm";
    },
  };
}

/** A container has no kernel of its own: its steps' evidence is the command's result alone. */
function withoutKernel(session: ContainerSession): SandboxSession {
  const empty = emptyWindow(true);
  return {
    async runStep(command, opts) {
      try {
        return { result: await session.run(command, opts), kernel: empty };
      } catch (err) {
        return { error: (err as Error)?.message?.split("\n")[0] ?? String(err), kernel: empty };
      }
    },
    run: (command, opts) => session.run(command, opts),
    copyIn: (...args) => session.copyIn(...args),
    copyOut: (...args) => session.copyOut(...args),
    snapshot: (...args) => session.snapshot(...args),
    copyChangesOut: (...args) => session.copyChangesOut(...args),
    stop: () => session.stop(),
  };
}
