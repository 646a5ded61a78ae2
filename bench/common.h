/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the benchmarks. Define BENCH_NAME (the
 * program's name, for error messages) before including. Section numbers
 * (§8.2) are those of docs/reference.md.
 */
#ifndef BUS1_BENCH_COMMON_H
#define BUS1_BENCH_COMMON_H

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

/* Every benchmark moves 1 KiB messages, numbered in their first 8 bytes. */
#define MSG_SIZE 1024

static inline uint64_t seq_of(const uint8_t *buf)
{
	uint64_t seq;

	memcpy(&seq, buf, sizeof(seq));
	return seq;
}

static inline void set_seq(uint8_t *buf, uint64_t seq)
{
	memcpy(buf, &seq, sizeof(seq));
}

static inline double wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static inline void die(const char *what)
{
	fprintf(stderr, BENCH_NAME "[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
	exit(1);
}

static inline void fail(const char *what, unsigned long long got, unsigned long long want)
{
	fprintf(stderr, BENCH_NAME "[%d]: %s: got %llu, expected %llu\n",
		(int)getpid(), what, got, want);
	exit(1);
}

static inline int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * With BENCH_WAIT=epoll, wait_in() waits in epoll_wait() on a set of its
 * own holding `fd` (level-triggered), made at the first wait on `fd`.
 */
static inline int wait_epoll_set(int fd)
{
	static int sets[256];
	static int mode = -1;

	if (mode < 0) {
		const char *w = getenv("BENCH_WAIT");

		mode = w && !strcmp(w, "epoll");
	}
	if (!mode || fd < 0 || fd >= 256)
		return -1;
	if (!sets[fd]) {
		struct epoll_event ev = { .events = EPOLLIN };
		int ep = epoll_create1(EPOLL_CLOEXEC);

		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
			die("epoll set");
		sets[fd] = ep + 1;
	}
	return sets[fd] - 1;
}

static inline void wait_in(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int ep = wait_epoll_set(fd);

	while (ep >= 0) {
		struct epoll_event ev;
		int r = epoll_wait(ep, &ev, 1, -1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("epoll_wait");
		if (ev.events & (EPOLLHUP | EPOLLERR))
			fail("epoll events", ev.events, EPOLLIN);
		if (r == 1 && ev.events & EPOLLIN)
			return;
	}
	for (;;) {
		int r = poll(&p, 1, -1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("poll");
		if (p.revents & (POLLHUP | POLLERR | POLLNVAL))
			fail("poll revents", p.revents, POLLIN);
		if (p.revents & POLLIN)
			return;
	}
}

/*
 * Takes one message of exactly `size` bytes from a UDS baseline socket
 * without blocking; returns 0 once the socket is empty. Shared so that
 * every stream baseline receives the same way.
 */
static inline int uds_take(int fd, uint8_t *buf, size_t size)
{
	ssize_t n = recv(fd, buf, size + 1, MSG_DONTWAIT);

	if (n < 0) {
		if (errno == EAGAIN)
			return 0;
		die("recv");
	}
	if ((size_t)n != size)
		fail("UDS message size", n, size);
	return 1;
}

/* The number that tells an echoing ping-pong side to exit. */
#define SEQ_QUIT UINT64_MAX

/*
 * One end of a ping-pong: how it sends a message and how it waits for and
 * takes one. The benchmark and its floor time every kind of hop with the
 * same two loops.
 */
struct hop {
	void (*send)(void *end, const uint8_t *buf);
	void (*recv)(void *end, uint8_t *buf);
	void *end;
	const char *who;
};

/*
 * The echoing side: takes one message and sends it back if it is number
 * `want`; returns SEQ_QUIT (without answering) if it was that.
 */
static inline uint64_t echo_one(const struct hop *h, uint64_t want)
{
	uint8_t buf[MSG_SIZE];

	h->recv(h->end, buf);
	if (seq_of(buf) == SEQ_QUIT)
		return SEQ_QUIT;
	if (seq_of(buf) != want) {
		fprintf(stderr, BENCH_NAME ": %s: echo out of sequence\n", h->who);
		fail("echo sequence", seq_of(buf), want);
	}
	h->send(h->end, buf);
	return want;
}

/* Returns the wall-clock ns per round trip; *seq continues across rounds. */
static inline double time_round_trips(const struct hop *h, long n, uint64_t *seq)
{
	uint8_t out[MSG_SIZE], in[MSG_SIZE];
	double t0;

	memset(out, 0x5a, sizeof(out));
	t0 = wall_now();
	for (long i = 0; i < n; i++, (*seq)++) {
		set_seq(out, *seq);
		h->send(h->end, out);
		h->recv(h->end, in);
		if (seq_of(in) != *seq) {
			fprintf(stderr, BENCH_NAME ": %s: reply out of sequence\n", h->who);
			fail("reply sequence", seq_of(in), *seq);
		}
	}
	return (wall_now() - t0) / n;
}

/*
 * The stream benchmarks' payload: the sequence number at both ends and a
 * fixed pattern between, so that a lost, reordered or damaged message is
 * caught whichever way it went.
 */
#define SEQ_TAIL (MSG_SIZE - sizeof(uint64_t))

static inline const uint8_t *stream_pattern(void)
{
	static uint8_t pattern[MSG_SIZE];
	static int filled;

	if (!filled) {
		for (size_t i = 0; i < sizeof(pattern); i++)
			pattern[i] = (uint8_t)(i * 7 + 1);
		filled = 1;
	}
	return pattern;
}

/* Numbers a message whose buffer already holds the pattern. */
static inline void stream_fill(uint8_t *buf, uint64_t seq)
{
	set_seq(buf, seq);
	memcpy(buf + SEQ_TAIL, &seq, sizeof(seq));
}

/* Checks sequence number (both copies) and the pattern in between. */
static inline void stream_check(const char *who, const uint8_t *buf, uint64_t want)
{
	uint64_t tail;

	memcpy(&tail, buf + SEQ_TAIL, sizeof(tail));
	if (seq_of(buf) != want) {
		fprintf(stderr, BENCH_NAME ": %s: message lost or reordered\n", who);
		fail("sequence", seq_of(buf), want);
	}
	if (tail != want || memcmp(buf + 8, stream_pattern() + 8, SEQ_TAIL - 8)) {
		fprintf(stderr, BENCH_NAME ": %s: message %llu damaged\n", who,
			(unsigned long long)want);
		exit(1);
	}
}

/* Waits for a child process; any exit but a clean one fails the benchmark. */
static inline void reap(pid_t pid, const char *what)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		die("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, BENCH_NAME ": %s child failed (status 0x%x)\n", what, status);
		exit(1);
	}
}

#endif /* BUS1_BENCH_COMMON_H */
