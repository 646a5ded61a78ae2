/* SPDX-License-Identifier: MIT */
/*
 * Quotas across processes (§6, A.3): slices, handles, in-flight bytes and
 * in-flight fds are charged to the receiving peer and its user under the
 * fair-share rule, whichever processes the senders and the receiver live
 * in. A user flooding a receiver that does not read gets EDQUOT while other
 * users still get through; every SEND that was accepted is received intact.
 *
 * Fair share (A.3) for a charge c: allowed iff R ≥ s + 2c on the receiving
 * user and on the receiving peer (R = remaining, s = the sending user's
 * current share). With c = 1 and a peer limit of M, a lone user gets
 * exactly ⌊(M - 2) / 2⌋ + 1 messages into an idle receiver.
 */
#define _GNU_SOURCE
#include "mp-util.h"

#define QT_NODE 0x100

/* PEER_RESET of the four limits (all-ones = unchanged). */
static int qt_limits(int fd, uint32_t slices, uint32_t handles, uint32_t bytes, uint32_t fds)
{
	struct bus1_cmd_peer_reset r = {
		.flags = 0,
		.peer_flags = (uint64_t)-1,
		.max_slices = slices,
		.max_handles = handles,
		.max_inflight_bytes = bytes,
		.max_inflight_fds = fds,
	};

	return b1_ioctl(fd, BUS1_CMD_PEER_RESET, &r);
}

/* Sends checksummed messages (sender tag, seq from 0) until EDQUOT or max. */
static int qt_flood(int s, uint64_t dest, uint32_t tag, int max)
{
	static char buf[MP_MSG_MAX];
	int n = 0, ret = 0;

	while (max < 0 || n < max) {
		struct iovec v = { buf, mp_msg_build(buf, tag, n, 1, 8) };

		ret = b1_send(s, 0, &dest, 1, NULL, &v, 1, NULL, 0, NULL, 0);
		if (ret)
			break;
		n++;
	}
	if (max < 0 || n < max)
		ASSERT_EQ(ret, -EDQUOT);
	return n;
}

/*
 * Forks a sender: it takes real uid `uid` (unless -1), opens its own peer,
 * gets a handle to r's node through r's inherited fd, drops that fd and
 * floods (tag, until EDQUOT or max). Returns the number it got accepted.
 */
static int qt_flood_from_child(int r, int uid, uint32_t tag, int max)
{
	int p[2], n;
	pid_t pid;

	ASSERT_OK(pipe(p));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		uint64_t id;
		int a;

		close(p[0]);
		if (uid >= 0)
			ASSERT_OK(setresuid(uid, -1, -1));
		a = b1_open();
		ASSERT_EQ(b1_transfer(r, QT_NODE, a, &id), 0);
		ASSERT_OK(close(r));
		n = qt_flood(a, id, tag, max);
		mp_put(p[1], &n, sizeof(n));
		_exit(0);
	}
	close(p[1]);
	mp_read_full(p[0], &n, sizeof(n));
	close(p[0]);
	mp_reap(pid);
	return n;
}

/*
 * Drains r: checks every message whole and each tag's sequence gap-free from
 * 0; counts per tag into count[] (tags < 8) and checks the reported uid.
 * Slices are released unless keep_slices (their offsets go to offs[]).
 */
static int qt_drain(int r, const uint8_t *pool, int *count, const uint32_t *uid_of_tag,
		    int keep_slices, uint64_t *offs)
{
	struct bus1_cmd_recv m;
	int n = 0, ret;

	while ((ret = b1_recv(r, &m, 0)) == 0) {
		struct mp_msg_hdr h;

		ASSERT_EQ(m.msg.type, BUS1_MSG_DATA);
		ASSERT_TRUE(mp_msg_check(pool + m.msg.offset, m.msg.n_bytes, &h));
		ASSERT_LT(h.sender, 8);
		ASSERT_EQ(h.seq, count[h.sender]);
		if (uid_of_tag)
			ASSERT_EQ(m.msg.uid, uid_of_tag[h.sender]);
		count[h.sender]++;
		if (keep_slices)
			offs[n] = m.msg.offset;
		else
			ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
		n++;
	}
	ASSERT_EQ(ret, -EAGAIN);
	return n;
}

