import { access, constants, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import type { Accel, Arch } from "../config/types.js";
import { cacheRoot } from "../images/cache.js";
import { BARE_MARKER } from "../images/guest-init.js";
import { findProgram } from "../util/find-program.js";
import { startOwned } from "./processes.js";
import { bareBootArgs, qemuBinary, type X86Machine } from "./qemu-args.js";

export interface AccelDecision {
  accel: "kvm" | "tcg";
  reason: string;
}

/** A kernel and its bare initrd: what the decisive probe boots. */
export interface ProbeKernel {
  kernel: string;
  bareInitrd: string;
}

export function hostArch(): Arch | undefined {
  return process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "aarch64" : undefined;
}

/**
 * Firmware of a few bytes that powers the machine off at once: the quick first probe. It is not
 * enough on its own: on nested hosts /dev/kvm exists and real-mode firmware runs, yet a Linux kernel
 * never gets far. So the decisive probe boots a real kernel to init under a deadline.
 */
const PROBE_FIRMWARE: Record<Arch, { bytes: Buffer; args: string[]; exitCode: number }> = {
  // Real mode at the reset vector (last 16 bytes of a 64 KiB BIOS): out 0xf4 → isa-debug-exit.
  x86_64: {
    bytes: (() => {
      const bios = Buffer.alloc(64 * 1024, 0xf4); // hlt everywhere
      Buffer.from([0xba, 0xf4, 0x00, 0xb0, 0x00, 0xee, 0xf4, 0xeb, 0xfd]).copy(bios, 0xfff0);
      return bios;
    })(),
    args: ["-M", "pc", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"],
    exitCode: 1, // isa-debug-exit reports (value << 1) | 1
  },
  // movz/movk w0 = PSCI SYSTEM_OFF (0x84000008); hvc #0; b .
  aarch64: {
    bytes: (() => {
      const words = [0x52800100, 0x72b08000, 0xd4000002, 0x14000000];
      const fw = Buffer.alloc(words.length * 4);
      words.forEach((w, i) => {
        fw.writeUInt32LE(w, i * 4);
      });
      return fw;
    })(),
    args: ["-M", "virt"],
    exitCode: 0,
  },
};

const FIRMWARE_DEADLINE_MS = 5000;
/** A working KVM reaches init in well under a second; this leaves room for a loaded host. */
const KERNEL_DEADLINE_MS = 10_000;

const decisions = new Map<string, Promise<AccelDecision>>();

/**
 * Decides the accelerator for `arch`. The probe's verdict is kept on disk until the host reboots
 * (keyed by its boot id and the QEMU binary), so only the first kmatrix after a boot pays for it.
 */
export function decideAccel(requested: Accel, arch: Arch, probeKernel?: ProbeKernel): Promise<AccelDecision> {
  const cacheKey = `${requested}/${arch}/${probeKernel ? "kernel" : "fw"}`;
  let decision = decisions.get(cacheKey);
  if (!decision) {
    decision = decide(requested, arch, probeKernel);
    decisions.set(cacheKey, decision);
  }
  return decision;
}

async function decide(requested: Accel, arch: Arch, probeKernel?: ProbeKernel): Promise<AccelDecision> {
  if (requested === "tcg") return { accel: "tcg", reason: "tcg requested" };
  const probe = await probeKvm(arch, probeKernel);
  if (probe.ok) return { accel: "kvm", reason: probe.reason };
  if (requested === "kvm") throw new Error(`accel kvm requested for ${arch}, but ${probe.reason}`);
  return { accel: "tcg", reason: `${probe.reason}; using TCG` };
}

interface ProbeResult {
  ok: boolean;
  reason: string;
}

async function probeKvm(arch: Arch, probeKernel?: ProbeKernel): Promise<ProbeResult> {
  if (hostArch() !== arch)
    return { ok: false, reason: `KVM cannot run ${arch} guests on a ${process.arch} host` };
  try {
    await access("/dev/kvm", constants.R_OK | constants.W_OK);
  } catch {
    return { ok: false, reason: "/dev/kvm is missing or not accessible" };
  }
  const firmware = await runFirmwareProbe(arch, "kvm");
  if (!firmware.ok || !probeKernel) return firmware;
  const memo = join(cacheRoot(), "accel", `${arch}.json`);
  const stamp = await hostStamp(arch);
  const remembered = await readFile(memo, "utf8")
    .then((t) => JSON.parse(t) as ProbeResult & { stamp: string })
    .catch(() => undefined);
  if (remembered?.stamp === stamp)
    return { ok: remembered.ok, reason: `${remembered.reason} (probed earlier since boot)` };
  const result = await runKernelProbe(arch, "kvm", probeKernel);
  await mkdir(join(cacheRoot(), "accel"), { recursive: true });
  await writeFile(memo, JSON.stringify({ ...result, stamp }));
  return result;
}

async function hostStamp(arch: Arch): Promise<string> {
  const bootId = await readFile("/proc/sys/kernel/random/boot_id", "utf8").catch(() => "");
  const path = await findProgram(qemuBinary(arch));
  const qemu = path ? await stat(path).catch(() => undefined) : undefined;
  return `${bootId.trim()}/${qemu?.mtimeMs ?? 0}`;
}

/** Runs the probe firmware under `accel`; exported so tests can check the firmware itself under TCG. */
export async function runFirmwareProbe(arch: Arch, accel: "kvm" | "tcg"): Promise<ProbeResult> {
  const fw = PROBE_FIRMWARE[arch];
  const dir = await mkdtemp(join(tmpdir(), "kmatrix-probe-"));
  try {
    await writeFile(join(dir, "fw.bin"), fw.bytes);
    const cpu = accel === "kvm" ? "host" : "max";
    const started = Date.now();
    const result = await execa(
      qemuBinary(arch),
      [
        "-accel",
        accel,
        "-cpu",
        cpu,
        ...fw.args,
        "-bios",
        join(dir, "fw.bin"),
        "-display",
        "none",
        "-nodefaults",
        "-m",
        "64",
      ],
      { reject: false, timeout: FIRMWARE_DEADLINE_MS, killSignal: "SIGKILL", stdin: "ignore" },
    );
    if (result.timedOut)
      return {
        ok: false,
        reason: `${accel} firmware probe did not finish in ${FIRMWARE_DEADLINE_MS / 1000} s`,
      };
    if (result.exitCode !== fw.exitCode)
      return {
        ok: false,
        reason: `${accel} probe exited ${result.exitCode}: ${result.stderr.trim().split("\n")[0] ?? ""}`,
      };
    return { ok: true, reason: `${accel} firmware probe ran in ${Date.now() - started} ms` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Boots a real kernel to its init under a deadline. Exported for the boot benchmark and tests. */
export async function runKernelProbe(
  arch: Arch,
  accel: "kvm" | "tcg",
  k: ProbeKernel,
  opts: { deadlineMs?: number; cpus?: number; memoryMiB?: number; x86Machine?: X86Machine } = {},
): Promise<ProbeResult & { ms: number }> {
  const deadlineMs = opts.deadlineMs ?? KERNEL_DEADLINE_MS;
  const started = Date.now();
  const child = startOwned(
    qemuBinary(arch),
    bareBootArgs({
      arch,
      accel,
      cpus: opts.cpus ?? 1,
      memoryMiB: opts.memoryMiB ?? 256,
      kernel: k.kernel,
      initrd: k.bareInitrd,
      x86Machine: opts.x86Machine,
    }),
    { reject: false, timeout: deadlineMs, killSignal: "SIGKILL", stdin: "ignore" },
  );
  let initAt: number | undefined;
  let recent = ""; // the marker may arrive split across chunks
  child.stdout?.on("data", (c: Buffer) => {
    recent = (recent + c.toString()).slice(-256);
    if (initAt === undefined && recent.includes(BARE_MARKER)) initAt = Date.now() - started;
  });
  await child;
  const ms = Date.now() - started;
  if (initAt !== undefined)
    return { ok: true, reason: `a ${accel} guest kernel reached init in ${initAt} ms`, ms: initAt };
  return {
    ok: false,
    reason: `a ${accel} guest kernel did not reach init within ${deadlineMs / 1000} s`,
    ms,
  };
}
