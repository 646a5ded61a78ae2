/* SPDX-License-Identifier: MIT */
/*
 * NODES_DESTROY (§2.6, also under its man-page name
 * NODE_DESTROY): validation order, all-or-nothing behaviour, NODE_DESTROY
 * notifications (3.8), RELEASE_HANDLES and released nodes (3.10), and what
 * SEND does with destroyed nodes (3.11).
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "bus1-util.h"

#define RELEASE BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES


static int destroy_raw(int fd, uint64_t flags, const void *ptr, uint64_t n)
{
	struct bus1_cmd_nodes_destroy d = {
		.flags = flags, .ptr_nodes = (uintptr_t)ptr, .n_nodes = n,
	};

	return b1_ioctl(fd, BUS1_CMD_NODES_DESTROY, &d);
}

static void expect_msg_flags(int fd, uint64_t type, uint64_t dest, uint64_t flags)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, type);
	ASSERT_EQ_U64(r.msg.destination, dest);
	ASSERT_EQ_U64(r.msg.flags, flags);
	if (type == BUS1_MSG_DATA)
		ASSERT_OK(b1_slice_release(fd, r.msg.offset));
}

static void expect_msg(int fd, uint64_t type, uint64_t dest)
{
	expect_msg_flags(fd, type, dest, 0);
}

/* The node `id` of owner is alive: a holder's message reaches the owner. */
static void assert_alive(int owner, uint64_t id, int holder, uint64_t h)
{
	ASSERT_EQ(b1_send_one(holder, h, "alive", 5), 0);
	expect_msg(owner, BUS1_MSG_DATA, id);
}

/* §1.6 / §9 #1: the man-page name is the same command */
TEST(node_destroy_alias)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	struct bus1_cmd_node_destroy d = {
		.flags = 0, .ptr_nodes = (uintptr_t)(uint64_t[]){ 0x100 }, .n_nodes = 1,
	};

	ASSERT_EQ(sizeof(d), 24);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_NODE_DESTROY, &d), 0);
	expect_msg(a, BUS1_MSG_NODE_DESTROY, 0x100);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
}

/* §2.6 step 1: unreadable struct → EFAULT */
TEST(destroy_efault)
{
	int a = b1_open();

	ASSERT_ERRNO(ioctl(a, BUS1_CMD_NODES_DESTROY, b1_bad_ptr()), EFAULT);
	ASSERT_ERRNO(ioctl(a, BUS1_CMD_NODES_DESTROY, NULL), EFAULT);
	b1_expect_empty(a);
}

/* §2.6 step 2: flags other than RELEASE_HANDLES → EINVAL (before any other check) */
TEST(destroy_flags_einval)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	uint64_t bits[] = { 2, 3, 0x80, 1ULL << 63 };

	for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
		ASSERT_EQ(destroy_raw(a, bits[i], (uint64_t[]){ 0x100 }, 1), -EINVAL);
		ASSERT_EQ(destroy_raw(a, bits[i], b1_bad_ptr(), 1), -EINVAL);
		ASSERT_EQ(destroy_raw(a, bits[i], NULL, 1ULL << 40), -EINVAL);
	}
	b1_expect_empty(a);
	assert_alive(a, 0x100, b, h);
}

/* §2.6 step 4: n_nodes above the per-user max_handles (65536) → EINVAL */
TEST(destroy_too_many_einval)
{
	int a = b1_open();

	ASSERT_EQ(destroy_raw(a, 0, b1_bad_ptr(), 65537), -EINVAL);
	ASSERT_EQ(destroy_raw(a, 0, b1_bad_ptr(), 1ULL << 32), -EINVAL);
	ASSERT_EQ(destroy_raw(a, 0, b1_bad_ptr(), B1_KEEP64), -EINVAL);
	/* exactly the limit passes step 4 and fails reading the list */
	ASSERT_EQ(destroy_raw(a, 0, b1_bad_ptr(), 65536), -EFAULT);
}

