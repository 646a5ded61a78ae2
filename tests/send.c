/* SPDX-License-Identifier: MIT */
/*
 * SEND (§2.8): every validation step in its order with its
 * errno, unicast and atomic multicast, the kinds of destination, and the
 * guarantee that a failed SEND leaves nothing behind (no message queued
 * anywhere, no slice consumed, no provisional node, no quota charged).
 */
#include <stdio.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "bus1-util.h"


/* PEER_RESET without flush changing only the given limits. */

/*
 * Nothing was ever queued on the peer: not readable, RECV → EAGAIN.
 * (After a discardable entry POLLIN may be reported, §8.2; use recv_none.)
 */
static void assert_empty(int fd)
{
	struct bus1_cmd_recv r;

	ASSERT_FALSE(b1_revents(fd, POLLIN) & POLLIN);
	ASSERT_EQ(b1_recv(fd, &r, 0), -EAGAIN);
}

/* RECV finds nothing to deliver. */
static void recv_none(int fd)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, 0), -EAGAIN);
}

/* Receives one DATA message and checks its payload. */
static struct bus1_cmd_recv recv_data(int fd, const void *data, size_t len);

/*
 * The failed SENDs left nothing queued on `a` or `b`, and the bus is
 * intact: the next message to `b` (through `h`) lands at the pool's start.
 */
static void assert_nothing_sent(int a, int b, uint64_t h)
{
	assert_empty(b);
	assert_empty(a);
	ASSERT_EQ(b1_send_one(a, h, "ok", 2), 0);
	ASSERT_EQ(recv_data(b, "ok", 2).msg.offset, 0);
}

static struct bus1_cmd_recv recv_data(int fd, const void *data, size_t len)
{
	static const uint8_t *pool[64];
	struct bus1_cmd_recv r;

	if (!pool[fd])
		pool[fd] = b1_map(fd);
	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.n_bytes, len);
	ASSERT_MEMEQ(pool[fd] + r.msg.offset, data, len);
	return r;
}

static int send_cmd(int fd, struct bus1_cmd_send *s)
{
	return b1_ioctl(fd, BUS1_CMD_SEND, s);
}

/* §2.8 step 1: the 80-byte argument must be readable → EFAULT */
TEST(send_efault_argument)
{
	int a = b1_open();
	struct bus1_cmd_send *s = b1_edge(79);

	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_SEND, NULL), -EFAULT);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_SEND, b1_bad_ptr()), -EFAULT);
	/* 79 readable bytes are not enough */
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_SEND, s), -EFAULT);
	/* exactly 80 readable bytes are (an all-zero SEND is a no-op) */
	s = b1_edge(80);
	memset(s, 0, 80);
	ASSERT_EQ(send_cmd(a, s), 0);
	assert_empty(a);
}

/* §2.8 step 2: flags other than CONTINUE|SEED → EINVAL, before step 3 */
TEST(send_einval_flags)
{
	int a = b1_open();
	struct bus1_cmd_send s = { .flags = 4 };

	ASSERT_EQ(send_cmd(a, &s), -EINVAL);
	s.flags = 1ULL << 63;
	ASSERT_EQ(send_cmd(a, &s), -EINVAL);
	s.flags = BUS1_SEND_FLAG_CONTINUE | 8;
	ASSERT_EQ(send_cmd(a, &s), -EINVAL);
	/* step 2 precedes the count limits of step 3 */
	s = (struct bus1_cmd_send){ .flags = 0x10, .n_vecs = 5000, .n_fds = 5000 };
	ASSERT_EQ(send_cmd(a, &s), -EINVAL);
	/* the valid flags alone pass step 2 (n_destinations 0: no-op) */
	s = (struct bus1_cmd_send){ .flags = BUS1_SEND_FLAG_CONTINUE };
	ASSERT_EQ(send_cmd(a, &s), 0);
}

/* §2.8 step 3 / §4.7: count limits → EMSGSIZE before any pointer is read */
TEST(send_emsgsize_counts)
{
	int a = b1_open();
	uint64_t bad = (uintptr_t)b1_bad_ptr();
	struct bus1_cmd_send s = {
		.ptr_destinations = bad, .ptr_errors = bad, .ptr_vecs = bad,
		.ptr_handles = bad, .ptr_fds = bad,
	};

	s.n_destinations = 0x80000000ULL;
	ASSERT_EQ(send_cmd(a, &s), -EMSGSIZE);
	s.n_destinations = (uint64_t)-1;
	ASSERT_EQ(send_cmd(a, &s), -EMSGSIZE);
	s.n_destinations = 0;
	s.n_vecs = 1025;
	ASSERT_EQ(send_cmd(a, &s), -EMSGSIZE);
	s.n_vecs = 0;
	s.n_fds = 257;
	ASSERT_EQ(send_cmd(a, &s), -EMSGSIZE);
	/* the maxima themselves are accepted: the bad pointers are read */
	s.n_fds = 256;
	ASSERT_EQ(send_cmd(a, &s), -EFAULT);
	s.n_fds = 0;
	s.n_vecs = 1024;
	ASSERT_EQ(send_cmd(a, &s), -EFAULT);
	/* n_handles is not bounded in step 3 */
	s.n_vecs = 0;
	s.n_handles = 1ULL << 40;
	ASSERT_EQ(send_cmd(a, &s), -EFAULT);
	/* EMSGSIZE of step 3 precedes EINVAL of step 6 */
	s = (struct bus1_cmd_send){ .n_destinations = 0x7FFFFFFF, .n_vecs = 1025 };
	ASSERT_EQ(send_cmd(a, &s), -EMSGSIZE);
}

