/* SPDX-License-Identifier: MIT */
/*
 * Peer commands: PEER_DISCONNECT (§2.1), PEER_QUERY (2.2),
 * PEER_RESET (2.3) with its validation order, limit changes and FLUSH, the
 * man-page 48-byte variants (1.6), and the effects of disconnect and close on
 * the rest of the bus (8.3-8.6).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>

#include "bus1-util.h"


static int reset_raw(int fd, uint64_t flags, uint64_t pflags, uint32_t slices,
		     uint32_t handles, uint32_t bytes, uint32_t fds)
{
	struct bus1_cmd_peer_reset r = {
		.flags = flags,
		.peer_flags = pflags,
		.max_slices = slices,
		.max_handles = handles,
		.max_inflight_bytes = bytes,
		.max_inflight_fds = fds,
	};

	return b1_ioctl(fd, BUS1_CMD_PEER_RESET, &r);
}

static void assert_limits(int fd, uint64_t pflags, uint32_t slices, uint32_t handles,
			  uint32_t bytes, uint32_t fds)
{
	struct bus1_cmd_peer_reset q;

	ASSERT_EQ(b1_query(fd, &q), 0);
	ASSERT_EQ_U64(q.flags, 0);
	ASSERT_EQ_U64(q.peer_flags, pflags);
	ASSERT_EQ_U64(q.max_slices, slices);
	ASSERT_EQ_U64(q.max_handles, handles);
	ASSERT_EQ_U64(q.max_inflight_bytes, bytes);
	ASSERT_EQ_U64(q.max_inflight_fds, fds);
}

static void assert_defaults(int fd)
{
	assert_limits(fd, 0, 16384, 65536, 16777216, 4096);
}

static void expect_msg(int fd, uint64_t type, uint64_t dest)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, type);
	ASSERT_EQ_U64(r.msg.destination, dest);
	if (type == BUS1_MSG_DATA)
		ASSERT_OK(b1_slice_release(fd, r.msg.offset));
}

/* ---------------------------------------------------------------- QUERY */

/* §2.2 / §6.1: fresh peer reports the module defaults */
TEST(query_defaults)
{
	assert_defaults(b1_open());
}

/* §2.2 step 3: input values other than flags are ignored */
TEST(query_ignores_input_fields)
{
	int fd = b1_open();
	struct bus1_cmd_peer_reset q;

	memset(&q, 0xee, sizeof(q));
	q.flags = 0;
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_QUERY, &q), 0);
	ASSERT_EQ_U64(q.flags, 0);
	ASSERT_EQ_U64(q.peer_flags, 0);
	ASSERT_EQ_U64(q.max_slices, 16384);
	ASSERT_EQ_U64(q.max_handles, 65536);
	ASSERT_EQ_U64(q.max_inflight_bytes, 16777216);
	ASSERT_EQ_U64(q.max_inflight_fds, 4096);
}

/* §2.2 step 2: flags != 0 → EINVAL, nothing written back */
TEST(query_flags_einval)
{
	int fd = b1_open();
	struct bus1_cmd_peer_reset q;
	uint64_t bits[] = { 1, 2, 4, 1ULL << 63, B1_KEEP64 };

	for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
		memset(&q, 0x11, sizeof(q));
		q.flags = bits[i];
		ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_QUERY, &q), -EINVAL);
		ASSERT_EQ_U64(q.flags, bits[i]);
		ASSERT_EQ_U64(q.peer_flags, 0x1111111111111111ULL);
		ASSERT_EQ_U64(q.max_slices, 0x11111111);
	}
}

/* §2.2 step 4: unwritable struct (readable, flags 0) → EFAULT */
TEST(query_readonly_efault)
{
	int fd = b1_open();

	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY, b1_ro_page()), EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY, b1_bad_ptr()), EFAULT);
}

