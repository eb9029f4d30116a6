import { describe, expect, it } from "vitest";
import { classifyConsoleLine } from "../../src/vm/console.js";
import { KernelLog, stepBegins, stepEnds } from "../../src/vm/kernel-log.js";

const at = (t: number, text: string) => `[${t.toFixed(6).padStart(12)}] ${text}`;

describe("KernelLog: a step's own window of the kernel log", () => {
  it("blames what lies between the step's markers on the step, however late it arrives", async () => {
    const log = new KernelLog();
    log.feed(at(1, "BUG: kernel NULL pointer dereference, address: 0 (before)"));
    log.open(7);
    log.feed(at(2, "late line of the gap"));
    log.feed(at(3, stepBegins(7)));
    log.feed(at(4, "WARNING: CPU: 0 PID: 12 at drivers/x.c:3 x_init+0x1/0x2"));
    const closing = log.close(5000);
    // The oops reaches the host after the command returned, but before the end marker.
    log.feed(at(5, "BUG: unable to handle page fault for address: ffffffffc0001000"));
    log.feed(at(6, stepEnds(7)));
    const w = await closing;
    expect(w.complete).toBe(true);
    expect(w.oops).toEqual([at(5, "BUG: unable to handle page fault for address: ffffffffc0001000")]);
    expect(w.warnings).toHaveLength(1);
    expect(w.lines).toHaveLength(2);
    // The oops before the step is trouble between steps, not the step's.
    expect(log.takeTroubleBetweenSteps()).toEqual([
      at(1, "BUG: kernel NULL pointer dereference, address: 0 (before)"),
    ]);
    log.feed(at(7, "INFO: task kworker/0:1:12 blocked for more than 120 seconds."));
    expect(log.takeTroubleBetweenSteps()).toEqual([
      at(7, "INFO: task kworker/0:1:12 blocked for more than 120 seconds."),
    ]);
    expect(log.takeTroubleBetweenSteps()).toEqual([]);
  });

  it("without markers (console silenced, machine gone) keeps all the step's lines and says it is incomplete", async () => {
    const log = new KernelLog();
    log.open(1);
    log.feed(at(1, "rcu: INFO: rcu_sched self-detected stall on CPU"));
    const w = await log.close(10);
    expect(w).toMatchObject({
      complete: false,
      hung: [at(1, "rcu: INFO: rcu_sched self-detected stall on CPU")],
    });
  });

  it("bounds the lines it keeps and counts the rest", async () => {
    const log = new KernelLog();
    log.open(1);
    log.feed(stepBegins(1));
    for (let i = 0; i < 1000; i++) log.feed(at(i, `line ${i}`));
    log.feed(stepEnds(1));
    const w = await log.close(10);
    expect(w.lines).toHaveLength(400);
    expect(w.cutLines).toBe(600);
  });
});

describe("classifyConsoleLine: hangs, OOM and warnings", () => {
  it.each([
    ["[ 30.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [insmod:99]", "hung"],
    ["[ 30.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", "hung"],
    ["[ 30.1] INFO: task insmod:99 blocked for more than 120 seconds.", "hung"],
    ["[ 30.1] BUG: workqueue lockup - pool cpus=0 node=0 flags=0x0 nice=0 stuck for 31s!", "hung"],
    ["[ 30.1] Out of memory: Killed process 99 (cc1) total-vm:1kB", "oom"],
    ["[ 30.1] WARNING: CPU: 1 PID: 99 at drivers/kmx/warn.c:9 warn_init+0x10/0x20 [warn]", "warning"],
  ])("%s → %s", (line, kind) => {
    expect(classifyConsoleLine(line)?.kind).toBe(kind);
  });
});
