/* SPDX-License-Identifier: MIT */
/*
 * A program written for bus1's final ABI (built with -DBUS1_ABI_FINAL): the
 * 72-byte RECV and its number, the renumbered RECV and message flags, no
 * PEEK and never EDQUOT from RECV, nothing about the sender, no peer flags
 * (PEER_RESET takes all-ones only), the slice life cycle and the quota
 * table of the final module, its handle quota of INVALID payload entries
 * given back once (the module gives it back twice), and the checks of the
 * final module's own selftests.
 *
 * Peers are opened in the default (auto) mode: a final program's first
 * RECV latches its peer to the final ABI. Cases about the peer flags, which
 * differ before that, open with BUS1_ABI=final, as on the final module.
 */
#define _GNU_SOURCE
#include <stddef.h>

#include "abi-both.h"

_Static_assert(sizeof(struct bus1_cmd_recv) == 72, "final RECV struct");
_Static_assert(sizeof(((struct bus1_cmd_recv *)0)->msg) == 56, "final msg");
_Static_assert(offsetof(struct bus1_cmd_recv, msg.offset) == 40, "msg.offset");
_Static_assert(offsetof(struct bus1_cmd_recv, msg.n_fds) == 64, "msg.n_fds");
_Static_assert(BUS1_CMD_RECV == 0xC0489650u, "final RECV number");
_Static_assert(BUS1_RECV_FLAG_SEED == 0x1 && BUS1_RECV_FLAG_INSTALL_FDS == 0x2, "recv flags");
_Static_assert(BUS1_MSG_FLAG_CONTINUE == 0x1, "msg flags");

/* The mapped length the final selftests pass as max_offset. */
#define SELFTEST_MAP (16 * 1024)

/* A peer whose ABI is fixed to the final one, as on the final module. */
static int open_final(void)
{
	int fd;

	ASSERT_OK(setenv("BUS1_ABI", "final", 1));
	fd = b1_open();
	ASSERT_OK(unsetenv("BUS1_ABI"));
	return fd;
}

static int recv_max(int fd, struct bus1_cmd_recv *r, uint64_t flags, uint64_t max_offset)
{
	memset(r, 0, sizeof(*r));
	r->flags = flags;
	r->max_offset = max_offset;
	return b1_ioctl(fd, BUS1_CMD_RECV, r);
}

static int send_handles(int fd, uint64_t dest, const uint64_t *hs, size_t n)
{
	return b1_send(fd, 0, &dest, 1, NULL, NULL, 0, hs, n, NULL, 0);
}

/* ---------------------------------------------------------------- RECV */

/* 1.4: the final RECV reads and writes 72 bytes, nothing beyond */
TEST(final_recv_is_72_bytes)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b);
	struct bus1_cmd_recv *r = b1_edge(sizeof(*r));
	struct bus1_cmd_recv *short_r = b1_edge(sizeof(*r) - 8);

	ASSERT_EQ(b1_send_one(b, h, "hello", 5), 0);
	/* 64 readable bytes are not enough */
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, short_r), -EFAULT);
	/* 72 are: the struct ends right before a PROT_NONE page */
	memset(r, 0xAB, sizeof(*r));
	r->flags = 0;
	r->max_offset = B1_POOL_SIZE;
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, r), 0);
	ASSERT_EQ(r->msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r->msg.flags, 0);
	ASSERT_EQ_U64(r->msg.destination, 0x100);
	ASSERT_EQ(r->msg.offset, 0);
	ASSERT_EQ(r->msg.n_bytes, 5);
	ASSERT_EQ(r->msg.n_handles, 0);
	ASSERT_EQ(r->msg.n_fds, 0);
}

