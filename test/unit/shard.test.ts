import { describe, expect, it } from "vitest";
import type { Arch } from "../../src/config/types.js";
import { machineDurations, parseShard, partition, shardMachines } from "../../src/run/shard.js";
import { UsageError } from "../../src/util/errors.js";

const m = (name: string, arch: Arch) => ({ id: `${name}@${arch}`, name, arch });
const X = [
  "debian-bullseye-5.10",
  "debian-bookworm-6.1",
  "debian-trixie-6.12",
  "debian-sid-7.2",
  "ubuntu-6.5",
].map((n) => m(n, "x86_64"));
const A = ["debian-bullseye-5.10", "debian-bookworm-6.1", "debian-trixie-6.12"].map((n) => m(n, "aarch64"));
const ALL = [...X, ...A];
const ids = (xs: { id: string }[]) => xs.map((x) => x.id);

/** A deterministic shuffle: the same machines in another order. */
const shuffled = <T>(xs: T[]) =>
  xs
    .map((x, i) => [(i * 7919) % 13, x] as const)
    .sort((a, b) => a[0] - b[0])
    .map(([, x]) => x);

describe("parseShard", () => {
  it("reads i/n", () => {
    expect(parseShard("1/2")).toEqual({ index: 1, count: 2 });
    expect(parseShard("3/3")).toEqual({ index: 3, count: 3 });
  });

  it.each(["3/2", "0/2", "x", "1/0", "-1/2", "1.5/2", "1/2/3", "", "1 of 2"])(
    "refuses %j with a one-line usage error naming the option",
    (value) => {
      let err: unknown;
      try {
        parseShard(value);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toMatch(/^--shard: expected i\/n/);
      expect((err as Error).message).toContain(`"${value}"`);
      expect((err as Error).message).not.toContain("\n");
    },
  );
});

describe("shards without durations", () => {
  it("together run every machine exactly once", () => {
    for (const n of [1, 2, 3, 4, 9]) {
      const all = partition(ALL, n).flat();
      expect(ids(all).sort()).toEqual(ids(ALL).sort());
    }
  });

  it("are deterministic: the same share whatever order the machines come in", () => {
    for (let i = 1; i <= 3; i++)
      expect(ids(shardMachines(shuffled(ALL), { index: i, count: 3 })).sort()).toEqual(
        ids(shardMachines(ALL, { index: i, count: 3 })).sort(),
      );
  });

  it("give every shard a fair share of each architecture, and totals that differ by at most one", () => {
    for (const n of [2, 3, 4]) {
      const shards = partition(ALL, n);
      for (const arch of ["x86_64", "aarch64"] as const) {
        const k = ALL.filter((x) => x.arch === arch).length;
        for (const s of shards) {
          const c = s.filter((x) => x.arch === arch).length;
          expect(c).toBeGreaterThanOrEqual(Math.floor(k / n));
          expect(c).toBeLessThanOrEqual(Math.ceil(k / n));
        }
      }
      const sizes = shards.map((s) => s.length);
      expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    }
  });

  it("deals each architecture in id order, carrying the turn over", () => {
    // x86_64 by id: bookworm 1, bullseye 2, sid 1, trixie 2, ubuntu 1; aarch64 goes on: bookworm 2, bullseye 1, trixie 2.
    expect(partition(ALL, 2).map(ids)).toEqual([
      [
        "debian-bookworm-6.1@x86_64",
        "debian-bullseye-5.10@aarch64",
        "debian-sid-7.2@x86_64",
        "ubuntu-6.5@x86_64",
      ],
      [
        "debian-bookworm-6.1@aarch64",
        "debian-bullseye-5.10@x86_64",
        "debian-trixie-6.12@aarch64",
        "debian-trixie-6.12@x86_64",
      ],
    ]);
  });

  it("leave a shard empty when there are more shards than machines", () => {
    const two = [X[0], X[1]] as { id: string; arch: Arch }[];
    expect(partition(two, 3).map((s) => s.length)).toEqual([1, 1, 0]);
    expect(shardMachines(two, { index: 3, count: 3 })).toEqual([]);
  });

  it("keep the given order within a shard", () => {
    const mine = shardMachines(ALL, { index: 1, count: 2 });
    expect(ids(mine)).toEqual(ids(ALL.filter((x) => mine.includes(x))));
  });
});

describe("shards balanced by durations", () => {
  it("go longest first into the least-loaded shard", () => {
    const ms = ["a", "b", "c", "d"].map((n) => m(n, "x86_64"));
    const d = new Map([
      ["a@x86_64", 100],
      ["b@x86_64", 60],
      ["c@x86_64", 50],
      ["d@x86_64", 10],
    ]);
    // a → 1 (100); b → 2 (60); c → 2 (110); d → 1 (110).
    expect(partition(ms, 2, d).map(ids)).toEqual([
      ["a@x86_64", "d@x86_64"],
      ["b@x86_64", "c@x86_64"],
    ]);
  });

  it("beat counting when one machine is long", () => {
    const ms = ["a", "b", "c", "d", "e", "f"].map((n) => m(n, "x86_64"));
    const d = new Map(ms.map((x, i) => [x.id, i === 0 ? 300 : 60]));
    const loads = (shards: { id: string }[][]) =>
      shards.map((s) => s.reduce((t, x) => t + (d.get(x.id) ?? 0), 0));
    expect(loads(partition(ms, 2, d))).toEqual([300, 300]);
    expect(Math.max(...loads(partition(ms, 2)))).toBeGreaterThan(300);
  });

  it("balance each architecture's time, the totals breaking ties", () => {
    const ms = [m("x1", "x86_64"), m("x2", "x86_64"), m("a1", "aarch64"), m("a2", "aarch64")];
    const d = new Map([
      ["x1@x86_64", 50],
      ["x2@x86_64", 40],
      ["a1@aarch64", 500],
      ["a2@aarch64", 400],
    ]);
    const shards = partition(ms, 2, d);
    // Each shard gets one machine of each architecture; the longest aarch64 joins the shorter x86_64.
    expect(shards.map(ids)).toEqual([
      ["a2@aarch64", "x1@x86_64"],
      ["a1@aarch64", "x2@x86_64"],
    ]);
  });

  it("break equal durations by machine id, whatever the input order", () => {
    const ms = ["e", "d", "c", "b", "a"].map((n) => m(n, "x86_64"));
    const d = new Map(ms.map((x) => [x.id, 10]));
    expect(partition(ms, 2, d).map(ids)).toEqual([
      ["a@x86_64", "c@x86_64", "e@x86_64"],
      ["b@x86_64", "d@x86_64"],
    ]);
    expect(partition(shuffled(ms), 2, d)).toEqual(partition(ms, 2, d));
  });

  it("count a machine the previous run did not have as its architecture's mean", () => {
    const ms = [m("old1", "x86_64"), m("old2", "x86_64"), m("new", "x86_64")];
    const d = new Map([
      ["old1@x86_64", 100],
      ["old2@x86_64", 20],
    ]);
    // new counts 60: old1 → 1; new → 2 (60); old2 → 2 (80).
    expect(partition(ms, 2, d).map(ids)).toEqual([["old1@x86_64"], ["new@x86_64", "old2@x86_64"]]);
  });

  it("are deterministic and complete", () => {
    const d = new Map(ALL.map((x, i) => [x.id, ((i * 37) % 11) * 1000]));
    for (const n of [2, 3]) {
      const shards = partition(ALL, n, d);
      expect(ids(shards.flat()).sort()).toEqual(ids(ALL).sort());
      expect(partition(shuffled(ALL), n, d)).toEqual(shards);
    }
  });
});

describe("machineDurations", () => {
  it("adds a machine's cells and its boots", () => {
    const d = machineDurations(
      {
        machines: [
          { machineId: "a@x86_64", machine: "a", arch: "x86_64", bootMs: 5000, boots: 2 },
          { machineId: "b@x86_64", machine: "b", arch: "x86_64" },
          { machineId: "c@x86_64", machine: "c", arch: "x86_64", bootMs: 1000 },
        ],
      },
      [
        { machineId: "a@x86_64", durationMs: 100 },
        { machineId: "a@x86_64", durationMs: 200 },
        { machineId: "a@x86_64" },
        { machineId: "b@x86_64" },
      ],
    );
    expect(Object.fromEntries(d)).toEqual({ "a@x86_64": 10_300, "c@x86_64": 1000 });
  });
});
