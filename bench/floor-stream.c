/* SPDX-License-Identifier: MIT */
/*
 * Ceilings of the stream benchmark: how fast one process can stream 1 KiB
 * messages to another through shared memory with designs far leaner than
 * any bus1 engine, on this machine, against UDS in the same run.
 *
 *  - "locked": the leanest design that keeps docs/design.md, fixed decision 4
 *    (cross-process locks are robust futex mutexes): one queue with its
 *    own process-shared robust mutex, a ring of fixed 1 KiB slots. SEND is
 *    one critical section (take a free slot, copy the payload in, append);
 *    the receiver takes the head in one section (RECV) and frees the slot
 *    in another (SLICE_RELEASE), as bus1's separate ioctls must. No undo
 *    log, no accounting, no allocator, no handles, one producer.
 *  - "lock-free": a single-producer single-consumer ring with no lock at
 *    all: the payload copy and two atomic stores per message. Nothing in
 *    it could be rolled back after a crash, and it admits one sender only.
 *
 * Both use the readiness scheme of decision 2: a token datagram on a
 * socket the receiver polls, sent when the queue becomes non-empty and
 * drained when the receiver finds it empty, so a receiver that keeps up
 * is woken once per batch, not once per message. The receiver checks
 * every message as bench/stream does (sequence number at both ends, a
 * pattern between).
 *
 * Baseline in the same run, alternating rounds: the UDS stream of
 * bench/stream.c (AF_UNIX SOCK_SEQPACKET, blocking write(), receiver in
 * poll() + recv(MSG_DONTWAIT) until EAGAIN).
 *
 * Needs no shim: bench/bin/floor-stream [messages-per-round]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NAME "floor-stream"
#include "common.h"

#define ROUNDS 7
#define SLOTS 4096
#define SPIN 1000

/* The shared state of one design. */
struct ring {
	pthread_mutex_t lock;	/* "locked" only */
	uint64_t head, tail;
	uint32_t bell;		/* a token is (about to be) in the socket */
	uint8_t busy[SLOTS];	/* "locked" only: the slot is not released */
	uint8_t slot[SLOTS][MSG_SIZE];
};

enum design { LOCKED, LOCK_FREE, UDS, NDESIGNS };
static const char *const names[NDESIGNS] = { "locked", "lock-free", "UDS" };

static void lock(pthread_mutex_t *m)
{
	for (int i = 0; i < SPIN; i++) {
		if (pthread_mutex_trylock(m) == 0)
			return;
		__builtin_ia32_pause();
	}
	if (pthread_mutex_lock(m) != 0)
		die("pthread_mutex_lock");
}

static void unlock(pthread_mutex_t *m)
{
	pthread_mutex_unlock(m);
}

static uint64_t tokens;	/* sent by this process, i.e. the sender */