/* §2.6 step 4: the limit is the user's, not the peer's (PEER_RESET does not change it) */
TEST(destroy_limit_is_per_user)
{
	int a = b1_open();

	ASSERT_EQ(b1_set_handles(a, 3), 0);
	ASSERT_EQ(destroy_raw(a, 0, b1_bad_ptr(), 4), -EFAULT);
	ASSERT_EQ(destroy_raw(a, 0, b1_bad_ptr(), 65536), -EFAULT);
	ASSERT_EQ(destroy_raw(a, 0, b1_bad_ptr(), 65537), -EINVAL);
}

/* §2.6: n_nodes == 0 does nothing and does not read ptr_nodes */
TEST(destroy_zero_nodes)
{
	int a = b1_open();

	ASSERT_EQ(destroy_raw(a, 0, b1_bad_ptr(), 0), 0);
	ASSERT_EQ(destroy_raw(a, RELEASE, NULL, 0), 0);
	b1_expect_empty(a);
}

/* §2.6 step 5.1: an unreadable element → EFAULT, earlier elements untouched */
TEST(destroy_element_efault)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	uint64_t *list = b1_edge(8);

	list[0] = 0x100;
	ASSERT_EQ(destroy_raw(a, 0, list, 2), -EFAULT);
	ASSERT_EQ(destroy_raw(a, RELEASE, list, 2), -EFAULT);
	b1_expect_empty(a);
	b1_expect_empty(b);
	assert_alive(a, 0x100, b, h);
	/* the single readable element alone is fine */
	ASSERT_EQ(destroy_raw(a, 0, list, 1), 0);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
}

/* §2.6 step 5.2: unknown ID with bit 0 or 1 → ENXIO, nothing destroyed */
TEST(destroy_unknown_enxio)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x1 }, 1, 0), -ENXIO);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0xB }, 1, 0), -ENXIO);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100, 0x2 }, 2, 0), -ENXIO);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x200, 0x100, BUS1_HANDLE_INVALID }, 3, RELEASE), -ENXIO);
	b1_expect_empty(a);
	b1_expect_empty(b);
	assert_alive(a, 0x100, b, h);
	/* the provisional 0x200 vanished: releasing it is the unknown-ID case */
	ASSERT_EQ(b1_release(a, 0x200), -EBUSY);
}

/* §2.6 step 5.3: the same handle twice → ENOTUNIQ, nothing destroyed */
TEST(destroy_duplicate_enotuniq)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100, 0x100 }, 2, 0), -ENOTUNIQ);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x200, 0x100, 0x200 }, 3, 0), -ENOTUNIQ);
	/* an unknown user-style ID twice names the same provisional node */
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x300, 0x300 }, 2, RELEASE), -ENOTUNIQ);
	b1_expect_empty(a);
	b1_expect_empty(b);
	assert_alive(a, 0x100, b, h);
}

/* §2.6 step 5.4: a handle that is not the caller's own node → EREMOTE */
TEST(destroy_remote_eremote)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_destroy_one(b, h), -EREMOTE);
	ASSERT_EQ(b1_destroy(b, (uint64_t[]){ 0x500, h }, 2, RELEASE), -EREMOTE);
	/* element order decides: ENXIO first, then EREMOTE */
	ASSERT_EQ(b1_destroy(b, (uint64_t[]){ 0x1, h }, 2, 0), -ENXIO);
	ASSERT_EQ(b1_destroy(b, (uint64_t[]){ h, 0x1 }, 2, 0), -EREMOTE);
	/* a duplicate earlier in the list is found before a later remote one */
	ASSERT_EQ(b1_destroy(b, (uint64_t[]){ 0x500, 0x500, h }, 3, 0), -ENOTUNIQ);
	b1_expect_empty(a);
	b1_expect_empty(b);
	assert_alive(a, 0x100, b, h);
	ASSERT_EQ(b1_release(b, 0x500), -EBUSY);
}

