/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the cross-process benchmarks. Define BENCH_NAME (the
 * program's name, for error messages) before including.
 */
#ifndef BUS1_BENCH_COMMON_H
#define BUS1_BENCH_COMMON_H

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, BENCH_NAME "[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
	exit(1);
}

static void fail(const char *what, unsigned long long got, unsigned long long want)
{
	fprintf(stderr, BENCH_NAME "[%d]: %s: got %llu, expected %llu\n",
		(int)getpid(), what, got, want);
	exit(1);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void wait_in(int fd)
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

#endif /* BUS1_BENCH_COMMON_H */
