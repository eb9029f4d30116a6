// SPDX-License-Identifier: GPL-2.0
/*
 * kmx-open: opens one of the three kmx drivers, captures a number of syscall events, prints them
 * and a stats block, and says by its exit code whether that worked.
 *
 *   kmx-open --kmod              [--num_events N] [--timeout SEC]   read /dev/kmx (kmx.ko loaded)
 *   kmx-open --bpf <probe.o>     [--num_events N] [--timeout SEC]   legacy probe, perf buffer
 *   kmx-open --modern_bpf        [--num_events N] [--timeout SEC]   CO-RE probe (embedded), ring buffer
 *
 * Exit codes: 0  N valid events captured (N = 0: the driver was opened and attached)
 *             95 the running kernel does not support this driver (the last line says why)
 *             1  bad arguments, or the driver could not be opened / loaded / attached
 *             2  time limit reached before N events
 *             3  an event failed validation
 *
 * A helper thread makes a few syscalls every millisecond, so an idle machine still produces
 * events, and every wait is bounded by the time limit (default 30 s).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <linux/bpf.h>
#include <linux/ioctl.h>
#include <linux/types.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "kmx_event.h"
#include "modern.skel.h"

#if !defined(LIBBPF_MAJOR_VERSION) || LIBBPF_MAJOR_VERSION < 1
#error "kmx-open needs libbpf >= 1.0 (see LIBBPF_DIR in the Makefile)"
#endif

#define EXIT_OK 0
#define EXIT_FAILURE_OPEN 1
#define EXIT_TIMEOUT 2
#define EXIT_INVALID 3
#define EXIT_UNSUPPORTED 95 /* ENOTSUP, as scap-open */

enum source { SRC_NONE, SRC_KMOD, SRC_BPF, SRC_MODERN };

static const char *source_names[] = { "none", "kmod", "bpf", "modern_bpf" };

static struct {
	enum source source;
	const char *probe_path;
	unsigned long num_events;
	unsigned int timeout_sec;
	bool quiet;
	bool verbose;
} opt = { .num_events = 50, .timeout_sec = 30 };

static struct {
	unsigned long captured, enter, exit, own, invalid;
	unsigned long long lost; /* reported by the driver: buffer full */
	pid_t self;
} st;

static volatile sig_atomic_t stop_requested;
static volatile int helper_stop;

/* ------------------------------------------------------------------------------------------- */

static void die_unsupported(const char *fmt, ...)
{
	va_list ap;

	/* The reason is the last line of the output: the test harness shows it as the skip reason. */
	fflush(stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(EXIT_UNSUPPORTED);
}

static void fail(int code, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "kmx-open: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	printf("failed (exit code %d)\n", code);
	exit(code);
}

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* Last resort if something blocks despite the bounded waits: never outlive the time limit by much. */
static void on_alarm(int sig)
{
	static const char msg[] = "kmx-open: hard time limit reached, exiting\n";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
		/* nothing more to do */
	}
	_exit(EXIT_TIMEOUT);
}

/* Makes syscalls the drivers can see, so capture never waits on an idle machine. */
static void *helper_main(void *arg)
{
	struct timespec ms = { 0, 1000 * 1000 };

	(void)arg;
	while (!helper_stop) {
		syscall(SYS_getpid);
		nanosleep(&ms, NULL);
	}
	return NULL;
}

/* ------------------------------------------------------------------------------------------- */

static bool valid(const struct kmx_event *ev)
{
	return ev->ts_ns != 0 && ev->pid != 0 && ev->tid != 0 &&
	       (ev->type == KMX_SYS_ENTER || ev->type == KMX_SYS_EXIT) && ev->nr >= -1 && ev->nr < 4096;
}

/* Called for every event any source delivers; returns false once enough have been taken. */
static bool handle_event(const void *data, size_t size)
{
	struct kmx_event ev;

	if (st.captured >= opt.num_events)
		return false;
	if (size < sizeof(ev)) {
		st.invalid++;
		fprintf(stderr, "kmx-open: short event (%zu bytes)\n", size);
		return true;
	}
	memcpy(&ev, data, sizeof(ev));
	if (!valid(&ev)) {
		st.invalid++;
		fprintf(stderr, "kmx-open: invalid event: ts=%llu pid=%u tid=%u nr=%d type=%u\n",
			(unsigned long long)ev.ts_ns, ev.pid, ev.tid, ev.nr, ev.type);
		return true;
	}
	st.captured++;
	if (ev.type == KMX_SYS_ENTER)
		st.enter++;
	else
		st.exit++;
	if ((pid_t)ev.pid == st.self)
		st.own++;
	if (!opt.quiet) {
		if (ev.type == KMX_SYS_ENTER)
			printf("%llu cpu=%u pid=%u tid=%u > nr=%d\n", (unsigned long long)ev.ts_ns, ev.cpu,
			       ev.pid, ev.tid, ev.nr);
		else
			printf("%llu cpu=%u pid=%u tid=%u < nr=%d ret=%lld\n", (unsigned long long)ev.ts_ns,
			       ev.cpu, ev.pid, ev.tid, ev.nr, (long long)ev.ret);
	}
	return st.captured < opt.num_events;
}

