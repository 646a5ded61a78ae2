/* SPDX-License-Identifier: MIT */
/*
 * Crashes (§8.5, §8.6, §3.8, §7.9; docs/design.md, fixed decisions 4 and 5): a
 * process killed with SIGKILL — while idle, or at any point inside the shim
 * (mid-send, mid-multicast, mid-receive, mid-flush) — leaves a bus that
 * works: no wedged lock, every transaction delivered whole to all its
 * destinations or to none, no leaked pool space, and the peers it held torn
 * down as by a close, detected without any daemon by the processes that
 * remain, even when they are blocked in poll.
 *
 * Crash points are armed in exec'd children with BUS1_CRASH_AT=<point>[:n]
 * (the engine kills the process the n-th time it reaches <point>).
 */
#define _GNU_SOURCE
#include <sys/prctl.h>

#include "mp-util.h"

#define CR_WAIT_MS 3000
/* Size of the message used to prove a pool has no leaked slice. */
#define CR_PROBE_SIZE (4u << 20)

static void cr_expect_destroys(int fd, const uint64_t *ids, int n)
{
	int seen[16] = { 0 };

	for (int i = 0; i < n; i++) {
		struct bus1_cmd_recv r;
		int k;

		ASSERT_EQ(mp_recv_wait(fd, &r, 0, CR_WAIT_MS), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
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

/*
 * §5.2: with every slice freed the pool is one free range from 0, so a
 * message larger than everything the case ever allocated lands at 0.
 * (A probe of 4 MiB stays within the in-flight fair share of A.3.)
 */
static void cr_expect_pool_empty(int sender, uint64_t dest, int receiver)
{
	static char *big;
	struct iovec v;
	struct bus1_cmd_recv r;

	if (!big) {
		big = malloc(CR_PROBE_SIZE);
		ASSERT_TRUE(big != NULL);
		memset(big, 0x5a, CR_PROBE_SIZE);
	}
	v.iov_base = big;
	v.iov_len = CR_PROBE_SIZE;
	ASSERT_EQ(b1_send(sender, 0, &dest, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	/* late notifications about dead peers may come first */
	do
		ASSERT_EQ(mp_recv_wait(receiver, &r, 0, CR_WAIT_MS), 0);
	while (r.msg.type == BUS1_MSG_NODE_DESTROY || r.msg.type == BUS1_MSG_NODE_RELEASE);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.n_bytes, CR_PROBE_SIZE);
	ASSERT_EQ_U64(r.msg.offset, 0);
	ASSERT_EQ(b1_slice_release(receiver, r.msg.offset), 0);
}

/* Reaps every child (also orphans reparented to us); returns how many. */
static int cr_reap_all(int *n_killed)
{
	int n = 0, st;
	pid_t p;

	*n_killed = 0;
	while ((p = waitpid(-1, &st, 0)) > 0 || errno == EINTR) {
		if (p <= 0)
			continue;
		n++;
		if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
			(*n_killed)++;
		else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			t_fail(__FILE__, __LINE__, "child %d: status 0x%x", (int)p, st);
	}
	return n;
}

/* -------------------------------------------------- owner killed, holders in poll */

enum { CR_REC_OWNER = 1, CR_REC_READY, CR_REC_DONE };

struct cr_rec {
	int32_t kind;
	int32_t who;
	int32_t ok;
	int32_t pad;
};

/*
 * Opens an owner and NH holders, forks one process keeping the owner (it
 * waits to be killed) and one per holder (each blocks in poll), then exits:
 * afterwards only the holders and the owner are attached to the domain.
 * argv: result pipe, "ioctl" or "noioctl" (whether holders make a call
 * after fork before they poll).
 */
T_CHILD(cr_poll_setup)
{
	enum { NH = 3 };
	int res = atoi(argv[0]);
	int do_ioctl = !strcmp(argv[1], "ioctl");
	int o = b1_open(), h[NH];
	uint64_t ids[NH][4];

	ASSERT_EQ(argc, 2);
	for (int i = 0; i < NH; i++) {
		h[i] = b1_open();
		/* holder i holds i + 1 of the nodes: a different set per holder */
		for (int j = 0; j <= i; j++)
			ASSERT_EQ(b1_transfer(o, 0x100 + 0x10 * j, h[i], &ids[i][j]), 0);
	}
	for (int i = 0; i < NH; i++) {
		pid_t p = fork();

		ASSERT_GE(p, 0);
		if (p == 0) {
			struct cr_rec rec = { CR_REC_READY, i, 0, 0 };
			struct bus1_cmd_recv r;

			for (int k = 0; k < NH; k++)
				if (k != i)
					close(h[k]);
			close(o);
			if (do_ioctl)
				ASSERT_EQ(b1_recv(h[i], &r, 0), -EAGAIN);
			mp_put(res, &rec, sizeof(rec));
			/* blocked in poll; only the crash can wake us */
			if (mp_poll_wait(h[i], POLLIN, 10000) & POLLIN) {
				cr_expect_destroys(h[i], ids[i], i + 1);
				ASSERT_EQ(b1_send_one(h[i], ids[i][0], "x", 1), -ESHUTDOWN);
				rec.ok = 1;
			}
			rec.kind = CR_REC_DONE;
			mp_put(res, &rec, sizeof(rec));
			_exit(0);
		}
	}
	{
		pid_t p = fork();

		ASSERT_GE(p, 0);
		if (p == 0) {
			struct cr_rec rec = { CR_REC_OWNER, (int)getpid(), 0, 0 };

			for (int k = 0; k < NH; k++)
				close(h[k]);
			mp_put(res, &rec, sizeof(rec));
			for (;;)
				pause();
		}
	}
	return 0;
}

static void cr_owner_killed(const char *mode)
{
	enum { NH = 3 };
	int res[2], n_killed;
	char a[16];
	pid_t owner = -1;
	double t0, worst = 0;

	ASSERT_OK(prctl(PR_SET_CHILD_SUBREAPER, 1));
	ASSERT_OK(pipe(res));
	mp_keep_fd(res[1]);
	snprintf(a, sizeof(a), "%d", res[1]);
	/* this process never touches the bus: no participant but the holders */
	mp_reap(mp_spawn("cr_poll_setup", a, mode, NULL));
	close(res[1]);
	for (int i = 0; i < NH + 1; i++) {
		struct cr_rec rec;

		mp_read_full(res[0], &rec, sizeof(rec));
		if (rec.kind == CR_REC_OWNER)
			owner = rec.who;
		else
			ASSERT_EQ(rec.kind, CR_REC_READY);
	}
	ASSERT_GT(owner, 0);
	mp_sleep_ms(300);
	t0 = mp_now_ms();
	ASSERT_OK(kill(owner, SIGKILL));
	for (int i = 0; i < NH; i++) {
		struct cr_rec rec;
		double dt;

		mp_read_full(res[0], &rec, sizeof(rec));
		dt = mp_now_ms() - t0;
		ASSERT_EQ(rec.kind, CR_REC_DONE);
		if (!rec.ok)
			t_fail(__FILE__, __LINE__, "holder %d saw no NODE_DESTROY within 10 s", rec.who);
		if (dt > worst)
			worst = dt;
	}
	printf("    note: NODE_DESTROY reached all holders %.0f ms after SIGKILL (%s)\n", worst, mode);
	ASSERT_LT(worst, 3000);
	ASSERT_EQ(cr_reap_all(&n_killed), NH + 1);
	ASSERT_EQ(n_killed, 1);
}

/* §8.5/§8.6, decision 5: SIGKILLed owner; holders in three processes blocked in poll get NODE_DESTROY (own IDs) in < 3 s */
TEST_TIMEOUT(cr_owner_killed_holders_in_poll, 30)
{
	cr_owner_killed("ioctl");
	b1_check_domain();
}

/* §8.6, decision 5: same, but the holders go straight from fork() into poll, without any bus1 call */
TEST_TIMEOUT(cr_owner_killed_forked_holders_no_call, 30)
{
	cr_owner_killed("noioctl");
	b1_check_domain();
}

/* -------------------------------------------------- crash points in SEND */

/*
 * A bus for the crash-point cases: three receivers, a sender (its fd goes
 * to the crashing child), a peer `own` whose node the message carries, and
 * a second sender p in this process.
 */
struct cr_bus {
	int r[3], s, own, p;
	uint64_t sid[3], pid_[3], hn;
	const uint8_t *pool[3];
};

static void cr_bus_setup(struct cr_bus *b)
{
	b->s = b1_open();
	b->own = b1_open();
	b->p = b1_open();
	for (int i = 0; i < 3; i++) {
		b->r[i] = b1_open();
		b->pool[i] = b1_map(b->r[i]);
		ASSERT_EQ(b1_transfer(b->r[i], 0x100, b->s, &b->sid[i]), 0);
		ASSERT_EQ(b1_transfer(b->r[i], 0x100, b->p, &b->pid_[i]), 0);
	}
	ASSERT_EQ(b1_transfer(b->own, 0x300, b->s, &b->hn), 0);
}

/* The bus works and orders after a dead transaction: a multicast from p reaches all three receivers next. */
static void cr_bus_goes_on(struct cr_bus *b)
{
	static char buf[MP_MSG_MAX];
	size_t n = mp_msg_build(buf, 2, 1, 7, 500);
	struct iovec v = { buf, n };

	ASSERT_EQ(b1_send(b->p, 0, b->pid_, 3, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	for (int i = 0; i < 3; i++) {
		struct bus1_cmd_recv r;
		struct mp_msg_hdr h;

		ASSERT_EQ(b1_recv(b->r[i], &r, 0), 0);
		ASSERT_TRUE(mp_msg_check(b->pool[i] + r.msg.offset, r.msg.n_bytes, &h));
		ASSERT_EQ(h.sender, 2);
		ASSERT_EQ(b1_slice_release(b->r[i], r.msg.offset), 0);
	}
}

/* Multicasts one checksummed message (sender 1, seq 7) carrying a handle. */
T_CHILD(cr_multicast)
{
	int fd = atoi(argv[0]);
	uint64_t dests[3], h = mp_arg_u64(argv[4]);
	static char buf[MP_MSG_MAX];
	struct iovec v[3];
	size_t n;

	ASSERT_EQ(argc, 5);
	for (int i = 0; i < 3; i++)
		dests[i] = mp_arg_u64(argv[1 + i]);
	n = mp_msg_build(buf, 1, 7, 7, 3000);
	/* three vecs, so a copy can be interrupted between them */
	v[0] = (struct iovec){ buf, 100 };
	v[1] = (struct iovec){ buf + 100, 1000 };
	v[2] = (struct iovec){ buf + 1100, n - 1100 };
	ASSERT_EQ(b1_send(fd, 0, dests, 3, NULL, v, 3, &h, 1, NULL, 0), 0);
	/* the crash point was not reached */
	return 3;
}

/*
 * Runs the multicast in a child that dies at `point`, then checks: nothing
 * wedged; the message is at all three receivers (whole, with a valid
 * handle) or at none; the bus still orders and delivers; the node the
 * message carried gets exactly one NODE_RELEASE once everything referring
 * to it is gone; every pool is empty again.
 */
static void cr_send_crash(const char *point)
{
	struct cr_bus b;
	char a[5][32];
	int got[3], total = 0;
	pid_t pid;

	cr_bus_setup(&b);
	mp_keep_fd(b.s);
	snprintf(a[0], sizeof(a[0]), "%d", b.s);
	for (int i = 0; i < 3; i++)
		mp_fmt(a[1 + i], b.sid[i]);
	mp_fmt(a[4], b.hn);
	pid = mp_spawn_crash(point, "cr_multicast", a[0], a[1], a[2], a[3], a[4], NULL);
	ASSERT_OK(close(b.s));
	mp_reap_killed(pid);
	b1_check_fd(b.p);

	for (int i = 0; i < 3; i++) {
		struct bus1_cmd_recv r;
		struct mp_msg_hdr h;
		int ret = b1_recv(b.r[i], &r, 0);

		got[i] = 0;
		if (ret == -EAGAIN) {
			/* no stale readiness for a transaction that never was */
			ASSERT_EQ(b1_revents(b.r[i], POLLIN) & POLLIN, 0);
			continue;
		}
		ASSERT_EQ(ret, 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
		ASSERT_TRUE(mp_msg_check(b.pool[i] + r.msg.offset, r.msg.n_bytes, &h));
		ASSERT_EQ(h.sender, 1);
		ASSERT_EQ(h.seq, 7);
		ASSERT_EQ(r.msg.n_handles, 1);
		{
			uint64_t id;

			memcpy(&id, b.pool[i] + r.msg.offset + ((r.msg.n_bytes + 7) & ~7ULL), 8);
			/* own is alive: the carried handle is valid (§3.9) */
			ASSERT_EQ_U64(id, 0xb);
			ASSERT_EQ(b1_release(b.r[i], id), 0);
		}
		ASSERT_EQ(b1_slice_release(b.r[i], r.msg.offset), 0);
		got[i] = 1;
		total++;
	}
	if (total != 0 && total != 3)
		t_fail(__FILE__, __LINE__, "torn multicast after a crash at %s: delivered to %d,%d,%d",
		       point, got[0], got[1], got[2]);
	printf("    note: crash at %s: transaction %s\n", point, total ? "delivered to all" : "rolled back");
	cr_bus_goes_on(&b);
	/* §3.7: the sender is gone and nothing carries 0x300: one release */
	MP_EXPECT_NOTE(b.own, BUS1_MSG_NODE_RELEASE, 0x300, CR_WAIT_MS);
	mp_sleep_ms(300);
	{
		struct bus1_cmd_recv r;

		ASSERT_EQ(b1_recv(b.own, &r, 0), -EAGAIN);
	}
	for (int i = 0; i < 3; i++)
		cr_expect_pool_empty(b.p, b.pid_[i], b.r[i]);
}

/* §2.8 "on any error no message is queued anywhere", §7.9: killed after copying into the 2nd of 3 pools */
TEST(cr_send_killed_mid_copy)
{
	cr_send_crash("send-copied:2");
	b1_check_domain();
}

/* §2.8/§7.9: killed after the first of three entries was appended */
TEST(cr_send_killed_mid_append)
{
	cr_send_crash("send-append");
	b1_check_domain();
}

/* §2.8/§7.9: killed between the wake-ups of a committed multicast (after the lock is released) */
TEST(cr_send_killed_mid_rings)
{
	cr_send_crash("ring:2");
	b1_check_domain();
}

/* §2.8/§7.9: killed just before the commit point */
TEST(cr_send_killed_before_commit)
{
	cr_send_crash("commit-before");
	b1_check_domain();
}

/* §2.8/§7.9: killed just after the commit point */
TEST(cr_send_killed_after_commit)
{
	cr_send_crash("commit-after");
	b1_check_domain();
}

/* ------------------------------------------ crash points of the data path */

/*
 * Sends one checksummed message (sender 1, seq 8) in three vecs, with no
 * handles and no fds (the data path, outside the domain lock), to the
 * destinations argv[1..].
 */
T_CHILD(cr_plain_send)
{
	int fd = atoi(argv[0]), nd = argc - 1;
	uint64_t dests[3];
	static char buf[MP_MSG_MAX];
	struct iovec v[3];
	size_t n;

	ASSERT_TRUE(nd >= 1 && nd <= 3);
	for (int i = 0; i < nd; i++)
		dests[i] = mp_arg_u64(argv[1 + i]);
	n = mp_msg_build(buf, 1, 8, 8, 3000);
	v[0] = (struct iovec){ buf, 100 };
	v[1] = (struct iovec){ buf + 100, 1000 };
	v[2] = (struct iovec){ buf + 1100, n - 1100 };
	ASSERT_EQ(b1_send(fd, 0, dests, nd, NULL, v, 3, NULL, 0, NULL, 0), 0);
	return 3;
}

/*
 * Runs a data-path send to the first `nd` receivers in a child that dies
 * at `point`, then checks: the message is delivered whole at all of them
 * (`delivered`: a multicast whose entries were staged is finished by the
 * receivers that meet it) or at none, with no stale readiness; the bus
 * orders after it; every pool is empty again.
 */
static void cr_plain_crash(const char *point, int nd, int delivered)
{
	struct cr_bus b;
	char a[4][32];
	pid_t pid;

	cr_bus_setup(&b);
	mp_keep_fd(b.s);
	snprintf(a[0], sizeof(a[0]), "%d", b.s);
	for (int i = 0; i < 3; i++)
		mp_fmt(a[1 + i], b.sid[i]);
	pid = mp_spawn_crash(point, "cr_plain_send", a[0], a[1], nd > 1 ? a[2] : NULL, nd > 2 ? a[3] : NULL, NULL);
	ASSERT_OK(close(b.s));
	mp_reap_killed(pid);

	for (int i = 0; i < nd; i++) {
		struct bus1_cmd_recv r;
		struct mp_msg_hdr h;

		if (!delivered) {
			ASSERT_EQ(b1_recv(b.r[i], &r, 0), -EAGAIN);
			ASSERT_EQ(b1_revents(b.r[i], POLLIN) & POLLIN, 0);
			continue;
		}
		ASSERT_EQ(mp_recv_wait(b.r[i], &r, 0, CR_WAIT_MS), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
		ASSERT_TRUE(mp_msg_check(b.pool[i] + r.msg.offset, r.msg.n_bytes, &h));
		ASSERT_EQ(h.sender, 1);
		ASSERT_EQ(h.seq, 8);
		ASSERT_EQ(b1_slice_release(b.r[i], r.msg.offset), 0);
	}
	cr_bus_goes_on(&b);
	for (int i = 0; i < 3; i++)
		cr_expect_pool_empty(b.p, b.pid_[i], b.r[i]);
}

/* A multicast killed in its own peer's section, while resolving its destinations: nothing happened */
TEST(cr_plain_killed_resolving)
{
	cr_plain_crash("send-resolving", 3, 0);
}

/* Killed in the second receiver's section, with its record prepared: rolled back, room given back */
TEST(cr_plain_killed_prepared)
{
	cr_plain_crash("send-prepared:2", 3, 0);
}

/* Killed between two vecs of the copy into the second slice (no lock held) */
TEST(cr_plain_killed_mid_copy)
{
	cr_plain_crash("send-copying:2", 3, 0);
}

/* Killed with every payload copied, before staging */
TEST(cr_plain_killed_copied)
{
	cr_plain_crash("send-copied:3", 3, 0);
}

/* Killed in the first receiver's section while staging: the receivers finish the commit */
TEST(cr_plain_killed_mid_stage)
{
	cr_plain_crash("send-append", 3, 1);
}

/* Killed with every entry staged, before the commit stamp was chosen */
TEST(cr_plain_killed_staged)
{
	cr_plain_crash("send-staged", 3, 1);
}

/* Killed with the commit stamp chosen, before any entry was re-stamped */
TEST(cr_plain_killed_sealed)
{
	cr_plain_crash("send-sealed", 3, 1);
}

/* Killed after re-stamping the entries of the second receiver of three */
TEST(cr_plain_killed_mid_commit)
{
	cr_plain_crash("commit-op:2", 3, 1);
}

/* A unicast killed in the receiver's section before its commit: rolled back */
TEST(cr_plain_unicast_killed_before_commit)
{
	cr_plain_crash("commit-before", 1, 0);
}

/* A unicast killed right after its commit: delivered */
TEST(cr_plain_unicast_killed_after_commit)
{
	cr_plain_crash("commit-after", 1, 1);
}

/* -------------------------------------------------- crash inside RECV */

/* RECV on an inherited peer fd (the engine kills us inside). */
T_CHILD(cr_recv)
{
	int fd = atoi(argv[0]);
	struct bus1_cmd_recv r;

	ASSERT_EQ(argc, 1);
	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	return 3;
}

/*
 * §2.9: a RECV killed after installing handles, on a peer another process
 * shares, is all or nothing: the message is still at the head, whole; its
 * handle is installed once with one user reference; the node's owner hears
 * NODE_RELEASE exactly once when that reference goes.
 */
TEST(cr_recv_killed_after_install)
{
	int r = b1_open(), s = b1_open(), own = b1_open();
	const uint8_t *pool = b1_map(r);
	static char buf[MP_MSG_MAX];
	uint64_t id, hn, hid, dst;
	struct bus1_cmd_recv m;
	struct mp_msg_hdr h;
	struct iovec v;
	char a[16];
	pid_t pid;

	ASSERT_EQ(b1_transfer(r, 0x100, s, &id), 0);
	ASSERT_EQ(b1_transfer(own, 0x300, s, &hn), 0);
	v.iov_base = buf;
	v.iov_len = mp_msg_build(buf, 1, 1, 1, 777);
	ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, &hn, 1, NULL, 0), 0);
	ASSERT_EQ(b1_release(s, hn), 0);
	mp_keep_fd(r);
	snprintf(a, sizeof(a), "%d", r);
	pid = mp_spawn_crash("recv-installed", "cr_recv", a, NULL);
	mp_reap_killed(pid);
	b1_check_fd(s);

	ASSERT_EQ(b1_recv(r, &m, 0), 0);
	ASSERT_EQ(m.msg.type, BUS1_MSG_DATA);
	ASSERT_TRUE(mp_msg_check(pool + m.msg.offset, m.msg.n_bytes, &h));
	ASSERT_EQ(h.seq, 1);
	ASSERT_EQ(m.msg.n_handles, 1);
	memcpy(&hid, pool + m.msg.offset + ((m.msg.n_bytes + 7) & ~7ULL), 8);
	ASSERT_EQ(hid & 3, 3);
	/* the ID is in r's table and names own's node */
	ASSERT_EQ(b1_transfer(r, hid, own, &dst), 0);
	ASSERT_EQ_U64(dst, 0x300);
	ASSERT_EQ(b1_release(own, 0x300), 0);
	ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	ASSERT_EQ(b1_recv(r, &m, 0), -EAGAIN);
	/* exactly one user reference: nothing was installed twice */
	ASSERT_EQ(mp_poll_wait(own, POLLIN, 200), 0);
	ASSERT_EQ(b1_release(r, hid), 0);
	ASSERT_EQ(b1_release(r, hid), -ENXIO);
	MP_EXPECT_NOTE(own, BUS1_MSG_NODE_RELEASE, 0x300, CR_WAIT_MS);
	ASSERT_EQ(b1_recv(own, &m, 0), -EAGAIN);
	ASSERT_EQ(b1_transfer(r, 0x100, s, &id), 0);
	cr_expect_pool_empty(s, id, r);
	b1_check_domain();
}

/* SLICE_RELEASE of argv[1] on an inherited peer fd (the engine kills us inside). */
T_CHILD(cr_release)
{
	ASSERT_EQ(argc, 2);
	ASSERT_EQ(b1_slice_release(atoi(argv[0]), mp_arg_u64(argv[1])), 0);
	return 3;
}

/*
 * A data-path RECV killed right after its commit, and a SLICE_RELEASE
 * likewise: the message is taken (its slice published, as if the process
 * had died just after the call returned) and the slice is then free; the
 * queue, the lock and the pool go on.
 */
TEST(cr_recv_and_release_killed_after_commit)
{
	int r = b1_open(), s = b1_open();
	const uint8_t *pool = b1_map(r);
	static char buf[MP_MSG_MAX];
	struct iovec v = { buf, mp_msg_build(buf, 1, 1, 1, 900) };
	struct bus1_cmd_recv m;
	struct mp_msg_hdr h;
	uint64_t id;
	char a[16];

	ASSERT_EQ(b1_transfer(r, 0x100, s, &id), 0);
	ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	v.iov_len = mp_msg_build(buf, 1, 2, 1, 900);
	ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	mp_keep_fd(r);
	snprintf(a, sizeof(a), "%d", r);
	mp_reap_killed(mp_spawn_crash("recv-committed", "cr_recv", a, NULL));

	/* the first message was taken; its slice (at 0) is published */
	ASSERT_EQ(b1_recv(r, &m, 0), 0);
	ASSERT_TRUE(mp_msg_check(pool + m.msg.offset, m.msg.n_bytes, &h));
	ASSERT_EQ(h.seq, 2);
	mp_reap_killed(mp_spawn_crash("release-committed", "cr_release", a, "0", NULL));
	ASSERT_EQ(b1_slice_release(r, 0), -ENXIO);
	ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	ASSERT_EQ(b1_recv(r, &m, 0), -EAGAIN);
	cr_expect_pool_empty(s, id, r);
}

/* -------------------------------------------------- crash inside a flush */

/* PEER_RESET with FLUSH on an inherited peer fd. */
T_CHILD(cr_flush)
{
	int fd = atoi(argv[0]);

	ASSERT_EQ(argc, 1);
	ASSERT_EQ(b1_reset(fd, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	return 3;
}

/*
 * §2.3 step 6: a flushing reset killed half-way (after handles were
 * dropped) takes effect entirely or not at all: either the holder got
 * NODE_DESTROY, the owner of the held node NODE_RELEASE and the queue is
 * empty, or none of it happened and a later flush does it all.
 */
TEST(cr_flush_killed_half_way)
{
	int q = b1_open(), h = b1_open(), own = b1_open();
	uint64_t hq, qn, dst;
	struct bus1_cmd_recv m;
	int destroyed;
	char a[16];
	pid_t pid;

	ASSERT_EQ(b1_transfer(q, 0x100, h, &hq), 0);
	ASSERT_EQ(b1_transfer(own, 0x300, q, &qn), 0);
	ASSERT_EQ(b1_send_one(h, hq, "queued", 6), 0);
	mp_keep_fd(q);
	snprintf(a, sizeof(a), "%d", q);
	pid = mp_spawn_crash("flush-dropped", "cr_flush", a, NULL);
	mp_reap_killed(pid);
	b1_check_fd(h);

	destroyed = mp_poll_wait(h, POLLIN, 300) & POLLIN ? 1 : 0;
	if (destroyed) {
		MP_EXPECT_NOTE(h, BUS1_MSG_NODE_DESTROY, hq, CR_WAIT_MS);
		MP_EXPECT_NOTE(own, BUS1_MSG_NODE_RELEASE, 0x300, CR_WAIT_MS);
		ASSERT_EQ(b1_recv(q, &m, 0), -EAGAIN);
		ASSERT_EQ(b1_transfer(q, qn, -1, &dst), -ENXIO);
	} else {
		/* untouched: the node is alive, the handle held, the message queued */
		ASSERT_EQ(b1_recv(own, &m, 0), -EAGAIN);
		ASSERT_EQ(b1_transfer(q, qn, -1, &dst), 0);
		ASSERT_EQ_U64(dst, qn);
		ASSERT_EQ(b1_release(q, qn), 0);
		ASSERT_EQ(b1_send_one(h, hq, "after", 5), 0);
		ASSERT_EQ(b1_recv(q, &m, 0), 0);
		ASSERT_EQ(m.msg.n_bytes, 6);
		ASSERT_EQ(b1_recv(q, &m, 0), 0);
		ASSERT_EQ(m.msg.n_bytes, 5);
		ASSERT_EQ(b1_reset(q, BUS1_PEER_RESET_FLAG_FLUSH), 0);
		MP_EXPECT_NOTE(h, BUS1_MSG_NODE_DESTROY, hq, CR_WAIT_MS);
		MP_EXPECT_NOTE(own, BUS1_MSG_NODE_RELEASE, 0x300, CR_WAIT_MS);
	}
	printf("    note: flush killed half-way was %s\n", destroyed ? "completed" : "rolled back");
	ASSERT_EQ(b1_recv(h, &m, 0), -EAGAIN);
	ASSERT_EQ(b1_recv(own, &m, 0), -EAGAIN);
	/* §3.11: the flush dropped the owner's references: released */
	ASSERT_EQ(b1_send_one(h, hq, "x", 1), -ESHUTDOWN);
	ASSERT_EQ(b1_recv(q, &m, 0), -EAGAIN);
	b1_check_domain();
}

/* -------------------------------------------------- crash in a pool sweep */

#define CR_SLICE (64u << 10)
#define CR_SLICES 40

/* SLICE_RELEASE of slices argv[1]..argv[2]-1 (CR_SLICE each) on an inherited fd. */
T_CHILD(cr_release_range)
{
	int fd = atoi(argv[0]);

	ASSERT_EQ(argc, 3);
	for (int i = atoi(argv[1]); i < atoi(argv[2]); i++)
		ASSERT_EQ(b1_slice_release(fd, (uint64_t)i * CR_SLICE), 0);
	return 3;
}

/*
 * A process killed while giving freed pool pages back (after the commit
 * of the SLICE_RELEASE that started the sweep, with some regions marked):
 * the release stays done, the lock is not wedged, live slices keep their
 * data, and later releases still give the pages back.
 */
TEST(cr_pool_sweep_killed)
{
	int r = b1_open(), s = b1_open();
	const uint8_t *pool = b1_map(r);
	static uint8_t buf[CR_SLICE];
	uint64_t id;
	struct bus1_cmd_recv m;
	struct iovec v = { buf, sizeof(buf) };
	char a[16];
	pid_t pid;
	int i;

	ASSERT_EQ(b1_transfer(r, 0x100, s, &id), 0);
	for (i = 0; i < CR_SLICES; i++) {
		memset(buf, i + 1, sizeof(buf));
		ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	}
	for (i = 0; i < CR_SLICES; i++) {
		ASSERT_EQ(b1_recv(r, &m, 0), 0);
		ASSERT_EQ_U64(m.msg.offset, (uint64_t)i * CR_SLICE);
	}
	/* slices 16.. lie beyond the kept first MiB; 4 of them make a sweep */
	mp_keep_fd(r);
	snprintf(a, sizeof(a), "%d", r);
	pid = mp_spawn_crash("sweep-marked", "cr_release_range", a, "16", "24", NULL);
	mp_reap_killed(pid);
	b1_check_fd(s);

	/* the release that triggered the sweep committed; the next did not run */
	for (i = 16; i < 20; i++)
		ASSERT_EQ(b1_slice_release(r, (uint64_t)i * CR_SLICE), -ENXIO);
	for (i = 0; i < CR_SLICES; i++) {
		if (i >= 16 && i < 20)
			continue;
		for (unsigned k = 0; k < CR_SLICE; k += 4096)
			ASSERT_EQ(pool[(uint64_t)i * CR_SLICE + k], i + 1);
	}
	/* release all but the last: the pages come back despite the crash */
	for (i = 20; i + 1 < CR_SLICES; i++)
		ASSERT_EQ(b1_slice_release(r, (uint64_t)i * CR_SLICE), 0);
	ASSERT_LE(b1_resident_kib(pool, 16u << 20), 1024 + CR_SLICE / 1024 + 256);
	for (unsigned k = 0; k < CR_SLICE; k += 4096)
		ASSERT_EQ(pool[(uint64_t)(CR_SLICES - 1) * CR_SLICE + k], CR_SLICES);
	for (i = 0; i < 16; i++)
		ASSERT_EQ(b1_slice_release(r, (uint64_t)i * CR_SLICE), 0);
	ASSERT_EQ(b1_slice_release(r, (uint64_t)(CR_SLICES - 1) * CR_SLICE), 0);
	cr_expect_pool_empty(s, id, r);
	b1_check_domain();
}

/* -------------------------------------------------- lock waiters */

/* Sends argv[2] numbered messages to one destination (sender argv[3]). */
T_CHILD(cr_sender_loop)
{
	int fd = atoi(argv[0]);
	uint64_t dest = mp_arg_u64(argv[1]);
	int n = atoi(argv[2]);
	uint32_t who = atoi(argv[3]);
	static char buf[MP_MSG_MAX];

	ASSERT_EQ(argc, 4);
	for (int i = 0; i < n; i++) {
		struct iovec v = { buf, mp_msg_build(buf, who, i, 1, 40 + i % 200) };
		int ret;

		while ((ret = b1_send(fd, 0, &dest, 1, NULL, &v, 1, NULL, 0, NULL, 0)) == -EDQUOT)
			mp_sleep_ms(1);
		ASSERT_EQ(ret, 0);
	}
	return 0;
}

/*
 * Decision 4: a process killed while holding the bus lock, with four others
 * contending for it, wedges nobody; every message of the survivors arrives
 * whole, in order, and the victim's messages form a gap-free prefix.
 */
TEST_TIMEOUT(cr_lock_holder_killed_under_contention, 40)
{
	enum { NW = 4, PER = 1000 };
	int r = b1_open();
	const uint8_t *pool = b1_map(r);
	pid_t pid[NW + 1];
	int next[NW + 2] = { 0 };
	int alive = NW + 1, released = 0;
	double t0 = mp_now_ms();

	for (int i = 0; i <= NW; i++) {
		int s = b1_open();
		uint64_t id;
		char a[4][32];

		ASSERT_EQ(b1_transfer(r, 0x100, s, &id), 0);
		mp_keep_fd(s);
		snprintf(a[0], sizeof(a[0]), "%d", s);
		mp_fmt(a[1], id);
		snprintf(a[2], sizeof(a[2]), "%d", PER);
		snprintf(a[3], sizeof(a[3]), "%d", i + 1);
		/* the last one dies inside its 300th commit */
		pid[i] = mp_spawn_crash(i == NW ? "commit-before:300" : NULL, "cr_sender_loop",
					a[0], a[1], a[2], a[3], NULL);
		close(s);
	}
	while (alive > 0 || b1_revents(r, POLLIN)) {
		struct bus1_cmd_recv m;
		struct mp_msg_hdr h;
		int ret = mp_recv_wait(r, &m, 0, 100);

		if (ret == 0 && m.msg.type == BUS1_MSG_NODE_RELEASE) {
			/* §3.7: all senders (and their handles) are gone */
			ASSERT_EQ_U64(m.msg.destination, 0x100);
			ASSERT_EQ(released++, 0);
			continue;
		}
		if (ret == 0) {
			ASSERT_EQ(m.msg.type, BUS1_MSG_DATA);
			ASSERT_TRUE(mp_msg_check(pool + m.msg.offset, m.msg.n_bytes, &h));
			ASSERT_GE(h.sender, 1);
			ASSERT_LE(h.sender, NW + 1);
			ASSERT_EQ(h.seq, next[h.sender]);
			next[h.sender]++;
			ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
			continue;
		}
		ASSERT_EQ(ret, -EAGAIN);
		for (int i = 0; i <= NW; i++) {
			int st;

			if (pid[i] > 0 && waitpid(pid[i], &st, WNOHANG) == pid[i]) {
				if (i == NW)
					ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
				else
					ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
				pid[i] = 0;
				alive--;
			}
		}
		ASSERT_LT(mp_now_ms() - t0, 30000);
	}
	for (int i = 1; i <= NW; i++)
		ASSERT_EQ(next[i], PER);
	ASSERT_LT(next[NW + 1], PER);
	ASSERT_GT(next[NW + 1], 0);
	printf("    note: the victim got %d messages through before dying\n", next[NW + 1]);
	{
		int s = b1_open();
		uint64_t id;

		ASSERT_EQ(b1_transfer(r, 0x100, s, &id), 0);
		cr_expect_pool_empty(s, id, r);
	}
	b1_check_domain();
}

/* -------------------------------------------------- random kills */

#define CR_MAX_INST 128
#define CR_MAX_SEQ 65536

/*
 * Multicasts self-checking messages to subsets of three receivers until
 * killed; every third one carries the sender's own node.
 * argv: fd, instance, dest0, dest1, dest2
 */
T_CHILD(cr_stress_sender)
{
	int fd = atoi(argv[0]);
	uint32_t inst = atoi(argv[1]);
	uint64_t all[3], node = 0x40;
	static char buf[MP_MSG_MAX];

	ASSERT_EQ(argc, 5);
	for (int i = 0; i < 3; i++)
		all[i] = mp_arg_u64(argv[2 + i]);
	for (uint64_t seq = 0; seq < CR_MAX_SEQ; seq++) {
		uint64_t mask = seq % 7 + 1, dests[3];
		size_t nd = 0;
		struct iovec v[2];
		size_t n = mp_msg_build(buf, inst, seq, mask, (seq * 131) % 3000);
		int ret;

		for (int i = 0; i < 3; i++)
			if (mask & (1u << i))
				dests[nd++] = all[i];
		v[0] = (struct iovec){ buf, n / 2 };
		v[1] = (struct iovec){ buf + n / 2, n - n / 2 };
		ret = b1_send(fd, 0, dests, nd, NULL, v, 2, &node, seq % 3 == 0, NULL, 0);
		if (ret == -EDQUOT || ret == -EXFULL) {
			mp_sleep_ms(1);
			continue;
		}
		ASSERT_EQ(ret, 0);
	}
	/* out of sequence numbers: wait for the kill */
	for (;;)
		pause();
}

/* Drains receiver i; records what it saw; returns the number of DATA messages. */
static int cr_drain(int fd, const uint8_t *pool, int i, uint8_t (*seen)[CR_MAX_SEQ], int64_t *last)
{
	struct bus1_cmd_recv m;
	int n = 0, ret;

	while ((ret = b1_recv(fd, &m, 0)) == 0) {
		struct mp_msg_hdr h;

		if (m.msg.type == BUS1_MSG_NODE_DESTROY)
			continue;
		ASSERT_EQ(m.msg.type, BUS1_MSG_DATA);
		if (!mp_msg_check(pool + m.msg.offset, m.msg.n_bytes, &h))
			t_fail(__FILE__, __LINE__, "receiver %d: torn message (%llu bytes at 0x%llx)", i,
			       (unsigned long long)m.msg.n_bytes, (unsigned long long)m.msg.offset);
		ASSERT_LT(h.sender, CR_MAX_INST);
		ASSERT_LT(h.seq, CR_MAX_SEQ);
		ASSERT_TRUE(h.dests & (1u << i));
		/* once, and in order per sender (§7.1) */
		ASSERT_FALSE(seen[h.sender][h.seq] & (1u << i));
		ASSERT_GT((int64_t)h.seq, last[h.sender * 3 + i]);
		last[h.sender * 3 + i] = h.seq;
		seen[h.sender][h.seq] |= 1u << i;
		ASSERT_EQ(m.msg.n_handles, h.seq % 3 == 0 ? 1 : 0);
		if (m.msg.n_handles) {
			uint64_t id;

			memcpy(&id, pool + m.msg.offset + ((m.msg.n_bytes + 7) & ~7ULL), 8);
			if (id != BUS1_HANDLE_INVALID)
				ASSERT_EQ(b1_release(fd, id), 0);
		}
		ASSERT_EQ(b1_slice_release(fd, m.msg.offset), 0);
		n++;
	}
	ASSERT_EQ(ret, -EAGAIN);
	return n;
}

/*
 * Checks what the receivers saw of sender slot `slot` (whose process is
 * dead and whose messages are all drained): each transaction reached all
 * its destinations or none. Clears the slot for reuse; returns the number
 * of transactions seen.
 */
static long long cr_check_sender(uint8_t (*seen)[CR_MAX_SEQ], int64_t *last, int slot)
{
	long long txns = 0;

	for (int q = 0; q < CR_MAX_SEQ; q++) {
		uint8_t m = seen[slot][q];

		if (!m)
			continue;
		if (m != q % 7 + 1)
			t_fail(__FILE__, __LINE__, "sender slot %d seq %d: seen by 0x%x, sent to 0x%x",
			       slot, q, m, q % 7 + 1);
		txns++;
	}
	memset(seen[slot], 0, sizeof(seen[slot]));
	for (int i = 0; i < 3; i++)
		last[slot * 3 + i] = -1;
	return txns;
}

/*
 * §2.8/§7.9, decisions 4 and 6: senders multicasting in a loop are SIGKILLed
 * at random moments, round after round. Afterwards every message received is
 * whole, each transaction reached all its destinations or none, nothing is
 * duplicated or reordered, the pools are empty again and the dead senders'
 * files are gone from the domain. BUS1_TEST_SCALE multiplies the rounds.
 *
 * All of a round's senders are dead and drained when the round ends (a
 * kill inside the lock is recovered by the next locker, before any RECV),
 * so their slots are checked then and reused CR_MAX_INST - 1 senders later.
 */
TEST_TIMEOUT(cr_random_kill_stress, 60)
{
	enum { ROUNDS = 12, NS = 4 };
	static uint8_t seen[CR_MAX_INST][CR_MAX_SEQ];
	static int64_t last[CR_MAX_INST * 3];
	int r[3], p = b1_open();
	const uint8_t *pool[3];
	uint64_t pid_[3];
	unsigned seed = (unsigned)time(NULL) ^ getpid();
	unsigned rounds = ROUNDS * t_scale();
	int inst = 0, data = 0, killed = 0;
	long long txns = 0;
	char before[8192];

	for (int i = 0; i < CR_MAX_INST * 3; i++)
		last[i] = -1;
	for (int i = 0; i < 3; i++) {
		r[i] = b1_open();
		pool[i] = b1_map(r[i]);
		ASSERT_EQ(b1_transfer(r[i], 0x100, p, &pid_[i]), 0);
	}
	mp_domain_files(before, sizeof(before), NULL);
	printf("    note: seed %u\n", seed);
	srand(seed);
	for (unsigned round = 0; round < rounds; round++) {
		pid_t pid[NS];
		int slot[NS];

		for (int k = 0; k < NS; k++) {
			int s = b1_open();
			char a[5][32];

			for (int i = 0; i < 3; i++) {
				uint64_t id;

				ASSERT_EQ(b1_transfer(r[i], 0x100, s, &id), 0);
				mp_fmt(a[2 + i], id);
			}
			mp_keep_fd(s);
			slot[k] = 1 + inst++ % (CR_MAX_INST - 1);
			snprintf(a[0], sizeof(a[0]), "%d", s);
			snprintf(a[1], sizeof(a[1]), "%d", slot[k]);
			pid[k] = mp_spawn("cr_stress_sender", a[0], a[1], a[2], a[3], a[4], NULL);
			close(s);
		}
		/* kill them one by one at random moments, draining meanwhile */
		for (int k = 0; k < NS; k++) {
			double until = mp_now_ms() + 5 + rand() % 60;

			while (mp_now_ms() < until) {
				for (int i = 0; i < 3; i++)
					data += cr_drain(r[i], pool[i], i, seen, last);
				mp_sleep_ms(1);
			}
			ASSERT_OK(kill(pid[k], SIGKILL));
			mp_reap_killed(pid[k]);
			killed++;
		}
		b1_check_fd(p);
		/* all of this round's senders are dead: this drain sees the rest */
		for (int i = 0; i < 3; i++)
			data += cr_drain(r[i], pool[i], i, seen, last);
		for (int k = 0; k < NS; k++)
			txns += cr_check_sender(seen, last, slot[k]);
	}
	printf("    note: %d senders killed, %lld transactions, %d messages checked\n", killed, txns, data);
	ASSERT_GT(txns, 100);
	for (int i = 0; i < 3; i++)
		cr_expect_pool_empty(p, pid_[i], r[i]);
	/* every dead sender was torn down: only our peers' files remain */
	mp_expect_domain_files(before, CR_WAIT_MS);
	b1_check_domain();
}

/* -------------------------------------------------- receiver killed */

/*
 * Receives numbered messages on an inherited peer fd, checking each, and
 * publishes the last sequence number seen in a shared page (argv[1]: memfd).
 * After message argv[2] it stops receiving and waits to be killed, so that
 * a parent that is slow to be scheduled still kills it mid-stream.
 */
T_CHILD(cr_receiver)
{
	int fd = atoi(argv[0]);
	int mfd = atoi(argv[1]);
	int64_t park = atoll(argv[2]);
	volatile int64_t *lastp;
	const uint8_t *pool;

	ASSERT_EQ(argc, 3);
	lastp = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	ASSERT_TRUE(lastp != MAP_FAILED);
	pool = b1_map(fd);
	for (;;) {
		struct bus1_cmd_recv m;
		struct mp_msg_hdr h;
		int ret = mp_recv_wait(fd, &m, 0, 5000);

		if (ret == -EAGAIN)
			return 0;
		ASSERT_EQ(ret, 0);
		ASSERT_TRUE(mp_msg_check(pool + m.msg.offset, m.msg.n_bytes, &h));
		ASSERT_EQ((int64_t)h.seq, *lastp + 1);
		*lastp = h.seq;
		ASSERT_EQ(b1_slice_release(fd, m.msg.offset), 0);
		while ((int64_t)h.seq >= park)
			pause();
	}
}

/*
 * A process receiving from a peer it shares is killed mid-stream: what it
 * did not dequeue stays queued, whole, in order — the rest of the stream is
 * exactly the suffix after its last complete RECV (or the one after that,
 * if it died before recording it).
 */
TEST_TIMEOUT(cr_receiver_killed_mid_stream, 30)
{
	enum { N = 3000, PARK = N - 100 };
	int r = b1_open(), s = b1_open();
	const uint8_t *pool = b1_map(r);
	static char buf[MP_MSG_MAX];
	volatile int64_t *lastp;
	int mfd = memfd_create("cr-last", 0);
	uint64_t id;
	int64_t last, next;
	char a[3][16];
	pid_t pid;

	ASSERT_GE(mfd, 0);
	ASSERT_OK(ftruncate(mfd, 4096));
	lastp = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	ASSERT_TRUE(lastp != MAP_FAILED);
	*lastp = -1;
	ASSERT_EQ(b1_transfer(r, 0x100, s, &id), 0);
	for (int i = 0; i < N; i++) {
		struct iovec v = { buf, mp_msg_build(buf, 1, i, 1, i % 400) };

		ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	}
	mp_keep_fd(r);
	snprintf(a[0], sizeof(a[0]), "%d", r);
	snprintf(a[1], sizeof(a[1]), "%d", mfd);
	snprintf(a[2], sizeof(a[2]), "%d", PARK);
	pid = mp_spawn("cr_receiver", a[0], a[1], a[2], NULL);
	/* let it get going, then kill it while it is busy receiving */
	while (*lastp < 200) {
		ASSERT_EQ(waitpid(pid, NULL, WNOHANG), 0);
		mp_sleep_ms(1);
	}
	ASSERT_OK(kill(pid, SIGKILL));
	mp_reap_killed(pid);
	b1_check_fd(s);
	last = *lastp;
	ASSERT_LT(last, N - 1);
	next = -1;
	for (;;) {
		struct bus1_cmd_recv m;
		struct mp_msg_hdr h;
		int ret = b1_recv(r, &m, 0);

		if (ret == -EAGAIN)
			break;
		ASSERT_EQ(ret, 0);
		ASSERT_TRUE(mp_msg_check(pool + m.msg.offset, m.msg.n_bytes, &h));
		if (next < 0) {
			/* the first left is right after the last one it recorded, or one later */
			ASSERT_GE((int64_t)h.seq, last + 1);
			ASSERT_LE((int64_t)h.seq, last + 2);
		} else {
			ASSERT_EQ((int64_t)h.seq, next);
		}
		next = h.seq + 1;
		ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	}
	ASSERT_EQ(next, N);
	printf("    note: receiver killed after seq %lld\n", (long long)last);
	/* the dead process's published slices go with a flush */
	ASSERT_EQ(b1_reset(r, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_EQ(b1_transfer(r, 0x100, s, &id), 0);
	cr_expect_pool_empty(s, id, r);
	b1_check_domain();
}

/* Exec'd entry: sends one message carrying a pipe fd from peer argv[0] to handle argv[1]. */
T_CHILD(cr_send_with_fd)
{
	int s = atoi(argv[0]), p[2];
	uint64_t dest = mp_arg_u64(argv[1]);
	struct iovec v = { .iov_base = "fd", .iov_len = 2 };

	if (pipe(p) < 0)
		return 2;
	return b1_send(s, 0, &dest, 1, NULL, &v, 1, NULL, 0, p, 1) < 0 ? 3 : 0;
}

/*
 * The bus still works: one message from s reaches r through handle `id`;
 * once both are closed, only the segment is left in the domain.
 */
static void cr_message_then_close(int r, int s, uint64_t id)
{
	struct bus1_cmd_recv m;

	ASSERT_EQ(b1_send_one(s, id, "x", 1), 0);
	ASSERT_EQ(b1_recv(r, &m, 0), 0);
	ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	ASSERT_OK(close(r));
	ASSERT_OK(close(s));
	mp_expect_domain_files("segment\n", 0);
}

/*
 * §8.6: killed right after the commit created the receiver's fd vault
 * (its first side effect), before the carrier went out: the send is rolled
 * back, and the vault's socket file, which no committed state names, goes
 * with the receiver when it is torn down.
 */
TEST(cr_send_fd_killed_after_vault_created)
{
	int r = b1_open(), s = b1_open();
	uint64_t id = BUS1_HANDLE_INVALID;
	char files[4096], sfd[16];
	struct bus1_cmd_recv m;

	ASSERT_EQ(b1_transfer(r, 0x100, s, &id), 0);
	mp_keep_fd(s);
	snprintf(sfd, sizeof(sfd), "%d", s);
	mp_reap_killed(mp_spawn_crash("commit-op:1", "cr_send_with_fd", sfd, mp_fmt(files, id), NULL));
	b1_check_fd(r);
	ASSERT_EQ(b1_recv(r, &m, 0), -EAGAIN);
	mp_domain_files(files, sizeof(files), NULL);
	ASSERT_TRUE(strstr(files, "vault.") != NULL);
	/* the bus still carries fds to r */
	cr_message_then_close(r, s, id);
	b1_check_domain();
}

/* ------------------------------------------- files left by a killed process */

/* Opens a peer (the engine kills us inside). */
T_CHILD(cr_open)
{
	ASSERT_EQ(argc, 0);
	b1_open();
	return 3;
}

/*
 * docs/design.md, fixed decision 5: an opener killed after it made its peer's socket
 * and pool file but before the peer's record existed leaves two files no
 * record names; the periodic scan of the processes that remain removes
 * them, and the bus goes on.
 */
TEST(cr_open_killed_before_record)
{
	int r = b1_open(), s;
	char want[4096], files[4096];
	uint64_t id;

	ASSERT_EQ(mp_domain_files(want, sizeof(want), NULL), 3);
	mp_reap_killed(mp_spawn_crash("open-files-made", "cr_open", NULL));
	ASSERT_EQ(mp_domain_files(files, sizeof(files), NULL), 5);
	mp_expect_domain_files(want, 3 * CR_WAIT_MS);
	s = b1_open();
	ASSERT_EQ(b1_transfer(r, 0x100, s, &id), 0);
	cr_message_then_close(r, s, id);
	b1_check_domain();
}

/* Opens a peer and closes it (the engine kills us inside the close). */
T_CHILD(cr_open_close)
{
	ASSERT_EQ(argc, 0);
	close(b1_open());
	return 3;
}

/*
 * §8.5 with txn rule 4: a process killed inside the close that tore its peer
 * down, after the teardown committed and before the peer's files were
 * removed, leaves files no record names; the scan removes them.
 */
TEST(cr_close_killed_before_files_removed)
{
	int r = b1_open();
	char want[4096], files[4096];

	ASSERT_EQ(mp_domain_files(want, sizeof(want), NULL), 3);
	mp_reap_killed(mp_spawn_crash("post-unlink", "cr_open_close", NULL));
	ASSERT_EQ(mp_domain_files(files, sizeof(files), NULL), 5);
	mp_expect_domain_files(want, 3 * CR_WAIT_MS);
	ASSERT_OK(close(r));
	mp_expect_domain_files("segment\n", 0);
	b1_check_domain();
}

/*
 * txn rule 4: a receiver killed between the commit of the RECV that emptied
 * its queue and the removal of its fd vault's socket file leaves that file;
 * once a later vault generation exists nothing names it, and the scan
 * removes it while the peer lives on.
 */
TEST(cr_recv_killed_before_vault_unlink)
{
	int r = b1_open(), s = b1_open(), p[2], got;
	const uint8_t *pool = b1_map(r);
	uint64_t id;
	char a[16], want[4096];
	struct bus1_cmd_recv m;
	struct iovec v = { .iov_base = "fd", .iov_len = 2 };

	ASSERT_EQ(mp_domain_files(want, sizeof(want), NULL), 5);
	ASSERT_OK(pipe(p));
	ASSERT_EQ(b1_transfer(r, 0x100, s, &id), 0);
	ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, NULL, 0, p, 1), 0);
	mp_keep_fd(r);
	snprintf(a, sizeof(a), "%d", r);
	mp_reap_killed(mp_spawn_crash("post-unlink", "cr_recv", a, NULL));
	b1_check_fd(r);
	ASSERT_EQ(b1_recv(r, &m, 0), -EAGAIN);
	/* a second generation comes and goes */
	ASSERT_EQ(b1_send(s, 0, &id, 1, NULL, &v, 1, NULL, 0, p, 1), 0);
	ASSERT_EQ(b1_recv(r, &m, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	ASSERT_EQ(m.msg.n_fds, 1);
	memcpy(&got, pool + m.msg.offset + ((m.msg.n_bytes + 7) & ~7ULL), sizeof(got));
	ASSERT_OK(close(got));
	ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	mp_expect_domain_files(want, 3 * CR_WAIT_MS);
	ASSERT_OK(close(p[0]));
	ASSERT_OK(close(p[1]));
	ASSERT_OK(close(r));
	ASSERT_OK(close(s));
	mp_expect_domain_files("segment\n", 0);
	b1_check_domain();
}
