/**
 * npm run bench:boot — how close a usable machine comes to the cheapest possible boot.
 *
 * For each architecture (debian-bookworm-6.1, cached images, the accelerator kmatrix picks), measured
 * in one run, alternating so that host noise hits both sides alike:
 *   bare   — QEMU start until a busybox-only initramfs runs init (same kernel, CPUs, memory, accel);
 *   usable — QEMU start until kmatrix holds a working SSH connection into the full machine.
 * ratio = median(usable) / median(bare); goal ≤ 1.3. On x86_64 both machine types are measured.
 * Then: the time to resolve a fully cached machine (goal < 1 s, no rebuild), in a fresh process.
 */
import { performance } from "node:perf_hooks";
import { execa } from "execa";
import { DEFAULT_MATRIX_ORIGIN, DEFAULT_MATRIX_YAML } from "../src/config/default.js";
import { parseMatrix } from "../src/config/load.js";
import type { Arch } from "../src/config/types.js";
import { ensureKeyPair } from "../src/guest/keys.js";
import { MachineSession } from "../src/guest/session.js";
import { cacheRoot } from "../src/images/cache.js";
import { prepareImage } from "../src/images/index.js";
import { decideAccel, runKernelProbe } from "../src/vm/accel.js";
import type { X86Machine } from "../src/vm/qemu-args.js";
import { createRunDir, removeRunDir } from "../src/vm/run-dirs.js";

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const matrix = parseMatrix(DEFAULT_MATRIX_YAML, DEFAULT_MATRIX_ORIGIN);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

const runDir = await createRunDir();
const keys = await ensureKeyPair(cacheRoot());
const rows: string[] = [];
try {
  for (const arch of ["x86_64", "aarch64"] as Arch[]) {
    const machine = matrix.machines.find((m) => m.name === "debian-bookworm-6.1" && m.arch === arch);
    if (!machine) throw new Error(`no debian-bookworm-6.1@${arch}`);
    const image = await prepareImage(machine, { archive: matrix.archive, log: (l) => console.error(l) });
    const accel = await decideAccel("auto", arch, { kernel: image.vmlinuz, bareInitrd: image.bareInitrd });
    const types: (X86Machine | undefined)[] = arch === "x86_64" ? ["q35", "microvm"] : [undefined];
    for (const x86Machine of types) {
      const bare: number[] = [];
      const usable: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        const probe = await runKernelProbe(
          arch,
          accel.accel,
          { kernel: image.vmlinuz, bareInitrd: image.bareInitrd },
          {
            deadlineMs: 120_000,
            cpus: machine.vm.cpus,
            memoryMiB: machine.vm.memoryMiB,
            x86Machine,
          },
        );
        if (!probe.ok) throw new Error(probe.reason);
        bare.push(probe.ms);
        const session = await MachineSession.boot({
          machineId: machine.id,
          arch,
          accel: accel.accel,
          cpus: machine.vm.cpus,
          memoryMiB: machine.vm.memoryMiB,
          bootTimeoutSec: 300,
          image,
          privateKey: keys.privateKey,
          workDir: `${runDir}/${arch}-${round}`,
          consoleLog: `${runDir}/${arch}-${round}.log`,
          x86Machine,
        });
        usable.push(session.timings.usableMs);
        await session.stop();
      }
      const label = `${arch}${x86Machine ? ` (${x86Machine})` : ""}, ${accel.accel}`;
      rows.push(
        `${label.padEnd(26)} bare ${s(median(bare))}  usable ${s(median(usable))}  ratio ${(median(usable) / median(bare)).toFixed(2)}  (bare ${bare.map(s).join(", ")}; usable ${usable.map(s).join(", ")})`,
      );
      console.error(rows.at(-1));
    }
  }
  // A fully cached machine, resolved by a fresh kmatrix process (startup included).
  const cli = new URL("../src/cli/main.js", import.meta.url).pathname;
  for (const arch of ["x86_64", "aarch64"]) {
    const t0 = performance.now();
    const r = await execa("node", [cli, "images", "build", "debian-bookworm-6.1", "--arch", arch]);
    const wall = performance.now() - t0;
    const rebuilt = /building/.test(r.stderr);
    rows.push(
      `resolve cached debian-bookworm-6.1@${arch}: ${s(wall)} wall in a new process${rebuilt ? " (REBUILT!)" : ", no rebuild"}`,
    );
  }
} finally {
  await removeRunDir(runDir);
}
console.log(`\nboot benchmark (${ROUNDS} rounds, medians; goal: ratio <= 1.3, resolve < 1 s)`);
for (const r of rows) console.log(r);
