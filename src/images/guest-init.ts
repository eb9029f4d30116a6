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

// Everything that can be done by the initrd's static busybox is: under emulation every exec of a
// dynamically linked program costs ~150 ms, a static one a fraction of that.
export const STAGE1_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fatal() { echo "${FATAL_MARKER} $*"; sync; poweroff -f; }
stamp() { read -r t _ < $R/proc/uptime; echo "kmatrix: $1 at $t s"; }
R=
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
stamp "stage 1"
for m in $(cat /modules/order); do insmod "/modules/$m.ko" || fatal "insmod $m failed"; done
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1)); [ $i -gt 1000 ] && fatal "no root disk /dev/vda after 10 s"
  usleep 10000
done
R=/newroot
mount -t ext4 -o rw,noatime /dev/vda $R || fatal "cannot mount /dev/vda"
mkdir -p $R/root/.ssh
cp /authorized_keys $R/root/.ssh/authorized_keys
chmod 700 $R/root/.ssh; chmod 600 $R/root/.ssh/authorized_keys
# What drivers need mounted, mounted here so that stage 2 has nothing left to do but sshd.
mount -t tmpfs -o mode=755 tmpfs $R/run
mount --move /dev $R/dev
mount --move /proc $R/proc
mount --move /sys $R/sys
mkdir -p $R/dev/pts $R/dev/shm $R/run/sshd
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs tmpfs $R/tmp
mount -t debugfs debugfs $R/sys/kernel/debug
mount -t tracefs tracefs $R/sys/kernel/tracing
mount -t bpf bpf $R/sys/fs/bpf
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
hostname kmatrix
ip link set lo up
ip link set eth0 up || fatal "no network interface eth0"
ip addr add ${GUEST_ADDRESS} dev eth0
ip route add default via ${GUEST_GATEWAY}
cp /stage2 $R/run/kmatrix-init
stamp "stage 2"
exec switch_root $R /bin/sh /run/kmatrix-init
`;

export const STAGE2_INIT = `#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
fatal() { echo "${FATAL_MARKER} $*"; sync; echo o > /proc/sysrq-trigger; }
# sshd forks only once its socket listens: the marker below never races the port.
# One host key and no PAM: each connection costs less under emulation.
/usr/sbin/sshd -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -o UseDNS=no \\
  -o PermitRootLogin=prohibit-password -o UsePAM=no -o HostKey=/etc/ssh/ssh_host_ed25519_key \\
  || fatal "sshd did not start"
read -r uptime _ < /proc/uptime
echo "${READY_MARKER} uptime=$uptime"
# PID 1 must reap orphans; dash's wait collects any exited child.
while :; do sleep 5; wait; done
`;

/** Written into a root disk whose own init (systemd) boots it; the OCI stage 1 looks for it. */
export const OWN_INIT_MARKER = "/etc/kmatrix-own-init";

/**
 * Stage 1 for root disks from OCI images: as STAGE1_INIT, but a disk that boots with its own init
 * (systemd, marked with OWN_INIT_MARKER) gets only the key and the network before switch_root to
 * /sbin/init: systemd mounts /run, cgroups (v1 on old systemd) and the rest itself, and must find
 * none of them taken. (Debian's disks keep STAGE1_INIT byte for byte: their boot entries' keys.)
 */
export const STAGE1_OCI_INIT = STAGE1_INIT.replace(
  "# What drivers need mounted",
  `if [ -e $R${OWN_INIT_MARKER} ]; then
  hostname kmatrix
  ip link set lo up
  ip link set eth0 up || fatal "no network interface eth0"
  ip addr add ${GUEST_ADDRESS} dev eth0
  ip route add default via ${GUEST_GATEWAY}
  mount --move /dev $R/dev
  mount --move /proc $R/proc
  mount --move /sys $R/sys
  stamp "own init"
  exec switch_root $R /sbin/init
fi
# What drivers need mounted`,
);

/**
 * The unit kmatrix adds to a systemd root disk: once sshd has started (Debian's ssh.service,
 * the RPM distros' sshd.service), say so on the console, as stage 2 does.
 */
export const READY_UNIT = `[Unit]
Description=kmatrix: the machine is ready
Wants=ssh.service sshd.service
After=ssh.service sshd.service network.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'read -r u _ < /proc/uptime; echo "${READY_MARKER} uptime=$u" > /dev/console'

[Install]
WantedBy=multi-user.target
`;
