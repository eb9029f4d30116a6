/*
 * The shim's entry (see shim.c): QEMU enters it through the PVH note below in 32-bit protected
 * mode, paging off, %ebx = struct hvm_start_info. shim_main lays the kernel out and returns its
 * entry; then long mode with the identity map shim_main wrote, and a jump to the kernel with
 * %rsi = the zero page, as Linux's 64-bit boot protocol asks.
 */
#define PML4 0x9000
#define ZERO_PAGE 0x7000

	.section .note.pvh, "a", @note
	.balign 4
	.long 4			/* name size: "Xen" */
	.long 4			/* descriptor size */
	.long 18		/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long _start

	.code32
	.section .text.entry, "ax"
	.globl _start
_start:
	cli
	movl $stack_top, %esp
	pushl %ebx
	call shim_main
	movl %eax, %edi			/* the kernel's entry, kept across the switch */

	movl %cr4, %eax
	orl $0x20, %eax			/* PAE */
	movl %eax, %cr4
	movl $PML4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx		/* EFER */
	rdmsr
	orl $0x100, %eax		/* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax		/* PG, PE */
	movl %eax, %cr0
	lgdt gdt_descriptor
	ljmp $0x10, $long_mode

	.code64
long_mode:
	movl $0x18, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	movl %edi, %eax			/* zero-extends into %rax */
	movl $ZERO_PAGE, %esi
	jmp *%rax

	.section .data
	.balign 8
	/* __BOOT_CS = 0x10 (64-bit code), __BOOT_DS = 0x18 (flat data), as the boot protocol asks. */
gdt:
	.quad 0
	.quad 0
	.quad 0x00af9a000000ffff
	.quad 0x00cf92000000ffff
gdt_end:
gdt_descriptor:
	.word gdt_end - gdt - 1
	.long gdt

	.section .bss
	.balign 16
	.space 16384
stack_top:
