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
  /**
   * The kernel is made for Firecracker's virtio-mmio devices (Falco's): aarch64's virt gets its
   * disk, network and rng as virtio-mmio devices, not PCI ones (x86_64: microvm, through x86Machine).
   */
  virtioMmio?: boolean;
  kernelArgs?: string[];
  /** The host's TSC rate, for microvm under TCG (see `bootArgs`); unknown: not passed. */
  hostTscKhz?: number;
  /**
   * Let the guest reach the internet (off: it reaches nothing). On: QEMU runs in a network
   * namespace of its own that pasta connects to the host's network (see `pastaArgs`).
   */
  internet?: boolean;
}

export function qemuBinary(arch: Arch): string {
  return arch === "x86_64" ? "qemu-system-x86_64" : "qemu-system-aarch64";
}

export const DEFAULT_X86_MACHINE: X86Machine = "q35";

type BootBase = Pick<
  QemuLaunch,
  | "arch"
  | "accel"
  | "cpus"
  | "memoryMiB"
  | "kernel"
  | "initrd"
  | "x86Machine"
  | "virtioMmio"
  | "kernelArgs"
  | "hostTscKhz"
>;

/** Machine, CPU, console and kernel: what every boot of a kernel shares, full machine or bare. */
/**
 * The arm64 CPU emulated without KVM (VMs, and qemu-user in sandboxes): `max` enables pointer
 * authentication, which is slow to emulate; neoverse-n1 (ARMv8.2, the Graviton2 core) boots five
 * times faster, and sid's gcc under qemu-user compiles 2.5x faster.
 */
export const TCG_AARCH64_CPU = "neoverse-n1";

function bootArgs(l: BootBase): { args: string[]; bus: "device" | "pci" } {
  const x86Machine = l.x86Machine ?? DEFAULT_X86_MACHINE;
  // microvm has no PCI: its virtio devices sit on MMIO transports announced through ACPI.
  const bus =
    (l.arch === "x86_64" && x86Machine === "microvm") || (l.arch === "aarch64" && l.virtioMmio)
      ? "device"
      : "pci";
  const machine =
    l.arch === "aarch64"
      ? ["-M", "virt"]
      : x86Machine === "microvm"
        ? // The Debian kernels calibrate their clock against the PIT; without it boot stalls.
          ["-M", "microvm,pit=on,pic=on,rtc=on"]
        : ["-M", "q35"];
  const cpu = l.accel === "kvm" ? "host" : l.arch === "aarch64" ? TCG_AARCH64_CPU : "max";
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
    // microvm has no HPET and no ACPI PM timer: the kernel measures the TSC against the PIT alone,
    // which fails when the host is busy (an emulated PIT tick arrives late), and the boot then
    // stalls. Under TCG the guest's TSC is the host's, so its rate is known: no calibration
    // (Linux >= 5.x; older kernels ignore the argument).
    ...(l.arch === "x86_64" && x86Machine === "microvm" && l.accel === "tcg" && l.hostTscKhz
      ? [`tsc_early_khz=${l.hostTscKhz}`]
      : []),
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
    "-netdev",
    userNetdev(l),
    "-device",
    `virtio-net-${bus},netdev=net0`,
    "-device",
    `virtio-rng-${bus}`,
    "-pidfile",
    l.pidFile,
  ];
}

/**
 * slirp, QEMU's user-mode network. Without internet, `restrict=on`: slirp drops every connection
 * the guest opens (TCP, UDP but DHCP, ICMP), so the guest reaches nothing on the host or beyond,
 * and the forward to its SSH server, listening on the host's 127.0.0.1 only, still works.
 * With internet, `restrict=off` would let the guest reach the host's loopback services (slirp maps
 * 10.0.2.2 to 127.0.0.1 and connects wherever the guest's packets say, 127.0.0.1 included), so
 * QEMU runs in a network namespace of its own (`NETNS_WRAPPER`): slirp's 127.0.0.1 is that
 * namespace's, where nothing but this forward listens; pasta (`pastaArgs`) forwards the host's
 * 127.0.0.1:<sshPort> to it and is the namespace's only way out.
 */