/* 1.4: every field where the final layout puts it (the raw words) */
TEST(final_recv_field_offsets)
{
	int a = b1_open(), b = b1_open(), p[2];
	uint64_t h = b1_handle_to(a, 0x100, b), w[9], hs[] = { 0x200, 0x300 };

	ASSERT_OK(pipe(p));
	ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, &(struct iovec){ "payload", 7 }, 1, hs, 2, p, 2), 0);
	memset(w, 0xAB, sizeof(w));
	w[0] = 0;
	w[1] = B1_POOL_SIZE;
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, w), 0);
	ASSERT_EQ_U64(w[0], 0);			/* flags, as given */
	ASSERT_EQ_U64(w[1], B1_POOL_SIZE);	/* max_offset, as given */
	ASSERT_EQ_U64(w[2], BUS1_MSG_DATA);	/* type */
	ASSERT_EQ_U64(w[3], 0);			/* flags */
	ASSERT_EQ_U64(w[4], 0x100);		/* destination */
	ASSERT_EQ_U64(w[5], 0);			/* offset */
	ASSERT_EQ_U64(w[6], 7);			/* n_bytes */
	ASSERT_EQ_U64(w[7], 2);			/* n_handles */
	ASSERT_EQ_U64(w[8], 2);			/* n_fds, also without INSTALL_FDS */
}

/* 2.9 step 2: RECV flags outside 0x3 are EINVAL; nothing is dequeued */
TEST(final_recv_flags_outside_3_einval)
{
	int a = b1_open();
	struct bus1_cmd_recv r;
	const uint64_t bad[] = { 0x4, 0x5, 0x7, 0x8, 1ULL << 63 };

	ASSERT_EQ(b1_send_one(a, 0x100, "x", 1), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ASSERT_EQ(b1_recv(a, &r, bad[i]), -EINVAL);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 1);
	b1_expect_empty(a);
}

/* 2.9 step 4: 0x1 is SEED (the old PEEK value): EAGAIN without a seed, the queue is not looked at */
TEST(final_recv_0x1_is_seed)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, 0x100, "queued", 6), 0);
	ASSERT_EQ(b1_recv(a, &r, 0x1), -EAGAIN);
	ASSERT_EQ(b1_recv(a, &r, 0x1 | 0x2), -EAGAIN);
	/* a plain RECV dequeues it: it was not peeked, nor dequeued above */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 6);
	b1_expect_empty(a);
}

/* 2.9 step 4, 4.9: RECV with SEED returns the seed like DATA and always consumes it */
TEST(final_recv_seed_consumed)
{
	int a = b1_open();
	const uint8_t *pool = b1_map(a);
	struct iovec v = { "seed", 4 };
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_SEED, NULL, 0, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_SEED), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.flags, 0);
	ASSERT_EQ(r.msg.n_bytes, 4);
	ASSERT_MEMEQ(pool + r.msg.offset, "seed", 4);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_SEED), -EAGAIN);
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
}

/* 2.9 step 6.3: INSTALL_FDS is 0x2; n_fds is reported either way */
TEST(final_recv_install_fds_is_0x2)
{
	int a = b1_open(), p[2], got;
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;
	char c = 0;

	ASSERT_OK(pipe(p));
	ASSERT_EQ(b1_send(a, 0, &(uint64_t){ 0x100 }, 1, NULL, NULL, 0, NULL, 0, &p[1], 1), 0);
	ASSERT_EQ(b1_send(a, 0, &(uint64_t){ 0x100 }, 1, NULL, NULL, 0, NULL, 0, &p[1], 1), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_fds, 1);
	ASSERT_EQ(b1_recv(a, &r, 0x2), 0);
	ASSERT_EQ(r.msg.n_fds, 1);
	memcpy(&got, pool + r.msg.offset, sizeof(got));
	ASSERT_GE(got, 0);
	ASSERT_TRUE(fcntl(got, F_GETFD) & FD_CLOEXEC);
	ASSERT_EQ(write(got, "z", 1), 1);
	ASSERT_EQ(read(p[0], &c, 1), 1);
	ASSERT_EQ(c, 'z');
}

/*
 * 2.9: RECV never fails with EDQUOT, even when the receiver has
 * no handle quota left: the message's charge becomes the references'.
 */
