/* SPDX-License-Identifier: MIT */
/*
 * Multicast cost per destination: one process owns a sending peer and
 * NDEST receiving peers, and holds a handle to a node of each. A round
 * SENDs one 1 KiB message to all of them in one call, then every receiver
 * RECVs it, checks it and releases its slice.
 *
 * Reported: the CPU time of the SEND divided by the number of
 * destinations (the figure the target is about), and the CPU time of a
 * receiver's RECV+SLICE_RELEASE, against write()+recv() of 1 KiB on an
 * AF_UNIX SOCK_SEQPACKET socketpair measured in the same run (what the
 * same delivery costs per destination with sockets, where a multicast is
 * one write per destination).
 *
 * Run under the shim: scripts/bus1-run bench/bin/multicast [sends [destinations]]
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

#define BENCH_NAME "multicast"
#include "common.h"

#define ROUNDS 7
#define POOL_SIZE (1ULL << 29)
#define MAX_DEST 1000

static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

struct receiver {
	int fd;
	const uint8_t *pool;
};

struct bus {
	int sender, ndest;
	uint64_t dest[MAX_DEST];
	struct receiver rcv[MAX_DEST];
	uint64_t seq;
};

static void bus_setup(struct bus *b, int ndest)
{
	b->ndest = ndest;
	b->sender = open("/dev/bus1", O_RDWR | O_CLOEXEC);
	if (b->sender < 0)
		die("open /dev/bus1 (run under the shim)");
	for (int i = 0; i < ndest; i++) {
		struct bus1_cmd_handle_transfer t = {
			.src_handle = 0x100, .dst_handle = BUS1_HANDLE_INVALID,
			.dst_fd = b->sender,
		};
		struct receiver *r = &b->rcv[i];

		r->fd = open("/dev/bus1", O_RDWR | O_CLOEXEC);
		if (r->fd < 0)
			die("open /dev/bus1");
		if (ioctl(r->fd, BUS1_CMD_HANDLE_TRANSFER, &t) < 0)
			die("HANDLE_TRANSFER");
		b->dest[i] = t.dst_handle;
		r->pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, r->fd, 0);
		if (r->pool == MAP_FAILED)
			die("mmap pool");
	}
}

/* One round of n multicasts; returns the SEND CPU time per destination
 * and stores the receiving side's per destination in *recv_ns. */
static double bus_round(struct bus *b, long n, double *recv_ns)
{
	uint8_t buf[MSG_SIZE];
	struct iovec v = { .iov_base = buf, .iov_len = MSG_SIZE };
	struct bus1_cmd_send s = {
		.ptr_destinations = (uintptr_t)b->dest, .n_destinations = b->ndest,
		.ptr_vecs = (uintptr_t)&v, .n_vecs = 1,
	};
	struct bus1_cmd_recv r;
	double sending = 0, receiving = 0;

	memcpy(buf, stream_pattern(), sizeof(buf));
	for (long i = 0; i < n; i++, b->seq++) {
		double t0, t1;

		stream_fill(buf, b->seq);
		t0 = cpu_now();
		if (ioctl(b->sender, BUS1_CMD_SEND, &s) < 0)
			die("SEND");
		t1 = cpu_now();
		for (int d = 0; d < b->ndest; d++) {
			struct receiver *rc = &b->rcv[d];

			memset(&r, 0, sizeof(r));
			r.max_offset = POOL_SIZE;
			if (ioctl(rc->fd, BUS1_CMD_RECV, &r) < 0)
				die("RECV");
			stream_check("bus1", rc->pool + r.msg.offset, b->seq);
			if (ioctl(rc->fd, BUS1_CMD_SLICE_RELEASE, &r.msg.offset) < 0)
				die("SLICE_RELEASE");
		}
		sending += t1 - t0;
		receiving += cpu_now() - t1;
	}
	*recv_ns = receiving / ((double)n * b->ndest);
	return sending / ((double)n * b->ndest);
}

/* write()+recv() of one 1 KiB message per destination, per message. */
static double uds_round(int s[2], long n, int ndest)
{
	uint8_t out[MSG_SIZE], in[MSG_SIZE + 1];
	double t0 = cpu_now();
	uint64_t seq = 0;

	memcpy(out, stream_pattern(), sizeof(out));
	for (long i = 0; i < n * ndest; i++, seq++) {
		stream_fill(out, seq);
		if (write(s[0], out, MSG_SIZE) != MSG_SIZE)
			die("write");
		if (!uds_take(s[1], in, MSG_SIZE))
			fail("UDS message missing", 0, 1);
		stream_check("UDS", in, seq);
	}
	return (cpu_now() - t0) / ((double)n * ndest);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 2000;
	int ndest = argc > 2 ? atoi(argv[2]) : 256;
	double tb[ROUNDS], tr[ROUNDS], tu[ROUNDS], ratio[ROUNDS], rratio[ROUNDS];
	struct rlimit rl;
	static struct bus b;
	int s[2];

	if (n <= 0)
		n = 1;
	if (ndest < 1 || ndest > MAX_DEST) {
		fprintf(stderr, "multicast: 1..%d destinations\n", MAX_DEST);
		return 2;
	}
	/* every receiver is a peer fd of this process */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	bus_setup(&b, ndest);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, s) < 0)
		die("socketpair");
	/* warm up both paths */
	bus_round(&b, n / 10 + 1, &tr[0]);
	uds_round(s, n / 10 + 1, ndest);
	for (int i = 0; i < ROUNDS; i++) {
		tb[i] = bus_round(&b, n, &tr[i]);
		tu[i] = uds_round(s, n, ndest);
		ratio[i] = tb[i] / tu[i];
		rratio[i] = tr[i] / tu[i];
	}
	qsort(tb, ROUNDS, sizeof(double), cmp_double);
	qsort(tr, ROUNDS, sizeof(double), cmp_double);
	qsort(tu, ROUNDS, sizeof(double), cmp_double);
	qsort(ratio, ROUNDS, sizeof(double), cmp_double);
	qsort(rratio, ROUNDS, sizeof(double), cmp_double);
	printf("multicast 1 KiB to %d destinations, %ld sends x %d rounds, all verified (CPU time per destination, median)\n",
	       ndest, n, ROUNDS);
	printf("  bus1 SEND, per destination       : %8.0f ns\n", tb[ROUNDS / 2]);
	printf("  UDS  write+recv (SEQPACKET)      : %8.0f ns\n", tu[ROUNDS / 2]);
	printf("  ratio bus1/UDS                   : %8.3f (min %.3f, max %.3f)\n",
	       ratio[ROUNDS / 2], ratio[0], ratio[ROUNDS - 1]);
	printf("  (bus1 RECV+SLICE_RELEASE at each receiver: %.0f ns, %.3f x UDS, min %.3f, max %.3f)\n",
	       tr[ROUNDS / 2], rratio[ROUNDS / 2], rratio[0], rratio[ROUNDS - 1]);
	return 0;
}
