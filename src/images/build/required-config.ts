/**
 * What every kernel kmatrix builds must have, whatever the user's config and fragments: enough to
 * boot a kmatrix machine (initrd, virtio disk and network, ext4, serial console, the mounts of
 * stage 1 and 2, sshd) and to run driver tests (modules, tracepoints, kprobes, BPF with BTF for
 * CO-RE, perf events and the ring buffer). Built in (`y`): the machine boots before any module loads.
 */
import type { Arch } from "../../config/types.js";
import { type Kconfig, parseKconfig } from "./kconfig.js";

const COMMON = `
CONFIG_MODULES=y
CONFIG_MODULE_UNLOAD=y
CONFIG_SMP=y
CONFIG_PRINTK=y
CONFIG_BUG=y
CONFIG_TTY=y
CONFIG_UNIX98_PTYS=y
CONFIG_MAGIC_SYSRQ=y
CONFIG_BLK_DEV_INITRD=y
CONFIG_RD_GZIP=y
CONFIG_BINFMT_ELF=y
CONFIG_BINFMT_SCRIPT=y
CONFIG_MULTIUSER=y
CONFIG_FUTEX=y
CONFIG_EPOLL=y
CONFIG_SIGNALFD=y
CONFIG_TIMERFD=y
CONFIG_EVENTFD=y
CONFIG_SHMEM=y
CONFIG_FILE_LOCKING=y
CONFIG_POSIX_TIMERS=y
CONFIG_SECCOMP=y
CONFIG_PROC_FS=y
CONFIG_SYSFS=y
CONFIG_TMPFS=y
CONFIG_DEVTMPFS=y
CONFIG_CGROUPS=y
CONFIG_DEBUG_FS=y
CONFIG_BLOCK=y
CONFIG_EXT4_FS=y
CONFIG_PCI=y
CONFIG_PCI_MSI=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_BLK=y
CONFIG_VIRTIO_NET=y
CONFIG_VIRTIO_CONSOLE=y
CONFIG_HW_RANDOM_VIRTIO=y
CONFIG_NET=y
CONFIG_INET=y
CONFIG_UNIX=y
CONFIG_PERF_EVENTS=y
CONFIG_BPF=y
CONFIG_BPF_SYSCALL=y
CONFIG_BPF_JIT=y
CONFIG_BPF_EVENTS=y
CONFIG_KPROBES=y
CONFIG_KPROBE_EVENTS=y
CONFIG_FTRACE=y
CONFIG_FTRACE_SYSCALLS=y
CONFIG_TRACEPOINTS=y
CONFIG_DEBUG_INFO=y
CONFIG_DEBUG_INFO_BTF=y
# CONFIG_DEBUG_INFO_REDUCED is not set
# CONFIG_DEBUG_INFO_SPLIT is not set
`;

/**
 * The serial console each machine type's QEMU gives (q35: 8250 UART; arm64 virt: PL011); virt's
 * PCI host bridge; and virt's clock (PL031): without an RTC an arm64 guest starts in 1970, and make
 * in the guest warns of clock skew against the build tree (x86 reads the CMOS clock without one).
 */
const PER_ARCH: Record<Arch, string> = {
  x86_64: `
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_ACPI=y
`,
  aarch64: `
CONFIG_SERIAL_AMBA_PL011=y
CONFIG_SERIAL_AMBA_PL011_CONSOLE=y
CONFIG_PCI_HOST_GENERIC=y
CONFIG_RTC_CLASS=y
CONFIG_RTC_HCTOSYS=y
CONFIG_RTC_DRV_PL031=y
`,
};

/**
 * Set before the fragments and not checked afterwards: menus that only make the required items
 * visible (newer kernels hide virtio and network drivers behind them; older ones lack the symbols),
 * and a DWARF version for BTF (a choice: a fragment picking DWARF 5 overrides it).
 */
const ENABLERS = `
CONFIG_VIRTIO_MENU=y
CONFIG_NETDEVICES=y
CONFIG_NET_CORE=y
CONFIG_HW_RANDOM=y
CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=y
`;

/** The required items of `arch`: they win over fragments and must survive olddefconfig. */
export function requiredConfig(arch: Arch): Kconfig {
  return parseKconfig(COMMON + PER_ARCH[arch], "kmatrix's required kernel config");
}

/** Menus and choices set under the fragments so that the required items can be set at all. */
export function enablerConfig(): Kconfig {
  return parseKconfig(ENABLERS, "kmatrix's kernel config enablers");
}
