/* SPDX-License-Identifier: MIT */
/*
 * Waits on peer fds (§8.2): every wait function — poll, ppoll, select,
 * pselect, epoll_wait, epoll_pwait, epoll_pwait2 and the fortified
 * __poll_chk and __ppoll_chk — in every readiness state (empty, message
 * queued, notification queued, disconnected, closed), in both wake-up
 * modes (the default, and BUS1_WAKE=exact, which keeps the peer socket's
 * own readiness exact for waiters the shim cannot see), blocking and woken
 * from another process; return counts, negative fds, empty sets and
 * timeouts as the real calls have them.
 *
 * The mode is a property of the domain: a case chooses it before its first
 * open (each case runs in a fresh domain).
 */
#define _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>

#include "mp-util.h"

/* The entry points a _FORTIFY_SOURCE build calls instead of poll/ppoll. */
int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *ts,
		const sigset_t *ss, size_t fdslen);

static void use_mode(int exact)
{
	if (exact)
		setenv("BUS1_WAKE", "exact", 1);
	else
		unsetenv("BUS1_WAKE");
}

enum wfn { W_POLL, W_PPOLL, W_POLL_CHK, W_PPOLL_CHK, W_SELECT, W_PSELECT,
	   W_EPOLL, W_EPOLL_P, W_EPOLL_P2, W_COUNT };

static const char *const wfn_name[W_COUNT] = {
	"poll", "ppoll", "__poll_chk", "__ppoll_chk", "select", "pselect",
	"epoll_wait", "epoll_pwait", "epoll_pwait2",
};

#define EP_DATA 0x5eed5eedf00dULL

/*
 * Waits on fd for `events` with function w for up to ms (-1: forever).
 * Returns the call's result (a count, or -errno) and the bits reported in
 * *bits, in poll terms (select: POLLIN for "readable", POLLOUT for
 * "writable").
 */
static int wait_fd(enum wfn w, int fd, short events, int ms, short *bits)
{
	struct pollfd p = { .fd = fd, .events = events };
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	struct epoll_event ev = { .events = (uint32_t)events, .data.u64 = EP_DATA }, out = { 0 };
	sigset_t none;
	fd_set rd, wr;
	int r = -1, ep;

	*bits = 0;
	sigemptyset(&none);
	switch (w) {
	case W_POLL:
		r = poll(&p, 1, ms);
		break;
	case W_PPOLL:
		r = ppoll(&p, 1, ms < 0 ? NULL : &ts, NULL);
		break;
	case W_POLL_CHK:
		r = __poll_chk(&p, 1, ms, sizeof(p));
		break;
	case W_PPOLL_CHK:
		r = __ppoll_chk(&p, 1, ms < 0 ? NULL : &ts, &none, sizeof(p));
		break;
	case W_SELECT:
	case W_PSELECT:
		FD_ZERO(&rd);
		FD_ZERO(&wr);
		if (events & POLLIN)
			FD_SET(fd, &rd);
		if (events & POLLOUT)
			FD_SET(fd, &wr);
		if (w == W_SELECT)
			r = select(fd + 1, &rd, &wr, NULL, ms < 0 ? NULL : &tv);
		else
			r = pselect(fd + 1, &rd, &wr, NULL, ms < 0 ? NULL : &ts, &none);
		if (r > 0)
			*bits = (FD_ISSET(fd, &rd) ? POLLIN : 0) | (FD_ISSET(fd, &wr) ? POLLOUT : 0);
		return r < 0 ? -errno : r;
	default:
		ep = epoll_create1(EPOLL_CLOEXEC);
		ASSERT_GE(ep, 0);
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			r = -errno;
			close(ep);
			return r;
		}
		if (w == W_EPOLL)
			r = epoll_wait(ep, &out, 1, ms);
		else if (w == W_EPOLL_P)
			r = epoll_pwait(ep, &out, 1, ms, &none);
		else
			r = epoll_pwait2(ep, &out, 1, ms < 0 ? NULL : &ts, &none);
		if (r > 0) {
			ASSERT_EQ_U64(out.data.u64, EP_DATA);
			*bits = (short)out.events;
		}
		close(ep);
		return r < 0 ? -errno : r;
	}
	if (r > 0)
		*bits = p.revents;
	return r < 0 ? -errno : r;
}

