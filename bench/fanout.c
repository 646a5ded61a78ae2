/* SPDX-License-Identifier: MIT */
/*
 * Fan-out: one SEND of 1 KiB to N destinations (N = 1, 8, 64, 256,
 * 1000), in one process; each destination then takes its copy with RECV
 * and SLICE_RELEASE. Nobody sleeps, so no ring is made: the cost of a SEND
 * per destination should not depend on N.
 *
 * Baseline in the same run: write()+recv() of 1 KiB on an AF_UNIX
 * SOCK_SEQPACKET socketpair (one message to one destination).
 *
 * Prints, per N, the CPU time of the SEND per destination and of the
 * receiving side per destination, then the figures of the benchmark table:
 * SEND per destination at 256 against one UDS write+recv, and the SEND per
 * destination at 256 against the same at 8 (medians of several
 * alternating rounds).
 * Run under the shim: scripts/bus1-run bench/bin/fanout [deliveries]
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/bus1.h>

#define BENCH_NAME "fanout"
#include "common.h"

#define ROUNDS 7
#define POOL_SIZE (1ULL << 29)
#define MAX_N 1000

static const int sizes[] = { 1, 8, 64, 256, MAX_N };
#define NSIZES (int)(sizeof(sizes) / sizeof(sizes[0]))

static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int sender;
static int receivers[MAX_N];
static uint64_t dests[MAX_N];
static const uint8_t *pools[MAX_N];

static void setup(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	sender = open("/dev/bus1", O_RDWR | O_CLOEXEC);
	if (sender < 0)
		die("open /dev/bus1 (run under the shim)");
	for (int i = 0; i < MAX_N; i++) {
		struct bus1_cmd_handle_transfer t = {
			.src_handle = 0x100, .dst_handle = BUS1_HANDLE_INVALID,
		};

		receivers[i] = open("/dev/bus1", O_RDWR | O_CLOEXEC);
		if (receivers[i] < 0)
			die("open /dev/bus1");
		t.dst_fd = sender;
		if (ioctl(receivers[i], BUS1_CMD_HANDLE_TRANSFER, &t) < 0)
			die("HANDLE_TRANSFER");
		dests[i] = t.dst_handle;
		pools[i] = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, receivers[i], 0);
		if (pools[i] == MAP_FAILED)
			die("mmap pool");
	}
}

/* Sends `k` multicasts to the first n destinations, each taken at once by
 * every destination; returns the CPU ns per destination of the SENDs and
 * (in *take) of the RECVs with SLICE_RELEASE. */
static double run_bus1(int n, long k, double *take)
{
	uint8_t msg[MSG_SIZE];
	struct iovec v = { .iov_base = msg, .iov_len = MSG_SIZE };
	struct bus1_cmd_send s = {
		.ptr_destinations = (uintptr_t)dests, .n_destinations = n,
		.ptr_vecs = (uintptr_t)&v, .n_vecs = 1,
	};
	double send_ns = 0, take_ns = 0;

	memset(msg, 0x5a, sizeof(msg));
	for (long j = 0; j < k; j++) {
		double t0 = cpu_now(), t1;

		set_seq(msg, j);
		if (ioctl(sender, BUS1_CMD_SEND, &s) < 0)
			die("SEND");
		t1 = cpu_now();
		for (int i = 0; i < n; i++) {
			struct bus1_cmd_recv r;

			memset(&r, 0, sizeof(r));
			r.max_offset = POOL_SIZE;
			if (ioctl(receivers[i], BUS1_CMD_RECV, &r) < 0)
				die("RECV");
			if (r.msg.n_bytes != MSG_SIZE || seq_of(pools[i] + r.msg.offset) != (uint64_t)j)
				fail("multicast payload", seq_of(pools[i] + r.msg.offset), j);
			if (ioctl(receivers[i], BUS1_CMD_SLICE_RELEASE, &r.msg.offset) < 0)
				die("SLICE_RELEASE");
		}
		send_ns += t1 - t0;
		take_ns += cpu_now() - t1;
	}
	*take = take_ns / ((double)k * n);
	return send_ns / ((double)k * n);
}

/* CPU ns per UDS write+recv of 1 KiB. */
static double run_uds(int s[2], long k)
{
	uint8_t buf[MSG_SIZE];
	double t0 = cpu_now();

	memset(buf, 0x5a, sizeof(buf));
	for (long j = 0; j < k; j++) {
		set_seq(buf, j);
		if (write(s[0], buf, MSG_SIZE) != MSG_SIZE)
			die("write");
		if (recv(s[1], buf, MSG_SIZE, 0) != MSG_SIZE)
			die("recv");
	}
	return (cpu_now() - t0) / k;
}

int main(int argc, char **argv)
{
	long deliveries = argc > 1 ? atol(argv[1]) : 100000;
	double send[NSIZES][ROUNDS], take[NSIZES][ROUNDS], uds[ROUNDS];
	double r256[ROUNDS], flat[ROUNDS];
	int s[2];

	if (deliveries <= 0)
		deliveries = 1;
	setup();
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, s) < 0)
		die("socketpair");
	/* warm up every size and the baseline */
	for (int z = 0; z < NSIZES; z++) {
		double t;

		run_bus1(sizes[z], deliveries / sizes[z] / 10 + 1, &t);
	}
	run_uds(s, deliveries / 10 + 1);
	for (int i = 0; i < ROUNDS; i++) {
		for (int z = 0; z < NSIZES; z++)
			send[z][i] = run_bus1(sizes[z], deliveries / sizes[z] + 1, &take[z][i]);
		uds[i] = run_uds(s, deliveries);
		r256[i] = send[3][i] / uds[i];
		flat[i] = send[3][i] / send[1][i];
	}
	printf("fanout: multicast of 1 KiB, %ld deliveries per size x %d rounds (CPU time per destination, median)\n",
	       deliveries, ROUNDS);
	for (int z = 0; z < NSIZES; z++) {
		qsort(send[z], ROUNDS, sizeof(double), cmp_double);
		qsort(take[z], ROUNDS, sizeof(double), cmp_double);
		printf("  N = %4d: SEND %6.0f ns/destination, RECV+SLICE_RELEASE %6.0f ns/destination\n",
		       sizes[z], send[z][ROUNDS / 2], take[z][ROUNDS / 2]);
	}
	qsort(uds, ROUNDS, sizeof(double), cmp_double);
	qsort(r256, ROUNDS, sizeof(double), cmp_double);
	qsort(flat, ROUNDS, sizeof(double), cmp_double);
	printf("  bus1 SEND per destination, N = 256 : %8.0f ns\n", send[3][ROUNDS / 2]);
	printf("  UDS  write+recv (SEQPACKET)        : %8.0f ns\n", uds[ROUNDS / 2]);
	printf("  ratio bus1/UDS                     : %8.3f (min %.3f, max %.3f)\n",
	       r256[ROUNDS / 2], r256[0], r256[ROUNDS - 1]);
	printf("  flat N=256 / N=8                   : %8.3f (min %.3f, max %.3f)\n",
	       flat[ROUNDS / 2], flat[0], flat[ROUNDS - 1]);
	return 0;
}
