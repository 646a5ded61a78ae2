/* SPDX-License-Identifier: MIT */
/*
 * bus1 calls from signal handlers. With the kernel module a handler runs
 * between system calls, never inside one; under the shim it can interrupt
 * a call of its own thread in the middle of the engine's work. A call it
 * makes then either runs (nothing of what it needs is held by the
 * interrupted call) or fails with EDEADLK (a lock it needs is): it never
 * waits forever, never damages the domain, and the interrupted call goes
 * on as if nothing had happened.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/time.h>
#include <time.h>

#include "bus1-util.h"

static int h_sender;
static uint64_t h_dest;
static volatile long h_calls, h_sent, h_deadlk, h_other;

/* The handler of the release race: releases the slice the thread is releasing. */
static int rel_fd;
static volatile uint64_t rel_off;
static volatile sig_atomic_t rel_armed;
static volatile long rel_ok, rel_enxio, rel_deadlk, rel_other;

static void send_from_handler(int sig)
{
	int saved = errno, r;

	(void)sig;
	r = b1_send_one(h_sender, h_dest, "h", 1);
	h_calls++;
	if (r == 0)
		h_sent++;
	else if (r == -EDEADLK)
		h_deadlk++;
	else
		h_other++;
	errno = saved;
}

static void release_from_handler(int sig)
{
	int saved = errno, r;

	(void)sig;
	if (rel_armed) {
		r = b1_slice_release(rel_fd, rel_off);
		if (r == 0)
			rel_ok++;
		else if (r == -ENXIO)
			rel_enxio++;
		else if (r == -EDEADLK)
			rel_deadlk++;
		else
			rel_other++;
	}
	errno = saved;
}

/* Microseconds of one 1-byte SEND+RECV+SLICE_RELEASE in this build. */
static double one_message_us(int s, uint64_t d, int r)
{
	struct timespec t0, t1;
	const int k = 2000;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < k; i++) {
		struct bus1_cmd_recv m;

		if (b1_send_one(s, d, "w", 1) || b1_recv(r, &m, 0) || b1_slice_release(r, m.msg.offset))
			return 1e6;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / k;
}

/*
 * A timer period for handlers in quick succession: 20 us, or 8 messages'
 * time in a slow build (timed on s -> d at r, which maps r's pool first).
 */
static long quick_period_us(int s, uint64_t d, int r)
{
	double us = one_message_us(s, d, r);

	return us * 8 > 20 ? (long)(us * 8) : 20;
}

/*
 * A timer's handler SENDs every `period_us` to the peer the thread is busy
 * sending `n` messages to, receiving from and releasing slices of; every
 * message arrives, the handler's calls succeed or fail with EDEADLK, and
 * the domain stays healthy.
 */
static void handler_calls_during(long period_us, long n)
{
	int s = b1_open(), r = b1_open();
	uint64_t d = b1_handle_to(r, 0x100, s);
	struct itimerval every = { { 0, period_us }, { 0, period_us } }, stop = { { 0, 0 }, { 0, 0 } };
	char buf[1024];
	long received = 0, handler_msgs = 0;

	memset(buf, 'm', sizeof(buf));
	h_sender = s;
	h_dest = d;
	h_calls = h_sent = h_deadlk = h_other = 0;
	/*
	 * One message through before the timer starts: the first SEND maps
	 * the receiver's pool under a lock of the process (not of the bus),
	 * which a handler's call would wait for forever (see the README's
	 * known limits).
	 */
	{
		struct bus1_cmd_recv m;

		ASSERT_EQ(b1_send_one(s, d, buf, sizeof(buf)), 0);
		ASSERT_EQ(b1_recv(r, &m, 0), 0);
		ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
		ASSERT_EQ(b1_send_one(s, d, "h", 1), 0);
		ASSERT_EQ(b1_recv(r, &m, 0), 0);
		ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	}
	ASSERT_TRUE(signal(SIGALRM, send_from_handler) != SIG_ERR);
	ASSERT_OK(setitimer(ITIMER_REAL, &every, NULL));
	for (long i = 0; i < n; i++) {
		struct bus1_cmd_recv m;
		int e;

		ASSERT_EQ(b1_send_one(s, d, buf, sizeof(buf)), 0);
		while ((e = b1_recv(r, &m, 0)) == 0) {
			received++;
			if (m.msg.n_bytes == 1)
				handler_msgs++;
			ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
		}
		ASSERT_EQ(e, -EAGAIN);
	}
	ASSERT_OK(setitimer(ITIMER_REAL, &stop, NULL));
	signal(SIGALRM, SIG_IGN);
	/* whatever the handler sent after the last RECV */
	for (struct bus1_cmd_recv m; b1_recv(r, &m, 0) == 0;) {
		received++;
		if (m.msg.n_bytes == 1)
			handler_msgs++;
		ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	}
	printf("    note: every %ld us: %ld handler calls: %ld sent, %ld EDEADLK\n", period_us, (long)h_calls, (long)h_sent, (long)h_deadlk);
	ASSERT_EQ(h_other, 0);
	ASSERT_TRUE(h_calls > 0);
	ASSERT_EQ(handler_msgs, h_sent);
	ASSERT_EQ(received, n + h_sent);
	/* the domain is healthy: a fresh pair of peers works, and so does this one */
	b1_expect_new_pair_works();
	struct bus1_cmd_recv m;

	ASSERT_EQ(b1_send_one(s, d, "x", 1), 0);
	ASSERT_EQ(b1_recv(r, &m, 0), 0);
}