/* §2.6 step 5.5: an already destroyed node → ESTALE; the rest is not destroyed */
TEST(destroy_destroyed_estale)
{
	int a = b1_open(), b = b1_open();
	uint64_t h1 = b1_share(a, 0x100, b), h2 = b1_share(a, 0x200, b);

	ASSERT_EQ(b1_destroy_one(a, 0x200), 0);
	expect_msg(a, BUS1_MSG_NODE_DESTROY, 0x200);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h2);
	ASSERT_EQ(b1_destroy_one(a, 0x200), -ESTALE);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100, 0x200 }, 2, RELEASE), -ESTALE);
	/* elements are checked in order: a duplicate before a later stale one... */
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100, 0x100, 0x200 }, 3, 0), -ENOTUNIQ);
	/* ...and the first failing element wins */
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x200, 0x100, 0x100 }, 3, 0), -ESTALE);
	b1_expect_empty(a);
	b1_expect_empty(b);
	assert_alive(a, 0x100, b, h1);
	/* a destroyed node still held by A: release drops the (former) pin */
	ASSERT_EQ(b1_release(a, 0x200), 0);
	ASSERT_EQ(b1_release(a, 0x200), -EBUSY);
}

/* §2.6 step 6: provisional nodes need handle quota → EDQUOT, nothing destroyed */
TEST(destroy_edquot)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_set_handles(a, 0), 0);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100, 0x200 }, 2, 0), -EDQUOT);
	ASSERT_EQ(b1_destroy_one(a, 0x300), -EDQUOT);
	b1_expect_empty(a);
	b1_expect_empty(b);
	assert_alive(a, 0x100, b, h);
	/* existing nodes need no quota */
	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	expect_msg(a, BUS1_MSG_NODE_DESTROY, 0x100);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
}

/*
 * §2.6 steps 5 and 6: every element is checked (ENXIO, ENOTUNIQ, EREMOTE,
 * ESTALE) before provisional nodes are charged (EDQUOT), even when the
 * provisional node comes first in the list; nothing is destroyed.
 */
TEST(destroy_element_errors_before_edquot)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), remote = b1_share(b, 0x500, a);

	ASSERT_EQ(b1_destroy_one(a, 0x300), 0);
	expect_msg(a, BUS1_MSG_NODE_DESTROY, 0x300);
	/* no handle unit left for the provisional 0x200 */
	ASSERT_EQ(b1_set_handles(a, 0), 0);
	ASSERT_EQ(b1_destroy_one(a, 0x200), -EDQUOT);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x200, 0x1 }, 2, 0), -ENXIO);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x200, 0x100, 0x200 }, 3, 0), -ENOTUNIQ);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x200, remote }, 2, RELEASE), -EREMOTE);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x200, 0x100, 0x300 }, 3, 0), -ESTALE);
	/* the existing node alone needs no quota, but with 0x200 the list fails */
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100, 0x200 }, 2, RELEASE), -EDQUOT);
	b1_expect_empty(a);
	b1_expect_empty(b);
	assert_alive(a, 0x100, b, h);
	assert_alive(b, 0x500, a, remote);
	/* with a unit available the provisional node is created and destroyed */
	ASSERT_EQ(b1_set_handles(a, 65536), 0);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x200, 0x100 }, 2, 0), 0);
	expect_msg_flags(a, BUS1_MSG_NODE_DESTROY, 0x200, BUS1_MSG_FLAG_CONTINUE);
	expect_msg_flags(a, BUS1_MSG_NODE_DESTROY, 0x100, 0);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
}

/* §2.6 step 7 / §3.8: owner and holders notified; one transaction (CONTINUE), list order */
TEST(destroy_notifies_all)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t b1 = b1_share(a, 0x100, b), b2 = b1_share(a, 0x200, b);
	uint64_t c2 = b1_share(a, 0x200, c);

	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x200, 0x100 }, 2, 0), 0);
	expect_msg_flags(a, BUS1_MSG_NODE_DESTROY, 0x200, BUS1_MSG_FLAG_CONTINUE);
	expect_msg_flags(a, BUS1_MSG_NODE_DESTROY, 0x100, 0);
	b1_expect_empty(a);
	expect_msg_flags(b, BUS1_MSG_NODE_DESTROY, b2, BUS1_MSG_FLAG_CONTINUE);
	expect_msg_flags(b, BUS1_MSG_NODE_DESTROY, b1, 0);
	b1_expect_empty(b);
	/* a single entry for C: no CONTINUE */
	expect_msg_flags(c, BUS1_MSG_NODE_DESTROY, c2, 0);
	b1_expect_empty(c);
}

