/* SPDX-License-Identifier: MIT */
/*
 * epoll on peer fds (§8.2, with epoll's own rules): level-triggered items
 * report while a message is queued; edge-triggered ones once per message or
 * notification queued (the module's wake-up); one-shot ones once until
 * EPOLL_CTL_MOD re-arms them; EPOLLEXCLUSIVE is accepted; `data` comes back
 * as registered. A set is one kernel object: it is shared by forked
 * processes (one edge goes to one of them), inherited across exec and
 * received over SCM_RIGHTS, and may itself sit in another set or a poll
 * set. EPOLL_CTL_DEL and the close of the peer's last fd remove the item.
 */
#define _GNU_SOURCE
#include <sys/epoll.h>

#include "mp-util.h"

static int ep_new(void)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);

	ASSERT_GE(ep, 0);
	return ep;
}

static void ep_add(int ep, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = { .events = events, .data.u64 = data };

	ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
}

/* epoll_wait for one event; returns the count (0/1), the event in *out. */
static int ep_wait1(int ep, struct epoll_event *out, int ms)
{
	int r = epoll_wait(ep, out, 1, ms);

	ASSERT_GE(r, 0);
	return r;
}

/* Level-triggered: reported while queued, with the registered data. */
TEST(ep_level_triggered)
{
	int a = b1_open(), b = b1_open(), ep = ep_new();
	uint64_t h = b1_share(a, 0x100, b);
	struct epoll_event e;
	struct bus1_cmd_recv r;

	ep_add(ep, a, EPOLLIN, 0xabcdef0123456789ULL);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
	ASSERT_EQ(b1_send_one(b, h, "1", 1), 0);
	ASSERT_EQ(b1_send_one(b, h, "2", 1), 0);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
		ASSERT_EQ(e.events, EPOLLIN);
		ASSERT_EQ_U64(e.data.u64, 0xabcdef0123456789ULL);
	}
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
}

/*
 * Edge-triggered: one report per message or notification queued, even
 * while earlier ones are still queued; nothing between them. EPOLLOUT
 * asked for too comes with each edge (the module re-polls on wake-up).
 */
TEST(ep_edge_per_message)
{
	int a = b1_open(), b = b1_open(), ep = ep_new();
	uint64_t h = b1_share(a, 0x100, b);
	uint64_t h2 = b1_share(a, 0x200, b);
	struct epoll_event e;

	ep_add(ep, a, EPOLLIN | EPOLLET, 7);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
	ASSERT_EQ(b1_send_one(b, h, "1", 1), 0);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
	ASSERT_EQ(e.events, EPOLLIN);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
	ASSERT_EQ(b1_send_one(b, h, "2", 1), 0);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
	ASSERT_EQ(b1_release(b, h2), 0);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
	ASSERT_EQ(e.data.u64, 7);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
	/* EPOLLIN|EPOLLOUT edge-triggered: POLLOUT holds, and each wake-up reports both */
	e = (struct epoll_event){ .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = 8 };
	ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_MOD, a, &e));
	ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
	ASSERT_EQ(e.events, EPOLLIN | EPOLLOUT);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
	ASSERT_EQ(b1_send_one(b, h, "3", 1), 0);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
	ASSERT_EQ(e.events, EPOLLIN | EPOLLOUT);
	ASSERT_EQ_U64(e.data.u64, 8);
}

/*
 * A multicast is one message to each receiver: one edge each, although
 * it reaches the queues in two steps (staged, then committed).
 */
TEST(ep_edge_per_multicast_message)
{
	int a = b1_open(), c = b1_open(), b = b1_open(), ep = ep_new(), ep2 = ep_new();
	uint64_t dests[2] = { b1_share(a, 0x100, b), b1_share(c, 0x100, b) };
	struct iovec v = { .iov_base = "m", .iov_len = 1 };
	struct epoll_event e;

	ep_add(ep, a, EPOLLIN | EPOLLET, 1);
	ep_add(ep2, c, EPOLLIN | EPOLLET, 2);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(b1_send(b, 0, dests, 2, NULL, &v, 1, NULL, 0, NULL, 0), 0);
		ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
		ASSERT_EQ_U64(e.data.u64, 1);
		ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
		ASSERT_EQ(ep_wait1(ep2, &e, 0), 1);
		ASSERT_EQ_U64(e.data.u64, 2);
		ASSERT_EQ(ep_wait1(ep2, &e, 0), 0);
	}
}

