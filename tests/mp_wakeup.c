/* SPDX-License-Identifier: MIT */
/*
 * Blocking wake-ups across processes (§8.2): a process blocked in poll,
 * ppoll, select, pselect or epoll_wait (level- and edge-triggered) on its
 * peer fd wakes when another process queues a message or a notification,
 * and sees POLLHUP once any process sharing the peer disconnects it. Under
 * concurrency no wake-up is lost and every message is received exactly once.
 *
 * Every blocking wait is bounded (5 s): a wait that times out although the
 * queue became readable is a lost wake-up and fails the case.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/select.h>

#include "mp-util.h"

enum mech { M_POLL, M_PPOLL, M_SELECT, M_PSELECT, M_EPOLL_LT, M_EPOLL_ET };

/*
 * Blocks on fd with mechanism m for up to ms milliseconds; returns what was
 * reported as poll bits (select/pselect: POLLIN for "readable"), 0 on
 * timeout.
 */
static short wait_on(int fd, enum mech m, short events, int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	struct pollfd p = { .fd = fd, .events = events };
	struct epoll_event ev = { 0 }, out = { 0 };
	sigset_t none;
	fd_set rd;
	int r, ep;

	sigemptyset(&none);
	FD_ZERO(&rd);
	FD_SET(fd, &rd);
	switch (m) {
	case M_POLL:
		r = poll(&p, 1, ms);
		ASSERT_GE(r, 0);
		return r ? p.revents : 0;
	case M_PPOLL:
		r = ppoll(&p, 1, &ts, &none);
		ASSERT_GE(r, 0);
		return r ? p.revents : 0;
	case M_SELECT:
		r = select(fd + 1, &rd, NULL, NULL, &tv);
		ASSERT_GE(r, 0);
		return r && FD_ISSET(fd, &rd) ? POLLIN : 0;
	case M_PSELECT:
		r = pselect(fd + 1, &rd, NULL, NULL, &ts, &none);
		ASSERT_GE(r, 0);
		return r && FD_ISSET(fd, &rd) ? POLLIN : 0;
	case M_EPOLL_LT:
	case M_EPOLL_ET:
		ep = epoll_create1(EPOLL_CLOEXEC);
		ASSERT_GE(ep, 0);
		ev.events = (uint32_t)events | (m == M_EPOLL_ET ? EPOLLET : 0);
		ev.data.fd = fd;
		ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
		r = epoll_wait(ep, &out, 1, ms);
		ASSERT_GE(r, 0);
		close(ep);
		return r ? (short)out.events : 0;
	}
	return 0;
}

/*
 * §8.2: the receiver blocks (mechanism m) on an empty queue; a message sent
 * by another process wakes it and RECV delivers it.
 */
static void wake_on_message(enum mech m)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_recv r;
	int ready[2];
	pid_t pid;

	mp_pipe(ready);
	pid = MP_DELAYED_CHILD(ready[0], 50, ASSERT_EQ(b1_send_one(b, h, "wake", 4), 0));
	ASSERT_EQ(wait_on(a, m, POLLIN, 0) & POLLIN, 0);
	mp_put(ready[1], "r", 1);
	ASSERT_TRUE(MP_WOKEN(wait_on(a, m, POLLIN, MP_WAIT_MS)) & POLLIN);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.pid, pid);
	ASSERT_EQ(r.msg.n_bytes, 4);
	mp_reap(pid);
	/* drained: no longer readable */
	ASSERT_EQ(wait_on(a, m, POLLIN, 0) & POLLIN, 0);
}

/* §8.2: poll() wakes on a message from another process */
TEST(poll_wakes_on_message)
{
	wake_on_message(M_POLL);
}

/* §8.2: ppoll() wakes on a message from another process */
TEST(ppoll_wakes_on_message)
{
	wake_on_message(M_PPOLL);
}

/* §8.2: select() wakes on a message from another process */
TEST(select_wakes_on_message)
{
	wake_on_message(M_SELECT);
}

/* §8.2: pselect() wakes on a message from another process */
TEST(pselect_wakes_on_message)
{
	wake_on_message(M_PSELECT);
}

/* §8.2: level-triggered epoll_wait() wakes on a message from another process */
TEST(epoll_lt_wakes_on_message)
{
	wake_on_message(M_EPOLL_LT);
}

/* §8.2: edge-triggered epoll_wait() wakes on a message from another process */
TEST(epoll_et_wakes_on_message)
{
	wake_on_message(M_EPOLL_ET);
}