function userNetdev(l: Pick<QemuLaunch, "internet" | "sshPort">): string {
  // In the namespace the forward listens on every address of the namespace: QEMU binds it before
  // pasta brings the namespace's loopback up, and nothing but pasta's forward can reach it there.
  return l.internet
    ? `user,id=net0,restrict=off,hostfwd=tcp::${l.sshPort}-:22`
    : `user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:${l.sshPort}-:22`;
}

/**
 * `unshare` arguments that run QEMU (the program after them) in new user and network namespaces,
 * as root there (mapped to the invoking user): no privilege needed, and the host's loopback
 * interface is out of its sight. Only for machines with internet.
 */
export const NETNS_WRAPPER: readonly string[] = ["--user", "--map-root-user", "--net", "--"];

/**
 * The address the guest sends DNS queries to when it has internet: pasta answers them with the
 * host's resolver (`--dns-forward`), loopback resolvers (systemd-resolved, Docker's) included.
 * Link-local and outside slirp's 10.0.2.0/24, so slirp sends it on to the namespace's default
 * route, i.e. to pasta.
 */
export const GUEST_NAMESERVER = "169.254.0.53";

export interface PastaLaunch {
  /** The process in the network namespace to connect (QEMU, once it runs under NETNS_WRAPPER). */
  pid: number;
  sshPort: number;
  /** Who pasta runs as: the invoking user (as root, pasta would otherwise switch to nobody). */
  uid: number;
  /** Written once pasta is ready (its forward listens). */
  pidFile: string;
  logFile: string;
}

/**
 * pasta (Debian package passt) gives QEMU's network namespace the host's network: addresses and
 * routes copied from the host (`--config-net`), connections going out through host sockets. What
 * keeps the host's loopback out of reach:
 * - `--no-map-gw`: the gateway's address is not mapped to the host's 127.0.0.1;
 * - `--tcp-ns none --udp-ns none`: no port of the host's loopback is forwarded into the namespace;
 * - the only inbound forward is the SSH port, bound to the host's 127.0.0.1;
 * - pasta (Debian 12's, 2023-03) connects to 127.0.0.1 when a packet from the namespace asks for
 *   it, but only QEMU's slirp sends packets there, from sockets of the namespace, whose kernel
 *   keeps 127.0.0.0/8 on its own loopback: the guest never writes packets onto pasta's interface.
 */
export function pastaArgs(p: PastaLaunch): string[] {
  return [
    "--runas",
    String(p.uid),
    "--foreground",
    "--quiet",
    "--log-file",
    p.logFile,
    "--pid",
    p.pidFile,
    "--config-net",
    "--no-map-gw",
    "--tcp-ports",
    `127.0.0.1/${p.sshPort}`,
    "--udp-ports",
    "none",
    "--tcp-ns",
    "none",
    "--udp-ns",
    "none",
    "--dns-forward",
    GUEST_NAMESERVER,
    String(p.pid),
  ];
}

/**
 * The host's TSC rate in kHz from /proc/cpuinfo's text, when it can be trusted to be the TSC's:
 * an x86 CPU with a constant TSC and no frequency scaling (`cpu MHz` is then the TSC's rate, as on
 * cloud VMs). Pure; the caller reads the files.
 */
export function hostTscKhzOf(cpuinfo: string, hasCpufreq: boolean): number | undefined {
  if (hasCpufreq || !/^flags\s*:.*\bconstant_tsc\b/m.test(cpuinfo)) return undefined;
  const mhz = /^cpu MHz\s*:\s*([0-9.]+)/m.exec(cpuinfo)?.[1];
  const khz = mhz ? Math.round(Number.parseFloat(mhz) * 1000) : 0;
  return khz > 100_000 ? khz : undefined;
}
