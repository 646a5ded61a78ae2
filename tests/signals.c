/* SPDX-License-Identifier: MIT */
/*
 * Signal handlers and bus1 calls. With the kernel module a handler runs
 * between system calls, never inside one. The shim's calls are plain
 * code, so it holds a handler that lands in one until the call is over:
 * a handler's own bus1 calls then never meet a lock of their thread (no
 * EDEADLK, no wait), a handler may leave by longjmp, and the handler
 * gets its signal's siginfo as the kernel gave it. The application still
 * sees its own actions in sigaction and signal.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <time.h>

#include "bus1-util.h"
#include "mp-util.h"

static int h_sender;
static uint64_t h_dest;
static volatile long h_calls, h_sent, h_deadlk, h_quota, h_other, h_last_other;

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
	else if (r == -EDQUOT)
		h_quota++;
	else
		h_other++, h_last_other = r;
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

static int probe_fd;
static uint64_t probe_dest;

static void probe_handler(int sig)
{
	int saved = errno;

	(void)sig;
	if (b1_send_one(probe_fd, probe_dest, "p", 1))
		abort();
	errno = saved;
}

/*
 * Microseconds of one signal whose handler SENDs one byte s -> d (its
 * delivery included), on this machine; r is drained afterwards.
 */
static double one_handler_us(int s, uint64_t d, int r)
{
	struct sigaction act = { .sa_handler = probe_handler }, old;
	struct timespec t0, t1;
	const int k = 500;

	probe_fd = s;
	probe_dest = d;
	ASSERT_OK(sigaction(SIGUSR1, &act, &old));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < k; i++)
		raise(SIGUSR1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ASSERT_OK(sigaction(SIGUSR1, &old, NULL));
	for (struct bus1_cmd_recv m; b1_recv(r, &m, 0) == 0;)
		ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / k;
}

/*
 * A timer period for handlers in quick succession: 20 us, or 8 messages'
 * time in a slow build (timed on s -> d at r, which maps r's pool first),
 * and at least 4 handlers' time: a handler landing inside a call runs at
 * its end, and one more signal may wait for it meanwhile (as it would for
 * a handler the kernel runs), so on a machine where a signal costs much a
 * 20 us timer would leave the thread no time at all.
 */
static long quick_period_us(int s, uint64_t d, int r)
{
	double us = one_message_us(s, d, r) * 8, handlers = one_handler_us(s, d, r) * 4;

	if (handlers > us)
		us = handlers;
	return us > 20 ? (long)us : 20;
}

/*
 * A signal every `period_us` to this process, from a POSIX timer: the
 * harness's own timeout is an alarm(), which setitimer(ITIMER_REAL) would
 * replace.
 */
static timer_t every_timer;

/* SIGUSR1 every `period_us`, to a handler already installed. */
static void start_timer(long period_us)
{
	struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1 };
	struct itimerspec every = { { 0, period_us * 1000 }, { 0, period_us * 1000 } };

	ASSERT_OK(timer_create(CLOCK_MONOTONIC, &ev, &every_timer));
	ASSERT_OK(timer_settime(every_timer, 0, &every, NULL));
}

static void start_ticks(void (*handler)(int), long period_us)
{
	ASSERT_TRUE(signal(SIGUSR1, handler) != SIG_ERR);
	start_timer(period_us);
}

static void stop_ticks(void)
{
	ASSERT_OK(timer_delete(every_timer));
	signal(SIGUSR1, SIG_IGN);
}

/* Receives and releases everything queued on r, counting the handlers' 1-byte messages apart. */
static void drain_counting(int r, long *received, long *handler_msgs)
{
	struct bus1_cmd_recv m;
	int e;

	while ((e = b1_recv(r, &m, 0)) == 0) {
		(*received)++;
		if (m.msg.n_bytes == 1)
			(*handler_msgs)++;
		ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	}
	ASSERT_EQ(e, -EAGAIN);
}