static bool done(void)
{
	return st.captured >= opt.num_events || stop_requested;
}

/* ---- --kmod: /dev/kmx ----------------------------------------------------------------------- */

static int kmod_fd = -1;

static void kmod_open(void)
{
	const char *path = "/dev/" KMX_DEVICE_NAME;
	unsigned int major, minor;
	long api;
	FILE *f;

	if (access(path, F_OK) != 0) {
		/* No devtmpfs/udev: create the node from what the misc class says. */
		f = fopen("/sys/class/misc/" KMX_DEVICE_NAME "/dev", "r");
		if (!f)
			fail(EXIT_FAILURE_OPEN, "%s missing and no /sys/class/misc/%s: is kmx.ko loaded?", path,
			     KMX_DEVICE_NAME);
		if (fscanf(f, "%u:%u", &major, &minor) != 2)
			fail(EXIT_FAILURE_OPEN, "cannot parse /sys/class/misc/%s/dev", KMX_DEVICE_NAME);
		fclose(f);
		if (mknod(path, S_IFCHR | 0600, makedev(major, minor)) != 0)
			fail(EXIT_FAILURE_OPEN, "mknod %s: %s", path, strerror(errno));
	}
	kmod_fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (kmod_fd < 0)
		fail(EXIT_FAILURE_OPEN, "open %s: %s", path, strerror(errno));
	api = ioctl(kmod_fd, KMX_IOCTL_API_VERSION);
	if (api != KMX_API_VERSION)
		fail(EXIT_FAILURE_OPEN, "kmx.ko has API version %ld, kmx-open expects %d: build both from one tree",
		     api, KMX_API_VERSION);
	printf("opened %s (kmx API %ld)\n", path, api);
}

static void kmod_capture(double deadline)
{
	struct kmx_event buf[64];
	struct pollfd pfd = { .fd = kmod_fd, .events = POLLIN };
	ssize_t n;
	size_t i;

	while (!done() && now_sec() < deadline) {
		if (poll(&pfd, 1, 100) < 0 && errno != EINTR)
			fail(EXIT_FAILURE_OPEN, "poll /dev/kmx: %s", strerror(errno));
		n = read(kmod_fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			fail(EXIT_FAILURE_OPEN, "read /dev/kmx: %s", strerror(errno));
		}
		for (i = 0; i < (size_t)n / sizeof(buf[0]); i++)
			if (!handle_event(&buf[i], sizeof(buf[i])))
				break;
	}
}

static void kmod_close(void)
{
	struct kmx_stats ks;

	if (ioctl(kmod_fd, KMX_IOCTL_GET_STATS, &ks) == 0)
		st.lost = ks.dropped;
	close(kmod_fd);
}

/* ---- libbpf plumbing shared by --bpf and --modern_bpf --------------------------------------- */

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG && !opt.verbose)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

/* A real probe of the running kernel: can it create a map of this type? */
static bool kernel_has_map_type(enum bpf_map_type type)
{
	return libbpf_probe_bpf_map_type(type, NULL) == 1;
}

static void raise_memlock(void)
{
	/* Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK. */
	struct rlimit r = { RLIM_INFINITY, RLIM_INFINITY };

	setrlimit(RLIMIT_MEMLOCK, &r);
}

static int ring_sample(void *ctx, void *data, size_t size)
{
	(void)ctx;
	/* Events past N are dropped by handle_event; a negative value would abort the poll. */
	handle_event(data, size);
	return 0;
}

/* ---- --bpf <probe.o>: legacy probe, perf event array -------------------------------------- */

static struct bpf_object *bpf_obj;
static struct bpf_link *bpf_links[8];
static struct perf_buffer *perf_buf;

static void perf_sample(void *ctx, int cpu, void *data, __u32 size)
{
	(void)ctx;
	(void)cpu;
	handle_event(data, size);
}

static void perf_lost(void *ctx, int cpu, __u64 count)
{
	(void)ctx;
	(void)cpu;
	st.lost += count;
}

