import { connect, createServer, type Server } from "node:net";
import { networkInterfaces } from "node:os";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Launched, launchMachine } from "../../src/guest/launch.js";
import { liveCount } from "../../src/vm/processes.js";
import { GUEST_NAMESERVER } from "../../src/vm/qemu-args.js";
import { createRunDir, removeRunDir } from "../../src/vm/run-dirs.js";
import { defaultMatrix, machine, qemuProcesses } from "./helpers.js";

/** The host's own IPv4 addresses other than loopback: the guest may try them too. */
const hostAddresses = Object.values(networkInterfaces()).flatMap((list) =>
  (list ?? []).filter((a) => a.family === "IPv4" && !a.internal).map((a) => a.address),
);

/** A guest-side TCP connect with bash's /dev/tcp: `OPEN <target>` and what the server said, or `closed`. */
const attempt = (host: string, port: number) =>
  `(timeout 5 bash -c 'exec 3<>/dev/tcp/${host}/${port} && head -c 6 <&3' && echo " OPEN ${host}") 2>/dev/null || echo "closed ${host}"`;

/**
 * What untrusted code running as root in a guest can do to aim at the host's loopback: take
 * 127.0.0.1 off its own loopback and route it out of eth0 to the gateway, so that the packets
 * reach QEMU's network carrying the destination 127.0.0.1. Breaks the guest's loopback: run last.
 */
const rawLoopback = (port: number) =>
  [
    "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet",
    "echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet",
    "ip route del local 127.0.0.1 table local",
    "ip route del local 127.0.0.0/8 table local",
    "ip route add 127.0.0.1/32 via 10.0.2.2 dev eth0 src 10.0.2.15",
    "ip route get 127.0.0.1",
    attempt("127.0.0.1", port),
  ].join("; ");

// A service on the host's loopback (the kind a developer's machine or a CI runner has: databases,
// Docker's API proxy, cloud metadata agents) must be out of every guest's reach, whether the
// machine has internet or not. One boot per setting.
describe.each([false, true])("a guest with internet: %s", (internet) => {
  let runDir: string;
  let launched: Launched;
  let server: Server;
  let port: number;
  const reached: string[] = [];

  beforeAll(async () => {
    server = createServer((socket) => {
      reached.push(`${socket.remoteAddress}:${socket.remotePort}`);
      socket.end("HELLO\n");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as { port: number }).port;
    runDir = await createRunDir();
    const m = machine("debian-bookworm-6.1", "x86_64");
    launched = await launchMachine(
      { ...m, vm: { ...m.vm, internet } },
      { archive: defaultMatrix.archive, runDir, log: (l) => console.log(l) },
    );
  });

  afterAll(async () => {
    await launched?.session.stop();
    await removeRunDir(runDir);
    await new Promise((resolve) => server?.close(resolve));
    expect(liveCount()).toBe(0);
    expect(await qemuProcesses(runDir)).toEqual([]);
    const { stdout } = await execa("pgrep", ["-a", "-f", "pasta"], { reject: false });
    expect(stdout.split("\n").filter((l) => l.includes(runDir))).toEqual([]);
  });

  it("cannot connect to a service on the host's 127.0.0.1, whatever address it tries", async () => {
    const targets = ["10.0.2.2", "10.0.2.3", "127.0.0.1", ...hostAddresses];
    const r = await launched.session.run(targets.map((t) => attempt(t, port)).join("; "), {
      timeoutMs: 120_000,
    });
    console.log(`internet ${internet}, host service on 127.0.0.1:${port}:\n${r.stdout}`);
    expect(r.stdout.trim().split("\n")).toEqual(targets.map((t) => `closed ${t}`));
    expect(reached).toEqual([]);
  });

  it("listens for SSH on the host's loopback only", async () => {
    const sshPort = launched.session.vm.sshPort;
    for (const address of hostAddresses) {
      const refused = await new Promise<boolean>((resolve) => {
        const s = connect(sshPort, address);
        s.once("connect", () => {
          s.destroy();
          resolve(false);
        });
        s.once("error", () => resolve(true));
      });
      expect(refused, `${address}:${sshPort}`).toBe(true);
    }
  });

  it.runIf(internet)("resolves names and fetches from Debian's archive", async () => {
    const r = await launched.session.run(
      [
        "cat /etc/resolv.conf",
        "getent hosts deb.debian.org",
        `timeout 30 bash -c 'exec 3<>/dev/tcp/deb.debian.org/80 && printf "GET /debian/dists/bookworm/Release HTTP/1.1\\r\\nHost: deb.debian.org\\r\\nConnection: close\\r\\n\\r\\n" >&3 && head -1 <&3'`,
      ].join(" && "),
      { timeoutMs: 60_000 },
    );
    console.log(r.stdout, r.stderr);
    expect(r.exitCode).toBe(0);
    const [resolv, host, status] = r.stdout.split("\n");
    expect(resolv).toBe(`nameserver ${GUEST_NAMESERVER}`);
    expect(host).toMatch(/^\S+\s+deb\.debian\.org/);
    expect(status).toMatch(/^HTTP\/1\.[01] 200 /);
  });

  it.runIf(!internet)("resolves no names", async () => {
    const r = await launched.session.run("timeout 20 getent hosts deb.debian.org", { timeoutMs: 60_000 });
    expect(r.exitCode).not.toBe(0);
  });

  it("cannot reach it either with packets addressed to 127.0.0.1 themselves (root in the guest)", async () => {
    const r = await launched.session.run(rawLoopback(port), { timeoutMs: 60_000 });
    console.log(`internet ${internet}, raw 127.0.0.1:\n${r.stdout}${r.stderr}`);
    // The route took: the packets did leave through eth0.
    expect(r.stdout).toMatch(/^127\.0\.0\.1 via 10\.0\.2\.2 dev eth0/m);
    expect(r.stdout.trim().split("\n").at(-1)).toBe("closed 127.0.0.1");
    expect(reached).toEqual([]);
  });
});
