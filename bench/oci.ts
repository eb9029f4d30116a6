/**
 * npm run bench:oci — machines from OCI images against the Debian machine they were made from
 * (debian-bookworm-6.1, x86_64): the test's fixture images (test/integration/oci-fixture.ts; falco-nopvh
 * is Falco's layout with the PVH note taken out of its vmlinux, booted through kmatrix's shim) are
 * pushed to a registry on 127.0.0.1, then per machine, in a fresh cache for the OCI entries:
 *   pull      — skopeo copy into the cache (kernel and root disk images);
 *   image     — resolve + pull + unpack + kernel/initrd/root-disk entries, cold (pull included);
 *   boot      — QEMU start until kmatrix holds a working SSH connection (first boot);
 * and the Debian machine's boot for comparison (its images are cached; their cold build is in its
 * manifests). Run under `flock /tmp/kmatrix-vm.lock`.
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseMatrix } from "../src/config/load.js";
import type { Machine } from "../src/config/types.js";
import { launchMachine } from "../src/guest/launch.js";
import { cacheRoot, readManifest } from "../src/images/cache.js";
import { prepareImage } from "../src/images/index.js";
import { createRunDir, removeRunDir } from "../src/vm/run-dirs.js";
import { defaultMatrix, machine } from "../test/integration/helpers.js";
import { buildOciFixture, pushFixture, startRegistry } from "../test/integration/oci-fixture.js";

const log = (l: string) => console.error(l);
const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const fixture = await buildOciFixture(log);
const regDir = await mkdtemp(join(tmpdir(), "kmx-registry-"));
const registry = await startRegistry(regDir);
const runDir = await createRunDir();
const rows: string[] = [];
try {
  await pushFixture(fixture, registry.host);
  const r = `${registry.host}/kmatrix`;
  const matrix = parseMatrix(
    `registries: { "${registry.host}": { tlsVerify: false } }
machines:
  - { name: falco-6.1, arch: x86_64, kernel: { source: oci, image: "${r}/falco-kernel:6.1-x86_64" }, rootfs: { source: oci, image: "${r}/root:systemd" } }
  - { name: falco-nopvh, arch: x86_64, kernel: { source: oci, image: "${r}/falco-kernel:6.1-x86_64-nopvh" }, rootfs: { source: oci, image: "${r}/root:systemd" } }
  - { name: lvh-6.1, arch: x86_64, kernel: { source: oci, image: "${r}/lvh-kernel:6.1-main" }, rootfs: { source: oci, image: "${r}/root:plain" } }
  - { name: falco-debian-6.1, arch: x86_64, kernel: { source: oci, image: "${r}/falco-kernel:6.1-x86_64" }, rootfs: { source: debian, suite: bookworm } }
`,
    "bench",
  );
  const only = process.env.MACHINES?.split(",");
  const boot = async (m: Machine) => {
    const t0 = Date.now();
    const launched = await launchMachine(m, { archive: matrix.archive, runDir, log });
    const ms = Date.now() - t0;
    const uname = await launched.session.run("uname -r; cat /proc/1/comm");
    await launched.session.stop();
    return { ms, uname: uname.stdout.trim().replace(/\n/g, ", ") };
  };
  for (const m of matrix.machines.filter((x) => !only || only.includes(x.name))) {
    if (!process.env.KEEP) await forgetOci();
    const t0 = Date.now();
    const image = await prepareImage(m, { archive: matrix.archive, log });
    const imageMs = Date.now() - t0;
    const b = await boot(m);
    rows.push(
      `${m.id.padEnd(24)} kernel ${image.manifests.kernel.layout ?? "-"}, disk ${image.manifests.rootfs.layout ?? "debian"}: image ${s(imageMs)} (cold, pull included), first boot ${s(b.ms)} [${b.uname}]`,
    );
    console.error(rows[rows.length - 1]);
  }
  const deb = machine("debian-bookworm-6.1", "x86_64");
  const image = await prepareImage(deb, { archive: defaultMatrix.archive });
  const b = await boot(deb);
  const built =
    image.manifests.kernel.buildSeconds +
    image.manifests.boot.buildSeconds +
    image.manifests.rootfs.buildSeconds;
  rows.push(
    `${deb.id.padEnd(24)} image ${built.toFixed(1)} s (cold, from its manifests), boot ${s(b.ms)} [${b.uname}]`,
  );
} finally {
  await removeRunDir(runDir);
  await registry.stop();
  await rm(regDir, { recursive: true, force: true });
}
console.log(rows.join("\n"));

/** Drops the OCI pulls and every entry made from them, so that each machine starts cold. */
async function forgetOci(): Promise<void> {
  const root = cacheRoot();
  await rm(join(root, "oci"), { recursive: true, force: true });
  const ociKernels = new Set<string>();
  for (const e of await readdir(join(root, "kernels")).catch(() => [] as string[])) {
    const m = await readManifest<{ key: string; resolved?: { source?: string } }>(join(root, "kernels", e));
    if (m?.resolved?.source === "oci") {
      ociKernels.add(m.key);
      await rm(join(root, "kernels", e), { recursive: true, force: true });
    }
  }
  for (const kind of ["boot", "rootfs"])
    for (const e of await readdir(join(root, kind)).catch(() => [] as string[])) {
      const m = await readManifest<{ recipe?: { kernelKey?: string } }>(join(root, kind, e));
      if (e.startsWith("oci-") || ociKernels.has(m?.recipe?.kernelKey ?? ""))
        await rm(join(root, kind, e), { recursive: true, force: true });
    }
}
