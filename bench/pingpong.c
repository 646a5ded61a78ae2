/* SPDX-License-Identifier: MIT */
/*
 * Cross-process ping-pong: a parent and a forked child each own one peer
 * and hold a handle to the other's node; a 1 KiB message bounces between
 * them, each side blocked in poll() on its own peer fd (no busy-waiting).
 * Per hop: poll, RECV, read the payload out of the pool mapping,
 * SLICE_RELEASE, SEND the reply.
 *
 * Baseline in the same run: the same ping-pong over an AF_UNIX
 * SOCK_SEQPACKET socketpair with poll() + recv() + write().
 *
 * With BENCH_WAIT=epoll both sides of both runs wait in epoll_wait() on a
 * level-triggered set of their own instead of poll() (common.h).
 *
 * Prints the wall-clock time per round trip of each and the ratio bus1/UDS
 * (median of several alternating rounds, since the machines are noisy),
 * and the CPU time both processes spent per round trip (a waiter that
 * spins before it sleeps trades CPU time for wake-up latency).
 *
 * Paced (a second argument, a pause in microseconds): the parent sleeps
 * that long before each round trip, so that the echoing child's every
 * wait outlasts any spin. Then only the CPU time is of interest: it is
 * what the "bus1", "UDS" and "ratio" lines report, and it shows what a
 * spin that does not pay off costs.
 * Run under the shim: scripts/bus1-run bench/bin/pingpong [round-trips [pause-us]]
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

#define BENCH_NAME "pingpong"
#include "common.h"

#define ROUNDS 7
#define POOL_SIZE (1ULL << 29)


/* One side of the bus1 ping-pong: its own peer, the handle to the other's node. */
struct bus1_end {
	int fd;
	uint64_t dest;
	const uint8_t *pool;
};

static void bus1_send(void *end, const uint8_t *buf)
{
	struct bus1_end *e = end;
	struct iovec v = { .iov_base = (void *)buf, .iov_len = MSG_SIZE };
	struct bus1_cmd_send s = {
		.ptr_destinations = (uintptr_t)&e->dest, .n_destinations = 1,
		.ptr_vecs = (uintptr_t)&v, .n_vecs = 1,
	};

	if (ioctl(e->fd, BUS1_CMD_SEND, &s) < 0)
		die("SEND");
}

/*
 * Blocks until a message is there, copies its payload out of the pool and
 * releases the slice. RECV may still see EAGAIN after POLLIN (§8.2: a head
 * that RECV discards), so it polls again in that case.
 */
static void bus1_recv(void *end, uint8_t *buf)
{
	struct bus1_end *e = end;
	struct bus1_cmd_recv r;

	for (;;) {
		wait_in(e->fd);
		memset(&r, 0, sizeof(r));
		r.max_offset = POOL_SIZE;
		if (ioctl(e->fd, BUS1_CMD_RECV, &r) == 0)
			break;
		if (errno != EAGAIN)
			die("RECV");
	}
	if (r.msg.type != BUS1_MSG_DATA)
		fail("message type", r.msg.type, BUS1_MSG_DATA);
	if (r.msg.n_bytes != MSG_SIZE)
		fail("message size", r.msg.n_bytes, MSG_SIZE);
	memcpy(buf, e->pool + r.msg.offset, MSG_SIZE);
	if (ioctl(e->fd, BUS1_CMD_SLICE_RELEASE, &r.msg.offset) < 0)
		die("SLICE_RELEASE");
}

static void uds_send(void *end, const uint8_t *buf)
{
	int fd = *(int *)end;

	if (write(fd, buf, MSG_SIZE) != MSG_SIZE)
		die("write");
}

static void uds_recv(void *end, uint8_t *buf)
{
	int fd = *(int *)end;
	ssize_t n;

	wait_in(fd);
	n = recv(fd, buf, MSG_SIZE, 0);
	if (n < 0)
		die("recv");
	if (n != MSG_SIZE)
		fail("recv size", n, MSG_SIZE);
}

/* Paced: the parent's sends, each after a pause of pause_ns. */
static long pause_ns;
static void (*unpaced_send)(void *end, const uint8_t *buf);