/* §2.2 step 4: only the last field on a read-only page is enough for EFAULT */
TEST(query_readonly_tail_efault)
{
	int fd = b1_open();
	struct bus1_cmd_peer_reset q = { 0 };
	struct bus1_cmd_peer_reset_u64 q64 = { 0 };

	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY, b1_straddle(&q, sizeof(q), sizeof(q) - 4, PROT_READ)),
		     EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY_U64,
			   b1_straddle(&q64, sizeof(q64), sizeof(q64) - 8, PROT_READ)), EFAULT);
}

/*
 * §2.2 steps 2 and 4: the flags check comes before the write-back, so bad
 * flags in a read-only struct are EINVAL, not EFAULT; the peer is unchanged.
 */
TEST(query_flags_einval_before_writeback)
{
	int fd = b1_open();
	uint8_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct bus1_cmd_peer_reset *q = (void *)p;
	struct bus1_cmd_peer_reset_u64 *q64 = (void *)(p + 64);

	ASSERT_TRUE(p != MAP_FAILED);
	memset(p, 0, 4096);
	q->flags = 1;
	q64->flags = 2;
	ASSERT_OK(mprotect(p, 4096, PROT_READ));
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY, q), EINVAL);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY_U64, q64), EINVAL);
	/* with valid flags the same memory fails at the write-back */
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY, p + 128), EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY_U64, p + 128), EFAULT);
	ASSERT_EQ_U64(q->max_slices, 0);
	assert_defaults(fd);
}

/* §1.4 / §2.2: exactly 32 bytes are accessed (struct ending at a hole works) */
TEST(query_exact_size)
{
	int fd = b1_open();
	struct bus1_cmd_peer_reset *q = b1_edge(sizeof(*q));

	memset(q, 0, sizeof(*q));
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_QUERY, q), 0);
	ASSERT_EQ_U64(q->max_inflight_fds, 4096);
	/* shifted by 8 bytes it reaches into the hole */
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY, (uint8_t *)q + 8), EFAULT);
}

/* ---------------------------------------------------------------- RESET validation */

/* §2.3 step 1: unreadable → EFAULT; a read-only struct is fine (nothing written) */
TEST(reset_efault_and_readonly_ok)
{
	int fd = b1_open();
	struct bus1_cmd_peer_reset *r = b1_edge(sizeof(*r));

	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_RESET, b1_bad_ptr()), EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_RESET, (uint8_t *)r + 8), EFAULT);
	assert_defaults(fd);
	/* an all-zero read-only struct: flags 0, peer flags 0, all limits 0 */
	ASSERT_OK(ioctl(fd, BUS1_CMD_PEER_RESET, b1_ro_page()));
	assert_limits(fd, 0, 0, 0, 0, 0);
}

/* §2.3 step 7: nothing is written back into the struct */
TEST(reset_writes_nothing)
{
	int fd = b1_open();
	struct bus1_cmd_peer_reset r = {
		.flags = 0, .peer_flags = B1_KEEP64, .max_slices = 77,
		.max_handles = B1_KEEP32, .max_inflight_bytes = B1_KEEP32,
		.max_inflight_fds = B1_KEEP32,
	};
	struct bus1_cmd_peer_reset copy = r;

	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_RESET, &r), 0);
	ASSERT_MEMEQ(&r, &copy, sizeof(r));
	assert_limits(fd, 0, 77, 65536, 16777216, 4096);
}

/* §2.3 step 2: unknown reset flags → EINVAL, nothing applied */
TEST(reset_bad_flags_einval)
{
	int fd = b1_open();
	uint64_t bits[] = { 4, 8, 1ULL << 63, 5, 7, B1_KEEP64 };

	for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++)
		ASSERT_EQ(reset_raw(fd, bits[i], 1, 5, 5, 5, 5), -EINVAL);
	assert_defaults(fd);
}

/* §2.3 step 3: peer_flags neither all-ones nor a subset of WANT_SECCTX → EINVAL */
TEST(reset_bad_peer_flags_einval)
{
	int fd = b1_open();
	uint64_t bits[] = { 2, 3, 0x80, 1ULL << 63, 0xFFFFFFFFFFFFFFFEULL,
			    0x00000000FFFFFFFFULL, 0x7FFFFFFFFFFFFFFFULL };

	for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++)
		ASSERT_EQ(reset_raw(fd, 0, bits[i], 5, 5, 5, 5), -EINVAL);
	assert_defaults(fd);
}