TEST(final_recv_never_edquot)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b), hs[] = { 0x200 };
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;
	uint64_t id;

	ASSERT_EQ(b1_set_handles(a, 3), 0);	/* its node 0x100 holds one */
	ASSERT_EQ(send_handles(b, h, hs, 1), 0);	/* R 2 >= 0 + 2 */
	b1_handle_to(c, 0x300, a);			/* the last unit */
	ASSERT_EQ(b1_handles_left(c, 0x300, a), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_handles, 1);
	memcpy(&id, pool + r.msg.offset, sizeof(id));
	ASSERT_EQ_U64(id & 3, 3);
	ASSERT_EQ(b1_handles_left(c, 0x300, a), 0);
	/* the received reference is the message's former charge */
	ASSERT_EQ(b1_release(a, id), 0);
	ASSERT_EQ(b1_handles_left(c, 0x300, a), 1);
}

/* 2.9 steps 6.1, 9: ERANGE keeps the message; a read-only struct is EFAULT before anything is dequeued */
TEST(final_recv_erange_and_efault_keep_the_message)
{
	int a = b1_open();
	struct bus1_cmd_recv r, *ro;

	ASSERT_EQ(b1_send_one(a, 0x100, "0123456789", 10), 0);
	ASSERT_EQ(recv_max(a, &r, 0, 15), -ERANGE);	/* the slice is 16 bytes */
	ro = b1_straddle(&(struct bus1_cmd_recv){ .max_offset = B1_POOL_SIZE }, sizeof(*ro), sizeof(*ro), PROT_READ);
	ASSERT_OK(mprotect((void *)((uintptr_t)ro & ~4095UL), 4096, PROT_READ));
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, ro), -EFAULT);
	ASSERT_EQ(recv_max(a, &r, 0, 16), 0);
	ASSERT_EQ(r.msg.n_bytes, 10);
}

/* 2.9 step 7: notifications report only type, destination and offset INVALID */
TEST(final_notification_fields)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b), w[9];

	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	memset(w, 0xAB, sizeof(w));
	w[0] = 0;
	w[1] = 0;	/* max_offset is not looked at for notifications */
	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_RECV, w), 0);
	ASSERT_EQ_U64(w[2], BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(w[3], 0);
	ASSERT_EQ_U64(w[4], h);
	ASSERT_EQ_U64(w[5], BUS1_OFFSET_INVALID);
	ASSERT_EQ_U64(w[6], 0);
	ASSERT_EQ_U64(w[7], 0);
	ASSERT_EQ_U64(w[8], 0);
}

/* ------------------------------------------------- the final selftests */

/* The final module's selftest test_api_connect: PEER_QUERY, then PEER_RESET with peer_flags -1 */
TEST(final_selftest_connect)
{
	int a = b1_open();
	struct bus1_cmd_peer_reset q;

	ASSERT_EQ(b1_query(a, &q), 0);
	ASSERT_EQ(q.flags, 0);
	ASSERT_EQ(q.peer_flags, 0);
	ASSERT_EQ(q.max_slices, 16384);
	ASSERT_EQ(q.max_handles, 65536);
	ASSERT_EQ(q.max_inflight_bytes, 16777216);
	ASSERT_EQ(q.max_inflight_fds, 4096);
	ASSERT_EQ(b1_reset(a, 0), 0);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH | BUS1_PEER_RESET_FLAG_FLUSH_SEED), 0);
}

