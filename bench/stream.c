/* SPDX-License-Identifier: MIT */
/*
 * One-way streaming throughput of 1 KiB messages from a sender process to
 * a receiver process.
 *
 * bus1: the parent owns the sending peer and holds a handle to a node of
 * the receiving peer, owned by a forked child. The child loops: poll()
 * (blocking) → RECV until EAGAIN, checking and releasing every slice →
 * poll() again. The parent SENDs as fast as it can; when the receiver is
 * over its quota (§6: EDQUOT, or EXFULL should its pool fill up) it sleeps
 * for a moment and retries, counting the retries.
 *
 * Baseline in the same run: an AF_UNIX SOCK_SEQPACKET socketpair, the
 * sender in blocking write(), the receiver in poll() + recv(MSG_DONTWAIT)
 * until EAGAIN.
 *
 * Every message carries its sequence number at its start and end and a
 * fixed pattern in between; the receiver checks each one, so a lost,
 * reordered or damaged message aborts the benchmark with an error.
 * The sender measures wall time from its first send until the receiver
 * reports (through a pipe) that it has seen the round's last message.
 *
 * Prints messages per second of each and the ratio bus1/UDS (median of
 * several alternating rounds, since the machines are noisy).
 * Run under the shim: scripts/bus1-run bench/bin/stream [messages-per-round]
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

#define BENCH_NAME "stream"
#include "common.h"

#define ROUNDS 7
#define POOL_SIZE (1ULL << 29)

/*
 * The receiver's schedule: a warm-up of w messages, then ROUNDS rounds of
 * n; after each it reports through the pipe how far it got.
 */
struct schedule {
	long warm, n;
	int ack;
};

static void ack(struct schedule *s, uint64_t seen)
{
	if (write(s->ack, &seen, sizeof(seen)) != sizeof(seen))
		die("write ack");
}

static uint64_t next_mark(struct schedule *s, uint64_t mark)
{
	return mark + s->n;
}

static void bus1_receiver(int fd, const uint8_t *pool, struct schedule *s)
{
	uint64_t want = 0, mark = s->warm, end = s->warm + (uint64_t)ROUNDS * s->n;
	struct bus1_cmd_recv r;

	while (want < end) {
		wait_in(fd);
		for (;;) {
			memset(&r, 0, sizeof(r));
			r.max_offset = POOL_SIZE;
			if (ioctl(fd, BUS1_CMD_RECV, &r) < 0) {
				if (errno == EAGAIN)
					break;
				die("RECV");
			}
			if (r.msg.type != BUS1_MSG_DATA)
				fail("bus1 message type", r.msg.type, BUS1_MSG_DATA);
			if (r.msg.n_bytes != MSG_SIZE)
				fail("bus1 message size", r.msg.n_bytes, MSG_SIZE);
			stream_check("bus1", pool + r.msg.offset, want);
			if (ioctl(fd, BUS1_CMD_SLICE_RELEASE, &r.msg.offset) < 0)
				die("SLICE_RELEASE");
			if (++want == mark) {
				ack(s, want);
				mark = next_mark(s, mark);
			}
		}
	}
	exit(0);
}

static void uds_receiver(int fd, struct schedule *s)
{
	uint64_t want = 0, mark = s->warm, end = s->warm + (uint64_t)ROUNDS * s->n;
	uint8_t buf[MSG_SIZE + 1];

	while (want < end) {
		wait_in(fd);
		while (uds_take(fd, buf, MSG_SIZE)) {
			stream_check("UDS", buf, want);
			if (++want == mark) {
				ack(s, want);
				mark = next_mark(s, mark);
			}
		}
	}
	exit(0);
}

/* Waits until the receiver has seen message number `until` - 1. */
static void wait_ack(int fd, uint64_t until, const char *who)
{
	uint64_t seen;
	ssize_t r = read(fd, &seen, sizeof(seen));

	if (r == 0) {
		fprintf(stderr, "stream: %s receiver failed\n", who);
		exit(1);
	}
	if (r != sizeof(seen))
		die("read ack");
	if (seen != until)
		fail("receiver progress", seen, until);
}

struct bus1_sender {
	int fd, ack;
	uint64_t dest, seq, retries;
};

static double bus1_round(struct bus1_sender *b, long n)
{
	uint8_t buf[MSG_SIZE];
	struct iovec v = { .iov_base = buf, .iov_len = MSG_SIZE };
	struct bus1_cmd_send s = {
		.ptr_destinations = (uintptr_t)&b->dest, .n_destinations = 1,
		.ptr_vecs = (uintptr_t)&v, .n_vecs = 1,
	};
	const struct timespec backoff = { .tv_nsec = 20000 };
	double t0;

	memcpy(buf, stream_pattern(), sizeof(buf));
	t0 = wall_now();
	for (long i = 0; i < n; i++, b->seq++) {
		stream_fill(buf, b->seq);
		while (ioctl(b->fd, BUS1_CMD_SEND, &s) < 0) {
			/*
			 * §6: the receiver is charged; it is full until it
			 * drains. Sleeping briefly (rather than spinning
			 * with sched_yield) keeps the retries from competing
			 * with the receiver for the bus.
			 */
			if (errno != EDQUOT && errno != EXFULL)
				die("SEND");
			b->retries++;
			nanosleep(&backoff, NULL);
		}
	}
	wait_ack(b->ack, b->seq, "bus1");
	return n / ((wall_now() - t0) / 1e9);
}

