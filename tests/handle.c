/* SPDX-License-Identifier: MIT */
/*
 * HANDLE_RELEASE (§2.4) and the object model it exposes: ID
 * kinds and the kernel-ID counter (3.3), on-demand node creation (3.4), user
 * references and the owner pin (3.5), coalescing (3.6), release
 * notifications (3.7) and handles carried in messages (3.9).
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "bus1-util.h"



static void expect_notification(int fd, uint64_t type, uint64_t dest)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, type);
	ASSERT_EQ_U64(r.msg.destination, dest);
	ASSERT_EQ_U64(r.msg.flags, 0);
	ASSERT_EQ(r.msg.uid, 0xFFFFFFFFu);
	ASSERT_EQ(r.msg.gid, 0xFFFFFFFFu);
	ASSERT_EQ(r.msg.pid, 0);
	ASSERT_EQ(r.msg.tid, 0);
	ASSERT_EQ_U64(r.msg.offset, BUS1_OFFSET_INVALID);
	ASSERT_EQ_U64(r.msg.n_bytes, 0);
	ASSERT_EQ_U64(r.msg.n_handles, 0);
	ASSERT_EQ_U64(r.msg.n_fds, 0);
	ASSERT_EQ_U64(r.msg.n_secctx, 0);
}

/* Sends "h" with a payload of handles to dest. */
static int send_handles(int fd, uint64_t dest, const uint64_t *hs, size_t n)
{
	struct iovec v = { .iov_base = "h", .iov_len = 1 };

	return b1_send(fd, 0, &dest, 1, NULL, &v, 1, hs, n, NULL, 0);
}

/* Receives one DATA message and copies out its handle array. */
static void recv_handles(int fd, const uint8_t *pool, uint64_t dest, uint64_t *out, size_t n)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, dest);
	ASSERT_EQ_U64(r.msg.n_handles, n);
	ASSERT_EQ_U64(r.msg.n_bytes, 1);
	memcpy(out, pool + r.msg.offset + 8, n * 8);
	ASSERT_OK(b1_slice_release(fd, r.msg.offset));
}

/* ---------------------------------------------------------------- argument */

/* §2.4 step 1: unreadable ID → EFAULT */
TEST(release_efault)
{
	int fd = b1_open();

	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_HANDLE_RELEASE, b1_bad_ptr()), EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_HANDLE_RELEASE, NULL), EFAULT);
}

/* §2.4 step 2 / §10.1: unknown ID with bit 0 or 1 set → ENXIO */
TEST(release_unknown_managed_enxio)
{
	int fd = b1_open();
	uint64_t ids[] = { 1, 2, 3, 0xB, 0x13, 0x9, 0x102, 0x101,
			   BUS1_HANDLE_INVALID, 0x8000000000000001ULL };

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		ASSERT_EQ(b1_release(fd, ids[i]), -ENXIO);
}

/* §2.4 step 2 / §3.4: unknown user-style ID → EBUSY */
TEST(release_unknown_user_ebusy)
{
	int fd = b1_open();
	uint64_t ids[] = { 0, 4, 0x100, 0xFFFFFFFFFFFFFFFCULL, 0x8000000000000000ULL };

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		ASSERT_EQ(b1_release(fd, ids[i]), -EBUSY);
		ASSERT_EQ(b1_release(fd, ids[i]), -EBUSY);
	}
}

/* §2.4 step 2 / §3.4: the EBUSY path leaves no node (nor quota charge) behind */
TEST(release_unknown_user_leaves_nothing)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;

	ASSERT_EQ(b1_set_limits(a, B1_KEEP32, 4, B1_KEEP32, B1_KEEP32), 0);
	for (uint64_t id = 0x100; id < 0x100 + 40 * 4; id += 4)
		ASSERT_EQ(b1_release(a, id), -EBUSY);
	/* two handle charges on A still fit: a fresh node plus a self transfer */
	ASSERT_EQ(b1_transfer(a, 0x104, -1, &h), 0);
	ASSERT_EQ_U64(h, 0x104);
	h = b1_share(a, 0x104, b);
	ASSERT_EQ_U64(h, 0xB);
	b1_expect_empty(a);
	b1_expect_empty(b);
}

