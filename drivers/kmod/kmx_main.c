// SPDX-License-Identifier: GPL-2.0
/*
 * kmx: a small syscall capture module.
 *
 * On open of /dev/kmx it attaches to the raw sys_enter and sys_exit tracepoints (found with
 * for_each_kernel_tracepoint, attached with tracepoint_probe_register) and records one
 * struct kmx_event per call into a ring buffer; read() drains whole records, poll() waits for
 * them. Closing the device detaches. One reader at a time.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/tracepoint.h>
#include <linux/sched.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/poll.h>
#include <linux/vmalloc.h>
#include <linux/uaccess.h>
#include <linux/timekeeping.h>
#include <linux/smp.h>
#include <linux/types.h>
#include <linux/ioctl.h>
#include <asm/syscall.h>

#include "kmx_event.h"

static unsigned int buffer_events = 16384;
module_param(buffer_events, uint, 0444);
MODULE_PARM_DESC(buffer_events, "ring buffer capacity, in events (default 16384)");

struct kmx_ring {
	spinlock_t lock;
	struct kmx_event *events;
	u32 capacity;
	u32 head;	/* next slot to read */
	u32 count;	/* slots in use */
	u64 captured;
	u64 dropped;
};

static struct kmx_ring ring = { .lock = __SPIN_LOCK_UNLOCKED(ring.lock) };
static DECLARE_WAIT_QUEUE_HEAD(readers);
static atomic_t in_use = ATOMIC_INIT(0);

static struct tracepoint *tp_sys_enter;
static struct tracepoint *tp_sys_exit;

static void record(s32 nr, u16 type, s64 ret)
{
	struct kmx_event *ev;
	unsigned long flags;

	spin_lock_irqsave(&ring.lock, flags);
	if (ring.count == ring.capacity) {
		ring.dropped++;
		spin_unlock_irqrestore(&ring.lock, flags);
		return;
	}
	ev = &ring.events[(ring.head + ring.count) % ring.capacity];
	ev->ts_ns = ktime_get_ns();
	ev->ret = ret;
	ev->pid = current->tgid;
	ev->tid = current->pid;
	ev->nr = nr;
	ev->type = type;
	ev->cpu = raw_smp_processor_id();
	ring.count++;
	ring.captured++;
	spin_unlock_irqrestore(&ring.lock, flags);

	if (wq_has_sleeper(&readers))
		wake_up_interruptible(&readers);
}

/* Probe signatures follow TP_PROTO of the sys_enter/sys_exit events (include/trace/events/syscalls.h). */
static void kmx_sys_enter(void *data, struct pt_regs *regs, long id)
{
	record((s32)id, KMX_SYS_ENTER, 0);
}

static void kmx_sys_exit(void *data, struct pt_regs *regs, long ret)
{
	record((s32)syscall_get_nr(current, regs), KMX_SYS_EXIT, ret);
}

static void find_tracepoint(struct tracepoint *tp, void *priv)
{
	if (!strcmp(tp->name, "sys_enter"))
		tp_sys_enter = tp;
	else if (!strcmp(tp->name, "sys_exit"))
		tp_sys_exit = tp;
}

static int attach(void)
{
	int err;

	err = tracepoint_probe_register(tp_sys_enter, kmx_sys_enter, NULL);
	if (err)
		return err;
	err = tracepoint_probe_register(tp_sys_exit, kmx_sys_exit, NULL);
	if (err) {
		tracepoint_probe_unregister(tp_sys_enter, kmx_sys_enter, NULL);
		tracepoint_synchronize_unregister();
	}
	return err;
}

static void detach(void)
{
	tracepoint_probe_unregister(tp_sys_exit, kmx_sys_exit, NULL);
	tracepoint_probe_unregister(tp_sys_enter, kmx_sys_enter, NULL);
	/* No probe runs, or will run, after this returns. */
	tracepoint_synchronize_unregister();
}

static int kmx_open(struct inode *inode, struct file *file)
{
	unsigned long flags;
	int err;

	if (atomic_cmpxchg(&in_use, 0, 1))
		return -EBUSY;

	spin_lock_irqsave(&ring.lock, flags);
	ring.head = ring.count = 0;
	ring.captured = ring.dropped = 0;
	spin_unlock_irqrestore(&ring.lock, flags);

	err = attach();
	if (err)
		atomic_set(&in_use, 0);
	return err;
}

