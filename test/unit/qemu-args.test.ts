import { describe, expect, it } from "vitest";
import {
  GUEST_NAMESERVER,
  hostTscKhzOf,
  NETNS_WRAPPER,
  pastaArgs,
  qemuArgs,
} from "../../src/vm/qemu-args.js";

const base = {
  cpus: 2,
  memoryMiB: 2048,
  kernel: "/k/vmlinuz",
  initrd: "/k/initrd.img",
  disk: "/run/a,b/disk.qcow2",
  sshPort: 40022,
  pidFile: "/run/qemu.pid",
} as const;

const valuesOf = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

describe("qemuArgs", () => {
  it("forwards SSH on loopback only and isolates the guest", () => {
    const args = qemuArgs({ ...base, arch: "x86_64", accel: "tcg" });
    expect(valuesOf(args, "-netdev")).toEqual(["user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22"]);
  });

  it("lets the guest out only when asked, from a network namespace of its own", () => {
    const args = qemuArgs({ ...base, arch: "aarch64", accel: "tcg", internet: true });
    // The forward listens in QEMU's own namespace; on the host pasta listens on 127.0.0.1 only.
    expect(valuesOf(args, "-netdev")).toEqual(["user,id=net0,restrict=off,hostfwd=tcp::40022-:22"]);
    expect(NETNS_WRAPPER).toEqual(["--user", "--map-root-user", "--net", "--"]);
  });

  it("escapes commas in the disk path", () => {
    const args = qemuArgs({ ...base, arch: "x86_64", accel: "tcg" });
    expect(valuesOf(args, "-drive")[0]).toContain("file=/run/a,,b/disk.qcow2,");
  });

  it("uses q35 + PCI virtio on x86_64 and MMIO virtio on microvm", () => {
    const q35 = qemuArgs({ ...base, arch: "x86_64", accel: "tcg" });
    expect(valuesOf(q35, "-M")).toEqual(["q35"]);
    expect(valuesOf(q35, "-device")).toContain("virtio-blk-pci,drive=root");
    const micro = qemuArgs({ ...base, arch: "x86_64", accel: "tcg", x86Machine: "microvm" });
    expect(valuesOf(micro, "-M")[0]).toMatch(/^microvm,/);
    expect(valuesOf(micro, "-device")).toContain("virtio-blk-device,drive=root");
  });

  it("gives aarch64 a kernel made for Firecracker (Falco's) virtio-mmio devices on virt, others PCI", () => {
    const pci = qemuArgs({ ...base, arch: "aarch64", accel: "tcg" });
    expect(valuesOf(pci, "-device")).toEqual([
      "virtio-blk-pci,drive=root",
      "virtio-net-pci,netdev=net0",
      "virtio-rng-pci",
    ]);
    const mmio = qemuArgs({ ...base, arch: "aarch64", accel: "tcg", virtioMmio: true });
    expect(valuesOf(mmio, "-M")).toEqual(["virt"]);
    expect(valuesOf(mmio, "-device")).toEqual([
      "virtio-blk-device,drive=root",
      "virtio-net-device,netdev=net0",
      "virtio-rng-device",
    ]);
    // x86_64 follows its machine type alone.
    expect(valuesOf(qemuArgs({ ...base, arch: "x86_64", accel: "tcg", virtioMmio: true }), "-M")).toEqual([
      "q35",
    ]);
  });

  it("tells a microvm guest under TCG the host's TSC rate, and nobody else", () => {
    const cmdline = (l: Partial<Parameters<typeof qemuArgs>[0]>) =>
      valuesOf(qemuArgs({ ...base, arch: "x86_64", accel: "tcg", hostTscKhz: 2245786, ...l }), "-append")[0];
    expect(cmdline({ x86Machine: "microvm" })).toContain(" tsc_early_khz=2245786");
    expect(cmdline({ x86Machine: "q35" })).not.toContain("tsc_early_khz");
    expect(cmdline({ x86Machine: "microvm", accel: "kvm" })).not.toContain("tsc_early_khz");
    expect(cmdline({ x86Machine: "microvm", hostTscKhz: undefined })).not.toContain("tsc_early_khz");
    const cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2245.786\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n";
    expect(hostTscKhzOf(cpuinfo, false)).toBe(2245786);
    expect(hostTscKhzOf(cpuinfo, true)).toBeUndefined();
    expect(hostTscKhzOf(cpuinfo.replace(" constant_tsc", ""), false)).toBeUndefined();
  });

  it("picks a fast emulated CPU on aarch64 and the host CPU under KVM", () => {
    const tcg = qemuArgs({ ...base, arch: "aarch64", accel: "tcg" });
    expect(valuesOf(tcg, "-cpu")).toEqual(["neoverse-n1"]);
    expect(valuesOf(tcg, "-append")[0]).toContain("console=ttyAMA0");
    const kvm = qemuArgs({ ...base, arch: "aarch64", accel: "kvm" });
    expect(valuesOf(kvm, "-cpu")).toEqual(["host"]);
  });

  it("turns a panic into QEMU exiting", () => {
    const args = qemuArgs({ ...base, arch: "x86_64", accel: "tcg" });
    expect(args).toContain("-no-reboot");
    expect(valuesOf(args, "-append")[0]).toContain("panic=-1");
  });
});

describe("pastaArgs", () => {
  it("connects QEMU's namespace: SSH forward on the host's loopback only, no way to the host's loopback", () => {
    const args = pastaArgs({
      pid: 4242,
      sshPort: 40022,
      uid: 0,
      pidFile: "/run/w/pasta.pid",
      logFile: "/run/w/pasta.log",
    });
    expect(args).toEqual([
      "--runas",
      "0",
      "--foreground",
      "--quiet",
      "--log-file",
      "/run/w/pasta.log",
      "--pid",
      "/run/w/pasta.pid",
      "--config-net",
      "--no-map-gw",
      "--tcp-ports",
      "127.0.0.1/40022",
      "--udp-ports",
      "none",
      "--tcp-ns",
      "none",
      "--udp-ns",
      "none",
      "--dns-forward",
      "169.254.0.53",
      "4242",
    ]);
    expect(GUEST_NAMESERVER).toBe("169.254.0.53");
  });
});