/*
 * §2.4 steps 1-2: failed releases (EFAULT, ENXIO, EBUSY of an unknown
 * user-style ID) touch no existing handle: the reference counts, the
 * owner's notifications and the kernel-ID counter are as before.
 */
TEST(release_errors_leave_handles_intact)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	uint64_t ids[] = { 0x1, 0x3, 0x13, 0x1B, h | 0x100000000ULL };

	ASSERT_ERRNO(ioctl(b, BUS1_CMD_HANDLE_RELEASE, b1_bad_ptr()), EFAULT);
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		ASSERT_EQ(b1_release(b, ids[i]), -ENXIO);
	ASSERT_EQ(b1_release(b, h & ~3ULL), -EBUSY);
	ASSERT_EQ(b1_release(a, 0x104), -EBUSY);
	b1_expect_empty(a);
	b1_expect_empty(b);
	/* h still has its one reference; dropping it notifies the owner once */
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ(b1_release(b, h), -ENXIO);
	/* the next exposure to b gets the next kernel ID */
	ASSERT_EQ_U64(b1_share(a, 0x200, b), 0x13);
	ASSERT_EQ(b1_recv(a, &(struct bus1_cmd_recv){ .max_offset = B1_POOL_SIZE }, 0), 0);
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
	expect_notification(a, BUS1_MSG_NODE_RELEASE, 0x100);
	b1_expect_empty(a);
}

/* ---------------------------------------------------------------- owner pin */

/* §2.4 step 3 / §3.5: the owner's last reference to a live node → EBUSY */
TEST(release_owner_pin_ebusy)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
	/* the node is unaffected */
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(b1_transfer(b, h, -1, NULL), 0);
	b1_expect_empty(b);
}

/* §3.5: extra owner references (transfer to self) can be released down to the pin */
TEST(release_owner_extra_refs)
{
	int a = b1_open();
	uint64_t h;

	ASSERT_EQ(b1_transfer(a, 0x100, -1, &h), 0);
	ASSERT_EQ_U64(h, 0x100);
	ASSERT_EQ(b1_transfer(a, 0x100, -1, &h), 0);
	ASSERT_EQ_U64(h, 0x100);
	/* pin + 2 */
	ASSERT_EQ(b1_release(a, 0x100), 0);
	ASSERT_EQ(b1_release(a, 0x100), 0);
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
}

/* §2.4 step 4 / §3.10: after destruction the pin can go; the ID is then free */
TEST(release_owner_after_destroy)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), h2;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	ASSERT_EQ(b1_release(a, 0x100), 0);
	/* unknown user-style ID again */
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
	/* A's own NODE_DESTROY is discarded (no longer held) */
	b1_expect_empty(a);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, h);
	/* released: SEND → ESHUTDOWN; the ID names a brand-new node */
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
	h2 = b1_share(a, 0x100, b);
	ASSERT_EQ_U64(h2, 0x13);
	ASSERT_EQ(b1_send_one(b, h2, "y", 1), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
}

/* ---------------------------------------------------------------- remote refs */

/* §2.4 step 4: dropping the last reference removes the ID */
TEST(release_remote_last_ref)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ(b1_release(b, h), -ENXIO);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ENXIO);
	ASSERT_EQ(b1_transfer(b, h, a, NULL), -ENXIO);
}

/* §3.5 / §3.6: every transfer adds one reference to the same (coalesced) handle */
TEST(release_counts_references)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ_U64(b1_share(a, 0x100, b), h);
	ASSERT_EQ_U64(b1_share(a, 0x100, b), h);
	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ(b1_release(b, h), 0);
	b1_expect_empty(a);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ(b1_release(b, h), -ENXIO);
}

/* §2.4 step 4 / §6.2: releases refund the handle quota */
TEST(release_refunds_quota)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;

	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, 2, B1_KEEP32, B1_KEEP32), 0);
	for (int i = 0; i < 10; i++) {
		h = b1_share(a, 0x100, b);
		ASSERT_EQ(b1_release(b, h), 0);
	}
}

/* ---------------------------------------------------------------- IDs */