/*
 * §3.8, §8.2: a holder blocked in m wakes when the owner, in another
 * process, destroys the node; RECV yields NODE_DESTROY for its handle.
 */
static void wake_on_destroy(enum mech m)
{
	int a = b1_open(), o = b1_open();
	uint64_t h = mp_node(o, 0x200, a);
	struct bus1_cmd_recv r;
	int ready[2];
	pid_t pid;

	mp_pipe(ready);
	pid = MP_DELAYED_CHILD(ready[0], 50, ASSERT_EQ(b1_destroy_one(o, 0x200), 0));
	mp_put(ready[1], "r", 1);
	ASSERT_TRUE(MP_WOKEN(wait_on(a, m, POLLIN, MP_WAIT_MS)) & POLLIN);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, h);
	ASSERT_EQ_U64(r.msg.offset, BUS1_OFFSET_INVALID);
	mp_reap(pid);
}

/* §3.8, §8.2: poll() wakes on NODE_DESTROY */
TEST(poll_wakes_on_node_destroy)
{
	wake_on_destroy(M_POLL);
}

/* §3.8, §8.2: edge-triggered epoll wakes on NODE_DESTROY */
TEST(epoll_et_wakes_on_node_destroy)
{
	wake_on_destroy(M_EPOLL_ET);
}

/* §3.8, §8.2: select() wakes on NODE_DESTROY */
TEST(select_wakes_on_node_destroy)
{
	wake_on_destroy(M_SELECT);
}

/*
 * §3.7, §8.2: an owner blocked in m wakes when the last remote holder, in
 * another process, releases its handle; RECV yields NODE_RELEASE.
 */
static void wake_on_release(enum mech m)
{
	int a = b1_open(), o = b1_open();
	uint64_t h = mp_node(a, 0x300, o);
	struct bus1_cmd_recv r;
	int ready[2];
	pid_t pid;

	mp_pipe(ready);
	pid = MP_DELAYED_CHILD(ready[0], 50, ASSERT_EQ(b1_release(o, h), 0));
	mp_put(ready[1], "r", 1);
	ASSERT_TRUE(MP_WOKEN(wait_on(a, m, POLLIN, MP_WAIT_MS)) & POLLIN);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_RELEASE);
	ASSERT_EQ_U64(r.msg.destination, 0x300);
	mp_reap(pid);
}

/* §3.7, §8.2: ppoll() wakes on NODE_RELEASE */
TEST(ppoll_wakes_on_node_release)
{
	wake_on_release(M_PPOLL);
}

/* §3.7, §8.2: pselect() wakes on NODE_RELEASE */
TEST(pselect_wakes_on_node_release)
{
	wake_on_release(M_PSELECT);
}

/* §3.7, §8.2: level-triggered epoll wakes on NODE_RELEASE */
TEST(epoll_lt_wakes_on_node_release)
{
	wake_on_release(M_EPOLL_LT);
}

/*
 * §2.1 step 2, §8.2: a process blocked in m on a shared peer wakes with
 * POLLHUP alone (no POLLIN before or with it, no POLLOUT) when another
 * process disconnects it.
 */
static void wake_on_hup(enum mech m)
{
	int a = b1_open();
	int ready[2];
	short ev;
	pid_t pid;

	mp_pipe(ready);
	pid = MP_DELAYED_CHILD(ready[0], 50, ASSERT_EQ(b1_disconnect(a), 0));
	mp_put(ready[1], "r", 1);
	ev = MP_WOKEN(wait_on(a, m, POLLIN, MP_WAIT_MS));
	if (m == M_SELECT || m == M_PSELECT) {
		/* select reports a hung-up fd as readable */
		ASSERT_TRUE(ev & POLLIN);
	} else {
		ASSERT_EQ(ev, POLLHUP);
	}
	mp_reap(pid);
	ASSERT_HUP(b1_revents(a, POLLIN | POLLOUT));
	ASSERT_EQ(b1_disconnect(a), -ESHUTDOWN);
}

/* §8.2: poll() sees POLLHUP after a disconnect in another process */
TEST(poll_hup_on_disconnect_elsewhere)
{
	wake_on_hup(M_POLL);
}

/* §8.2: ppoll() sees POLLHUP after a disconnect in another process */
TEST(ppoll_hup_on_disconnect_elsewhere)
{
	wake_on_hup(M_PPOLL);
}

