/* SPDX-License-Identifier: MIT */
/*
 * CONTINUE in both directions:
 *  - BUS1_MSG_FLAG_CONTINUE on received entries (§4.8): set iff
 *    the next entry of the same queue belongs to the same transaction;
 *  - BUS1_SEND_FLAG_CONTINUE with the per-destination errors array (2.8,
 *    A.2): per-destination ESHUTDOWN/EDQUOT/EXFULL do not abort the call,
 *    everything else still does.
 */
#include <sys/mman.h>

#include "bus1-util.h"



/* Next entry must be DATA to `dest` with payload `data` and CONTINUE == cont. */
static void expect_data(int fd, uint64_t dest, const char *data, int cont)
{
	static const uint8_t *pool[64];
	struct bus1_cmd_recv r;

	if (!pool[fd])
		pool[fd] = b1_map(fd);
	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, dest);
	ASSERT_EQ(r.msg.n_bytes, strlen(data));
	ASSERT_MEMEQ(pool[fd] + r.msg.offset, data, strlen(data));
	ASSERT_EQ(r.msg.flags, cont ? BUS1_MSG_FLAG_CONTINUE : 0);
}

static void expect_destroy(int fd, uint64_t dest, int cont)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, dest);
	ASSERT_EQ(r.msg.flags, cont ? BUS1_MSG_FLAG_CONTINUE : 0);
}

static int send_str(int fd, uint64_t flags, const uint64_t *d, size_t n,
		    uint64_t *errors, const char *data)
{
	struct iovec v = { (void *)data, strlen(data) };

	return b1_send(fd, flags, d, n, errors, &v, 1, NULL, 0, NULL, 0);
}

/* §4.8: several nodes of one peer in one SEND: all but the last carry CONTINUE */
TEST(msgflag_continue_same_peer)
{
	int s = b1_open(), a = b1_open();
	uint64_t d[3] = { b1_handle_to(a, 0x100, s), b1_handle_to(a, 0x200, s),
			  b1_handle_to(a, 0x300, s) };
	struct bus1_cmd_recv r;

	ASSERT_EQ(send_str(s, 0, d, 3, NULL, "tx"), 0);
	/* PEEK reports the flag as well */
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_EQ(r.msg.flags, BUS1_MSG_FLAG_CONTINUE);
	/* destination-array order, one slice each */
	expect_data(a, 0x100, "tx", 1);
	expect_data(a, 0x200, "tx", 1);
	expect_data(a, 0x300, "tx", 0);
	b1_expect_empty(a);
}

/* §4.8: a multicast to distinct peers never sets CONTINUE */
TEST(msgflag_continue_not_across_peers)
{
	int s = b1_open(), a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t d[3] = { b1_handle_to(a, 0x100, s), b1_handle_to(b, 0x100, s),
			  b1_handle_to(c, 0x100, s) };

	ASSERT_EQ(send_str(s, 0, d, 3, NULL, "m"), 0);
	expect_data(a, 0x100, "m", 0);
	expect_data(b, 0x100, "m", 0);
	expect_data(c, 0x100, "m", 0);
}

/* §4.8: mixed destinations: only the entries sharing a queue are linked */
TEST(msgflag_continue_mixed)
{
	int s = b1_open(), a = b1_open(), c = b1_open();
	uint64_t d[4] = { b1_handle_to(a, 0x100, s), b1_handle_to(c, 0x100, s),
			  b1_handle_to(a, 0x200, s), b1_handle_to(c, 0x200, s) };

	ASSERT_EQ(send_str(s, 0, d, 4, NULL, "x"), 0);
	/* a second transaction right behind does not extend the chain */
	ASSERT_EQ(send_str(s, 0, d, 1, NULL, "y"), 0);
	expect_data(a, 0x100, "x", 1);
	expect_data(a, 0x200, "x", 0);
	expect_data(a, 0x100, "y", 0);
	expect_data(c, 0x100, "x", 1);
	expect_data(c, 0x200, "x", 0);
	b1_expect_empty(a);
	b1_expect_empty(c);
}

/* §4.8: separate transactions never set CONTINUE */
TEST(msgflag_continue_not_between_transactions)
{
	int s = b1_open(), a = b1_open();
	uint64_t d = b1_handle_to(a, 0x100, s);

	for (int i = 0; i < 3; i++)
		ASSERT_EQ(send_str(s, 0, &d, 1, NULL, "z"), 0);
	for (int i = 0; i < 3; i++)
		expect_data(a, 0x100, "z", 0);
}

