/* SPDX-License-Identifier: MIT */
/*
 * Programs of both ABIs on one bus, in separate processes. This file is
 * built twice: as a final-ABI program (bin/mp_final_mixed, -DBUS1_ABI_FINAL),
 * which runs the cases, and as an RFC v1 program (bin/mp_final_mixed.v1,
 * the header's default layout), whose entry points the cases exec. Each
 * side uses only <linux/bus1.h> in its own mode: the same source, two ABIs,
 * talking to each other with messages, handles, fds and notifications.
 */
#define _GNU_SOURCE
#include <sys/syscall.h>

#include "mp-util.h"
#include "abi-both.h"

#define WAIT_MS MP_WAIT_MS

/* RECV with max_offset = the whole pool of this side's ABI; waits for an entry. */
static int recv_wait(int fd, struct bus1_cmd_recv *r, uint64_t flags)
{
	double end = mp_now_ms() + WAIT_MS;

	for (;;) {
		int ret;

		memset(r, 0, sizeof(*r));
		r->flags = flags;
#ifdef BUS1_ABI_FINAL
		r->max_offset = B1_POOL_SIZE_FINAL;
#else
		r->max_offset = B1_POOL_SIZE;
#endif
		ret = b1_ioctl(fd, BUS1_CMD_RECV, r);
		if (ret != -EAGAIN || mp_now_ms() > end)
			return ret;
		mp_poll_wait(fd, POLLIN, 100);
	}
}

/* Payload, handle j and fd k of a received DATA message. */
static const uint8_t *payload(const uint8_t *pool, const struct bus1_cmd_recv *r)
{
	return pool + r->msg.offset;
}

static uint64_t handle_at(const uint8_t *pool, const struct bus1_cmd_recv *r, unsigned j)
{
	uint64_t h;

	memcpy(&h, pool + r->msg.offset + MP_A8(r->msg.n_bytes) + 8 * j, sizeof(h));
	return h;
}

static int fd_at(const uint8_t *pool, const struct bus1_cmd_recv *r, unsigned k)
{
	int fd;

	memcpy(&fd, pool + r->msg.offset + MP_A8(r->msg.n_bytes) + 8 * r->msg.n_handles + 4 * k, sizeof(fd));
	return fd;
}

#ifndef BUS1_ABI_FINAL

/* ------------------------------------------------- the v1 program side */

_Static_assert(sizeof(struct bus1_cmd_recv) == 96, "the v1 side speaks v1");

/*
 * argv: peer fd, the handle of the final side's node N1, parent pid,
 * report fd. Receives a multicast "ping" (to its nodes 0x100 and 0x200,
 * each entry carrying the final side's node N2 and a pipe's write end),
 * answers "pong" to N2 and N1 in one SEND carrying its own node 0x300 and
 * the pipe, then expects NODE_DESTROY for N2 and NODE_RELEASE for 0x300.
 */