/* §2.8 step 6 / §4.7: n_destinations above the user's max_handles → EINVAL */
TEST(send_einval_too_many_destinations)
{
	int a = b1_open();
	uint64_t bad = (uintptr_t)b1_bad_ptr();
	struct bus1_cmd_send s = {
		.ptr_destinations = bad, .ptr_vecs = bad, .n_vecs = 1,
		.ptr_handles = bad, .n_handles = 1,
	};

	s.n_destinations = 0x7FFFFFFF;
	ASSERT_EQ(send_cmd(a, &s), -EINVAL);
	/* step 6 precedes the template of step 7 */
	s.n_destinations = 65537;
	ASSERT_EQ(send_cmd(a, &s), -EINVAL);
	/* 65536 passes step 6; the bad iovec array is then read */
	s.n_destinations = 65536;
	ASSERT_EQ(send_cmd(a, &s), -EFAULT);
	/* the per-user maximum counts, not the peer's (PEER_RESET) */
	ASSERT_EQ(b1_set_limits(a, B1_KEEP32, 1, B1_KEEP32, B1_KEEP32), 0);
	s.n_vecs = 0;
	s.n_handles = 0;
	s.n_destinations = 2;
	ASSERT_EQ(send_cmd(a, &s), -EFAULT);
	ASSERT_EQ(b1_set_limits(a, B1_KEEP32, 0x7FFFFFFF, B1_KEEP32, B1_KEEP32), 0);
	s.n_destinations = 65537;
	ASSERT_EQ(send_cmd(a, &s), -EINVAL);
}

/* §2.8 step 7.1: iovec array and per-element checks, in order */
TEST(send_vecs_validation)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	char buf[16] = "payload";
	struct iovec *v2 = b1_edge(2 * sizeof(struct iovec));
	struct iovec v[2];
	const uint64_t user_top = 0x7ffffffff000ULL;

	/* unreadable array */
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, b1_bad_ptr(), 1, NULL, 0, NULL, 0), -EFAULT);
	/* array readable for one element only */
	v2 = (struct iovec *)((char *)v2 + sizeof(struct iovec));
	v2[0] = (struct iovec){ buf, 1 };
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v2, 2, NULL, 0, NULL, 0), -EFAULT);
	/* negative length as signed 64-bit */
	v[0] = (struct iovec){ buf, (size_t)-1 };
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	v[0] = (struct iovec){ buf, 1ULL << 63 };
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	/* range outside the user address space */
	v[0] = (struct iovec){ (void *)0xffff880000000000ULL, 1 };
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 1, NULL, 0, NULL, 0), -EFAULT);
	v[0] = (struct iovec){ (void *)(user_top - 0x1000), 0x2000 };
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 1, NULL, 0, NULL, 0), -EFAULT);
	/* per element, in order: the first failing element decides */
	v[0] = (struct iovec){ buf, (size_t)-8 };
	v[1] = (struct iovec){ (void *)0xffff880000000000ULL, 1 };
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 2, NULL, 0, NULL, 0), -EMSGSIZE);
	v[0] = (struct iovec){ (void *)0xffff880000000000ULL, 1 };
	v[1] = (struct iovec){ buf, (size_t)-8 };
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 2, NULL, 0, NULL, 0), -EFAULT);
	/* running total above 0x7FFFF000 */
	v[0] = (struct iovec){ (void *)0x10000, 0x7FFFF000 };
	v[1] = (struct iovec){ buf, 1 };
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 2, NULL, 0, NULL, 0), -EMSGSIZE);
	ASSERT_EQ(b1_send(a, 0, NULL, 0, NULL, v, 2, NULL, 0, NULL, 0), -EMSGSIZE);
	/* exactly 0x7FFFF000 passes step 7; nothing is read without destinations */
	ASSERT_EQ(b1_send(a, 0, NULL, 0, NULL, v, 1, NULL, 0, NULL, 0), 0);
	assert_empty(b);
	/* n_vecs == 0: the pointer is not read, an empty message is sent */
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, b1_bad_ptr(), 0, NULL, 0, NULL, 0), 0);
	recv_data(b, "", 0);
	assert_empty(b);
}

/* §2.8 step 7.2: payload handle IDs → EFAULT / ENXIO */
TEST(send_handles_validation)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	uint64_t *he = b1_edge(8), ids[2];
	static const uint64_t unknown[] = { 0x1, 0x2, 0x3, 0x13, 0x1B, 0x1001 };

	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, NULL, 0, b1_bad_ptr(), 1, NULL, 0), -EFAULT);
	/* second element unreadable */
	he[0] = h;
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, NULL, 0, he, 2, NULL, 0), -EFAULT);
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
		ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, NULL, 0, &unknown[i], 1, NULL, 0), -ENXIO);
	/* the first failing entry decides */
	ids[0] = 0x1;
	ids[1] = (uint64_t)(uintptr_t)NULL;
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, NULL, 0, ids, 2, NULL, 0), -ENXIO);
	assert_empty(b);
	/* duplicates are allowed; a handle that is known is fine */
	ids[0] = h;
	ids[1] = h;
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, NULL, 0, ids, 2, NULL, 0), 0);
}

