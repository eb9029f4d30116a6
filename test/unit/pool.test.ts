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