/*
 * A.3, §6.2: user 1001 floods a receiver limited to 100 slices and gets
 * EDQUOT after 50; user 1002, from another process, still gets 25 in; a
 * new process of user 1001 gets none (its user's share is still there);
 * root gets 12. Dequeuing ends the shares but not the slice charges;
 * releasing the slices gives those back.
 */
TEST(qt_fair_share_other_users_still_reach)
{
	int r, p;
	const uint8_t *pool;
	int count[8] = { 0 };
	const uint32_t uids[8] = { 0, 1001, 1002, 0 };
	static uint64_t offs[256];
	uint64_t id;
	int n;

	if (geteuid() != 0)
		t_skip("needs root to take other user IDs");
	r = b1_open();
	p = b1_open();
	pool = b1_map(r);
	ASSERT_EQ(qt_limits(r, 100, -1, -1, -1), 0);
	ASSERT_EQ(qt_flood_from_child(r, 1001, 1, -1), 50);
	ASSERT_EQ(qt_flood_from_child(r, 1002, 2, -1), 25);
	ASSERT_EQ(qt_flood_from_child(r, 1001, 4, -1), 0);
	ASSERT_EQ(b1_transfer(r, QT_NODE, p, &id), 0);
	ASSERT_EQ(qt_flood(p, id, 3, -1), 12);
	/* every accepted message is there, whole, with its sender's uid */
	n = qt_drain(r, pool, count, uids, 1, offs);
	ASSERT_EQ(n, 87);
	ASSERT_EQ(count[1], 50);
	ASSERT_EQ(count[2], 25);
	ASSERT_EQ(count[3], 12);
	/* dequeued: no shares, but 87 slices still charged: R = 13 → 6 */
	ASSERT_EQ(qt_flood_from_child(r, 1001, 5, -1), 6);
	for (int i = 0; i < n; i++)
		ASSERT_EQ(b1_slice_release(r, offs[i]), 0);
	/* R = 94, 1002 has no share: 47 */
	ASSERT_EQ(qt_flood_from_child(r, 1002, 6, -1), 47);
	memset(count, 0, sizeof(count));
	ASSERT_EQ(qt_drain(r, pool, count, NULL, 0, NULL), 53);
	ASSERT_EQ(count[5], 6);
	ASSERT_EQ(count[6], 47);
}

/*
 * A.3: the share belongs to the sending user, not to a process or peer:
 * a second process of the same user finds it used up; dequeuing shrinks it,
 * releasing slices grows the remainder.
 */
TEST(qt_same_user_shares_across_processes)
{
	int r = b1_open();
	const uint8_t *pool = b1_map(r);
	int count[8] = { 0 };
	static uint64_t offs[64];
	struct bus1_cmd_recv m;

	ASSERT_EQ(qt_limits(r, 100, -1, -1, -1), 0);
	ASSERT_EQ(qt_flood_from_child(r, -1, 1, -1), 50);
	ASSERT_EQ(qt_flood_from_child(r, -1, 2, -1), 0);
	/* receive 10 (kept published): R = 50, s = 40 → 5 more */
	for (int i = 0; i < 10; i++) {
		ASSERT_EQ(b1_recv(r, &m, 0), 0);
		offs[i] = m.msg.offset;
	}
	ASSERT_EQ(qt_flood_from_child(r, -1, 3, -1), 5);
	/* release those 10: R = 55, s = 45 → 5 more */
	for (int i = 0; i < 10; i++)
		ASSERT_EQ(b1_slice_release(r, offs[i]), 0);
	ASSERT_EQ(qt_flood_from_child(r, -1, 4, -1), 5);
	count[1] = 10;
	ASSERT_EQ(qt_drain(r, pool, count, NULL, 0, NULL), 50);
	ASSERT_EQ(count[1], 50);
	ASSERT_EQ(count[3], 5);
	ASSERT_EQ(count[4], 5);
}