/* §2.8: vecs (7.1) before handles (7.2) before fds (7.3) before destinations (9) */
TEST(send_template_check_order)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	uint64_t bad_dest = 0x7, bad_handle = 0x1;
	int bad_fd = -1;
	struct iovec bad_vec = { (void *)0xffff880000000000ULL, 1 };

	ASSERT_EQ(b1_send(a, 0, &bad_dest, 1, NULL, &bad_vec, 1, &bad_handle, 1, &bad_fd, 1), -EFAULT);
	ASSERT_EQ(b1_send(a, 0, &bad_dest, 1, NULL, NULL, 0, &bad_handle, 1, &bad_fd, 1), -ENXIO);
	ASSERT_EQ(b1_send(a, 0, &bad_dest, 1, NULL, NULL, 0, &h, 1, &bad_fd, 1), -EBADF);
	ASSERT_EQ(b1_send(a, 0, &bad_dest, 1, NULL, NULL, 0, &h, 1, NULL, 0), -ENXIO);
	/* a faulting destination array is only read after the template */
	ASSERT_EQ(b1_send(a, 0, b1_bad_ptr(), 1, NULL, NULL, 0, &bad_handle, 1, NULL, 0), -ENXIO);
	assert_empty(b);
	assert_empty(a);
}

/* §2.8 step 9.1: destination array unreadable → EFAULT, nothing delivered */
TEST(send_dest_efault)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	uint64_t *d = b1_edge(8);

	ASSERT_EQ(b1_send(a, 0, b1_bad_ptr(), 1, NULL, NULL, 0, NULL, 0, NULL, 0), -EFAULT);
	/* the first destination is valid, the second cannot be read */
	d[0] = h;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -EFAULT);
	assert_empty(b);
}

/* §2.8 step 9.2 / §3.4: unknown IDs with bit 0 or 1 set → ENXIO */
TEST(send_dest_enxio)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	uint64_t d[2];
	static const uint64_t unknown[] = { 0x1, 0x2, 0x3, 0x13, 0x102, 0x8000000000000001ULL };

	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
		ASSERT_EQ(b1_send_one(a, unknown[i], "x", 1), -ENXIO);
	/* a valid first destination gets nothing */
	d[0] = h;
	d[1] = 0x1B;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -ENXIO);
	assert_empty(b);
	assert_empty(a);
}

/* §2.8 step 9.3 / §4.7: the same destination twice → ENOTUNIQ */
TEST(send_dest_enotuniq)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hb = b1_handle_to(b, 0x100, a), hc = b1_handle_to(c, 0x100, a);
	uint64_t d[3] = { hb, hc, hb };

	ASSERT_EQ(b1_send(a, 0, d, 3, NULL, NULL, 0, NULL, 0, NULL, 0), -ENOTUNIQ);
	/* a fresh user-style ID twice names the same provisional node */
	d[0] = 0x400;
	d[1] = 0x400;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -ENOTUNIQ);
	/* own node ID twice */
	d[0] = 0x100;
	ASSERT_EQ(b1_transfer(a, 0x100, -1, NULL), 0);
	d[1] = 0x100;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -ENOTUNIQ);
	assert_empty(a);
	assert_empty(b);
	assert_empty(c);
}

/* §2.8 step 9: destinations are processed in order; the first error decides */
TEST(send_dest_first_error_wins)
{
	int a = b1_open(), b = b1_open(), dead = b1_open();
	uint64_t hb = b1_handle_to(b, 0x100, a), hd = b1_handle_to(dead, 0x100, a);
	struct bus1_cmd_recv r;
	uint64_t d[3];

	ASSERT_EQ(b1_disconnect(dead), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);	/* NODE_DESTROY for hd */
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);

	d[0] = hd; d[1] = 0x1;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -ESHUTDOWN);
	d[0] = 0x1; d[1] = hd;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -ENXIO);
	d[0] = hb; d[1] = hb; d[2] = hd;
	ASSERT_EQ(b1_send(a, 0, d, 3, NULL, NULL, 0, NULL, 0, NULL, 0), -ENOTUNIQ);
	d[0] = hb; d[1] = hd; d[2] = hb;
	ASSERT_EQ(b1_send(a, 0, d, 3, NULL, NULL, 0, NULL, 0, NULL, 0), -ESHUTDOWN);
	assert_empty(b);
	assert_empty(a);
}

/* §2.8 step 9.4 / §3.11: owner disconnected → ESHUTDOWN (never EHOSTUNREACH) */
TEST(send_dest_owner_disconnected)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);

	ASSERT_EQ(b1_disconnect(b), 0);
	ASSERT_EQ(b1_send_one(a, h, "x", 1), -ESHUTDOWN);
	/* also after the holder consumed the NODE_DESTROY */
	ASSERT_EQ(b1_recv(a, &(struct bus1_cmd_recv){ 0 }, 0), 0);
	ASSERT_EQ(b1_send_one(a, h, "x", 1), -ESHUTDOWN);
	/* and after the owner's fd is closed */
	close(b);
	ASSERT_EQ(b1_send_one(a, h, "x", 1), -ESHUTDOWN);
	assert_empty(a);
}

