import { execa } from "execa";

/** Installed package name → version, from a dpkg status file's text. */
export function installedPackages(status: string): Map<string, string> {
  const installed = new Map<string, string>();
  for (const stanza of status.split(/\n\s*\n/)) {
    const field = (name: string) => new RegExp(`^${name}: *(.*)$`, "m").exec(stanza)?.[1]?.trim();
    const name = field("Package");
    const version = field("Version");
    if (name && version && field("Status")?.endsWith(" installed")) installed.set(name, version);
  }
  return installed;
}

/**
 * The packages installed in an ext4 root disk, read with debugfs (e2fsprogs): nothing is mounted
 * and nothing of the disk runs.
 */
export async function installedInDisk(disk: string): Promise<Map<string, string>> {
  const { stdout } = await execa("debugfs", ["-R", "cat /var/lib/dpkg/status", disk], {
    maxBuffer: 256 * 1024 ** 2,
  });
  return installedPackages(stdout);
}

/** A Debian version without its epoch and revision: `4:12.2.0-14+deb12u1` → `12.2.0`. */
export function upstreamVersion(version: string): string {
  const noEpoch = version.replace(/^\d+:/, "");
  const dash = noEpoch.lastIndexOf("-");
  return dash > 0 ? noEpoch.slice(0, dash) : noEpoch;
}