/*
 * A timer's handler SENDs every `period_us` to the peer the thread is busy
 * sending `n` messages to, receiving from and releasing slices of; every
 * message arrives, every call of the handler succeeds (none meets a lock
 * of the call it interrupted), and the domain stays healthy.
 */
static void handler_calls_during(long period_us, long n)
{
	int s = b1_open(), r = b1_open();
	uint64_t d = b1_handle_to(r, 0x100, s);
	char buf[1024];
	long received = 0, handler_msgs = 0;

	memset(buf, 'm', sizeof(buf));
	h_sender = s;
	h_dest = d;
	h_calls = h_sent = h_deadlk = h_quota = h_other = 0;
	/* One message of each size through before the timer starts. */
	{
		struct bus1_cmd_recv m;

		ASSERT_EQ(b1_send_one(s, d, buf, sizeof(buf)), 0);
		ASSERT_EQ(b1_recv(r, &m, 0), 0);
		ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
		ASSERT_EQ(b1_send_one(s, d, "h", 1), 0);
		ASSERT_EQ(b1_recv(r, &m, 0), 0);
		ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	}
	start_ticks(send_from_handler, period_us);
	for (long i = 0; i < n; i++) {
		int e;

		/* the handlers may have filled r's share meanwhile (below) */
		while ((e = b1_send_one(s, d, buf, sizeof(buf))) == -EDQUOT)
			drain_counting(r, &received, &handler_msgs);
		ASSERT_EQ(e, 0);
		drain_counting(r, &received, &handler_msgs);
	}
	stop_ticks();
	/* whatever the handler sent after the last RECV */
	drain_counting(r, &received, &handler_msgs);
	/*
	 * EDQUOT is the bus's answer when the receiver has fallen behind: on a
	 * machine that slows down after the period was measured, the handlers
	 * can outrun the thread's drains for a while.
	 */
	printf("    note: every %ld us: %ld handler calls: %ld sent, %ld EDQUOT, %ld EDEADLK\n", period_us, (long)h_calls, (long)h_sent,
	       (long)h_quota, (long)h_deadlk);
	ASSERT_EQ(h_last_other, 0);
	ASSERT_EQ(h_other, 0);
	ASSERT_EQ(h_deadlk, 0);
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
 * held handlers still leave the thread time to go on.
 */
TEST_TIMEOUT(sig_handler_calls_in_quick_succession, 120)
{
	int s = b1_open(), r = b1_open();

	handler_calls_during(quick_period_us(s, b1_handle_to(r, 0x100, s), r), 20000);
}

/*
 * A handler releases the slice its thread is releasing: of the two calls,
 * exactly one succeeds (the other is ENXIO), whatever instruction of the
 * thread's release the signal lands on.
 */
TEST_TIMEOUT(sig_handler_releases_the_same_slice, 120)
{
	int s = b1_open(), r = b1_open();
	uint64_t d = b1_handle_to(r, 0x100, s);
	/* a slow build runs fewer rounds, at a longer period */
	long period = quick_period_us(s, d, r);
	const long n = 200000 * 20 / period;
	long both = 0, none = 0, main_ok = 0;

	rel_fd = r;
	start_ticks(release_from_handler, period);
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
	stop_ticks();
	printf("    note: every %ld us: thread released %ld, handler %ld (ENXIO %ld, EDEADLK %ld)\n", period, main_ok, (long)rel_ok,
	       (long)rel_enxio, (long)rel_deadlk);
	ASSERT_EQ(rel_other, 0);
	ASSERT_EQ(rel_deadlk, 0);
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

/*
 * A process that exits with a timer's handler (every 20 us, or every few
 * messages' time in a slow build) still calling the bus: the
 * exit closes the peers, and handlers landing in that work wait for it
 * (then their calls meet closed fds). Before handlers were held, one that
 * interrupted the exit's work on the fd table waited forever for it.
 */
TEST_TIMEOUT(sig_handler_calls_while_the_process_exits, 60)
{
	int ps = b1_open(), pr = b1_open();
	long period = quick_period_us(ps, b1_handle_to(pr, 0x100, ps), pr);

	for (int round = 0; round < 20; round++) {
		pid_t pid = fork();

		ASSERT_TRUE(pid >= 0);
		if (pid == 0) {
			int s = b1_open(), r = b1_open();
			uint64_t d = b1_handle_to(r, 0x100, s);

			for (int i = 0; i < 8; i++)
				b1_open();
			h_sender = s;
			h_dest = d;
			start_ticks(send_from_handler, period);
			for (int i = 0; i < 200; i++) {
				struct bus1_cmd_recv m;

				b1_send_one(s, d, "m", 1);
				while (b1_recv(r, &m, 0) == 0)
					b1_slice_release(r, m.msg.offset);
			}
			exit(0);
		}
		mp_reap(pid);
	}
}

/* ------------------------------------- a call waiting for a stopped process */

/* SEND of one byte from fd argv[0] to handle argv[1]. */
T_CHILD(sig_send_one)
{
	ASSERT_EQ(argc, 2);
	ASSERT_EQ(b1_send_one(atoi(argv[0]), mp_arg_u64(argv[1]), "f", 1), 0);
	return 0;
}

static int usr1_pipe = -1;

static void note_usr1(int sig)
{
	int saved = errno;

	(void)sig;
	if (write(usr1_pipe, "u", 1) != 1)
		abort();
	errno = saved;
}

/*
 * A SEND that waits for the receiver's lock, which a process stopped in
 * the middle of its own SEND holds: a signal that comes meanwhile still
 * runs its handler within a lock-wait slice (the module would have run it
 * at once; nothing of the bus is held while the call waits), and the SEND
 * completes once the stopped process goes on.
 */
TEST_TIMEOUT(sig_handler_runs_while_a_call_waits_for_a_stopped_process, 60)
{
	int f = b1_open(), x = b1_open(), s = b1_open(), ready[2], ran[2], status;
	uint64_t fx = b1_handle_to(x, 0x100, f), sx = b1_handle_to(x, 0x100, s);
	char a[2][32], c;
	pid_t parked, sender;
	struct bus1_cmd_recv m;

	/* warm both senders' paths up */
	ASSERT_EQ(b1_send_one(f, fx, "w", 1), 0);
	ASSERT_EQ(b1_send_one(s, sx, "w", 1), 0);
	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(b1_recv(x, &m, 0), 0);
		ASSERT_EQ(b1_slice_release(x, m.msg.offset), 0);
	}
	mp_keep_fd(f);
	snprintf(a[0], sizeof(a[0]), "%d", f);
	mp_fmt(a[1], fx);
	parked = mp_spawn_env_v(t_self_exe(), "BUS1_PARK_AT", "commit-before", "sig_send_one",
				(const char *const[]){ a[0], a[1], NULL });
	ASSERT_EQ(waitpid(parked, &status, WUNTRACED), parked);
	ASSERT_TRUE(WIFSTOPPED(status));

	ASSERT_OK(pipe(ready));
	ASSERT_OK(pipe(ran));
	sender = mp_fork();
	if (sender == 0) {
		usr1_pipe = ran[1];
		ASSERT_TRUE(signal(SIGUSR1, note_usr1) != SIG_ERR);
		mp_put(ready[1], "r", 1);
		ASSERT_EQ(b1_send_one(s, sx, "s", 1), 0);
		_exit(0);
	}
	mp_get(ready[0], &c, 1);
	mp_sleep_ms(200);
	ASSERT_OK(kill(sender, SIGUSR1));
	{
		struct pollfd p = { .fd = ran[0], .events = POLLIN };

		ASSERT_EQ(poll(&p, 1, 3000), 1);
	}
	/* the SEND still waits: the handler ran inside it */
	ASSERT_EQ(waitpid(sender, &status, WNOHANG), 0);

	ASSERT_OK(kill(parked, SIGCONT));
	mp_reap(parked);
	mp_reap(sender);
	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(b1_recv(x, &m, 0), 0);
		ASSERT_EQ(b1_slice_release(x, m.msg.offset), 0);
	}
	ASSERT_EQ(b1_recv(x, &m, 0), -EAGAIN);
}

