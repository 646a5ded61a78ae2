/* SPDX-License-Identifier: MIT */
/*
 * SLICE_RELEASE (§2.7) and the slice life cycle it controls
 * (5.2, 5.3): only the exact start of a published slice is accepted; PEEKed
 * slices stay allocated until their message is dequeued; freed space is
 * reused and the slice quota refunded.
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "bus1-util.h"



/* Receives one DATA message (with flags) and returns its slice offset. */
static uint64_t recv_offset(int fd, uint64_t flags, uint64_t n_bytes)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, flags), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.n_bytes, n_bytes);
	return r.msg.offset;
}

/* §2.7 step 1: unreadable offset → EFAULT */
TEST(slice_release_efault)
{
	int a = b1_open();

	ASSERT_ERRNO(ioctl(a, BUS1_CMD_SLICE_RELEASE, b1_bad_ptr()), EFAULT);
	ASSERT_ERRNO(ioctl(a, BUS1_CMD_SLICE_RELEASE, NULL), EFAULT);
}

/* §2.7 step 2: nothing published in a fresh pool → ENXIO for any offset */
TEST(slice_release_fresh_enxio)
{
	int a = b1_open();
	uint64_t offs[] = { 0, 8, 4096, B1_POOL_SIZE - 8, B1_POOL_SIZE, 1ULL << 40,
			    BUS1_OFFSET_INVALID, 3 };

	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++)
		ASSERT_EQ(b1_slice_release(a, offs[i]), -ENXIO);
}

/* §2.7 steps 2-3: release of a received slice works once; again → ENXIO */
TEST(slice_release_once)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;

	ASSERT_EQ(b1_send_one(b, h, "hello", 5), 0);
	off = recv_offset(a, 0, 5);
	ASSERT_EQ_U64(off, 0);
	ASSERT_EQ(b1_slice_release(a, off), 0);
	ASSERT_EQ(b1_slice_release(a, off), -ENXIO);
}

/* §2.7 step 2: an offset inside a slice (not its start) → ENXIO */
TEST(slice_release_not_start_enxio)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;
	char buf[64] = "0123456789";

	ASSERT_EQ(b1_send_one(b, h, buf, sizeof(buf)), 0);
	off = recv_offset(a, 0, sizeof(buf));
	ASSERT_EQ(b1_slice_release(a, off + 8), -ENXIO);
	ASSERT_EQ(b1_slice_release(a, off + 1), -ENXIO);
	ASSERT_EQ(b1_slice_release(a, off + 63), -ENXIO);
	ASSERT_EQ(b1_slice_release(a, off + 64), -ENXIO);
	/* the failures did not unpublish it */
	ASSERT_EQ(b1_slice_release(a, off), 0);
}

/* §2.7 step 2 / §5.3: a queued (never received) slice is not published → ENXIO */
TEST(slice_release_unpublished_enxio)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;

	ASSERT_EQ(b1_send_one(b, h, "queued", 6), 0);
	/* it is allocated at offset 0, but not published */
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
	off = recv_offset(a, 0, 6);
	ASSERT_EQ_U64(off, 0);
	ASSERT_EQ(b1_slice_release(a, 0), 0);
}

/* §2.7: slices are per peer; another peer's offset is not ours */
TEST(slice_release_other_peer_enxio)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;

	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	off = recv_offset(a, 0, 1);
	ASSERT_EQ(b1_slice_release(b, off), -ENXIO);
	ASSERT_EQ(b1_slice_release(a, off), 0);
}

/* §5.2: successive slices are packed (8-byte granularity, minimum 8) */
TEST(slice_offsets_packed)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_send_one(b, h, "12345", 5), 0);		/* 8 */
	ASSERT_EQ(b1_send_one(b, h, "123456789", 9), 0);	/* 16 */
	ASSERT_EQ(b1_send_one(b, h, NULL, 0), 0);		/* min 8 */
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);		/* 8 */
	ASSERT_EQ_U64(recv_offset(a, 0, 5), 0);
	ASSERT_EQ_U64(recv_offset(a, 0, 9), 8);
	ASSERT_EQ_U64(recv_offset(a, 0, 0), 24);
	ASSERT_EQ_U64(recv_offset(a, 0, 1), 32);
	ASSERT_EQ(b1_slice_release(a, 24), 0);
	ASSERT_EQ(b1_slice_release(a, 8), 0);
	ASSERT_EQ(b1_slice_release(a, 0), 0);
	ASSERT_EQ(b1_slice_release(a, 32), 0);
}

/* §5.2 / §5.3: a released slice is reused by the next request of its size */
TEST(slice_space_reused)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_send_one(b, h, "aaaaaaaaaaaaaaaa", 16), 0);
	ASSERT_EQ(b1_send_one(b, h, "bbbbbbbb", 8), 0);
	ASSERT_EQ_U64(recv_offset(a, 0, 16), 0);
	ASSERT_EQ_U64(recv_offset(a, 0, 8), 16);
	ASSERT_EQ(b1_slice_release(a, 0), 0);
	/* best fit: the 16-byte hole at 0 */
	ASSERT_EQ(b1_send_one(b, h, "cccccccccccccccc", 16), 0);
	ASSERT_EQ_U64(recv_offset(a, 0, 16), 0);
	/* without releasing, nothing reuses a published slice */
	ASSERT_EQ(b1_send_one(b, h, "dddddddd", 8), 0);
	ASSERT_EQ_U64(recv_offset(a, 0, 8), 24);
}