static int kmx_release(struct inode *inode, struct file *file)
{
	detach();
	atomic_set(&in_use, 0);
	return 0;
}

static bool has_events(void)
{
	unsigned long flags;
	bool ret;

	spin_lock_irqsave(&ring.lock, flags);
	ret = ring.count > 0;
	spin_unlock_irqrestore(&ring.lock, flags);
	return ret;
}

static ssize_t kmx_read(struct file *file, char __user *buf, size_t len, loff_t *off)
{
	struct kmx_event batch[16];
	size_t want = len / sizeof(struct kmx_event);
	size_t done = 0;
	unsigned long flags;
	u32 n, i;
	int err;

	if (want == 0)
		return -EINVAL;
	if (!(file->f_flags & O_NONBLOCK)) {
		err = wait_event_interruptible(readers, has_events());
		if (err)
			return err;
	}

	/* Copy out in small batches: copy_to_user may fault, so never under the lock. */
	while (done < want) {
		spin_lock_irqsave(&ring.lock, flags);
		n = min3((u32)ARRAY_SIZE(batch), ring.count, (u32)(want - done));
		for (i = 0; i < n; i++)
			batch[i] = ring.events[(ring.head + i) % ring.capacity];
		ring.head = (ring.head + n) % ring.capacity;
		ring.count -= n;
		spin_unlock_irqrestore(&ring.lock, flags);

		if (n == 0)
			break;
		if (copy_to_user(buf + done * sizeof(struct kmx_event), batch, n * sizeof(struct kmx_event)))
			return -EFAULT;
		done += n;
	}
	if (done == 0)
		return -EAGAIN;
	return done * sizeof(struct kmx_event);
}

static __poll_t kmx_poll(struct file *file, poll_table *wait)
{
	poll_wait(file, &readers, wait);
	return has_events() ? EPOLLIN | EPOLLRDNORM : 0;
}

static long kmx_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct kmx_stats stats;
	unsigned long flags;

	switch (cmd) {
	case KMX_IOCTL_API_VERSION:
		return KMX_API_VERSION;
	case KMX_IOCTL_GET_STATS:
		spin_lock_irqsave(&ring.lock, flags);
		stats.captured = ring.captured;
		stats.dropped = ring.dropped;
		spin_unlock_irqrestore(&ring.lock, flags);
		if (copy_to_user((void __user *)arg, &stats, sizeof(stats)))
			return -EFAULT;
		return 0;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations kmx_fops = {
	.owner = THIS_MODULE,
	.open = kmx_open,
	.release = kmx_release,
	.read = kmx_read,
	.poll = kmx_poll,
	.unlocked_ioctl = kmx_ioctl,
};

static struct miscdevice kmx_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = KMX_DEVICE_NAME,
	.fops = &kmx_fops,
	.mode = 0600,
};

static int __init kmx_init(void)
{
	int err;

	for_each_kernel_tracepoint(find_tracepoint, NULL);
	if (!tp_sys_enter || !tp_sys_exit) {
		pr_err("kmx: sys_enter/sys_exit tracepoints not found\n");
		return -ENOENT;
	}
	if (buffer_events < 16)
		buffer_events = 16;

	ring.capacity = buffer_events;
	ring.events = vmalloc(array_size(ring.capacity, sizeof(struct kmx_event)));
	if (!ring.events)
		return -ENOMEM;

	err = misc_register(&kmx_dev);
	if (err) {
		vfree(ring.events);
		return err;
	}
	pr_info("kmx: ready, /dev/%s, %u events of %zu bytes\n", KMX_DEVICE_NAME, ring.capacity,
		sizeof(struct kmx_event));
	return 0;
}

static void __exit kmx_exit(void)
{
	/* The device holds a module reference while open, so no probe is attached here. */
	misc_deregister(&kmx_dev);
	vfree(ring.events);
}

module_init(kmx_init);
module_exit(kmx_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmx: syscall capture through the sys_enter/sys_exit tracepoints");
MODULE_AUTHOR("kmatrix");
