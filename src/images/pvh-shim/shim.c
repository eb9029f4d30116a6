/*
 * kmatrix's PVH shim: boots an x86_64 ELF vmlinux that has no PVH entry note (kernels before 5.0,
 * or built without CONFIG_PVH) as Firecracker boots Falco's kernels, through Linux's 64-bit boot
 * protocol (Documentation/arch/x86/boot.rst). QEMU's -kernel takes an ELF only through a PVH note,
 * so QEMU loads this shim, which has one, with the vmlinux and the initrd packed behind a header as
 * its one PVH module (index.ts: packPvhModule). The shim copies the vmlinux's loadable segments to
 * their physical addresses, writes the zero page (QEMU's memory map, command line, initrd, ACPI
 * RSDP), identity-maps the first 4 GiB and returns the kernel's entry to entry.S. Written here
 * because nothing packaged does it: qboot, SeaBIOS and GRUB boot bzImages, not ELF files.
 * Freestanding 32-bit code: no libc, addresses below 4 GiB.
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define ZERO_PAGE 0x7000u
#define PML4 0x9000u
#define PDPT 0xa000u
#define PD 0xb000u /* four pages: 0xb000-0xefff, 2 MiB pages over 4 GiB */
#define CMDLINE 0x20000u
#define CMDLINE_MAX 4095u
#define E820_MAX 128u

struct hvm_start_info {
	u32 magic, version, flags, nr_modules;
	u64 modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	u32 memmap_entries, reserved;
};
struct hvm_modlist_entry { u64 paddr, size, cmdline_paddr, reserved; };
struct hvm_memmap_entry { u64 addr, size; u32 type, reserved; };

/* index.ts: MODULE_MAGIC and the header's layout. */
struct module_header { char magic[8]; u32 vmlinux_offset, vmlinux_size, initrd_offset, initrd_size; };

struct elf64_header {
	u8 ident[16];
	u16 type, machine;
	u32 version;
	u64 entry, phoff, shoff;
	u32 flags;
	u16 ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};
struct elf64_phdr { u32 type, flags; u64 offset, vaddr, paddr, filesz, memsz, align; };

struct e820_entry { u64 addr, size; u32 type; } __attribute__((packed));

extern char _start[], _end[];

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }

/* The first serial port, which is the console on microvm: the harness reads this line. */
static void say(const char *s)
{
	for (; *s; s++) {
		if (*s == '\n')
			outb(0x3f8, '\r');
		outb(0x3f8, (u8)*s);
	}
}

/* FATAL_MARKER of guest-init.ts: the harness ends the boot with this line as its reason. */
static void __attribute__((noreturn)) fail(const char *why)
{
	say("KMATRIX-FATAL: pvh shim: ");
	say(why);
	say("\n");
	for (;;)
		__asm__ volatile("cli; hlt");
}

static void copy(u32 to, u32 from, u32 n)
{
	volatile u8 *d = (volatile u8 *)to;
	const volatile u8 *s = (const volatile u8 *)from;
	if (to > from)
		while (n--)
			d[n] = s[n];
	else
		for (u32 i = 0; i < n; i++)
			d[i] = s[i];
}

static void zero(u32 at, u32 n)
{
	volatile u8 *d = (volatile u8 *)at;
	while (n--)
		*d++ = 0;
}

/* Whether [a, a+an) and [b, b+bn) overlap. */
static int overlap(u64 a, u64 an, u64 b, u64 bn) { return a < b + bn && b < a + an; }

static u8 cmdline[CMDLINE_MAX + 1];
static struct e820_entry e820[E820_MAX];

