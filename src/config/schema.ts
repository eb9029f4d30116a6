/**
 * Zod schema of the YAML matrix file (kmatrix.yaml). It only checks shape and syntax; defaults that
 * depend on other fields (rootfs suite, merged vm settings) are filled in by load.ts.
 * Objects are strict so that a typo such as `flavor:` is an error instead of being silently ignored.
 */
import { z } from "zod";
import { isImageRef } from "../images/oci/reference.js";
import { ARCHES } from "./types.js";

const SUITE_RE = /^[a-z][a-z0-9-]*$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const FLAVOUR_RE = /^[a-z0-9][a-z0-9-]*$/;

const suite = z.string().regex(SUITE_RE, { error: "expected a suite name like bookworm ([a-z][a-z0-9-]*)" });
const imageRef = z.string().refine((text) => isImageRef(text), {
  error: "expected an image reference like ghcr.io/org/name:tag or name@sha256:<64 hex>",
});
/** An OCI image, the machine's architecture picked out of a multi-architecture index. */
const ociSource = z.strictObject({ source: z.literal("oci"), image: imageRef });
const httpUrl = z.url({ protocol: /^https?$/, error: "expected an http:// or https:// URL" });

export const ArchSchema = z.enum(ARCHES);

/** A Debian package, optionally from another suite of the same archive: `bpftool/bookworm-backports`. */
export const DebianPackageSchema = z.string().regex(/^[a-z0-9][a-z0-9+.-]+(\/[a-z][a-z0-9-]*)?$/, {
  error: 'expected a Debian package name, optionally with "/suite" (e.g. bpftool/bookworm-backports)',
});

/** Every field optional: the same shape serves as file-wide defaults and per-machine overrides. */
export const VmSchema = z.strictObject({
  cpus: z.int().min(1).max(64).optional(),
  memoryMiB: z.int().min(256).optional(),
  accel: z.enum(["auto", "kvm", "tcg"]).optional(),
  /** 24 h at most (a larger value is a mistake, and setTimeout would overflow and fire at once). */
  bootTimeoutSec: z.number().min(1).max(86_400).int().optional(),
  /** Extra kernel command-line arguments (handed to QEMU as one argument, never to a shell). */
  kernelArgs: z.array(z.string().regex(/^[^\s]+$/, "expected one argument without spaces")).optional(),
  /** Let the guest reach the internet (e.g. for libs' bundled dependencies); off by default. */
  internet: z.boolean().optional(),
});

// Discriminated on `source` so that e.g. `{ source: oci, image: ... }` can be added as another member.
export const KernelSourceSchema = z.discriminatedUnion("source", [
  z.strictObject({
    source: z.literal("debian"),
    suite,
    flavour: z
      .string()
      .regex(FLAVOUR_RE, { error: "expected a kernel flavour like cloud ([a-z0-9][a-z0-9-]*)" })
      .default("cloud"),
  }),
  /** A kernel build directory on this host (relative to the config file); load.ts checks its files. */
  z.strictObject({
    source: z.literal("local"),
    path: z.string().regex(/\S/, { error: "expected the path of a kernel build directory" }),
  }),
  ociSource,
  /** A kernel tree kmatrix configures and builds (src/images/build/); load.ts checks the paths. */
  z.strictObject({
    source: z.literal("build"),
    tree: z.string().regex(/\S/, { error: "expected a kernel tree: a directory, git-url@ref or a tarball" }),
    /** A make target (`defconfig`, `tinyconfig`, `x86_64_defconfig`) or a config file. */
    config: z
      .string()
      .regex(/\S/, { error: "expected a defconfig target or a config file" })
      .default("defconfig"),
    fragments: z
      .array(z.string().regex(/\S/, { error: "expected the path of a config fragment" }))
      .default([]),
  }),
]);

export const RootfsSourceSchema = z.discriminatedUnion("source", [
  z.strictObject({ source: z.literal("debian"), suite }),
  ociSource,
]);

export const MachineEntrySchema = z.strictObject({
  name: z.string().regex(NAME_RE, { error: "expected a name of letters, digits, '.', '_' or '-'" }),
  // A bare string is shorthand for a one-element list.
  arch: z
    .preprocess((v) => (typeof v === "string" ? [v] : v), z.array(ArchSchema).min(1))
    .default([...ARCHES]),
  kernel: KernelSourceSchema,
  /** Omitted: a Debian rootfs of the kernel's suite (filled in by load.ts). */
  rootfs: RootfsSourceSchema.optional(),
  packages: z.array(DebianPackageSchema).default([]),
  vm: VmSchema.optional(),
  /**
   * Only builders run on it (see the file's `builders:`): not a row of the matrix, e.g. Falco's
   * CentOS 7 builder image, where a runner linked against glibc 2.17 starts on every machine.
   */
  builderOnly: z.boolean().default(false),
});

export const MatrixFileSchema = z.strictObject({
  vm: VmSchema.optional(),
  archive: z
    .strictObject({
      mirror: httpUrl.optional(),
      securityMirror: httpUrl.optional(),
      /** The keyring that signs both mirrors' Release files (relative to this file); default Debian's. */
      keyring: z.string().regex(/\S/, { error: "expected the path of a keyring file" }).optional(),
    })
    .optional(),
  machines: z.array(MachineEntrySchema).min(1),
  /** Per registry (`host[:port]` as images name it): `tlsVerify: false` for plain HTTP (a local registry). */
  registries: z
    .record(
      z.string().regex(/^[a-zA-Z0-9.-]+(:[0-9]+)?$/, { error: "expected a registry host[:port]" }),
      z.strictObject({ tlsVerify: z.boolean().default(true) }),
    )
    .optional(),
  /** Where plan sources live, e.g. `libs: ../falcosecurity-libs` (a directory or `git-url@ref`). */
  sources: z.record(z.string().regex(NAME_RE), z.string().min(1)).optional(),
  /**
   * The machine a plan's builder runs on, over the plan's own choice, e.g. `scap-open: { machine:
   * centos-7 }`: a runner linked where glibc is oldest starts on every machine of this matrix.
   * Builders the plan does not have are ignored (one file serves several plans).
   */
  builders: z
    .record(z.string().regex(NAME_RE), z.strictObject({ machine: z.string().regex(NAME_RE) }))
    .optional(),
});

export type MatrixFile = z.infer<typeof MatrixFileSchema>;
export type MachineEntry = z.infer<typeof MachineEntrySchema>;