/* One-shot: one report, then nothing until EPOLL_CTL_MOD re-arms it. */
TEST(ep_oneshot_rearmed_by_mod)
{
	int a = b1_open(), b = b1_open(), ep = ep_new();
	uint64_t h = b1_share(a, 0x100, b);
	struct epoll_event e;

	ep_add(ep, a, EPOLLIN | EPOLLONESHOT, 1);
	ASSERT_EQ(b1_send_one(b, h, "1", 1), 0);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
	ASSERT_EQ(b1_send_one(b, h, "2", 1), 0);
	ASSERT_EQ(ep_wait1(ep, &e, 50), 0);
	e = (struct epoll_event){ .events = EPOLLIN | EPOLLONESHOT, .data.u64 = 2 };
	ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_MOD, a, &e));
	ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
	ASSERT_EQ_U64(e.data.u64, 2);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
}

/* EPOLLEXCLUSIVE is accepted (and refused with EPOLLONESHOT, or on MOD, as by the kernel) */
TEST(ep_exclusive_accepted)
{
	int a = b1_open(), b = b1_open(), ep = ep_new(), ep2 = ep_new();
	uint64_t h = b1_share(a, 0x100, b);
	struct epoll_event e = { .events = EPOLLIN | EPOLLONESHOT | EPOLLEXCLUSIVE };

	ASSERT_ERRNO(epoll_ctl(ep2, EPOLL_CTL_ADD, a, &e), EINVAL);
	ep_add(ep, a, EPOLLIN | EPOLLEXCLUSIVE, 3);
	e = (struct epoll_event){ .events = EPOLLIN | EPOLLEXCLUSIVE };
	ASSERT_ERRNO(epoll_ctl(ep, EPOLL_CTL_MOD, a, &e), EINVAL);
	ASSERT_EQ(b1_send_one(b, h, "1", 1), 0);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
	ASSERT_EQ(e.events, EPOLLIN);
	ASSERT_EQ_U64(e.data.u64, 3);
}

/* ADD twice → EEXIST; MOD/DEL of an fd not in the set → ENOENT; DEL removes */
TEST(ep_ctl_errors_and_del)
{
	int a = b1_open(), b = b1_open(), ep = ep_new();
	uint64_t h = b1_share(a, 0x100, b);
	struct epoll_event e = { .events = EPOLLIN };

	ASSERT_ERRNO(epoll_ctl(ep, EPOLL_CTL_MOD, a, &e), ENOENT);
	ASSERT_ERRNO(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL), ENOENT);
	ep_add(ep, a, EPOLLIN, 1);
	ASSERT_ERRNO(epoll_ctl(ep, EPOLL_CTL_ADD, a, &e), EEXIST);
	ASSERT_EQ(b1_send_one(b, h, "1", 1), 0);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
	ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL));
	ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
	ASSERT_ERRNO(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL), ENOENT);
	/* and may be added again */
	ep_add(ep, a, EPOLLIN, 2);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
	ASSERT_EQ_U64(e.data.u64, 2);
}

/*
 * Closing a dup of the peer fd keeps the item (the open file description
 * lives on); closing the last fd removes it, and the set reports nothing.
 */
TEST(ep_close_of_the_peer_fd)
{
	int a = b1_open(), b = b1_open(), ep = ep_new(), d;
	uint64_t h = b1_share(a, 0x100, b);
	struct epoll_event e;

	d = dup(a);
	ASSERT_GE(d, 0);
	ep_add(ep, a, EPOLLIN, 5);
	ASSERT_OK(close(a));
	ASSERT_EQ(b1_send_one(b, h, "1", 1), 0);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
	ASSERT_EQ_U64(e.data.u64, 5);
	ASSERT_OK(close(d));
	ASSERT_EQ(ep_wait1(ep, &e, 100), 0);
}