/* --------------------------------------- a burst of signals inside one call */

#define BURST 24

static int burst_fd = -1;
static uint64_t burst_dest;
static volatile int burst_seen, burst_values[BURST], burst_sends[BURST], burst_usr2;

/* Notes each SIGRTMIN's value and whether a SEND to the destination the
 * interrupted call is sending to works (it fails with EDEADLK inside it). */
static void burst_handler(int sig, siginfo_t *si, void *ctx)
{
	int saved = errno;

	(void)ctx;
	if (sig == SIGUSR2) {
		burst_usr2++;
	} else if (burst_seen < BURST) {
		burst_values[burst_seen] = si->si_value.sival_int;
		burst_sends[burst_seen] = b1_send_one(burst_fd, burst_dest, "h", 1);
		burst_seen++;
	}
	errno = saved;
}

/*
 * SEND of one byte from fd argv[0] to handle argv[1] with SIGRTMIN and
 * SIGUSR2 handled as above; then writes what the handlers saw to fd
 * argv[2].
 */
T_CHILD(sig_send_counting)
{
	struct sigaction act = { .sa_sigaction = burst_handler, .sa_flags = SA_SIGINFO };
	int out;

	ASSERT_EQ(argc, 3);
	burst_fd = atoi(argv[0]);
	burst_dest = mp_arg_u64(argv[1]);
	out = atoi(argv[2]);
	ASSERT_OK(sigaction(SIGRTMIN, &act, NULL));
	ASSERT_OK(sigaction(SIGUSR2, &act, NULL));
	ASSERT_EQ(b1_send_one(burst_fd, burst_dest, "f", 1), 0);
	mp_put(out, (const void *)&burst_seen, sizeof(burst_seen));
	mp_put(out, (const void *)burst_values, sizeof(burst_values));
	mp_put(out, (const void *)burst_sends, sizeof(burst_sends));
	mp_put(out, (const void *)&burst_usr2, sizeof(burst_usr2));
	return 0;
}

