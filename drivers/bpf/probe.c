// SPDX-License-Identifier: GPL-2.0
/*
 * kmx legacy eBPF probe: compiled in each machine against that machine's kernel headers (no
 * CO-RE, no BTF of the kernel needed), like the classic "probe.o" drivers. Two raw tracepoint
 * programs, on sys_enter and sys_exit, send one struct kmx_event each through a perf event array.
 *
 * Only kernel headers are used: the helpers are declared here from their BPF_FUNC_* ids.
 */
#include <linux/version.h>
#include <linux/types.h>
#include <asm/ptrace.h>		/* struct pt_regs; kept to a minimum: kernel headers are not */
#include <uapi/linux/bpf.h>	/* written for clang, and the fewer of them, the fewer surprises */

#define SEC(name) __attribute__((section(name), used))

/* BTF-style map definitions (libbpf >= 1.0 no longer accepts struct bpf_map_def). */
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)BPF_FUNC_get_current_pid_tgid;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)BPF_FUNC_get_smp_processor_id;
static long (*bpf_perf_event_output)(void *ctx, void *map, __u64 flags, void *data,
				     __u64 size) = (void *)BPF_FUNC_perf_event_output;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 5, 0)
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) =
	(void *)BPF_FUNC_probe_read_kernel;
#else
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) =
	(void *)BPF_FUNC_probe_read;
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

#include "kmx_bpf_fill.h"

/* raw_tracepoint/sys_enter: args[0] = struct pt_regs *, args[1] = syscall id */
SEC("raw_tracepoint/sys_enter")
int kmx_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	struct kmx_event ev;

	kmx_fill_event(&ev, (__s32)ctx->args[1], KMX_SYS_ENTER, 0);
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &ev, sizeof(ev));
	return 0;
}

/* raw_tracepoint/sys_exit: args[0] = struct pt_regs *, args[1] = return value */
SEC("raw_tracepoint/sys_exit")
int kmx_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	struct kmx_event ev;
	long nr = -1;

	/* The syscall number is not an argument of sys_exit: read it from the saved registers. */
#if defined(__x86_64__)
	bpf_probe_read_kernel(&nr, sizeof(nr), &regs->orig_ax);
#elif defined(__aarch64__)
	{
		int syscallno = -1;

		bpf_probe_read_kernel(&syscallno, sizeof(syscallno), &regs->syscallno);
		nr = syscallno;
	}
#endif
	kmx_fill_event(&ev, (__s32)nr, KMX_SYS_EXIT, (__s64)ctx->args[1]);
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &ev, sizeof(ev));
	return 0;
}

char _license[] SEC("license") = "GPL";
/* Checked by kernels before 5.0 for tracing programs. */
__u32 _version SEC("version") = LINUX_VERSION_CODE;