/* §8.2: select() wakes (readable) after a disconnect in another process */
TEST(select_hup_on_disconnect_elsewhere)
{
	wake_on_hup(M_SELECT);
}

/* §8.2: edge-triggered epoll sees EPOLLHUP after a disconnect in another process */
TEST(epoll_et_hup_on_disconnect_elsewhere)
{
	wake_on_hup(M_EPOLL_ET);
}

/*
 * Exec'd entry: receives a peer fd over socket argv[0]; its first use is
 * poll(); reports ready on argv[0] and waits (5 s at most) for POLLIN, then
 * for POLLHUP.
 */
T_CHILD(poll_first_use)
{
	int sock = mp_arg(argv[0]);
	int fd = mp_recv_fd(sock);
	struct bus1_cmd_recv r;
	short ev;

	ASSERT_EQ(b1_revents(fd, POLLIN | POLLOUT), POLLOUT);
	mp_put(sock, "r", 1);
	ev = MP_WOKEN(mp_poll_wait(fd, POLLIN, MP_WAIT_MS));
	ASSERT_EQ(ev, POLLIN);
	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	mp_put(sock, "r", 1);
	ev = MP_WOKEN(mp_poll_wait(fd, POLLIN, MP_WAIT_MS));
	ASSERT_HUP(ev);
	return 0;
}

/*
 * §8.2: a peer fd received over a socket is pollable before any other use,
 * and wakes its exec'd holder for a message and for the hang-up.
 */
TEST(exec_child_poll_first_use)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int sv[2];
	char c;
	pid_t pid;

	mp_socketpair(sv);
	pid = mp_spawn("poll_first_use", mp_str(sv[1]), (char *)NULL);
	mp_send_fd(sv[0], a);
	mp_get(sv[0], &c, 1);
	mp_sleep_ms(50);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	mp_get(sv[0], &c, 1);
	mp_sleep_ms(50);
	ASSERT_EQ(b1_disconnect(a), 0);
	mp_reap(pid);
}

/*
 * §8.2: edge-triggered epoll reports each message that makes the drained
 * queue readable again, and nothing once the queue has been drained.
 */
TEST(epoll_et_rearms_after_drain)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET };
	struct bus1_cmd_recv r;
	int ready[2];
	pid_t pid;

	ASSERT_GE(ep, 0);
	ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
	mp_pipe(ready);
	pid = mp_fork();
	if (pid == 0) {
		for (unsigned i = 0; i < 5; i++) {
			char c;

			mp_get(ready[0], &c, 1);
			mp_sleep_ms(20);
			ASSERT_EQ(b1_send_one(b, h, &i, sizeof(i)), 0);
		}
		_exit(0);
	}
	for (unsigned i = 0; i < 5; i++) {
		unsigned v;

		ASSERT_EQ(epoll_wait(ep, &ev, 1, 0), 0);
		mp_put(ready[1], "r", 1);
		ASSERT_EQ(MP_WOKEN(epoll_wait(ep, &ev, 1, MP_WAIT_MS)), 1);
		ASSERT_TRUE(ev.events & EPOLLIN);
		ASSERT_EQ(b1_recv(a, &r, 0), 0);
		memcpy(&v, b1_map(a) + r.msg.offset, sizeof(v));
		ASSERT_EQ(v, i);
		ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
		ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	}
	ASSERT_EQ(epoll_wait(ep, &ev, 1, 0), 0);
	mp_reap(pid);
}

/*
 * §8.2: level-triggered epoll keeps reporting EPOLLIN while messages from
 * another process are queued, and stops once they are all received.
 */
TEST(epoll_lt_reports_until_drained)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN };
	struct bus1_cmd_recv r;
	pid_t pid;

	ASSERT_GE(ep, 0);
	ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(b1_send_one(b, h, "1", 1), 0);
		ASSERT_EQ(b1_send_one(b, h, "2", 1), 0);
		_exit(0);
	}
	ASSERT_EQ(epoll_wait(ep, &ev, 1, MP_WAIT_MS), 1);
	mp_reap(pid);
	ASSERT_EQ(epoll_wait(ep, &ev, 1, 0), 1);
	ASSERT_EQ(ev.events, EPOLLIN);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(epoll_wait(ep, &ev, 1, 0), 1);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(epoll_wait(ep, &ev, 1, 0), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}