/* The final module's selftest test_api_unicast_remote: the owner sees its own node ID as destination */
TEST(final_selftest_unicast_remote)
{
	int p1 = b1_open(), p2 = b1_open();
	const uint8_t *map = mmap(NULL, SELFTEST_MAP, PROT_READ, MAP_SHARED, p1, 0);
	uint64_t node = 0x100, handle = BUS1_HANDLE_INVALID;
	struct bus1_cmd_recv r;

	ASSERT_TRUE(map != MAP_FAILED);
	ASSERT_EQ(b1_transfer(p1, node, p2, &handle), 0);
	ASSERT_NE(handle, node);
	ASSERT_EQ_U64(handle & BUS1_HANDLE_FLAG_REMOTE, BUS1_HANDLE_FLAG_REMOTE);
	ASSERT_EQ(b1_send(p2, 0, &handle, 1, NULL, NULL, 0, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(recv_max(p1, &r, 0, SELFTEST_MAP), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.flags, 0);
	ASSERT_EQ_U64(r.msg.destination, node);
	ASSERT_EQ(r.msg.n_bytes, 0);
	ASSERT_EQ(b1_slice_release(p1, r.msg.offset), 0);
	ASSERT_EQ(recv_max(p1, &r, 0, SELFTEST_MAP), -EAGAIN);
}

/*
 * The final module's selftest test_api_handle (3.7): a message to oneself carrying its destination
 * node; after RECV the owner holds two references, releasing one queues
 * NODE_RELEASE at once, without any SLICE_RELEASE.
 */
TEST(final_selftest_handle)
{
	int p = b1_open();
	const uint8_t *map = mmap(NULL, SELFTEST_MAP, PROT_READ, MAP_SHARED, p, 0);
	uint64_t node = 0x100, got;
	struct bus1_cmd_recv r;

	ASSERT_TRUE(map != MAP_FAILED);
	ASSERT_EQ(send_handles(p, node, &node, 1), 0);
	ASSERT_EQ(recv_max(p, &r, 0, SELFTEST_MAP), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.flags, 0);
	ASSERT_EQ_U64(r.msg.destination, node);
	ASSERT_EQ(r.msg.n_handles, 1);
	memcpy(&got, map + r.msg.offset, sizeof(got));
	ASSERT_EQ_U64(got, node);
	ASSERT_EQ(recv_max(p, &r, 0, SELFTEST_MAP), -EAGAIN);
	ASSERT_EQ(b1_release(p, node), 0);
	ASSERT_EQ(recv_max(p, &r, 0, SELFTEST_MAP), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_RELEASE);
	ASSERT_EQ(r.msg.flags, 0);
	ASSERT_EQ_U64(r.msg.destination, node);
	ASSERT_EQ(recv_max(p, &r, 0, SELFTEST_MAP), -EAGAIN);
}

/* The final module's selftest test_api_multicast (4.8): CONTINUE is 0x1, on all but the last entry of one transaction */
TEST(final_selftest_multicast)
{
	int p = b1_open(), q = b1_open();
	const uint8_t *map = mmap(NULL, SELFTEST_MAP, PROT_READ, MAP_SHARED, p, 0);
	uint64_t dst[] = { 0x100, 0x200, 0x300 }, hq;
	struct bus1_cmd_recv r;

	ASSERT_TRUE(map != MAP_FAILED);
	hq = b1_handle_to(q, 0x400, p);
	/* three of p's nodes and one of q's: one transaction */
	uint64_t all[] = { dst[0], dst[1], hq, dst[2] };
	ASSERT_EQ(b1_send(p, 0, all, 4, NULL, &(struct iovec){ "m", 1 }, 1, NULL, 0, NULL, 0), 0);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(recv_max(p, &r, 0, SELFTEST_MAP), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
		ASSERT_EQ_U64(r.msg.destination, dst[i]);
		ASSERT_EQ(r.msg.flags, i < 2 ? BUS1_MSG_FLAG_CONTINUE : 0);
		ASSERT_EQ(b1_slice_release(p, r.msg.offset), 0);
	}
	ASSERT_EQ(recv_max(p, &r, 0, SELFTEST_MAP), -EAGAIN);
	/* the other peer's single entry carries no CONTINUE */
	ASSERT_EQ(b1_recv(q, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.destination, 0x400);
	ASSERT_EQ(r.msg.flags, 0);
}

/* 2.9 step 5: the discard decision looks at the receiver's node, not the sender's handle */
TEST(final_discard_looks_at_the_receivers_node)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(b, h, "kept", 4), 0);
	ASSERT_EQ(b1_release(b, h), 0);		/* the sender lets go */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	/* (the sender's release left nobody but the owner on 0x100) */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_RELEASE);
	/* the owner lets go (destroy, release): what was queued to it goes */
	h = b1_handle_to(a, 0x200, b);
	ASSERT_EQ(b1_send_one(b, h, "gone", 4), 0);
	ASSERT_EQ(b1_destroy(a, &(uint64_t){ 0x200 }, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	b1_expect_empty(a);
}

/* -------------------------------------------------------- peer flags */

/* 2.2, 2.3: no peer flags; only all-ones is accepted (0 included is EINVAL) */
TEST(final_peer_flags_all_ones_only)
{
	int a = open_final();
	struct bus1_cmd_peer_reset_u64 q64 = { .peer_flags = 0, .max_slices = B1_KEEP64,
		.max_handles = B1_KEEP64, .max_inflight_bytes = B1_KEEP64, .max_inflight_fds = B1_KEEP64 };

	ASSERT_EQ(b1_peer_flags(a), 0);
	ASSERT_EQ(b1_set_peer_flags(a, 0), -EINVAL);
	ASSERT_EQ(b1_set_peer_flags(a, 1), -EINVAL);
	ASSERT_EQ(b1_set_peer_flags(a, 2), -EINVAL);
	ASSERT_EQ(b1_set_peer_flags(a, (uint64_t)-2), -EINVAL);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_PEER_RESET_U64, &q64), -EINVAL);
	q64.peer_flags = 1;
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_PEER_RESET_U64, &q64), -EINVAL);
	q64.peer_flags = B1_KEEP64;
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_PEER_RESET_U64, &q64), 0);
	ASSERT_EQ(b1_set_peer_flags(a, (uint64_t)-1), 0);
	ASSERT_EQ(b1_peer_flags(a), 0);
}