/* §2.6 step 7 / §3.8: holders that released their handle get nothing */
TEST(destroy_skips_released_holders)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	/* the pending NODE_RELEASE was withdrawn by the destruction */
	expect_msg(a, BUS1_MSG_NODE_DESTROY, 0x100);
	b1_expect_empty(a);
	b1_expect_empty(b);
}

/* §2.6 note / §3.4: destroying an unknown user-style ID creates and destroys it */
TEST(destroy_unknown_user_id)
{
	int a = b1_open();

	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	expect_msg(a, BUS1_MSG_NODE_DESTROY, 0x100);
	/* left holding a destroyed node with one reference */
	ASSERT_EQ(b1_destroy_one(a, 0x100), -ESTALE);
	ASSERT_EQ(b1_release(a, 0x100), 0);
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
	/* with RELEASE_HANDLES nothing remains at all */
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x200 }, 1, RELEASE), 0);
	b1_expect_empty(a);
	ASSERT_EQ(b1_release(a, 0x200), -EBUSY);
}

/* §2.6 step 8 / §3.10: RELEASE_HANDLES drops the owner's last reference */
TEST(destroy_release_handles)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_share(a, 0x100, b), x;

	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100 }, 1, RELEASE), 0);
	/* the owner's own notification is discarded: it no longer holds the node */
	b1_expect_empty(a);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
	/* released: SEND → ESHUTDOWN, TRANSFER → INVALID */
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
	ASSERT_EQ(b1_transfer(b, h, c, &x), 0);
	ASSERT_EQ_U64(x, BUS1_HANDLE_INVALID);
	/* the owner's ID is free; the remote handle lives on until released */
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ(b1_release(b, h), -ENXIO);
	b1_expect_empty(a);
}

/* §2.6 step 8: RELEASE_HANDLES drops exactly one reference */
TEST(destroy_release_handles_one_ref)
{
	int a = b1_open();
	uint64_t x;

	ASSERT_EQ(b1_transfer(a, 0x100, -1, &x), 0);	/* pin + 1 */
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100 }, 1, RELEASE), 0);
	/* still held: the notification is delivered */
	expect_msg(a, BUS1_MSG_NODE_DESTROY, 0x100);
	ASSERT_EQ(b1_release(a, 0x100), 0);
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
}

/* §2.6 step 8 / §6.2: RELEASE_HANDLES refunds the pin's quota */
TEST(destroy_release_handles_refunds)
{
	int a = b1_open();

	ASSERT_EQ(b1_set_handles(a, 2), 0);
	for (int i = 0; i < 10; i++)
		ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100 }, 1, RELEASE), 0);
	b1_expect_empty(a);
}

/* §3.8: a message ordered before the destruction is delivered before NODE_DESTROY */
TEST(destroy_orders_after_messages)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_send_one(b, h, "early", 5), 0);
	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x100);
	expect_msg(a, BUS1_MSG_NODE_DESTROY, 0x100);
	b1_expect_empty(a);
}

/* §3.10: after RELEASE_HANDLES, earlier messages to the node are discarded too */
TEST(destroy_release_discards_queued)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_send_one(b, h, "early", 5), 0);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100 }, 1, RELEASE), 0);
	b1_expect_empty(a);
}

/* §3.11: SEND to a destroyed node the owner still holds → 0, silently discarded */
TEST(send_to_destroyed_node)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	ASSERT_EQ(b1_send_one(b, h, "late", 4), 0);
	ASSERT_EQ(b1_send_one(a, 0x100, "self", 4), 0);
	expect_msg(a, BUS1_MSG_NODE_DESTROY, 0x100);
	b1_expect_empty(a);
	/* after the owner releases it: ESHUTDOWN */
	ASSERT_EQ(b1_release(a, 0x100), 0);
	ASSERT_EQ(b1_send_one(b, h, "later", 5), -ESHUTDOWN);
}