/* §3.11 / §2.8 step 9.4: destroyed but held node → 0, message discarded */
TEST(send_dest_destroyed_node)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_destroy_one(b, 0x100), 0);
	ASSERT_EQ(b1_send_one(a, h, "late", 4), 0);
	/* the owner sees its own NODE_DESTROY, never the message */
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	recv_none(b);
	/* the discarded message's slice was freed: the next one starts at 0 */
	ASSERT_EQ(b1_transfer(b, 0x200, -1, NULL), 0);
	ASSERT_EQ(b1_send_one(b, 0x200, "y", 1), 0);
	r = recv_data(b, "y", 1);
	ASSERT_EQ(r.msg.offset, 0);
}

/* §3.10 / §3.11: destroyed and released by the owner → ESHUTDOWN */
TEST(send_dest_released_node)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	uint64_t id = 0x100;

	ASSERT_EQ(b1_destroy(b, &id, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	ASSERT_EQ(b1_send_one(a, h, "x", 1), -ESHUTDOWN);
	/* the owner receives nothing (its own DESTROY is discarded too) */
	recv_none(b);
	/* the ID is free again on the owner and names a new node */
	ASSERT_EQ(b1_send_one(b, 0x100, "z", 1), 0);
	ASSERT_EQ(recv_data(b, "z", 1).msg.destination, 0x100);
}

/* §2.8 step 9.2 / §3.4: an unknown user-style ID creates a node: self-delivery */
TEST(send_dest_new_node_delivers_to_self)
{
	int a = b1_open(), b = b1_open();
	struct bus1_cmd_recv r;
	uint64_t h;

	ASSERT_EQ(b1_send_one(a, 0x400, "self", 4), 0);
	r = recv_data(a, "self", 4);
	ASSERT_EQ_U64(r.msg.destination, 0x400);
	ASSERT_EQ(r.msg.flags, 0);
	/* the node persists with its pin: release is EBUSY, transfer works */
	ASSERT_EQ(b1_release(a, 0x400), -EBUSY);
	h = b1_handle_to(a, 0x400, b);
	ASSERT_EQ(b1_send_one(b, h, "back", 4), 0);
	ASSERT_EQ_U64(recv_data(a, "back", 4).msg.destination, 0x400);
	/* ID 0 is a legal user-chosen ID */
	ASSERT_EQ(b1_send_one(a, 0, "zero", 4), 0);
	ASSERT_EQ_U64(recv_data(a, "zero", 4).msg.destination, 0);
	assert_empty(b);
}

/* §2.8 end / §3.4: a failed SEND leaves no provisional node (no quota used) */
TEST(send_failed_leaves_no_provisional_node)
{
	int a = b1_open(), b = b1_open();
	uint64_t d[2] = { 0x100, 0x1 };
	uint64_t hs = 0x200;

	/* a may own exactly one more node */
	ASSERT_EQ(b1_set_limits(a, B1_KEEP32, 1, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -ENXIO);
	ASSERT_EQ(b1_send(a, 0, d + 1, 1, NULL, NULL, 0, &hs, 1, NULL, 0), -ENXIO);
	assert_empty(a);
	/* neither 0x100 nor 0x200 holds a handle unit: one new node still fits */
	ASSERT_EQ(b1_transfer(a, 0x300, b, NULL), 0);
	ASSERT_EQ(b1_transfer(a, 0x304, b, NULL), -EDQUOT);
}

/* §2.8 "n_destinations == 0": valid; payload nodes persist; nothing queued */
TEST(send_zero_destinations)
{
	int a = b1_open(), b = b1_open();
	uint64_t hs[2] = { 0x500, 0x504 };
	char *bad = b1_bad_ptr();
	struct iovec v = { bad, 16 };

	ASSERT_EQ(b1_set_limits(a, B1_KEEP32, 3, B1_KEEP32, B1_KEEP32), 0);
	/* the payload is never read when nobody receives it */
	ASSERT_EQ(b1_send(a, 0, NULL, 0, NULL, &v, 1, hs, 2, NULL, 0), 0);
	assert_empty(a);
	assert_empty(b);
	/* both nodes exist with their pin: one unit of three is left */
	ASSERT_EQ(b1_release(a, 0x500), -EBUSY);
	ASSERT_EQ(b1_transfer(a, 0x600, b, NULL), 0);
	ASSERT_EQ(b1_transfer(a, 0x604, b, NULL), -EDQUOT);
	/* 0x500 is a real node: it can be handed out and reached */
	uint64_t h = b1_handle_to(a, 0x500, b);
	ASSERT_EQ(b1_send_one(b, h, "n", 1), 0);
	ASSERT_EQ_U64(recv_data(a, "n", 1).msg.destination, 0x500);
}

/* §2.8: plain unicast; the sender's queue is untouched */
TEST(send_unicast)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct iovec v[3] = { { "ab", 2 }, { "", 0 }, { "cdefghij", 8 } };
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 3, NULL, 0, NULL, 0), 0);
	ASSERT_TRUE(b1_revents(b, POLLIN) & POLLIN);
	r = recv_data(b, "abcdefghij", 10);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_EQ(r.msg.flags, 0);
	ASSERT_EQ(r.msg.n_handles, 0);
	ASSERT_EQ(r.msg.n_fds, 0);
	assert_empty(b);
	assert_empty(a);
}

