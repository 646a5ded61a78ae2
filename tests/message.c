/* SPDX-License-Identifier: MIT */
/*
 * Messages and the slice layout (§4.1, §4.2, §4.7): where the
 * payload, the handle IDs and the fd numbers sit in the receiver's pool,
 * slice sizes and alignment, kernel-assigned IDs of received handles
 * (3.3), and the size limits with their exact errnos.
 *
 * The shim supplies no security context (4.5), so slice sizes here are
 * max(8, A(nb) + 8·nh + A(4·nf)).
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "bus1-util.h"


static int set_peer_flags(int fd, uint64_t peer_flags)
{
	struct bus1_cmd_peer_reset r = {
		.peer_flags = peer_flags,
		.max_slices = B1_KEEP32, .max_handles = B1_KEEP32,
		.max_inflight_bytes = B1_KEEP32, .max_inflight_fds = B1_KEEP32,
	};

	return b1_ioctl(fd, BUS1_CMD_PEER_RESET, &r);
}

/* Sends `len` bytes of `fill` from a to dest; returns the receiver's msg. */
static struct bus1_cmd_recv xfer(int a, uint64_t dest, int b, size_t len, int fill)
{
	char buf[4096];
	struct bus1_cmd_recv r;

	ASSERT_LE(len, sizeof(buf));
	memset(buf, fill, len);
	ASSERT_EQ(b1_send_one(a, dest, buf, len), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, len);
	return r;
}

/* §4.1 / §5.2: slices are max(8, A(nb)) long and follow each other from 0 */
TEST(msg_layout_payload_offsets)
{
	int a = b1_open(), b = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t h = b1_handle_to(b, 0x100, a);
	static const size_t len[] = { 1, 8, 9, 0, 15, 16, 17, 100 };
	uint64_t expect = 0;

	for (size_t i = 0; i < sizeof(len) / sizeof(len[0]); i++) {
		struct bus1_cmd_recv r = xfer(a, h, b, len[i], 'a' + (int)i);
		uint64_t size = len[i] ? (len[i] + 7) / 8 * 8 : 8;

		ASSERT_EQ_U64(r.msg.offset, expect);
		ASSERT_EQ(r.msg.offset % 8, 0);
		for (size_t j = 0; j < len[i]; j++)
			ASSERT_EQ(pool[r.msg.offset + j], 'a' + (int)i);
		expect += size;
	}
}

/* §4.1: the payload is the concatenation of all iovecs in order (1024 of them) */
TEST(msg_layout_iovec_concatenation)
{
	int a = b1_open(), b = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t h = b1_handle_to(b, 0x100, a);
	static struct iovec v[1024];
	static uint8_t src[1024], expect[1024];
	struct bus1_cmd_recv r;
	size_t n = 0;

	for (int i = 0; i < 1024; i++) {
		src[i] = (uint8_t)(i * 7 + 3);
		/* every third element is empty */
		v[i] = (struct iovec){ &src[i], i % 3 == 2 ? 0 : 1 };
		if (i % 3 != 2)
			expect[n++] = src[i];
	}
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 1024, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, n);
	ASSERT_MEMEQ(pool + r.msg.offset, expect, n);
	/* 1025 vecs → EMSGSIZE (§4.7), nothing sent */
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 1025, NULL, 0, NULL, 0), -EMSGSIZE);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
}

/* §4.1: handle IDs follow the payload at A(nb); slice = A(nb) + 8·nh */
TEST(msg_layout_handles)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t dest = b1_handle_to(b, 0x100, s);
	uint64_t hs[2] = { b1_handle_to(o, 0x10, s), b1_handle_to(o, 0x20, s) };
	uint64_t ids[2];
	struct iovec v = { "hello", 5 };
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, &v, 1, hs, 2, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 0);
	ASSERT_EQ(r.msg.n_bytes, 5);
	ASSERT_EQ(r.msg.n_handles, 2);
	ASSERT_MEMEQ(pool, "hello", 5);
	memcpy(ids, pool + 8, 16);
	ASSERT_EQ_U64(ids[0], 0xB);
	ASSERT_EQ_U64(ids[1], 0x13);
	/* 8-aligned payload: IDs right behind it; slice [24, 24+16+8) */
	v = (struct iovec){ "0123456789abcdef", 16 };
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, &v, 1, hs + 1, 1, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 24);
	memcpy(ids, pool + 24 + 16, 8);
	ASSERT_EQ_U64(ids[0], 0x13);
	/* handles only, no payload: IDs at the slice start, slice 8·nh */
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, NULL, 0, hs, 2, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 48);
	ASSERT_EQ(r.msg.n_bytes, 0);
	memcpy(ids, pool + 48, 16);
	ASSERT_EQ_U64(ids[0], 0xB);
	ASSERT_EQ_U64(ids[1], 0x13);
	/* and the next slice starts right after */
	ASSERT_EQ(xfer(s, dest, b, 1, 'z').msg.offset, 64);
}