struct uds_sender {
	int fd, ack;
	uint64_t seq;
};

static double uds_round(struct uds_sender *u, long n)
{
	uint8_t buf[MSG_SIZE];
	double t0;

	memcpy(buf, stream_pattern(), sizeof(buf));
	t0 = wall_now();
	for (long i = 0; i < n; i++, u->seq++) {
		stream_fill(buf, u->seq);
		if (write(u->fd, buf, MSG_SIZE) != MSG_SIZE)
			die("write");
	}
	wait_ack(u->ack, u->seq, "UDS");
	return n / ((wall_now() - t0) / 1e9);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000;
	double tb[ROUNDS], tu[ROUNDS], ratio[ROUNDS];
	struct bus1_cmd_handle_transfer t = {
		.src_handle = 0x100, .dst_handle = BUS1_HANDLE_INVALID,
	};
	struct bus1_sender b = { 0 };
	struct uds_sender u = { 0 };
	struct schedule sched;
	int rfd, bpipe[2], upipe[2], s[2];
	const uint8_t *pool;
	pid_t bpid, upid;

	if (n <= 0)
		n = 1;
	sched.warm = n / 10 + 1;
	sched.n = n;
	signal(SIGPIPE, SIG_IGN);

	/* both peers are opened here, so the forked receiver shares the domain */
	b.fd = open("/dev/bus1", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	rfd = open("/dev/bus1", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (b.fd < 0 || rfd < 0)
		die("open /dev/bus1 (run under the shim)");
	t.dst_fd = b.fd;
	if (ioctl(rfd, BUS1_CMD_HANDLE_TRANSFER, &t) < 0)
		die("HANDLE_TRANSFER");
	b.dest = t.dst_handle;
	pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, rfd, 0);
	if (pool == MAP_FAILED)
		die("mmap pool");
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, s) < 0)
		die("socketpair");
	if (pipe2(bpipe, O_CLOEXEC) < 0 || pipe2(upipe, O_CLOEXEC) < 0)
		die("pipe");

	bpid = fork();
	if (bpid < 0)
		die("fork");
	if (bpid == 0) {
		close(b.fd);
		close(s[0]);
		close(s[1]);
		close(bpipe[0]);
		close(upipe[0]);
		close(upipe[1]);
		sched.ack = bpipe[1];
		bus1_receiver(rfd, pool, &sched);
	}
	close(rfd);
	munmap((void *)pool, POOL_SIZE);
	close(bpipe[1]);
	b.ack = bpipe[0];

	upid = fork();
	if (upid < 0)
		die("fork");
	if (upid == 0) {
		close(b.fd);
		close(bpipe[0]);
		close(s[0]);
		close(upipe[0]);
		sched.ack = upipe[1];
		uds_receiver(s[1], &sched);
	}
	close(s[1]);
	close(upipe[1]);
	u.fd = s[0];
	u.ack = upipe[0];

	/* warm up both paths */
	bus1_round(&b, sched.warm);
	uds_round(&u, sched.warm);
	b.retries = 0;
	for (int i = 0; i < ROUNDS; i++) {
		tb[i] = bus1_round(&b, n);
		tu[i] = uds_round(&u, n);
		ratio[i] = tb[i] / tu[i];
	}
	reap(bpid, "bus1");
	reap(upid, "UDS");

	qsort(tb, ROUNDS, sizeof(double), cmp_double);
	qsort(tu, ROUNDS, sizeof(double), cmp_double);
	qsort(ratio, ROUNDS, sizeof(double), cmp_double);
	printf("stream 1 KiB one-way, %ld messages x %d rounds, all verified (messages per second, median)\n",
	       n, ROUNDS);
	printf("  bus1 SEND -> poll+RECV+SLICE_RELEASE : %10.0f msg/s (%.2f quota retries per message)\n",
	       tb[ROUNDS / 2], (double)b.retries / ((double)n * ROUNDS));
	printf("  UDS  write -> poll+recv (SEQPACKET)  : %10.0f msg/s\n", tu[ROUNDS / 2]);
	printf("  ratio bus1/UDS                       : %10.3f (min %.3f, max %.3f)\n",
	       ratio[ROUNDS / 2], ratio[0], ratio[ROUNDS - 1]);
	return 0;
}