/*
 * docs/design.md, fixed decision 5, §8.6: a holder blocked in poll learns within a
 * bounded time that the owner's process was killed: NODE_DESTROY arrives.
 */
TEST(poll_wakes_when_owner_killed)
{
	int a = b1_open(), o = b1_open();
	uint64_t h = mp_node(o, 0x200, a);
	struct bus1_cmd_recv r;
	int ready[2];
	pid_t pid;
	char c;

	mp_pipe(ready);
	pid = mp_fork();
	if (pid == 0) {
		struct bus1_cmd_peer_reset q;

		ASSERT_EQ(b1_query(o, &q), 0);
		mp_put(ready[1], "r", 1);
		for (;;)
			pause();
	}
	ASSERT_OK(close(o));
	mp_get(ready[0], &c, 1);
	ASSERT_FALSE(b1_revents(a, POLLIN) & POLLIN);
	ASSERT_OK(kill(pid, SIGKILL));
	ASSERT_TRUE(mp_poll_wait(a, POLLIN, MP_WAIT_MS) & POLLIN);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, h);
	ASSERT_EQ(b1_send_one(a, h, "x", 1), -ESHUTDOWN);
	ASSERT_TRUE(WIFSIGNALED(mp_wait(pid)));
}

/* ---------------------------------------------------------- stress */

struct smsg {
	uint32_t sender;
	uint32_t seq;
	uint64_t pad;
};

/*
 * How often the receiver has found its queue empty and gone to sleep; shared
 * between the receiver and the senders (an anonymous shared mapping made
 * before the fork).
 */
static volatile unsigned *receiver_sleeps;

/*
 * Waits (up to a second) until the receiver has gone to sleep again since
 * `*seen`. The senders pause like this between bursts so that the receiver
 * drains its queue and sleeps many times whatever the speed of the machine;
 * the next burst then races the receiver's way into the wait.
 */
static void await_receiver_sleep(unsigned *seen)
{
	const struct timespec nap = { 0, 20000L };

	for (int i = 0; i < 50000 && __atomic_load_n(receiver_sleeps, __ATOMIC_ACQUIRE) == *seen; i++)
		nanosleep(&nap, NULL);
	*seen = __atomic_load_n(receiver_sleeps, __ATOMIC_ACQUIRE);
}

/* Creates the shared counter before the senders and receivers are forked. */
static void map_receiver_sleeps(void)
{
	receiver_sleeps = mmap(NULL, sizeof(*receiver_sleeps), PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(receiver_sleeps != MAP_FAILED);
	*receiver_sleeps = 0;
}

/*
 * Sends n numbered messages in short bursts; between bursts it waits until
 * the receiver has drained its queue and gone back to sleep (see above),
 * plus a pause of up to 200 microseconds that differs between senders.
 * EDQUOT (fair-share backlog limit) is retried.
 */
static void sender_loop(int b, uint64_t h, unsigned s, unsigned n)
{
	unsigned seen = 0;

	for (unsigned q = 0; q < n; q++) {
		struct smsg m = { s, q, 0 };
		struct timespec ts = { 0, (long)((q * 7919u + s * 104729u) % 200) * 1000L };
		int r;

		while ((r = b1_send_one(b, h, &m, sizeof(m))) == -EDQUOT)
			mp_sleep_ms(1);
		ASSERT_EQ(r, 0);
		if ((q + s) % 5 == 0) {
			await_receiver_sleep(&seen);
			nanosleep(&ts, NULL);
		}
	}
}

/* Forks n_senders senders of n_each messages each, released together. */
static void start_senders(int b, uint64_t h, unsigned n_senders, unsigned n_each,
			  pid_t *pids, int go_rd)
{
	for (unsigned s = 0; s < n_senders; s++) {
		pids[s] = mp_fork();
		if (pids[s] == 0) {
			char c;

			mp_get(go_rd, &c, 1);
			sender_loop(b, h, s, n_each);
			_exit(0);
		}
	}
}

/*
 * Drains a until n_senders * n_each messages arrived, sleeping in m between
 * drains. §7.1: each sender's messages arrive in its send order, so the
 * per-sender sequence must be exactly 0, 1, 2, ... (no loss, no duplicate).
 */
static void receive_all(int a, enum mech m, unsigned n_senders, unsigned n_each)
{
	const uint8_t *pool = b1_map(a);
	unsigned next[16] = { 0 };
	unsigned total = 0, expected = n_senders * n_each, sleeps = 0;
	int ep = -1;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET };
	struct bus1_cmd_recv r;

	if (m == M_EPOLL_ET) {
		ep = epoll_create1(EPOLL_CLOEXEC);
		ASSERT_GE(ep, 0);
		ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
	}
	while (total < expected) {
		int ret = b1_recv(a, &r, 0);
		struct smsg sm;

		if (ret == 0) {
			ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
			ASSERT_EQ(r.msg.n_bytes, sizeof(sm));
			memcpy(&sm, pool + r.msg.offset, sizeof(sm));
			ASSERT_LT(sm.sender, n_senders);
			ASSERT_EQ(sm.seq, next[sm.sender]);
			next[sm.sender]++;
			total++;
			ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
			continue;
		}
		ASSERT_EQ(ret, -EAGAIN);
		sleeps++;
		__atomic_store_n(receiver_sleeps, sleeps, __ATOMIC_RELEASE);
		if (m == M_EPOLL_ET) {
			if (MP_WOKEN(epoll_wait(ep, &ev, 1, MP_WAIT_MS)) != 1)
				t_fail(__FILE__, __LINE__, "lost wake-up (epoll ET): %u of %u received",
				       total, expected);
		} else if (!(MP_WOKEN(wait_on(a, m, POLLIN, MP_WAIT_MS)) & POLLIN)) {
			t_fail(__FILE__, __LINE__, "lost wake-up: %u of %u received", total, expected);
		}
	}
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	/*
	 * The receiver must really have slept between drains; the senders
	 * wait for that at every pause, so a run that did not is broken.
	 */
	ASSERT_GE(sleeps, 10);
	if (ep >= 0)
		close(ep);
}