/*
 * Many signals landing inside one call (queued while the process is
 * stopped in the middle of its SEND, delivered when it goes on): every
 * handler runs after the call, where its own SEND works, never inside
 * it; the real-time signals run once each in the order they were queued,
 * and the standard ones merge as the kernel merges them.
 */
TEST_TIMEOUT(sig_burst_inside_one_call_waits_for_its_end, 60)
{
	int f = b1_open(), x = b1_open(), out[2], status, seen, values[BURST], sends[BURST], usr2;
	uint64_t fx = b1_handle_to(x, 0x100, f);
	char a[3][32];
	pid_t parked;
	struct bus1_cmd_recv m;

	ASSERT_OK(pipe(out));
	mp_keep_fd(f);
	mp_keep_fd(out[1]);
	snprintf(a[0], sizeof(a[0]), "%d", f);
	mp_fmt(a[1], fx);
	snprintf(a[2], sizeof(a[2]), "%d", out[1]);
	parked = mp_spawn_env_v(t_self_exe(), "BUS1_PARK_AT", "commit-before", "sig_send_counting",
				(const char *const[]){ a[0], a[1], a[2], NULL });
	ASSERT_EQ(waitpid(parked, &status, WUNTRACED), parked);
	ASSERT_TRUE(WIFSTOPPED(status));
	for (int v = 0; v < BURST; v++) {
		union sigval sv = { .sival_int = v };

		ASSERT_OK(sigqueue(parked, SIGRTMIN, sv));
		if (v % 8 == 0)
			ASSERT_OK(kill(parked, SIGUSR2));
	}
	ASSERT_OK(kill(parked, SIGCONT));
	mp_reap(parked);
	close(out[1]);
	mp_get(out[0], &seen, sizeof(seen));
	mp_get(out[0], values, sizeof(values));
	mp_get(out[0], sends, sizeof(sends));
	mp_get(out[0], &usr2, sizeof(usr2));
	close(out[0]);
	ASSERT_EQ(seen, BURST);
	for (int v = 0; v < BURST; v++) {
		ASSERT_EQ(values[v], v);
		ASSERT_EQ(sends[v], 0);
	}
	/* SIGUSR2 sent three times while stopped: pending once */
	ASSERT_EQ(usr2, 1);
	/* the parked SEND and every handler's went through */
	for (int i = 0; i < 1 + BURST; i++) {
		ASSERT_EQ(b1_recv(x, &m, 0), 0);
		ASSERT_EQ(b1_slice_release(x, m.msg.offset), 0);
	}
	ASSERT_EQ(b1_recv(x, &m, 0), -EAGAIN);
}

