/* SPDX-License-Identifier: MIT */
/*
 * A frozen process never freezes the bus: a process stopped (SIGSTOP) at
 * any point inside SEND, RECV or SLICE_RELEASE delays no unicast,
 * multicast or notification between other peers. Where it holds no lock
 * (resolving under its own peer's lock, copying the payload, between the
 * steps of a multicast's commit) even the receivers its multicast touches
 * go on: the first one that meets a staged entry finishes the commit.
 * Inside a receiver's section only that receiver's traffic waits for it.
 * A SEND that carries handles is a transaction under the domain-wide lock:
 * frozen there, it delays other transactions but no plain SEND, RECV or
 * SLICE_RELEASE.
 *
 * The frozen process is an exec'd child that stops itself with
 * BUS1_PARK_AT=<point>[:n] (the engine raises SIGSTOP the n-th time it gets
 * there). A watchdog process lets it go after FZ_STUCK_MS if the other
 * traffic has not finished by then, and the case fails.
 */
#define _GNU_SOURCE
#include "mp-util.h"

#define FZ_WAIT_MS 5000
#define FZ_STUCK_MS 15000

enum fz_op { FZ_MULTICAST, FZ_UNICAST, FZ_RECV, FZ_RELEASE, FZ_TXN };

/* The frozen message: sender 9, seq 1. */
static size_t fz_build(char *buf)
{
	return mp_msg_build(buf, 9, 1, 1, 3000);
}

/* SEND of the frozen message in three vecs from argv[0] to argv[1..] (no handles). */
T_CHILD(fz_send)
{
	int fd = atoi(argv[0]), nd = argc - 1;
	static char buf[MP_MSG_MAX];
	uint64_t dests[3];
	struct iovec v[3];
	size_t n = fz_build(buf);

	ASSERT_TRUE(nd >= 1 && nd <= 3);
	for (int i = 0; i < nd; i++)
		dests[i] = mp_arg_u64(argv[1 + i]);
	v[0] = (struct iovec){ buf, 100 };
	v[1] = (struct iovec){ buf + 100, 1000 };
	v[2] = (struct iovec){ buf + 1100, n - 1100 };
	ASSERT_EQ(b1_send(fd, 0, dests, nd, NULL, v, 3, NULL, 0, NULL, 0), 0);
	return 0;
}

/* SEND of the frozen message from argv[0] to argv[1], carrying a new node 0x300 (a transaction). */
T_CHILD(fz_send_handle)
{
	static char buf[MP_MSG_MAX];
	uint64_t dest = mp_arg_u64(argv[1]), h = 0x300;
	struct iovec v = { buf, fz_build(buf) };

	ASSERT_EQ(argc, 2);
	ASSERT_EQ(b1_send(atoi(argv[0]), 0, &dest, 1, NULL, &v, 1, &h, 1, NULL, 0), 0);
	return 0;
}

/* RECV at argv[0]: the frozen message. */
T_CHILD(fz_recv)
{
	int fd = atoi(argv[0]);
	const uint8_t *pool = b1_map(fd);
	struct bus1_cmd_recv r;
	struct mp_msg_hdr h;

	ASSERT_EQ(argc, 1);
	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_TRUE(mp_msg_check(pool + r.msg.offset, r.msg.n_bytes, &h));
	ASSERT_EQ(h.sender, 9);
	return 0;
}

/* SLICE_RELEASE of argv[1] at argv[0]. */
T_CHILD(fz_release)
{
	ASSERT_EQ(argc, 2);
	ASSERT_EQ(b1_slice_release(atoi(argv[0]), mp_arg_u64(argv[1])), 0);
	return 0;
}

/*
 * The peers: F (the frozen sender) holds handles of X, Y and D; C holds
 * handles of D and E and of D's node 0x200.
 */
struct fz_bus {
	int f, x, y, c, d, e;
	uint64_t fx, fy, fd, cd, ce, c200;
};

static void fz_setup(struct fz_bus *b)
{
	b->f = b1_open();
	b->x = b1_open();
	b->y = b1_open();
	b->c = b1_open();
	b->d = b1_open();
	b->e = b1_open();
	ASSERT_EQ(b1_transfer(b->x, 0x100, b->f, &b->fx), 0);
	ASSERT_EQ(b1_transfer(b->y, 0x100, b->f, &b->fy), 0);
	ASSERT_EQ(b1_transfer(b->d, 0x100, b->f, &b->fd), 0);
	ASSERT_EQ(b1_transfer(b->d, 0x100, b->c, &b->cd), 0);
	ASSERT_EQ(b1_transfer(b->e, 0x100, b->c, &b->ce), 0);
	ASSERT_EQ(b1_transfer(b->d, 0x200, b->c, &b->c200), 0);
}

/* Sends `seq` of sender `who` to dests (data path). */
static void fz_send_msg(int fd, const uint64_t *dests, int n, uint32_t who, uint64_t seq)
{
	static char buf[MP_MSG_MAX];
	struct iovec v = { buf, mp_msg_build(buf, who, seq, 1, 200) };

	ASSERT_EQ(b1_send(fd, 0, dests, n, NULL, &v, 1, NULL, 0, NULL, 0), 0);
}

