/* SPDX-License-Identifier: MIT */
/*
 * K independent pairs streaming at once on one bus: K sender processes
 * each SEND 1 KiB messages to their own receiver process (2K processes,
 * 2K peers in one domain, no peer shared between pairs). Reported: the
 * aggregate messages per second of all pairs, against K AF_UNIX
 * SOCK_SEQPACKET socketpairs driven the same way in the same run. Pairs
 * that share nothing should not slow each other down beyond what the
 * CPUs allow; with sockets they do not.
 *
 * Every round forks its 2K processes, which wait on a start pipe; the
 * time runs from the start until every receiver has seen and checked its
 * last message. Receivers block in poll() and drain with RECV until
 * EAGAIN, as in the stream benchmark.
 *
 * Run under the shim: scripts/bus1-run bench/bin/pairs K [messages-per-pair]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/bus1.h>

#define BENCH_NAME "pairs"
#include "common.h"

#define ROUNDS 5
#define POOL_SIZE (1ULL << 29)
#define MAX_PAIRS 16

/* One pair: for bus1 the two peer fds and the sender's handle; for UDS
 * the two ends of a socketpair. */
struct pair {
	int send_fd, recv_fd;
	uint64_t dest;
};

static void start_wait(int start)
{
	char c;

	if (read(start, &c, 1) != 0)
		die("start pipe");
}

static void bus1_receiver(int fd, uint64_t base, long n)
{
	const uint8_t *pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	uint64_t want = base;
	struct bus1_cmd_recv r;

	if (pool == MAP_FAILED)
		die("mmap pool");
	while (want < base + n) {
		wait_in(fd);
		for (;;) {
			memset(&r, 0, sizeof(r));
			r.max_offset = POOL_SIZE;
			if (ioctl(fd, BUS1_CMD_RECV, &r) < 0) {
				if (errno == EAGAIN)
					break;
				die("RECV");
			}
			if (r.msg.n_bytes != MSG_SIZE)
				fail("bus1 message size", r.msg.n_bytes, MSG_SIZE);
			stream_check("bus1", pool + r.msg.offset, want);
			if (ioctl(fd, BUS1_CMD_SLICE_RELEASE, &r.msg.offset) < 0)
				die("SLICE_RELEASE");
			want++;
		}
	}
	exit(0);
}

static void bus1_sender(struct pair *p, uint64_t base, long n, int start)
{
	uint8_t buf[MSG_SIZE];
	struct iovec v = { .iov_base = buf, .iov_len = MSG_SIZE };
	struct bus1_cmd_send s = {
		.ptr_destinations = (uintptr_t)&p->dest, .n_destinations = 1,
		.ptr_vecs = (uintptr_t)&v, .n_vecs = 1,
	};
	const struct timespec backoff = { .tv_nsec = 20000 };

	memcpy(buf, stream_pattern(), sizeof(buf));
	start_wait(start);
	for (uint64_t seq = base; seq < base + n; seq++) {
		stream_fill(buf, seq);
		while (ioctl(p->send_fd, BUS1_CMD_SEND, &s) < 0) {
			/* the receiver is full until it drains (§6) */
			if (errno != EDQUOT && errno != EXFULL)
				die("SEND");
			nanosleep(&backoff, NULL);
		}
	}
	exit(0);
}

static void uds_receiver(int fd, uint64_t base, long n)
{
	uint8_t buf[MSG_SIZE + 1];
	uint64_t want = base;

	while (want < base + n) {
		wait_in(fd);
		while (uds_take(fd, buf, MSG_SIZE))
			stream_check("UDS", buf, want++);
	}
	exit(0);
}

static void uds_sender(int fd, uint64_t base, long n, int start)
{
	uint8_t buf[MSG_SIZE];

	memcpy(buf, stream_pattern(), sizeof(buf));
	start_wait(start);
	for (uint64_t seq = base; seq < base + n; seq++) {
		stream_fill(buf, seq);
		if (write(fd, buf, MSG_SIZE) != MSG_SIZE)
			die("write");
	}
	exit(0);
}

/*
 * One round of k pairs, n messages each, numbered from base; returns the
 * aggregate messages per second. Receivers are forked first, then the
 * senders, which wait until the start pipe closes.
 */