/* §2.3 step 4: a limit neither 0xFFFFFFFF nor ≤ 0x7FFFFFFF → EINVAL, nothing applied */
TEST(reset_bad_limits_einval)
{
	int fd = b1_open();
	uint32_t bad[] = { 0x80000000u, 0xFFFFFFFEu, 0xC0000000u };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ASSERT_EQ(reset_raw(fd, 0, 1, bad[i], 5, 5, 5), -EINVAL);
		ASSERT_EQ(reset_raw(fd, 0, 1, 5, bad[i], 5, 5), -EINVAL);
		ASSERT_EQ(reset_raw(fd, 0, 1, 5, 5, bad[i], 5), -EINVAL);
		ASSERT_EQ(reset_raw(fd, 0, 1, 5, 5, 5, bad[i]), -EINVAL);
	}
	/* peer flags and the valid limits were not applied either */
	assert_defaults(fd);
}

/* §2.3 step 2-4: a failing reset with FLUSH does not flush */
TEST(reset_invalid_does_not_flush)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_send_one(b, h, "m", 1), 0);
	ASSERT_EQ(reset_raw(a, BUS1_PEER_RESET_FLAG_FLUSH | 4, B1_KEEP64, B1_KEEP32, B1_KEEP32, B1_KEEP32, B1_KEEP32), -EINVAL);
	ASSERT_EQ(reset_raw(a, BUS1_PEER_RESET_FLAG_FLUSH, 2, B1_KEEP32, B1_KEEP32, B1_KEEP32, B1_KEEP32), -EINVAL);
	ASSERT_EQ(reset_raw(a, BUS1_PEER_RESET_FLAG_FLUSH, B1_KEEP64, 0x80000000u, B1_KEEP32, B1_KEEP32, B1_KEEP32), -EINVAL);
	/* message still queued, node still alive */
	expect_msg(a, BUS1_MSG_DATA, 0x100);
	b1_expect_empty(b);
	ASSERT_EQ(b1_send_one(b, h, "n", 1), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x100);
}

/* ---------------------------------------------------------------- RESET apply */

/* §2.3 step 5: limits 0 and 0x7FFFFFFF are legal; 0xFFFFFFFF leaves a field alone */
TEST(reset_limits_applied)
{
	int fd = b1_open();

	ASSERT_EQ(reset_raw(fd, 0, B1_KEEP64, 0, B1_KEEP32, 0x7FFFFFFF, B1_KEEP32), 0);
	assert_limits(fd, 0, 0, 65536, 0x7FFFFFFF, 4096);
	ASSERT_EQ(reset_raw(fd, 0, B1_KEEP64, B1_KEEP32, 1, B1_KEEP32, 0), 0);
	assert_limits(fd, 0, 0, 1, 0x7FFFFFFF, 0);
	ASSERT_EQ(reset_raw(fd, 0, B1_KEEP64, 16384, 65536, 16777216, 4096), 0);
	assert_defaults(fd);
}

