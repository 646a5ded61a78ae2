/* SPDX-License-Identifier: MIT */
/*
 * The receive pool (§5.1-§5.3, §5.5): offsets, best-fit
 * allocation with lowest-offset tie-break and merging of free neighbours,
 * the slice life cycle (referenced/published), SLICE_RELEASE (2.7), and
 * the pool after a flushing reset or a disconnect; EXFULL of a full pool.
 */
#include <sys/mman.h>

#include "bus1-util.h"

/* Sends `len` bytes of `fill` to dest and RECVs it on b; returns the offset. */
static uint64_t put(int a, uint64_t dest, int b, size_t len, int fill)
{
	static char buf[4096];
	struct bus1_cmd_recv r;

	ASSERT_LE(len, sizeof(buf));
	memset(buf, fill, len);
	ASSERT_EQ(b1_send_one(a, dest, buf, len), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.n_bytes, len);
	return r.msg.offset;
}

/* §2.7: SLICE_RELEASE errors: EFAULT, ENXIO for anything but a published start */
TEST(pool_slice_release_errors)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_SLICE_RELEASE, NULL), -EFAULT);
	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_SLICE_RELEASE, b1_bad_ptr()), -EFAULT);
	/* nothing allocated */
	ASSERT_EQ(b1_slice_release(b, 0), -ENXIO);
	ASSERT_EQ(b1_slice_release(b, BUS1_OFFSET_INVALID), -ENXIO);
	ASSERT_EQ(b1_slice_release(b, B1_POOL_SIZE), -ENXIO);
	/* allocated but not published (still queued) */
	ASSERT_EQ(b1_send_one(a, h, "0123456789abcdef", 16), 0);
	ASSERT_EQ(b1_slice_release(b, 0), -ENXIO);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 0);
	/* not at the slice start */
	ASSERT_EQ(b1_slice_release(b, 8), -ENXIO);
	ASSERT_EQ(b1_slice_release(b, 1), -ENXIO);
	/* a valid offset of another peer's pool means nothing here */
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
	ASSERT_EQ(b1_slice_release(b, 0), 0);
	/* twice → ENXIO */
	ASSERT_EQ(b1_slice_release(b, 0), -ENXIO);
	/* on a disconnected peer → ESHUTDOWN */
	ASSERT_EQ(b1_disconnect(b), 0);
	ASSERT_EQ(b1_slice_release(b, 0), -ESHUTDOWN);
}

/* §5.2 / §5.3: a received slice stays allocated until released, then is reused */
TEST(pool_release_then_reuse)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);

	ASSERT_EQ(put(a, h, b, 24, 'a'), 0);
	ASSERT_EQ(put(a, h, b, 24, 'b'), 24);	/* slice 0 still published */
	ASSERT_EQ(b1_slice_release(b, 0), 0);
	ASSERT_EQ(put(a, h, b, 24, 'c'), 0);	/* exact fit reused */
	ASSERT_EQ(put(a, h, b, 8, 'd'), 48);
	ASSERT_EQ(b1_slice_release(b, 24), 0);
	/* a smaller request takes the beginning of the freed range */
	ASSERT_EQ(put(a, h, b, 8, 'e'), 24);
	ASSERT_EQ(put(a, h, b, 16, 'f'), 32);
	ASSERT_EQ(put(a, h, b, 8, 'g'), 56);
}