/* ---------------------------------------------- leaving a call by longjmp */

static sigjmp_buf jump_back;
static volatile sig_atomic_t jump_armed;
static volatile long jumps;

static void jump_from_handler(int sig)
{
	(void)sig;
	if (jump_armed) {
		jumps++;
		siglongjmp(jump_back, 1);
	}
}

struct other_thread_args {
	int s, r;
	const uint8_t *pool;
	uint64_t d;
	int result;
};

/* SEND, RECV and SLICE_RELEASE of a message tagged 'o' on a second thread. */
static void *other_thread_message(void *p)
{
	struct other_thread_args *a = p;
	struct bus1_cmd_recv m;
	int e = 0;

	a->result = b1_send_one(a->s, a->d, "o", 1);
	while (!a->result && (e = b1_recv(a->r, &m, 0)) == 0) {
		char tag = (char)a->pool[m.msg.offset];

		a->result = b1_slice_release(a->r, m.msg.offset);
		if (tag == 'o')
			return NULL;
	}
	if (!a->result)
		a->result = e;
	return NULL;
}

/*
 * A handler that leaves by siglongjmp, every 20 us while the thread sends,
 * receives and releases: it leaves no call half done behind it (each of
 * its jumps comes after the call it landed in has returned), so the same
 * peers go on working from this thread and from another one. Before
 * handlers were held, a jump out of a call's section left the peer's lock
 * taken by the thread: the next call here failed with EDEADLK and one on
 * another thread waited forever (the test's timeout).
 */
TEST_TIMEOUT(sig_handler_longjmp_leaves_no_call_behind, 60)
{
	int s = b1_open(), r = b1_open();
	uint64_t d = b1_handle_to(r, 0x100, s);
	long period = quick_period_us(s, d, r);
	struct timespec t0, t1;
	char buf[1024];
	volatile long rounds = 0;
	struct other_thread_args other = { .s = s, .r = r, .d = d };
	pthread_t t;

	other.pool = b1_map(r);
	memset(buf, 'm', sizeof(buf));
	jumps = 0;
	start_ticks(jump_from_handler, period);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	sigsetjmp(jump_back, 1);
	for (;;) {
		struct bus1_cmd_recv m;

		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (t1.tv_sec - t0.tv_sec >= 2 || jumps >= 2000)
			break;
		jump_armed = 1;
		b1_send_one(s, d, buf, sizeof(buf));
		while (b1_recv(r, &m, 0) == 0)
			b1_slice_release(r, m.msg.offset);
		jump_armed = 0;
		rounds++;
	}
	jump_armed = 0;
	stop_ticks();
	printf("    note: every %ld us: %ld jumps, %ld whole rounds\n", period, (long)jumps, (long)rounds);
	ASSERT_TRUE(jumps > 0);
	/* another thread, then this one, on the same peers */
	ASSERT_EQ(pthread_create(&t, NULL, other_thread_message, &other), 0);
	ASSERT_EQ(pthread_join(t, NULL), 0);
	ASSERT_EQ(other.result, 0);
	other_thread_message(&other);
	ASSERT_EQ(other.result, 0);
	b1_expect_new_pair_works();
}

