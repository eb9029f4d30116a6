/**
 * `kmatrix run --shard i/n`: which of the selected machines one shard of a fan-out runs (a GitHub
 * Actions matrix, say). Pure: the same machines, shard count and durations give every shard the
 * same partition, whatever order the machines come in, so the n jobs together run each machine
 * exactly once.
 *
 * - Without durations, each architecture's machines (by id) are dealt out in turn, the count going
 *   on from one architecture to the next: every shard gets a fair share (⌊k/n⌋ or ⌈k/n⌉) of each
 *   architecture, and the totals differ by at most one.
 * - With durations (`--balance-from <run>`, see machineDurations), each architecture's machines
 *   go longest first into the shard with the least time of that architecture so far (ties: the
 *   least time in all, then the fewest machines, then the lowest shard), so every shard gets a fair
 *   share of each architecture's time. Machines the previous run did not have count as the mean of
 *   their architecture's known ones (else of all known ones, else 1 ms). Equal durations are taken
 *   in id order.
 */
import { ARCHES, type Arch } from "../config/types.js";
import type { CellRecord, RunRecord } from "../results/types.js";
import { UsageError } from "../util/errors.js";

export interface Shard {
  /** 1-based. */
  index: number;
  count: number;
}

/** `2/3` → { index: 2, count: 3 }; anything else is a one-line usage error naming the option. */
export function parseShard(value: string, flag = "--shard"): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(value);
  const index = Number(m?.[1]);
  const count = Number(m?.[2]);
  if (!m || !Number.isSafeInteger(index) || !Number.isSafeInteger(count) || index < 1 || index > count)
    throw new UsageError(`${flag}: expected i/n with 1 ≤ i ≤ n (e.g. 1/2), got "${value}"`);
  return { index, count };
}

export const formatShard = (s: Shard) => `${s.index}/${s.count}`;

interface Shardable {
  id: string;
  arch: Arch;
}

const byId = (a: Shardable, b: Shardable) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** Every shard's machines (index 0 = shard 1), in id order within each shard. */
export function partition<T extends Shardable>(
  machines: readonly T[],
  count: number,
  durations?: ReadonlyMap<string, number>,
): T[][] {
  if (!Number.isSafeInteger(count) || count < 1) throw new Error(`shard count ${count}`);
  const shards: T[][] = Array.from({ length: count }, () => []);
  if (!durations) {
    let turn = 0;
    for (const arch of ARCHES)
      for (const m of machines.filter((x) => x.arch === arch).sort(byId)) shards[turn++ % count]?.push(m);
  } else {
    const total = new Array<number>(count).fill(0);
    const known = [...durations.values()];
    const meanOf = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : undefined);
    for (const arch of ARCHES) {
      const mine = machines.filter((x) => x.arch === arch);
      const fallback =
        meanOf(mine.flatMap((m) => (durations.has(m.id) ? [durations.get(m.id) as number] : []))) ??
        meanOf(known) ??
        1;
      const weight = (m: T) => durations.get(m.id) ?? fallback;
      const load = new Array<number>(count).fill(0);
      const sorted = [...mine].sort((a, b) => weight(b) - weight(a) || byId(a, b));
      for (const m of sorted) {
        // The least time of this architecture, then the least in all, then the fewest machines.
        const key = (i: number) => [load[i] ?? 0, total[i] ?? 0, shards[i]?.length ?? 0];
        let best = 0;
        for (let s = 1; s < count; s++) if (lessThan(key(s), key(best))) best = s;
        shards[best]?.push(m);
        load[best] = (load[best] ?? 0) + weight(m);
        total[best] = (total[best] ?? 0) + weight(m);
      }
    }
  }
  return shards.map((s) => s.sort(byId));
}

/** Lexicographic order of two tuples of the same length. */
function lessThan(a: number[], b: number[]): boolean {
  for (let i = 0; i < a.length; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x < y;
  }
  return false;
}

/** The machines of one shard, in the order they were given. */
export function shardMachines<T extends Shardable>(
  machines: readonly T[],
  shard: Shard,
  durations?: ReadonlyMap<string, number>,
): T[] {
  const mine = new Set(partition(machines, shard.count, durations)[shard.index - 1]?.map((m) => m.id));
  return machines.filter((m) => mine.has(m.id));
}

/**
 * How long each machine of a previous run kept the pool busy: its boots plus its cells' own
 * durations (cells that never ran, such as skips decided before boot, count nothing). Machines
 * with nothing measured are left out (they count as their architecture's mean).
 */
export function machineDurations(
  run: Pick<RunRecord, "machines">,
  cells: readonly Pick<CellRecord, "machineId" | "durationMs">[],
): Map<string, number> {
  const out = new Map<string, number>();
  for (const c of cells)
    if (c.durationMs !== undefined) out.set(c.machineId, (out.get(c.machineId) ?? 0) + c.durationMs);
  for (const m of run.machines)
    if (m.bootMs !== undefined) out.set(m.machineId, (out.get(m.machineId) ?? 0) + m.bootMs * (m.boots ?? 1));
  return out;
}