/* §5.2: best fit — the smallest free range that is large enough wins */
TEST(pool_best_fit)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);

	ASSERT_EQ(put(a, h, b, 64, 'A'), 0);
	ASSERT_EQ(put(a, h, b, 8, 'B'), 64);
	ASSERT_EQ(put(a, h, b, 32, 'C'), 72);
	ASSERT_EQ(put(a, h, b, 8, 'D'), 104);
	ASSERT_EQ(put(a, h, b, 16, 'E'), 112);
	ASSERT_EQ(put(a, h, b, 8, 'F'), 128);
	/* holes: [0,64) [72,104) [112,128), tail from 136 */
	ASSERT_EQ(b1_slice_release(b, 0), 0);
	ASSERT_EQ(b1_slice_release(b, 72), 0);
	ASSERT_EQ(b1_slice_release(b, 112), 0);
	ASSERT_EQ(put(a, h, b, 16, 'g'), 112);	/* exact fit, not the lowest hole */
	ASSERT_EQ(put(a, h, b, 24, 'h'), 72);	/* 32-hole; leaves [96,104) */
	ASSERT_EQ(put(a, h, b, 8, 'i'), 96);	/* exact 8-hole */
	ASSERT_EQ(put(a, h, b, 40, 'j'), 0);	/* 64-hole; leaves [40,64) */
	ASSERT_EQ(put(a, h, b, 24, 'k'), 40);	/* exact */
	ASSERT_EQ(put(a, h, b, 8, 'l'), 136);	/* only the tail is left */
}

/* §5.2: among equally sized free ranges the lowest offset wins */
TEST(pool_best_fit_tie_lowest_offset)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);

	ASSERT_EQ(put(a, h, b, 16, '1'), 0);
	ASSERT_EQ(put(a, h, b, 8, '2'), 16);
	ASSERT_EQ(put(a, h, b, 16, '3'), 24);
	ASSERT_EQ(put(a, h, b, 8, '4'), 40);
	ASSERT_EQ(put(a, h, b, 16, '5'), 48);
	ASSERT_EQ(put(a, h, b, 8, '6'), 64);
	/* free in reverse address order */
	ASSERT_EQ(b1_slice_release(b, 48), 0);
	ASSERT_EQ(b1_slice_release(b, 24), 0);
	ASSERT_EQ(b1_slice_release(b, 0), 0);
	ASSERT_EQ(put(a, h, b, 16, 'x'), 0);
	ASSERT_EQ(put(a, h, b, 16, 'y'), 24);
	ASSERT_EQ(put(a, h, b, 16, 'z'), 48);
	ASSERT_EQ(put(a, h, b, 16, 'w'), 72);
}

/* §5.2: a freed slice merges with free neighbours on both sides */
TEST(pool_free_merges_neighbours)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);

	ASSERT_EQ(put(a, h, b, 8, 'X'), 0);
	ASSERT_EQ(put(a, h, b, 16, 'Y'), 8);
	ASSERT_EQ(put(a, h, b, 8, 'Z'), 24);
	ASSERT_EQ(put(a, h, b, 8, 'W'), 32);
	ASSERT_EQ(b1_slice_release(b, 0), 0);
	ASSERT_EQ(b1_slice_release(b, 24), 0);
	ASSERT_EQ(b1_slice_release(b, 8), 0);	/* joins both sides: [0,32) */
	ASSERT_EQ(put(a, h, b, 32, 'M'), 0);
	/* merge with a right neighbour only, then with the left one */
	ASSERT_EQ(put(a, h, b, 8, 'P'), 40);
	ASSERT_EQ(put(a, h, b, 8, 'Q'), 48);
	ASSERT_EQ(put(a, h, b, 8, 'R'), 56);
	ASSERT_EQ(b1_slice_release(b, 48), 0);
	ASSERT_EQ(b1_slice_release(b, 40), 0);	/* [40,56) */
	ASSERT_EQ(put(a, h, b, 16, 'S'), 40);
	/* the last slice merges into the free tail */
	ASSERT_EQ(b1_slice_release(b, 56), 0);
	ASSERT_EQ(put(a, h, b, 64, 'T'), 56);
}

/* §5.3: PEEK publishes but keeps the reference; SLICE_RELEASE only unpublishes */
TEST(pool_peek_lifecycle)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, h, "peeked!!", 8), 0);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_EQ(r.msg.offset, 0);
	ASSERT_EQ(b1_slice_release(b, 0), 0);
	ASSERT_EQ(b1_slice_release(b, 0), -ENXIO);
	/* still referenced by the queued message: a new slice goes elsewhere */
	ASSERT_EQ(b1_send_one(a, h, "next----", 8), 0);
	/* the later RECV republishes the same offset */
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 8);
	ASSERT_EQ(b1_slice_release(b, 0), 0);
	ASSERT_EQ(b1_slice_release(b, 0), -ENXIO);
	ASSERT_EQ(put(a, h, b, 8, 'r'), 0);
}