/* ------------------------------------------ what a held handler is given */

static volatile long info_calls, info_bad, info_seen[4096];

static void record_info(int sig, siginfo_t *si, void *ctx)
{
	long v = si->si_value.sival_int;

	info_calls++;
	if (sig != SIGRTMIN || si->si_signo != SIGRTMIN || si->si_code != SI_QUEUE || si->si_pid != getpid() || !ctx || v < 0 ||
	    v >= 4096)
		info_bad++;
	else
		info_seen[v]++;
}

static pthread_t busy_thread;
static volatile int kicks_done;

/* Queues SIGRTMIN with the values 0..n-1 to the busy thread, one at a time. */
static void *kick_values(void *p)
{
	long n = (long)p;

	for (long v = 0; v < n; v++) {
		union sigval sv = { .sival_int = (int)v };
		struct timespec gap = { 0, 20000 };

		while (pthread_sigqueue(busy_thread, SIGRTMIN, sv) != 0)
			nanosleep(&gap, NULL);
		nanosleep(&gap, NULL);
	}
	kicks_done = 1;
	return NULL;
}

/*
 * A real-time signal queued with a value, over and over, to a thread busy
 * with bus1 calls: whether it lands inside a call (held) or between calls,
 * its handler runs exactly once per signal, with the signal's siginfo (its
 * code, sender and value) and a context.
 */
TEST_TIMEOUT(sig_held_handler_gets_each_signal_and_its_siginfo, 60)
{
	int s = b1_open(), r = b1_open();
	uint64_t d = b1_handle_to(r, 0x100, s);
	struct sigaction act = { .sa_sigaction = record_info, .sa_flags = SA_SIGINFO };
	const long n = 4000;
	long missing = 0, twice = 0;
	pthread_t k;

	busy_thread = pthread_self();
	ASSERT_OK(sigaction(SIGRTMIN, &act, NULL));
	ASSERT_EQ(pthread_create(&k, NULL, kick_values, (void *)n), 0);
	while (!kicks_done) {
		struct bus1_cmd_recv m;

		ASSERT_EQ(b1_send_one(s, d, "v", 1), 0);
		ASSERT_EQ(b1_recv(r, &m, 0), 0);
		ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	}
	ASSERT_EQ(pthread_join(k, NULL), 0);
	/* the last ones queued are delivered by the next call at the latest */
	ASSERT_EQ(b1_send_one(s, d, "v", 1), 0);
	signal(SIGRTMIN, SIG_IGN);
	for (long v = 0; v < n; v++) {
		missing += info_seen[v] == 0;
		twice += info_seen[v] > 1;
	}
	printf("    note: %ld handler calls for %ld signals\n", (long)info_calls, n);
	ASSERT_EQ(info_bad, 0);
	ASSERT_EQ(missing, 0);
	ASSERT_EQ(twice, 0);
	ASSERT_EQ(info_calls, n);
}

/* --------------------------------------- the application's own actions */

static volatile long oneshot_calls;

static void oneshot(int sig)
{
	(void)sig;
	oneshot_calls++;
}

static void other_handler(int sig, siginfo_t *si, void *ctx)
{
	(void)sig, (void)si, (void)ctx;
}

/*
 * sigaction and signal report the action the application set, not the
 * shim's: handler, flags (SA_SIGINFO only if it was asked for) and mask;
 * SA_RESETHAND still makes the handler run once and the action SIG_DFL
 * after it; SIGKILL and signal 0 are still EINVAL.
 */