static void paced_send(void *end, const uint8_t *buf)
{
	struct timespec ts = { pause_ns / 1000000000L, pause_ns % 1000000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	unpaced_send(end, buf);
}

/* The child echoes every message back until it sees SEQ_QUIT. */
static void echo(const struct hop *h)
{
	for (uint64_t want = 0;; want++)
		if (echo_one(h, want) == SEQ_QUIT)
			exit(0);
}

/*
 * Opens both peers in this process (so they share the domain), creates
 * node 0x100 on each and hands each peer a handle to the other's node.
 */
static void bus1_setup(struct bus1_end *parent, struct bus1_end *child)
{
	struct bus1_cmd_handle_transfer t = {
		.src_handle = 0x100, .dst_handle = BUS1_HANDLE_INVALID,
	};

	parent->fd = open("/dev/bus1", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	child->fd = open("/dev/bus1", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (parent->fd < 0 || child->fd < 0)
		die("open /dev/bus1 (run under the shim)");
	t.dst_fd = child->fd;
	if (ioctl(parent->fd, BUS1_CMD_HANDLE_TRANSFER, &t) < 0)
		die("HANDLE_TRANSFER parent->child");
	child->dest = t.dst_handle;
	t.dst_fd = parent->fd;
	t.dst_handle = BUS1_HANDLE_INVALID;
	if (ioctl(child->fd, BUS1_CMD_HANDLE_TRANSFER, &t) < 0)
		die("HANDLE_TRANSFER child->parent");
	parent->dest = t.dst_handle;
	parent->pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, parent->fd, 0);
	child->pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, child->fd, 0);
	if (parent->pool == MAP_FAILED || child->pool == MAP_FAILED)
		die("mmap pool");
}

/* CPU time (ns) used so far by this process and by process `other`. */
static double cpu_both(pid_t other)
{
	struct timespec a, b;
	clockid_t c;

	if (clock_getcpuclockid(other, &c) != 0)
		die("clock_getcpuclockid");
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
	clock_gettime(c, &b);
	return (a.tv_sec + b.tv_sec) * 1e9 + a.tv_nsec + b.tv_nsec;
}

/* As time_round_trips, and the CPU ns of both ends per round trip. */
static double timed(const struct hop *h, pid_t echo_pid, long n, uint64_t *seq, double *cpu)
{
	struct hop paced = *h;
	double c0, wall;

	if (pause_ns > 0) {
		unpaced_send = h->send;
		paced.send = paced_send;
	}
	c0 = cpu_both(echo_pid);
	wall = time_round_trips(&paced, n, seq);

	*cpu = (cpu_both(echo_pid) - c0) / n;
	return wall;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	double tb[ROUNDS], tu[ROUNDS], ratio[ROUNDS], cb[ROUNDS], cu[ROUNDS];
	uint64_t bseq = 0, useq = 0;
	struct bus1_end me, peer;
	int s[2];
	struct hop bus1 = { bus1_send, bus1_recv, &me, "bus1" };
	struct hop uds = { uds_send, uds_recv, &s[0], "UDS" };
	uint8_t quit[MSG_SIZE];
	pid_t bpid, upid;

	if (n <= 0)
		n = 1;
	pause_ns = argc > 2 ? atol(argv[2]) * 1000L : 0;
	bus1_setup(&me, &peer);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, s) < 0)
		die("socketpair");

	bpid = fork();
	if (bpid < 0)
		die("fork");
	if (bpid == 0) {
		close(me.fd);
		close(s[0]);
		close(s[1]);
		bus1.end = &peer;
		echo(&bus1);
	}
	close(peer.fd);
	munmap((void *)peer.pool, POOL_SIZE);

	upid = fork();
	if (upid < 0)
		die("fork");
	if (upid == 0) {
		close(me.fd);
		close(s[0]);
		uds.end = &s[1];
		echo(&uds);
	}
	close(s[1]);

	/* warm up both paths */
	time_round_trips(&bus1, n / 10 + 1, &bseq);
	time_round_trips(&uds, n / 10 + 1, &useq);
	for (int i = 0; i < ROUNDS; i++) {
		tb[i] = timed(&bus1, bpid, n, &bseq, &cb[i]);
		tu[i] = timed(&uds, upid, n, &useq, &cu[i]);
		ratio[i] = pause_ns > 0 ? cb[i] / cu[i] : tb[i] / tu[i];
	}

	memset(quit, 0, sizeof(quit));
	set_seq(quit, SEQ_QUIT);
	bus1_send(&me, quit);
	uds_send(&s[0], quit);
	reap(bpid, "bus1");
	reap(upid, "UDS");

	qsort(tb, ROUNDS, sizeof(double), cmp_double);
	qsort(tu, ROUNDS, sizeof(double), cmp_double);
	qsort(ratio, ROUNDS, sizeof(double), cmp_double);
	qsort(cb, ROUNDS, sizeof(double), cmp_double);
	qsort(cu, ROUNDS, sizeof(double), cmp_double);
	if (pause_ns > 0) {
		printf("pingpong 1 KiB cross-process, paced: one round trip every %ld us, %ld round trips x %d rounds "
		       "(CPU time of both processes per round trip, median)\n", pause_ns / 1000, n, ROUNDS);
		printf("  bus1 poll+RECV+SLICE_RELEASE+SEND : %8.2f us\n", cb[ROUNDS / 2] / 1e3);
		printf("  UDS  poll+recv+write (SEQPACKET)  : %8.2f us\n", cu[ROUNDS / 2] / 1e3);
		printf("  ratio bus1/UDS (CPU)              : %8.3f (min %.3f, max %.3f)\n",
		       ratio[ROUNDS / 2], ratio[0], ratio[ROUNDS - 1]);
		printf("  wall bus1 per round trip          : %8.2f us\n", tb[ROUNDS / 2] / 1e3);
		printf("  wall UDS  per round trip          : %8.2f us\n", tu[ROUNDS / 2] / 1e3);
		return 0;
	}
	printf("pingpong 1 KiB cross-process, %ld round trips x %d rounds (wall time per round trip, median)\n",
	       n, ROUNDS);
	printf("  bus1 poll+RECV+SLICE_RELEASE+SEND : %8.2f us\n", tb[ROUNDS / 2] / 1e3);
	printf("  UDS  poll+recv+write (SEQPACKET)  : %8.2f us\n", tu[ROUNDS / 2] / 1e3);
	printf("  ratio bus1/UDS                    : %8.3f (min %.3f, max %.3f)\n",
	       ratio[ROUNDS / 2], ratio[0], ratio[ROUNDS - 1]);
	printf("  cpu bus1 per round trip (both)    : %8.2f us\n", cb[ROUNDS / 2] / 1e3);
	printf("  cpu UDS  per round trip (both)    : %8.2f us\n", cu[ROUNDS / 2] / 1e3);
	return 0;
}
