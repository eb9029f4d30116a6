/**
 * A real kernel tree without the network after the first time: Debian bookworm's linux-source-6.1
 * (the source of the archive's 6.1 kernels as a tarball), fetched by kmatrix's own archive client.
 * That way the .deb is checked along the archive's signed chain and kept in kmatrix's cache
 * (`archive/debs/`, which CI caches anyway), the test needs no root and no extra host package, and
 * the version is whatever the suite's signed index names, not whatever the host happens to have.
 */
import { join } from "node:path";
import { execa } from "execa";
import { cacheRoot } from "../../src/images/cache.js";
import { compareDebianVersions, DebianArchive } from "../../src/images/debian-archive.js";
import { defaultMatrix } from "./helpers.js";

export interface LinuxSource {
  tarball: string;
  version: string;
}

/** Unpacks the package into `dir` and returns its tarball (`usr/src/linux-source-6.1.tar.xz`). */
export async function linuxSourceTarball(dir: string, series = "6.1"): Promise<LinuxSource> {
  const archive = new DebianArchive({ ...defaultMatrix.archive, cacheDir: cacheRoot() });
  const name = `linux-source-${series}`;
  const pkg = (await archive.packages("bookworm", "amd64"))
    .filter((p) => p.name === name)
    .sort((a, b) => compareDebianVersions(b.version, a.version))[0];
  if (!pkg) throw new Error(`no ${name} in bookworm`);
  await execa("dpkg-deb", ["-x", await archive.download(pkg), dir]);
  return { tarball: join(dir, "usr/src", `${name}.tar.xz`), version: pkg.version };
}