/*
 * §6.1/§6.2/A.3: the user counters span all of a user's peers in all
 * processes: with 6000 slices queued at a receiver in one process, a
 * receiver of the same user in another process takes only 2192 more
 * (16384 user slices → 8192 for one sending user), although its own peer
 * limit would allow 8192; when the first receiver's process closes it, the
 * 6000 come back.
 */
TEST_TIMEOUT(qt_user_slices_span_processes, 40)
{
	int s = b1_open(), p1 = b1_open(), p2 = b1_open();
	uint64_t id1, id2;
	int go[2], n;
	pid_t pid;

	ASSERT_EQ(b1_transfer(p1, QT_NODE, s, &id1), 0);
	ASSERT_EQ(b1_transfer(p2, QT_NODE, s, &id2), 0);
	ASSERT_OK(pipe(go));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		char c;

		close(s);
		close(p2);
		close(go[1]);
		mp_read_full(go[0], &c, 1);
		ASSERT_OK(close(p1));
		_exit(0);
	}
	close(go[0]);
	ASSERT_OK(close(p1));
	ASSERT_EQ(qt_flood(s, id1, 1, 6000), 6000);
	ASSERT_EQ(qt_flood(s, id2, 2, -1), 2192);
	mp_put(go[1], "q", 1);
	mp_reap(pid);
	/* the close tore p1 down in that process, refunding its 6000 */
	n = qt_flood(s, id2, 3, -1);
	ASSERT_EQ(n, 6000);
}

/* Receives on command from a pipe: 'r' = one message, 'a' = all, 'q' = quit. */
static pid_t qt_reader(int r, int *cmd_w, int *ack_r, int install_fds)
{
	int cmd[2], ack[2];
	pid_t pid;

	ASSERT_OK(pipe(cmd));
	ASSERT_OK(pipe(ack));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		const uint8_t *pool = b1_map(r);
		char c;

		close(cmd[1]);
		close(ack[0]);
		while (mp_read(cmd[0], &c, 1) && c != 'q') {
			struct bus1_cmd_recv m;
			int n = 0;

			while (b1_recv(r, &m, install_fds ? BUS1_RECV_FLAG_INSTALL_FDS : 0) == 0) {
				struct mp_msg_hdr h;

				ASSERT_EQ(m.msg.type, BUS1_MSG_DATA);
				ASSERT_TRUE(mp_msg_check(pool + m.msg.offset, m.msg.n_bytes, &h));
				n++;
				if (c == 'r')
					break;
			}
			mp_put(ack[1], &n, sizeof(n));
		}
		_exit(0);
	}
	close(cmd[0]);
	close(ack[1]);
	*cmd_w = cmd[1];
	*ack_r = ack[0];
	return pid;
}

static int qt_ask(int cmd_w, int ack_r, char c)
{
	int n;

	mp_put(cmd_w, &c, 1);
	mp_read_full(ack_r, &n, sizeof(n));
	return n;
}

/* Sends one message of `body` bytes (slice = its 8-aligned size) with nf fds. */
static int qt_send_sized(int s, uint64_t dest, uint64_t seq, size_t len, const int *fds, int nf)
{
	static char buf[MP_MSG_MAX];
	struct iovec v = { buf, mp_msg_build(buf, 1, seq, 1, len - sizeof(struct mp_msg_hdr) - 8) };

	return b1_send(s, 0, &dest, 1, NULL, &v, 1, NULL, 0, fds, nf);
}

/*
 * §6.3/A.3: in-flight bytes are charged to the receiver while queued and
 * given back when another process dequeues them. Limit 4096, 512-byte
 * slices: 4 fit (R ≥ s + 2c), one RECV makes room for exactly one more,
 * draining everything for 4 again.
 */