/* §2.3 step 5: peer_flags all-ones keeps, WANT_SECCTX sets, 0 clears */
TEST(reset_peer_flags)
{
	int fd = b1_open();

	ASSERT_EQ(reset_raw(fd, 0, BUS1_PEER_FLAG_WANT_SECCTX, B1_KEEP32, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	assert_limits(fd, BUS1_PEER_FLAG_WANT_SECCTX, 16384, 65536, 16777216, 4096);
	ASSERT_EQ(reset_raw(fd, 0, B1_KEEP64, B1_KEEP32, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	assert_limits(fd, BUS1_PEER_FLAG_WANT_SECCTX, 16384, 65536, 16777216, 4096);
	/* a flush keeps the flags too */
	ASSERT_EQ(b1_reset(fd, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	assert_limits(fd, BUS1_PEER_FLAG_WANT_SECCTX, 16384, 65536, 16777216, 4096);
	ASSERT_EQ(reset_raw(fd, 0, 0, B1_KEEP32, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	assert_defaults(fd);
}

/* §2.3 step 5 / §6.2: limits of one peer do not affect another peer */
TEST(reset_limits_per_peer)
{
	int a = b1_open(), b = b1_open();

	ASSERT_EQ(reset_raw(a, 0, 1, 1, 2, 3, 4), 0);
	assert_limits(a, 1, 1, 2, 3, 4);
	assert_defaults(b);
	assert_defaults(b1_open());
}

/* §2.3 step 5: max_slices 0 → the receiver cannot be charged a slice (EDQUOT) */
TEST(reset_zero_slices_edquot)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(reset_raw(a, 0, B1_KEEP64, 0, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -EDQUOT);
	b1_expect_empty(a);
	ASSERT_EQ(reset_raw(a, 0, B1_KEEP64, 16384, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x100);
}

/*
 * §2.3 step 5: lowering a max below the current usage makes the remaining
 * counter negative; charges fail until usage falls again.
 */
TEST(reset_limit_below_usage)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	struct bus1_cmd_recv r;

	for (int i = 0; i < 3; i++)
		ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	/* 3 slices in use, max 2: remaining -1 */
	ASSERT_EQ(reset_raw(a, 0, B1_KEEP64, 2, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -EDQUOT);
	/* receiving and freeing all three gives the remaining 2 back */
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(b1_recv(a, &r, 0), 0);
		ASSERT_OK(b1_slice_release(a, r.msg.offset));
	}
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x100);
}

/* §2.3 step 5: max_handles 0 → transfers into the peer fail with EDQUOT */
TEST(reset_zero_handles_edquot)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = BUS1_HANDLE_INVALID;

	ASSERT_EQ(reset_raw(b, 0, B1_KEEP64, B1_KEEP32, 0, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), -EDQUOT);
	/* and a node of its own cannot be created either */
	ASSERT_EQ(b1_transfer(b, 0x200, a, &h), -EDQUOT);
	ASSERT_EQ(reset_raw(b, 0, B1_KEEP64, B1_KEEP32, 10, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
}

/* ---------------------------------------------------------------- RESET flush */

/* §2.3 step 6.1 / §8.4: FLUSH destroys own nodes, holders get NODE_DESTROY */
TEST(flush_destroys_nodes)
{
	int a = b1_open(), b = b1_open();
	uint64_t h1 = b1_share(a, 0x100, b), h2 = b1_share(a, 0x200, b), x, first;
	struct bus1_cmd_recv r;

	ASSERT_EQ_U64(h1, 0xB);
	ASSERT_EQ_U64(h2, 0x13);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	/*
	 * One transaction: two entries, CONTINUE on the first (4.8). A flush
	 * has no node list, so the order of the two is unspecified.
	 */
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.flags, BUS1_MSG_FLAG_CONTINUE);
	first = r.msg.destination;
	ASSERT_TRUE(first == h1 || first == h2);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.flags, 0);
	ASSERT_EQ_U64(r.msg.destination, first == h1 ? h2 : h1);
	b1_expect_empty(b);
	/* the owner's own NODE_DESTROY entries were flushed */
	b1_expect_empty(a);
	/* the owner dropped its references: the node is released (3.10) */
	ASSERT_EQ(b1_send_one(b, h1, "x", 1), -ESHUTDOWN);
	ASSERT_EQ(b1_transfer(b, h1, a, &x), 0);
	ASSERT_EQ_U64(x, BUS1_HANDLE_INVALID);
}

/* §2.3 step 6.2: FLUSH drops every handle; owners get NODE_RELEASE; IDs become invalid */
TEST(flush_drops_handles)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_reset(b, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	expect_msg(a, BUS1_MSG_NODE_RELEASE, 0x100);
	b1_expect_empty(a);
	ASSERT_EQ(b1_release(b, h), -ENXIO);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ENXIO);
}

/* §2.3 step 6.2: the kernel-ID counter survives a flush (IDs never reused) */
TEST(flush_keeps_id_counter)
{
	int a = b1_open(), b = b1_open();

	ASSERT_EQ_U64(b1_share(a, 0x100, b), 0xB);
	ASSERT_EQ(b1_reset(b, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_EQ_U64(b1_share(a, 0x100, b), 0x13);
	ASSERT_EQ_U64(b1_share(a, 0x200, b), 0x1B);
}

/* §2.3 step 6.2 / §3.4: user-chosen IDs name new nodes after a flush */
TEST(flush_frees_user_ids)
{
	int a = b1_open(), b = b1_open();
	uint64_t old = b1_share(a, 0x100, b), nu;

	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, old);
	nu = b1_share(a, 0x100, b);
	/* a different node: B gets a second handle, not the old one */
	ASSERT_EQ_U64(nu, 0x13);
	ASSERT_EQ(b1_send_one(b, nu, "new", 3), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x100);
	ASSERT_EQ(b1_send_one(b, old, "old", 3), -ESHUTDOWN);
}

/* §2.3 step 6.3: FLUSH discards the queue (messages and notifications) */
TEST(flush_discards_queue)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	uint64_t hc = b1_share(a, 0x200, c);

	ASSERT_EQ(b1_send_one(b, h, "one", 3), 0);
	ASSERT_EQ(b1_send_one(b, h, "two", 3), 0);
	ASSERT_EQ(b1_release(c, hc), 0);	/* queues NODE_RELEASE on a */
	ASSERT_TRUE(b1_revents(a, POLLIN) & POLLIN);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	b1_expect_empty(a);
	ASSERT_FALSE(b1_revents(a, POLLIN) & POLLIN);
	/* messages sent after the reset are delivered normally again */
	ASSERT_EQ(b1_transfer(a, 0x300, b, &h), 0);
	ASSERT_EQ(b1_send_one(b, h, "three", 5), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x300);
}

/* §2.3 step 6.4 / §5.5: FLUSH unpublishes slices; the freed space is reused */
TEST(flush_unpublishes_slices)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(b, h, "12345678", 8), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.offset, 0);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	ASSERT_EQ(b1_send_one(b, h, "abcdefgh", 8), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.offset, 0);
}

/* §2.3 step 6 / §6.2: flushed slices are refunded (would exhaust max_slices otherwise) */
TEST(flush_refunds_quota)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;

	ASSERT_EQ(reset_raw(a, 0, B1_KEEP64, 2, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	for (int i = 0; i < 6; i++) {
		h = b1_share(a, 0x100, b);
		ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
		ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
		ASSERT_EQ(b1_release(b, h), 0);
	}
	assert_limits(a, 0, 2, 65536, 16777216, 4096);
}

/* §2.3 step 6: limits and FLUSH in one call are both applied */
TEST(flush_with_limits)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(reset_raw(a, BUS1_PEER_RESET_FLAG_FLUSH, 1, 10, 20, 30, 40), 0);
	assert_limits(a, 1, 10, 20, 30, 40);
	b1_expect_empty(a);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
}

/* §2.3 step 6: without FLUSH a reset leaves queue, nodes and handles alone */
TEST(reset_without_flush_keeps_state)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(b1_reset(a, 0), 0);
	ASSERT_EQ(b1_reset(b, 0), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x100);
	b1_expect_empty(b);
	ASSERT_EQ(b1_send_one(b, h, "y", 1), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x100);
}

/* §2.3 step 6 / A.1: FLUSH_SEED alone only drops the seed; no queue flush */
TEST(flush_seed_alone_keeps_queue)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH_SEED), 0);
	ASSERT_EQ(b1_reset(b, BUS1_PEER_RESET_FLAG_FLUSH_SEED), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x100);
	b1_expect_empty(b);
	ASSERT_EQ(b1_send_one(b, h, "y", 1), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x100);
}

