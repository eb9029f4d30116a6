import { describe, expect, it } from "vitest";
import { mountsBelow, parseMountInfo } from "../../src/util/mounts.js";

// What a kmatrix killed during mmdebstrap leaves: its proc (with binfmt_misc a package script
// mounted), a fresh sysfs, an rbind copy of /sys with its submounts, dev/pts and dev/shm.
const T = "/root/.cache/kmatrix/rootfs/bookworm-amd64-0123456789abcdef.tmp-4242/rootfs";
const MOUNTINFO = [
  "22 1 0:21 / /proc rw,relatime shared:12 - proc proc rw",
  "23 1 0:22 / /sys rw,relatime shared:2 - sysfs sysfs rw",
  "30 23 0:26 / /sys/fs/cgroup rw,relatime shared:4 - cgroup2 cgroup2 rw",
  "1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
  `100 1 0:40 / ${T}/proc ro,relatime shared:50 - proc proc rw`,
  `101 100 0:41 / ${T}/proc/sys/fs/binfmt_misc rw,relatime shared:51 - binfmt_misc binfmt_misc rw`,
  `102 1 0:22 / ${T}/sys rw,relatime shared:2 - sysfs sysfs rw`,
  `103 102 0:26 / ${T}/sys/fs/cgroup rw,relatime shared:4 - cgroup2 cgroup2 rw`,
  `104 1 0:42 / ${T}/dev/pts rw,nosuid,noexec shared:52 - devpts none rw,mode=620,ptmxmode=666`,
  `105 1 0:43 / ${T}/dev/shm rw,nosuid,nodev,noexec shared:53 - tmpfs tmpfs rw`,
  // Mounted over the first proc: the later one must go first.
  `106 100 0:44 / ${T}/proc rw,relatime - proc proc rw`,
  // A neighbour whose name starts the same is not below it.
  "107 1 0:45 / /root/.cache/kmatrix/rootfs/bookworm-amd64-0123456789abcdef.tmp-42420/rootfs/proc rw - proc proc rw",
  "108 1 0:46 / /mnt/with\\040space rw - tmpfs tmpfs rw",
  "",
].join("\n");

describe("mountinfo", () => {
  it("parses ids, parents, mount points (escapes undone) and types", () => {
    const mounts = parseMountInfo(MOUNTINFO);
    expect(mounts).toHaveLength(13);
    expect(mounts[4]).toEqual({ id: 100, parentId: 1, mountPoint: `${T}/proc`, fsType: "proc" });
    expect(mounts.find((m) => m.id === 108)?.mountPoint).toBe("/mnt/with space");
    expect(mounts.find((m) => m.id === 30)?.fsType).toBe("cgroup2");
  });

  it("lists what is mounted below a directory, deepest first, the last-made first", () => {
    const order = mountsBelow(parseMountInfo(MOUNTINFO), T.replace(/\/rootfs$/, "")).map((m) => m.id);
    expect([...order].sort((a, b) => a - b)).toEqual([100, 101, 102, 103, 104, 105, 106]);
    const unmountsBefore = (a: number, b: number) => expect(order.indexOf(a)).toBeLessThan(order.indexOf(b));
    unmountsBefore(101, 100); // binfmt_misc inside proc
    unmountsBefore(103, 102); // the cgroup inside the sys copy
    unmountsBefore(106, 100); // proc mounted over proc
    // binfmt_misc's path leads into the proc on top until that one is gone (umount: "no mount point").
    unmountsBefore(106, 101);
    expect(order).toEqual([106, 105, 104, 103, 102, 101, 100]);
    expect(mountsBelow(parseMountInfo(MOUNTINFO), `${T}/`).map((m) => m.id)).toEqual(order);
  });

  it("finds nothing below a directory with no mounts, and takes a mount on the directory itself", () => {
    expect(mountsBelow(parseMountInfo(MOUNTINFO), "/root/.cache/kmatrix/kernels")).toEqual([]);
    expect(mountsBelow(parseMountInfo(MOUNTINFO), `${T}/dev/shm`).map((m) => m.id)).toEqual([105]);
  });
});
