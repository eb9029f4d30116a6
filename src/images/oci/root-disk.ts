/**
 * `rootfs: { source: oci, image }`: any container image with a shell and sshd becomes a root disk,
 * used as it is plus what kmatrix needs: the booted kernel's modules (when it has any), an sshd
 * host key when the image has none, and for an image whose init is systemd (Falco's root disks)
 * the unit that says "ready" once sshd runs. kmatrix's key is installed by the initrd at every
 * boot (into the run's overlay), as for Debian's disks: no password is ever used.
 */
import { lstat, mkdir, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { DEFAULT_ROOTFS_SUITE } from "../../config/load.js";
import type { Machine } from "../../config/types.js";
import { OWN_INIT_MARKER, READY_UNIT, STAGE1_OCI_INIT } from "../guest-init.js";
import type { RootDiskPlan, RootDiskSource } from "../root-disk.js";
import { addKernelFiles, writeExt4 } from "../rootfs.js";
import { assertNoLinks, detectRootDiskLayout } from "./layout.js";
import { entryName, parseImageRef } from "./reference.js";
import {
  pulledLayoutDir,
  pullImage,
  type ResolvedImage,
  resolutionFile,
  resolveImage,
  unpackImage,
} from "./registry.js";

/** Bump when build() changes in a way the recipe does not show. */
const RECIPE_VERSION = 1;

/** What the disk is: the image's content (by digest, whatever tag named it) and the kernel. */
interface OciDiskRecipe {
  v: number;
  source: "oci";
  digest: string;
  arch: string;
  kernelKey: string;
  kernelRelease: string;
}

export const ociRootDiskSource: RootDiskSource = {
  // The initrd is kmatrix's whatever the disk: its busybox is Debian's newest stable's.
  busyboxSuite: () => DEFAULT_ROOTFS_SUITE,

  async plan({ machine, debArch, kernel, kernelKey, refresh, log }) {
    if (machine.rootfs.source !== "oci") throw new Error(`${machine.id}: not an OCI root disk`);
    const img = await resolveImage(machine.rootfs.image, machine.arch, {
      tlsVerify: machine.rootfs.tlsVerify,
      refresh,
      log,
    });
    const recipe: OciDiskRecipe = {
      v: RECIPE_VERSION,
      source: "oci",
      digest: img.digest,
      arch: machine.arch,
      kernelKey,
      kernelRelease: kernel.release,
    };
    return { recipe, name: `oci-${entryName(img.ref)}-${debArch}`, stage1: STAGE1_OCI_INIT };
  },

  async build(plan, kernel, tmp, disk, { machine, refresh, log }) {
    if (machine.rootfs.source !== "oci") throw new Error(`${machine.id}: not an OCI root disk`);
    const recipe = plan.recipe as OciDiskRecipe;
    const opts = { tlsVerify: machine.rootfs.tlsVerify, refresh, log };
    const image = machine.rootfs.image;
    const img: ResolvedImage = {
      ...(await resolveImage(image, machine.arch, opts)),
      digest: recipe.digest,
    };
    const { layout: ociLayout } = await pullImage(img, opts);
    const tree = join(tmp, "rootfs");
    const unpackSeconds = await unpackImage(ociLayout, tree);
    log(`${machine.id}: unpacked ${image} in ${unpackSeconds.toFixed(1)} s`);
    const layout = await detectRootDiskLayout(tree, image);

    const libIsLink = !!(await lstat(join(tree, "lib")).catch(() => undefined))?.isSymbolicLink();
    const where = [
      libIsLink ? "usr/lib/modules" : "lib/modules",
      "boot",
      "etc/ssh",
      "etc/systemd/system/multi-user.target.wants",
    ];
    await assertNoLinks(tree, where, image);
    // A kernel without modules (Falco's: built in, or only in its initrd) adds none.
    if ((await readdir(kernel.modulesDir).catch(() => [])).length > 0)
      await addKernelFiles(tree, recipe.kernelRelease, kernel);
    // Distros that make host keys on first boot (sshd-keygen) have none in their image; kmatrix's
    // init starts sshd with this one.
    const hostKey = join(tree, "etc/ssh/ssh_host_ed25519_key");
    if (!(await lstat(hostKey).catch(() => undefined))?.isFile()) {
      await mkdir(join(tree, "etc/ssh"), { recursive: true });
      await rm(hostKey, { force: true });
      await rm(`${hostKey}.pub`, { force: true });
      await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "kmatrix", "-f", hostKey]);
    }
    if (layout === "systemd") {
      const units = join(tree, "etc/systemd/system");
      await mkdir(join(units, "multi-user.target.wants"), { recursive: true });
      // (rm first: writeFile would follow a link the image left at that name.)
      await rm(join(units, "kmatrix-ready.service"), { force: true });
      await writeFile(join(units, "kmatrix-ready.service"), READY_UNIT);
      const wants = join(units, "multi-user.target.wants/kmatrix-ready.service");
      await rm(wants, { force: true });
      await symlink("../kmatrix-ready.service", wants);
      await rm(join(tree, OWN_INIT_MARKER.slice(1)), { force: true });
      await writeFile(join(tree, OWN_INIT_MARKER.slice(1)), "systemd\n");
    }
    const { bytesUsed } = await writeExt4(tree, disk);
    await rm(tree, { recursive: true, force: true });
    return {
      bytesUsed,
      layout,
      image,
      // systemd's udev would rename eth0, which stage 1 set up.
      ...(layout === "systemd" && { kernelArgs: ["net.ifnames=0"] }),
    };
  },
};

/** The cache entries an OCI root disk comes from besides its rootfs entry: the tag's resolution and the pulled layout. */
export function ociRootDiskEntries(plan: RootDiskPlan, machine: Machine): string[] {
  if (machine.rootfs.source !== "oci") return [];
  const { digest } = plan.recipe as OciDiskRecipe;
  return [
    resolutionFile(machine.rootfs.image, machine.arch),
    pulledLayoutDir(parseImageRef(machine.rootfs.image), digest),
  ];
}