/* §2.3 step 6: FLUSH|FLUSH_SEED (the man-page spelling too) is a full flush */
TEST(flush_and_flush_seed)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(b1_reset(a, BUS1_CMD_PEER_RESET_FLAG_FLUSH | BUS1_CMD_PEER_RESET_FLAG_FLUSH_SEED), 0);
	b1_expect_empty(a);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
	/* the peer stays connected and usable */
	assert_defaults(a);
	h = b1_share(a, 0x400, b);
	ASSERT_EQ(b1_send_one(b, h, "y", 1), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x400);
}

/* §2.3 step 6.1-6.2: FLUSH releases remote handles and frees user-chosen IDs */
TEST(flush_releases_remote_handles)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	/* A holds a remote handle to B's node and its own 0x100 */
	ASSERT_EQ(b1_transfer(b, 0x500, a, NULL), 0);
	ASSERT_EQ(b1_release(b, h), 0);
	expect_msg(a, BUS1_MSG_NODE_RELEASE, 0x100);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	/* B's node lost its only remote reference */
	expect_msg(b, BUS1_MSG_NODE_RELEASE, 0x500);
	b1_expect_empty(b);
	b1_expect_empty(a);
	/* 0x100 is free again: releasing it is the unknown-ID case */
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
}

/* ---------------------------------------------------------------- 48-byte variants */

