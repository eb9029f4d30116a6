import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { formatBytes, ResultStore } from "../../src/results/store.js";

const dirs: string[] = [];
const fresh = () => {
  const dir = mkdtempSync(join(tmpdir(), "kmatrix-store-"));
  dirs.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Deterministic output of `n` bytes in chunks of varying sizes, some lines, some not. */
function chunks(n: number): string[] {
  const out: string[] = [];
  let i = 0;
  let size = 1;
  while (i < n) {
    let c = "";
    for (let k = 0; k < size && i < n; k++, i++)
      c += i % 17 === 16 ? "\n" : String.fromCharCode(97 + (i % 26));
    out.push(c);
    size = (size * 7 + 3) % 41;
  }
  return out;
}

describe("ResultStore step logs", () => {
  const machineId = "m@x86_64";

  it("keeps the head, one line saying what was cut, and the tail, byte for byte", () => {
    const dir = fresh();
    const store = new ResultStore(dir, { logHeadBytes: 100, logTailBytes: 64 });
    const parts = chunks(5000);
    const all = parts.join("");
    const file = join(dir, "cells", machineId, "t.log");
    store.consume({ type: "step-started", machineId, test: "t" });
    for (const chunk of parts) {
      store.consume({ type: "step-output", machineId, step: "t", chunk });
      // Bounded while it runs: head + at most twice the tail + the cut line.
      expect(statSync(file).size).toBeLessThanOrEqual(100 + 2 * 64 + 100);
    }
    store.consume({ type: "step-ended", machineId, step: "t" });
    const head = all.slice(0, 100);
    expect(head.endsWith("\n")).toBe(false);
    expect(readFileSync(file, "utf8")).toBe(
      `${head}\n[kmatrix: 4.7 KiB of output cut here; the first 100 bytes and the last 64 bytes are kept]\n${all.slice(-64)}`,
    );
  });

  it("cuts at exact bytes of multi-byte text, and the defensive ends finish the log too", () => {
    const dir = fresh();
    const store = new ResultStore(dir, { logHeadBytes: 10, logTailBytes: 10 });
    const all = Buffer.from("é".repeat(1000), "utf8"); // 2000 bytes
    // A builder's step has no step-started; its record ends it.
    for (let i = 0; i < 100; i++)
      store.consume({ type: "step-output", machineId, step: "builder:b", chunk: "é".repeat(10) });
    store.consume({
      type: "builder-ended",
      record: { builder: "b", arch: "x86_64", machineId, ok: true, artifacts: [] },
    });
    const got = readFileSync(join(dir, "builders", "x86_64", "b.log"));
    const line = Buffer.from(
      "\n[kmatrix: 1.9 KiB of output cut here; the first and last 10 bytes are kept]\n",
      "utf8",
    );
    expect(got.equals(Buffer.concat([all.subarray(0, 10), line, all.subarray(-10)]))).toBe(true);
  });

  it("leaves output under the limit untouched, and a new step-started starts afresh", () => {
    const dir = fresh();
    const store = new ResultStore(dir, { logHeadBytes: 100, logTailBytes: 100 });
    const parts = chunks(200);
    store.consume({ type: "step-started", machineId, test: "t.rerun" });
    for (const chunk of parts) store.consume({ type: "step-output", machineId, step: "t.rerun", chunk });
    const file = join(dir, "cells", machineId, "t.rerun.log");
    expect(readFileSync(file, "utf8")).toBe(parts.join(""));
    store.consume({ type: "step-ended", machineId, step: "t.rerun" });
    expect(readFileSync(file, "utf8")).toBe(parts.join(""));

    store.consume({ type: "step-started", machineId, test: "t.rerun" });
    store.consume({ type: "step-output", machineId, step: "t.rerun", chunk: "again\n" });
    expect(readFileSync(file, "utf8")).toBe("again\n");
  });

  it("says sizes the way people read them", () => {
    expect(formatBytes(1)).toBe("1 byte");
    expect(formatBytes(8 * 1024 * 1024)).toBe("8 MiB");
    expect(formatBytes(1.2 * 1024 ** 3)).toBe("1.2 GiB");
  });
});