#define STRESS_SENDERS 4
#define STRESS_EACH 10000

static void stress(enum mech m)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	pid_t pids[STRESS_SENDERS];
	unsigned each = STRESS_EACH * t_scale();
	int go[2];

	map_receiver_sleeps();
	mp_pipe(go);
	start_senders(b, h, STRESS_SENDERS, each, pids, go[0]);
	mp_put(go[1], "gggggggggggggggg", STRESS_SENDERS);
	receive_all(a, m, STRESS_SENDERS, each);
	for (unsigned s = 0; s < STRESS_SENDERS; s++)
		mp_reap(pids[s]);
	munmap((void *)receiver_sleeps, sizeof(*receiver_sleeps));
}

/* §8.2, §7.1: racing senders, receiver sleeping in poll: exactly once, in order */
TEST_TIMEOUT(stress_senders_poll, 60)
{
	stress(M_POLL);
}

/* §8.2, §7.1: racing senders, receiver sleeping in edge-triggered epoll */
TEST_TIMEOUT(stress_senders_epoll_et, 60)
{
	stress(M_EPOLL_ET);
}

/* §8.2, §7.1: racing senders, receiver sleeping in select */
TEST_TIMEOUT(stress_senders_select, 60)
{
	stress(M_SELECT);
}

/* §8.2, §7.1: the same three with BUS1_WAKE=exact (the peer socket's token kept exact) */
TEST_TIMEOUT(stress_senders_poll_exact, 60)
{
	setenv("BUS1_WAKE", "exact", 1);
	stress(M_POLL);
}

TEST_TIMEOUT(stress_senders_epoll_et_exact, 60)
{
	setenv("BUS1_WAKE", "exact", 1);
	stress(M_EPOLL_ET);
}

TEST_TIMEOUT(stress_senders_select_exact, 60)
{
	setenv("BUS1_WAKE", "exact", 1);
	stress(M_SELECT);
}

/*
 * Keeps this process and everything it forks on one CPU (the first it may
 * use), the way `taskset -c 0` does: a wait may then not spin, and yields
 * its CPU once before it sleeps (README, Wake-ups). Called before the
 * first wait of the process, which reads the affinity once.
 */
static void pin_to_one_cpu(void)
{
	cpu_set_t set;
	int cpu = 0;

	ASSERT_OK(sched_getaffinity(0, sizeof(set), &set));
	while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &set))
		cpu++;
	ASSERT_LT(cpu, CPU_SETSIZE);
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	ASSERT_OK(sched_setaffinity(0, sizeof(set), &set));
}

/* §8.2, §7.1: racing senders and the receiver share one CPU, in both modes */
TEST_TIMEOUT(stress_senders_poll_one_cpu, 60)
{
	pin_to_one_cpu();
	stress(M_POLL);
}