/* §3.11: SEND to a node whose owner disconnected → ESHUTDOWN */
TEST(send_to_disconnected_owner)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_disconnect(a), 0);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, h);
}

/* §3.8: the destruction withdraws a pending NODE_RELEASE */
TEST(destroy_withdraws_node_release)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_TRUE(b1_revents(a, POLLIN) & POLLIN);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100 }, 1, RELEASE), 0);
	b1_expect_empty(a);
	ASSERT_FALSE(b1_revents(a, POLLIN) & POLLIN);
}

/* §3.8 / §3.9: carried in a payload after destruction → INVALID */
TEST(destroyed_node_in_payload_invalid)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_share(a, 0x100, b), hc = b1_share(c, 0x700, b);
	const uint8_t *pool = b1_map(c);
	struct iovec v = { .iov_base = "p", .iov_len = 1 };
	struct bus1_cmd_recv r;
	uint64_t got;

	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	ASSERT_EQ(b1_send(b, 0, &hc, 1, NULL, &v, 1, &h, 1, NULL, 0), 0);
	ASSERT_EQ(b1_recv(c, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.n_handles, 1);
	memcpy(&got, pool + r.msg.offset + 8, 8);
	ASSERT_EQ_U64(got, BUS1_HANDLE_INVALID);
	b1_expect_empty(c);
}

/* §3.8: a holder attached only through a queued message gets the message, then NODE_DESTROY */
TEST(destroy_notifies_message_attached_holder)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_share(a, 0x100, b), hc = b1_share(c, 0x700, b);
	const uint8_t *pool = b1_map(c);
	struct iovec v = { .iov_base = "p", .iov_len = 1 };
	struct bus1_cmd_recv r;
	uint64_t got;

	ASSERT_EQ(b1_send(b, 0, &hc, 1, NULL, &v, 1, &h, 1, NULL, 0), 0);
	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	b1_expect_empty(b);
	ASSERT_EQ(b1_recv(c, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	memcpy(&got, pool + r.msg.offset + 8, 8);
	ASSERT_EQ_U64(got, 0xB);
	expect_msg(c, BUS1_MSG_NODE_DESTROY, 0xB);
	b1_expect_empty(c);
}

/* §3.8: NODE_DESTROY is discarded if the holder released the handle before RECV */
TEST(destroy_notification_needs_user_ref)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	ASSERT_EQ(b1_release(b, h), 0);
	b1_expect_empty(b);
	/* no NODE_RELEASE for a destroyed node either (3.7) */
	expect_msg(a, BUS1_MSG_NODE_DESTROY, 0x100);
	b1_expect_empty(a);
}

/* §2.6 step 7 / §4.8: many nodes in one call: one transaction, list order, CONTINUE chain */
TEST(destroy_many_one_transaction)
{
	enum { N = 1000 };
	static uint64_t ids[N];
	int a = b1_open();
	struct bus1_cmd_recv r;

	for (int i = 0; i < N; i++)
		ids[i] = 0x10000 - 4 * (uint64_t)i;
	ASSERT_EQ(b1_destroy(a, ids, N, 0), 0);
	for (int i = 0; i < N; i++) {
		ASSERT_EQ(b1_recv(a, &r, 0), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
		ASSERT_EQ_U64(r.msg.destination, ids[i]);
		ASSERT_EQ_U64(r.msg.flags, i < N - 1 ? BUS1_MSG_FLAG_CONTINUE : 0);
	}
	b1_expect_empty(a);
	/* all destroyed, each still held once */
	ASSERT_EQ(b1_destroy(a, ids + N / 2, 1, 0), -ESTALE);
	ASSERT_EQ(b1_destroy(a, ids, N, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), -ESTALE);
	ASSERT_EQ(b1_release(a, ids[N - 1]), 0);
	ASSERT_EQ(b1_release(a, ids[N - 1]), -EBUSY);
}