static int is_select(enum wfn w)
{
	return w == W_SELECT || w == W_PSELECT;
}

static int is_epoll(enum wfn w)
{
	return w >= W_EPOLL;
}

enum state { S_EMPTY, S_MESSAGE, S_NOTE, S_HUP, S_CLOSED, S_COUNT };

static const char *const state_name[S_COUNT] = { "empty", "message", "notification", "disconnected", "closed" };

/* A peer a in state s, and b holding a handle to a's node. */
static int make_state(enum state s, int *pb)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	*pb = b;
	switch (s) {
	case S_EMPTY:
		break;
	case S_MESSAGE:
		ASSERT_EQ(b1_send_one(b, h, "m", 1), 0);
		break;
	case S_NOTE:
		ASSERT_EQ(b1_release(b, h), 0);
		break;
	case S_HUP:
		ASSERT_EQ(b1_send_one(b, h, "m", 1), 0);
		ASSERT_EQ(b1_disconnect(a), 0);
		break;
	case S_CLOSED:
		ASSERT_OK(close(a));
		break;
	default:
		break;
	}
	return a;
}

/*
 * §8.2 for one function in one mode: each state, asked for POLLIN|POLLOUT
 * and for POLLIN alone, without blocking.
 */
static void states(enum wfn w, int exact)
{
	use_mode(exact);
	for (enum state s = 0; s < S_COUNT; s++) {
		int b, a = make_state(s, &b);
		short bits, want;
		int r, n;

		if (s == S_CLOSED && is_epoll(w)) {
			/* epoll_ctl refuses a closed fd (the set must not take its number) */
			int ep = epoll_create1(EPOLL_CLOEXEC);
			struct epoll_event ev = { .events = EPOLLIN };

			ASSERT_GE(ep, 0);
			if (ep == a) {
				ep = dup(ep);
				close(a);
			}
			ASSERT_ERRNO(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev), EBADF);
			close(ep);
			close(b);
			continue;
		}
		r = wait_fd(w, a, POLLIN | POLLOUT, 0, &bits);
		if (s == S_CLOSED) {
			/* poll reports POLLNVAL; select refuses the fd */
			if (is_select(w)) {
				ASSERT_EQ(r, -EBADF);
			} else {
				ASSERT_EQ(r, 1);
				ASSERT_EQ(bits, POLLNVAL);
			}
			close(b);
			continue;
		}
		switch (s) {
		case S_EMPTY:
			want = POLLOUT;
			break;
		case S_HUP:
			/* select: a hung-up fd is readable, not writable */
			want = is_select(w) ? POLLIN : POLLHUP;
			break;
		default:
			want = POLLIN | POLLOUT;
			break;
		}
		n = is_select(w) ? __builtin_popcount(want) : 1;
		if (r != n || bits != want)
			t_fail(__FILE__, __LINE__, "%s, %s mode, %s: got %d/%#x, want %d/%#x", wfn_name[w],
			       exact ? "exact" : "default", state_name[s], r, bits, n, want);
		/* asked for POLLIN only: nothing unless readable or hung up */
		r = wait_fd(w, a, POLLIN, 0, &bits);
		want = s == S_EMPTY ? 0 : s == S_HUP ? (is_select(w) ? POLLIN : POLLHUP) : POLLIN;
		if (r != (want != 0) || bits != want)
			t_fail(__FILE__, __LINE__, "%s, %s mode, %s, POLLIN only: got %d/%#x, want %#x", wfn_name[w],
			       exact ? "exact" : "default", state_name[s], r, bits, want);
		close(a);
		close(b);
	}
}

/*
 * §8.2 for one function in one mode: blocked, it is woken by a message, a
 * notification and a disconnect made in another process, and sees exactly
 * what the module reports (POLLHUP alone after the disconnect).
 */