TEST_TIMEOUT(stress_senders_select_one_cpu_exact, 60)
{
	setenv("BUS1_WAKE", "exact", 1);
	pin_to_one_cpu();
	stress(M_SELECT);
}

TEST_TIMEOUT(stress_senders_epoll_et_one_cpu, 60)
{
	pin_to_one_cpu();
	stress(M_EPOLL_ET);
}

#define PINGPONG_ROUNDS 10000

/* Waits (mechanism m, bounded) until RECV on fd succeeds; returns the u32 payload. */
static unsigned recv_u32(int fd, const uint8_t *pool, enum mech m)
{
	struct bus1_cmd_recv r;
	unsigned v;
	int ret;

	while ((ret = b1_recv(fd, &r, 0)) == -EAGAIN)
		if (!(MP_WOKEN(wait_on(fd, m, POLLIN, MP_WAIT_MS)) & POLLIN))
			t_fail(__FILE__, __LINE__, "lost wake-up in ping-pong");
	ASSERT_EQ(ret, 0);
	ASSERT_EQ(r.msg.n_bytes, sizeof(v));
	memcpy(&v, pool + r.msg.offset, sizeof(v));
	ASSERT_EQ(b1_slice_release(fd, r.msg.offset), 0);
	return v;
}

/*
 * §8.2: two processes ping-pong, each sleeping until the other's message
 * arrives: every round needs a wake-up, none may be lost.
 */
static void pingpong(enum mech ma, enum mech mb)
{
	int a = b1_open(), b = b1_open();
	uint64_t ha = mp_node(a, 0x100, b);
	uint64_t hb = mp_node(b, 0x200, a);
	unsigned rounds = PINGPONG_ROUNDS * t_scale();
	pid_t pid = mp_fork();

	if (pid == 0) {
		const uint8_t *pool = b1_map(b);

		for (unsigned i = 0; i < rounds; i++) {
			unsigned v = recv_u32(b, pool, mb);

			ASSERT_EQ(v, i);
			ASSERT_EQ(b1_send_one(b, ha, &v, sizeof(v)), 0);
		}
		_exit(0);
	}
	{
		const uint8_t *pool = b1_map(a);

		for (unsigned i = 0; i < rounds; i++) {
			ASSERT_EQ(b1_send_one(a, hb, &i, sizeof(i)), 0);
			ASSERT_EQ(recv_u32(a, pool, ma), i);
		}
	}
	mp_reap(pid);
}

/* §8.2: ping-pong between two processes sleeping in poll */
TEST_TIMEOUT(pingpong_poll, 60)
{
	pingpong(M_POLL, M_POLL);
}

/* §8.2: ping-pong between edge-triggered epoll and pselect sleepers */
TEST_TIMEOUT(pingpong_epoll_et_pselect, 60)
{
	pingpong(M_EPOLL_ET, M_PSELECT);
}

/* §8.2: the two ping-pongs with BUS1_WAKE=exact */
TEST_TIMEOUT(pingpong_poll_exact, 60)
{
	setenv("BUS1_WAKE", "exact", 1);
	pingpong(M_POLL, M_POLL);
}

TEST_TIMEOUT(pingpong_epoll_et_pselect_exact, 60)
{
	setenv("BUS1_WAKE", "exact", 1);
	pingpong(M_EPOLL_ET, M_PSELECT);
}

/* §8.2: both ping-pong processes on one CPU, in both modes */
TEST_TIMEOUT(pingpong_poll_one_cpu, 60)
{
	pin_to_one_cpu();
	pingpong(M_POLL, M_POLL);
}

TEST_TIMEOUT(pingpong_poll_one_cpu_exact, 60)
{
	setenv("BUS1_WAKE", "exact", 1);
	pin_to_one_cpu();
	pingpong(M_POLL, M_PSELECT);
}

TEST_TIMEOUT(pingpong_epoll_et_one_cpu, 60)
{
	pin_to_one_cpu();
	pingpong(M_EPOLL_ET, M_EPOLL_ET);
}

#define SHARED_RECEIVERS 3
#define SHARED_SENDERS 2
#define SHARED_EACH 5000

struct shared {
	atomic_uint total;
	atomic_uchar seen[SHARED_SENDERS][SHARED_EACH];
};

/*
 * §2.9, §8.2: three processes share one receiving peer and race for its
 * messages, sleeping in poll between drains; each message is received by
 * exactly one of them, exactly once.
 */