/* Many sets, made and closed, each holding the peer: no leak stops the next. */
TEST(ep_many_sets_made_and_closed)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(b, h, "1", 1), 0);
	for (int i = 0; i < 6000; i++) {
		int ep = ep_new();
		struct epoll_event e;

		ep_add(ep, a, EPOLLIN | EPOLLET, i);
		ASSERT_EQ(ep_wait1(ep, &e, 0), 1);
		ASSERT_EQ_U64(e.data.u64, i);
		ASSERT_OK(close(ep));
	}
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
}

/*
 * A new set holding peer fd `a` (data 1) and the read end of new pipe `p`
 * (data 2); a child forked then waits for a byte on `go`, then 30 ms, and
 * writes to the pipe. Returns the set; *pid is the child.
 */
static int ep_peer_and_pipe_writer(int a, int p[2], int go[2], pid_t *pid)
{
	int ep = ep_new();
	char c;

	mp_pipe(p);
	mp_pipe(go);
	ep_add(ep, a, EPOLLIN, 1);
	ep_add(ep, p[0], EPOLLIN, 2);
	*pid = mp_fork();
	if (*pid == 0) {
		mp_get(go[0], &c, 1);
		mp_sleep_ms(30);
		mp_put(p[1], "p", 1);
	}
	return ep;
}

/* A set holding a peer fd and a pipe: either wakes it, each with its data. */
TEST(ep_mixed_with_a_pipe)
{
	int a = b1_open(), b = b1_open(), p[2], go[2], ep;
	uint64_t h = mp_node(a, 0x100, b);
	struct epoll_event e[2];
	struct bus1_cmd_recv r;
	char c;
	pid_t pid;

	ep = ep_peer_and_pipe_writer(a, p, go, &pid);
	if (pid == 0) {
		mp_get(go[0], &c, 1);
		mp_sleep_ms(30);
		ASSERT_EQ(b1_send_one(b, h, "m", 1), 0);
		_exit(0);
	}
	mp_put(go[1], "g", 1);
	ASSERT_EQ(MP_WOKEN(epoll_wait(ep, e, 2, MP_WAIT_MS)), 1);
	ASSERT_EQ_U64(e[0].data.u64, 2);
	mp_get(p[0], &c, 1);
	mp_put(go[1], "g", 1);
	ASSERT_EQ(MP_WOKEN(epoll_wait(ep, e, 2, MP_WAIT_MS)), 1);
	ASSERT_EQ_U64(e[0].data.u64, 1);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	mp_reap(pid);
}

/*
 * A wait that spins on a set holding a peer still sees its other fds: a
 * pipe written 30 ms into a one-second spin ends the wait then, with the
 * pipe's data, not when the spin is over.
 */
TEST(ep_spin_sees_the_other_fds_of_its_set)
{
	int a = b1_open(), p[2], go[2], ep;
	struct epoll_event e[2];
	double t0, took;
	char c;
	pid_t pid;

	ASSERT_OK(setenv("BUS1_SPIN_US", "1000000", 1));
	ep = ep_peer_and_pipe_writer(a, p, go, &pid);
	if (pid == 0)
		_exit(0);
	mp_put(go[1], "g", 1);
	t0 = mp_now_ms();
	ASSERT_EQ(epoll_wait(ep, e, 2, MP_WAIT_MS), 1);
	took = mp_now_ms() - t0;
	ASSERT_EQ_U64(e[0].data.u64, 2);
	mp_get(p[0], &c, 1);
	/* the spin (1 s) did not run its course first */
	ASSERT_LT(took, 500);
	mp_reap(pid);
}

/*
 * A forked child shares the set: an edge is reported to one of the two
 * processes only; a level-triggered item to both.
 */
