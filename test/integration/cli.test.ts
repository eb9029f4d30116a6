import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { CLI, qemuProcesses } from "./helpers.js";

const kmatrix = (args: string[]) => execa("node", [CLI, ...args], { reject: false, cwd: "/" });

/** `kmatrix shell … -- sleep 600`, once its machine is ready; `mine` finds its QEMU. */
async function sleepingShell() {
  const child = execa(
    "node",
    [CLI, "shell", "debian-bookworm-6.1", "--arch", "x86_64", "--", "sleep", "600"],
    {
      reject: false,
      all: true,
    },
  );
  await new Promise<void>((resolve) =>
    child.all?.on("data", (c: Buffer) => {
      if (c.toString().includes("ready in")) resolve();
    }),
  );
  return { child, mine: `/runs/${child.pid}-` };
}

describe("kmatrix shell", () => {
  it("prints a 6.1 kernel release on x86_64 and exits with the command's code", async () => {
    const r = await kmatrix([
      "shell",
      "debian-bookworm-6.1",
      "--arch",
      "x86_64",
      "--",
      "sh",
      "-c",
      "uname -r; exit 5",
    ]);
    expect(r.stdout).toMatch(/^6\.1\.\S+-amd64$/);
    expect(r.exitCode).toBe(5);
  });

  it("prints aarch64 on the aarch64 machine", async () => {
    const r = await kmatrix(["shell", "debian-bookworm-6.1", "--arch", "aarch64", "--", "uname", "-m"]);
    expect(r.stdout).toBe("aarch64");
    expect(r.exitCode).toBe(0);
  });

  it("tears the VM down within 5 s of SIGINT", async () => {
    const { child, mine } = await sleepingShell();
    expect((await qemuProcesses(mine)).length).toBe(1);
    const sent = Date.now();
    child.kill("SIGINT");
    const r = await child;
    expect(Date.now() - sent).toBeLessThan(5000);
    expect(r.exitCode).toBe(130);
    expect(await qemuProcesses(mine)).toEqual([]);
  });

  it("leaves no QEMU behind when killed with SIGKILL, and clean removes its scratch files", async () => {
    const { child, mine } = await sleepingShell();
    expect((await qemuProcesses(mine)).length).toBe(1);
    child.kill("SIGKILL");
    await child;
    // The kernel delivers QEMU's parent-death signal; give it a moment to be reaped.
    await new Promise((r) => setTimeout(r, 500));
    expect(await qemuProcesses(mine)).toEqual([]);
    const clean = await kmatrix(["clean"]);
    expect(clean.stdout).toMatch(/removed [1-9]\d* stale run director/);
  });
});

describe("kmatrix machines and config errors", () => {
  it("lists the eight default machines as JSON", async () => {
    const r = await kmatrix(["machines", "--json"]);
    const ids = JSON.parse(r.stdout).map((m: { id: string }) => m.id);
    expect(ids).toHaveLength(8);
    expect(ids).toContain("debian-bookworm-6.1@aarch64");
  });

  it("rejects a bad config with one line naming the field, exit code 2", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kmx-config-"));
    const config = join(dir, "bad.yaml");
    await writeFile(
      config,
      "machines:\n  - name: x\n    arch: arm64\n    kernel: { source: debian, suite: bookworm }\n",
    );
    const r = await kmatrix(["machines", "--config", config]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/bad\.yaml: machines\[0\]\.arch: expected "x86_64" or "aarch64", got "arm64"/);
  });
});
