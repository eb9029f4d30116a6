/**
 * Mount points below a directory, and unmounting them before the directory is deleted. A kmatrix
 * killed while mmdebstrap built a root disk leaves proc, sys, dev/pts, dev/shm (and what package
 * scripts mounted) inside the cache entry's temporary directory; `rm -rf` across them would delete
 * through to the host's devices and files, so nothing below a mount point is deleted until it is gone.
 */
import { readFile, realpath } from "node:fs/promises";
import { execa } from "execa";

export interface MountInfo {
  id: number;
  parentId: number;
  /** Where it is mounted, as this process sees it (octal escapes undone). */
  mountPoint: string;
  fsType: string;
}

/** `/proc/self/mountinfo` (proc(5)): `id parent maj:min root mountpoint options [optional…] - fstype source super`. */
export function parseMountInfo(text: string): MountInfo[] {
  const mounts: MountInfo[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    const dash = fields.indexOf("-", 6);
    const [id, parentId, , , mountPoint] = fields;
    if (dash < 0 || !id || !parentId || mountPoint === undefined) continue;
    mounts.push({
      id: Number(id),
      parentId: Number(parentId),
      mountPoint: unescapeOctal(mountPoint),
      fsType: fields[dash + 1] ?? "",
    });
  }
  return mounts;
}

/** The kernel writes space, tab, newline and backslash in paths as `\040`, `\011`, `\012`, `\134`. */
function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/**
 * The mounts at or below `dir` (a canonical path), in the order they can be unmounted: deepest
 * first, i.e. every mount before the one it sits in (its parent in the mount tree), and the later
 * of two mounts first (mountinfo lists them in the order they were made), so that a mount stacked
 * on a path goes before the one it covers, whose own submounts only then can be reached by path.
 */
export function mountsBelow(mounts: MountInfo[], dir: string): MountInfo[] {
  const top = dir.replace(/\/+$/, "");
  const left = mounts.filter((m) => m.mountPoint === top || m.mountPoint.startsWith(`${top}/`));
  const order: MountInfo[] = [];
  while (left.length > 0) {
    // The last-made mount with nothing of the set still inside it (mount ids never form a cycle,
    // but a broken parent id must not hang this: then the last one goes).
    let i = left.length - 1;
    while (i >= 0 && left.some((m) => m.parentId === left[i]?.id)) i--;
    const [next] = left.splice(i >= 0 ? i : left.length - 1, 1);
    if (next) order.push(next);
  }
  return order;
}

/**
 * Unmounts everything at or below `dir`, deepest first, lazily when a mount is busy. Returns why
 * something is still mounted there (one line), or undefined when nothing is: only then may `dir`
 * be deleted.
 */
export async function unmountBelow(dir: string): Promise<string | undefined> {
  const real = await realpath(dir).catch(() => undefined);
  if (!real) return undefined; // nothing there, nothing mounted there
  const read = () => readFile("/proc/self/mountinfo", "utf8").then(parseMountInfo);
  let mounts: MountInfo[];
  try {
    mounts = mountsBelow(await read(), real);
  } catch (err) {
    return `cannot read /proc/self/mountinfo: ${(err as Error).message}`;
  }
  if (mounts.length === 0) return undefined;
  // Unmounting a mount also unmounts its twins under the peers of its parent, and an rbind copy
  // of /sys or /proc is a peer of the host's: its submounts, one by one, would take the host's
  // /sys/fs/cgroup with them. So a parent in the entry is made a slave first (it is reachable by
  // path then: what was stacked on it, made later, is gone).
  const byId = new Map(mounts.map((m) => [m.id, m]));
  const slaves = new Set<number>();
  for (const m of mounts) {
    const parent = byId.get(m.parentId);
    if (parent && !slaves.has(parent.id)) {
      await execa("mount", ["--make-rslave", parent.mountPoint], { reject: false });
      slaves.add(parent.id);
    }
    const plain = await execa("umount", [m.mountPoint], { reject: false });
    if (plain.exitCode === 0) continue;
    const lazy = /busy/i.test(plain.stderr)
      ? await execa("umount", ["--lazy", m.mountPoint], { reject: false })
      : plain;
    if (lazy.exitCode === 0) continue;
    // Gone meanwhile (its builder's own clean-up, or unmounted with another): nothing to do.
    if (!(await read()).some((n) => n.id === m.id)) continue;
    const why = lastLine(lazy.stderr).replace(`umount: ${m.mountPoint}: `, "");
    return `${lazy === plain ? "umount" : "umount --lazy"} ${m.mountPoint}: ${why}`;
  }
  const left = mountsBelow(await read(), real);
  return left.length ? `still mounted: ${left.map((m) => m.mountPoint).join(", ")}` : undefined;
}

function lastLine(text: string): string {
  return text.trim().split("\n").pop() || "failed";
}
