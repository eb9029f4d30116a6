/**
 * The builder sandbox (src/guest/container.ts) against what a pull request's build script could
 * try on the host that runs it: every attempt fails, and the host is unchanged. No VM here, except
 * the hostile plan's trivial test machine at the end. Needs root (the sandbox's loop mount).
 */
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContainerSession } from "../../src/guest/container.js";
import { ensureKeyPair } from "../../src/guest/keys.js";
import { cacheRoot } from "../../src/images/cache.js";
import { CROSS_BIN, type MachineImage, prepareCrossToolchain, prepareImage } from "../../src/images/index.js";
import type { BuilderRecord, CellRecord } from "../../src/results/types.js";
import { CLI, defaultMatrix, machine } from "./helpers.js";

const FIXTURE = fileURLToPath(new URL("../fixtures/hostile/", import.meta.url));

let x86: MachineImage;
let arm: MachineImage;
let scratch: string;
let sentinel: string;
let key: string;
let server: Server;
let port: number;
let connections = 0;
/** The host's first disk, e.g. { name: "vda", majMin: "254:0" }. */
let disk: { name: string; majMin: string };
let hostMounts: string;
const hostName = hostname();

beforeAll(async () => {
  x86 = await prepareImage(machine("debian-bookworm-6.1", "x86_64"), { archive: defaultMatrix.archive });
  arm = await prepareImage(machine("debian-bookworm-6.1", "aarch64"), { archive: defaultMatrix.archive });
  scratch = await mkdtemp(join(tmpdir(), "kmx-sandbox-"));
  sentinel = join(scratch, "sentinel");
  await writeFile(sentinel, "untouched\n");
  key = (await ensureKeyPair(cacheRoot())).privateKeyPath;
  server = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as { port: number }).port;
  const { stdout } = await execa("lsblk", ["-dno", "NAME,MAJ:MIN,TYPE"]);
  const line = stdout.split("\n").find((l) => / disk$/.test(l.trim()) && !/^(zram|loop)/.test(l));
  const [name, majMin] = (line ?? "").trim().split(/\s+/);
  if (!name || !majMin) throw new Error(`no disk in lsblk's output:\n${stdout}`);
  disk = { name, majMin };
  hostMounts = await readFile("/proc/self/mountinfo", "utf8");
});

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** The host as the attempts could have changed it. */
async function expectHostUnchanged(): Promise<void> {
  expect(await readFile(sentinel, "utf8")).toBe("untouched\n");
  expect(connections, "connections to the host's 127.0.0.1").toBe(0);
  expect(hostname()).toBe(hostName);
  // Nothing of the sandbox is mounted in the host's namespace, during or after a command.
  const mounts = await readFile("/proc/self/mountinfo", "utf8");
  expect(mounts.split("\n").filter((l) => l.includes(scratch))).toEqual([]);
  expect(mounts.split("\n").filter((l) => !hostMounts.includes(l) && / overlay /.test(l))).toEqual([]);
}

