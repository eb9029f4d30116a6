import { type ChildProcess, spawn } from "node:child_process";
import { constants } from "node:fs";
import { access, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ssh2 from "ssh2";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { GuestChannel } from "../../src/guest/ssh.js";

// A local ssh2 server that behaves like the guest's sshd where GuestChannel depends on it: each
// command runs as `sh -c <command>` in a new session (setsid), the exit status is sent when that
// shell exits, and the channel closes only once nothing holds its stdout/stderr any more. The
// commands really run on this host (as in the guest: /run for the pid files, /proc, sed, tr),
// so the drain and reaping logic is exercised for real. Between client and server sits a proxy
// that can stop forwarding (a guest whose kernel hangs) or cut the connection.

/** ssh2's ed25519 generator makes a key its own parser rejects about once in 256 (mscdex/ssh2#1390). */
function keyPair(): ssh2.KeyPairReturn {
  for (;;) {
    const pair = ssh2.utils.generateKeyPairSync("ed25519");
    const parsed = [ssh2.utils.parseKey(pair.private), ssh2.utils.parseKey(pair.public)];
    if (!parsed.some((k) => k instanceof Error)) return pair;
  }
}
const hostKey = keyPair();
const clientKey = keyPair();

const children = new Set<ChildProcess>();
let server: ssh2.Server;
let serverPort: number;

function startServer(): Promise<number> {
  server = new ssh2.Server({ hostKeys: [hostKey.private] }, (conn) => {
    conn.on("error", () => {});
    conn.on("authentication", (ctx) =>
      ctx.method === "publickey" && ctx.username === "root" ? ctx.accept() : ctx.reject(["publickey"]),
    );
    conn.on("ready", () =>
      conn.on("session", (acceptSession) => {
        const session = acceptSession();
        session.on("exec", (accept, _reject, info) => {
          const stream = accept();
          const child = spawn("/bin/sh", ["-c", info.command], { detached: true, stdio: "pipe" });
          children.add(child);
          child.stdout.on("data", (c: Buffer) => stream.write(c));
          child.stderr.on("data", (c: Buffer) => stream.stderr.write(c));
          stream.on("data", (c: Buffer) => child.stdin.write(c));
          stream.on("end", () => child.stdin.end());
          child.stdin.on("error", () => {});
          child.on("exit", (code, signal) => {
            if (signal) stream.exit(signal.replace(/^SIG/, ""), false, "");
            else stream.exit(code ?? 255);
          });
          // sshd's rule: the channel ends when the output pipes reach EOF, not when the shell exits.
          child.on("close", () => {
            children.delete(child);
            stream.end();
          });
        });
      }),
    );
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)),
  );
}

/** A TCP relay to the server that can freeze (stop reading and forwarding) or cut its connections. */
function startProxy(target: number) {
  const pairs: [net.Socket, net.Socket][] = [];
  const relay = net.createServer((down) => {
    const up = net.connect(target, "127.0.0.1");
    down.pipe(up);
    up.pipe(down);
    down.on("error", () => up.destroy());
    up.on("error", () => down.destroy());
    pairs.push([down, up]);
  });
  return {
    relay,
    port: () =>
      new Promise<number>((resolve) =>
        relay.listen(0, "127.0.0.1", () => resolve((relay.address() as AddressInfo).port)),
      ),
    freeze() {
      for (const [down, up] of pairs) {
        down.unpipe(up);
        up.unpipe(down);
        down.pause();
        up.pause();
      }
    },
    cut() {
      for (const [down, up] of pairs) {
        down.destroy();
        up.destroy();
      }
    },
    close() {
      this.cut();
      relay.close();
    },
  };
}

const connect = (port: number, keepalive?: { keepaliveIntervalMs: number; keepaliveCountMax: number }) =>
  GuestChannel.connect({ port, privateKey: clientKey.private, timeoutMs: 5000, ...keepalive });

/** A sleep duration nobody else on this host uses (other test runs may share it): 1000.xxxxxx s. */
const nap = () => `1000.${String(Math.floor(Math.random() * 1e6)).padStart(6, "0")}`;

/** Host processes (zombies excluded) whose command line is exactly `cmdline`. */
async function running(cmdline: string): Promise<number> {
  let n = 0;
  for (const pid of (await readdir("/proc")).filter((d) => /^\d+$/.test(d))) {
    const cmd = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmd.split("\0").join(" ").trim() === cmdline && !(await dead(Number(pid)))) n++;
  }
  return n;
}

/** Whether a host process is gone (or a zombie: dead, just not reaped yet by whoever adopted it). */
async function dead(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat === "" || / Z /.test(stat.slice(stat.lastIndexOf(")")));
}

const canWriteRun = await access("/run", constants.W_OK).then(
  () => true,
  () => false,
);

beforeAll(async () => {
  serverPort = await startServer();
});

afterAll(async () => {
  // Whatever a failed test left running: each command is its own process group.
  for (const child of children) if (child.pid) process.kill(-child.pid, "SIGKILL");
  server.close();
  // The commands' pid files (this process's, see ssh.ts), which a lost connection cannot remove.
  const ours = `kmatrix-cmd-${process.pid}-`;
  for (const f of await readdir("/run").catch(() => []))
    if (f.startsWith(ours)) await rm(join("/run", f), { force: true });
});

