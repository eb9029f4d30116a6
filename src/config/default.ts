/**
 * The matrix used when neither --config nor ./kmatrix.yaml exists. Kept as a string (not a file in
 * assets/) so it always ships inside the build; it doubles as a commented template for users.
 */
export const DEFAULT_MATRIX_ORIGIN = "<embedded default>";

export const DEFAULT_MATRIX_YAML = `\
# kmatrix.yaml: the machines kmatrix boots. Copy this file into your project and edit it.
# Each entry under "machines" becomes one machine per architecture, with id "<name>@<arch>".

# Defaults for every machine; any machine may override them under its own "vm:" key.
vm:
  cpus: 2               # virtual CPUs (1..64)
  memoryMiB: 2048       # guest RAM in MiB (>= 256)
  accel: auto           # auto (KVM when usable, else TCG) | kvm | tcg
  bootTimeoutSec: 300   # QEMU start until the guest answers over SSH; TCG on a foreign arch is slow

# Where Debian packages come from (these are the defaults; point them at a local mirror to go faster).
# archive:
#   mirror: http://deb.debian.org/debian
#   securityMirror: http://deb.debian.org/debian-security

# Where plan sources live, relative to this file or as git-url@ref; --libs / --source override.
# sources:
#   libs: ../libs       # falcosecurity/libs, for \`kmatrix run --plan falco\`

machines:
  # arch: a single value or a list of x86_64 | aarch64; omitted means both.
  # kernel.flavour: the Debian kernel flavour (linux-image-<flavour>-<arch>); "cloud" is the default
  #   and boots fastest under QEMU.
  # kernel: { source: local, path: ../linux } instead boots the kernel of a build directory
  #   (relative to this file): its arch/x86/boot/bzImage or arch/arm64/boot/Image, the modules it
  #   built, include/config/kernel.release; the tree becomes /lib/modules/<release>/build.
  # rootfs: omitted means a Debian rootfs of the kernel's suite (bookworm for a local kernel).
  # packages: extra Debian packages to install into the image, e.g. [strace, bpftool].

  - name: debian-bullseye-5.10    # Debian 11, oldoldstable (LTS)
    arch: [x86_64, aarch64]
    kernel: { source: debian, suite: bullseye, flavour: cloud }
    rootfs: { source: debian, suite: bullseye }

  - name: debian-bookworm-6.1     # Debian 12, oldstable
    arch: [x86_64, aarch64]
    kernel: { source: debian, suite: bookworm, flavour: cloud }
    rootfs: { source: debian, suite: bookworm }

  - name: debian-trixie-6.12      # Debian 13, stable
    arch: [x86_64, aarch64]
    kernel: { source: debian, suite: trixie, flavour: cloud }
    rootfs: { source: debian, suite: trixie }

  - name: debian-sid              # unstable: whatever kernel sid currently ships (moves over time)
    arch: [x86_64, aarch64]
    kernel: { source: debian, suite: sid, flavour: cloud }
    rootfs: { source: debian, suite: sid }
`;