/* 2.3: a rejected PEER_RESET applies nothing (limits, flush) */
TEST(final_peer_flags_rejected_reset_changes_nothing)
{
	int a = open_final();
	struct bus1_cmd_peer_reset r = { .flags = BUS1_PEER_RESET_FLAG_FLUSH, .peer_flags = 0,
		.max_slices = 5, .max_handles = 5, .max_inflight_bytes = 5, .max_inflight_fds = 5 };
	struct bus1_cmd_peer_reset q;
	struct bus1_cmd_recv m;

	ASSERT_EQ(b1_send_one(a, 0x100, "stays", 5), 0);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_PEER_RESET, &r), -EINVAL);
	ASSERT_EQ(b1_query(a, &q), 0);
	ASSERT_EQ(q.max_slices, 16384);
	ASSERT_EQ(q.max_inflight_fds, 4096);
	ASSERT_EQ(b1_recv(a, &m, 0), 0);
	ASSERT_EQ(m.msg.n_bytes, 5);
}

/* ------------------------------------------------ slices and the pool */

/* 4.1: slice size max(8, A(n_bytes) + 8 n_handles + A(4 n_fds)) */
TEST(final_slice_sizes)
{
	int a = b1_open(), p[2];
	uint64_t hs[] = { 0x200, 0x300 };
	struct bus1_cmd_recv r;
	const struct { size_t nb, nh, nf, size; } m[] = {
		{ 0, 0, 0, 8 }, { 1, 0, 0, 8 }, { 9, 0, 0, 16 }, { 5, 2, 0, 24 },
		{ 0, 0, 1, 8 }, { 0, 0, 3, 16 }, { 13, 1, 3, 40 },
	};
	static char buf[64];
	uint64_t off = 0;

	ASSERT_OK(pipe(p));
	int fds[] = { p[0], p[1], p[0] };
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		struct iovec v = { buf, m[i].nb };

		ASSERT_EQ(b1_send(a, 0, &(uint64_t){ 0x100 }, 1, NULL, &v, 1, hs, m[i].nh, fds, m[i].nf), 0);
	}
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		ASSERT_EQ(recv_max(a, &r, 0, B1_POOL_SIZE), 0);
		ASSERT_EQ_U64(r.msg.offset, off);
		/* the whole slice must fit below max_offset, and only that */
		off += m[i].size;
	}
	/* the last one ends exactly at `off`: a max_offset one lower is ERANGE */
	ASSERT_EQ(b1_send(a, 0, &(uint64_t){ 0x100 }, 1, NULL, &(struct iovec){ buf, 13 }, 1, hs, 1, fds, 3), 0);
	ASSERT_EQ(recv_max(a, &r, 0, off + 40 - 1), -ERANGE);
	ASSERT_EQ(recv_max(a, &r, 0, off + 40), 0);
	ASSERT_EQ_U64(r.msg.offset, off);
}

/*
 * 5.3: a slice is allocated at SEND, published by RECV and freed by
 * SLICE_RELEASE (its slice quota with it); a second release, or one of a
 * slice still queued, is ENXIO.
 */