TEST(ep_shared_by_fork)
{
	int a = b1_open(), b = b1_open(), et = ep_new(), lt = ep_new(), go[2], done[2];
	uint64_t h = mp_node(a, 0x100, b);
	struct epoll_event e;
	char c;
	pid_t pid;

	ep_add(et, a, EPOLLIN | EPOLLET, 1);
	ep_add(lt, a, EPOLLIN, 2);
	mp_pipe(go);
	mp_pipe(done);
	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(MP_WOKEN(ep_wait1(et, &e, MP_WAIT_MS)), 1);
		ASSERT_EQ_U64(e.data.u64, 1);
		ASSERT_EQ(ep_wait1(lt, &e, 0), 1);
		mp_put(done[1], "d", 1);
		_exit(0);
	}
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	mp_get(done[0], &c, 1);
	mp_reap(pid);
	/* the child took the edge; the level is still there */
	ASSERT_EQ(ep_wait1(et, &e, 0), 0);
	ASSERT_EQ(ep_wait1(lt, &e, 0), 1);
	ASSERT_EQ_U64(e.data.u64, 2);
}

/* Exec'd entry: waits (5 s at most) on the set at argv[0], expects data argv[1]. */
T_CHILD(ep_wait_inherited)
{
	int ep = mp_arg(argv[0]);
	uint64_t want = mp_arg_u64(argv[1]);
	struct epoll_event e;

	ASSERT_EQ(argc, 2);
	ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
	printf("ready\n");
	fflush(stdout);
	ASSERT_EQ(MP_WOKEN(ep_wait1(ep, &e, MP_WAIT_MS)), 1);
	ASSERT_EQ(e.events, EPOLLIN);
	ASSERT_EQ_U64(e.data.u64, want);
	return 0;
}

/*
 * A set inherited across exec (no close-on-exec): the new image, which
 * never saw the set built, waits on it and is woken by a message with the
 * registered data.
 */
TEST(ep_inherited_across_exec)
{
	int a = b1_open(), b = b1_open(), ep = epoll_create(1), out[2];
	uint64_t h = mp_node(a, 0x100, b);
	char line[16];
	pid_t pid;

	ASSERT_GE(ep, 0);
	ep_add(ep, a, EPOLLIN, 0x1234);
	mp_pipe(out);
	pid = mp_fork();
	if (pid == 0) {
		dup2(out[1], 1);
		execl(t_self_exe(), t_self_exe(), "--child", "ep_wait_inherited", mp_str(ep), mp_str(0x1234), (char *)NULL);
		_exit(127);
	}
	mp_get(out[0], line, 6);
	mp_sleep_ms(30);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	mp_reap(pid);
}

/* Exec'd entry: receives a set over socket argv[0], then as ep_wait_inherited. */
T_CHILD(ep_wait_received)
{
	int sock = mp_arg(argv[0]);
	int ep = mp_recv_fd(sock);
	struct epoll_event e;

	ASSERT_EQ(ep_wait1(ep, &e, 0), 0);
	mp_put(sock, "r", 1);
	ASSERT_EQ(MP_WOKEN(ep_wait1(ep, &e, MP_WAIT_MS)), 1);
	ASSERT_EQ(e.events, EPOLLIN);
	ASSERT_EQ_U64(e.data.u64, 0x4321);
	mp_put(sock, "d", 1);
	return 0;
}

/*
 * A set received over SCM_RIGHTS by a process that holds no peer fd; the
 * sender closes its own copy of the set (which must not end the items).
 */
TEST(ep_received_over_scm_rights)
{
	int a = b1_open(), b = b1_open(), ep = ep_new(), sv[2];
	uint64_t h = mp_node(a, 0x100, b);
	char c;
	pid_t pid;

	ep_add(ep, a, EPOLLIN, 0x4321);
	mp_socketpair(sv);
	pid = mp_spawn("ep_wait_received", mp_str(sv[1]), (char *)NULL);
	mp_send_fd(sv[0], ep);
	ASSERT_OK(close(ep));
	mp_get(sv[0], &c, 1);
	mp_sleep_ms(30);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	mp_get(sv[0], &c, 1);
	mp_reap(pid);
}

/*
 * A set holding a peer fd inside another set, and in a poll set: both
 * report it ready while a message is queued, block while not, and are
 * woken by a message from another process.
 */
