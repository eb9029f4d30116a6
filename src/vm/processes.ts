import type { ResultPromise } from "execa";

/**
 * Every QEMU kmatrix starts is registered here and killed when kmatrix exits, however it exits.
 * Two more layers back this up: QEMU runs under `setpriv --pdeathsig KILL`, so the kernel kills it
 * if kmatrix dies by SIGKILL, and `kmatrix clean` reaps what an older, crashed kmatrix left.
 */
const live = new Set<ResultPromise>();
let installed = false;

export function track(child: ResultPromise): void {
  live.add(child);
  const forget = () => live.delete(child);
  child.then(forget, forget);
  installHandlers();
}

export function killAll(): void {
  for (const child of live) child.kill("SIGKILL");
}

export function liveCount(): number {
  return live.size;
}

function installHandlers(): void {
  if (installed) return;
  installed = true;
  process.on("exit", killAll);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      // Another handler (the run engine) may want to tear down gracefully; if none does, exit.
      killAll();
      if (process.listenerCount(signal) === 1)
        process.exit(128 + (signal === "SIGINT" ? 2 : signal === "SIGTERM" ? 15 : 1));
    });
  }
}