T_CHILD(v1_side)
{
	int fd = mp_arg(argv[0]), rep = mp_arg(argv[3]), pipe_w = -1;
	uint64_t n1 = mp_arg_u64(argv[1]), x = 0, own = 0x300;
	pid_t parent = mp_arg(argv[2]);
	const uint8_t *pool = b1_map(fd);
	struct bus1_cmd_recv r;

	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(recv_wait(fd, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
		ASSERT_EQ_U64(r.msg.destination, i == 0 ? 0x100 : 0x200);
		ASSERT_EQ(r.msg.flags, i == 0 ? BUS1_MSG_FLAG_CONTINUE : 0);	/* 0x2 here */
		ASSERT_EQ(r.msg.uid, getuid());
		ASSERT_EQ(r.msg.gid, getgid());
		ASSERT_EQ(r.msg.pid, parent);
		ASSERT_EQ(r.msg.n_secctx, 0);
		ASSERT_EQ(r.msg.n_bytes, 4);
		ASSERT_MEMEQ(payload(pool, &r), "ping", 4);
		ASSERT_EQ(r.msg.n_handles, 1);
		ASSERT_EQ(r.msg.n_fds, 1);
		ASSERT_TRUE(i == 0 || handle_at(pool, &r, 0) == x);
		x = handle_at(pool, &r, 0);
		ASSERT_EQ_U64(x & 3, 3);
		if (pipe_w >= 0)
			close(pipe_w);
		pipe_w = fd_at(pool, &r, 0);
		ASSERT_EQ(b1_slice_release(fd, r.msg.offset), 0);
	}
	ASSERT_EQ(write(pipe_w, "v1", 2), 2);
	/* the received ID is usable: a multicast to it and to N1 */
	uint64_t dst[] = { x, n1 };
	ASSERT_EQ(b1_send(fd, 0, dst, 2, NULL, &(struct iovec){ "pong", 4 }, 1, &own, 1, &pipe_w, 1), 0);
	close(pipe_w);
	/* the final side destroys N2: this side holds it */
	ASSERT_EQ(recv_wait(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, x);
	ASSERT_EQ(r.msg.uid, 0xFFFFFFFFu);
	ASSERT_EQ(r.msg.pid, 0);
	ASSERT_EQ_U64(r.msg.offset, BUS1_OFFSET_INVALID);
	ASSERT_EQ(b1_release(fd, x), 0);
	ASSERT_EQ(b1_release(fd, x), 0);
	ASSERT_EQ(b1_release(fd, x), -ENXIO);
	/* and lets go of 0x300 */
	ASSERT_EQ(recv_wait(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_RELEASE);
	ASSERT_EQ_U64(r.msg.destination, own);
	mp_put_u64(rep, 0x600d);
	return 0;
}

/* argv: peer fd, report fd. PEEKs the head (v1 layout) and reports its offset and sender pid. */
T_CHILD(v1_peek)
{
	int fd = mp_arg(argv[0]), rep = mp_arg(argv[1]);
	struct bus1_cmd_recv r;

	ASSERT_EQ(recv_wait(fd, &r, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	mp_put_u64(rep, r.msg.offset);
	mp_put_u64(rep, r.msg.pid);
	return 0;
}

/* argv: peer fd. One v1 RECV of an empty queue (it latches the peer). */
T_CHILD(v1_recv_empty)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(mp_arg(argv[0]), &r, 0), -EAGAIN);
	return 0;
}

/* argv: peer fd, destination handle, count. Sends `count` messages "v1 #i". */
T_CHILD(v1_send)
{
	int fd = mp_arg(argv[0]), n = mp_arg(argv[2]);
	uint64_t dest = mp_arg_u64(argv[1]);
	char buf[32];

	for (int i = 0; i < n; i++) {
		int len = snprintf(buf, sizeof(buf), "v1 #%d", i);

		ASSERT_EQ(b1_send_one(fd, dest, buf, len), 0);
	}
	return 0;
}

#else

/* ----------------------------------------------- the final program side */

_Static_assert(sizeof(struct bus1_cmd_recv) == 72, "the final side speaks final");

/* bin/mp_final_mixed.v1, next to this binary. */
static const char *v1_exe(void)
{
	static char exe[4200];

	snprintf(exe, sizeof(exe), "%s.v1", t_self_exe());
	return exe;
}

#define spawn_v1(name, ...) mp_spawn_exe_v(v1_exe(), NULL, (name), (const char *const[]){ __VA_ARGS__, NULL })

/*
 * A final program and a v1 program converse: multicasts both ways (each
 * side sees CONTINUE in its own bit), handles both ways (the IDs each side
 * receives are usable), an fd both ways, NODE_DESTROY and NODE_RELEASE
 * both ways; the v1 side sees the final side's credentials. Each peer's
 * pool is its own ABI's size.
 */
TEST_TIMEOUT(mixed_conversation_across_processes, 60)
{
	int p = b1_open(), c = mp_open_inherit(), rep[2], pp[2];
	uint64_t n1 = 0x100, n2 = 0x200, hn1, hc[2], y = 0;
	const uint8_t *pool = b1_map(p);
	struct bus1_cmd_recv r;
	char buf[4];
	pid_t pid;

	mp_pipe(rep);
	ASSERT_OK(pipe2(pp, O_CLOEXEC));
	hn1 = mp_node(p, n1, c);
	hc[0] = mp_node(c, 0x100, p);
	hc[1] = mp_node(c, 0x200, p);
	pid = spawn_v1("v1_side", mp_str(c), mp_hex(hn1), mp_str(getpid()), mp_str(rep[1]));
	close(c);
	ASSERT_EQ(b1_send(p, 0, hc, 2, NULL, &(struct iovec){ "ping", 4 }, 1, &n2, 1, &pp[1], 1), 0);
	close(pp[1]);
	/* the answer: to n2, then n1, one transaction */
	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(recv_wait(p, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
		ASSERT_EQ_U64(r.msg.destination, i == 0 ? n2 : n1);
		ASSERT_EQ(r.msg.flags, i == 0 ? BUS1_MSG_FLAG_CONTINUE : 0);	/* 0x1 here */
		ASSERT_EQ(r.msg.n_bytes, 4);
		ASSERT_MEMEQ(payload(pool, &r), "pong", 4);
		ASSERT_EQ(r.msg.n_handles, 1);
		ASSERT_TRUE(i == 0 || handle_at(pool, &r, 0) == y);
		y = handle_at(pool, &r, 0);
		ASSERT_EQ_U64(y & 3, 3);
		ASSERT_EQ(r.msg.n_fds, 1);
		ASSERT_EQ(write(fd_at(pool, &r, 0), "fi", 2), 2);
		close(fd_at(pool, &r, 0));
		ASSERT_EQ(b1_slice_release(p, r.msg.offset), 0);
	}
	mp_get(pp[0], buf, 4);
	ASSERT_MEMEQ(buf, "v1fi", 4);
	/* the ID received from the v1 side is usable: transfer it to a new peer */
	int q = b1_open();
	uint64_t yq;
	ASSERT_EQ(b1_transfer(p, y, q, &yq), 0);
	ASSERT_NE(yq, BUS1_HANDLE_INVALID);
	close(q);
	/* notifications both ways */
	ASSERT_EQ(b1_destroy_one(p, n2), 0);
	ASSERT_EQ(recv_wait(p, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, n2);
	ASSERT_EQ(b1_release(p, y), 0);
	ASSERT_EQ(b1_release(p, y), 0);
	ASSERT_EQ(mp_get_u64(rep[0]), 0x600d);
	mp_reap(pid);
	/* the v1 side went away: its nodes are destroyed, this side is told (one transaction) */
	uint64_t seen = 0;
	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(recv_wait(p, &r, 0), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
		ASSERT_TRUE(r.msg.destination == hc[0] || r.msg.destination == hc[1]);
		seen ^= r.msg.destination;
		ASSERT_EQ(r.msg.flags, i == 0 ? BUS1_MSG_FLAG_CONTINUE : 0);
	}
	ASSERT_EQ_U64(seen, hc[0] ^ hc[1]);
}

/* Each peer's pool is its own ABI's: 4 GiB for the final side, 512 MiB for the v1 side. */
TEST_TIMEOUT(mixed_pools_follow_each_peer, 60)
{
	int p = b1_open(), c = mp_open_inherit();
	uint64_t h = mp_node(p, 0x100, c);
	const volatile uint8_t *mp = mmap(NULL, B1_POOL_SIZE_FINAL + 4096, PROT_READ, MAP_SHARED, p, 0);
	const volatile uint8_t *mc = mmap(NULL, B1_POOL_SIZE_FINAL + 4096, PROT_READ, MAP_SHARED, c, 0);
	struct bus1_cmd_recv r;
	pid_t pid;

	ASSERT_TRUE(mp != MAP_FAILED && mc != MAP_FAILED);
	pid = spawn_v1("v1_send", mp_str(c), mp_hex(h), "3");
	mp_reap(pid);
	/* its first use of the peer was a SEND, which latches nothing; now a RECV */
	pid = spawn_v1("v1_recv_empty", mp_str(c));
	mp_reap(pid);
	for (int i = 0; i < 3; i++) {
		char want[8];

		ASSERT_EQ(recv_wait(p, &r, 0), 0);
		snprintf(want, sizeof(want), "v1 #%d", i);
		ASSERT_MEMEQ((const void *)(mp + r.msg.offset), want, 5);
	}
	ASSERT_EQ(b1_sigbus_at(mp, B1_POOL_SIZE), 0);
	ASSERT_EQ(b1_sigbus_at(mp, B1_POOL_SIZE_FINAL), 1);
	ASSERT_EQ(b1_sigbus_at(mc, B1_POOL_SIZE - 1), 0);
	ASSERT_EQ(b1_sigbus_at(mc, B1_POOL_SIZE), 1);
	/* and the v1 peer keeps its v1 peer flags */
	ASSERT_EQ(b1_set_limits(c, B1_KEEP32, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	struct bus1_cmd_peer_reset one = { .peer_flags = 1, .max_slices = B1_KEEP32, .max_handles = B1_KEEP32,
		.max_inflight_bytes = B1_KEEP32, .max_inflight_fds = B1_KEEP32 };
	ASSERT_EQ(b1_ioctl(c, BUS1_CMD_PEER_RESET, &one), 0);
	ASSERT_EQ(b1_ioctl(p, BUS1_CMD_PEER_RESET, &one), -EINVAL);
}

/*
 * One peer, two programs: a v1 process PEEKs the head (its layout, its
 * latch), the final process then RECVs the same message at the same
 * offset and releases it once.
 */
TEST_TIMEOUT(mixed_one_peer_two_programs, 60)
{
	int s = mp_open_inherit(), b = b1_open(), rep[2];
	uint64_t h = mp_node(s, 0x100, b), off, sender;
	const uint8_t *pool = b1_map(s);
	struct bus1_cmd_recv r;
	pid_t pid;

	mp_pipe(rep);
	ASSERT_EQ(b1_send_one(b, h, "shared", 6), 0);
	pid = spawn_v1("v1_peek", mp_str(s), mp_str(rep[1]));
	off = mp_get_u64(rep[0]);
	sender = mp_get_u64(rep[0]);
	mp_reap(pid);
	ASSERT_EQ(sender, getpid());
	ASSERT_EQ(recv_wait(s, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.offset, off);
	ASSERT_MEMEQ(pool + off, "shared", 6);
	ASSERT_EQ(b1_slice_release(s, off), 0);
	ASSERT_EQ(b1_slice_release(s, off), -ENXIO);
	/* the v1 program called first: the peer speaks v1 */
	struct bus1_cmd_peer_reset one = { .peer_flags = 1, .max_slices = B1_KEEP32, .max_handles = B1_KEEP32,
		.max_inflight_bytes = B1_KEEP32, .max_inflight_fds = B1_KEEP32 };
	ASSERT_EQ(b1_ioctl(s, BUS1_CMD_PEER_RESET, &one), 0);
}

#endif
