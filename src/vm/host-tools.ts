import { access, constants } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { findProgram } from "../util/find-program.js";

/**
 * What kmatrix needs on the host, each with the Debian package that provides it: the one list that
 * `kmatrix doctor`, the integration tests' set-up and the Makefile's DEB_PACKAGES agree on
 * (test/unit/host-tools.test.ts ties them to the programs the source really starts).
 *
 * - A `program` entry is a program kmatrix starts on the host (looked up on $PATH).
 * - A package entry (no `program`) is needed although kmatrix starts nothing from it directly:
 *   checked with dpkg-query.
 * - `scope: "tests"`: needed by kmatrix's own test suite only (`make test`), not to run kmatrix.
 * - `scope: "kernel-build"`: needed for `kernel: { source: build }` only (and by the test suite).
 */
export interface HostTool {
  /** Started by kmatrix; absent for a package needed as a whole. */
  program?: string;
  /** The Debian package that provides it. */
  pkg: string;
  /** What it is for, as the doctor prints it. */
  purpose: string;
  scope?: "tests" | "kernel-build";
}

export const HOST_TOOLS: readonly HostTool[] = [
  // Booting machines.
  { program: "qemu-system-x86_64", pkg: "qemu-system-x86", purpose: "boots x86_64 machines" },
  { program: "qemu-system-aarch64", pkg: "qemu-system-arm", purpose: "boots aarch64 machines" },
  { program: "qemu-img", pkg: "qemu-utils", purpose: "each run's copy-on-write disk" },
  {
    program: "pasta",
    pkg: "passt",
    purpose: "the network of machines with internet, kept off the host's loopback",
  },
  { program: "setpriv", pkg: "util-linux", purpose: "QEMU dies with kmatrix; builder sandboxes' uid" },
  // Building images.
  { program: "mmdebstrap", pkg: "mmdebstrap", purpose: "builds root disks" },
  { program: "mke2fs", pkg: "e2fsprogs", purpose: "writes root disk images" },
  {
    program: "debugfs",
    pkg: "e2fsprogs",
    purpose: "reads a root disk's installed packages (cross toolchains)",
  },
  {
    program: "patchelf",
    pkg: "patchelf",
    purpose: "relocates cross compilers into a sandbox of the machine's disk",
  },
  { program: "umount", pkg: "mount", purpose: "unmounts what a killed root disk build left in the cache" },
  { program: "cp", pkg: "coreutils", purpose: "copies the kernel's modules into root disks" },
  { program: "du", pkg: "coreutils", purpose: "sizes root disks" },
  { program: "depmod", pkg: "kmod", purpose: "indexes a root disk's modules" },
  { program: "dpkg-deb", pkg: "dpkg", purpose: "unpacks kernel and busybox packages" },
  { program: "modinfo", pkg: "kmod", purpose: "orders the initrd's modules" },
  { program: "cpio", pkg: "cpio", purpose: "packs the initrd" },
  { program: "xz", pkg: "xz-utils", purpose: "reads archive indexes and .xz modules" },
  { program: "gpgv", pkg: "gpgv", purpose: "checks the signatures of the archive's Release files" },
  { program: "zstd", pkg: "zstd", purpose: "reads .zst modules" },
  { program: "gzip", pkg: "gzip", purpose: "reads .gz modules" },
  // OCI images (src/images/oci).
  { program: "skopeo", pkg: "skopeo", purpose: "pulls OCI images (kernel/rootfs source: oci)" },
  { program: "umoci", pkg: "umoci", purpose: "unpacks OCI images, whiteouts applied" },
  {
    program: "ssh-keygen",
    pkg: "openssh-client",
    purpose: "an sshd host key for OCI root disks without one",
  },
  { program: "lz4", pkg: "lz4", purpose: "reads lz4-compressed initrds of OCI kernels" },
  {
    program: "gcc",
    pkg: "gcc",
    purpose: "compiles x86_64 kernels, and the boot shim of OCI kernels without a PVH note",
  },
  { program: "ld", pkg: "binutils", purpose: "links the boot shim of OCI kernels without a PVH note" },
  // Plan sources.
  { program: "git", pkg: "git", purpose: "fetches git sources, lists a source tree's files" },
  // Builder sandboxes (src/guest/container.ts): unshare, then its set-up script as root, which
  // mounts the image and drops to an unprivileged uid for bwrap; slirp4netns for `vm.internet`.
  {
    program: "unshare",
    pkg: "util-linux",
    purpose: "builder sandboxes' private mounts and user-mode network",
  },
  { program: "bash", pkg: "bash", purpose: "builder sandboxes' set-up script" },
  { program: "mount", pkg: "mount", purpose: "builder sandboxes' read-only image and overlay" },
  { program: "mknod", pkg: "coreutils", purpose: "a tun device for builder sandboxes' user-mode network" },
  { program: "bwrap", pkg: "bubblewrap", purpose: "builder sandboxes (unprivileged namespaces)" },
  { program: "nsenter", pkg: "util-linux", purpose: "starts slirp4netns beside a builder sandbox" },
  {
    program: "slirp4netns",
    pkg: "slirp4netns",
    purpose: "builder sandboxes' user-mode network (vm.internet)",
  },
  // Kernels kmatrix builds (`source: build`, src/images/build/): the kernel's own build needs.
  { program: "make", pkg: "make", purpose: "builds kernels", scope: "kernel-build" },
  {
    program: "aarch64-linux-gnu-gcc",
    pkg: "gcc-aarch64-linux-gnu",
    purpose: "cross-compiles arm64 kernels",
    scope: "kernel-build",
  },
  { program: "pahole", pkg: "pahole", purpose: "the BTF of kernels kmatrix builds", scope: "kernel-build" },
  { program: "tar", pkg: "tar", purpose: "unpacks kernel tarballs", scope: "kernel-build" },
  { pkg: "flex", purpose: "the kernel config parser", scope: "kernel-build" },
  { pkg: "bison", purpose: "the kernel config parser", scope: "kernel-build" },
  { pkg: "bc", purpose: "the kernel's build (timeconst)", scope: "kernel-build" },
  { pkg: "libelf-dev", purpose: "objtool and resolve_btfids of built kernels", scope: "kernel-build" },
  {
    pkg: "libssl-dev",
    purpose: "the kernel build's certificate tools",
    scope: "kernel-build",
  },
  {
    pkg: "libc6-dev-arm64-cross",
    purpose: "cross-built arm64 host programs of kernel build trees",
    scope: "kernel-build",
  },
  // Packages checked as such.
  { program: "dpkg-query", pkg: "dpkg", purpose: "checks the packages needed as a whole" },
  { pkg: "arch-test", purpose: "mmdebstrap's foreign-architecture check" },
  { pkg: "qemu-user-static", purpose: "qemu-user for the other architecture's root disks and builders" },
  { pkg: "binfmt-support", purpose: "update-binfmts, which registers qemu-user with binfmt_misc" },
  { pkg: "debian-archive-keyring", purpose: "the keys that sign Debian's archive, for gpgv" },
  { pkg: "gpg", purpose: "signs the unit tests' archive fixtures with a throwaway key", scope: "tests" },
  { pkg: "chromium", purpose: "kmatrix's browser tests", scope: "tests" },
  { pkg: "docker-registry", purpose: "the OCI tests' registry on 127.0.0.1", scope: "tests" },
  { pkg: "fonts-noto-color-emoji", purpose: "emoji in the browser tests' screenshots", scope: "tests" },
];

