// SPDX-License-Identifier: GPL-2.0
/*
 * The libbpf.a kmx-open links comes from a newer distribution than the one kmx-open is built on
 * (see the Makefile). On aarch64 that libbpf was compiled by gcc 12 with outline atomics, and its
 * __sync_fetch_and_add() calls libgcc's __aarch64_ldadd4_sync helper, which bullseye's gcc 10 libgcc
 * does not have yet. This is that helper: add atomically, full barrier, return the old value
 * (ARMv8.0 exclusives, so it needs no LSE). A definition here wins over libgcc's, if it has one.
 */
#if defined(__aarch64__)
int __aarch64_ldadd4_sync(int val, int *ptr);

int __aarch64_ldadd4_sync(int val, int *ptr)
{
	int old, sum, fail;

	__asm__ volatile("1:	ldxr	%w0, [%3]\n"
			 "	add	%w1, %w0, %w4\n"
			 "	stlxr	%w2, %w1, [%3]\n"
			 "	cbnz	%w2, 1b\n"
			 "	dmb	ish\n"
			 : "=&r"(old), "=&r"(sum), "=&r"(fail)
			 : "r"(ptr), "r"(val)
			 : "memory");
	return old;
}
#endif