/* §3.3: remote IDs are (counter << 3) | 3 in order of exposure */
TEST(kernel_ids_sequence)
{
	int a = b1_open(), b = b1_open();

	ASSERT_EQ_U64(b1_share(a, 0x100, b), 0x0B);
	ASSERT_EQ_U64(b1_share(a, 0x200, b), 0x13);
	ASSERT_EQ_U64(b1_share(a, 0x300, b), 0x1B);
	ASSERT_EQ_U64(b1_share(a, 0x000, b), 0x23);
	/* A's own IDs are untouched by this */
	ASSERT_EQ_U64(b1_share(b, 0x100, a), 0x0B);
}

/* §3.3: a handle re-obtained after its count hit zero gets a new ID; IDs never reused */
TEST(kernel_ids_not_reused)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ_U64(b1_share(a, 0x100, b), 0x13);
	ASSERT_EQ(b1_release(b, 0x13), 0);
	ASSERT_EQ(b1_reset(b, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_EQ_U64(b1_share(a, 0x100, b), 0x1B);
	ASSERT_EQ(b1_release(b, 0xB), -ENXIO);
}

/* §3.3: ID namespaces are per peer */
TEST(ids_per_peer)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_release(c, h), -ENXIO);
	ASSERT_EQ(b1_release(c, 0x100), -EBUSY);
	ASSERT_EQ(b1_send_one(c, h, "x", 1), -ENXIO);
	/* C's own 0x100 is a distinct node of C's */
	ASSERT_EQ_U64(b1_share(c, 0x100, b), 0x13);
}

/* §3.3 / §3.4: an ID with bit 1 only (REMOTE, not MANAGED) is not user-style */
TEST(import_rejects_remote_bit)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = 0;

	ASSERT_EQ(b1_transfer(a, 0x102, b, &h), -ENXIO);
	ASSERT_EQ(b1_destroy_one(a, 0x102), -ENXIO);
	ASSERT_EQ(b1_send_one(a, 0x102, "x", 1), -ENXIO);
	ASSERT_EQ(b1_transfer(a, 0x101, b, &h), -ENXIO);
	b1_expect_empty(a);
	b1_expect_empty(b);
}

/* §3.9 / §10.2: a handle received by RECV is in the table: usable and releasable */
TEST(received_handle_usable)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hc = b1_share(c, 0x700, a);	/* A can send to C */
	const uint8_t *pool = b1_map(c);
	uint64_t got, x, carried = 0x100;
	struct bus1_cmd_recv r;

	(void)b;
	ASSERT_EQ(send_handles(a, hc, &carried, 1), 0);
	recv_handles(c, pool, 0x700, &got, 1);
	ASSERT_EQ_U64(got, 0xB);
	/* SEND to it reaches A's node 0x100 */
	ASSERT_EQ(b1_send_one(c, got, "back", 4), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	/* TRANSFER of it to its owner yields the owner's ID */
	ASSERT_EQ(b1_transfer(c, got, a, &x), 0);
	ASSERT_EQ_U64(x, 0x100);
	ASSERT_EQ(b1_release(a, 0x100), 0);
	/* RELEASE of the last reference → owner notified */
	ASSERT_EQ(b1_release(c, got), 0);
	ASSERT_EQ(b1_release(c, got), -ENXIO);
	expect_notification(a, BUS1_MSG_NODE_RELEASE, 0x100);
}

/* §3.6: a payload naming the receiver's own node arrives as the node ID */
TEST(coalesce_own_node_in_payload)
{
	int a = b1_open(), b = b1_open();
	uint64_t h1 = b1_share(a, 0x100, b), h2 = b1_share(a, 0x200, b);
	const uint8_t *pool = b1_map(a);
	uint64_t got[2], carried[2] = { h2, h2 };

	ASSERT_EQ(send_handles(b, h1, carried, 2), 0);
	recv_handles(a, pool, 0x100, got, 2);
	ASSERT_EQ_U64(got[0], 0x200);
	ASSERT_EQ_U64(got[1], 0x200);
	/* two extra references on A's owner handle */
	ASSERT_EQ(b1_release(a, 0x200), 0);
	ASSERT_EQ(b1_release(a, 0x200), 0);
	ASSERT_EQ(b1_release(a, 0x200), -EBUSY);
}