TEST(qt_inflight_bytes_given_back_on_dequeue)
{
	int r = b1_open(), s = b1_open();
	int cmd, ack;
	uint64_t id;
	pid_t pid;
	int seq = 0;

	ASSERT_EQ(b1_transfer(r, QT_NODE, s, &id), 0);
	ASSERT_EQ(qt_limits(r, -1, -1, 4096, -1), 0);
	pid = qt_reader(r, &cmd, &ack, 0);
	ASSERT_OK(close(r));
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(qt_send_sized(s, id, seq++, 512, NULL, 0), 0);
	ASSERT_EQ(qt_send_sized(s, id, seq, 512, NULL, 0), -EDQUOT);
	ASSERT_EQ(qt_ask(cmd, ack, 'r'), 1);
	ASSERT_EQ(qt_send_sized(s, id, seq++, 512, NULL, 0), 0);
	ASSERT_EQ(qt_send_sized(s, id, seq, 512, NULL, 0), -EDQUOT);
	ASSERT_EQ(qt_ask(cmd, ack, 'a'), 4);
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(qt_send_sized(s, id, seq++, 512, NULL, 0), 0);
	ASSERT_EQ(qt_send_sized(s, id, seq, 512, NULL, 0), -EDQUOT);
	/* a message above half the limit never fits, even into an empty queue */
	ASSERT_EQ(qt_ask(cmd, ack, 'a'), 4);
	ASSERT_EQ(qt_send_sized(s, id, seq, 2056, NULL, 0), -EDQUOT);
	ASSERT_EQ(qt_send_sized(s, id, seq, 2048, NULL, 0), 0);
	ASSERT_EQ(qt_ask(cmd, ack, 'a'), 1);
	mp_put(cmd, "q", 1);
	mp_reap(pid);
}

/*
 * §6.3/A.3: in-flight fds likewise: limit 8, three fds per message → one
 * fits; a RECV in the other process (without INSTALL_FDS, n_fds still
 * reported) gives them back.
 */
TEST(qt_inflight_fds_given_back_on_dequeue)
{
	int r = b1_open(), s = b1_open();
	int p[2], fds[3], cmd, ack;
	uint64_t id;
	pid_t pid;

	ASSERT_OK(pipe(p));
	fds[0] = p[0];
	fds[1] = p[1];
	fds[2] = p[0];
	ASSERT_EQ(b1_transfer(r, QT_NODE, s, &id), 0);
	ASSERT_EQ(qt_limits(r, -1, -1, -1, 8), 0);
	pid = qt_reader(r, &cmd, &ack, 0);
	ASSERT_OK(close(r));
	ASSERT_EQ(qt_send_sized(s, id, 0, 64, fds, 3), 0);
	ASSERT_EQ(qt_send_sized(s, id, 1, 64, fds, 3), -EDQUOT);
	/* fd-less messages are not affected */
	ASSERT_EQ(qt_send_sized(s, id, 1, 64, NULL, 0), 0);
	ASSERT_EQ(qt_ask(cmd, ack, 'a'), 2);
	ASSERT_EQ(qt_send_sized(s, id, 2, 64, fds, 3), 0);
	ASSERT_EQ(qt_send_sized(s, id, 3, 64, fds, 3), -EDQUOT);
	ASSERT_EQ(qt_ask(cmd, ack, 'a'), 1);
	mp_put(cmd, "q", 1);
	mp_reap(pid);
}

/*
 * §6.2/A.3: payload handles are charged to the receiver (limit 10, its own
 * pin uses 1: R = 9); at RECV in the other process they turn into user
 * references that stay charged until released there; the sender's share
 * ends at dequeue. c = 4 needs R ≥ s + 8.
 */