static double round_of(struct pair *pairs, int k, int bus1, uint64_t base, long n)
{
	pid_t rpid[MAX_PAIRS], spid[MAX_PAIRS];
	int start[2];
	double t0, t1;

	if (pipe2(start, O_CLOEXEC) < 0)
		die("pipe");
	for (int i = 0; i < k; i++) {
		rpid[i] = fork();
		if (rpid[i] < 0)
			die("fork");
		if (rpid[i] == 0) {
			close(start[1]);
			if (bus1)
				bus1_receiver(pairs[i].recv_fd, base, n);
			uds_receiver(pairs[i].recv_fd, base, n);
		}
	}
	for (int i = 0; i < k; i++) {
		spid[i] = fork();
		if (spid[i] < 0)
			die("fork");
		if (spid[i] == 0) {
			close(start[1]);
			if (bus1)
				bus1_sender(&pairs[i], base, n, start[0]);
			uds_sender(pairs[i].send_fd, base, n, start[0]);
		}
	}
	close(start[0]);
	t0 = wall_now();
	close(start[1]);
	for (int i = 0; i < k; i++)
		reap(rpid[i], bus1 ? "bus1 receiver" : "UDS receiver");
	t1 = wall_now();
	for (int i = 0; i < k; i++)
		reap(spid[i], bus1 ? "bus1 sender" : "UDS sender");
	return k * n / ((t1 - t0) / 1e9);
}

int main(int argc, char **argv)
{
	int k = argc > 1 ? atoi(argv[1]) : 1;
	long n = argc > 2 ? atol(argv[2]) : 50000;
	struct pair bus1[MAX_PAIRS], uds[MAX_PAIRS];
	double tb[ROUNDS], tu[ROUNDS], ratio[ROUNDS];
	uint64_t base = 0;

	if (k < 1 || k > MAX_PAIRS) {
		fprintf(stderr, "pairs: 1..%d pairs\n", MAX_PAIRS);
		return 2;
	}
	if (n <= 0)
		n = 1;
	signal(SIGPIPE, SIG_IGN);
	for (int i = 0; i < k; i++) {
		struct bus1_cmd_handle_transfer t = {
			.src_handle = 0x100, .dst_handle = BUS1_HANDLE_INVALID,
		};
		int s[2];

		bus1[i].send_fd = open("/dev/bus1", O_RDWR | O_CLOEXEC | O_NONBLOCK);
		bus1[i].recv_fd = open("/dev/bus1", O_RDWR | O_CLOEXEC | O_NONBLOCK);
		if (bus1[i].send_fd < 0 || bus1[i].recv_fd < 0)
			die("open /dev/bus1 (run under the shim)");
		t.dst_fd = bus1[i].send_fd;
		if (ioctl(bus1[i].recv_fd, BUS1_CMD_HANDLE_TRANSFER, &t) < 0)
			die("HANDLE_TRANSFER");
		bus1[i].dest = t.dst_handle;
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, s) < 0)
			die("socketpair");
		uds[i].send_fd = s[0];
		uds[i].recv_fd = s[1];
	}
	/* warm up both paths */
	round_of(bus1, k, 1, base, n / 10 + 1);
	round_of(uds, k, 0, base, n / 10 + 1);
	base += n / 10 + 1;
	for (int i = 0; i < ROUNDS; i++, base += n) {
		tb[i] = round_of(bus1, k, 1, base, n);
		tu[i] = round_of(uds, k, 0, base, n);
		ratio[i] = tb[i] / tu[i];
	}
	qsort(tb, ROUNDS, sizeof(double), cmp_double);
	qsort(tu, ROUNDS, sizeof(double), cmp_double);
	qsort(ratio, ROUNDS, sizeof(double), cmp_double);
	printf("pairs: %d independent 1 KiB streams at once, %ld messages each x %d rounds, all verified (aggregate messages per second, median)\n",
	       k, n, ROUNDS);
	printf("  bus1 %d x (SEND -> poll+RECV+SLICE_RELEASE) : %10.0f msg/s\n", k, tb[ROUNDS / 2]);
	printf("  UDS  %d x (write -> poll+recv)              : %10.0f msg/s\n", k, tu[ROUNDS / 2]);
	printf("  ratio bus1/UDS                            : %10.3f (min %.3f, max %.3f)\n",
	       ratio[ROUNDS / 2], ratio[0], ratio[ROUNDS - 1]);
	return 0;
}
