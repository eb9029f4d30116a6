import { describe, expect, it } from "vitest";
import { runPool } from "../../src/run/pool.js";

describe("runPool", () => {
  it("runs at most `limit` jobs at once, each after its dependencies", async () => {
    let running = 0;
    let peak = 0;
    const order: string[] = [];
    let firstDone: () => void = () => {};
    const first = new Promise<void>((r) => {
      firstDone = r;
    });
    const job = (name: string, ready: () => Promise<unknown> = async () => {}) => ({
      ready,
      run: async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 10));
        order.push(name);
        running--;
        if (name === "a") firstDone();
      },
    });
    await runPool([job("a"), job("b", () => first), job("c"), job("d")], 2, new AbortController().signal);
    expect(peak).toBe(2);
    expect(order.indexOf("b")).toBeGreaterThan(order.indexOf("a"));
    expect(order.sort()).toEqual(["a", "b", "c", "d"]);
  });

  it("returns on abort even when a job waits for one that will never run", async () => {
    const abort = new AbortController();
    const never = new Promise<void>(() => {});
    const done = runPool([{ ready: () => never, run: async () => {} }], 1, abort.signal);
    setTimeout(() => abort.abort(), 10);
    await expect(done).resolves.toBeUndefined();
  });
});

describe("runPool when jobs throw", () => {
  it("runs every other job to its end, then throws the one error", async () => {
    const ran: string[] = [];
    const boom = new Error("boom");
    const jobs = ["a", "b", "c", "d"].map((name) => ({
      ready: async () => {},
      run: async () => {
        await new Promise((r) => setTimeout(r, name === "a" ? 1 : 20));
        if (name === "a") throw boom;
        ran.push(name);
      },
    }));
    await expect(runPool(jobs, 2, new AbortController().signal)).rejects.toBe(boom);
    // b was running when a threw; c and d started after: all settled before runPool returned.
    expect(ran.sort()).toEqual(["b", "c", "d"]);
  });

  it("throws an AggregateError of every job that threw", async () => {
    const jobs = [1, 2, 3].map((n) => ({
      ready: async () => {},
      run: async () => {
        if (n !== 2) throw new Error(`job ${n}`);
      },
    }));
    const err = await runPool(jobs, 1, new AbortController().signal).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AggregateError);
    expect((err as AggregateError).errors.map((e: Error) => e.message)).toEqual(["job 1", "job 3"]);
    expect((err as Error).message).toBe("2 jobs failed: job 1; job 3");
  });

  it("fails, instead of hanging, a job whose dependency threw before settling it", async () => {
    const never = new Promise<void>(() => {});
    let ranOther = false;
    const jobs = [
      {
        ready: async () => {},
        run: async () => {
          throw new Error("builder crashed");
        },
      },
      { name: "machine m", ready: () => never, run: async () => {} },
      {
        ready: async () => {},
        run: async () => {
          await new Promise((r) => setTimeout(r, 10));
          ranOther = true;
        },
      },
    ];
    const err = await runPool(jobs, 2, new AbortController().signal).catch((e: unknown) => e);
    expect(ranOther).toBe(true);
    expect((err as AggregateError).errors.map((e: Error) => e.message)).toEqual([
      "builder crashed",
      expect.stringMatching(/^machine m never started/),
    ]);
  });

  it("fails a job whose dependency rejected, and the jobs waiting on nothing else", async () => {
    const never = new Promise<void>(() => {});
    const err = await runPool(
      [
        { name: "a", ready: () => Promise.reject(new Error("no dependency")), run: async () => {} },
        { name: "b", ready: () => never, run: async () => {} },
      ],
      1,
      new AbortController().signal,
    ).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/^2 jobs failed: no dependency; b never started/);
  });
});