TEST(qt_handles_stay_charged_until_released)
{
	int r = b1_open(), s = b1_open();
	uint64_t id, nodes[4] = { 0x10, 0x20, 0x30, 0x40 };
	struct iovec v = { (void *)"h", 1 };
	int cmd[2], ack[2];
	pid_t pid;
	char c;

	ASSERT_EQ(qt_limits(r, -1, 10, -1, -1), 0);
	ASSERT_EQ(b1_transfer(r, QT_NODE, s, &id), 0);
	ASSERT_OK(pipe(cmd));
	ASSERT_OK(pipe(ack));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		const uint8_t *pool = b1_map(r);
		struct bus1_cmd_recv m;
		uint64_t ids[4];

		close(s);
		/* 'r': receive both messages; '2': release two handles; '1': one more */
		mp_read_full(cmd[0], &c, 1);
		ASSERT_EQ(b1_recv(r, &m, 0), 0);
		ASSERT_EQ(m.msg.n_handles, 4);
		memcpy(ids, pool + m.msg.offset + 8, sizeof(ids));
		for (int i = 0; i < 4; i++)
			ASSERT_EQ_U64(ids[i], ((uint64_t)(i + 1) << 3) | 3);
		ASSERT_EQ(b1_recv(r, &m, 0), 0);
		ASSERT_EQ(m.msg.n_handles, 0);
		mp_put(ack[1], "k", 1);
		mp_read_full(cmd[0], &c, 1);
		ASSERT_EQ(b1_release(r, ids[0]), 0);
		ASSERT_EQ(b1_release(r, ids[1]), 0);
		mp_put(ack[1], "k", 1);
		mp_read_full(cmd[0], &c, 1);
		ASSERT_EQ(b1_release(r, ids[2]), 0);
		mp_put(ack[1], "k", 1);
		/* stay until the last SEND: the receiver must still exist */
		mp_read_full(cmd[0], &c, 1);
		_exit(0);
	}
	ASSERT_OK(close(r));
	/* R = 9, s = 0 → ok; R = 5, s = 4 → EDQUOT */
	ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, nodes, 4, NULL, 0), 0);
	ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, nodes, 4, NULL, 0), -EDQUOT);
	ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	mp_put(cmd[1], "r", 1);
	mp_read_full(ack[0], &c, 1);
	/* received: 4 user references charged (R = 5), no share: still 5 < 8 */
	ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, nodes, 4, NULL, 0), -EDQUOT);
	mp_put(cmd[1], "2", 1);
	mp_read_full(ack[0], &c, 1);
	ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, nodes, 4, NULL, 0), -EDQUOT);
	mp_put(cmd[1], "1", 1);
	mp_read_full(ack[0], &c, 1);
	ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, nodes, 4, NULL, 0), 0);
	mp_put(cmd[1], "x", 1);
	mp_reap(pid);
}

/* Receives exactly `n` messages on an inherited peer (argv: fd, n, tag). */
static pid_t qt_expect_n(int r, int n, uint32_t tag, int *go_w)
{
	int go[2];
	pid_t pid;

	ASSERT_OK(pipe(go));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		const uint8_t *pool = b1_map(r);
		struct bus1_cmd_recv m;
		struct mp_msg_hdr h;
		char c;

		close(go[1]);
		mp_read_full(go[0], &c, 1);
		for (int i = 0; i < n; i++) {
			ASSERT_EQ(b1_recv(r, &m, 0), 0);
			ASSERT_TRUE(mp_msg_check(pool + m.msg.offset, m.msg.n_bytes, &h));
			ASSERT_EQ(h.sender, tag);
			ASSERT_EQ(h.seq, i);
		}
		ASSERT_EQ(b1_recv(r, &m, 0), -EAGAIN);
		_exit(0);
	}
	close(go[0]);
	*go_w = go[1];
	return pid;
}

/*
 * A.2/A.3: with CONTINUE, a receiver (in one process) over its quota gets
 * EDQUOT in its error slot while the other receiver (in another process)
 * gets the message; without CONTINUE nobody gets anything.
 */