u32 shim_main(const struct hvm_start_info *si)
{
	if (si->magic != 0x336ec578u)
		fail("no PVH start info");
	if (si->nr_modules < 1)
		fail("no module (the vmlinux and initrd)");
	if (si->version < 1 || si->memmap_entries == 0)
		fail("no memory map in the PVH start info");

	/* Read everything from QEMU's structures before writing low memory, where they may live. */
	u32 cmdline_size = 0;
	if (si->cmdline_paddr) {
		const char *c = (const char *)(u32)si->cmdline_paddr;
		while (c[cmdline_size] && cmdline_size < CMDLINE_MAX) {
			cmdline[cmdline_size] = (u8)c[cmdline_size];
			cmdline_size++;
		}
	}
	u32 entries = si->memmap_entries < E820_MAX ? si->memmap_entries : E820_MAX;
	const struct hvm_memmap_entry *map = (const struct hvm_memmap_entry *)(u32)si->memmap_paddr;
	for (u32 i = 0; i < entries; i++) {
		e820[i].addr = map[i].addr;
		e820[i].size = map[i].size;
		e820[i].type = map[i].type;
	}
	u64 rsdp = si->rsdp_paddr;
	const struct hvm_modlist_entry *mod = (const struct hvm_modlist_entry *)(u32)si->modlist_paddr;
	u64 module = mod->paddr, module_size = mod->size;
	if (module + module_size > 0x100000000ull)
		fail("module above 4 GiB");

	const struct module_header *h = (const struct module_header *)(u32)module;
	const char *magic = "KMXPVH01";
	for (int i = 0; i < 8; i++)
		if (h->magic[i] != magic[i])
			fail("module is not a kmatrix vmlinux + initrd");
	if ((u64)h->vmlinux_offset + h->vmlinux_size > module_size ||
	    (u64)h->initrd_offset + h->initrd_size > module_size)
		fail("module shorter than its header says");

	u32 vmlinux = (u32)module + h->vmlinux_offset;
	const struct elf64_header *eh = (const struct elf64_header *)vmlinux;
	if (eh->ident[0] != 0x7f || eh->ident[1] != 'E' || eh->ident[2] != 'L' || eh->ident[3] != 'F' ||
	    eh->ident[4] != 2 || eh->machine != 62)
		fail("vmlinux is not an x86_64 ELF");
	if (eh->entry >= 0x100000000ull)
		fail("vmlinux's entry is not a physical address below 4 GiB");
	for (u32 i = 0; i < eh->phnum; i++) {
		const struct elf64_phdr *ph =
			(const struct elf64_phdr *)(vmlinux + (u32)eh->phoff + i * eh->phentsize);
		if (ph->type != 1 /* PT_LOAD */ || ph->memsz == 0)
			continue;
		if (ph->offset + ph->filesz > h->vmlinux_size || ph->filesz > ph->memsz)
			fail("a segment lies outside the vmlinux");
		if (ph->paddr + ph->memsz > 0x100000000ull ||
		    overlap(ph->paddr, ph->memsz, module, module_size) ||
		    overlap(ph->paddr, ph->memsz, (u32)_start, (u32)(_end - _start)) ||
		    overlap(ph->paddr, ph->memsz, 0, CMDLINE + CMDLINE_MAX + 1))
			fail("a segment's physical address collides with the shim, its module or low memory");
		copy((u32)ph->paddr, vmlinux + (u32)ph->offset, (u32)ph->filesz);
		zero((u32)ph->paddr + (u32)ph->filesz, (u32)(ph->memsz - ph->filesz));
	}

	/* The zero page, filled as Firecracker fills it (boot.rst, "The Real-Mode Kernel Header"). */
	u8 *zp = (u8 *)ZERO_PAGE;
	zero(ZERO_PAGE, 4096);
	*(u64 *)(zp + 0x070) = rsdp;			/* acpi_rsdp_addr (protocol 2.14; padding before) */
	*(u8 *)(zp + 0x1e8) = (u8)entries;		/* e820_entries */
	*(u16 *)(zp + 0x1fe) = 0xaa55;			/* boot_flag */
	*(u32 *)(zp + 0x202) = 0x53726448;		/* header: "HdrS" */
	*(u8 *)(zp + 0x210) = 0xff;			/* type_of_loader: other */
	*(u32 *)(zp + 0x218) = (u32)module + h->initrd_offset; /* ramdisk_image */
	*(u32 *)(zp + 0x21c) = h->initrd_size;		/* ramdisk_size */
	*(u32 *)(zp + 0x228) = CMDLINE;			/* cmd_line_ptr */
	*(u32 *)(zp + 0x230) = 0x1000000;		/* kernel_alignment */
	*(u32 *)(zp + 0x238) = cmdline_size;		/* cmdline_size */
	copy(ZERO_PAGE + 0x2d0, (u32)e820, entries * sizeof(struct e820_entry));
	copy(CMDLINE, (u32)cmdline, cmdline_size);
	*(u8 *)(CMDLINE + cmdline_size) = 0;

	/* The first 4 GiB identity-mapped with 2 MiB pages: present, writable (and large). */
	u64 *pml4 = (u64 *)PML4, *pdpt = (u64 *)PDPT, *pd = (u64 *)PD;
	zero(PML4, 4096);
	zero(PDPT, 4096);
	pml4[0] = PDPT | 3;
	for (u32 i = 0; i < 4; i++)
		pdpt[i] = (PD + i * 4096) | 3;
	for (u32 i = 0; i < 4 * 512; i++)
		pd[i] = ((u64)i << 21) | 0x83;
	return (u32)eh->entry;
}
