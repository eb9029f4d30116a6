import { readFile } from "node:fs/promises";
import { execa } from "execa";

const cli = new URL("../src/cli/main.js", import.meta.url).pathname;

/** One kmatrix process: its wall time and the peak RSS of its own process (QEMU excluded). */
export async function timedKmatrix(
  args: string[],
): Promise<{ wallMs: number; peakRssMiB: number; exitCode: number | undefined }> {
  const t0 = Date.now();
  const child = execa("node", [cli, ...args], { reject: false, all: true });
  // VmHWM is the peak RSS of kmatrix's own process (GNU time would report its QEMU children's).
  let peakKb = 0;
  const poll = setInterval(async () => {
    const status = await readFile(`/proc/${child.pid}/status`, "utf8").catch(() => "");
    peakKb = Math.max(peakKb, Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0));
  }, 250);
  const r = await child;
  clearInterval(poll);
  return { wallMs: Date.now() - t0, peakRssMiB: peakKb / 1024, exitCode: r.exitCode };
}
