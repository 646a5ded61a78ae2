/* SPDX-License-Identifier: MIT */
/*
 * Same-process benchmark: SEND of 1 KiB to a node of a second peer, RECV,
 * SLICE_RELEASE — against write()+recv() of 1 KiB on an AF_UNIX
 * SOCK_SEQPACKET socketpair, measured in the same run.
 *
 * With a burst size B > 1, each side first sends B messages and then
 * receives them: the queue (socket) then goes empty and non-empty once per
 * B messages instead of once per message, which shows the cost of the
 * operations themselves apart from readiness transitions (on bus1 only
 * with BUS1_WAKE=exact, a token sent and drained per transition; by
 * default a transition costs no system call).
 *
 * Prints the CPU time per operation of each and the ratio bus1/UDS
 * (median of several alternating rounds, since the machines are noisy).
 * Run under the shim: scripts/bus1-run bench/bin/local [iterations [burst]]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/bus1.h>

#define BENCH_NAME "local"
#include "common.h"

#define ROUNDS 7
/* A burst must fit the UDS socket's default buffer and bus1's quota. */
#define MAX_BURST 64

static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

struct bus1_pair {
	int owner, sender;
	uint64_t dest;
	const uint8_t *pool;
};

static void bus1_setup(struct bus1_pair *p)
{
	struct bus1_cmd_handle_transfer t = {
		.src_handle = 0x100, .dst_handle = BUS1_HANDLE_INVALID,
	};

	p->owner = open("/dev/bus1", O_RDWR | O_CLOEXEC);
	p->sender = open("/dev/bus1", O_RDWR | O_CLOEXEC);
	if (p->owner < 0 || p->sender < 0)
		die("open /dev/bus1 (run under the shim)");
	t.dst_fd = p->sender;
	if (ioctl(p->owner, BUS1_CMD_HANDLE_TRANSFER, &t) < 0)
		die("HANDLE_TRANSFER");
	p->dest = t.dst_handle;
	p->pool = mmap(NULL, 1 << 29, PROT_READ, MAP_SHARED, p->owner, 0);
	if (p->pool == MAP_FAILED)
		die("mmap pool");
}

static double bus1_round(struct bus1_pair *p, long n, long burst, const char *buf)
{
	struct iovec v = { .iov_base = (void *)buf, .iov_len = MSG_SIZE };
	struct bus1_cmd_send s = {
		.ptr_destinations = (uintptr_t)&p->dest, .n_destinations = 1,
		.ptr_vecs = (uintptr_t)&v, .n_vecs = 1,
	};
	struct bus1_cmd_recv r;
	volatile uint8_t sink = 0;
	double t0 = cpu_now();

	for (long i = 0; i < n; i += burst) {
		for (long j = 0; j < burst; j++)
			if (ioctl(p->sender, BUS1_CMD_SEND, &s) < 0)
				die("SEND");
		for (long j = 0; j < burst; j++) {
			memset(&r, 0, sizeof(r));
			r.max_offset = 1 << 29;
			if (ioctl(p->owner, BUS1_CMD_RECV, &r) < 0)
				die("RECV");
			sink ^= p->pool[r.msg.offset];
			if (ioctl(p->owner, BUS1_CMD_SLICE_RELEASE, &r.msg.offset) < 0)
				die("SLICE_RELEASE");
		}
	}
	(void)sink;
	return (cpu_now() - t0) / (n / burst * burst);
}

static double uds_round(int s[2], long n, long burst, char *buf)
{
	char in[MSG_SIZE];
	double t0 = cpu_now();

	for (long i = 0; i < n; i += burst) {
		for (long j = 0; j < burst; j++)
			if (write(s[0], buf, MSG_SIZE) != MSG_SIZE)
				die("write");
		for (long j = 0; j < burst; j++)
			if (recv(s[1], in, sizeof(in), 0) != MSG_SIZE)
				die("recv");
	}
	return (cpu_now() - t0) / (n / burst * burst);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000;
	long burst = argc > 2 ? atol(argv[2]) : 1;
	double tb[ROUNDS], tu[ROUNDS], ratio[ROUNDS];
	struct bus1_pair p;
	char buf[MSG_SIZE];
	int s[2];

	if (burst < 1 || burst > MAX_BURST || n < burst) {
		fprintf(stderr, "local: the burst must be 1..%d and at most the iterations\n", MAX_BURST);
		return 2;
	}
	memset(buf, 0x5a, sizeof(buf));
	bus1_setup(&p);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, s) < 0)
		die("socketpair");
	/* warm up both paths */
	bus1_round(&p, n / 10 + burst, burst, buf);
	uds_round(s, n / 10 + burst, burst, buf);
	for (int i = 0; i < ROUNDS; i++) {
		tb[i] = bus1_round(&p, n, burst, buf);
		tu[i] = uds_round(s, n, burst, buf);
		ratio[i] = tb[i] / tu[i];
	}
	qsort(tb, ROUNDS, sizeof(double), cmp_double);
	qsort(tu, ROUNDS, sizeof(double), cmp_double);
	qsort(ratio, ROUNDS, sizeof(double), cmp_double);
	printf("local 1 KiB, %ld iterations x %d rounds, bursts of %ld (CPU time per message, median)\n",
	       n, ROUNDS, burst);
	printf("  bus1 SEND+RECV+SLICE_RELEASE : %8.0f ns\n", tb[ROUNDS / 2]);
	printf("  UDS  write+recv (SEQPACKET)  : %8.0f ns\n", tu[ROUNDS / 2]);
	printf("  ratio bus1/UDS               : %8.3f (min %.3f, max %.3f)\n",
	       ratio[ROUNDS / 2], ratio[0], ratio[ROUNDS - 1]);
	return 0;
}