TEST(ep_inside_epoll_and_poll)
{
	int a = b1_open(), b = b1_open(), inner = ep_new(), outer = ep_new(), go[2];
	uint64_t h = mp_node(a, 0x100, b);
	struct epoll_event e;
	struct pollfd p = { .fd = inner, .events = POLLIN };
	struct bus1_cmd_recv r;
	pid_t pid;

	mp_pipe(go);
	ep_add(inner, a, EPOLLIN, 1);
	ep_add(outer, inner, EPOLLIN, 99);
	ASSERT_EQ(ep_wait1(outer, &e, 0), 0);
	ASSERT_EQ(poll(&p, 1, 0), 0);
	for (int round = 0; round < 2; round++) {
		pid = MP_DELAYED_CHILD(go[0], 30, ASSERT_EQ(b1_send_one(b, h, "x", 1), 0));
		mp_put(go[1], "g", 1);
		if (round == 0) {
			ASSERT_EQ(MP_WOKEN(ep_wait1(outer, &e, MP_WAIT_MS)), 1);
			ASSERT_EQ_U64(e.data.u64, 99);
			ASSERT_EQ(poll(&p, 1, 0), 1);
		} else {
			ASSERT_EQ(MP_WOKEN(poll(&p, 1, MP_WAIT_MS)), 1);
			ASSERT_EQ(p.revents, POLLIN);
			ASSERT_EQ(ep_wait1(outer, &e, 0), 1);
		}
		ASSERT_EQ(ep_wait1(inner, &e, 0), 1);
		ASSERT_EQ_U64(e.data.u64, 1);
		mp_reap(pid);
		ASSERT_EQ(b1_recv(a, &r, 0), 0);
		ASSERT_EQ(ep_wait1(outer, &e, 0), 0);
		ASSERT_EQ(poll(&p, 1, 0), 0);
	}
}

/*
 * Edge-triggered waiters in several processes sharing one set and one
 * peer, with senders in several processes: every message is received
 * exactly once and no waiter sleeps through a queued message.
 */
TEST_TIMEOUT(ep_shared_set_stress, 60)
{
	enum { WAITERS = 3, SENDERS = 2, EACH = 3000 };
	int a = b1_open(), b = b1_open(), ep = ep_new();
	uint64_t h = mp_node(a, 0x100, b);
	unsigned *got = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pids[WAITERS + SENDERS];

	ASSERT_TRUE(got != MAP_FAILED);
	ep_add(ep, a, EPOLLIN | EPOLLET, 1);
	for (int i = 0; i < WAITERS; i++) {
		pids[i] = mp_fork();
		if (pids[i] == 0) {
			double end = mp_now_ms() + 40000;

			while (__atomic_load_n(got, __ATOMIC_SEQ_CST) < SENDERS * EACH) {
				struct bus1_cmd_recv r;
				struct epoll_event e;
				int ret = b1_recv(a, &r, 0);

				if (ret == 0) {
					__atomic_add_fetch(got, 1, __ATOMIC_SEQ_CST);
					ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
					continue;
				}
				ASSERT_EQ(ret, -EAGAIN);
				ASSERT_LT(mp_now_ms(), end);
				/* the others may take our edge's message: short waits */
				epoll_wait(ep, &e, 1, 50);
			}
			_exit(0);
		}
	}
	for (int s = 0; s < SENDERS; s++) {
		pids[WAITERS + s] = mp_fork();
		if (pids[WAITERS + s] == 0) {
			for (unsigned q = 0; q < EACH; q++) {
				int r;

				while ((r = b1_send_one(b, h, &q, sizeof(q))) == -EDQUOT)
					mp_sleep_ms(1);
				ASSERT_EQ(r, 0);
				if (q % 50 == 0)
					mp_sleep_ms(1);
			}
			_exit(0);
		}
	}
	for (int i = 0; i < WAITERS + SENDERS; i++)
		mp_reap(pids[i]);
	ASSERT_EQ(*got, SENDERS * EACH);
	b1_expect_empty(a);
}
