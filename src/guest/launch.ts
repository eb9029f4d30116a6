import { join } from "node:path";
import type { ArchiveSettings, Machine } from "../config/types.js";
import { cacheRoot } from "../images/cache.js";
import { type MachineImage, prepareImage } from "../images/index.js";
import { type AccelDecision, decideAccel } from "../vm/accel.js";
import type { X86Machine } from "../vm/qemu-args.js";
import { ensureKeyPair } from "./keys.js";
import { MachineSession } from "./session.js";

export interface LaunchOptions {
  archive: ArchiveSettings;
  /** The scratch directory of this kmatrix process (see vm/run-dirs.ts). */
  runDir: string;
  /** This VM's own directory in it; defaults to the machine's id (one VM per machine at a time). */
  workName?: string;
  /** Where the console goes; defaults to the VM's scratch directory. */
  consoleLog?: string;
  x86Machine?: X86Machine;
  log?: (line: string) => void;
  onConsoleLine?: (line: string) => void;
  /** The machine's image when the caller has prepared it already (saves a second lookup). */
  image?: MachineImage;
  /** Called once the image is ready and the accelerator chosen, just before the VM starts. */
  onImage?: (image: MachineImage, accel: AccelDecision) => void;
}

export interface Launched {
  session: MachineSession;
  image: MachineImage;
  accel: AccelDecision;
}

/** From a matrix row to a booted machine with an SSH channel: image, accelerator, boot. */
export async function launchMachine(machine: Machine, opts: LaunchOptions): Promise<Launched> {
  const image = opts.image ?? (await prepareImage(machine, { archive: opts.archive, log: opts.log }));
  const accel = await decideAccel(machine.vm.accel, machine.arch, {
    kernel: image.vmlinuz,
    bareInitrd: image.bareInitrd,
  });
  const keys = await ensureKeyPair(cacheRoot());
  const workDir = join(opts.runDir, (opts.workName ?? machine.id).replace("@", "_"));
  opts.onImage?.(image, accel);
  opts.log?.(`${machine.id}: booting ${image.kernelRelease} (${accel.accel}: ${accel.reason})`);
  const session = await MachineSession.boot({
    machineId: machine.id,
    arch: machine.arch,
    accel: accel.accel,
    cpus: machine.vm.cpus,
    memoryMiB: machine.vm.memoryMiB,
    bootTimeoutSec: machine.vm.bootTimeoutSec,
    image,
    privateKey: keys.privateKey,
    workDir,
    consoleLog: opts.consoleLog ?? join(workDir, "console.log"),
    x86Machine: opts.x86Machine ?? image.x86Machine,
    virtioMmio: image.virtioMmio,
    kernelArgs: [...(image.kernelArgs ?? []), ...machine.vm.kernelArgs],
    internet: machine.vm.internet,
    onConsoleLine: opts.onConsoleLine,
  });
  return { session, image, accel };
}
