import { z } from "zod";
import { DebianPackageSchema } from "../config/schema.js";
import { ARCHES } from "../config/types.js";

const Name = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "expected a name of letters, digits, '.', '_' or '-'");
const KernelVersion = z.string().regex(/^\d+\.\d+(\.\d+)?$/, 'expected a kernel version such as "5.8"');
/** 24 h at most: a larger timeout is a mistake, and past ~24.8 days setTimeout would fire at once. */
const MAX_TIMEOUT_SEC = 86_400;
// Bounds first: they name the real limits where the integer check would say "at most 2^53 - 1".
const Seconds = z.number().min(1).max(MAX_TIMEOUT_SEC).int();

export const BuilderSchema = z.strictObject({
  name: Name,
  /** A machine name of the matrix; the builder runs once per architecture on it. */
  machine: Name,
  command: z.string().min(1),
  needs: z.array(Name).default([]),
  /**
   * The command reads the machine's running kernel (e.g. its BTF in /sys/kernel/btf), so it always
   * runs in a booted VM, never in a container of the image (whose /sys is the host's).
   */
  needsKernel: z.boolean().default(false),
  /**
   * The command can make any architecture's artifacts (it reads the target from $KMATRIX_ARCH), so
   * it runs on its machine of the host's architecture, at native speed, for every architecture:
   * e.g. BPF objects, which clang emits the same from any host.
   */
  cross: z.boolean().default(false),
  /** Extra Debian packages for the builder's image (test machines do not get them). */
  packages: z.array(DebianPackageSchema).default([]),
  /**
   * Exit codes meaning "the builder's environment is wrong" (e.g. a library too old), not the code
   * it builds: such a failure is not blamed on that code.
   */
  environmentExitCodes: z.array(z.number().int().min(1).max(255)).default([]),
  timeoutSec: Seconds.default(1800),
});

export const TestSchema = z.strictObject({
  name: Name,
  command: z.string().min(1),
  /** Earlier tests that must pass first. */
  needs: z.array(Name).default([]),
  /** Builders whose artifacts the test needs. */
  uses: z.array(Name).default([]),
  minKernel: z.partialRecord(z.enum(ARCHES), KernelVersion).default({}),
  /** Exit codes meaning "this driver is not supported by this kernel": the cell is skipped. */
  unsupportedExitCodes: z.array(z.number().int().min(0).max(255)).default([]),
  /**
   * Skip the test on every machine unless this path exists in the plan's sources (checked on the
   * host before anything boots): a driver that this version of the sources does not have.
   */
  skipUnless: z
    .strictObject({
      /** `<source>/<path>`, e.g. `libs/driver/bpf`. */
      exists: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*(\/[^/\0]+)+$/, 'expected "<source>/<path>"'),
      reason: z.string().min(1),
    })
    .optional(),
  /**
   * How the output is judged beyond the exit code. `scap-open`: the number of events captured must
   * be the number asked for (scap-open prints both).
   */
  check: z.enum(["exit-code", "scap-open"]).default("exit-code"),
  /**
   * Declares a compile-only step (it reads the machine's compilers and headers, not its running
   * kernel), and where it runs: `vm` (the booted machine), `sandbox` (a sandbox of the machine's
   * own root disk, natively or through qemu-user: the same compiler and headers make the same
   * objects, tens of times faster than an emulated CPU), or `auto` (the VM when KVM works, the
   * sandbox when not). What it writes under /kmatrix is copied into the machine for later tests.
   * Absent: not a compile step, it always runs in the VM.
   */
  compileIn: z.enum(["auto", "vm", "sandbox"]).optional(),
  timeoutSec: Seconds.default(900),
});

/** A source the user gives at run time (`--source name=…`, or the config's `sources:`). */
const GivenSource = z.strictObject({
  /** Said when the location is missing: how to get the source. */
  given: z.string().min(1),
});

export const PlanFileSchema = z.strictObject({
  name: Name,
  description: z.string().optional(),
  /** name → a directory (relative to the plan file), `git-url@ref`, or one the user gives. */
  sources: z.record(Name, z.union([z.string().min(1), GivenSource])).default({}),
  /** Variables every command sees, with their defaults; `kmatrix run --set NAME=VALUE` changes them. */
  env: z
    .record(z.string().regex(/^[A-Z_][A-Z0-9_]*$/, "expected an UPPER_CASE variable name"), z.string())
    .default({}),
  builders: z.array(BuilderSchema).default([]),
  tests: z.array(TestSchema).min(1),
});

export type PlanFile = z.output<typeof PlanFileSchema>;
export type BuilderSpec = z.output<typeof BuilderSchema>;
export type TestSpec = z.output<typeof TestSchema>;