/*
 * Receives at fd until the message (who, seq) comes; the frozen message
 * (sender 9) may come first, once at most. Returns how often it did.
 */
static int fz_expect(int fd, uint32_t who, uint64_t seq)
{
	const uint8_t *pool = b1_map(fd);
	int frozen = 0;

	for (;;) {
		struct bus1_cmd_recv r;
		struct mp_msg_hdr h;

		ASSERT_EQ(mp_recv_wait(fd, &r, 0, FZ_WAIT_MS), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
		ASSERT_TRUE(mp_msg_check(pool + r.msg.offset, r.msg.n_bytes, &h));
		ASSERT_EQ(b1_slice_release(fd, r.msg.offset), 0);
		if (h.sender == who && h.seq == seq)
			return frozen;
		ASSERT_EQ(h.sender, 9);
		ASSERT_EQ(frozen, 0);
		frozen++;
	}
}

/* A process that lets `pid` go (SIGCONT) after FZ_STUCK_MS and then writes to `fired`. */
static pid_t fz_watchdog(pid_t pid, int fired)
{
	pid_t w = mp_fork();

	if (w == 0) {
		mp_sleep_ms(FZ_STUCK_MS);
		kill(pid, SIGCONT);
		mp_put(fired, "!", 1);
		_exit(0);
	}
	return w;
}

/*
 * The traffic between other peers: C→D unicast, C→{D,E} multicast and,
 * unless `no_txn`, NODE_DESTROY notifications from D's destruction of
 * 0x200 (to C and to D itself). Returns how often D met the frozen
 * message on the way.
 */
static int fz_traffic(const struct fz_bus *b, int no_txn)
{
	uint64_t both[2] = { b->cd, b->ce };
	int met = 0;

	fz_send_msg(b->c, &b->cd, 1, 1, 1);
	met += fz_expect(b->d, 1, 1);
	fz_send_msg(b->c, both, 2, 1, 2);
	met += fz_expect(b->d, 1, 2);
	ASSERT_EQ(fz_expect(b->e, 1, 2), 0);
	if (!no_txn) {
		uint64_t node = 0x200;
		struct bus1_cmd_nodes_destroy cmd = { .ptr_nodes = (uintptr_t)&node, .n_nodes = 1 };

		ASSERT_EQ(b1_ioctl(b->d, BUS1_CMD_NODES_DESTROY, &cmd), 0);
		MP_EXPECT_NOTE(b->c, BUS1_MSG_NODE_DESTROY, b->c200, FZ_WAIT_MS);
		MP_EXPECT_NOTE(b->d, BUS1_MSG_NODE_DESTROY, 0x200, FZ_WAIT_MS);
	}
	return met;
}

/*
 * Freezes `op` at `point` in a child, runs the other peers' traffic while
 * it is stopped, lets it go, and checks that its operation took effect
 * exactly once. A multicast goes to X and Y, and to D when `overlap`.
 */
static void fz_case(const char *point, enum fz_op op, int overlap)
{
	struct fz_bus b;
	uint64_t dests[3], published = 0;
	char a[4][32];
	int fired[2], status, met, nd = 0;
	pid_t pid, dog;
	char c;

	fz_setup(&b);
	dests[nd++] = b.fx;
	if (op == FZ_MULTICAST) {
		dests[nd++] = b.fy;
		if (overlap)
			dests[nd++] = b.fd;
	}
	/* warm every path up, so that nothing needs room meanwhile */
	fz_send_msg(b.f, (uint64_t[]){ b.fx, b.fy, b.fd }, 3, 2, 1);
	ASSERT_EQ(fz_expect(b.x, 2, 1), 0);
	ASSERT_EQ(fz_expect(b.y, 2, 1), 0);
	ASSERT_EQ(fz_expect(b.d, 2, 1), 0);
	fz_send_msg(b.c, (uint64_t[]){ b.cd, b.ce }, 2, 2, 2);
	ASSERT_EQ(fz_expect(b.d, 2, 2), 0);
	ASSERT_EQ(fz_expect(b.e, 2, 2), 0);
	if (op == FZ_RECV || op == FZ_RELEASE) {
		static char buf[MP_MSG_MAX];
		struct iovec v = { buf, fz_build(buf) };

		ASSERT_EQ(b1_send(b.f, 0, &b.fx, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
		if (op == FZ_RELEASE) {
			struct bus1_cmd_recv r;

			ASSERT_EQ(b1_recv(b.x, &r, 0), 0);
			published = r.msg.offset;
		}
	}

	mp_keep_fd(b.f);
	mp_keep_fd(b.x);
	snprintf(a[0], sizeof(a[0]), "%d", op == FZ_RECV || op == FZ_RELEASE ? b.x : b.f);
	for (int i = 0; i < nd; i++)
		mp_fmt(a[1 + i], dests[i]);
	switch (op) {
	case FZ_MULTICAST:
	case FZ_UNICAST:
		pid = mp_spawn_env_v(t_self_exe(), "BUS1_PARK_AT", point, "fz_send",
				     (const char *const[]){ a[0], a[1], nd > 1 ? a[2] : NULL, nd > 2 ? a[3] : NULL, NULL });
		break;
	case FZ_TXN:
		pid = mp_spawn_env_v(t_self_exe(), "BUS1_PARK_AT", point, "fz_send_handle",
				     (const char *const[]){ a[0], a[1], NULL });
		break;
	case FZ_RECV:
		pid = mp_spawn_env_v(t_self_exe(), "BUS1_PARK_AT", point, "fz_recv", (const char *const[]){ a[0], NULL });
		break;
	default:
		pid = mp_spawn_env_v(t_self_exe(), "BUS1_PARK_AT", point, "fz_release",
				     (const char *const[]){ a[0], mp_hex(published), NULL });
		break;
	}
	ASSERT_EQ(waitpid(pid, &status, WUNTRACED), pid);
	if (!WIFSTOPPED(status))
		t_fail(__FILE__, __LINE__, "the child did not stop at %s: status 0x%x", point, status);

	ASSERT_OK(pipe(fired));
	dog = fz_watchdog(pid, fired[1]);
	met = fz_traffic(&b, op == FZ_TXN);
	kill(dog, SIGKILL);
	mp_wait(dog);
	ASSERT_OK(close(fired[1]));
	if (read(fired[0], &c, 1) == 1)
		t_fail(__FILE__, __LINE__, "frozen at %s: the other peers' traffic waited for it", point);
	close(fired[0]);

	ASSERT_OK(kill(pid, SIGCONT));
	mp_reap(pid);
	/* the frozen operation took effect, once */
	switch (op) {
	case FZ_MULTICAST:
	case FZ_UNICAST:
	case FZ_TXN:
		ASSERT_EQ(fz_expect(b.x, 9, 1), 0);
		if (nd > 1)
			ASSERT_EQ(fz_expect(b.y, 9, 1), 0);
		if (nd > 2 && !met)
			ASSERT_EQ(fz_expect(b.d, 9, 1), 0);
		break;
	case FZ_RECV:
		break;
	case FZ_RELEASE:
		ASSERT_EQ(b1_slice_release(b.x, published), -ENXIO);
		break;
	}
	{
		int all[5] = { b.x, b.y, b.c, b.d, b.e };
		struct bus1_cmd_recv r;

		for (int i = 0; i < 5; i++)
			ASSERT_EQ(b1_recv(all[i], &r, 0), -EAGAIN);
	}
}

/* Frozen in its own peer's section, resolving destinations: D, one of them, goes on */
TEST_TIMEOUT(fz_send_resolving, 40)
{
	fz_case("send-resolving", FZ_MULTICAST, 1);
}

/* Frozen in the middle of copying the payload (no lock): D, a destination, goes on */
TEST_TIMEOUT(fz_send_copying, 40)
{
	fz_case("send-copying:2", FZ_MULTICAST, 1);
}

/* Frozen with every payload copied, before staging (no lock): D goes on */
TEST_TIMEOUT(fz_send_copied, 40)
{
	fz_case("send-copied:3", FZ_MULTICAST, 1);
}

/* Frozen with its entries staged (no lock): D finishes the commit when it meets one */
TEST_TIMEOUT(fz_send_staged, 40)
{
	fz_case("send-staged", FZ_MULTICAST, 1);
}

/* Frozen with the commit stamp chosen (no lock): D finishes the commit */
TEST_TIMEOUT(fz_send_sealed, 40)
{
	fz_case("send-sealed", FZ_MULTICAST, 1);
}

/* Frozen in X's section, preparing its record: only X waits */
TEST_TIMEOUT(fz_send_prepared, 40)
{
	fz_case("send-prepared", FZ_MULTICAST, 0);
}

/* Frozen in a receiver's section while staging: only that receiver waits */
TEST_TIMEOUT(fz_send_staging, 40)
{
	fz_case("send-append", FZ_MULTICAST, 0);
}

/* Frozen in a receiver's section while re-stamping its entries: only that receiver waits */
TEST_TIMEOUT(fz_send_committing, 40)
{
	fz_case("commit-op", FZ_MULTICAST, 0);
}

/* A unicast frozen in X's section, before and after its commit: only X waits */
TEST_TIMEOUT(fz_unicast_committing, 60)
{
	fz_case("commit-before", FZ_UNICAST, 0);
	fz_case("commit-after", FZ_UNICAST, 0);
}

/* A RECV frozen in its own section after the commit: only its own queue waits */
TEST_TIMEOUT(fz_recv_committed, 40)
{
	fz_case("recv-committed", FZ_RECV, 0);
}

/* A SLICE_RELEASE frozen in its own section after the commit */
TEST_TIMEOUT(fz_release_committed, 40)
{
	fz_case("release-committed", FZ_RELEASE, 0);
}

/* A SEND with a handle frozen under the domain-wide lock: no plain SEND or RECV waits */
TEST_TIMEOUT(fz_transaction_copied, 40)
{
	fz_case("send-copied", FZ_TXN, 0);
}