static void shared_peer_receivers_exactly_once_body(void)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	const unsigned expected = SHARED_SENDERS * SHARED_EACH;
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t rcv[SHARED_RECEIVERS], snd[SHARED_SENDERS];
	int go[2];

	ASSERT_TRUE(sh != MAP_FAILED);
	map_receiver_sleeps();
	for (unsigned i = 0; i < SHARED_RECEIVERS; i++) {
		rcv[i] = mp_fork();
		if (rcv[i] == 0) {
			const uint8_t *pool = b1_map(a);
			double end = mp_now_ms() + 40000;

			while (atomic_load(&sh->total) < expected) {
				struct bus1_cmd_recv r;
				struct smsg sm;
				int ret = b1_recv(a, &r, 0);

				if (ret == 0) {
					ASSERT_EQ(r.msg.n_bytes, sizeof(sm));
					memcpy(&sm, pool + r.msg.offset, sizeof(sm));
					ASSERT_LT(sm.sender, SHARED_SENDERS);
					ASSERT_LT(sm.seq, SHARED_EACH);
					atomic_fetch_add(&sh->seen[sm.sender][sm.seq], 1);
					atomic_fetch_add(&sh->total, 1);
					ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
					continue;
				}
				ASSERT_EQ(ret, -EAGAIN);
				ASSERT_LT(mp_now_ms(), end);
				/* short sleeps: the others may take what woke us */
				__atomic_add_fetch(receiver_sleeps, 1, __ATOMIC_RELEASE);
				mp_poll_wait(a, POLLIN, 100);
			}
			_exit(0);
		}
	}
	mp_pipe(go);
	start_senders(b, h, SHARED_SENDERS, SHARED_EACH, snd, go[0]);
	mp_put(go[1], "gggggggggggggggg", SHARED_SENDERS);
	for (unsigned s = 0; s < SHARED_SENDERS; s++)
		mp_reap(snd[s]);
	for (unsigned i = 0; i < SHARED_RECEIVERS; i++)
		mp_reap(rcv[i]);
	ASSERT_EQ(atomic_load(&sh->total), expected);
	for (unsigned s = 0; s < SHARED_SENDERS; s++)
		for (unsigned q = 0; q < SHARED_EACH; q++)
			if (atomic_load(&sh->seen[s][q]) != 1)
				t_fail(__FILE__, __LINE__, "message %u/%u received %u times", s, q,
				       atomic_load(&sh->seen[s][q]));
	{
		struct bus1_cmd_recv r;

		ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	}
	munmap((void *)receiver_sleeps, sizeof(*receiver_sleeps));
}

/* the case described above, in the default wake-up mode */
TEST_TIMEOUT(shared_peer_receivers_exactly_once, 60)
{
	shared_peer_receivers_exactly_once_body();
}

/* the same with BUS1_WAKE=exact (three receiving processes share one peer) */
TEST_TIMEOUT(shared_peer_receivers_exactly_once_exact, 60)
{
	setenv("BUS1_WAKE", "exact", 1);
	shared_peer_receivers_exactly_once_body();
}

/* the same with every process on one CPU */
TEST_TIMEOUT(shared_peer_receivers_exactly_once_one_cpu, 60)
{
	pin_to_one_cpu();
	shared_peer_receivers_exactly_once_body();
}

#define NOTIFY_PROCS 3
#define NOTIFY_EACH 300

/*
 * Drains notifications of `type` on a until each of the n destinations in
 * ids[] was seen exactly once, sleeping in m between drains.
 */
static void receive_notifications(int a, enum mech m, uint64_t type, const uint64_t *ids, unsigned n)
{
	static unsigned char seen[NOTIFY_PROCS * NOTIFY_EACH];
	unsigned total = 0;
	struct bus1_cmd_recv r;

	ASSERT_LE(n, NOTIFY_PROCS * NOTIFY_EACH);
	memset(seen, 0, sizeof(seen));
	while (total < n) {
		int ret = b1_recv(a, &r, 0);
		unsigned i;

		if (ret == -EAGAIN) {
			if (!(MP_WOKEN(wait_on(a, m, POLLIN, MP_WAIT_MS)) & POLLIN))
				t_fail(__FILE__, __LINE__, "lost wake-up: %u of %u notifications", total, n);
			continue;
		}
		ASSERT_EQ(ret, 0);
		ASSERT_EQ(r.msg.type, type);
		for (i = 0; i < n && ids[i] != r.msg.destination; i++)
			;
		if (i == n)
			t_fail(__FILE__, __LINE__, "notification for unknown ID 0x%" PRIx64,
			       (uint64_t)r.msg.destination);
		ASSERT_EQ(seen[i], 0);
		seen[i] = 1;
		total++;
	}
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}