static void bpf_open(void)
{
	struct bpf_program *prog;
	struct bpf_map *map;
	size_t nlinks = 0;
	int err;

	if (!kernel_has_map_type(BPF_MAP_TYPE_PERF_EVENT_ARRAY))
		die_unsupported("the kernel cannot create BPF perf event arrays: legacy bpf not supported");

	bpf_obj = bpf_object__open_file(opt.probe_path, NULL);
	if (!bpf_obj)
		fail(EXIT_FAILURE_OPEN, "cannot open %s: %s", opt.probe_path, strerror(errno));
	err = bpf_object__load(bpf_obj);
	if (err)
		fail(EXIT_FAILURE_OPEN, "cannot load %s: %s", opt.probe_path, strerror(-err));
	bpf_object__for_each_program(prog, bpf_obj)
	{
		if (nlinks == sizeof(bpf_links) / sizeof(bpf_links[0]))
			fail(EXIT_FAILURE_OPEN, "too many programs in %s", opt.probe_path);
		bpf_links[nlinks] = bpf_program__attach(prog);
		if (!bpf_links[nlinks])
			fail(EXIT_FAILURE_OPEN, "cannot attach %s: %s", bpf_program__name(prog), strerror(errno));
		printf("attached %s (%s)\n", bpf_program__name(prog), bpf_program__section_name(prog));
		nlinks++;
	}
	map = bpf_object__find_map_by_name(bpf_obj, "events");
	if (!map)
		fail(EXIT_FAILURE_OPEN, "%s has no map named events", opt.probe_path);
	perf_buf = perf_buffer__new(bpf_map__fd(map), 64, perf_sample, perf_lost, NULL, NULL);
	if (!perf_buf)
		fail(EXIT_FAILURE_OPEN, "cannot set up the perf buffer: %s", strerror(errno));
	printf("opened legacy probe %s\n", opt.probe_path);
}

static void bpf_capture(double deadline)
{
	int err;

	while (!done() && now_sec() < deadline) {
		err = perf_buffer__poll(perf_buf, 100);
		if (err < 0 && err != -EINTR)
			fail(EXIT_FAILURE_OPEN, "perf_buffer__poll: %s", strerror(-err));
	}
}

static void bpf_close(void)
{
	size_t i;

	perf_buffer__free(perf_buf);
	for (i = 0; i < sizeof(bpf_links) / sizeof(bpf_links[0]); i++)
		bpf_link__destroy(bpf_links[i]);
	bpf_object__close(bpf_obj);
}

/* ---- --modern_bpf: CO-RE probe from the embedded skeleton, ring buffer --------------------- */

static struct modern *skel;
static struct ring_buffer *ring_buf;

static void modern_open(void)
{
	int err;

	/* Decide "not supported" by probing the kernel, not by its version number. */
	if (access("/sys/kernel/btf/vmlinux", R_OK) != 0)
		die_unsupported("the kernel exposes no BTF (/sys/kernel/btf/vmlinux): modern bpf not supported");
	if (!kernel_has_map_type(BPF_MAP_TYPE_RINGBUF))
		die_unsupported("the kernel cannot create BPF ring buffers: modern bpf not supported");

	skel = modern__open();
	if (!skel)
		fail(EXIT_FAILURE_OPEN, "cannot open the modern probe: %s", strerror(errno));
	err = modern__load(skel);
	if (err)
		fail(EXIT_FAILURE_OPEN, "cannot load the modern probe: %s", strerror(-err));
	err = modern__attach(skel);
	if (err)
		fail(EXIT_FAILURE_OPEN, "cannot attach the modern probe: %s", strerror(-err));
	ring_buf = ring_buffer__new(bpf_map__fd(skel->maps.events), ring_sample, NULL, NULL);
	if (!ring_buf)
		fail(EXIT_FAILURE_OPEN, "cannot set up the ring buffer: %s", strerror(errno));
	printf("opened modern probe (embedded skeleton, ring buffer)\n");
}

static void modern_capture(double deadline)
{
	int err;

	while (!done() && now_sec() < deadline) {
		err = ring_buffer__poll(ring_buf, 100);
		if (err < 0 && err != -EINTR)
			fail(EXIT_FAILURE_OPEN, "ring_buffer__poll: %s", strerror(-err));
	}
}

static void modern_close(void)
{
	st.lost = skel->bss->dropped;
	ring_buffer__free(ring_buf);
	modern__destroy(skel);
}