/* §2.8 / §4.8: multicast to three peers: one message each, no CONTINUE */
TEST(send_multicast)
{
	int s = b1_open(), p[3] = { b1_open(), b1_open(), b1_open() };
	uint64_t d[3];
	struct bus1_cmd_recv r;

	for (int i = 0; i < 3; i++)
		d[i] = b1_handle_to(p[i], 0x100 + 4 * i, s);
	struct iovec v = { "multi", 5 };
	ASSERT_EQ(b1_send(s, 0, d, 3, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	for (int i = 0; i < 3; i++) {
		r = recv_data(p[i], "multi", 5);
		ASSERT_EQ_U64(r.msg.destination, 0x100 + 4 * i);
		ASSERT_EQ(r.msg.flags, 0);
		ASSERT_EQ(r.msg.offset, 0);
		ASSERT_EQ(r.msg.pid, getpid());
		assert_empty(p[i]);
	}
	assert_empty(s);
}

/* §2.8 end: a multicast failing at its last destination delivers nothing */
TEST(send_multicast_atomic_eshutdown)
{
	int s = b1_open(), a = b1_open(), b = b1_open(), dead = b1_open();
	uint64_t d[3] = { b1_handle_to(a, 0x100, s), b1_handle_to(b, 0x100, s),
			  b1_handle_to(dead, 0x100, s) };
	struct iovec v = { "all-or-nothing", 14 };

	ASSERT_EQ(b1_disconnect(dead), 0);
	ASSERT_EQ(b1_send(s, 0, d, 3, NULL, &v, 1, NULL, 0, NULL, 0), -ESHUTDOWN);
	assert_empty(a);
	assert_empty(b);
	/* no slice is left allocated in the first receivers' pools */
	ASSERT_EQ(b1_send(s, 0, d, 2, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(recv_data(a, "all-or-nothing", 14).msg.offset, 0);
	ASSERT_EQ(recv_data(b, "all-or-nothing", 14).msg.offset, 0);
}

/* §2.8 end / §6.2: a multicast failing with EDQUOT delivers nothing */
TEST(send_multicast_atomic_edquot)
{
	int s = b1_open(), a = b1_open(), full = b1_open();
	uint64_t d[2] = { b1_handle_to(a, 0x100, s), b1_handle_to(full, 0x100, s) };
	struct iovec v = { "q", 1 };

	ASSERT_EQ(b1_set_limits(full, 0, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_send(s, 0, d, 2, NULL, &v, 1, NULL, 0, NULL, 0), -EDQUOT);
	assert_empty(a);
	assert_empty(full);
	/* the first receiver was charged nothing: with max_slices 2 it takes one */
	ASSERT_EQ(b1_set_limits(a, 2, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_send(s, 0, d, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
}

/* §2.8 step 9.8: unreadable payload → EFAULT with nothing delivered */
TEST(send_multicast_atomic_efault_payload)
{
	int s = b1_open(), a = b1_open(), b = b1_open();
	uint64_t d[2] = { b1_handle_to(a, 0x100, s), b1_handle_to(b, 0x100, s) };
	struct iovec v[2] = { { "good", 4 }, { b1_bad_ptr(), 4 } };

	ASSERT_EQ(b1_send(s, 0, d, 2, NULL, v, 2, NULL, 0, NULL, 0), -EFAULT);
	assert_empty(a);
	assert_empty(b);
	ASSERT_EQ(b1_send(s, 0, d, 2, NULL, v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(recv_data(a, "good", 4).msg.offset, 0);
	ASSERT_EQ(recv_data(b, "good", 4).msg.offset, 0);
}

/*
 * §2.8 step 9.8 at every size the payload copy treats differently (blocks
 * of 64 bytes, words, bytes, long copies from 2 KiB), for one destination
 * and for two: the payload arrives exactly; a payload whose last byte lies
 * on an unreadable page is EFAULT with nothing delivered and no room kept.
 */
TEST(send_payload_copy_sizes)
{
	static const size_t sizes[] = { 1, 7, 8, 9, 63, 64, 65, 127, 128, 200,
					1024, 1031, 1032, 2047, 2048, 2049, 4096 };
	int s = b1_open(), a = b1_open(), b = b1_open();
	int fd[2] = { a, b };
	uint64_t d[2] = { b1_handle_to(a, 0x100, s), b1_handle_to(b, 0x100, s) };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];
		uint8_t *edge = b1_edge(n);
		struct iovec good = { edge, n }, bad = { edge + 1, n };

		for (size_t k = 0; k < n; k++)
			edge[k] = (uint8_t)(k * 31 + n);
		for (int dests = 1; dests <= 2; dests++) {
			ASSERT_EQ(b1_send(s, 0, d, dests, NULL, &bad, 1, NULL, 0, NULL, 0), -EFAULT);
			assert_empty(a);
			assert_empty(b);
			ASSERT_EQ(b1_send(s, 0, d, dests, NULL, &good, 1, NULL, 0, NULL, 0), 0);
			for (int j = 0; j < dests; j++) {
				struct bus1_cmd_recv r = recv_data(fd[j], edge, n);

				ASSERT_EQ(r.msg.offset, 0);
				ASSERT_EQ(b1_slice_release(fd[j], r.msg.offset), 0);
			}
		}
	}
}

/*
 * A sender that cannot map a receiver's pool (its address space limited
 * with RLIMIT_AS) gets ENOMEM, for a unicast and for a multicast, and the
 * failed SENDs leave nothing behind: once the limit is lifted, the same
 * SEND delivers into both pools' first slices.
 */
TEST(send_without_address_space_for_the_pool)
{
	int s = b1_open(), a = b1_open(), b = b1_open();
	uint64_t d[2] = { b1_handle_to(a, 0x100, s), b1_handle_to(b, 0x100, s) };
	struct iovec v = { "x", 1 };
	struct rlimit old, tight;
	unsigned long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	ASSERT_NE(f, NULL);
	ASSERT_EQ(fscanf(f, "%lu", &pages), 1);
	fclose(f);
	ASSERT_OK(getrlimit(RLIMIT_AS, &old));
	tight = old;
	tight.rlim_cur = pages * 4096 + (256UL << 20);
	ASSERT_OK(setrlimit(RLIMIT_AS, &tight));
	ASSERT_EQ(b1_send(s, 0, d, 1, NULL, &v, 1, NULL, 0, NULL, 0), -ENOMEM);
	ASSERT_EQ(b1_send(s, 0, d, 2, NULL, &v, 1, NULL, 0, NULL, 0), -ENOMEM);
	assert_empty(a);
	assert_empty(b);
	ASSERT_OK(setrlimit(RLIMIT_AS, &old));
	ASSERT_EQ(b1_send(s, 0, d, 2, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(recv_data(a, "x", 1).msg.offset, 0);
	ASSERT_EQ(recv_data(b, "x", 1).msg.offset, 0);
}

/*
 * A sender maps only as much of a receiver's pool as the pool has: with
 * its address space limited to what six 512 MiB pools need, a process
 * sends to six receivers, one by one and in one multicast.
 */
TEST(send_to_six_pools_in_a_limited_address_space)
{
	enum { N = 6 };
	int s = b1_open(), rcv[N];
	uint64_t d[N];
	struct iovec v = { "x", 1 };
	struct rlimit old, tight;
	unsigned long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	for (int i = 0; i < N; i++) {
		rcv[i] = b1_open();
		d[i] = b1_handle_to(rcv[i], 0x100, s);
	}
	ASSERT_NE(f, NULL);
	ASSERT_EQ(fscanf(f, "%lu", &pages), 1);
	fclose(f);
	ASSERT_OK(getrlimit(RLIMIT_AS, &old));
	tight = old;
	tight.rlim_cur = pages * 4096 + N * B1_POOL_SIZE + (256UL << 20);
	ASSERT_OK(setrlimit(RLIMIT_AS, &tight));
	for (int i = 0; i < N; i++)
		ASSERT_EQ(b1_send(s, 0, &d[i], 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_send(s, 0, d, N, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_OK(setrlimit(RLIMIT_AS, &old));
	for (int i = 0; i < N; i++) {
		ASSERT_EQ(recv_data(rcv[i], "x", 1).msg.offset, 0);
		ASSERT_EQ(recv_data(rcv[i], "x", 1).msg.offset, 8);
	}
}

/* §2.0 / §8.3: SEND on a disconnected peer → ESHUTDOWN before any check */
TEST(send_on_disconnected_peer)
{
	int a = b1_open();
	struct bus1_cmd_send s = { .flags = 0xFF, .n_vecs = 5000 };

	ASSERT_EQ(b1_disconnect(a), 0);
	ASSERT_EQ(send_cmd(a, &s), -ESHUTDOWN);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_SEND, b1_bad_ptr()), -ESHUTDOWN);
	ASSERT_EQ(b1_send_one(a, 0x100, "x", 1), -ESHUTDOWN);
}

/* §2.8 "a destination may also appear in the payload handle list" / §3.6 */
TEST(send_destination_in_payload)
{
	int a = b1_open(), b = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t h = b1_handle_to(b, 0x100, a);
	uint64_t ids[2];
	struct bus1_cmd_recv r;

	ids[0] = h;
	ids[1] = h;
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, NULL, 0, ids, 2, NULL, 0), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.n_handles, 2);
	/* the receiver's own node comes back as its node ID, twice */
	memcpy(ids, pool + r.msg.offset, 16);
	ASSERT_EQ_U64(ids[0], 0x100);
	ASSERT_EQ_U64(ids[1], 0x100);
	/* two extra user references on top of the pin: two releases, then EBUSY */
	ASSERT_EQ(b1_release(b, 0x100), 0);
	ASSERT_EQ(b1_release(b, 0x100), 0);
	ASSERT_EQ(b1_release(b, 0x100), -EBUSY);
}

/* §2.8 step 9.4: a peer holding a handle to its own node sends to itself */
TEST(send_own_node_by_id)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b);
	uint64_t d[2] = { 0x100, 0x7 };

	(void)h;
	ASSERT_EQ(b1_send_one(a, 0x100, "me", 2), 0);
	ASSERT_EQ_U64(recv_data(a, "me", 2).msg.destination, 0x100);
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -ENXIO);
	assert_empty(a);
	assert_empty(b);
}

/* §2.8: SEND writes nothing back into its argument */
TEST(send_argument_read_only)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	uint64_t *dst = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct bus1_cmd_send tmpl = {
		.ptr_destinations = (uintptr_t)dst, .n_destinations = 1,
	};
	void *p;

	dst[0] = h;
	/* place the argument in a page that is made read-only afterwards */
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memcpy(p, &tmpl, sizeof(tmpl));
	ASSERT_OK(mprotect(p, 4096, PROT_READ));
	ASSERT_EQ(send_cmd(a, p), 0);
	recv_data(b, "", 0);
}

/* §2.8 step 9: per destination ESHUTDOWN (9.4), then slice and handle quota
 * (9.5, 9.6), then the slice size (9.7), then the payload copy (9.8) */
TEST(send_per_destination_check_order)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hb = b1_handle_to(b, 0x100, a), hc = b1_handle_to(c, 0x100, a);
	uint64_t ho = b1_handle_to(b, 0x200, a), id = 0x200;
	void *huge = mmap(NULL, 1UL << 30, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	struct iovec v = { huge, (1UL << 29) + 8 };

	ASSERT_TRUE(huge != MAP_FAILED);
	/* oversized slice with an unreadable payload: EMSGSIZE, nothing is read */
	ASSERT_EQ(b1_send(a, 0, &hb, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	/* slice quota before the size check */
	ASSERT_EQ(b1_set_limits(b, 0, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_send(a, 0, &hb, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EDQUOT);
	/* handle quota before the size check */
	ASSERT_EQ(b1_set_limits(c, B1_KEEP32, 1, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_send(a, 0, &hc, 1, NULL, &v, 1, &hc, 1, NULL, 0), -EDQUOT);
	/* ESHUTDOWN of a released node before the owner's quota */
	ASSERT_EQ(b1_destroy(b, &id, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	ASSERT_EQ(b1_send(a, 0, &ho, 1, NULL, &v, 1, NULL, 0, NULL, 0), -ESHUTDOWN);
	recv_none(b);
	assert_empty(c);
}

/* §2.8 / §3.4: a new ID used as payload and destination names one new node */
TEST(send_new_id_as_payload_and_destination)
{
	int a = b1_open(), b = b1_open();
	uint64_t n = 0x700, hb = b1_handle_to(b, 0x100, a), id;
	uint64_t d[2] = { 0x700, hb };
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;

	/* a multicast to the caller's (new) node and to b */
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, &n, 1, NULL, 0), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.destination, 0x700);
	ASSERT_EQ(r.msg.flags, 0);
	memcpy(&id, pool + r.msg.offset, 8);
	ASSERT_EQ_U64(id, 0x700);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	/* the pin plus the received reference */
	ASSERT_EQ(b1_release(a, 0x700), 0);
	ASSERT_EQ(b1_release(a, 0x700), -EBUSY);
}

/*
 * §2.8 step 7.1: per iovec, the length check (EMSGSIZE) comes before the
 * address check (EFAULT), and the address check before the running total
 * (EMSGSIZE).
 */
TEST(send_vec_element_check_order)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	void *kernel = (void *)0xffff880000000000ULL;
	struct iovec v[2];

	/* one element, negative and outside the user address space */
	v[0] = (struct iovec){ kernel, (size_t)-8 };
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	ASSERT_EQ(b1_send(a, 0, NULL, 0, NULL, v, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	/* a second element beyond the total and outside the address space */
	v[0] = (struct iovec){ (void *)0x10000, 0x7FFFF000 };
	v[1] = (struct iovec){ kernel, 1 };
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 2, NULL, 0, NULL, 0), -EFAULT);
	ASSERT_EQ(b1_send(a, 0, NULL, 0, NULL, v, 2, NULL, 0, NULL, 0), -EFAULT);
	/* ...and beyond the total with a valid address */
	v[1] = (struct iovec){ (void *)0x10000, 1 };
	ASSERT_EQ(b1_send(a, 0, NULL, 0, NULL, v, 2, NULL, 0, NULL, 0), -EMSGSIZE);
	assert_nothing_sent(a, b, h);
}

/*
 * §2.8 step 7: the template is complete before any destination is read:
 * EMSGSIZE of an iovec, EFAULT of the handle or fd array and EOPNOTSUPP of
 * an fd win over an unknown (ENXIO) or unreadable (EFAULT) destination.
 */
TEST(send_template_errors_before_destinations)
{
	int a = b1_open(), b = b1_open(), other = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a), bad_dest = 0x7;
	struct iovec neg = { "x", (size_t)-1 };
	int *fe = b1_edge(4), pp[2];

	ASSERT_OK(pipe(pp));

	ASSERT_EQ(b1_send(a, 0, &bad_dest, 1, NULL, &neg, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	ASSERT_EQ(b1_send(a, 0, &bad_dest, 1, NULL, NULL, 0, b1_bad_ptr(), 1, NULL, 0), -EFAULT);
	ASSERT_EQ(b1_send(a, 0, &bad_dest, 1, NULL, NULL, 0, NULL, 0, &other, 1), -EOPNOTSUPP);
	fe[0] = other;
	ASSERT_EQ(b1_send(a, 0, &bad_dest, 1, NULL, NULL, 0, NULL, 0, fe, 2), -EOPNOTSUPP);
	fe[0] = pp[1];
	ASSERT_EQ(b1_send(a, 0, &bad_dest, 1, NULL, NULL, 0, NULL, 0, fe, 2), -EFAULT);
	/* handles (7.2) before fds (7.3): an unreadable handle before a bus1 fd */
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, NULL, 0, b1_bad_ptr(), 1, &other, 1), -EFAULT);
	/* an unreadable destination array is read only after all of it */
	ASSERT_EQ(b1_send(a, 0, b1_bad_ptr(), 1, NULL, &neg, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	ASSERT_EQ(b1_send(a, 0, b1_bad_ptr(), 1, NULL, NULL, 0, NULL, 0, &other, 1), -EOPNOTSUPP);
	assert_nothing_sent(a, b, h);
}

/*
 * §2.8 steps 9 and 10: every destination is checked (ENXIO, ENOTUNIQ,
 * ESHUTDOWN) before the caller is charged for its provisional nodes
 * (EDQUOT), whether those come from the payload or the destination list.
 */
TEST(send_destinations_before_caller_charge)
{
	int a = b1_open(), b = b1_open(), dead = b1_open();
	uint64_t hb = b1_handle_to(b, 0x100, a), hd = b1_handle_to(dead, 0x100, a);
	uint64_t d[2], p = 0x300;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_disconnect(dead), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);	/* NODE_DESTROY for hd */
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	/* a can pay for no new node */
	ASSERT_EQ(b1_set_limits(a, B1_KEEP32, 0, B1_KEEP32, B1_KEEP32), 0);
	d[0] = 0x200; d[1] = 0x1;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -ENXIO);
	d[1] = 0x200;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -ENOTUNIQ);
	d[1] = hd;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -ESHUTDOWN);
	/* a new node in the payload, a bad destination */
	d[0] = hb; d[1] = 0x1;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, &p, 1, NULL, 0), -ENXIO);
	d[1] = hd;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, &p, 1, NULL, 0), -ESHUTDOWN);
	/* with valid destinations the charge itself fails */
	ASSERT_EQ(b1_send(a, 0, d, 1, NULL, NULL, 0, &p, 1, NULL, 0), -EDQUOT);
	d[0] = 0x200;
	ASSERT_EQ(b1_send(a, 0, d, 1, NULL, NULL, 0, NULL, 0, NULL, 0), -EDQUOT);
	assert_empty(b);
	recv_none(a);
	/* no node was left behind: a holds hb and hd, one more unit pays for one node */
	ASSERT_EQ(b1_set_limits(a, B1_KEEP32, 3, B1_KEEP32, B1_KEEP32), 0);
	d[0] = hb;
	ASSERT_EQ(b1_send(a, 0, d, 1, NULL, NULL, 0, &p, 1, NULL, 0), 0);
	ASSERT_EQ(b1_send_one(a, 0x200, "n", 1), -EDQUOT);
	ASSERT_EQ(recv_data(b, "", 0).msg.n_handles, 1);
}

/*
 * §2.8 step 9 / §4.7: destinations are processed one after the other, so a
 * failure of an earlier destination at its quota or slice size (9.5-9.7)
 * comes before a later destination is even resolved (9.2); the slice size
 * is only checked when a destination is processed.
 */
TEST(send_earlier_destination_fails_first)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hb = b1_handle_to(b, 0x100, a), hc = b1_handle_to(c, 0x100, a);
	uint64_t d[2];
	void *huge = mmap(NULL, 1UL << 30, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	struct iovec v = { huge, (1UL << 29) + 8 };

	ASSERT_TRUE(huge != MAP_FAILED);
	/* slice quota of the first destination, then the unknown second */
	ASSERT_EQ(b1_set_limits(b, 0, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	d[0] = hb; d[1] = 0x1;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -EDQUOT);
	/* the order reversed: the unknown ID is met first */
	d[0] = 0x1; d[1] = hb;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), -ENXIO);
	/* an oversized slice for the first destination, then the unknown second */
	d[0] = hc; d[1] = 0x1;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, &v, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	d[0] = 0x1; d[1] = hc;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, &v, 1, NULL, 0, NULL, 0), -ENXIO);
	d[0] = hc; d[1] = hc;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, &v, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	/* no destination: no slice, no size check (the payload is never read) */
	ASSERT_EQ(b1_send(a, 0, NULL, 0, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	assert_empty(b);
	assert_empty(c);
	ASSERT_EQ(b1_set_limits(b, 16384, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	d[0] = hb; d[1] = hc;
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(recv_data(b, "", 0).msg.offset, 0);
	ASSERT_EQ(recv_data(c, "", 0).msg.offset, 0);
}
