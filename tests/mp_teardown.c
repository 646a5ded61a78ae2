/* SPDX-License-Identifier: MIT */
/*
 * Teardown across processes (§8.5, §8.6, §3.8): when the last fd of a peer
 * goes away — closed by a forked child, by an exec'd program, by whoever
 * received it over SCM_RIGHTS, or by the exit of the process holding it —
 * the peer is shut down exactly as by the module: its nodes are destroyed
 * and every holder, in every process, is told with its own handle ID; its
 * handles are released (owners get NODE_RELEASE); its queue and pool go
 * away and its quota is refunded; what it already sent stays queued.
 */
#include <pthread.h>

#include "mp-util.h"

/* Generous bound for asynchronous teardown (the bus promises ~1 s). */
#define TD_WAIT_MS 3000

/* Drops every descriptor of the list except `keep` (in a forked child). */
static void td_close_all_but(const int *fds, int n, int keep)
{
	for (int i = 0; i < n; i++)
		if (fds[i] != keep)
			close(fds[i]);
}

/*
 * Receives the NODE_DESTROY entries of one destruction transaction for the
 * handle IDs in `ids` (any order) and checks CONTINUE links all but the
 * last one (§4.8).
 */
static void td_expect_destroys(int fd, const uint64_t *ids, int n)
{
	int seen[16] = { 0 };

	for (int i = 0; i < n; i++) {
		struct bus1_cmd_recv r;
		int k;

		ASSERT_EQ(mp_recv_wait(fd, &r, 0, TD_WAIT_MS), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
		ASSERT_EQ_U64(r.msg.offset, BUS1_OFFSET_INVALID);
		ASSERT_EQ(r.msg.uid, 0xffffffffu);
		ASSERT_EQ(r.msg.pid, 0);
		for (k = 0; k < n; k++)
			if (ids[k] == r.msg.destination && !seen[k])
				break;
		if (k == n)
			t_fail(__FILE__, __LINE__, "NODE_DESTROY for unexpected ID 0x%llx",
			       (unsigned long long)r.msg.destination);
		seen[k] = 1;
		ASSERT_EQ(r.msg.flags, i + 1 < n ? BUS1_MSG_FLAG_CONTINUE : 0);
	}
}

/* §8.6: after the owner is gone: SEND → ESHUTDOWN, TRANSFER → INVALID, RELEASE ok */
static void td_expect_dead_handle(int fd, uint64_t id)
{
	uint64_t dst = 0;

	ASSERT_EQ(b1_send_one(fd, id, "late", 4), -ESHUTDOWN);
	ASSERT_EQ(b1_transfer(fd, id, -1, &dst), 0);
	ASSERT_EQ_U64(dst, BUS1_HANDLE_INVALID);
}

/* §8.5/§8.6/§4.8: last close by a forked child (not the opener) destroys both nodes in one transaction */
TEST(td_last_close_in_forked_child)
{
	int o = b1_open(), h = b1_open();
	uint64_t id1, id2, ids[2];
	int go[2];
	struct bus1_cmd_recv r;
	pid_t pid;

	ASSERT_EQ(b1_transfer(o, 0x500, h, &id1), 0);
	ASSERT_EQ(b1_transfer(o, 0x100, h, &id2), 0);
	ASSERT_EQ_U64(id1, 0xb);
	ASSERT_EQ_U64(id2, 0x13);
	ASSERT_OK(pipe(go));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		char c;

		close(h);
		close(go[1]);
		mp_read_full(go[0], &c, 1);
		ASSERT_OK(close(o));
		_exit(0);
	}
	close(go[0]);
	ASSERT_OK(close(o));
	/* the child still holds the open file: the peer lives on (§8.5) */
	ASSERT_EQ(mp_poll_wait(h, POLLIN, 300), 0);
	ASSERT_EQ(b1_send_one(h, id2, "x", 1), 0);
	mp_put(go[1], "g", 1);
	mp_reap(pid);
	ids[0] = id1;
	ids[1] = id2;
	td_expect_destroys(h, ids, 2);
	td_expect_dead_handle(h, id2);
	/* holders may still release; no notification of any kind follows */
	ASSERT_EQ(b1_release(h, id1), 0);
	ASSERT_EQ(b1_release(h, id2), 0);
	ASSERT_EQ(b1_release(h, id2), -ENXIO);
	mp_sleep_ms(200);
	ASSERT_EQ(b1_recv(h, &r, 0), -EAGAIN);
}