static void wakes(enum wfn w, int exact)
{
	int a, b, go[2];
	uint64_t h;
	struct bus1_cmd_recv r;
	short bits;
	pid_t pid;

	use_mode(exact);
	a = b1_open();
	b = b1_open();
	h = mp_node(a, 0x100, b);
	mp_pipe(go);

	pid = MP_DELAYED_CHILD(go[0], 30, ASSERT_EQ(b1_send_one(b, h, "wake", 4), 0));
	mp_put(go[1], "g", 1);
	ASSERT_EQ(MP_WOKEN(wait_fd(w, a, POLLIN, MP_WAIT_MS, &bits)), 1);
	ASSERT_EQ(bits, POLLIN);
	mp_reap(pid);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);

	pid = MP_DELAYED_CHILD(go[0], 30, ASSERT_EQ(b1_release(b, h), 0));
	mp_put(go[1], "g", 1);
	ASSERT_EQ(MP_WOKEN(wait_fd(w, a, POLLIN, MP_WAIT_MS, &bits)), 1);
	ASSERT_EQ(bits, POLLIN);
	mp_reap(pid);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_RELEASE);

	/* drained: blocks for the whole timeout */
	ASSERT_EQ(wait_fd(w, a, POLLIN, 60, &bits), 0);

	pid = MP_DELAYED_CHILD(go[0], 30, ASSERT_EQ(b1_disconnect(a), 0));
	mp_put(go[1], "g", 1);
	ASSERT_EQ(MP_WOKEN(wait_fd(w, a, POLLIN, MP_WAIT_MS, &bits)), 1);
	ASSERT_EQ(bits, is_select(w) ? POLLIN : POLLHUP);
	mp_reap(pid);
	ASSERT_EQ(wait_fd(w, a, POLLIN | POLLOUT, 0, &bits), 1);
	ASSERT_EQ(bits, is_select(w) ? POLLIN : POLLHUP);
}