TEST(sig_actions_read_back_as_set)
{
	struct sigaction act = { .sa_handler = oneshot, .sa_flags = SA_RESTART }, old;
	struct sigaction info_act = { .sa_sigaction = other_handler, .sa_flags = SA_SIGINFO | SA_ONSTACK };

	sigemptyset(&act.sa_mask);
	sigaddset(&act.sa_mask, SIGUSR2);
	ASSERT_OK(sigaction(SIGUSR1, &act, NULL));
	memset(&old, 0, sizeof(old));
	ASSERT_OK(sigaction(SIGUSR1, NULL, &old));
	ASSERT_TRUE(old.sa_handler == oneshot);
	ASSERT_EQ(old.sa_flags & (SA_SIGINFO | SA_RESTART | SA_RESETHAND), SA_RESTART);
	ASSERT_TRUE(sigismember(&old.sa_mask, SIGUSR2) == 1);
	ASSERT_TRUE(sigismember(&old.sa_mask, SIGINT) == 0);

	/* replacing it returns the previous one */
	sigemptyset(&info_act.sa_mask);
	ASSERT_OK(sigaction(SIGUSR1, &info_act, &old));
	ASSERT_TRUE(old.sa_handler == oneshot);
	ASSERT_OK(sigaction(SIGUSR1, NULL, &old));
	ASSERT_TRUE(old.sa_sigaction == other_handler);
	ASSERT_EQ(old.sa_flags & (SA_SIGINFO | SA_ONSTACK), SA_SIGINFO | SA_ONSTACK);

	/* signal() gives back what was there; SIG_IGN and SIG_DFL read back */
	ASSERT_TRUE((void *)signal(SIGUSR1, SIG_IGN) == (void *)other_handler);
	ASSERT_TRUE(signal(SIGUSR1, oneshot) == SIG_IGN);
	ASSERT_TRUE(signal(SIGUSR1, SIG_DFL) == oneshot);
	ASSERT_OK(sigaction(SIGUSR1, NULL, &old));
	ASSERT_TRUE(old.sa_handler == SIG_DFL);

	/* one-shot: runs once, then the action is SIG_DFL */
	act.sa_flags = SA_RESETHAND;
	sigemptyset(&act.sa_mask);
	oneshot_calls = 0;
	ASSERT_OK(sigaction(SIGUSR2, &act, NULL));
	ASSERT_OK(raise(SIGUSR2));
	ASSERT_EQ(oneshot_calls, 1);
	ASSERT_OK(sigaction(SIGUSR2, NULL, &old));
	ASSERT_TRUE(old.sa_handler == SIG_DFL);

	/* what the kernel refuses, it still refuses */
	errno = 0;
	ASSERT_EQ(sigaction(SIGKILL, &act, NULL), -1);
	ASSERT_EQ(errno, EINVAL);
	errno = 0;
	ASSERT_EQ(sigaction(0, &act, NULL), -1);
	ASSERT_EQ(errno, EINVAL);
	ASSERT_TRUE(signal(SIGSTOP, oneshot) == SIG_ERR);
}

static volatile long usr1_calls;

static void count_usr1(int sig)
{
	(void)sig;
	usr1_calls++;
}

/*
 * A vfork child that resets a handler before it execs (here: exits)
 * shares its parent's memory meanwhile: the parent's handler stays its
 * own, runs, and reads back.
 */