static void ring_token(int fd)
{
	tokens++;
	if (send(fd, NULL, 0, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno != EAGAIN)
		die("send token");
}

static void drain_tokens(int fd)
{
	char c;

	while (recv(fd, &c, sizeof(c), MSG_DONTWAIT) >= 0)
		;
	if (errno != EAGAIN)
		die("drain token");
}

static void backoff(void)
{
	const struct timespec t = { .tv_nsec = 20000 };

	nanosleep(&t, NULL);
}

static void locked_send(struct ring *q, int token, const uint8_t *buf)
{
	for (;;) {
		uint64_t s;
		int ring;

		lock(&q->lock);
		s = q->tail % SLOTS;
		if (q->busy[s]) {
			/* full until the receiver releases: like EXFULL */
			unlock(&q->lock);
			backoff();
			continue;
		}
		q->busy[s] = 1;
		memcpy(q->slot[s], buf, MSG_SIZE);
		q->tail++;
		ring = !q->bell;
		q->bell = 1;
		unlock(&q->lock);
		if (ring)
			ring_token(token);
		return;
	}
}

static void lock_free_send(struct ring *q, int token, const uint8_t *buf)
{
	uint64_t t = q->tail;

	while (t - __atomic_load_n(&q->head, __ATOMIC_ACQUIRE) >= SLOTS)
		backoff();
	memcpy(q->slot[t % SLOTS], buf, MSG_SIZE);
	__atomic_store_n(&q->tail, t + 1, __ATOMIC_SEQ_CST);
	if (!__atomic_exchange_n(&q->bell, 1, __ATOMIC_SEQ_CST))
		ring_token(token);
}

static int ack_fd;
static uint64_t mark, round_n;

/* Reports each round's end to the sender through the pipe. */
static void seen(uint64_t count)
{
	if (count == mark) {
		if (write(ack_fd, &count, sizeof(count)) != sizeof(count))
			die("write ack");
		mark += round_n;
	}
}

/* Receives until the queue is empty; returns the next expected number. */
static uint64_t locked_drain(struct ring *q, int token, uint64_t want)
{
	for (;;) {
		uint64_t s;

		lock(&q->lock);
		if (q->head == q->tail) {
			q->bell = 0;
			drain_tokens(token);
			unlock(&q->lock);
			return want;
		}
		s = q->head++ % SLOTS;
		unlock(&q->lock);
		stream_check(names[LOCKED], q->slot[s], want);
		lock(&q->lock);
		q->busy[s] = 0;
		unlock(&q->lock);
		seen(++want);
	}
}

/*
 * The empty check pairs with lock_free_send: the receiver clears the bell
 * and then looks at the tail, the sender publishes the tail and then sets
 * the bell; one of them sees the other's store, so either the receiver
 * goes on or the sender rings after the drain.
 */
static uint64_t lock_free_drain(struct ring *q, int token, uint64_t want)
{
	for (;;) {
		uint64_t h = q->head;

		if (h == __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE)) {
			drain_tokens(token);
			__atomic_store_n(&q->bell, 0, __ATOMIC_SEQ_CST);
			if (h == __atomic_load_n(&q->tail, __ATOMIC_SEQ_CST))
				return want;
			continue;
		}
		stream_check(names[LOCK_FREE], q->slot[h % SLOTS], want);
		__atomic_store_n(&q->head, h + 1, __ATOMIC_RELEASE);
		seen(++want);
	}
}

static void uds_receiver(int fd, uint64_t end)
{
	uint8_t buf[MSG_SIZE + 1];
	uint64_t want = 0;

	while (want < end) {
		wait_in(fd);
		while (uds_take(fd, buf, MSG_SIZE)) {
			stream_check(names[UDS], buf, want);
			seen(++want);
		}
	}
	exit(0);
}

static void ring_receiver(enum design d, struct ring *q, int token, uint64_t end)
{
	uint64_t want = 0;

	while (want < end) {
		wait_in(token);
		want = d == LOCKED ? locked_drain(q, token, want)
				   : lock_free_drain(q, token, want);
	}
	exit(0);
}

struct sender {
	enum design d;
	struct ring *q;
	int fd;		/* the token socket, or the UDS socket */
	int ack;
	uint64_t seq;
};

static double round_rate(struct sender *s, long n)
{
	uint8_t buf[MSG_SIZE];
	uint64_t got;
	double t0;

	memcpy(buf, stream_pattern(), sizeof(buf));
	t0 = wall_now();
	for (long i = 0; i < n; i++, s->seq++) {
		stream_fill(buf, s->seq);
		if (s->d == LOCKED)
			locked_send(s->q, s->fd, buf);
		else if (s->d == LOCK_FREE)
			lock_free_send(s->q, s->fd, buf);
		else if (write(s->fd, buf, MSG_SIZE) != MSG_SIZE)
			die("write");
	}
	if (read(s->ack, &got, sizeof(got)) != sizeof(got)) {
		fprintf(stderr, "floor-stream: %s receiver failed\n", names[s->d]);
		exit(1);
	}
	if (got != s->seq)
		fail("receiver progress", got, s->seq);
	return n / ((wall_now() - t0) / 1e9);
}

