/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The one event record shared by the three kmx drivers (kernel module, legacy eBPF probe,
 * CO-RE eBPF probe) and by kmx-open, the user-space runner.
 *
 * The includer provides __u16/__u32/__u64/__s32/__s64: <linux/types.h> in the kernel module,
 * the legacy probe and user space, vmlinux.h in the CO-RE probe.
 */
#ifndef KMX_EVENT_H
#define KMX_EVENT_H

/* Bumped whenever struct kmx_event or the ioctls change; kmx-open refuses a different kmod. */
#define KMX_API_VERSION 1

enum kmx_event_type {
	KMX_SYS_ENTER = 0,
	KMX_SYS_EXIT = 1,
};

struct kmx_event {
	__u64 ts_ns;	/* CLOCK_MONOTONIC, nanoseconds */
	__s64 ret;	/* return value (KMX_SYS_EXIT), 0 for KMX_SYS_ENTER */
	__u32 pid;	/* thread group id, what user space calls the pid */
	__u32 tid;	/* thread id */
	__s32 nr;	/* syscall number of the running architecture, -1 if unknown */
	__u16 type;	/* enum kmx_event_type */
	__u16 cpu;
};

/* The kmod's character device, /dev/kmx: read() returns whole struct kmx_event records. */
#define KMX_DEVICE_NAME "kmx"

struct kmx_stats {
	__u64 captured;	/* events written to the buffer since open */
	__u64 dropped;	/* events lost because the buffer was full */
};

#define KMX_IOCTL_MAGIC 'k'
#define KMX_IOCTL_API_VERSION _IO(KMX_IOCTL_MAGIC, 1)		/* returns KMX_API_VERSION */
#define KMX_IOCTL_GET_STATS _IOR(KMX_IOCTL_MAGIC, 2, struct kmx_stats)

#endif /* KMX_EVENT_H */
