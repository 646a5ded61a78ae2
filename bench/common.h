/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the benchmarks. Define BENCH_NAME (the
 * program's name, for error messages) before including.
 */
#ifndef BUS1_BENCH_COMMON_H
#define BUS1_BENCH_COMMON_H

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

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

static inline void wait_in(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

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