/* §1.6: QUERY_U64 reports the same values in 64-bit fields */
TEST(query_u64)
{
	int fd = b1_open();
	struct bus1_cmd_peer_reset_u64 q;

	memset(&q, 0xcc, sizeof(q));
	q.flags = 0;
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_QUERY_U64, &q), 0);
	ASSERT_EQ_U64(q.flags, 0);
	ASSERT_EQ_U64(q.peer_flags, 0);
	ASSERT_EQ_U64(q.max_slices, 16384);
	ASSERT_EQ_U64(q.max_handles, 65536);
	ASSERT_EQ_U64(q.max_inflight_bytes, 16777216);
	ASSERT_EQ_U64(q.max_inflight_fds, 4096);
	q.flags = 1;
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_QUERY_U64, &q), -EINVAL);
}

/* §1.6: the 48-byte commands access all 48 bytes */
TEST(u64_exact_size)
{
	int fd = b1_open();
	struct bus1_cmd_peer_reset_u64 *q = b1_edge(sizeof(*q));

	memset(q, 0, sizeof(*q));
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_QUERY_U64, q), 0);
	ASSERT_EQ_U64(q->max_inflight_fds, 4096);
	/* a 48-byte struct of which only 32 bytes are readable */
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY_U64, (uint8_t *)q + 16), EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_RESET_U64, (uint8_t *)q + 16), EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY_U64, b1_ro_page()), EFAULT);
	assert_defaults(fd);
}

/* §1.6: RESET_U64 applies limits like the 32-byte command */
TEST(reset_u64_applies)
{
	int fd = b1_open();
	struct bus1_cmd_peer_reset_u64 r = {
		.flags = 0, .peer_flags = BUS1_PEER_FLAG_WANT_SECCTX,
		.max_slices = 3, .max_handles = B1_KEEP64,
		.max_inflight_bytes = 0x7FFFFFFF, .max_inflight_fds = 0,
	};

	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_RESET_U64, &r), 0);
	assert_limits(fd, 1, 3, 65536, 0x7FFFFFFF, 0);
	r.peer_flags = B1_KEEP64;
	r.max_slices = r.max_inflight_bytes = r.max_inflight_fds = B1_KEEP64;
	r.max_handles = 9;
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_RESET_U64, &r), 0);
	assert_limits(fd, 1, 3, 9, 0x7FFFFFFF, 0);
}