/* §4.1: fd numbers follow the handle IDs; slice = A(nb) + 8·nh + A(4·nf) */
TEST(msg_layout_fds)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t dest = b1_handle_to(b, 0x100, s);
	uint64_t hs = b1_handle_to(o, 0x10, s), id;
	int p[2], fds[3], got[3];
	struct iovec v = { "abc", 3 };
	struct bus1_cmd_recv r;

	ASSERT_OK(pipe(p));
	fds[0] = p[0];
	fds[1] = p[1];
	fds[2] = p[0];
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, &v, 1, &hs, 1, fds, 3), 0);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	ASSERT_EQ(r.msg.offset, 0);
	ASSERT_EQ(r.msg.n_bytes, 3);
	ASSERT_EQ(r.msg.n_handles, 1);
	ASSERT_EQ(r.msg.n_fds, 3);
	memcpy(&id, pool + 8, 8);
	ASSERT_EQ_U64(id, 0xB);
	memcpy(got, pool + 16, sizeof(got));
	for (int i = 0; i < 3; i++) {
		ASSERT_GE(got[i], 0);
		for (int j = 0; j < i; j++)
			ASSERT_NE(got[i], got[j]);
	}
	/* slice = 8 + 8 + A(12) = 32: the next one starts at 32 */
	ASSERT_EQ(xfer(s, dest, b, 1, 'n').msg.offset, 32);
	/* fds only: at the slice start; slice max(8, A(4)) = 8 */
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, NULL, 0, NULL, 0, fds, 1), 0);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	ASSERT_EQ(r.msg.offset, 40);
	ASSERT_EQ(r.msg.n_fds, 1);
	memcpy(got, pool + 40, 4);
	ASSERT_GE(got[0], 0);
	ASSERT_EQ(xfer(s, dest, b, 1, 'm').msg.offset, 48);
}

/* §4.1: an empty message still takes an 8-byte slice */
TEST(msg_layout_empty_message)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	for (int i = 0; i < 3; i++)
		ASSERT_EQ(b1_send(a, 0, (uint64_t[]){ 0x100 }, 1, NULL, NULL, 0, NULL, 0, NULL, 0), 0);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(b1_recv(a, &r, 0), 0);
		ASSERT_EQ(r.msg.n_bytes, 0);
		ASSERT_EQ(r.msg.offset, 8 * i);
	}
}

/* §4.2 / §4.5: without a security context n_secctx is 0 and HAS_SECCTX unset */
TEST(msg_secctx_reporting)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	r = xfer(a, h, b, 3, 'x');
	ASSERT_EQ(r.msg.flags & BUS1_MSG_FLAG_HAS_SECCTX, 0);
	ASSERT_EQ(r.msg.n_secctx, 0);
	/* with WANT_SECCTX: HAS_SECCTX iff a context was written (n_secctx then
	 * describes it, placed after payload/handles/fds) */
	ASSERT_EQ(set_peer_flags(b, BUS1_PEER_FLAG_WANT_SECCTX), 0);
	r = xfer(a, h, b, 3, 'y');
	if (r.msg.flags & BUS1_MSG_FLAG_HAS_SECCTX)
		ASSERT_GT(r.msg.n_secctx, 0);
	else
		ASSERT_EQ(r.msg.n_secctx, 0);
	ASSERT_EQ(r.msg.flags & ~(uint64_t)BUS1_MSG_FLAG_HAS_SECCTX, 0);
}

