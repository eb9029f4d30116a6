import { describe, expect, it } from "vitest";
import { ConsoleTail, classifyConsoleLine } from "../../src/vm/console.js";

describe("classifyConsoleLine", () => {
  it.each([
    ["[   12.345678] Kernel panic - not syncing: sysrq triggered crash", "panic"],
    ["[    5.1] BUG: kernel NULL pointer dereference, address: 0000000000000000", "oops"],
    ["[    5.1] Oops: 0002 [#1] PREEMPT SMP NOPTI", "oops"],
    ["[    5.1] Internal error: Oops: 0000000096000045 [#1] SMP", "oops"],
    ["[    5.1] general protection fault, probably for non-canonical address", "oops"],
    ["[    5.1] kernel BUG at mm/slub.c:123!", "oops"],
    ["KMATRIX-READY", "ready"],
    ["KMATRIX-FATAL: sshd did not start", "init-failed"],
  ])("%s → %s", (line, kind) => {
    expect(classifyConsoleLine(line)?.kind).toBe(kind);
  });

  it.each(["[    1.0] Run /init as init process", "Debug: boot ok"])("ignores %s", (line) => {
    expect(classifyConsoleLine(line)).toBeUndefined();
  });
});

describe("ConsoleTail", () => {
  it("splits chunks into lines across boundaries and keeps a bounded tail", () => {
    const tail = new ConsoleTail(3);
    expect(tail.push("a\r\nb")).toEqual(["a"]);
    expect(tail.push("c\nd\ne\nf")).toEqual(["bc", "d", "e"]);
    expect(tail.tail()).toBe("d\ne\nf");
  });
});