/* §1.6: RESET_U64 limits above 0x7FFFFFFF (not all-ones) → EINVAL, no truncation */
TEST(reset_u64_bad_values_einval)
{
	int fd = b1_open();
	uint64_t bad[] = { 0x80000000ULL, 0x100000005ULL, 0xFFFFFFFF00000000ULL,
			   0xFFFFFFFFFFFFFFFEULL };
	struct bus1_cmd_peer_reset_u64 r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (int f = 0; f < 4; f++) {
			r = (struct bus1_cmd_peer_reset_u64){
				.flags = 0, .peer_flags = 1, .max_slices = 5,
				.max_handles = 5, .max_inflight_bytes = 5,
				.max_inflight_fds = 5,
			};
			(&r.max_slices)[f] = bad[i];
			ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_RESET_U64, &r), -EINVAL);
		}
	}
	r = (struct bus1_cmd_peer_reset_u64){ .flags = 8, .peer_flags = B1_KEEP64,
		.max_slices = B1_KEEP64, .max_handles = B1_KEEP64,
		.max_inflight_bytes = B1_KEEP64, .max_inflight_fds = B1_KEEP64 };
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_RESET_U64, &r), -EINVAL);
	r.flags = 0;
	r.peer_flags = 2;
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_RESET_U64, &r), -EINVAL);
	assert_defaults(fd);
}

/* §1.6: RESET_U64 with FLUSH flushes */
TEST(reset_u64_flush)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	struct bus1_cmd_peer_reset_u64 r = {
		.flags = BUS1_PEER_RESET_FLAG_FLUSH, .peer_flags = B1_KEEP64,
		.max_slices = B1_KEEP64, .max_handles = B1_KEEP64,
		.max_inflight_bytes = B1_KEEP64, .max_inflight_fds = B1_KEEP64,
	};

	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_PEER_RESET_U64, &r), 0);
	b1_expect_empty(a);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
	assert_defaults(a);
}

/* ---------------------------------------------------------------- DISCONNECT */

/* §2.1 step 1: arg != 0 → EINVAL and the peer stays connected */
TEST(disconnect_nonzero_arg_einval)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_ioctl_raw(a, BUS1_CMD_PEER_DISCONNECT, 1), -EINVAL);
	ASSERT_EQ(b1_ioctl_raw(a, BUS1_CMD_PEER_DISCONNECT, 0x1000), -EINVAL);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x100);
	ASSERT_EQ(b1_revents(a, POLLHUP | POLLOUT) & POLLHUP, 0);
}

/* §2.1 step 5: first disconnect 0, later ones ESHUTDOWN */
TEST(disconnect_twice)
{
	int fd = b1_open();

	ASSERT_EQ(b1_disconnect(fd), 0);
	ASSERT_EQ(b1_disconnect(fd), -ESHUTDOWN);
	ASSERT_EQ(b1_disconnect(fd), -ESHUTDOWN);
}

struct racer {
	pthread_barrier_t *bar;
	int fd;
	int ret;
};

static void *disconnect_racer(void *arg)
{
	struct racer *r = arg;

	pthread_barrier_wait(r->bar);
	r->ret = b1_disconnect(r->fd);
	return NULL;
}

/* §2.1 steps 4-5: concurrent disconnects: exactly one returns 0, the rest ESHUTDOWN */
TEST(disconnect_concurrent_one_winner)
{
	enum { N = 8 };
	pthread_barrier_t bar;
	pthread_t t[N];
	struct racer r[N];
	int b = b1_open();

	for (int round = 0; round < 20; round++) {
		int a = b1_open(), zeros = 0;
		uint64_t h = b1_share(a, 0x100, b);

		ASSERT_OK(pthread_barrier_init(&bar, NULL, N));
		for (int i = 0; i < N; i++) {
			r[i] = (struct racer){ &bar, a, 1 };
			ASSERT_OK(pthread_create(&t[i], NULL, disconnect_racer, &r[i]));
		}
		for (int i = 0; i < N; i++) {
			pthread_join(t[i], NULL);
			if (r[i].ret == 0)
				zeros++;
			else
				ASSERT_EQ(r[i].ret, -ESHUTDOWN);
		}
		pthread_barrier_destroy(&bar);
		ASSERT_EQ(zeros, 1);
		/* the teardown is complete when any of them returned */
		expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
		ASSERT_EQ(b1_release(b, h), 0);
		ASSERT_OK(close(a));
	}
	b1_expect_empty(b);
}