/* Runs in an exec'd process: RECV on an inherited peer fd, then close it. */
T_CHILD(td_exec_owner)
{
	int fd = atoi(argv[0]);
	struct bus1_cmd_recv r;
	const uint8_t *pool;

	ASSERT_EQ(argc, 1);
	pool = b1_map(fd);
	ASSERT_EQ(mp_recv_wait(fd, &r, 0, TD_WAIT_MS), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_EQ(r.msg.pid, getppid());
	ASSERT_EQ(r.msg.n_bytes, 5);
	ASSERT_MEMEQ(pool + r.msg.offset, "hello", 5);
	ASSERT_OK(close(fd));
	/* §5.4: the mapping outlives the peer and keeps showing the data */
	ASSERT_MEMEQ(pool + r.msg.offset, "hello", 5);
	return 0;
}

/* §8.5/§1.1: an fd inherited across exec is the same peer; its close there tears it down */
TEST(td_last_close_after_exec)
{
	int o = b1_open(), h = b1_open();
	uint64_t id;
	char a[16];
	pid_t pid;

	ASSERT_EQ(b1_transfer(o, 0x100, h, &id), 0);
	ASSERT_EQ(b1_send_one(h, id, "hello", 5), 0);
	mp_keep_fd(o);
	snprintf(a, sizeof(a), "%d", o);
	pid = mp_spawn("td_exec_owner", a, NULL);
	ASSERT_OK(close(o));
	mp_reap(pid);
	td_expect_destroys(h, &id, 1);
	td_expect_dead_handle(h, id);
}

/* Waits for stdin, then receives a peer fd over a socket, uses it, closes it. */
T_CHILD(td_scm_owner)
{
	int sock = atoi(argv[0]);
	struct bus1_cmd_peer_reset q;
	char c;
	int fd;

	ASSERT_EQ(argc, 1);
	mp_read_full(0, &c, 1);
	fd = mp_recv_fd(sock);
	ASSERT_EQ(b1_query(fd, &q), 0);
	ASSERT_EQ(q.max_slices, 16384);
	ASSERT_OK(close(fd));
	mp_put(sock, "c", 1);
	return 0;
}

/* §8.5: an fd in flight over SCM_RIGHTS keeps the peer; its last close by the receiver tears it down */
TEST(td_last_close_via_scm_rights)
{
	int o = b1_open(), h = b1_open();
	int sv[2], in[2];
	uint64_t id;
	char a[16], c;
	pid_t pid;

	ASSERT_EQ(b1_transfer(o, 0x100, h, &id), 0);
	ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	ASSERT_OK(pipe(in));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		dup2(in[0], 0);
		mp_keep_fd(sv[1]);
		snprintf(a, sizeof(a), "%d", sv[1]);
		execl(t_self_exe(), t_self_exe(), "--child", "td_scm_owner", a, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(sv[1]);
	mp_send_fd(sv[0], o);
	ASSERT_OK(close(o));
	/* only the in-flight copy is left, and it counts */
	ASSERT_EQ(mp_poll_wait(h, POLLIN, 400), 0);
	ASSERT_EQ(b1_send_one(h, id, "x", 1), 0);
	mp_put(in[1], "g", 1);
	mp_read_full(sv[0], &c, 1);
	mp_reap(pid);
	td_expect_destroys(h, &id, 1);
	td_expect_dead_handle(h, id);
}

/*
 * §8.6/§3.8: holders in four processes each get NODE_DESTROY with their own
 * handle IDs; when the holders exit in turn, the owner of the nodes they
 * held gets one NODE_RELEASE per node (§3.7).
 */
TEST(td_holders_in_many_processes_get_own_ids)
{
	enum { NH = 4 };
	int o = b1_open(), d = b1_open();
	int h[NH], all[NH + 2], ready[2], go[2];
	uint64_t ids[NH][2];
	uint64_t rel_nodes[16];
	int n_rel = 0, seen[16] = { 0 };
	pid_t pid[NH];
	char c;

	for (int i = 0; i < NH; i++) {
		uint64_t x;

		h[i] = b1_open();
		/* holder i first learns i other nodes, so the IDs differ */
		for (int j = 0; j < i; j++) {
			uint64_t node = 0x1000 + 0x100 * i + 0x10 * j;

			ASSERT_EQ(b1_transfer(d, node, h[i], &x), 0);
			ASSERT_EQ_U64(x, ((uint64_t)(j + 1) << 3) | 3);
			rel_nodes[n_rel++] = node;
		}
		ASSERT_EQ(b1_transfer(o, 0x100, h[i], &ids[i][0]), 0);
		ASSERT_EQ(b1_transfer(o, 0x200, h[i], &ids[i][1]), 0);
		ASSERT_EQ_U64(ids[i][0], ((uint64_t)(i + 1) << 3) | 3);
		ASSERT_EQ_U64(ids[i][1], ((uint64_t)(i + 2) << 3) | 3);
		all[i] = h[i];
	}
	all[NH] = o;
	all[NH + 1] = d;
	ASSERT_OK(pipe(ready));
	ASSERT_OK(pipe(go));
	for (int i = 0; i < NH; i++) {
		pid[i] = fork();
		ASSERT_GE(pid[i], 0);
		if (pid[i] == 0) {
			struct bus1_cmd_recv r;

			td_close_all_but(all, NH + 2, h[i]);
			close(ready[0]);
			close(go[1]);
			mp_put(ready[1], "r", 1);
			/* blocked in poll until the owner is gone */
			ASSERT_TRUE(mp_poll_wait(h[i], POLLIN, 10000) & POLLIN);
			td_expect_destroys(h[i], ids[i], 2);
			ASSERT_EQ(b1_recv(h[i], &r, 0), -EAGAIN);
			td_expect_dead_handle(h[i], ids[i][0]);
			td_expect_dead_handle(h[i], ids[i][1]);
			/* wait for the parent's word, then exit without closing */
			mp_read_full(go[0], &c, 1);
			_exit(0);
		}
	}
	close(ready[1]);
	close(go[0]);
	for (int i = 0; i < NH; i++) {
		mp_read_full(ready[0], &c, 1);
		close(h[i]);
	}
	ASSERT_OK(close(o));
	/* all holders stay alive until told: d hears nothing yet */
	mp_sleep_ms(300);
	ASSERT_EQ(b1_revents(d, POLLIN) & POLLIN, 0);
	for (int i = 0; i < NH; i++)
		mp_put(go[1], "x", 1);
	for (int i = 0; i < NH; i++)
		mp_reap(pid[i]);
	/* §8.6: their handles are released; d's nodes each lose their last holder */
	for (int i = 0; i < n_rel; i++) {
		struct bus1_cmd_recv r;
		int k;

		ASSERT_EQ(mp_recv_wait(d, &r, 0, TD_WAIT_MS), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_RELEASE);
		for (k = 0; k < n_rel; k++)
			if (rel_nodes[k] == r.msg.destination && !seen[k])
				break;
		ASSERT_LT(k, n_rel);
		seen[k] = 1;
	}
	{
		struct bus1_cmd_recv r;

		mp_sleep_ms(200);
		ASSERT_EQ(b1_recv(d, &r, 0), -EAGAIN);
	}
}

/* Holds an inherited peer until stdin says go, then exits without closing it. */
T_CHILD(td_hold_until_told)
{
	char c;

	(void)argc;
	(void)argv;
	mp_read_full(0, &c, 1);
	return 0;
}

/* §8.6/§3.7: handles a departed peer held are released: NODE_RELEASE only where the strong count hits 0 */
TEST(td_release_to_owners_of_held_nodes)
{
	int y = b1_open(), x = b1_open(), z = b1_open();
	uint64_t xa, xb, zb;
	int in[2];
	struct bus1_cmd_recv r;
	pid_t pid;

	ASSERT_EQ(b1_transfer(y, 0x100, x, &xa), 0);
	ASSERT_EQ(b1_transfer(y, 0x200, x, &xb), 0);
	ASSERT_EQ(b1_transfer(y, 0x200, z, &zb), 0);
	ASSERT_OK(pipe(in));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		dup2(in[0], 0);
		mp_keep_fd(x);
		close(in[1]);
		execl(t_self_exe(), t_self_exe(), "--child", "td_hold_until_told", (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	ASSERT_OK(close(x));
	ASSERT_EQ(mp_poll_wait(y, POLLIN, 300), 0);
	mp_put(in[1], "q", 1);
	mp_reap(pid);
	/* the exit closed the last fd: x is reaped without anyone closing it */
	MP_EXPECT_NOTE(y, BUS1_MSG_NODE_RELEASE, 0x100, TD_WAIT_MS);
	mp_sleep_ms(200);
	ASSERT_EQ(b1_recv(y, &r, 0), -EAGAIN);
	/* 0x200 is still held by z; its release is due only now */
	ASSERT_EQ(b1_release(z, zb), 0);
	MP_EXPECT_NOTE(y, BUS1_MSG_NODE_RELEASE, 0x200, TD_WAIT_MS);
	ASSERT_EQ(b1_recv(y, &r, 0), -EAGAIN);
	(void)xa;
	(void)xb;
}

/* Sends three messages carrying its own node, then exits without closing. */
T_CHILD(td_send_and_die)
{
	int fd = atoi(argv[0]);
	uint64_t dest = mp_arg_u64(argv[1]);
	uint64_t node = 0x40;

	ASSERT_EQ(argc, 2);
	for (int i = 0; i < 3; i++) {
		char buf[32];
		int n = snprintf(buf, sizeof(buf), "message-%d", i);
		struct iovec v = { buf, (size_t)n };

		ASSERT_EQ(b1_send(fd, 0, &dest, 1, NULL, &v, 1, &node, 1, NULL, 0), 0);
	}
	return 0;
}

/*
 * §8.6: messages of a departed sender stay queued and are delivered with its
 * credentials; handles they carry to its nodes are valid at RECV (ordered
 * before the destruction), and the NODE_DESTROY for them comes after.
 */
TEST(td_sent_messages_survive_sender)
{
	int r = b1_open(), s = b1_open();
	const uint8_t *pool = b1_map(r);
	uint64_t id, hid = 0;
	char a1[16], a2[32];
	pid_t pid;

	ASSERT_EQ(b1_transfer(r, 0x100, s, &id), 0);
	mp_keep_fd(s);
	snprintf(a1, sizeof(a1), "%d", s);
	pid = mp_spawn("td_send_and_die", a1, mp_fmt(a2, id), NULL);
	ASSERT_OK(close(s));
	mp_reap(pid);
	/* give the bus time to notice the dead sender before reading */
	mp_sleep_ms(500);
	for (int i = 0; i < 3; i++) {
		struct bus1_cmd_recv m;
		char want[32];
		int n = snprintf(want, sizeof(want), "message-%d", i);
		uint64_t got;

		ASSERT_EQ(mp_recv_wait(r, &m, 0, TD_WAIT_MS), 0);
		ASSERT_EQ(m.msg.type, BUS1_MSG_DATA);
		ASSERT_EQ_U64(m.msg.destination, 0x100);
		ASSERT_EQ(m.msg.pid, pid);
		ASSERT_EQ(m.msg.uid, getuid());
		ASSERT_EQ(m.msg.n_bytes, n);
		ASSERT_MEMEQ(pool + m.msg.offset, want, n);
		ASSERT_EQ(m.msg.n_handles, 1);
		memcpy(&got, pool + m.msg.offset + ((n + 7) & ~7), 8);
		/* valid: the first remote handle r learns about (§3.3) */
		ASSERT_EQ_U64(got, 0xb);
		hid = got;
		ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	}
	MP_EXPECT_NOTE(r, BUS1_MSG_NODE_DESTROY, hid, TD_WAIT_MS);
	td_expect_dead_handle(r, hid);
	/* three user references, one per received entry */
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(b1_release(r, hid), 0);
	ASSERT_EQ(b1_release(r, hid), -ENXIO);
}

/* Floods dest from fd until EDQUOT; returns the number accepted. */
static int td_flood(int fd, uint64_t dest)
{
	int n = 0, ret;

	while ((ret = b1_send_one(fd, dest, "0123456789abcdef", 16)) == 0)
		n++;
	ASSERT_EQ(ret, -EDQUOT);
	return n;
}

/*
 * §8.6/§6.2/A.3: a departed receiver's queue, pool and quota charges go away:
 * its files leave the domain directory and the user's slice budget is whole
 * again (fair share of one user on itself: 16384 slices → 8192 messages).
 */
TEST(td_queue_pool_quota_freed)
{
	int s = b1_open(), x, y;
	char before[4096], during[4096];
	uint64_t idx, idy;
	int go[2];
	pid_t pid;

	mp_domain_files(before, sizeof(before), NULL);
	x = b1_open();
	ASSERT_EQ(b1_transfer(x, 0x100, s, &idx), 0);
	mp_domain_files(during, sizeof(during), NULL);
	ASSERT_NE(strcmp(before, during), 0);
	ASSERT_OK(pipe(go));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		char c;

		close(s);
		close(go[1]);
		mp_read_full(go[0], &c, 1);
		_exit(0);
	}
	close(go[0]);
	close(x);
	/* A.3: R ≥ s + 2c on the receiving user: exactly 8192 slices */
	ASSERT_EQ(td_flood(s, idx), 8192);
	mp_put(go[1], "q", 1);
	mp_reap(pid);
	mp_expect_domain_files(before, TD_WAIT_MS);
	MP_EXPECT_NOTE(s, BUS1_MSG_NODE_DESTROY, idx, TD_WAIT_MS);
	/* the 8192 queued slices were refunded to the user */
	y = b1_open();
	ASSERT_EQ(b1_transfer(y, 0x100, s, &idy), 0);
	ASSERT_EQ(td_flood(s, idy), 8192);
}

/*
 * §8.6/§3.7: a message queued at a peer that departs unread is discarded
 * with it; the node it carried loses its last strong reference, so the
 * owner gets NODE_RELEASE — after the NODE_DESTROY of the departed node.
 */
TEST(td_unread_message_releases_carried_node)
{
	int y = b1_open(), x = b1_open();
	uint64_t idx, node = 0x300;
	struct iovec v = { (void *)"carry", 5 };
	struct bus1_cmd_recv r;
	int go[2];
	pid_t pid;

	ASSERT_EQ(b1_transfer(x, 0x100, y, &idx), 0);
	ASSERT_EQ(b1_send(y, 0, &idx, 1, NULL, &v, 1, &node, 1, NULL, 0), 0);
	ASSERT_OK(pipe(go));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		char c;

		close(y);
		close(go[1]);
		mp_read_full(go[0], &c, 1);
		_exit(0);
	}
	close(go[0]);
	close(x);
	/* the queued message keeps 0x300 strong: no release yet */
	ASSERT_EQ(mp_poll_wait(y, POLLIN, 300), 0);
	mp_put(go[1], "q", 1);
	mp_reap(pid);
	MP_EXPECT_NOTE(y, BUS1_MSG_NODE_DESTROY, idx, TD_WAIT_MS);
	MP_EXPECT_NOTE(y, BUS1_MSG_NODE_RELEASE, node, TD_WAIT_MS);
	ASSERT_EQ(b1_recv(y, &r, 0), -EAGAIN);
	/* the node itself is alive and still the caller's */
	ASSERT_EQ(b1_release(y, node), -EBUSY);
}

/* Disconnects an inherited peer fd and keeps it open until stdin says go. */
T_CHILD(td_disconnect_other)
{
	int fd = atoi(argv[0]);
	char c;

	ASSERT_EQ(argc, 1);
	ASSERT_EQ(b1_disconnect(fd), 0);
	ASSERT_EQ(b1_disconnect(fd), -ESHUTDOWN);
	ASSERT_HUP(b1_revents(fd, POLLIN | POLLOUT));
	mp_put(1, "d", 1);
	mp_read_full(0, &c, 1);
	return 0;
}

/* §2.1/§8.3: DISCONNECT from another process tears down at once; the opener's fd then sees ESHUTDOWN/POLLHUP */
TEST(td_disconnect_from_other_process)
{
	int o = b1_open(), h = b1_open();
	int in[2], out[2];
	uint64_t id;
	struct bus1_cmd_peer_reset q;
	char c;
	pid_t pid;

	ASSERT_EQ(b1_transfer(o, 0x100, h, &id), 0);
	ASSERT_OK(pipe(in));
	ASSERT_OK(pipe(out));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		char a[16];

		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[1]);
		close(out[0]);
		mp_keep_fd(o);
		snprintf(a, sizeof(a), "%d", o);
		execl(t_self_exe(), t_self_exe(), "--child", "td_disconnect_other", a, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	mp_read_full(out[0], &c, 1);
	/* both processes still have the fd open; the peer is gone anyway */
	MP_EXPECT_NOTE(h, BUS1_MSG_NODE_DESTROY, id, TD_WAIT_MS);
	ASSERT_HUP(b1_revents(o, POLLIN | POLLOUT));
	ASSERT_EQ(b1_query(o, &q), -ESHUTDOWN);
	ASSERT_EQ(b1_send_one(h, id, "x", 1), -ESHUTDOWN);
	mp_put(in[1], "q", 1);
	mp_reap(pid);
	ASSERT_OK(close(o));
}

/* A thread that sleeps until the process ends. */
static void *td_sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

/*
 * Opens its own peer, gives peer argv[0] a handle to its node 0x100 (the
 * ID goes to pipe argv[1]), queues a message to itself, and ends with a
 * normal exit (a return from main) still holding the peer; with argv[2]
 * "thread", another thread is still running then.
 */
T_CHILD(td_exit_holding_peer)
{
	int holder = atoi(argv[0]), out = atoi(argv[1]), x = b1_open();
	uint64_t id;

	ASSERT_EQ(argc, 3);
	ASSERT_EQ(b1_transfer(x, 0x100, holder, &id), 0);
	ASSERT_EQ(b1_send_one(x, 0x100, "unread", 6), 0);
	if (!strcmp(argv[2], "thread")) {
		pthread_t t;

		ASSERT_EQ(pthread_create(&t, NULL, td_sleeper, NULL), 0);
	}
	ASSERT_EQ(write(out, &id, sizeof(id)), (ssize_t)sizeof(id));
	return 0;
}

static uint64_t td_run_exit_holding_peer(int holder, const char *mode)
{
	char a1[16], a2[16];
	uint64_t id;
	int p[2];
	pid_t pid;

	ASSERT_OK(pipe(p));
	mp_keep_fd(holder);
	mp_keep_fd(p[1]);
	snprintf(a1, sizeof(a1), "%d", holder);
	snprintf(a2, sizeof(a2), "%d", p[1]);
	pid = mp_spawn("td_exit_holding_peer", a1, a2, mode, NULL);
	ASSERT_OK(close(p[1]));
	mp_reap(pid);
	ASSERT_EQ(read(p[0], &id, sizeof(id)), (ssize_t)sizeof(id));
	ASSERT_OK(close(p[0]));
	return id;
}

/*
 * §8.5: a process that ends normally (exit, return from main) while
 * holding the last fd of a peer has torn it down by the time its parent
 * sees it gone, as the module did with the process's files: the holder's
 * NODE_DESTROY is already queued and a SEND to the node fails at once,
 * although the dead peer's queue was not empty (nothing had to wake it).
 */
TEST(td_normal_exit_tears_down_at_once)
{
	int h = b1_open();
	uint64_t id = td_run_exit_holding_peer(h, "alone");
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(h, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, id);
	td_expect_dead_handle(h, id);
	ASSERT_EQ(b1_recv(h, &r, 0), -EAGAIN);
}

/*
 * With another thread still running at exit, the peer stays usable until
 * the process is gone (that thread could still be using it) and is torn
 * down after, without any further call here (§8.6).
 */
TEST(td_exit_with_threads_tears_down_after)
{
	int h = b1_open();
	uint64_t id = td_run_exit_holding_peer(h, "thread");

	MP_EXPECT_NOTE(h, BUS1_MSG_NODE_DESTROY, id, TD_WAIT_MS);
	td_expect_dead_handle(h, id);
}

static int td_atexit_fd = -1;
static uint64_t td_atexit_dest;

static void td_send_at_exit(void)
{
	/* runs after the main thread's thread-local destructors */
	if (b1_send_one(td_atexit_fd, td_atexit_dest, "atexit", 6) != 0)
		_exit(5);
}

/* Opens a peer, gets a handle to node 0x100 of argv[0], sends from main and from an atexit handler. */
T_CHILD(td_send_from_atexit)
{
	int holder = atoi(argv[0]);

	ASSERT_EQ(argc, 1);
	td_atexit_fd = b1_open();
	ASSERT_EQ(b1_transfer(holder, 0x100, td_atexit_fd, &td_atexit_dest), 0);
	ASSERT_EQ(b1_send_one(td_atexit_fd, td_atexit_dest, "main", 4), 0);
	ASSERT_OK(atexit(td_send_at_exit));
	return 0;
}

/*
 * A process may still use its peers in atexit handlers (the module's
 * files live until the process is gone); they run after the C library
 * has destroyed the main thread's thread-local storage. Both messages
 * arrive, the process exits with status 0, and its peer is then torn
 * down at once (the holder's node gets NODE_RELEASE).
 */
TEST(td_bus1_calls_in_atexit_handlers)
{
	int h = b1_open();
	const uint8_t *pool = b1_map(h);
	struct bus1_cmd_recv r;
	char a1[16];
	pid_t pid;

	mp_keep_fd(h);
	snprintf(a1, sizeof(a1), "%d", h);
	pid = mp_spawn("td_send_from_atexit", a1, NULL);
	mp_reap(pid);
	ASSERT_EQ(b1_recv(h, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 4);
	ASSERT_MEMEQ(pool + r.msg.offset, "main", 4);
	ASSERT_EQ(b1_recv(h, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 6);
	ASSERT_MEMEQ(pool + r.msg.offset, "atexit", 6);
	ASSERT_EQ(b1_recv(h, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_RELEASE);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_EQ(b1_recv(h, &r, 0), -EAGAIN);
}
