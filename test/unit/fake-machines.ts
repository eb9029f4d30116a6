/**
 * FAKE machines for unit tests of the engine's scheduling and verdict logic ONLY: scripted step
 * evidence instead of QEMU, SSH and kernels. Nothing under src/ imports this file, so it can never
 * produce a verdict a user sees; the real path is covered by test/integration.
 */
import type { StepEvidence } from "../../src/guest/session.js";
import type { ExecResult } from "../../src/guest/ssh.js";
import type { MachineImage } from "../../src/images/index.js";
import type { BootedMachine, MachineProvider, SandboxSession } from "../../src/run/machines.js";
import { emptyWindow, type KernelWindow } from "../../src/vm/kernel-log.js";

/** What one scripted step does. */
export interface FakeStep {
  result?: Partial<ExecResult>;
  kernel?: Partial<KernelWindow>;
  fault?: StepEvidence["fault"];
  error?: string;
  /** Kernel trouble that reaches the console after the step's window closed. */
  troubleAfter?: string[];
  /** How long the step takes (scheduling tests). */
  delayMs?: number;
}

export interface FakeScript {
  /** Keyed by the plan command (the guest command ends with it); unscripted commands exit 0. */
  steps: Record<string, FakeStep | ((call: number) => FakeStep)>;
  /** Boot numbers (1-based, per machine) that fail. */
  failingBoots?: number[];
  kernelRelease?: string;
  /** Whether KVM "works" (compileIn: auto then keeps compile steps in the VM). */
  kvm?: boolean;
  /** The sandbox cannot be entered (its mounts fail). */
  sandboxFails?: boolean;
  /** The host has cross compilers for machines of the other architecture. */
  crossToolchain?: boolean;
  /** The accelerator machines "boot" with (default "fake"). */
  accel?: string;
}

export interface FakeLog {
  /** `<machine id>#<boot>: <plan command>` per step run, in order. */
  steps: string[];
  boots: Record<string, number>;
  stopped: number;
  /** `<machine id>#<boot>: <local path> -> <remote dir>` per copy into a machine or sandbox. */
  copies: string[];
  /** The full guest command of every step, in order (environment included). */
  commands: string[];
  /** `<machine id>: <the cross toolchain's describe, or "own compilers">` per sandbox started. */
  containers: string[];
}

const exec = (over: Partial<ExecResult> = {}): ExecResult => ({
  exitCode: 0,
  signal: undefined,
  timedOut: false,
  stdout: "",
  stderr: "",
  durationMs: 1,
  ...over,
});

const window = (over: Partial<KernelWindow> = {}): KernelWindow => ({ ...emptyWindow(true), ...over });

export function fakeMachines(script: FakeScript): { provider: MachineProvider; log: FakeLog } {
  const log: FakeLog = { steps: [], boots: {}, stopped: 0, copies: [], commands: [], containers: [] };
  const calls = new Map<string, number>();
  const session = (label: string): SandboxSession & { troubleBetweenSteps(): string[] } => {
    let trouble: string[] = [];
    return {
      async runStep(command) {
        const planCommand = Object.keys(script.steps).find((c) => command.endsWith(`&& ${c}`));
        log.steps.push(`${label}: ${planCommand ?? command.replace(/^.*&& /, "")}`);
        log.commands.push(command);
        const n = (calls.get(planCommand ?? "") ?? 0) + 1;
        if (planCommand) calls.set(planCommand, n);
        const entry = planCommand ? script.steps[planCommand] : undefined;
        const s = (typeof entry === "function" ? entry(n) : entry) ?? {};
        if (s.delayMs) await new Promise((r) => setTimeout(r, s.delayMs));
        trouble = s.troubleAfter ?? [];
        return {
          ...(s.fault || s.error ? {} : { result: exec(s.result) }),
          ...(s.fault && { fault: s.fault, consoleTail: "fake console" }),
          ...(s.error && { error: s.error }),
          kernel: window(s.kernel),
        };
      },
      run: async () => exec({ stdout: "artifact.o\n" }),
      copyIn: async (local, remote) => {
        log.copies.push(`${label}: ${local} -> ${remote}`);
      },
      copyOut: async () => ({ refused: [] }),
      snapshot: async () => new Map(),
      copyChangesOut: async (_remote, _since, localDir) => {
        log.copies.push(`${label}: changes out -> ${localDir}`);
        return { refused: [], files: [] };
      },
      stop: async () => {
        log.stopped++;
      },
      troubleBetweenSteps() {
        const t = trouble;
        trouble = [];
        return t;
      },
    };
  };
  const provider: MachineProvider = {
    image: async (machine) =>
      ({
        machineId: machine.id,
        kernelRelease: script.kernelRelease ?? "6.1.0-99-cloud-amd64",
        kernelVersion: "6.1.99",
        manifests: {
          kernel: { key: "fake-kernel" },
          boot: { key: "fake-boot" },
          rootfs: { key: "fake-rootfs" },
        },
      }) as unknown as MachineImage,
    async boot(machine, _image, req) {
      const n = (log.boots[machine.id] ?? 0) + 1;
      log.boots[machine.id] = n;
      req.onBooting(script.accel ?? "fake");
      if (req.role === "test" && script.failingBoots?.includes(n)) throw new Error(`fake boot ${n} failed`);
      const booted: BootedMachine = { ...session(`${machine.id}#${n}`), usableMs: 1 };
      return { session: booted, accel: script.accel ?? "fake" };
    },
    container: async (machine, _image, _workDir, toolchain) => {
      log.containers.push(`${machine.id}: ${toolchain?.describe ?? "own compilers"}`);
      if (script.sandboxFails) throw new Error("fake sandbox: mount failed");
      return session(`${machine.id}#sandbox`);
    },
    hasKvm: async () => script.kvm ?? false,
    crossToolchain: async () =>
      script.crossToolchain
        ? { dir: "/fake/toolchain", describe: "compilers run natively: fake-gcc", check: "true" }
        : { unusable: "the fake host has none" },
  };
  return { provider, log };
}