TEST(final_slice_life_cycle_release)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_set_slices(a, 2), 0);
	ASSERT_EQ(b1_send_one(b, h, "one", 3), 0);		/* R 2 >= 0 + 2 */
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);		/* queued, not published */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 0);
	ASSERT_EQ(b1_send_one(b, h, "two", 3), -EDQUOT);	/* R 1 < 0 + 2: the slice is charged */
	ASSERT_EQ(b1_slice_release(a, 0), 0);
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
	ASSERT_EQ(b1_send_one(b, h, "two", 3), 0);		/* freed: R 2 again */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 0);				/* and its space reused */
}

/* 5.3: a message discarded at RECV frees its slice (quota and space) without ever publishing it */
TEST(final_slice_life_cycle_discard)
{
	int a = b1_open(), b = b1_open();
	uint64_t h1 = b1_handle_to(a, 0x100, b), h2 = b1_handle_to(a, 0x200, b);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_set_slices(a, 2), 0);
	ASSERT_EQ(b1_send_one(b, h1, "stale", 5), 0);
	ASSERT_EQ(b1_destroy(a, &(uint64_t){ 0x100 }, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	b1_expect_empty(a);
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
	ASSERT_EQ(b1_send_one(b, h2, "fresh", 5), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 0);
}

/* 5.3, 2.3 step 6: a flush frees queued and published slices at once */
TEST(final_slice_life_cycle_flush)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_set_slices(a, 4), 0);
	ASSERT_EQ(b1_send_one(b, h, "published", 9), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(b1_send_one(b, h, "queued", 6), 0);
	ASSERT_EQ(b1_send_one(b, h, "full", 4), -EDQUOT);	/* R 2 < 1 + 2 */
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), -ENXIO);
	/* the flush destroyed node 0x100: use a new one */
	h = b1_handle_to(a, 0x200, b);
	ASSERT_EQ(b1_send_one(b, h, "a", 1), 0);
	ASSERT_EQ(b1_send_one(b, h, "b", 1), 0);		/* R 3 >= 1 + 2 */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 0);
}

/* 5.3: a failed SEND leaves no slice behind */
TEST(final_slice_life_cycle_failed_send)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b);
	struct iovec v[] = { { "good", 4 }, { b1_bad_ptr(), 4 } };
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, v, 2, NULL, 0, NULL, 0), -EFAULT);
	b1_expect_empty(a);
	ASSERT_EQ(b1_send_one(b, h, "ok", 2), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 0);
}

/* 2.9 step 6.7: the message's fds go at dequeue, its slice stays until SLICE_RELEASE */
TEST(final_fds_dropped_at_dequeue)
{
	int a = b1_open(), b = b1_open(), p[2];
	uint64_t h = b1_handle_to(a, 0x100, b);
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;

	ASSERT_OK(pipe(p));
	ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, &(struct iovec){ "fd", 2 }, 1, NULL, 0, &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	ASSERT_TRUE(b1_revents(p[0], POLLIN) == 0);	/* the message holds the write end */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_fds, 1);
	/* gone with the dequeue */
	ASSERT_EQ(poll(&(struct pollfd){ .fd = p[0], .events = POLLIN }, 1, 2000), 1);
	ASSERT_TRUE(b1_revents(p[0], POLLIN) & POLLHUP);
	ASSERT_MEMEQ(pool + r.msg.offset, "fd", 2);		/* the slice is still there */
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
}

/* ---------------------------------------------------------- quotas */

/* 6.2: SEND charges the receiver 1 slice and n_handles handles, never the sender */
TEST(final_quota_send_charges_receiver)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b), hs[3];
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;
	uint64_t ids[3];

	/* a holds its node 0x100, b a handle to it: 19 left each */
	ASSERT_EQ(b1_set_handles(a, 20), 0);
	ASSERT_EQ(b1_set_handles(b, 20), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 19);
	for (int i = 0; i < 3; i++)
		hs[i] = b1_handle_to(c, 0xA00 + 4 * i, b);
	ASSERT_EQ(b1_handles_left(c, 0x900, b), 16);
	ASSERT_EQ(send_handles(b, h, hs, 3), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 16);	/* the receiver: 3 */
	ASSERT_EQ(b1_handles_left(c, 0x900, b), 16);	/* the sender: nothing */
	/* RECV charges nothing: the three become references under the same charge */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 16);
	memcpy(ids, pool + r.msg.offset, sizeof(ids));
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(b1_release(a, ids[i]), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 19);
	/* nor does the slice's release change it */
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 19);
}

