// SPDX-License-Identifier: GPL-2.0
/*
 * kmx modern eBPF probe: CO-RE (compiled once per architecture against a vmlinux.h, relocated by
 * libbpf against the running kernel's BTF), BTF-enabled raw tracepoints on sys_enter/sys_exit,
 * events sent through a BPF ring buffer (kernel >= 5.8).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "kmx_bpf_fill.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 512 * 1024);
} events SEC(".maps");

/* Events lost because the ring buffer was full; read by kmx-open through the skeleton. */
__u64 dropped = 0;

static __always_inline void submit(__s32 nr, __u16 type, __s64 ret)
{
	struct kmx_event *ev;

	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		__sync_fetch_and_add(&dropped, 1);
		return;
	}
	kmx_fill_event(ev, nr, type, ret);
	bpf_ringbuf_submit(ev, 0);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(kmx_sys_enter, struct pt_regs *regs, long id)
{
	submit((__s32)id, KMX_SYS_ENTER, 0);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(kmx_sys_exit, struct pt_regs *regs, long ret)
{
	__s32 nr = -1;

	/* The syscall number is not an argument of sys_exit: read it from the saved registers. */
#if defined(__TARGET_ARCH_x86)
	nr = (__s32)BPF_CORE_READ(regs, orig_ax);
#elif defined(__TARGET_ARCH_arm64)
	nr = BPF_CORE_READ(regs, syscallno);
#endif
	submit(nr, KMX_SYS_EXIT, ret);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