/* §4.8 / §3.8: one NODES_DESTROY of several nodes links the notifications */
TEST(msgflag_continue_node_destroy)
{
	int s = b1_open(), a = b1_open();
	uint64_t h1 = b1_handle_to(a, 0x100, s), h2 = b1_handle_to(a, 0x200, s);
	uint64_t ids[2] = { 0x100, 0x200 };

	ASSERT_EQ(b1_destroy(a, ids, 2, 0), 0);
	/* the holder */
	expect_destroy(s, h1, 1);
	expect_destroy(s, h2, 0);
	b1_expect_empty(s);
	/* the owner's own entries */
	expect_destroy(a, 0x100, 1);
	expect_destroy(a, 0x200, 0);
	b1_expect_empty(a);
}

/* §4.8: the flag looks at the raw next entry, even if that one is discarded */
TEST(msgflag_continue_next_discarded)
{
	int s = b1_open(), a = b1_open();
	uint64_t d[2] = { b1_handle_to(a, 0x100, s), b1_handle_to(a, 0x200, s) };
	uint64_t id = 0x200;

	ASSERT_EQ(send_str(s, 0, d, 2, NULL, "pair"), 0);
	/* the owner drops 0x200 entirely: the second entry becomes stale */
	ASSERT_EQ(b1_destroy(a, &id, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	expect_data(a, 0x100, "pair", 1);
	b1_expect_empty(a);
}

/* §2.8 / A.2: with CONTINUE a gone destination is skipped and reported */
TEST(sendflag_continue_eshutdown)
{
	int s = b1_open(), a = b1_open(), dead = b1_open(), c = b1_open();
	uint64_t d[3] = { b1_handle_to(a, 0x100, s), b1_handle_to(dead, 0x100, s),
			  b1_handle_to(c, 0x100, s) };
	uint64_t err[3] = { 77, 77, 77 };

	ASSERT_EQ(b1_disconnect(dead), 0);
	ASSERT_EQ(send_str(s, BUS1_SEND_FLAG_CONTINUE, d, 3, err, "cont"), 0);
	ASSERT_EQ(err[0], 0);
	ASSERT_EQ(err[1], ESHUTDOWN);
	ASSERT_EQ(err[2], 0);
	expect_data(a, 0x100, "cont", 0);
	expect_data(c, 0x100, "cont", 0);
	b1_expect_empty(a);
	b1_expect_empty(c);
}

/* A.2: the remaining destinations form one transaction (CONTINUE chain kept) */
TEST(sendflag_continue_rest_is_one_transaction)
{
	int s = b1_open(), a = b1_open(), dead = b1_open();
	uint64_t d[3] = { b1_handle_to(a, 0x100, s), b1_handle_to(dead, 0x100, s),
			  b1_handle_to(a, 0x200, s) };
	uint64_t err[3];

	ASSERT_EQ(b1_disconnect(dead), 0);
	ASSERT_EQ(send_str(s, BUS1_SEND_FLAG_CONTINUE, d, 3, err, "r"), 0);
	ASSERT_EQ(err[0], 0);
	ASSERT_EQ(err[1], ESHUTDOWN);
	ASSERT_EQ(err[2], 0);
	expect_data(a, 0x100, "r", 1);
	expect_data(a, 0x200, "r", 0);
}

/* A.2: EDQUOT of one destination is per-destination; its quota is untouched */
TEST(sendflag_continue_edquot)
{
	int s = b1_open(), a = b1_open(), q = b1_open();
	uint64_t d[2] = { b1_handle_to(q, 0x100, s), b1_handle_to(a, 0x100, s) };
	uint64_t err[2] = { 5, 5 };

	ASSERT_EQ(b1_set_limits(q, 0, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(send_str(s, BUS1_SEND_FLAG_CONTINUE, d, 2, err, "e"), 0);
	ASSERT_EQ(err[0], EDQUOT);
	ASSERT_EQ(err[1], 0);
	b1_expect_empty(q);
	expect_data(a, 0x100, "e", 0);
	/* nothing was left charged on q: max_slices 2 admits one message again */
	ASSERT_EQ(b1_set_limits(q, 2, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(send_str(s, 0, d, 1, NULL, "ok"), 0);
	ASSERT_EQ(send_str(s, 0, d, 1, NULL, "no"), -EDQUOT);
	expect_data(q, 0x100, "ok", 0);
}

/* A.2: every destination failing → 0, all slots set, nothing queued */
TEST(sendflag_continue_all_fail)
{
	int s = b1_open(), a = b1_open(), b = b1_open();
	uint64_t d[2] = { b1_handle_to(a, 0x100, s), b1_handle_to(b, 0x100, s) };
	uint64_t err[2] = { 0, 0 };

	ASSERT_EQ(b1_set_limits(a, 0, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_disconnect(b), 0);
	ASSERT_EQ(send_str(s, BUS1_SEND_FLAG_CONTINUE, d, 2, err, "f"), 0);
	ASSERT_EQ(err[0], EDQUOT);
	ASSERT_EQ(err[1], ESHUTDOWN);
	ASSERT_FALSE(b1_revents(a, POLLIN) & POLLIN);
	b1_expect_empty(a);
}

/* A.2: ptr_errors == 0 is allowed with CONTINUE */
TEST(sendflag_continue_null_errors)
{
	int s = b1_open(), a = b1_open(), dead = b1_open();
	uint64_t d[2] = { b1_handle_to(dead, 0x100, s), b1_handle_to(a, 0x100, s) };

	ASSERT_EQ(b1_disconnect(dead), 0);
	ASSERT_EQ(send_str(s, BUS1_SEND_FLAG_CONTINUE, d, 2, NULL, "n"), 0);
	expect_data(a, 0x100, "n", 0);
}

/* §2.8: an unwritable errors array → EFAULT before anything is committed */
TEST(sendflag_continue_errors_unwritable)
{
	int s = b1_open(), a = b1_open(), dead = b1_open();
	uint64_t d[2] = { b1_handle_to(a, 0x100, s), b1_handle_to(dead, 0x100, s) };
	uint64_t *ro = b1_ro_page();

	ASSERT_EQ(b1_disconnect(dead), 0);
	ASSERT_EQ(send_str(s, BUS1_SEND_FLAG_CONTINUE, d, 2, ro, "w"), -EFAULT);
	ASSERT_EQ(send_str(s, BUS1_SEND_FLAG_CONTINUE, d, 2, b1_bad_ptr(), "w"), -EFAULT);
	/* also when every destination succeeds */
	ASSERT_EQ(send_str(s, BUS1_SEND_FLAG_CONTINUE, d, 1, ro, "w"), -EFAULT);
	ASSERT_FALSE(b1_revents(a, POLLIN) & POLLIN);
	b1_expect_empty(a);
}

/* §2.8: CONTINUE does not soften ENXIO/ENOTUNIQ/EFAULT/EBADF/EMSGSIZE */
TEST(sendflag_continue_fatal_errors)
{
	int s = b1_open(), a = b1_open(), dead = b1_open();
	uint64_t ha = b1_handle_to(a, 0x100, s), hd = b1_handle_to(dead, 0x100, s);
	uint64_t d[3], err[3] = { 9, 9, 9 };
	struct iovec big = { (void *)0x10000, 0x7FFFF001 };
	int badfd = -1;
	const uint64_t f = BUS1_SEND_FLAG_CONTINUE;

	ASSERT_EQ(b1_disconnect(dead), 0);
	d[0] = ha; d[1] = hd; d[2] = 0x3;
	ASSERT_EQ(send_str(s, f, d, 3, err, "x"), -ENXIO);
	d[2] = ha;
	ASSERT_EQ(send_str(s, f, d, 3, err, "x"), -ENOTUNIQ);
	ASSERT_EQ(b1_send(s, f, d, 2, err, NULL, 0, NULL, 0, &badfd, 1), -EBADF);
	ASSERT_EQ(b1_send(s, f, d, 2, err, &big, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	big = (struct iovec){ b1_bad_ptr(), 8 };
	ASSERT_EQ(b1_send(s, f, d, 2, err, &big, 1, NULL, 0, NULL, 0), -EFAULT);
	b1_expect_empty(a);
	/* a failing call with CONTINUE writes no results */
	ASSERT_EQ(err[0], 9);
	ASSERT_EQ(err[1], 9);
	ASSERT_EQ(err[2], 9);
}

/* §2.8: without CONTINUE ptr_errors is never touched */
TEST(sendflag_no_continue_errors_untouched)
{
	int s = b1_open(), a = b1_open(), dead = b1_open();
	uint64_t d[2] = { b1_handle_to(a, 0x100, s), b1_handle_to(dead, 0x100, s) };
	uint64_t err[2] = { 42, 42 };

	ASSERT_EQ(b1_disconnect(dead), 0);
	ASSERT_EQ(send_str(s, 0, d, 2, err, "u"), -ESHUTDOWN);
	ASSERT_EQ(err[0], 42);
	ASSERT_EQ(err[1], 42);
	b1_expect_empty(a);
	/* success without CONTINUE: a read-only array is fine, nothing is written */
	ASSERT_EQ(send_str(s, 0, d, 1, b1_ro_page(), "v"), 0);
	ASSERT_EQ(send_str(s, 0, d, 1, err, "v"), 0);
	ASSERT_EQ(err[0], 42);
	expect_data(a, 0x100, "v", 0);
	expect_data(a, 0x100, "v", 0);
}

/* §3.11 / A.2: a destroyed (but held) node is a success (slot 0) */
TEST(sendflag_continue_destroyed_node_is_success)
{
	int s = b1_open(), a = b1_open(), b = b1_open();
	uint64_t d[2] = { b1_handle_to(a, 0x100, s), b1_handle_to(b, 0x100, s) };
	uint64_t err[2] = { 1, 1 };

	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	ASSERT_EQ(send_str(s, BUS1_SEND_FLAG_CONTINUE, d, 2, err, "d"), 0);
	ASSERT_EQ(err[0], 0);
	ASSERT_EQ(err[1], 0);
	expect_data(b, 0x100, "d", 0);
	expect_destroy(a, 0x100, 0);
	b1_expect_empty(a);
}

/* A.2: with zero destinations the errors array has no slots to write */
TEST(sendflag_continue_zero_destinations)
{
	int a = b1_open();

	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_CONTINUE, NULL, 0, b1_bad_ptr(),
			  NULL, 0, NULL, 0, NULL, 0), 0);
	b1_expect_empty(a);
}

/* A.2: a failing destination on the same receiver as a delivered one */
TEST(sendflag_continue_same_receiver_edquot)
{
	int s = b1_open(), a = b1_open();
	uint64_t d[2] = { b1_handle_to(a, 0x100, s), b1_handle_to(a, 0x200, s) };
	uint64_t err[2] = { 3, 3 };

	ASSERT_EQ(b1_set_limits(a, 2, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(send_str(s, BUS1_SEND_FLAG_CONTINUE, d, 2, err, "s"), 0);
	ASSERT_EQ(err[0], 0);
	ASSERT_EQ(err[1], EDQUOT);
	/* a single entry of the transaction: no CONTINUE */
	expect_data(a, 0x100, "s", 0);
	b1_expect_empty(a);
}

/* A.2: a destination failing at its handle charge gives back its slice charge */
TEST(sendflag_continue_partial_charge_rolled_back)
{
	int s = b1_open(), a = b1_open(), b = b1_open(), o = b1_open();
	uint64_t d[2] = { b1_handle_to(a, 0x100, s), b1_handle_to(b, 0x100, s) };
	uint64_t h = b1_handle_to(o, 0x10, s), err[2];

	ASSERT_EQ(b1_set_limits(a, 2, 1, B1_KEEP32, B1_KEEP32), 0);	/* handles: pin only */
	ASSERT_EQ(b1_send(s, BUS1_SEND_FLAG_CONTINUE, d, 2, err, NULL, 0, &h, 1, NULL, 0), 0);
	ASSERT_EQ(err[0], EDQUOT);
	ASSERT_EQ(err[1], 0);
	b1_expect_empty(a);
	/* a's one slice of fair share is intact */
	ASSERT_EQ(send_str(s, 0, d, 1, NULL, "one"), 0);
	ASSERT_EQ(send_str(s, 0, d, 1, NULL, "two"), -EDQUOT);
}

/*
 * §2.8 steps 9-10 / A.2: the caller's own charge for a new payload node
 * (step 10) concerns no single destination, so even with CONTINUE its
 * EDQUOT fails the whole call: nothing is sent, no result is written.
 */
TEST(sendflag_continue_caller_edquot_fatal)
{
	int s = b1_open(), a = b1_open(), b = b1_open();
	uint64_t d[2] = { b1_handle_to(a, 0x100, s), b1_handle_to(b, 0x100, s) };
	uint64_t p = 0x300, err[2] = { 7, 7 };
	struct iovec v = { "c", 1 };

	/* s holds two handles; a limit of 2 leaves nothing for a new node */
	ASSERT_EQ(b1_set_limits(s, B1_KEEP32, 2, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_send(s, BUS1_SEND_FLAG_CONTINUE, d, 2, err, &v, 1, &p, 1, NULL, 0), -EDQUOT);
	ASSERT_EQ(err[0], 7);
	ASSERT_EQ(err[1], 7);
	b1_expect_empty(a);
	b1_expect_empty(b);
	/* a per-destination failure next to it is still no reason to go on */
	ASSERT_EQ(b1_set_limits(a, 0, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_send(s, BUS1_SEND_FLAG_CONTINUE, d, 2, err, &v, 1, &p, 1, NULL, 0), -EDQUOT);
	ASSERT_EQ(err[0], 7);
	ASSERT_EQ(err[1], 7);
	b1_expect_empty(b);
	/* with one more unit the same call goes through, a's failure reported */
	ASSERT_EQ(b1_set_limits(s, B1_KEEP32, 3, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_send(s, BUS1_SEND_FLAG_CONTINUE, d, 2, err, &v, 1, &p, 1, NULL, 0), 0);
	ASSERT_EQ(err[0], EDQUOT);
	ASSERT_EQ(err[1], 0);
	expect_data(b, 0x100, "c", 0);
	b1_expect_empty(a);
}

/*
 * §2.8 / A.2: failures in step 9 other than ESHUTDOWN/EDQUOT/EXFULL stay
 * fatal under CONTINUE: a slice too large for the pool (9.7), an unreadable
 * destination element (9.1). Nothing is queued, no result is written.
 */
TEST(sendflag_continue_fatal_per_destination)
{
	int s = b1_open(), a = b1_open(), b = b1_open();
	uint64_t ha = b1_handle_to(a, 0x100, s), hb = b1_handle_to(b, 0x100, s);
	uint64_t d[2] = { ha, hb }, err[2] = { 9, 9 };
	uint64_t *edge = b1_edge(8);
	/* a readable zero-filled reservation, never written */
	void *big = mmap(NULL, (1UL << 29) + 4096, PROT_READ,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	struct iovec v = { big, 1UL << 29 };
	const uint64_t f = BUS1_SEND_FLAG_CONTINUE;

	ASSERT_TRUE(big != MAP_FAILED);
	ASSERT_EQ(b1_send(s, f, d, 2, err, &v, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	edge[0] = ha;
	ASSERT_EQ(send_str(s, f, edge, 2, err, "x"), -EFAULT);
	ASSERT_EQ(err[0], 9);
	ASSERT_EQ(err[1], 9);
	b1_expect_empty(a);
	b1_expect_empty(b);
	/* the bus is intact */
	ASSERT_EQ(send_str(s, f, d, 2, err, "ok"), 0);
	expect_data(a, 0x100, "ok", 0);
	expect_data(b, 0x100, "ok", 0);
}

/*
 * §2.8 step 9 runs destination by destination: an earlier destination's
 * EDQUOT is reported before a later element's EFAULT. With CONTINUE that
 * EDQUOT is per-destination, so the EFAULT aborts the call.
 */
TEST(send_destinations_checked_in_order)
{
	int s = b1_open(), q = b1_open();
	uint64_t *edge = b1_edge(8), err[2] = { 9, 9 };

	edge[0] = b1_handle_to(q, 0x100, s);
	ASSERT_EQ(b1_set_slices(q, 0), 0);
	ASSERT_EQ(send_str(s, 0, edge, 2, NULL, "o"), -EDQUOT);
	ASSERT_EQ(send_str(s, BUS1_SEND_FLAG_CONTINUE, edge, 2, err, "o"), -EFAULT);
	ASSERT_EQ(err[0], 9);
	ASSERT_EQ(err[1], 9);
	b1_expect_empty(q);
}