/* §4.7: handles per message have no fixed limit; each entry is delivered */
TEST(msg_many_handles)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t dest = b1_handle_to(b, 0x100, s);
	uint64_t h = b1_handle_to(o, 0x10, s);
	static uint64_t hs[3000];
	struct bus1_cmd_recv r;

	for (int i = 0; i < 3000; i++)
		hs[i] = h;
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, NULL, 0, hs, 3000, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.n_handles, 3000);
	for (int i = 0; i < 3000; i++) {
		uint64_t id;

		memcpy(&id, pool + r.msg.offset + 8 * i, 8);
		ASSERT_EQ_U64(id, 0xB);
	}
	/* the next slice begins after 3000 * 8 bytes */
	ASSERT_EQ(xfer(s, dest, b, 1, 'q').msg.offset, 24000);
}

/* §4.7 / §5.2: slice larger than 2^29 - 8 → EMSGSIZE; at the limit it fits the pool */
TEST(msg_slice_size_limit)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	uint64_t hs = b1_handle_to(b, 0x200, a);
	/* a readable zero-filled reservation, never written */
	void *big = mmap(NULL, (1UL << 29) + 4096, PROT_READ,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	struct iovec v = { big, 1UL << 29 };
	struct bus1_cmd_recv r;

	ASSERT_TRUE(big != MAP_FAILED);
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	v.iov_len = (1UL << 29) - 7;
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	/* handle entries count towards the slice size */
	v.iov_len = (1UL << 29) - 8;
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, &v, 1, &hs, 1, NULL, 0), -EMSGSIZE);
	/* exactly 2^29 - 8 fits the pool; it exceeds the in-flight bytes (§6.3) */
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EDQUOT);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	/* the pool is untouched: the next message lands at 0 */
	ASSERT_EQ(xfer(a, h, b, 4, 'k').msg.offset, 0);
}

/* §3.3: kernel IDs count up per peer, shared by TRANSFER and RECV, never reused */
TEST(msg_kernel_ids_never_reused)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t dest = b1_handle_to(b, 0x100, s);
	uint64_t hs = b1_handle_to(o, 0x10, s), id;
	struct bus1_cmd_recv r;

	/* b's first kernel ID goes to a transferred handle */
	ASSERT_EQ_U64(b1_handle_to(o, 0x20, b), 0xB);
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, NULL, 0, &hs, 1, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	memcpy(&id, pool + r.msg.offset, 8);
	ASSERT_EQ_U64(id, 0x13);
	/* dropping it and receiving the same node again yields a new ID */
	ASSERT_EQ(b1_release(b, 0x13), 0);
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, NULL, 0, &hs, 1, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	memcpy(&id, pool + r.msg.offset, 8);
	ASSERT_EQ_U64(id, 0x1B);
	/* while held, the same node keeps its ID (coalescing) */
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, NULL, 0, &hs, 1, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	memcpy(&id, pool + r.msg.offset, 8);
	ASSERT_EQ_U64(id, 0x1B);
	/* a flushing reset does not reset the counter */
	ASSERT_EQ(b1_reset(b, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_EQ_U64(b1_handle_to(o, 0x10, b), 0x23);
}

/* §3.9 / §2.9 step 6.2: destroyed-before-message entries are INVALID and use no ID */
TEST(msg_invalid_entries_take_no_id)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t dest = b1_handle_to(b, 0x100, s);
	uint64_t hs[3] = { b1_handle_to(o, 0x10, s), b1_handle_to(o, 0x20, s), 0 };
	uint64_t ids[3];
	struct bus1_cmd_recv r;

	hs[2] = hs[0];
	ASSERT_EQ(b1_destroy_one(o, 0x10), 0);
	/* carrying a destroyed node is allowed */
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, NULL, 0, hs, 3, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.n_handles, 3);
	memcpy(ids, pool + r.msg.offset, sizeof(ids));
	ASSERT_EQ_U64(ids[0], BUS1_HANDLE_INVALID);
	ASSERT_EQ_U64(ids[1], 0xB);
	ASSERT_EQ_U64(ids[2], BUS1_HANDLE_INVALID);
	/* and no NODE_DESTROY follows for the node b never held in time */
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
}