/* §3.6: the same node twice in a payload: one ID, two user references */
TEST(coalesce_duplicate_payload)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hc = b1_share(c, 0x700, b);
	uint64_t h = b1_share(a, 0x100, b);
	const uint8_t *pool = b1_map(c);
	uint64_t got[3], carried[3] = { h, h, h };

	ASSERT_EQ(send_handles(b, hc, carried, 3), 0);
	recv_handles(c, pool, 0x700, got, 3);
	ASSERT_EQ_U64(got[0], 0xB);
	ASSERT_EQ_U64(got[1], 0xB);
	ASSERT_EQ_U64(got[2], 0xB);
	/* and a later transfer of the same node to C coalesces too */
	ASSERT_EQ_U64(b1_share(a, 0x100, c), 0xB);
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(b1_release(c, 0xB), 0);
	ASSERT_EQ(b1_release(c, 0xB), -ENXIO);
}

/* §3.3: INVALID payload entries do not consume counter values */
TEST(invalid_entries_no_id)
{
	int a = b1_open(), b = b1_open();
	uint64_t hb = b1_share(b, 0x300, a);
	const uint8_t *pool = b1_map(b);
	uint64_t got[3], carried[3] = { 0x200, 0x100, 0x200 };

	ASSERT_EQ(b1_destroy_one(a, 0x200), 0);
	ASSERT_EQ(send_handles(a, hb, carried, 3), 0);
	recv_handles(b, pool, 0x300, got, 3);
	ASSERT_EQ_U64(got[0], BUS1_HANDLE_INVALID);
	ASSERT_EQ_U64(got[1], 0xB);
	ASSERT_EQ_U64(got[2], BUS1_HANDLE_INVALID);
	ASSERT_EQ_U64(b1_share(a, 0x400, b), 0x13);
}

/*
 * §3.3 (third row): an owner that dropped every reference to its destroyed
 * node gets a bus-assigned ID with MANAGED set and REMOTE clear when a
 * message to itself, ordered before the destruction, carries the node.
 */
TEST(owner_managed_id)
{
	int a = b1_open();
	const uint8_t *pool = b1_map(a);
	uint64_t got, carried = 0x100;

	/* creates 0x200 (destination, to self) and 0x100 (payload) */
	ASSERT_EQ(send_handles(a, 0x200, &carried, 1), 0);
	ASSERT_EQ(b1_destroy(a, &carried, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);	/* the owner ID is gone */
	recv_handles(a, pool, 0x200, &got, 1);
	/* counter 1, MANAGED, not REMOTE */
	ASSERT_EQ_U64(got, 0x9);
	/* destroyed node: this reference is not a pin */
	ASSERT_EQ(b1_release(a, 0x9), 0);
	ASSERT_EQ(b1_release(a, 0x9), -ENXIO);
}

/* ---------------------------------------------------------------- NODE_RELEASE */

/* §3.7: the last remote reference going away notifies the owner, with notification fields */
TEST(node_release_on_last_ref)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	b1_expect_empty(a);
	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_TRUE(b1_revents(a, POLLIN) & POLLIN);
	expect_notification(a, BUS1_MSG_NODE_RELEASE, 0x100);
	b1_expect_empty(a);
	b1_expect_empty(b);
}

/* §3.7: a node created and never shared produces no notification; own extra refs do */
TEST(node_release_owner_extra_ref)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;

	ASSERT_EQ(b1_transfer(b, 0x500, a, &h), 0);	/* B created a node; just pinned */
	b1_expect_empty(b);
	ASSERT_EQ(b1_transfer(a, 0x100, -1, NULL), 0);
	b1_expect_empty(a);
	ASSERT_EQ(b1_release(a, 0x100), 0);
	expect_notification(a, BUS1_MSG_NODE_RELEASE, 0x100);
}