TEST(qt_continue_reports_edquot_per_destination)
{
	int r1 = b1_open(), r2 = b1_open(), s = b1_open();
	uint64_t d[2], errs[2] = { 99, 99 };
	static char buf[MP_MSG_MAX];
	struct iovec v;
	int go1, go2;
	pid_t p1, p2;

	ASSERT_EQ(b1_transfer(r1, QT_NODE, s, &d[0]), 0);
	ASSERT_EQ(b1_transfer(r2, QT_NODE, s, &d[1]), 0);
	ASSERT_EQ(qt_limits(r1, 2, -1, -1, -1), 0);
	p1 = qt_expect_n(r1, 1, 1, &go1);
	p2 = qt_expect_n(r2, 1, 1, &go2);
	ASSERT_OK(close(r1));
	ASSERT_OK(close(r2));
	v.iov_base = buf;
	v.iov_len = mp_msg_build(buf, 1, 0, 3, 100);
	/* r1: R = 2 ≥ 0 + 2 → one message; then 1 < 1 + 2 */
	ASSERT_EQ(b1_send(s, 0, d, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_send(s, 0, d, 2, errs, &v, 1, NULL, 0, NULL, 0), -EDQUOT);
	ASSERT_EQ(errs[0], 99);
	ASSERT_EQ(errs[1], 99);
	ASSERT_EQ(b1_send(s, BUS1_SEND_FLAG_CONTINUE, d, 2, errs, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(errs[0], EDQUOT);
	ASSERT_EQ(errs[1], 0);
	mp_put(go1, "g", 1);
	mp_put(go2, "g", 1);
	mp_reap(p1);
	mp_reap(p2);
}

/*
 * A.3, §2.8: three processes (of three users if `multi`, else of one)
 * flood one receiver concurrently until each gets EDQUOT; afterwards every
 * accepted message is there once, whole and in order, and the end state
 * obeys the fair-share rule for each sender: R < s + 2.
 */
static void qt_concurrent_flood(int multi)
{
	enum { NS = 3, MAX = 600 };
	int r = b1_open();
	const uint8_t *pool = b1_map(r);
	int p[NS][2], n[NS], count[8] = { 0 }, total = 0;
	pid_t pid[NS];
	int go[2];

	ASSERT_EQ(qt_limits(r, MAX, -1, -1, -1), 0);
	ASSERT_OK(pipe(go));
	for (int i = 0; i < NS; i++) {
		ASSERT_OK(pipe(p[i]));
		pid[i] = fork();
		ASSERT_GE(pid[i], 0);
		if (pid[i] == 0) {
			uint64_t id;
			int a, k;
			char c;

			close(go[1]);
			if (multi)
				ASSERT_OK(setresuid(2001 + i, -1, -1));
			a = b1_open();
			ASSERT_EQ(b1_transfer(r, QT_NODE, a, &id), 0);
			ASSERT_OK(close(r));
			mp_read_full(go[0], &c, 1);
			k = qt_flood(a, id, i + 1, -1);
			mp_put(p[i][1], &k, sizeof(k));
			_exit(0);
		}
		close(p[i][1]);
	}
	close(go[0]);
	/* start them together */
	for (int i = 0; i < NS; i++)
		mp_put(go[1], "ggg", 1);
	for (int i = 0; i < NS; i++) {
		mp_read_full(p[i][0], &n[i], sizeof(n[i]));
		mp_reap(pid[i]);
		total += n[i];
	}
	ASSERT_EQ(qt_drain(r, pool, count, NULL, 0, NULL), total);
	for (int i = 0; i < NS; i++) {
		ASSERT_EQ(count[i + 1], n[i]);
		/* each sender was refused: R < s + 2 */
		ASSERT_LT(MAX - total, (multi ? n[i] : total) + 2);
		if (multi)
			ASSERT_GT(n[i], 0);
	}
	printf("    note: %s: accepted %d + %d + %d of %d slices\n",
	       multi ? "three users" : "one user", n[0], n[1], n[2], MAX);
}

TEST_TIMEOUT(qt_concurrent_flood_all_accepted_received, 40)
{
	qt_concurrent_flood(0);
}

TEST_TIMEOUT(qt_concurrent_flood_three_users_all_accepted_received, 40)
{
	if (geteuid() != 0)
		t_skip("needs root to take other user IDs");
	qt_concurrent_flood(1);
}
