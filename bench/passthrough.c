/* SPDX-License-Identifier: MIT */
/*
 * What the shim costs a wait that is none of its business: poll() and
 * epoll_wait() with a zero timeout on a readable pipe (no peer fd in the
 * process), through the shim's interposed entry points against the C
 * library's own functions (looked up in libc itself, past the shim),
 * alternating in the same process.
 *
 * Prints the CPU time per call of each and the ratio shim/plain (median
 * of several alternating rounds).
 * Run under the shim: scripts/bus1-run bench/bin/passthrough [calls]
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NAME "passthrough"
#include "common.h"

#define ROUNDS 7

static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

typedef int (*poll_fn)(struct pollfd *, nfds_t, int);
typedef int (*epoll_wait_fn)(int, struct epoll_event *, int, int);

static double time_poll(poll_fn f, int fd, long n)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	double t0 = cpu_now();

	for (long i = 0; i < n; i++)
		if (f(&p, 1, 0) != 1)
			die("poll");
	return (cpu_now() - t0) / n;
}

static double time_epoll(epoll_wait_fn f, int ep, long n)
{
	struct epoll_event e;
	double t0 = cpu_now();

	for (long i = 0; i < n; i++)
		if (f(ep, &e, 1, 0) != 1)
			die("epoll_wait");
	return (cpu_now() - t0) / n;
}

static void report(double *shim, double *plain)
{
	double ratio[ROUNDS];

	for (int i = 0; i < ROUNDS; i++)
		ratio[i] = shim[i] / plain[i];
	qsort(shim, ROUNDS, sizeof(double), cmp_double);
	qsort(plain, ROUNDS, sizeof(double), cmp_double);
	qsort(ratio, ROUNDS, sizeof(double), cmp_double);
	printf("  bus1  through the shim      : %8.1f ns\n", shim[ROUNDS / 2]);
	printf("  plain the C library's own   : %8.1f ns\n", plain[ROUNDS / 2]);
	printf("  ratio shim/plain            : %8.3f (min %.3f, max %.3f)\n",
	       ratio[ROUNDS / 2], ratio[0], ratio[ROUNDS - 1]);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	const char *which = argc > 2 ? argv[2] : "poll";
	void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
	poll_fn libc_poll;
	epoll_wait_fn libc_epoll_wait;
	double shim[ROUNDS], plain[ROUNDS];
	struct epoll_event e = { .events = EPOLLIN };
	int p[2], ep;

	if (n <= 0)
		n = 1;
	if (!libc)
		die("dlopen libc.so.6");
	libc_poll = (poll_fn)dlsym(libc, "poll");
	libc_epoll_wait = (epoll_wait_fn)dlsym(libc, "epoll_wait");
	if (!libc_poll || !libc_epoll_wait)
		die("dlsym");
	if (libc_poll == poll)
		fprintf(stderr, BENCH_NAME ": warning: poll is not interposed (run under the shim)\n");
	if (pipe(p) < 0 || write(p[1], "x", 1) != 1)
		die("pipe");
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e) < 0)
		die("epoll");

	if (which[0] == 'p') {
		time_poll(poll, p[0], n / 10 + 1);
		time_poll(libc_poll, p[0], n / 10 + 1);
		for (int i = 0; i < ROUNDS; i++) {
			shim[i] = time_poll(poll, p[0], n);
			plain[i] = time_poll(libc_poll, p[0], n);
		}
		printf("passthrough: poll(1 pipe fd, timeout 0), %ld calls x %d rounds (thread CPU time per call, median)\n",
		       n, ROUNDS);
	} else {
		time_epoll(epoll_wait, ep, n / 10 + 1);
		time_epoll(libc_epoll_wait, ep, n / 10 + 1);
		for (int i = 0; i < ROUNDS; i++) {
			shim[i] = time_epoll(epoll_wait, ep, n);
			plain[i] = time_epoll(libc_epoll_wait, ep, n);
		}
		printf("passthrough: epoll_wait(set of 1 pipe fd, timeout 0), %ld calls x %d rounds (thread CPU time per call, median)\n",
		       n, ROUNDS);
	}
	report(shim, plain);
	return 0;
}
