import type { Arch } from "../config/types.js";
import { digestSource } from "../plan/source-digest.js";
import type { BuilderRecord } from "../results/types.js";
import { runBuilder } from "./builder-job.js";
import { prepareMachine } from "./compile-job.js";
import { builderKey, cellKey, type Engine, type EngineOptions, harnessReason } from "./context.js";
import { runMachine } from "./machine-job.js";
import { MachineRun } from "./machine-state.js";
import { realMachines } from "./machines.js";
import { runPool, Slots } from "./pool.js";

export { builderMachine } from "./builder-job.js";
export { builderKey, cellKey, type EngineOptions, GUEST } from "./context.js";

/**
 * Runs the plan over the matrix: builders once per architecture, then every machine in two
 * phases: its image and compile steps (compile-job.ts), then its VM (machine-job.ts). At most
 * `jobs` VMs (builders included) and `jobs` preparations run at a time, so one machine's compile
 * steps overlap another's VM. Every cell gets exactly one verdict event, except
 * cells an interrupt cut short (those are left for --resume). A job that crashes (a bug in kmatrix)
 * ends as harness errors for its own cells; the other jobs go on.
 */
export async function runEngine(options: EngineOptions): Promise<void> {
  let digests: Promise<Record<string, string>> | undefined;
  const e: Engine = {
    ...options,
    provider: options.provider ?? realMachines(options.matrix.archive),
    sourceDigests: () => {
      digests ??= Promise.all(
        [...options.sources].map(async ([name, src]) => [name, await digestSource(src)] as const),
      ).then(Object.fromEntries);
      return digests;
    },
  };
  const arches = [...new Set(e.machines.map((m) => m.arch))];
  const builderResults = new Map<string, Promise<BuilderRecord>>();
  const settle = new Map<string, (r: BuilderRecord) => void>();
  for (const arch of arches)
    for (const b of e.plan.builders) {
      const key = builderKey(arch, b.name);
      builderResults.set(key, new Promise((r) => settle.set(key, r)));
    }

  const vms = new Slots(e.jobs);
  const preparations = new Slots(e.jobs);
  type Job = { ready: () => Promise<unknown>; run: () => Promise<void> };
  const jobs: Job[] = [];
  for (const arch of arches)
    for (const b of e.plan.builders) {
      const key = builderKey(arch, b.name);
      jobs.push({
        ready: () => Promise.all(b.needs.map((n) => builderResults.get(builderKey(arch, n)))),
        run: async () => {
          const record = await vms
            .use(() => runBuilder(e, b, arch, builderResults))
            .catch((err) => crashedBuilder(e, b.name, b.machine, arch, err));
          settle.get(key)?.(record);
        },
      });
    }
  for (const machine of e.machines) {
    if (e.plan.tests.every((t) => e.kept.has(cellKey(machine.id, t.name)))) continue;
    const used = new Set(e.plan.tests.flatMap((t) => t.uses));
    jobs.push({
      ready: () => Promise.all([...used].map((u) => builderResults.get(builderKey(machine.arch, u)))),
      run: async () => {
        const run = new MachineRun(e, machine);
        try {
          await preparations.use(() => prepareMachine(e, run, builderResults));
        } finally {
          await vms.use(() => runMachine(e, run, builderResults));
        }
      },
    });
  }
  // Each job holds a VM slot or a preparation slot while it works: twice as many jobs may be open.
  await runPool(jobs, 2 * e.jobs, e.signal);
}

function crashedBuilder(
  e: Engine,
  builder: string,
  machine: string,
  arch: Arch,
  err: unknown,
): BuilderRecord {
  const record: BuilderRecord = {
    builder,
    arch,
    machineId: `${machine}@${arch}`,
    ok: false,
    fault: "harness",
    reason: `kmatrix crashed while running this builder: ${harnessReason(err)}`,
    artifacts: [],
  };
  if (!e.signal.aborted) e.bus.emit({ type: "builder-ended", record });
  return record;
}
