import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { liveProgress, plainProgress } from "../../src/cli/progress.js";

describe("plain progress", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("says every few minutes what a long step is doing, with its last output line", () => {
    const lines: string[] = [];
    const display = plainProgress((l) => lines.push(l), 60_000);
    const id = "debian-bookworm-6.1@aarch64";
    display.consume({
      type: "builder-started",
      builder: "skeleton",
      arch: "aarch64",
      machineId: id,
      isolation: "container",
    });
    display.consume({
      type: "step-output",
      machineId: id,
      step: "builder:skeleton",
      chunk: "[  6%] Built target x\n[  7%] Linking CX",
    });
    display.consume({
      type: "step-output",
      machineId: id,
      step: "builder:skeleton",
      chunk: "\x1b[32mX executable gen\x1b[0m\r\n\n",
    });
    vi.advanceTimersByTime(125_000);
    expect(lines.slice(1)).toEqual([
      `${id}: still running builder skeleton, 1m00s: X executable gen`,
      `${id}: still running builder skeleton, 2m00s: X executable gen`,
    ]);
    display.consume({
      type: "builder-ended",
      record: { builder: "skeleton", arch: "aarch64", machineId: id, ok: true, artifacts: [] },
    });
    lines.length = 0;
    vi.advanceTimersByTime(120_000);
    expect(lines).toEqual([]);
    display.stop();
  });

  it("reports a running test, and nothing more once stopped", () => {
    const lines: string[] = [];
    const display = plainProgress((l) => lines.push(l), 1000);
    display.consume({ type: "step-started", machineId: "m@x86_64", test: "kmod_build" });
    vi.advanceTimersByTime(1000);
    expect(lines.at(-1)).toBe("m@x86_64: still running kmod_build, 1s");
    display.stop();
    const count = lines.length;
    vi.advanceTimersByTime(10_000);
    expect(lines.length).toBe(count);
  });
});

describe("live progress", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("shows each machine's running step, its time and its last output line", () => {
    const written: string[] = [];
    const stream = { columns: 200, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
    const display = liveProgress(stream);
    const id = "debian-bookworm-6.1@x86_64";
    display.consume({ type: "step-started", machineId: id, test: "kmod_build" });
    display.consume({
      type: "step-output",
      machineId: id,
      step: "kmod_build",
      chunk: "  CC [M]  driver/main.o\n",
    });
    vi.advanceTimersByTime(3000);
    expect(written.at(-1)).toContain(`${id}`);
    expect(written.at(-1)).toContain("kmod_build, 3s: CC [M]  driver/main.o");
    display.consume({
      type: "cell",
      record: {
        machineId: id,
        machine: "debian-bookworm-6.1",
        arch: "x86_64",
        test: "kmod_build",
        verdict: "pass",
      },
    });
    display.stop();
    expect(written.join("")).toContain("kmod_build 🟢 pass");
  });
});
