/**
 * npm run bench:oci-repeat — how reliably machines from OCI images run: the example plan, ROUNDS
 * times (default 5), on MACHINES (default falco-6.1@x86_64: Falco's layout on microvm;
 * falco-nopvh@x86_64: the same kernel without its PVH note, booted through kmatrix's shim), made from
 * the integration test's images (test/integration/oci-fixture.ts) in a registry on 127.0.0.1.
 * Per round: wall time, verdicts, and every stall or oops line the console had. LOAD=n adds n busy
 * loops on the host for the whole run, as a CI runner's other work would. Run under
 * `flock /tmp/kmatrix-vm.lock`. COMPILE_IN=vm|sandbox|auto is passed as `--compile-in` (default: the
 * plan's `auto`, i.e. the sandbox here); JOBS as `--jobs` (default 1). A MACHINES entry
 * `a@x86_64+b@x86_64` runs both machines in one kmatrix run.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CellRecord } from "../src/results/types.js";
import { classifyConsoleLine } from "../src/vm/console.js";
import { EXAMPLE_TESTS } from "../test/integration/helpers.js";
import { buildOciFixture, pushFixture, startRegistry } from "../test/integration/oci-fixture.js";
import { timedKmatrix } from "./kmatrix-process.js";

const rounds = Number(process.env.ROUNDS ?? 5);
const machines = (process.env.MACHINES ?? "falco-6.1@x86_64").split(",");
const fixture = await buildOciFixture((l) => console.error(l));
const tmp = await mkdtemp(join(tmpdir(), "kmx-oci-repeat-"));
const registry = await startRegistry(tmp);
const busy = Array.from({ length: Number(process.env.LOAD ?? 0) }, () =>
  spawn("sh", ["-c", "while :; do :; done"], { stdio: "ignore" }),
);
let stalledRounds = 0;
try {
  await pushFixture(fixture, registry.host);
  const r = `${registry.host}/kmatrix`;
  const config = join(tmp, "kmatrix.yaml");
  await writeFile(
    config,
    `registries: { "${registry.host}": { tlsVerify: false } }
machines:
  - { name: falco-6.1, arch: x86_64, kernel: { source: oci, image: "${r}/falco-kernel:6.1-x86_64" }, rootfs: { source: oci, image: "${r}/root:systemd" } }
  - { name: falco-nopvh, arch: x86_64, kernel: { source: oci, image: "${r}/falco-kernel:6.1-x86_64-nopvh" }, rootfs: { source: oci, image: "${r}/root:systemd" } }
  - { name: falco-6.1, arch: aarch64, kernel: { source: oci, image: "${r}/falco-kernel:6.1" }, rootfs: { source: oci, image: "${r}/root:systemd" } }
  - { name: lvh-6.1, arch: x86_64, kernel: { source: oci, image: "${r}/lvh-kernel:6.1-main" }, rootfs: { source: oci, image: "${r}/root:plain" } }
  - { name: debian-bookworm-6.1, arch: x86_64, kernel: { source: debian, suite: bookworm } }
  - { name: debian-bullseye-5.10, arch: x86_64, kernel: { source: debian, suite: bullseye } }
  - { name: debian-bookworm-6.1, arch: aarch64, kernel: { source: debian, suite: bookworm } }
  - { name: debian-bullseye-5.10, arch: aarch64, kernel: { source: debian, suite: bullseye } }
`,
  );
  for (let round = 1; round <= rounds; round++)
    for (const group of machines) {
      // "a@x86_64+b@x86_64": both machines in one kmatrix run (with JOBS=2, two VMs at once).
      const ids = group.split("+");
      const out = join(tmp, `run-${round}-${group}`);
      const args = ["run", "--plan", "example", "--jobs", process.env.JOBS ?? "1", "--config", config];
      for (const id of ids) args.push("-m", id.split("@")[0] ?? "");
      args.push("--arch", ids[0]?.split("@")[1] ?? "x86_64", "--output", out);
      if (process.env.COMPILE_IN) args.push("--compile-in", process.env.COMPILE_IN);
      const t = await timedKmatrix(args);
      const verdicts: string[] = [];
      for (const id of ids)
        for (const test of EXAMPLE_TESTS) {
          const cell = JSON.parse(
            await readFile(join(out, "cells", id, `${test}.json`), "utf8").catch(() => "{}"),
          ) as Partial<CellRecord>;
          const reason = cell.verdict === "error" ? ` (${cell.reason})` : "";
          verdicts.push(`${ids.length > 1 ? `${id} ` : ""}${test}=${cell.verdict ?? "none"}${reason}`);
        }
      const faults: string[] = [];
      for (const c of await readdir(join(out, "consoles")).catch(() => [] as string[]))
        for (const line of (await readFile(join(out, "consoles", c), "utf8")).split("\n"))
          if (classifyConsoleLine(line)?.kind.match(/panic|oops|hung|warning/))
            faults.push(`${c}: ${line.trim()}`);
      if (faults.length) stalledRounds++;
      console.log(
        `round ${round} ${group}: ${(t.wallMs / 1000).toFixed(1)} s, exit ${t.exitCode}; ${verdicts.join(", ")}`,
      );
      for (const f of faults) console.log(`  ${f}`);
    }
  console.log(`${stalledRounds} of ${rounds * machines.length} runs had a stall or oops on a console`);
} finally {
  for (const b of busy) b.kill();
  await registry.stop();
  await rm(tmp, { recursive: true, force: true });
}
