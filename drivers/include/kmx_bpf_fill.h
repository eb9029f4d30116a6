/* SPDX-License-Identifier: GPL-2.0 */
/*
 * How both eBPF probes fill a struct kmx_event. Included after the BPF helpers are in scope:
 * declared from their BPF_FUNC_* ids in the legacy probe, from <bpf/bpf_helpers.h> in the CO-RE one.
 */
#ifndef KMX_BPF_FILL_H
#define KMX_BPF_FILL_H

#include "kmx_event.h"

static __always_inline void kmx_fill_event(struct kmx_event *ev, __s32 nr, __u16 type, __s64 ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	ev->ts_ns = bpf_ktime_get_ns();
	ev->ret = ret;
	ev->pid = pid_tgid >> 32;
	ev->tid = (__u32)pid_tgid;
	ev->nr = nr;
	ev->type = type;
	ev->cpu = bpf_get_smp_processor_id();
}

#endif /* KMX_BPF_FILL_H */