describe("the builder sandbox", () => {
  it("refuses every hostile command, and the host is unchanged", async () => {
    const s = await ContainerSession.start({ disk: x86.disk, workDir: join(scratch, "hostile") });
    try {
      const [major, minor] = disk.majMin.split(":");
      const attempts: Record<string, string> = {
        "write /proc/sys/vm/drop_caches": "echo 3 > /proc/sys/vm/drop_caches",
        // Writes back what it reads: harmless even if it worked.
        "write a sysctl":
          "v=$(cat /proc/sys/kernel/printk_ratelimit) && echo $v > /proc/sys/kernel/printk_ratelimit",
        "sysrq (sync)": "echo s > /proc/sysrq-trigger",
        [`open the host's /dev/${disk.name}`]: `head -c 512 /dev/${disk.name} >/dev/null`,
        [`make a node for /dev/${disk.name} (${disk.majMin})`]: `mknod /tmp/d b ${major} ${minor} && head -c 512 /tmp/d`,
        "make /dev/mem": "mknod /tmp/mem c 1 1",
        "read the cache's private key": `cat ${key}`,
        "see the private key at all": `test -e ${key} || find / -xdev -name id_ed25519 | grep -q .`,
        "reach the run directory": `ls ${scratch}`,
        "write the host's sentinel": `test -e ${sentinel} && echo pwned > ${sentinel}`,
        "mount a tmpfs": "mount -t tmpfs x /mnt",
        "remount / read-write elsewhere": "mount --bind / /mnt",
        "a nested user namespace (to mount in it)": "unshare --user --map-root-user --mount true",
        "reach the host's 127.0.0.1": `bash -c 'echo > /dev/tcp/127.0.0.1/${port}'`,
        "reach the host through 10.0.2.2": `timeout 5 bash -c 'echo > /dev/tcp/10.0.2.2/${port}'`,
        "set the host name": 'hostname "$(hostname)"',
        "write the image's files": "echo pwned >> /etc/passwd",
        "hold any capability": 'grep -q "^CapEff:[[:space:]]*0*[1-9a-f]" /proc/self/status',
        "see the host's processes": 'grep -qs "^Name:.*kthreadd" /proc/[0-9]*/status',
        "see /sys": "ls /sys/class/block | grep -q .",
        "reboot(2)": "/tmp/probe reboot",
        "init_module(2)": "/tmp/probe module",
      };
      await s.copyIn(join(FIXTURE, "probe.c"), "/kmatrix/src");
      const built = await s.run("gcc -O -o /tmp/probe /kmatrix/src/probe.c && cp /tmp/probe /kmatrix/probe");
      expect(built.exitCode, built.stderr).toBe(0);
      const worked: string[] = [];
      for (const [what, command] of Object.entries(attempts)) {
        // /tmp is the command's own: the probe comes from the upper layer.
        const r = await s.run(`cp /kmatrix/probe /tmp/probe && ${command}`, { timeoutMs: 60_000 });
        expect(r.exitCode, `${what}: no exit code (timed out: ${r.timedOut})`).toBeDefined();
        if (r.exitCode === 0) worked.push(`${what}: ${r.stdout}`);
        // After each attempt (its namespaces gone), the host is checked again.
        await expectHostUnchanged();
      }
      expect(worked).toEqual([]);
    } finally {
      await s.stop();
    }
    await expectHostUnchanged();
    expect(await lstat(join(scratch, "hostile")).catch(() => undefined)).toBeUndefined();
  });

  it("is root inside over the image's files: gcc builds and runs a program", async () => {
    const s = await ContainerSession.start({ disk: x86.disk, workDir: join(scratch, "gcc") });
    try {
      const r = await s.run(
        `id -u && cd /root && printf '#include <stdio.h>\\nint main(void){puts("hello from the sandbox");return 0;}\\n' > hello.c && gcc -O2 -o hello hello.c && ./hello && make --version | head -n 1`,
      );
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^0\nhello from the sandbox\nGNU Make/);
      // The builder's files persist from one command to the next (the overlay's upper layer).
      const again = await s.run("/root/hello");
      expect(again.stdout.trim()).toBe("hello from the sandbox");
    } finally {
      await s.stop();
    }
  });

  it("runs the other architecture's programs through qemu-user", async () => {
    const s = await ContainerSession.start({ disk: arm.disk, workDir: join(scratch, "arm") });
    try {
      const r = await s.run("uname -m");
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe("aarch64");
    } finally {
      await s.stop();
    }
  });

  it("gives the other architecture the host's cross compilers, read-only, or refuses to start", async () => {
    const cross = await prepareCrossToolchain(machine("debian-bookworm-6.1", "aarch64"), arm.disk, {
      archive: defaultMatrix.archive,
      hostArch: "x86_64",
      log: () => {},
    });
    if (!("dir" in cross)) throw new Error(`no cross toolchain: ${cross.unusable}`);
    const s = await ContainerSession.start({
      disk: arm.disk,
      workDir: join(scratch, "cross"),
      toolchain: cross,
    });
    try {
      // gcc, first on PATH, is the host's (x86_64, e_machine 62) and makes aarch64 objects (183).
      const r = await s.run(
        `export PATH=${CROSS_BIN}:$PATH; echo 'int f(void) { return 1; }' > /tmp/t.c && gcc -O2 -c /tmp/t.c -o /tmp/t.o && od -An -tu2 -j18 -N2 /tmp/t.o && od -An -tu2 -j18 -N2 "$(command -v gcc)" && command -v gcc`,
      );
      expect(r.exitCode, r.stderr).toBe(0);
      expect(
        r.stdout
          .trim()
          .split("\n")
          .map((l) => l.trim()),
      ).toEqual(["183", "62", `${CROSS_BIN}/gcc`]);
      // It links programs too (the cross libc's linker scripts point under the mount), against
      // the machine's own libraries (zlib here), and they run (under qemu-user): what builders do.
      const linked = await s.run(
        `export PATH=${CROSS_BIN}:$PATH; printf '#include <zlib.h>\\n#include <stdio.h>\\nint main(void) { printf("%%s\\\\n", zlibVersion()); return 0; }\\n' > /tmp/z.c && gcc /tmp/z.c -o /tmp/z -lz && /tmp/z && od -An -tu2 -j18 -N2 /tmp/z`,
      );
      expect(linked.exitCode, linked.stderr).toBe(0);
      expect(linked.stdout.trim().split(/\s+/)).toEqual([expect.stringMatching(/^1\.2\./), "183"]);
      const write = await s.run(`touch ${CROSS_BIN}/gcc`);
      expect(write.exitCode).not.toBe(0);
    } finally {
      await s.stop();
    }
    // A toolchain that does not work is the harness's failure at start, never a compile step's.
    const broken = { dir: scratch, check: cross.check };
    await expect(
      ContainerSession.start({ disk: arm.disk, workDir: join(scratch, "cross-broken"), toolchain: broken }),
    ).rejects.toThrow(/with its cross toolchain/);
  });

  it("copies nothing of the host out of an out dir replaced by a link to /", async () => {
    const s = await ContainerSession.start({ disk: x86.disk, workDir: join(scratch, "links") });
    const dest = join(scratch, "links-out");
    await mkdir(dest);
    try {
      const r = await s.run(
        "mkdir -p /kmatrix/out && rm -rf /kmatrix/out/b && ln -s / /kmatrix/out/b && ln -s / /kmatrix/out/up",
      );
      expect(r.exitCode, r.stderr).toBe(0);
      const b = await s.copyOut("/kmatrix/out/b", dest);
      expect(b.refused.map((x) => x.why).join("\n")).toMatch(/symbolic link/);
      const through = await s.copyOut("/kmatrix/out/up/etc", dest);
      expect(through.refused.map((x) => x.why).join("\n")).toMatch(/symbolic link/);
      expect(await readdir(dest)).toEqual([]);
      // Nor does a copy into the sandbox follow a link the builder left.
      await s.run("rm -rf /kmatrix/src && ln -s / /kmatrix/src");
      await expect(s.copyIn(join(FIXTURE, "probe.c"), "/kmatrix/src", "pwned.c")).rejects.toThrow(
        /symbolic link/,
      );
      expect(await stat("/pwned.c").catch(() => undefined)).toBeUndefined();
    } finally {
      await s.stop();
    }
  });

  it("with the internet: a user-mode network, never the host's loopback", async () => {
    const s = await ContainerSession.start({ disk: x86.disk, workDir: join(scratch, "net"), internet: true });
    try {
      const r = await s.run("ip -o -4 addr show tap0 && cat /etc/resolv.conf");
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/tap0\s+inet 10\.0\.2\.100\//);
      expect(r.stdout).toContain("nameserver 10.0.2.3");
      for (const target of ["127.0.0.1", "10.0.2.2"]) {
        const hit = await s.run(`timeout 5 bash -c 'echo > /dev/tcp/${target}/${port}'`);
        expect(hit.exitCode, `${target}: ${hit.stderr}`).not.toBe(0);
      }
      await expectHostUnchanged();
    } finally {
      await s.stop();
    }
  });

  it("holds a hostile builder plan: every attempt blocked, its unsafe artifacts refused", async () => {
    const out = join(scratch, "run");
    const r = await execa(
      "node",
      [
        CLI,
        "run",
        ...["--config", join(FIXTURE, "matrix.yaml"), "--plan", join(FIXTURE, "plan.yaml")],
        ...["--builders", "container", "--rebuild", "--output", out, "--jobs", "1"],
        ...["--set", `HOST_PORT=${port}`, "--set", `HOST_KEY=${key}`, "--set", `HOST_SENTINEL=${sentinel}`],
      ],
      { reject: false, all: true },
    );
    const record: BuilderRecord = JSON.parse(
      await readFile(join(out, "builders", "x86_64", "hostile.json"), "utf8"),
    );
    expect(record.ok, `${record.reason}\n${r.all}`).toBe(true);
    expect(record.isolation).toBe("container");
    const log = await readFile(join(out, "builders", "x86_64", "hostile.log"), "utf8");
    const attempts = log.split("\n").filter((l) => l.startsWith("ATTEMPT "));
    expect(attempts.length, log).toBeGreaterThanOrEqual(20);
    expect(attempts.filter((l) => !/: blocked/.test(l))).toEqual([]);
    expect(log).not.toContain("SUCCEEDED");
    expect(log).not.toContain("does not compile");
    // Its $KMATRIX_OUT: the FIFO (mknod of a device failed) and the link to / refused; the
    // setuid binary copied without its setuid bit.
    const refused = (record.refused ?? []).map((x) => `${x.path}: ${x.why}`).join("\n");
    expect(refused).toMatch(/fifo: FIFO not allowed/);
    expect(refused).toMatch(/host-root: symbolic link/);
    expect(refused).not.toMatch(/disk/);
    expect(record.artifacts).toEqual(expect.arrayContaining(["artifact.txt", "suid-true"]));
    const suid = await stat(join(out, "artifacts", "x86_64", "hostile", "suid-true"));
    expect(suid.mode & 0o6000).toBe(0);
    expect(suid.uid).toBe(0);
    const cell: CellRecord = JSON.parse(
      await readFile(join(out, "cells", "bookworm@x86_64", "trivial.json"), "utf8"),
    );
    expect(cell.verdict, r.all).toBe("pass");
    expect(r.exitCode, r.all).toBe(0);
    await expectHostUnchanged();
  });
});