#define WAIT_CASES(fn, w)						\
	TEST(fn##_states) { states(w, 0); }				\
	TEST(fn##_states_exact) { states(w, 1); }			\
	TEST(fn##_wakes) { wakes(w, 0); }				\
	TEST(fn##_wakes_exact) { wakes(w, 1); }

/* §8.2: the readiness states, and blocking wake-ups, of each wait function */
WAIT_CASES(poll, W_POLL)
WAIT_CASES(ppoll, W_PPOLL)
WAIT_CASES(poll_chk, W_POLL_CHK)
WAIT_CASES(ppoll_chk, W_PPOLL_CHK)
WAIT_CASES(select, W_SELECT)
WAIT_CASES(pselect, W_PSELECT)
WAIT_CASES(epoll_wait, W_EPOLL)
WAIT_CASES(epoll_pwait, W_EPOLL_P)
WAIT_CASES(epoll_pwait2, W_EPOLL_P2)

/* ------------------------------------------------ counts, sets, timeouts */

/*
 * poll over a mixed array: the count is that of entries with events; a
 * negative fd is ignored (revents 0); an fd twice is reported twice.
 */
TEST(poll_counts_mixed_entries)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	int pp[2];
	struct pollfd p[6];

	ASSERT_OK(pipe(pp));
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	p[0] = (struct pollfd){ .fd = a, .events = POLLIN };
	p[1] = (struct pollfd){ .fd = -1, .events = POLLIN, .revents = 0x7 };
	p[2] = (struct pollfd){ .fd = c, .events = POLLIN };
	p[3] = (struct pollfd){ .fd = pp[1], .events = POLLOUT };
	p[4] = (struct pollfd){ .fd = pp[0], .events = POLLIN };
	p[5] = (struct pollfd){ .fd = a, .events = POLLIN | POLLOUT };
	ASSERT_EQ(poll(p, 6, 0), 3);
	ASSERT_EQ(p[0].revents, POLLIN);
	ASSERT_EQ(p[1].revents, 0);
	ASSERT_EQ(p[2].revents, 0);
	ASSERT_EQ(p[3].revents, POLLOUT);
	ASSERT_EQ(p[4].revents, 0);
	ASSERT_EQ(p[5].revents, POLLIN | POLLOUT);
	/* with a timeout: the same at once */
	ASSERT_EQ(poll(p, 6, 5000), 3);
}

/* poll with no fds sleeps for the timeout; a set of only negative fds too */
TEST(poll_nothing_to_wait_for_sleeps)
{
	struct pollfd p = { .fd = -5, .events = POLLIN };
	double t0 = mp_now_ms();

	ASSERT_EQ(poll(NULL, 0, 80), 0);
	ASSERT_GE(mp_now_ms() - t0, 70);
	t0 = mp_now_ms();
	ASSERT_EQ(poll(&p, 1, 80), 0);
	ASSERT_GE(mp_now_ms() - t0, 70);
	ASSERT_EQ(p.revents, 0);
}

/* Timeouts on an idle peer: each call waits about as long as asked, then 0. */
TEST(timeouts_on_an_idle_peer)
{
	int a = b1_open();

	for (enum wfn w = 0; w < W_COUNT; w++) {
		double t0 = mp_now_ms(), dt;
		short bits;

		ASSERT_EQ(wait_fd(w, a, POLLIN, 120, &bits), 0);
		dt = mp_now_ms() - t0;
		if (dt < 110 || dt > 3000)
			t_fail(__FILE__, __LINE__, "%s: waited %.0f ms for a 120 ms timeout", wfn_name[w], dt);
	}
}

/* Linux select writes back the time left; pselect leaves its timeout alone. */
TEST(select_reports_time_left)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct timeval tv = { 5, 0 };
	struct timespec ts = { 5, 0 };
	int go[2];
	fd_set rd;
	pid_t pid;

	mp_pipe(go);
	pid = MP_DELAYED_CHILD(go[0], 30, ASSERT_EQ(b1_send_one(b, h, "x", 1), 0));
	mp_put(go[1], "g", 1);
	FD_ZERO(&rd);
	FD_SET(a, &rd);
	ASSERT_EQ(MP_WOKEN(select(a + 1, &rd, NULL, NULL, &tv)), 1);
	ASSERT_TRUE(FD_ISSET(a, &rd));
	ASSERT_TRUE(tv.tv_sec < 5 || tv.tv_usec < 1000000);
	ASSERT_TRUE(tv.tv_sec >= 3);
	mp_reap(pid);
	FD_ZERO(&rd);
	FD_SET(a, &rd);
	ASSERT_EQ(pselect(a + 1, &rd, NULL, NULL, &ts, NULL), 1);
	ASSERT_EQ(ts.tv_sec, 5);
	ASSERT_EQ(ts.tv_nsec, 0);
}

/* Invalid arguments get the real calls' errors, peer fd or not. */
TEST(invalid_wait_arguments)
{
	int a = b1_open();
	struct pollfd p = { .fd = a, .events = POLLIN };
	struct timespec bad = { 0, 2000000000L }, neg = { -1, 0 };
	struct timeval tbad = { -1, 0 };
	struct epoll_event ev;
	fd_set rd;

	ASSERT_ERRNO(ppoll(&p, 1, &bad, NULL), EINVAL);
	ASSERT_ERRNO(ppoll(&p, 1, &neg, NULL), EINVAL);
	FD_ZERO(&rd);
	FD_SET(a, &rd);
	ASSERT_ERRNO(select(a + 1, &rd, NULL, NULL, &tbad), EINVAL);
	ASSERT_ERRNO(select(-1, &rd, NULL, NULL, NULL), EINVAL);
	ASSERT_ERRNO(poll(b1_bad_ptr(), 1, 0), EFAULT);
	ASSERT_ERRNO(epoll_wait(a, &ev, 1, 0), EINVAL);
	ASSERT_ERRNO(epoll_wait(-1, &ev, 1, 0), EBADF);
	{
		int ep = epoll_create1(0);

		ASSERT_GE(ep, 0);
		ASSERT_ERRNO(epoll_wait(ep, &ev, 0, 0), EINVAL);
		close(ep);
	}
}
