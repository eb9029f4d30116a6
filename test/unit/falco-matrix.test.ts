import { describe, expect, it } from "vitest";
import { describeMachines, loadMatrix, selectMachines } from "../../src/config/load.js";

// Falco's kernel-testing matrix at images_tag v0.4.0 (ansible-playbooks/group_vars/all/vars.yml).
const X86_64 = [
  "amazonlinux2022-5.15",
  "amazonlinux2023-6.1",
  "amazonlinux2-5.4",
  "amazonlinux2-5.10",
  "amazonlinux2-5.15",
  "archlinux-6.0",
  "archlinux-6.7",
  "centos-3.10",
  "centos-4.18",
  "centos-5.14",
  "fedora-5.8",
  "fedora-5.17",
  "fedora-6.2",
  "oraclelinux-3.10",
  "oraclelinux-4.14",
  "oraclelinux-5.4",
  "oraclelinux-5.15",
  "ubuntu-5.8",
  "ubuntu-6.5",
];
const AARCH64 = [
  "amazonlinux2022-5.15",
  "amazonlinux2-5.4",
  "fedora-6.2",
  "oraclelinux-4.14",
  "oraclelinux-5.15",
  "ubuntu-6.5",
];

describe("examples/falco-kernel-testing.yaml", () => {
  it("is Falco's 25 machines, each on Falco's own kernel and root-disk images of v0.4.0", async () => {
    const matrix = await loadMatrix({ configPath: "examples/falco-kernel-testing.yaml" });
    const m = { machines: selectMachines(matrix) };
    expect(m.machines.filter((x) => x.arch === "x86_64").map((x) => x.name)).toEqual(X86_64);
    expect(m.machines.filter((x) => x.arch === "aarch64").map((x) => x.name)).toEqual(AARCH64);
    // The falco plan's builders run on Falco's builder images, which are not rows of the matrix.
    expect(Object.fromEntries(matrix.builderMachines)).toEqual({
      skeleton: "fedora-builder",
      libbpf: "fedora-builder",
      "scap-open": "centos-builder",
    });
    const builders = matrix.machines.filter((x) => x.builderOnly);
    expect(builders.map((x) => x.id)).toEqual([
      "centos-builder@x86_64",
      "centos-builder@aarch64",
      "fedora-builder@x86_64",
      "fedora-builder@aarch64",
    ]);
    expect(builders.map((x) => (x.rootfs.source === "oci" ? x.rootfs.image : ""))).toEqual([
      "ghcr.io/falcosecurity/kernel-testing/builder:x86_64-v0.4.0",
      "ghcr.io/falcosecurity/kernel-testing/builder:aarch64-v0.4.0",
      "ghcr.io/falcosecurity/kernel-testing/modernprobe-builder:x86_64-v0.4.0",
      "ghcr.io/falcosecurity/kernel-testing/modernprobe-builder:aarch64-v0.4.0",
    ]);
    for (const x of m.machines) {
      const [distro, kver] = [
        x.name.slice(0, x.name.lastIndexOf("-")),
        x.name.slice(x.name.lastIndexOf("-") + 1),
      ];
      const tag = `${kver}-${x.arch}-v0.4.0`;
      expect(x.kernel).toEqual({
        source: "oci",
        image: `ghcr.io/falcosecurity/kernel-testing/${distro}-kernel:${tag}`,
        tlsVerify: true,
      });
      expect(x.rootfs).toEqual({
        source: "oci",
        image: `ghcr.io/falcosecurity/kernel-testing/${distro}-image:${tag}`,
        tlsVerify: true,
      });
    }
    // `kmatrix machines --config …` lists them: a header and one line each.
    expect(describeMachines(m.machines).split("\n")).toHaveLength(26);
  });
});
