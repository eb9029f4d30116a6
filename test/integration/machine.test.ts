import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Arch } from "../../src/config/types.js";
import { type Launched, launchMachine } from "../../src/guest/launch.js";
import { GuestFault } from "../../src/guest/session.js";
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
