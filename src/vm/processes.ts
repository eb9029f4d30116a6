import { execa, type Options } from "execa";

type Killable = { kill(signal: "SIGKILL"): unknown } & PromiseLike<unknown>;

/**
 * Every QEMU kmatrix starts is registered here and killed when kmatrix exits, however it exits.
 * Two more layers back this up: QEMU runs under `setpriv --pdeathsig KILL`, so the kernel kills it
 * if kmatrix dies by SIGKILL, and `kmatrix clean` reaps what an older, crashed kmatrix left.
 */
const live = new Set<Killable>();
let installed = false;

export function track(child: Killable): void {
  live.add(child);
  const forget = () => live.delete(child);
  child.then(forget, forget);
  installHandlers();
}

/**
 * Starts a process that cannot outlive kmatrix: tracked (killed on exit and on signals) and run
 * under `setpriv --pdeathsig KILL`, so the kernel kills it even if kmatrix is SIGKILLed.
 */
export function startOwned<O extends Options>(file: string, args: string[], options: O) {
  const child = execa("setpriv", ["--pdeathsig", "KILL", "--", file, ...args], options);
  track(child);
  return child;
}

export function killAll(): void {
  for (const child of live) child.kill("SIGKILL");
}

export function liveCount(): number {
  return live.size;
}

type InterruptHandler = (signal: NodeJS.Signals) => void;
let interruptHandler: InterruptHandler | undefined;

/**
 * Lets a command (kmatrix run) take over SIGINT/SIGTERM to wind down gracefully; the VMs are
 * killed either way. Returns a function that restores the default (kill VMs, exit 128+n).
 */
export function onInterrupt(handler: InterruptHandler): () => void {
  installHandlers();
  interruptHandler = handler;
  return () => {
    interruptHandler = undefined;
  };
}

const SIGNAL_NUMBERS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;

function installHandlers(): void {
  if (installed) return;
  installed = true;
  process.on("exit", killAll);
  for (const [signal, number] of Object.entries(SIGNAL_NUMBERS) as [NodeJS.Signals, number][]) {
    process.on(signal, () => {
      killAll();
      if (interruptHandler) interruptHandler(signal);
      else process.exit(128 + number);
    });
  }
}