/* §2.7 step 3 / §5.3: a PEEKed slice only gets unpublished; RECV republishes it */
TEST(slice_release_after_peek)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;

	ASSERT_EQ(b1_send_one(b, h, "peek", 4), 0);
	off = recv_offset(a, BUS1_RECV_FLAG_PEEK, 4);
	ASSERT_EQ(b1_slice_release(a, off), 0);
	ASSERT_EQ(b1_slice_release(a, off), -ENXIO);
	/* still allocated: the next message does not land on it */
	ASSERT_EQ(b1_send_one(b, h, "next", 4), 0);
	ASSERT_EQ_U64(recv_offset(a, 0, 4), off);
	ASSERT_EQ(b1_slice_release(a, off), 0);
	ASSERT_EQ_U64(recv_offset(a, 0, 4), off + 8);
	ASSERT_EQ(b1_slice_release(a, off + 8), 0);
	ASSERT_EQ(b1_slice_release(a, off), -ENXIO);
}

/* §2.7 step 3 / §6.2: releasing refunds the slice quota */
TEST(slice_release_refunds_quota)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;

	ASSERT_EQ(b1_set_slices(a, 2), 0);
	for (int i = 0; i < 10; i++) {
		ASSERT_EQ(b1_send_one(b, h, "q", 1), 0);
		off = recv_offset(a, 0, 1);
		ASSERT_EQ(b1_slice_release(a, off), 0);
	}
}

/* §5.3: a published but unreleased slice keeps its quota charge */
TEST(slice_unreleased_keeps_quota)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;

	ASSERT_EQ(b1_set_slices(a, 0), 0);
	ASSERT_EQ(b1_send_one(b, h, "q", 1), -EDQUOT);
	ASSERT_EQ(b1_set_slices(a, 16384), 0);
	ASSERT_EQ(b1_send_one(b, h, "q", 1), 0);
	off = recv_offset(a, 0, 1);
	/* 1 slice in use: max 1 leaves 0 remaining */
	ASSERT_EQ(b1_set_slices(a, 1), 0);
	ASSERT_EQ(b1_send_one(b, h, "r", 1), -EDQUOT);
	ASSERT_EQ(b1_slice_release(a, off), 0);
	ASSERT_EQ(b1_set_slices(a, 2), 0);
	ASSERT_EQ(b1_send_one(b, h, "r", 1), 0);
}

/*
 * §2.7 with a message still queued (such a release skips the peer lock and
 * waits in a ring for the lock's next holder): the same errnos, and the
 * slice and its quota are the very next SEND's.
 */
TEST(slice_release_behind_backlog)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	int n = 0;

	/* as many 8-byte messages as b's share of a's slices allows */
	ASSERT_EQ(b1_set_slices(a, 8), 0);
	while (n < 8 && b1_send_one(b, h, "aaaaaaaa", 8) == 0)
		n++;
	ASSERT_TRUE(n >= 2);
	ASSERT_EQ(b1_send_one(b, h, "cccccccc", 8), -EDQUOT);
	ASSERT_EQ_U64(recv_offset(a, 0, 8), 0);
	ASSERT_EQ(b1_slice_release(a, 4), -ENXIO);
	ASSERT_EQ(b1_slice_release(a, 8), -ENXIO);	/* queued, not published */
	ASSERT_EQ(b1_slice_release(a, 0), 0);
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
	/* the released slice's quota and room go to the next message */
	ASSERT_EQ(b1_send_one(b, h, "cccccccc", 8), 0);
	for (int i = 1; i < n; i++) {
		ASSERT_EQ_U64(recv_offset(a, 0, 8), 8 * (uint64_t)i);
		ASSERT_EQ(b1_slice_release(a, 8 * (uint64_t)i), 0);
		ASSERT_EQ(b1_slice_release(a, 8 * (uint64_t)i), -ENXIO);
	}
	ASSERT_EQ_U64(recv_offset(a, 0, 8), 0);
	ASSERT_EQ(b1_slice_release(a, 0), 0);
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
	ASSERT_EQ(b1_recv(a, &(struct bus1_cmd_recv){ 0 }, 0), -EAGAIN);
}

/* §2.7: SLICE_RELEASE on a disconnected peer → ESHUTDOWN */
TEST(slice_release_disconnected)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;

	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	off = recv_offset(a, 0, 1);
	ASSERT_EQ(b1_disconnect(a), 0);
	ASSERT_EQ(b1_slice_release(a, off), -ESHUTDOWN);
	ASSERT_ERRNO(ioctl(a, BUS1_CMD_SLICE_RELEASE, b1_bad_ptr()), ESHUTDOWN);
}