/* ------------------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f, "usage: kmx-open (--kmod | --bpf <probe.o> | --modern_bpf) [--num_events N]\n"
		   "                [--timeout SEC] [--quiet] [--verbose]\n"
		   "  --kmod            capture from /dev/kmx (load kmx.ko first)\n"
		   "  --bpf <probe.o>   load and attach the legacy eBPF probe\n"
		   "  --modern_bpf      load and attach the embedded CO-RE probe\n"
		   "  --num_events N    events to capture (default 50; 0: only open the driver)\n"
		   "  --timeout SEC     give up after SEC seconds (default 30), exit code 2\n"
		   "  --quiet           do not print the events, only the stats\n"
		   "  --verbose         print libbpf's debug messages\n"
		   "exit codes: 0 ok, 95 driver not supported by this kernel, 1 open failure,\n"
		   "            2 time limit, 3 invalid events\n");
}

static void parse_args(int argc, char **argv)
{
	enum { O_KMOD = 256, O_BPF, O_MODERN, O_NUM, O_TIMEOUT, O_QUIET, O_VERBOSE, O_HELP };
	static const struct option longopts[] = {
		{ "kmod", no_argument, NULL, O_KMOD },
		{ "bpf", required_argument, NULL, O_BPF },
		{ "modern_bpf", no_argument, NULL, O_MODERN },
		{ "num_events", required_argument, NULL, O_NUM },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "verbose", no_argument, NULL, O_VERBOSE },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case O_KMOD:
		case O_BPF:
		case O_MODERN:
			if (opt.source != SRC_NONE)
				fail(EXIT_FAILURE_OPEN, "choose one of --kmod, --bpf, --modern_bpf");
			opt.source = c == O_KMOD ? SRC_KMOD : c == O_BPF ? SRC_BPF : SRC_MODERN;
			if (c == O_BPF)
				opt.probe_path = optarg;
			break;
		case O_NUM:
			errno = 0;
			opt.num_events = strtoul(optarg, &end, 10);
			if (errno || *end || optarg[0] == '-')
				fail(EXIT_FAILURE_OPEN, "bad --num_events %s", optarg);
			break;
		case O_TIMEOUT:
			opt.timeout_sec = strtoul(optarg, &end, 10);
			if (*end || opt.timeout_sec == 0)
				fail(EXIT_FAILURE_OPEN, "bad --timeout %s", optarg);
			break;
		case O_QUIET:
			opt.quiet = true;
			break;
		case O_VERBOSE:
			opt.verbose = true;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(EXIT_FAILURE_OPEN);
		}
	}
	if (optind < argc || opt.source == SRC_NONE) {
		usage(stderr);
		exit(EXIT_FAILURE_OPEN);
	}
}

int main(int argc, char **argv)
{
	pthread_t helper;
	double start, deadline, elapsed;
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv);
	st.self = getpid();
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGALRM, on_alarm);
	alarm(opt.timeout_sec + 10);

	libbpf_set_print(libbpf_log);
	raise_memlock();

	start = now_sec();
	deadline = start + opt.timeout_sec;
	printf("kmx-open: source %s, %lu events, time limit %u s\n", source_names[opt.source],
	       opt.num_events, opt.timeout_sec);

	switch (opt.source) {
	case SRC_KMOD:
		kmod_open();
		break;
	case SRC_BPF:
		bpf_open();
		break;
	default:
		modern_open();
		break;
	}

	helper_stop = 0;
	if (pthread_create(&helper, NULL, helper_main, NULL) != 0)
		fail(EXIT_FAILURE_OPEN, "cannot start the helper thread");

	switch (opt.source) {
	case SRC_KMOD:
		kmod_capture(deadline);
		kmod_close();
		break;
	case SRC_BPF:
		bpf_capture(deadline);
		bpf_close();
		break;
	default:
		modern_capture(deadline);
		modern_close();
		break;
	}
	helper_stop = 1;
	pthread_join(helper, NULL);
	elapsed = now_sec() - start;

	if (st.invalid)
		rc = EXIT_INVALID;
	else if (st.captured < opt.num_events)
		rc = EXIT_TIMEOUT;
	else
		rc = EXIT_OK;

	printf("---------------------- stats ----------------------\n");
	printf("source:           %s\n", source_names[opt.source]);
	printf("sys_enter events: %lu\n", st.enter);
	printf("sys_exit events:  %lu\n", st.exit);
	printf("own events:       %lu (pid %d)\n", st.own, (int)st.self);
	printf("invalid events:   %lu\n", st.invalid);
	printf("lost by driver:   %llu\n", st.lost);
	printf("elapsed:          %.3f s\n", elapsed);
	if (rc == EXIT_TIMEOUT && stop_requested)
		printf("interrupted before %lu events\n", opt.num_events);
	else if (rc == EXIT_TIMEOUT)
		printf("time limit of %u s reached before %lu events\n", opt.timeout_sec, opt.num_events);
	printf("---------------------------------------------------\n");
	printf("captured %lu events\n", st.captured);
	return rc;
}
