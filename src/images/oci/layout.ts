/**
 * Which kind of image an unpacked OCI image is. Kernels: Falco's (`/boot/vmlinux` + `/boot/initrd`)
 * or little-vm-helper's (`/data/kernels/<ver>/boot/vmlinuz-<release>` + `lib/modules/<release>`).
 * Root disks: one whose init is systemd boots with it ("systemd", Falco's root disks); any other
 * image with a shell and sshd boots with kmatrix's init ("container").
 */
import { lstat, readlink } from "node:fs/promises";
import { join, posix } from "node:path";

export type KernelLayout =
  | { layout: "falco"; vmlinux: string; initrd?: string }
  | { layout: "lvh"; version: string; release: string; vmlinuz: string; modules: string; boot: string };

/** From the image's file list (relative paths, `/`-separated); an error names the image and what was expected. */
export function detectKernelLayout(paths: readonly string[], image: string): KernelLayout {
  const has = new Set(paths);
  if (has.has("boot/vmlinux"))
    return {
      layout: "falco",
      vmlinux: "boot/vmlinux",
      ...(has.has("boot/initrd") && { initrd: "boot/initrd" }),
    };
  const lvh = paths
    .map((p) => /^data\/kernels\/([^/]+)\/boot\/vmlinuz-([^/]+)$/.exec(p))
    .filter((m): m is RegExpExecArray => !!m);
  if (lvh.length > 1)
    throw new Error(`${image}: several kernels under /data/kernels (${lvh.map((m) => m[0]).join(", ")})`);
  const m = lvh[0];
  if (m?.[1] && m[2]) {
    const [, version, release] = m;
    const modules = `data/kernels/${version}/lib/modules/${release}`;
    if (!paths.some((p) => p.startsWith(`${modules}/`)))
      throw new Error(`${image}: /${m[0]} has no /${modules}`);
    return { layout: "lvh", version, release, vmlinuz: m[0], modules, boot: `data/kernels/${version}/boot` };
  }
  throw new Error(
    `${image}: no kernel found (expected /boot/vmlinux + /boot/initrd as Falco's images, or /data/kernels/<version>/boot/vmlinuz-<release> as little-vm-helper's)`,
  );
}

export type RootDiskLayout = "systemd" | "container";

/** Where the root disk's init (stage 2 of guest-init.ts) starts sshd; systemd disks use their own unit. */
export const SSHD = "/usr/sbin/sshd";

/**
 * The root disk's layout; a missing shell or sshd is an error naming the image: kmatrix reaches
 * every machine over SSH and runs commands with /bin/sh.
 */
export async function detectRootDiskLayout(tree: string, image: string): Promise<RootDiskLayout> {
  if (!(await resolveInTree(tree, "/bin/sh")))
    throw new Error(`${image}: no /bin/sh: a root disk needs a shell`);
  if (!(await resolveInTree(tree, SSHD)))
    throw new Error(
      `${image}: no ${SSHD}: kmatrix reaches machines over SSH (install openssh-server in the image)`,
    );
  const init = await resolveInTree(tree, "/sbin/init");
  return init && posix.basename(init) === "systemd" ? "systemd" : "container";
}

/**
 * `path` inside `tree` with its symlinks followed as the guest would (absolute targets from the
 * tree's root, never above it): the final path if it is a regular file, else undefined.
 */
export async function resolveInTree(tree: string, path: string): Promise<string | undefined> {
  let parts = path.split("/").filter(Boolean);
  let done: string[] = [];
  for (let hops = 0; parts.length > 0; ) {
    const part = parts.shift() as string;
    if (part === ".") continue;
    if (part === "..") {
      done.pop();
      continue;
    }
    const here = join(tree, ...done, part);
    const st = await lstat(here).catch(() => undefined);
    if (!st) return undefined;
    if (st.isSymbolicLink()) {
      if (++hops > 40) return undefined;
      const target = await readlink(here);
      if (target.startsWith("/")) done = [];
      parts = [...target.split("/").filter(Boolean), ...parts];
      continue;
    }
    done.push(part);
    if (parts.length === 0) return st.isFile() ? `/${done.join("/")}` : undefined;
  }
  return undefined;
}

/**
 * Refuses to write into `tree` through a symbolic link the image put in the way (it could point
 * anywhere on the host): every existing component of each `rel` must be a real directory.
 */
export async function assertNoLinks(tree: string, rels: readonly string[], image: string): Promise<void> {
  for (const rel of rels) {
    const parts = rel.split("/").filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const st = await lstat(join(tree, ...parts.slice(0, i))).catch(() => undefined);
      if (!st) break;
      if (!st.isDirectory())
        throw new Error(
          `${image}: /${parts.slice(0, i).join("/")} is not a directory; kmatrix will not write through it`,
        );
    }
  }
}
