import { rmSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { cacheRoot } from "../images/cache.js";

/**
 * Scratch space of one kmatrix process (overlay disks, pid files), under the cache so that
 * `kmatrix clean` can find what a killed process left behind.
 */
export async function createRunDir(): Promise<string> {
  const dir = join(cacheRoot(), "runs", `${process.pid}-${Date.now().toString(36)}`);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "owner.pid"), String(process.pid));
  // Also on a signal-driven exit (processes.ts kills the VMs first); only SIGKILL leaves it behind.
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export async function removeRunDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export interface CleanReport {
  removedDirs: string[];
  killedPids: number[];
}

/** Kills the QEMUs of run directories whose kmatrix is gone, and removes those directories. */
export async function cleanStaleRuns(): Promise<CleanReport> {
  const runs = join(cacheRoot(), "runs");
  const report: CleanReport = { removedDirs: [], killedPids: [] };
  for (const name of await readdir(runs).catch(() => [] as string[])) {
    const dir = join(runs, name);
    const owner = Number(await readFile(join(dir, "owner.pid"), "utf8").catch(() => "0"));
    if (owner && (await isKmatrix(owner))) continue;
    for (const pidFile of await findPidFiles(dir)) {
      const pid = Number(await readFile(pidFile, "utf8").catch(() => "0"));
      // Only a QEMU that was started for this very directory: pids get reused.
      const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
      if (pid && cmdline.includes("qemu-system") && cmdline.includes(dir)) {
        process.kill(pid, "SIGKILL");
        report.killedPids.push(pid);
      }
    }
    await rm(dir, { recursive: true, force: true });
    report.removedDirs.push(dir);
  }
  return report;
}

async function isKmatrix(pid: number): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  return /kmatrix|vitest|node/.test(cmdline);
}

async function findPidFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  return entries.filter((e) => e.endsWith("qemu.pid")).map((e) => join(dir, e));
}