static struct ring *new_ring(void)
{
	pthread_mutexattr_t a;
	struct ring *q = mmap(NULL, sizeof(*q), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (q == MAP_FAILED)
		die("mmap");
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	if (pthread_mutex_init(&q->lock, &a) != 0)
		die("pthread_mutex_init");
	pthread_mutexattr_destroy(&a);
	return q;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000;
	double rate[NDESIGNS][ROUNDS], ratio[2][ROUNDS];
	uint64_t woken[NDESIGNS] = { 0 };
	struct sender s[NDESIGNS];
	pid_t pid[NDESIGNS];

	if (n <= 0)
		n = 1;
	signal(SIGPIPE, SIG_IGN);

	for (int d = 0; d < NDESIGNS; d++) {
		int sp[2], ack[2];

		if (socketpair(AF_UNIX, (d == UDS ? SOCK_SEQPACKET : SOCK_DGRAM | SOCK_NONBLOCK) | SOCK_CLOEXEC, 0, sp) < 0)
			die("socketpair");
		if (pipe2(ack, O_CLOEXEC) < 0)
			die("pipe");
		s[d] = (struct sender){ .d = d, .q = d == UDS ? NULL : new_ring(), .fd = sp[0], .ack = ack[0] };
		pid[d] = fork();
		if (pid[d] < 0)
			die("fork");
		if (pid[d] == 0) {
			uint64_t end = (uint64_t)(ROUNDS + 1) * n;

			close(sp[0]);
			close(ack[0]);
			ack_fd = ack[1];
			mark = round_n = n;
			if (d == UDS)
				uds_receiver(sp[1], end);
			ring_receiver(d, s[d].q, sp[1], end);
		}
		close(sp[1]);
		close(ack[1]);
	}

	/* a warm-up round each, then alternating rounds */
	for (int d = 0; d < NDESIGNS; d++)
		round_rate(&s[d], n);
	for (int r = 0; r < ROUNDS; r++) {
		for (int d = 0; d < NDESIGNS; d++) {
			uint64_t before = tokens;

			rate[d][r] = round_rate(&s[d], n);
			woken[d] += tokens - before;
		}
		ratio[0][r] = rate[LOCKED][r] / rate[UDS][r];
		ratio[1][r] = rate[LOCK_FREE][r] / rate[UDS][r];
	}
	for (int d = 0; d < NDESIGNS; d++) {
		reap(pid[d], names[d]);
		qsort(rate[d], ROUNDS, sizeof(double), cmp_double);
	}
	for (int i = 0; i < 2; i++)
		qsort(ratio[i], ROUNDS, sizeof(double), cmp_double);

	printf("stream ceilings: 1 KiB one-way through shared memory, no engine, %ld messages x %d rounds, all verified (messages per second, median)\n",
	       n, ROUNDS);
	printf("  locked    robust mutex ring, 3 sections/msg : %10.0f msg/s (%.3f tokens per message)\n",
	       rate[LOCKED][ROUNDS / 2], (double)woken[LOCKED] / ((double)n * ROUNDS));
	printf("  lock-free SPSC ring, no lock               : %10.0f msg/s (%.3f tokens per message)\n",
	       rate[LOCK_FREE][ROUNDS / 2], (double)woken[LOCK_FREE] / ((double)n * ROUNDS));
	printf("  UDS       write -> poll+recv (SEQPACKET)   : %10.0f msg/s\n", rate[UDS][ROUNDS / 2]);
	printf("  ratio locked/UDS                           : %10.3f (min %.3f, max %.3f)\n",
	       ratio[0][ROUNDS / 2], ratio[0][0], ratio[0][ROUNDS - 1]);
	printf("  ratio lock-free/UDS                        : %10.3f (min %.3f, max %.3f)\n",
	       ratio[1][ROUNDS / 2], ratio[1][0], ratio[1][ROUNDS - 1]);
	return 0;
}
