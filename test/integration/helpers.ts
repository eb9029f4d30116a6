import { execa } from "execa";
import { DEFAULT_MATRIX_ORIGIN, DEFAULT_MATRIX_YAML } from "../../src/config/default.js";
import { parseMatrix } from "../../src/config/load.js";
import type { Arch, Machine, Matrix } from "../../src/config/types.js";

/** Integration tests use the embedded default matrix, whatever kmatrix.yaml the checkout has. */
export const defaultMatrix: Matrix = parseMatrix(DEFAULT_MATRIX_YAML, DEFAULT_MATRIX_ORIGIN);

export function machine(name: string, arch: Arch): Machine {
  const found = defaultMatrix.machines.find((m) => m.name === name && m.arch === arch);
  if (!found) throw new Error(`no machine ${name}@${arch} in the default matrix`);
  return found;
}

/** QEMU processes whose command line mentions `needle` (a run directory), or any when omitted. */
export async function qemuProcesses(needle = "qemu-system"): Promise<string[]> {
  const { stdout } = await execa("pgrep", ["-a", "-f", "qemu-system-"], { reject: false });
  return stdout.split("\n").filter((l) => l.includes(needle) && !l.includes("pgrep"));
}

export const CLI = new URL("../../dist/src/cli/main.js", import.meta.url).pathname;

/** The example plan's tests, in its order. */
export const EXAMPLE_TESTS = ["kmod_build", "kmod_open", "bpf_build", "bpf_open", "modern_bpf_open"];

/** One entry of `kmatrix images keys --json`. */
export interface KeyEntry {
  machineId: string;
  kind: string;
  entry: string;
  dir: string;
}
