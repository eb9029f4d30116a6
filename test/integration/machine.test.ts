import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Arch } from "../../src/config/types.js";
import { ensureKeyPair } from "../../src/guest/keys.js";
import { type Launched, launchMachine } from "../../src/guest/launch.js";
import { GuestFault } from "../../src/guest/session.js";
import { GuestChannel } from "../../src/guest/ssh.js";
import { cacheRoot } from "../../src/images/cache.js";
import { liveCount } from "../../src/vm/processes.js";
import { createRunDir, removeRunDir } from "../../src/vm/run-dirs.js";
import { defaultMatrix, machine, qemuProcesses } from "./helpers.js";

// One real Debian bookworm machine per architecture, through images → vm → guest.
describe.each<Arch>(["x86_64", "aarch64"])("debian-bookworm-6.1 on %s", (arch) => {
  let runDir: string;
  let launched: Launched;

  beforeAll(async () => {
    runDir = await createRunDir();
    launched = await launchMachine(machine("debian-bookworm-6.1", arch), {
      archive: defaultMatrix.archive,
      runDir,
      log: (l) => console.log(l),
    });
  });

  afterAll(async () => {
    await launched?.session.stop();
    await removeRunDir(runDir);
    expect(liveCount()).toBe(0);
    expect(await qemuProcesses(runDir)).toEqual([]);
  });

  it("runs commands: output, exit codes, the booted kernel", async () => {
    const { session, image } = launched;
    const uname = await session.run("uname -r; uname -m");
    expect(uname.exitCode).toBe(0);
    expect(uname.stdout).toBe(`${image.kernelRelease}\n${arch}\n`);
    expect(image.kernelRelease).toMatch(/^6\.1\./);
    const chunks: string[] = [];
    const failing = await session.run("echo out; echo err >&2; exit 7", { onStderr: (c) => chunks.push(c) });
    expect(failing).toMatchObject({ exitCode: 7, stdout: "out\n", stderr: "err\n", timedOut: false });
    expect(chunks.join("")).toBe("err\n");
    // What drivers need is mounted, and the kernel's own headers are there to build against.
    const env = await session.run(
      "mount | grep -c -E 'debugfs|tracefs|bpf'; test -e /lib/modules/$(uname -r)/build/Makefile && echo headers",
    );
    expect(env.stdout).toMatch(/^[3-9]\nheaders\n$/);
  });

  it("copies files and directories in and out", async () => {
    const { session } = launched;
    const local = await mkdtemp(join(tmpdir(), "kmx-copy-"));
    await mkdir(join(local, "tree/sub"), { recursive: true });
    await writeFile(join(local, "tree/sub/file.txt"), "hello from the host\n");
    await session.copyIn(join(local, "tree"), "/kmatrix/in");
    const seen = await session.run(
      "cat /kmatrix/in/tree/sub/file.txt && echo made-in-guest > /kmatrix/in/tree/sub/back.txt",
    );
    expect(seen.stdout).toBe("hello from the host\n");
    const back = join(local, "back");
    await mkdir(back);
    await session.copyOut("/kmatrix/in/tree", back);
    expect(await readFile(join(back, "tree/sub/back.txt"), "utf8")).toBe("made-in-guest\n");
    await expect(session.copyOut("/does/not/exist", back)).rejects.toThrow(/failed/);
  });

  it("kills a command that outruns its timeout, children included, and stays usable", async () => {
    const { session } = launched;
    const started = Date.now();
    const r = await session.run("sleep 300 & sleep 301; echo never", { timeoutMs: 2000 });
    expect(r.timedOut).toBe(true);
    expect(r.exitCode).toBeUndefined();
    expect(r.stdout).not.toContain("never");
    expect(Date.now() - started).toBeLessThan(10_000);
    const left = await session.run(
      "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done | grep -c '^sleep 30[01]' || true",
    );
    expect(left.stdout.trim()).toBe("0");
  });

  it("ends a command when its shell exits, naming and killing what still held its output", async () => {
    const { session } = launched;
    const started = Date.now();
    const r = await session.run("(sleep 1000 &); echo started");
    const took = Date.now() - started;
    console.log(`${arch}: command with a leftover returned in ${took} ms: ${JSON.stringify(r.leftover)}`);
    expect(r).toMatchObject({ exitCode: 0, timedOut: false, stdout: "started\n" });
    expect(r.channelLost).toBeUndefined();
    expect(r.leftover).toEqual([expect.stringMatching(/^\d+ sleep 1000$/)]);
    expect(took).toBeLessThan(15_000);
    const after = await session.run(
      "echo still here; for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done | grep -c '^sleep 1000' || true",
    );
    expect(after).toMatchObject({ exitCode: 0, stdout: "still here\n0\n" });
    // A command whose output ends on its own within the drain time names no leftovers.
    const quick = await session.run("(sleep 1; echo late) & echo early");
    expect(quick).toMatchObject({ exitCode: 0, stdout: "early\nlate\n" });
    expect(quick.leftover).toBeUndefined();
  });

  it("tells a guest that stopped answering (QEMU frozen from the host) from a closed connection", async () => {
    const { session } = launched;
    const pid = Number.parseInt((await qemuProcesses(runDir))[0] ?? "", 10);
    expect(pid).toBeGreaterThan(1);
    // A second channel with short keepalives; the session's own (30 s) outlives the freeze.
    const probe = await GuestChannel.connect({
      port: session.vm.sshPort,
      privateKey: (await ensureKeyPair(cacheRoot())).privateKey,
      timeoutMs: 60_000,
      keepaliveIntervalMs: 250,
      keepaliveCountMax: 4,
    });
    let frozenAt = 0;
    let thaw: NodeJS.Timeout | undefined;
    try {
      let begin = () => {};
      const begun = new Promise<void>((resolve) => {
        begin = resolve;
      });
      const pending = probe.exec("echo begun; sleep 30", { onStdout: () => begin() });
      await begun;
      process.kill(pid, "SIGSTOP");
      frozenAt = Date.now();
      // Whatever happens to this test, the shared machine is not left frozen for long.
      thaw = setTimeout(() => process.kill(pid, "SIGCONT"), 10_000);
      const r = await pending;
      const took = Date.now() - frozenAt;
      console.log(`${arch}: frozen guest's channel lost after ${took} ms`);
      expect(r).toMatchObject({ exitCode: undefined, timedOut: false, channelLost: "keepalive" });
      expect(probe.lost()).toBe("keepalive");
      expect(took).toBeLessThan(5000);
    } finally {
      clearTimeout(thaw);
      if (frozenAt) process.kill(pid, "SIGCONT");
      probe.close();
    }
    // The machine thawed, and its session's channel carries on.
    expect(await session.run("echo alive")).toMatchObject({ exitCode: 0, stdout: "alive\n" });
    // A connection ended by the host side is "closed", not a hung guest.
    const other = await GuestChannel.connect({
      port: session.vm.sshPort,
      privateKey: (await ensureKeyPair(cacheRoot())).privateKey,
      timeoutMs: 60_000,
    });
    const gone = new Promise((resolve) => other.onClose(() => resolve(undefined)));
    other.close();
    await gone;
    expect(other.lost()).toBe("closed");
  });

  it("reports a kernel panic as a panic within seconds", async () => {
    const { session } = launched;
    const started = Date.now();
    const err = await session.run("echo c > /proc/sysrq-trigger; sleep 600").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestFault);
    expect((err as GuestFault).kind).toBe("panic");
    expect((err as GuestFault).message).toMatch(/Kernel panic - not syncing/);
    expect((err as GuestFault).consoleTail).toMatch(/sysrq/i);
    expect(Date.now() - started).toBeLessThan(15_000);
    await launched.session.vm.exited;
  });
});