TEST(sig_vfork_child_resetting_a_handler_leaves_the_parents)
{
	struct sigaction old;
	int status;
	pid_t pid;

	ASSERT_TRUE(signal(SIGUSR1, count_usr1) != SIG_ERR);
	pid = vfork();
	if (pid == 0) {
		signal(SIGUSR1, SIG_DFL);
		_exit(0);
	}
	ASSERT_TRUE(pid > 0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ASSERT_OK(sigaction(SIGUSR1, NULL, &old));
	ASSERT_TRUE(old.sa_handler == count_usr1);
	usr1_calls = 0;
	ASSERT_OK(raise(SIGUSR1));
	ASSERT_EQ(usr1_calls, 1);
	signal(SIGUSR1, SIG_DFL);
}

static volatile long mask_calls, mask_wrong;

static void check_handler_mask(int sig)
{
	sigset_t now;

	(void)sig;
	mask_calls++;
	if (pthread_sigmask(SIG_BLOCK, NULL, &now) || sigismember(&now, SIGUSR1) != 1 || sigismember(&now, SIGUSR2) != 1 ||
	    sigismember(&now, SIGINT) != 0)
		mask_wrong++;
}

/*
 * A handler runs under the mask the kernel gives it (the thread's, the
 * action's sa_mask and the signal itself), whether the signal landed
 * inside a bus1 call (held, then run by the shim) or between calls; and
 * the thread's own mask is back afterwards.
 */
TEST_TIMEOUT(sig_handler_mask_is_the_kernels, 60)
{
	int s = b1_open(), r = b1_open();
	uint64_t d = b1_handle_to(r, 0x100, s);
	long period = quick_period_us(s, d, r);
	struct sigaction act = { .sa_handler = check_handler_mask };
	sigset_t now;

	sigemptyset(&act.sa_mask);
	sigaddset(&act.sa_mask, SIGUSR2);
	ASSERT_OK(sigaction(SIGUSR1, &act, NULL));
	start_timer(period);
	for (long i = 0; i < 20000; i++) {
		struct bus1_cmd_recv m;

		ASSERT_EQ(b1_send_one(s, d, "k", 1), 0);
		ASSERT_EQ(b1_recv(r, &m, 0), 0);
		ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	}
	stop_ticks();
	printf("    note: every %ld us: %ld handler calls\n", period, (long)mask_calls);
	ASSERT_TRUE(mask_calls > 0);
	ASSERT_EQ(mask_wrong, 0);
	ASSERT_OK(pthread_sigmask(SIG_BLOCK, NULL, &now));
	ASSERT_EQ(sigismember(&now, SIGUSR1), 0);
	ASSERT_EQ(sigismember(&now, SIGUSR2), 0);
}

static sigjmp_buf segv_back;
static void *volatile segv_addr;

static void on_segv(int sig, siginfo_t *si, void *ctx)
{
	(void)sig, (void)ctx;
	segv_addr = si->si_addr;
	siglongjmp(segv_back, 1);
}

/*
 * The shim keeps SIGSEGV's handler for itself (a bad pointer given to the
 * bus is EFAULT), but the program's own faults still reach the program's
 * handler, with their siginfo; sigaction reads that handler back; and
 * with SIG_DFL a fault still kills.
 */
TEST(sig_application_segv_handler_gets_its_own_faults)
{
	struct sigaction act = { .sa_sigaction = on_segv, .sa_flags = SA_SIGINFO }, old;
	volatile char *bad = b1_bad_ptr();
	int s = b1_open(), r = b1_open(), status;
	uint64_t d = b1_handle_to(r, 0x100, s);
	pid_t pid;

	ASSERT_OK(sigaction(SIGSEGV, &act, NULL));
	segv_addr = NULL;
	ASSERT_EQ(b1_send_one(s, d, (const void *)bad, 16), -EFAULT);
	ASSERT_EQ(b1_ioctl_raw(r, BUS1_CMD_RECV, (unsigned long)bad), -EFAULT);
	ASSERT_TRUE(segv_addr == NULL);
	if (!sigsetjmp(segv_back, 1)) {
		(void)*bad;
		t_fail(__FILE__, __LINE__, "reading a PROT_NONE page did not fault");
	}
	ASSERT_TRUE(segv_addr == (void *)bad);
	memset(&old, 0, sizeof(old));
	ASSERT_OK(sigaction(SIGSEGV, NULL, &old));
	ASSERT_TRUE(old.sa_sigaction == on_segv);
	ASSERT_TRUE(old.sa_flags & SA_SIGINFO);
	pid = fork();
	ASSERT_TRUE(pid >= 0);
	if (pid == 0) {
		signal(SIGSEGV, SIG_DFL);
		(void)*bad;
		_exit(0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
	signal(SIGSEGV, SIG_DFL);
	b1_expect_new_pair_works();
}