/* 6.2: a discarded or flushed message gives back its whole handle charge */
TEST(final_quota_flush_refunds_in_full)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b), hs[] = { 0x200, 0x300 };

	ASSERT_EQ(b1_set_handles(a, 10), 0);
	ASSERT_EQ(send_handles(b, h, hs, 2), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 7);	/* 10 - node 0x100 - 2 */
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 10);
}

/* 6.2: node creation charges its creator; HANDLE_TRANSFER the destination */
TEST(final_quota_nodes_and_transfers)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hb;

	ASSERT_EQ(b1_set_handles(a, 5), 0);
	ASSERT_EQ(b1_set_handles(b, 5), 0);
	ASSERT_EQ(b1_send_one(a, 0x100, "self", 4), 0);	/* creates a's node 0x100 */
	ASSERT_EQ(b1_handles_left(c, 0x200, a), 4);
	ASSERT_EQ(b1_handles_left(c, 0x200, b), 5);
	hb = b1_handle_to(a, 0x100, b);
	ASSERT_EQ(b1_handles_left(c, 0x200, b), 4);
	ASSERT_EQ(b1_handles_left(c, 0x200, a), 4);
	ASSERT_EQ(b1_release(b, hb), 0);
	ASSERT_EQ(b1_handles_left(c, 0x200, b), 5);
	/* NODES_DESTROY of a new ID creates (and charges) it too */
	ASSERT_EQ(b1_destroy_one(a, 0x300), 0);
	ASSERT_EQ(b1_handles_left(c, 0x200, a), 3);
}

/*
 * 6.2: the handle charge of INVALID payload entries comes back once,
 * at dequeue (the final module gave it back a second time when the slice
 * was freed, leaving the counter above the maximum).
 */
TEST(final_quota_invalid_entries_refunded_once)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b), dead = 0x200, hs[] = { dead, dead };
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;
	uint64_t ids[2];

	ASSERT_EQ(b1_set_handles(a, 8), 0);
	ASSERT_EQ(b1_destroy(b, &dead, 1, 0), 0);		/* b's node 0x200, destroyed */
	ASSERT_EQ(send_handles(b, h, hs, 2), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 5);	/* 8 - node 0x100 - 2 */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_handles, 2);
	memcpy(ids, pool + r.msg.offset, sizeof(ids));
	ASSERT_EQ_U64(ids[0], BUS1_HANDLE_INVALID);
	ASSERT_EQ_U64(ids[1], BUS1_HANDLE_INVALID);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 7);	/* refunded at dequeue */
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 7);	/* and not again */
	/* a flush of a peer holding such a slice gives nothing back twice either */
	ASSERT_EQ(send_handles(b, h, hs, 2), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 8);	/* the flush dropped node 0x100 */
}

/* ------------------------------------------------------------ errnos */

/* 1.7: SEND with SEED is implemented (the final module's 524 is not returned) */
TEST(final_send_seed_is_implemented)
{
	int a = b1_open();

	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_SEED, NULL, 0, NULL, &(struct iovec){ "s", 1 }, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_SEED | BUS1_SEND_FLAG_CONTINUE, NULL, 0, NULL, NULL, 0, NULL, 0, NULL, 0), -EINVAL);
}

/* 1.5: the v1 RECV number is ENOTTY on a peer fixed to the final ABI (ESHUTDOWN once disconnected) */
TEST(final_v1_recv_number_enotty)
{
	int a = open_final();
	struct b1_recv_v1 v1;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, 0x100, "x", 1), 0);
	ASSERT_EQ(b1_recv_v1(a, &v1, 0), -ENOTTY);
	ASSERT_EQ(b1_ioctl(a, B1_V1_CMD_RECV, b1_bad_ptr()), -ENOTTY);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(b1_disconnect(a), 0);
	ASSERT_EQ(b1_recv_v1(a, &v1, 0), -ESHUTDOWN);
}
