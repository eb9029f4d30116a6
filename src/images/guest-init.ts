/**
 * The two tiny init programs every machine boots with. No systemd: a minimal init is what makes
 * boot fast (virtme-ng boots in well under a second with one). Both are shell scripts so that they
 * run unchanged on every distro and architecture.
 *
 * Stage 1 lives in the initrd (busybox): load the modules the root disk needs, mount it, install
 * the SSH key, hand over. Stage 2 runs from the root disk's own /bin/sh: mounts what drivers need,
 * brings up the network, starts sshd and says so on the console.
 */

/** Printed on the console once sshd listens. */
export const READY_MARKER = "KMATRIX-READY";
/** Printed on the console when init cannot continue; the rest of the line says why. */
export const FATAL_MARKER = "KMATRIX-FATAL:";

/** Printed by the bare initrd (a busybox that only says this and powers off). */
export const BARE_MARKER = "KMATRIX-BARE-INIT";

/**
 * The least a kernel can do: reach init. Used to prove that an accelerator really runs guests, and
 * as the yardstick of boot benchmarks.
 */
export const BARE_INIT = `#!/bin/busybox sh
/bin/busybox echo ${BARE_MARKER}
/bin/busybox poweroff -f
`;

/** User-mode networking (slirp) gives every guest the same private subnet. */
export const GUEST_ADDRESS = "10.0.2.15/24";
export const GUEST_GATEWAY = "10.0.2.2";

export const STAGE1_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fatal() { echo "${FATAL_MARKER} $*"; sync; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod "/modules/$m.ko" || fatal "insmod $m failed"; done
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1)); [ $i -gt 1000 ] && fatal "no root disk /dev/vda after 10 s"
  usleep 10000
done
mkdir -p /newroot
mount -t ext4 -o rw,noatime /dev/vda /newroot || fatal "cannot mount /dev/vda"
mkdir -p /newroot/root/.ssh
cp /authorized_keys /newroot/root/.ssh/authorized_keys
chmod 700 /newroot/root/.ssh; chmod 600 /newroot/root/.ssh/authorized_keys
mount -t tmpfs -o mode=755 tmpfs /newroot/run
cp /stage2 /newroot/run/kmatrix-init
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /bin/sh /run/kmatrix-init
`;

export const STAGE2_INIT = `#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
fatal() { echo "${FATAL_MARKER} $*"; sync; echo o > /proc/sysrq-trigger; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
hostname kmatrix
ip link set lo up || fatal "no ip(8) on the root disk"
ip link set eth0 up || fatal "no network interface eth0"
ip addr add ${GUEST_ADDRESS} dev eth0
ip route add default via ${GUEST_GATEWAY}
mkdir -p /run/sshd
# sshd forks only once its socket listens: the marker below never races the port.
/usr/sbin/sshd -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -o UseDNS=no \\
  -o PermitRootLogin=prohibit-password || fatal "sshd did not start"
echo "${READY_MARKER}"
# PID 1 must reap orphans; dash's wait collects any exited child.
while :; do sleep 5; wait; done
`;