TEST_TIMEOUT(sig_handler_calls_interrupting_calls, 120)
{
	handler_calls_during(100, 100000);
}

/*
 * A handler every 20 us (or every few messages' time, in a slow build):
 * a handler's call that meets a lock of its own thread fails at once with
 * EDEADLK rather than after spinning on it, so the handlers leave the
 * thread time to go on.
 */
TEST_TIMEOUT(sig_handler_calls_in_quick_succession, 120)
{
	int s = b1_open(), r = b1_open();

	handler_calls_during(quick_period_us(s, b1_handle_to(r, 0x100, s), r), 20000);
}

/*
 * A handler releases the slice its thread is releasing: of the two calls,
 * exactly one succeeds (the other is ENXIO, or EDEADLK if it needed a lock
 * the interrupted call held), whatever instruction of the thread's release
 * the signal lands on.
 */
TEST_TIMEOUT(sig_handler_releases_the_same_slice, 120)
{
	int s = b1_open(), r = b1_open();
	uint64_t d = b1_handle_to(r, 0x100, s);
	/* a slow build runs fewer rounds, at a longer period */
	long period = quick_period_us(s, d, r);
	struct itimerval every = { { 0, period }, { 0, period } }, stop = { { 0, 0 }, { 0, 0 } };
	const long n = 200000 * 20 / period;
	long both = 0, none = 0, main_ok = 0;

	rel_fd = r;
	ASSERT_TRUE(signal(SIGALRM, release_from_handler) != SIG_ERR);
	ASSERT_OK(setitimer(ITIMER_REAL, &every, NULL));
	for (long i = 0; i < n; i++) {
		struct bus1_cmd_recv m;
		long before = rel_ok;
		int e;

		ASSERT_EQ(b1_send_one(s, d, "m", 1), 0);
		ASSERT_EQ(b1_recv(r, &m, 0), 0);
		rel_off = m.msg.offset;
		rel_armed = 1;
		e = b1_slice_release(r, m.msg.offset);
		rel_armed = 0;
		ASSERT_TRUE(e == 0 || e == -ENXIO);
		main_ok += e == 0;
		both += e == 0 && rel_ok != before;
		none += e != 0 && rel_ok == before;
	}
	ASSERT_OK(setitimer(ITIMER_REAL, &stop, NULL));
	signal(SIGALRM, SIG_IGN);
	printf("    note: every %ld us: thread released %ld, handler %ld (ENXIO %ld, EDEADLK %ld)\n", period, main_ok, (long)rel_ok,
	       (long)rel_enxio, (long)rel_deadlk);
	ASSERT_EQ(rel_other, 0);
	ASSERT_EQ(both, 0);
	ASSERT_EQ(none, 0);
	ASSERT_EQ(main_ok + rel_ok, n);
	/* the pool is whole: one message still goes through */
	struct bus1_cmd_recv m;

	ASSERT_EQ(b1_recv(r, &m, 0), -EAGAIN);
	ASSERT_EQ(b1_send_one(s, d, "x", 1), 0);
	ASSERT_EQ(b1_recv(r, &m, 0), 0);
	ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
}
