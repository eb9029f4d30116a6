/** The resolved matrix: what every other stage consumes. The YAML schema lives in schema.ts. */

export const ARCHES = ["x86_64", "aarch64"] as const;
export type Arch = (typeof ARCHES)[number];

export type Accel = "auto" | "kvm" | "tcg";

export interface VmSettings {
  cpus: number;
  memoryMiB: number;
  accel: Accel;
  /** Seconds from QEMU start until the guest must be reachable over SSH. */
  bootTimeoutSec: number;
  /** Extra kernel command-line arguments. */
  kernelArgs: string[];
  /** Whether the guest may reach the internet (slirp NAT, DNS at 10.0.2.3); off by default. */
  internet: boolean;
}

/**
 * Where a machine's kernel comes from (a discriminated union, one member per source): the newest
 * kernel of a Debian suite, or a kernel build directory on this host (absolute path).
 */
export type KernelSource =
  | { source: "debian"; suite: string; flavour: string }
  | { source: "local"; path: string }
  | OciSource
  | KernelBuildSpec;
/** An OCI image (`kernel`/`rootfs: { source: oci, image }`); tlsVerify from the file's `registries:`. */
export interface OciSource {
  source: "oci";
  image: string;
  tlsVerify: boolean;
}

/**
 * A kernel tree kmatrix configures and builds (src/images/build/): the tree, the base config and
 * the fragments as the matrix gave them (paths absolute), and the field messages name.
 */
export interface KernelBuildSpec {
  source: "build";
  /** An absolute directory or tarball path, or `git-url@ref`. */
  tree: string;
  /** A make target (`defconfig`, `tinyconfig`) or an absolute config file path. */
  config: { target: string } | { file: string };
  /** Absolute paths of config fragments, applied in order. */
  fragments: string[];
  /** `kmatrix.yaml: machines[2].kernel`, the prefix of messages about these fields. */
  field: string;
}
/** The kernel image of a build directory (`kernel: { source: local }`), per architecture. */
export const LOCAL_KERNEL_IMAGE: Record<Arch, string> = {
  x86_64: "arch/x86/boot/bzImage",
  aarch64: "arch/arm64/boot/Image",
};
/** What a build directory must hold: its `uname -r` (written by the kernel's build). */
export const LOCAL_KERNEL_RELEASE_FILE = "include/config/kernel.release";

/** Where a machine's root filesystem comes from. */
export type RootfsSource = { source: "debian"; suite: string } | OciSource;

export interface ArchiveSettings {
  mirror: string;
  securityMirror: string;
  /**
   * Absolute path of the keyring (binary or ASCII-armored) that signs both mirrors' Release files;
   * absent: Debian's archive keyring.
   */
  keyring?: string;
}

/** One cell row of the matrix: a machine is identified by name + arch. */
export interface Machine {
  name: string;
  arch: Arch;
  /** `name@arch`, unique within a matrix. */
  id: string;
  kernel: KernelSource;
  rootfs: RootfsSource;
  /** Extra Debian packages on top of the base set every image gets. */
  packages: string[];
  vm: VmSettings;
  /** Builders only: never a test machine (selectMachines leaves it out). */
  builderOnly?: boolean;
}

export interface Matrix {
  /** The file the matrix came from, or `<embedded default>`. */
  origin: string;
  archive: ArchiveSettings;
  machines: Machine[];
  /** Plan source locations from the file (`sources:`); a relative path is relative to `baseDir`. */
  sources: { name: string; spec: string; baseDir: string }[];
  /** Builder name → the machine it runs on, over the plan's (`builders:`). */
  builderMachines: Map<string, string>;
}