/* §8.6: holders get NODE_DESTROY; SEND → ESHUTDOWN; TRANSFER → INVALID; release OK */
TEST(disconnect_effects_on_holders)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_share(a, 0x100, b), x = 0;

	ASSERT_EQ(b1_disconnect(a), 0);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
	b1_expect_empty(b);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
	ASSERT_EQ(b1_transfer(b, h, c, &x), 0);
	ASSERT_EQ_U64(x, BUS1_HANDLE_INVALID);
	b1_expect_empty(c);
	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ(b1_release(b, h), -ENXIO);
	b1_expect_empty(b);
}

/* §8.6: handles the departed peer held are released → owners get NODE_RELEASE */
TEST(disconnect_releases_held_handles)
{
	int a = b1_open(), b = b1_open();

	(void)b1_share(a, 0x100, b);
	(void)b1_share(a, 0x100, b);	/* two user references */
	ASSERT_EQ(b1_disconnect(b), 0);
	expect_msg(a, BUS1_MSG_NODE_RELEASE, 0x100);
	b1_expect_empty(a);
}

/* §8.6: messages already committed by a departed sender are still delivered */
TEST(disconnect_sender_messages_survive)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	struct bus1_cmd_recv r;
	const uint8_t *pool = b1_map(a);

	ASSERT_EQ(b1_send_one(b, h, "still here", 10), 0);
	ASSERT_EQ(b1_disconnect(b), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_EQ(r.msg.uid, getuid());
	ASSERT_EQ(r.msg.pid, getpid());
	ASSERT_MEMEQ(pool + r.msg.offset, "still here", 10);
	/* then B's handle is gone: release notification */
	expect_msg(a, BUS1_MSG_NODE_RELEASE, 0x100);
}

/* §8.6: handles to a departed peer's nodes carried by earlier messages stay valid */
TEST(disconnect_carried_handles_valid)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_share(a, 0x100, b), hc = b1_share(c, 0x700, b);
	const uint8_t *pool = b1_map(c);
	struct iovec v = { .iov_base = "p", .iov_len = 1 };
	struct bus1_cmd_recv r;
	uint64_t got;

	ASSERT_EQ(b1_send(b, 0, &hc, 1, NULL, &v, 1, &h, 1, NULL, 0), 0);
	ASSERT_EQ(b1_disconnect(a), 0);
	ASSERT_EQ(b1_recv(c, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.n_handles, 1);
	memcpy(&got, pool + r.msg.offset + 8, 8);
	ASSERT_EQ_U64(got, 0xB);
	expect_msg(c, BUS1_MSG_NODE_DESTROY, 0xB);
	b1_expect_empty(c);
	ASSERT_EQ(b1_send_one(c, got, "x", 1), -ESHUTDOWN);
	ASSERT_EQ(b1_release(c, got), 0);
}

/* §8.3: disconnect keeps existing pool mappings readable */
TEST(disconnect_mapping_stays)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(b, h, "persist", 7), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(b1_disconnect(a), 0);
	ASSERT_MEMEQ(pool + r.msg.offset, "persist", 7);
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), -ESHUTDOWN);
}

/* §8.5: closing one of two dup'ed fds does not disconnect */
TEST(close_dup_keeps_peer)
{
	int a = b1_open(), b = b1_open();
	int a2 = dup(a);
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_GE(a2, 0);
	ASSERT_OK(close(a));
	b1_expect_empty(b);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	expect_msg(a2, BUS1_MSG_DATA, 0x100);
	ASSERT_OK(close(a2));
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
}

/* §8.5: pool mappings do not keep a peer alive */
TEST(close_with_mapping_disconnects)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	const uint8_t *pool = b1_map(a);

	ASSERT_EQ(b1_send_one(b, h, "m", 1), 0);
	ASSERT_OK(close(a));
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
	ASSERT_EQ(pool[0], 'm');
}