/* §3.7: notification only when the strong count reaches 0 (across holders) */
TEST(node_release_strong_count)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hb = b1_share(a, 0x100, b), hc = b1_share(a, 0x100, c);

	ASSERT_EQ_U64(b1_share(a, 0x100, b), hb);
	ASSERT_EQ(b1_release(b, hb), 0);
	ASSERT_EQ(b1_release(b, hb), 0);
	b1_expect_empty(a);
	ASSERT_EQ(b1_release(c, hc), 0);
	expect_notification(a, BUS1_MSG_NODE_RELEASE, 0x100);
	b1_expect_empty(a);
}

/* §3.7: no NODE_RELEASE for a destroyed node */
TEST(node_release_not_after_destroy)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	ASSERT_EQ(b1_release(b, h), 0);
	expect_notification(a, BUS1_MSG_NODE_DESTROY, 0x100);
	b1_expect_empty(a);
	b1_expect_empty(b);
}

/* §3.7: at most one pending; withdrawn on 0→1, re-queued on the next 1→0 */
TEST(node_release_withdrawn_and_single)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_TRUE(b1_revents(a, POLLIN) & POLLIN);
	h = b1_share(a, 0x100, b);			/* 0→1: withdrawn */
	ASSERT_FALSE(b1_revents(a, POLLIN) & POLLIN);
	b1_expect_empty(a);
	ASSERT_EQ(b1_release(b, h), 0);
	h = b1_share(a, 0x100, b);
	ASSERT_EQ(b1_release(b, h), 0);
	expect_notification(a, BUS1_MSG_NODE_RELEASE, 0x100);
	b1_expect_empty(a);
	/* after it was dequeued, the next 1→0 queues a new one */
	h = b1_share(a, 0x100, b);
	ASSERT_EQ(b1_release(b, h), 0);
	expect_notification(a, BUS1_MSG_NODE_RELEASE, 0x100);
}

/* §3.7: a queued message carrying the node keeps the strong count up */
TEST(node_release_held_by_queued_message)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hb = b1_share(a, 0x100, b), hc = b1_share(c, 0x700, b);
	const uint8_t *pool = b1_map(c);
	uint64_t got;

	ASSERT_EQ(send_handles(b, hc, &hb, 1), 0);
	ASSERT_EQ(b1_release(b, hb), 0);
	b1_expect_empty(a);			/* the message still holds it */
	recv_handles(c, pool, 0x700, &got, 1);
	b1_expect_empty(a);			/* C now holds a reference */
	ASSERT_EQ(b1_release(c, got), 0);
	expect_notification(a, BUS1_MSG_NODE_RELEASE, 0x100);
}

/* §3.7: a message carrying the node that is discarded unreceived triggers it */
TEST(node_release_after_discard)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hb = b1_share(a, 0x100, b), hc = b1_share(c, 0x700, b);

	ASSERT_EQ(send_handles(b, hc, &hb, 1), 0);
	ASSERT_EQ(b1_release(b, hb), 0);
	b1_expect_empty(a);
	ASSERT_EQ(b1_reset(c, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	expect_notification(a, BUS1_MSG_NODE_RELEASE, 0x100);
}

/* §3.7: the owner receiving its own node withdraws a pending release */
TEST(node_release_no_spurious_on_own_receive)
{
	int a = b1_open(), b = b1_open();
	uint64_t h1 = b1_share(a, 0x100, b), h2 = b1_share(a, 0x200, b);
	const uint8_t *pool = b1_map(a);
	uint64_t got;

	ASSERT_EQ(send_handles(b, h1, &h2, 1), 0);
	ASSERT_EQ(b1_release(b, h2), 0);
	recv_handles(a, pool, 0x100, &got, 1);
	ASSERT_EQ_U64(got, 0x200);
	b1_expect_empty(a);
	/* A now has pin + 1 on 0x200; dropping the extra one is the 1→0 */
	ASSERT_EQ(b1_release(a, 0x200), 0);
	expect_notification(a, BUS1_MSG_NODE_RELEASE, 0x200);
}

/* §2.4 / §3.10: releasing a handle to a released node gives no notification */
TEST(release_after_owner_gone_silent)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100 }, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	expect_notification(b, BUS1_MSG_NODE_DESTROY, h);
	ASSERT_EQ(b1_release(b, h), 0);
	b1_expect_empty(a);
	b1_expect_empty(b);
}