describe.runIf(canWriteRun)("GuestChannel commands end when their process ends", () => {
  let guest: GuestChannel;
  beforeAll(async () => {
    guest = await connect(serverPort);
  });
  afterAll(() => guest.close());

  it("returns the real exit code of a command that left a process holding its output, and kills that process", async () => {
    const started = Date.now();
    const t = nap();
    const r = await guest.exec(`(sleep ${t} &); echo started; exit 3`, { drainMs: 300 });
    expect(r).toMatchObject({ exitCode: 3, timedOut: false, stdout: "started\n" });
    expect(r.channelLost).toBeUndefined();
    expect(r.leftover).toHaveLength(1);
    expect(r.leftover?.[0]).toMatch(new RegExp(`^\\d+ sleep ${t}$`));
    expect(Date.now() - started).toBeLessThan(2500);
    expect(await dead(Number.parseInt(r.leftover?.[0] ?? "", 10))).toBe(true);
    // The channel stays usable.
    expect(await guest.exec("echo again")).toMatchObject({ exitCode: 0, stdout: "again\n" });
  });

  it("streams what leftovers write until they are killed", async () => {
    const seen: string[] = [];
    const t = nap();
    const r = await guest.exec(`(sleep 0.2; echo late; exec sleep ${t}) & echo early`, {
      drainMs: 1000,
      onStdout: (c) => seen.push(c),
    });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe("early\nlate\n");
    expect(seen.join("")).toBe("early\nlate\n");
    expect(r.leftover?.[0]).toMatch(new RegExp(`^\\d+ sleep ${t}$`));
    expect(await running(`sleep ${t}`)).toBe(0);
  });

  it("waits for output that ends within the drain time, and then names no leftovers", async () => {
    const r = await guest.exec("(sleep 0.3; echo late) & echo early", { drainMs: 3000 });
    expect(r).toMatchObject({ exitCode: 0, stdout: "early\nlate\n", timedOut: false });
    expect(r.leftover).toBeUndefined();
    expect(r.durationMs).toBeLessThan(2500);
  });

  it("names at most 20 leftovers but kills them all, also those that left the process group", async () => {
    const t = nap();
    const r = await guest.exec(
      `i=0; while [ $i -lt 25 ]; do (sleep ${t} &); i=$((i + 1)); done; perl -e 'setpgrp(0, 0); exec qw(sleep ${t})' & echo spawned`,
      { drainMs: 500 },
    );
    expect(r).toMatchObject({ exitCode: 0, stdout: "spawned\n" });
    expect(r.leftover).toHaveLength(20);
    expect(r.leftover?.every((l) => l.endsWith(` sleep ${t}`))).toBe(true);
    expect(await running(`sleep ${t}`)).toBe(0);
  });

  it("copies files in and out, and a copy that fails says so", async () => {
    const local = await mkdtemp(join(tmpdir(), "kmx-ssh-copy-"));
    try {
      await mkdir(join(local, "tree/sub"), { recursive: true });
      await writeFile(join(local, "tree/sub/file.txt"), "hello\n");
      await guest.copyIn(join(local, "tree"), join(local, "in"));
      await mkdir(join(local, "out"));
      await guest.copyOut(join(local, "in/tree"), join(local, "out"));
      expect(await readFile(join(local, "out/tree/sub/file.txt"), "utf8")).toBe("hello\n");
      await expect(guest.copyOut(join(local, "missing"), join(local, "out"))).rejects.toThrow(
        /failed \(exit 2\)/,
      );
    } finally {
      await rm(local, { recursive: true, force: true });
    }
  });

  it("keeps the timeout: a command that runs too long is killed with its group", async () => {
    const t = nap();
    const r = await guest.exec(`sleep ${t} & sleep ${t}`, { timeoutMs: 300 });
    expect(r).toMatchObject({ exitCode: undefined, timedOut: true });
    expect(r.leftover).toBeUndefined();
    expect(await running(`sleep ${t}`)).toBe(0);
  });
});

describe("GuestChannel says why its connection was lost", () => {
  let proxy: ReturnType<typeof startProxy>;
  afterEach(() => proxy?.close());

  it("keepalive: the guest stopped answering", async () => {
    proxy = startProxy(serverPort);
    const guest = await connect(await proxy.port(), { keepaliveIntervalMs: 100, keepaliveCountMax: 3 });
    expect(guest.lost()).toBeUndefined();
    const pending = guest.exec(`echo begun; sleep ${nap()}`);
    await new Promise((r) => setTimeout(r, 300));
    const frozenAt = Date.now();
    proxy.freeze();
    const r = await pending;
    expect(Date.now() - frozenAt).toBeLessThan(2000);
    expect(r).toMatchObject({ exitCode: undefined, timedOut: false, channelLost: "keepalive" });
    expect(guest.lost()).toBe("keepalive");
    await expect(guest.exec("true")).rejects.toThrow();
  });

  it("closed: the connection ended otherwise", async () => {
    proxy = startProxy(serverPort);
    const guest = await connect(await proxy.port(), { keepaliveIntervalMs: 100, keepaliveCountMax: 3 });
    const pending = guest.exec(`sleep ${nap()}`);
    await new Promise((r) => setTimeout(r, 300));
    proxy.cut();
    const r = await pending;
    expect(r).toMatchObject({ exitCode: undefined, timedOut: false, channelLost: "closed" });
    expect(guest.lost()).toBe("closed");
  });

  it("a command that exited is not lost, and a quiet but answering guest keeps its connection", async () => {
    proxy = startProxy(serverPort);
    const guest = await connect(await proxy.port(), { keepaliveIntervalMs: 100, keepaliveCountMax: 2 });
    const r = await guest.exec("sleep 1; exit 4");
    expect(r).toMatchObject({ exitCode: 4, timedOut: false });
    expect(r.channelLost).toBeUndefined();
    expect(guest.lost()).toBeUndefined();
    guest.close();
    await new Promise((r) => setTimeout(r, 100));
    expect(guest.lost()).toBe("closed");
  });
});
