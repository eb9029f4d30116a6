import type { Arch } from "../config/types.js";

export type X86Machine = "q35" | "microvm";

export interface QemuLaunch {
  arch: Arch;
  accel: "kvm" | "tcg";
  cpus: number;
  memoryMiB: number;
  kernel: string;
  initrd: string;
  /** The per-run copy-on-write disk. */
  disk: string;
  sshPort: number;
  pidFile: string;
  /** x86_64 only; see docs/architecture.md for the measurement behind the default. */
  x86Machine?: X86Machine;
  kernelArgs?: string[];
  /** Let the guest reach the internet through slirp's NAT (off: it reaches nothing). */
  internet?: boolean;
}

export function qemuBinary(arch: Arch): string {
  return arch === "x86_64" ? "qemu-system-x86_64" : "qemu-system-aarch64";
}

export const DEFAULT_X86_MACHINE: X86Machine = "q35";

type BootBase = Pick<
  QemuLaunch,
  "arch" | "accel" | "cpus" | "memoryMiB" | "kernel" | "initrd" | "x86Machine" | "kernelArgs"
>;

/** Machine, CPU, console and kernel: what every boot of a kernel shares, full machine or bare. */
function bootArgs(l: BootBase): { args: string[]; bus: "device" | "pci" } {
  const x86Machine = l.x86Machine ?? DEFAULT_X86_MACHINE;
  // microvm has no PCI: its virtio devices sit on MMIO transports announced through ACPI.
  const bus = l.arch === "x86_64" && x86Machine === "microvm" ? "device" : "pci";
  const machine =
    l.arch === "aarch64"
      ? ["-M", "virt"]
      : x86Machine === "microvm"
        ? // The Debian kernels calibrate their clock against the PIT; without it boot stalls.
          ["-M", "microvm,pit=on,pic=on,rtc=on"]
        : ["-M", "q35"];
  // Under TCG, `-cpu max` on arm64 enables pointer authentication, which is slow to emulate;
  // neoverse-n1 (ARMv8.2, the Graviton2 core) boots five times faster.
  const cpu = l.accel === "kvm" ? "host" : l.arch === "aarch64" ? "neoverse-n1" : "max";
  const console = l.arch === "aarch64" ? "ttyAMA0" : "ttyS0";
  // quiet, but warnings still reach the console (loglevel=5: WARN() and worse), where the kernel-log
  // windows of vm/kernel-log.ts read them; the step markers written to /dev/kmsg must not be
  // rate-limited (printk.devkmsg=on).
  const cmdline = [
    `console=${console}`,
    "panic=-1",
    "quiet",
    "loglevel=5",
    "printk.devkmsg=on",
    "random.trust_cpu=on",
    ...(l.kernelArgs ?? []),
  ];
  const args = [
    ...machine,
    "-accel",
    l.accel,
    "-cpu",
    cpu,
    "-smp",
    String(l.cpus),
    "-m",
    String(l.memoryMiB),
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    // A panic reboots (panic=-1); -no-reboot turns that into QEMU exiting.
    "-no-reboot",
    "-serial",
    "stdio",
    "-kernel",
    l.kernel,
    "-initrd",
    l.initrd,
    "-append",
    cmdline.join(" "),
  ];
  return { args, bus };
}

/** A kernel and an initrd, nothing else: the bare boot of the accelerator probe and the benchmarks. */
export function bareBootArgs(l: BootBase): string[] {
  return bootArgs(l).args;
}

/** The QEMU command line for one machine. Pure, so the exact flags are unit-tested. */
export function qemuArgs(l: QemuLaunch): string[] {
  const { args, bus } = bootArgs(l);
  return [
    ...args,
    "-drive",
    `file=${l.disk.replaceAll(",", ",,")},if=none,id=root,format=qcow2,cache=unsafe`,
    "-device",
    `virtio-blk-${bus},drive=root`,
    // restrict=on: the guest reaches nothing on the host or beyond; the forward still works.
    // Either way the forward listens on 127.0.0.1 only.
    "-netdev",
    `user,id=net0,restrict=${l.internet ? "off" : "on"},hostfwd=tcp:127.0.0.1:${l.sshPort}-:22`,
    "-device",
    `virtio-net-${bus},netdev=net0`,
    "-device",
    `virtio-rng-${bus}`,
    "-pidfile",
    l.pidFile,
  ];
}