/* §3.6: a received handle to a node already held comes back under the held ID */
TEST(msg_received_handle_coalesces)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t dest = b1_handle_to(b, 0x100, s);
	uint64_t hs = b1_handle_to(o, 0x10, s);
	uint64_t held = b1_handle_to(o, 0x10, b), id;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, NULL, 0, &hs, 1, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	memcpy(&id, pool + r.msg.offset, 8);
	ASSERT_EQ_U64(id, held);
	/* two user references now */
	ASSERT_EQ(b1_release(b, held), 0);
	ASSERT_EQ(b1_release(b, held), 0);
	ASSERT_EQ(b1_release(b, held), -ENXIO);
}

/* §4.1: every receiver of a multicast gets its own slice with its own IDs */
TEST(msg_multicast_own_slices)
{
	int s = b1_open(), b = b1_open(), c = b1_open(), o = b1_open();
	const uint8_t *pb = b1_map(b), *pc = b1_map(c);
	uint64_t d[2] = { b1_handle_to(b, 0x100, s), b1_handle_to(c, 0x100, s) };
	uint64_t hs = b1_handle_to(o, 0x10, s), id;
	struct iovec v = { "shared", 6 };
	struct bus1_cmd_recv r;

	/* c already holds two kernel IDs, b none */
	b1_handle_to(o, 0x20, c);
	b1_handle_to(o, 0x30, c);
	ASSERT_EQ(b1_send_one(s, d[1], "pre", 3), 0);
	ASSERT_EQ(b1_send(s, 0, d, 2, NULL, &v, 1, &hs, 1, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 0);
	ASSERT_MEMEQ(pb, "shared", 6);
	memcpy(&id, pb + 8, 8);
	ASSERT_EQ_U64(id, 0xB);
	ASSERT_EQ(b1_recv(c, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 3);
	ASSERT_EQ(b1_recv(c, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 8);
	ASSERT_MEMEQ(pc + 8, "shared", 6);
	memcpy(&id, pc + 16, 8);
	ASSERT_EQ_U64(id, 0x1B);
}

/* §3.3: an owner handle re-exposed after its ID was dropped gets a kernel ID
 * with MANAGED set and REMOTE clear */
TEST(msg_owner_handle_gets_kernel_id)
{
	int a = b1_open();
	const uint8_t *pool = b1_map(a);
	uint64_t n = 0x100, id;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send(a, 0, (uint64_t[]){ 0x200 }, 1, NULL, NULL, 0, &n, 1, NULL, 0), 0);
	/* destroyed after the message, and the owner drops its last reference */
	ASSERT_EQ(b1_destroy(a, &n, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);	/* ID gone: a fresh user-style ID */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x200);
	memcpy(&id, pool + r.msg.offset, 8);
	ASSERT_EQ_U64(id, (1 << 3) | BUS1_HANDLE_FLAG_MANAGED);
}

/* §4.6 / §9 (12): uid/gid are the real IDs of the task calling SEND, not of
 * the peer's opener (needs root to have distinct real and effective IDs) */
TEST(msg_uid_gid_are_real_ids_of_sender)
{
	int a, b;
	uint64_t h;
	struct bus1_cmd_recv r;

	if (geteuid() != 0)
		t_skip("needs root to take other user IDs");
	a = b1_open();
	b = b1_open();
	h = b1_handle_to(b, 0x100, a);
	ASSERT_OK(setresgid(2345, 0, 0));
	ASSERT_OK(setresuid(1234, 0, 0));
	ASSERT_EQ(b1_send_one(a, h, "ids", 3), 0);
	ASSERT_OK(setresuid(0, 0, 0));
	ASSERT_OK(setresgid(0, 0, 0));
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.uid, 1234);
	ASSERT_EQ(r.msg.gid, 2345);
	ASSERT_EQ(r.msg.pid, getpid());
	/* and back to the opener's IDs */
	ASSERT_EQ(b1_send_one(a, h, "ids", 3), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.uid, 0);
	ASSERT_EQ(r.msg.gid, 0);
}