export interface HostToolStatus {
  tool: HostTool;
  /** `program (purpose)` or `purpose (package)`. */
  label: string;
  ok: boolean;
  /** How to get it, when it is missing: `apt-get install <pkg>`, or a PATH fix. */
  fix?: string;
}

/** Directories where Debian puts programs that a non-root $PATH often lacks. */
const SBIN_DIRS = ["/usr/sbin", "/sbin"];

export function hostToolLabel(t: HostTool): string {
  return t.program ? `${t.program} (${t.purpose})` : `${t.purpose} (${t.pkg})`;
}

/** Every entry of HOST_TOOLS (`"all"`) or only those kmatrix itself needs, with what is missing. */
export async function hostToolStatus(scope: "kmatrix" | "all" = "all"): Promise<HostToolStatus[]> {
  const tools = HOST_TOOLS.filter((t) => scope === "all" || t.scope === undefined);
  return Promise.all(
    tools.map(async (tool): Promise<HostToolStatus> => {
      const label = hostToolLabel(tool);
      const install = `apt-get install ${tool.pkg}`;
      if (!tool.program)
        return (await packageInstalled(tool.pkg))
          ? { tool, label, ok: true }
          : { tool, label, ok: false, fix: install };
      if (await findProgram(tool.program)) return { tool, label, ok: true };
      for (const dir of SBIN_DIRS)
        if (await isExecutable(join(dir, tool.program)))
          return { tool, label, ok: false, fix: `add ${dir} to PATH (${tool.program} is there)` };
      return { tool, label, ok: false, fix: install };
    }),
  );
}

/** What is missing (`scope` as in hostToolStatus; default: what kmatrix itself needs). */
export async function checkHostTools(scope: "kmatrix" | "all" = "kmatrix"): Promise<HostToolStatus[]> {
  return (await hostToolStatus(scope)).filter((s) => !s.ok);
}

/** The packages to install for `missing` (those missing for another reason, e.g. PATH, excluded). */
export function packagesToInstall(missing: readonly HostToolStatus[]): string[] {
  return [...new Set(missing.filter((m) => m.fix?.startsWith("apt-get ")).map((m) => m.tool.pkg))];
}

/** A message naming what is missing and how to install it, for a run that has to stop. */
export function missingHostToolsMessage(missing: readonly HostToolStatus[]): string {
  const pkgs = packagesToInstall(missing);
  const lines = missing.map((m) => `  ${m.label}  ->  ${m.fix}`);
  const howto = pkgs.length
    ? `\ninstall with \`make deps\` (as root), or: apt-get install ${pkgs.join(" ")}`
    : "";
  return `this host lacks what kmatrix needs:\n${lines.join("\n")}${howto}`;
}

async function packageInstalled(pkg: string): Promise<boolean> {
  // `${Status}` is "install ok installed" when installed ("unknown ok not-installed", "deinstall ok
  // config-files" otherwise); dpkg-query exits 1 for a name it has never heard of.
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
  const r = await execa("dpkg-query", ["-W", "-f", "${Status}", pkg], { reject: false });
  return r.exitCode === 0 && /^\S+ ok installed$/.test(String(r.stdout).trim());
}

async function isExecutable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}