/* §5.3: PEEK then RECV: one SLICE_RELEASE frees it */
TEST(pool_peek_then_recv_single_release)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, h, "pp", 2), 0);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 0);
	ASSERT_EQ(b1_slice_release(b, 0), 0);
	ASSERT_EQ(b1_slice_release(b, 0), -ENXIO);
	ASSERT_EQ(put(a, h, b, 2, 'q'), 0);
}

/* §5.3: a message discarded at RECV frees its slice without publishing it */
TEST(pool_discarded_slice_freed)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	uint64_t id = 0x100;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, h, "stale", 5), 0);
	ASSERT_EQ(b1_destroy(b, &id, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_slice_release(b, 0), -ENXIO);
	h = b1_handle_to(b, 0x200, a);
	ASSERT_EQ(put(a, h, b, 5, 's'), 0);
}

/* §5.5 / §2.3: a flushing reset unpublishes every slice and frees the queue's */
TEST(pool_after_flush)
{
	int a = b1_open(), b = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(put(a, h, b, 16, 'o'), 0);	/* published */
	ASSERT_EQ(b1_send_one(a, h, "queued..", 8), 0);	/* [16,24) queued */
	ASSERT_EQ(b1_send_one(a, h, "second..", 8), 0);	/* [24,32) queued */
	ASSERT_EQ(b1_reset(b, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_EQ(b1_slice_release(b, 0), -ENXIO);
	ASSERT_EQ(b1_slice_release(b, 16), -ENXIO);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	/* freed space is not cleared: the mapping still shows the old bytes */
	ASSERT_EQ(pool[0], 'o');
	ASSERT_MEMEQ(pool + 16, "queued..", 8);
	/* the whole pool is free again */
	ASSERT_EQ(b1_transfer(b, 0x200, a, &h), 0);
	ASSERT_EQ(put(a, h, b, 32, 'n'), 0);
	ASSERT_EQ(pool[0], 'n');
}

/* §2.3: a reset without FLUSH leaves slices and queue alone */
TEST(pool_reset_without_flush_keeps_slices)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(put(a, h, b, 8, 'k'), 0);
	ASSERT_EQ(b1_send_one(a, h, "q", 1), 0);
	ASSERT_EQ(b1_reset(b, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 8);
	ASSERT_EQ(b1_slice_release(b, 0), 0);
	ASSERT_EQ(b1_slice_release(b, 8), 0);
}

/* §5.3: a PEEKed slice unpublished by a flush is freed with the message */
TEST(pool_flush_frees_peeked)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, h, "12345678", 8), 0);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_EQ(b1_reset(b, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_EQ(b1_slice_release(b, 0), -ENXIO);
	ASSERT_EQ(b1_transfer(b, 0x200, a, &h), 0);
	ASSERT_EQ(put(a, h, b, 8, 'f'), 0);
}

/* §5.4 / §5.5: mappings stay readable after disconnect and close */
TEST(pool_mapping_survives_disconnect)
{
	int a = b1_open(), b = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t h = b1_handle_to(b, 0x100, a);

	ASSERT_EQ(put(a, h, b, 8, 'v'), 0);
	ASSERT_EQ(b1_send_one(a, h, "pending!", 8), 0);
	ASSERT_EQ(b1_disconnect(b), 0);
	ASSERT_EQ(pool[0], 'v');
	ASSERT_MEMEQ(pool + 8, "pending!", 8);
	close(b);
	ASSERT_EQ(pool[7], 'v');
	ASSERT_EQ(b1_send_one(a, h, "x", 1), -ESHUTDOWN);
}

/* §5.2 / §4.7 / A.2: a full pool → EXFULL (per destination with CONTINUE) */
TEST_TIMEOUT(pool_exfull, 60)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t d[2] = { b1_handle_to(b, 0x100, a), b1_handle_to(c, 0x100, a) };
	const size_t chunk = 8u << 20;
	char *buf = malloc(chunk);
	struct iovec v = { buf, chunk };
	struct bus1_cmd_recv r;
	uint64_t err[2] = { 0, 0 };

	ASSERT_TRUE(buf != NULL);
	memset(buf, 0x5A, chunk);
	/* 63 published 8 MiB slices leave 8 MiB - 1 bytes allocatable */
	for (int i = 0; i < 63; i++) {
		ASSERT_EQ(b1_send(a, 0, d, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
		ASSERT_EQ(b1_recv(b, &r, 0), 0);
		ASSERT_EQ_U64(r.msg.offset, (uint64_t)i * chunk);
	}
	ASSERT_EQ(b1_send(a, 0, d, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EXFULL);
	/* a multicast with a full receiver delivers nothing */
	v.iov_len = 8;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(b1_recv(c, &r, 0), 0);
	/* the largest usable slice is 2^29 - 8: 8 MiB - 8 now, minus that 8 */
	v.iov_len = chunk - 8;
	ASSERT_EQ(b1_send(a, 0, d, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EXFULL);
	v.iov_len = chunk - 16;
	ASSERT_EQ(b1_send(a, 0, d, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.offset, 63 * (uint64_t)chunk + 8);
	/* now even the smallest slice does not fit */
	v.iov_len = 0;
	ASSERT_EQ(b1_send(a, 0, d, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EXFULL);
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, &v, 1, NULL, 0, NULL, 0), -EXFULL);
	ASSERT_EQ(b1_recv(c, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_CONTINUE, d, 2, err, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(err[0], EXFULL);
	ASSERT_EQ(err[1], 0);
	ASSERT_EQ(b1_recv(c, &r, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	/* releasing one slice makes room again, at exactly that offset */
	ASSERT_EQ(b1_slice_release(b, 5 * chunk), 0);
	ASSERT_EQ(b1_send(a, 0, d, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.offset, 5 * (uint64_t)chunk);
}

/*
 * §2.8 steps 9.7 and 9.8: the slice is allocated before the payload is
 * copied, so a full pool is EXFULL even when the payload is unreadable;
 * the failed calls leave the pool as it was.
 */
TEST_TIMEOUT(pool_exfull_before_payload_efault, 60)
{
	int a = b1_open(), b = b1_open();
	uint64_t d = b1_handle_to(b, 0x100, a);
	const size_t chunk = 8u << 20;
	char *buf = malloc(chunk);
	struct iovec v = { buf, chunk };
	struct bus1_cmd_recv r;

	ASSERT_TRUE(buf != NULL);
	memset(buf, 0x3C, chunk);
	/* 63 published 8 MiB slices leave 8 MiB - 1 bytes allocatable */
	for (int i = 0; i < 63; i++) {
		ASSERT_EQ(b1_send(a, 0, &d, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
		ASSERT_EQ(b1_recv(b, &r, 0), 0);
	}
	/* an unreadable 8 MiB payload does not fit: EXFULL, not EFAULT */
	v.iov_base = mmap(NULL, chunk, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ASSERT_TRUE(v.iov_base != MAP_FAILED);
	ASSERT_EQ(b1_send(a, 0, &d, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EXFULL);
	/* a smaller one fits, and then faults */
	v.iov_len = 8;
	ASSERT_EQ(b1_send(a, 0, &d, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EFAULT);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	/* the largest remaining slice is still free */
	v = (struct iovec){ buf, chunk - 8 };
	ASSERT_EQ(b1_send(a, 0, &d, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.offset, 63 * (uint64_t)chunk);
	ASSERT_EQ(b1_slice_release(b, 0), 0);
}