/*
 * §3.7, §8.2: holders in three processes release their handles to 900 of
 * a's nodes concurrently; a, sleeping in level-triggered epoll between
 * drains, gets exactly one NODE_RELEASE per node.
 */
static void stress_release_notifications_body(void)
{
	int a = b1_open();
	static uint64_t nodes[NOTIFY_PROCS * NOTIFY_EACH];
	int holders[NOTIFY_PROCS], go[2];
	pid_t pids[NOTIFY_PROCS];

	mp_pipe(go);
	for (unsigned p = 0; p < NOTIFY_PROCS; p++) {
		static uint64_t h[NOTIFY_EACH];

		holders[p] = b1_open();
		for (unsigned i = 0; i < NOTIFY_EACH; i++) {
			nodes[p * NOTIFY_EACH + i] = 0x1000 + 4 * (p * NOTIFY_EACH + i);
			h[i] = mp_node(a, nodes[p * NOTIFY_EACH + i], holders[p]);
		}
		pids[p] = mp_fork();
		if (pids[p] == 0) {
			char c;

			mp_get(go[0], &c, 1);
			for (unsigned i = 0; i < NOTIFY_EACH; i++) {
				ASSERT_EQ(b1_release(holders[p], h[i]), 0);
				if (i % 16 == 0)
					mp_sleep_ms(1);
			}
			_exit(0);
		}
	}
	mp_put(go[1], "ggg", NOTIFY_PROCS);
	receive_notifications(a, M_EPOLL_LT, BUS1_MSG_NODE_RELEASE, nodes, NOTIFY_PROCS * NOTIFY_EACH);
	for (unsigned p = 0; p < NOTIFY_PROCS; p++)
		mp_reap(pids[p]);
}

/* the case described above, in the default wake-up mode */
TEST_TIMEOUT(stress_release_notifications, 60)
{
	stress_release_notifications_body();
}

/* the same with BUS1_WAKE=exact (release notifications from three processes) */
TEST_TIMEOUT(stress_release_notifications_exact, 60)
{
	setenv("BUS1_WAKE", "exact", 1);
	stress_release_notifications_body();
}

/*
 * §3.8, §8.2: owners in three processes destroy their nodes one by one,
 * concurrently; the holder, sleeping in poll between drains, gets exactly
 * one NODE_DESTROY per handle.
 */
static void stress_destroy_notifications_body(void)
{
	int a = b1_open();
	static uint64_t handles[NOTIFY_PROCS * NOTIFY_EACH];
	int owners[NOTIFY_PROCS], go[2];
	pid_t pids[NOTIFY_PROCS];

	mp_pipe(go);
	for (unsigned p = 0; p < NOTIFY_PROCS; p++) {
		owners[p] = b1_open();
		for (unsigned i = 0; i < NOTIFY_EACH; i++)
			handles[p * NOTIFY_EACH + i] = mp_node(owners[p], 0x1000 + 4 * i, a);
		pids[p] = mp_fork();
		if (pids[p] == 0) {
			char c;

			mp_get(go[0], &c, 1);
			for (unsigned i = 0; i < NOTIFY_EACH; i++) {
				ASSERT_EQ(b1_destroy_one(owners[p], 0x1000 + 4 * i), 0);
				if (i % 16 == 0)
					mp_sleep_ms(1);
			}
			_exit(0);
		}
	}
	mp_put(go[1], "ggg", NOTIFY_PROCS);
	receive_notifications(a, M_POLL, BUS1_MSG_NODE_DESTROY, handles, NOTIFY_PROCS * NOTIFY_EACH);
	for (unsigned p = 0; p < NOTIFY_PROCS; p++)
		mp_reap(pids[p]);
}

/* the case described above, in the default wake-up mode */
TEST_TIMEOUT(stress_destroy_notifications, 60)
{
	stress_destroy_notifications_body();
}

/* the same with BUS1_WAKE=exact (destroy notifications from three processes) */
TEST_TIMEOUT(stress_destroy_notifications_exact, 60)
{
	setenv("BUS1_WAKE", "exact", 1);
	stress_destroy_notifications_body();
}
