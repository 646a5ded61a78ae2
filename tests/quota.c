/* SPDX-License-Identifier: MIT */
/*
 * Quotas (§6, A.3): defaults, what is charged to whom, the
 * plain rule for transfers/PEEK/node creation, the fair-share rule for
 * message charges (slices, handles, in-flight bytes and fds: allowed iff
 * R >= s + 2c on the receiving user and peer), what dequeue gives back,
 * and limits changed by PEER_RESET (remaining moves by the delta).
 *
 * All peers here belong to one user, so the sending user's share on a
 * receiver is everything queued to it and not yet dequeued.
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "bus1-util.h"



static int send_n(int fd, uint64_t dest, size_t len)
{
	static char buf[1 << 12];

	return b1_send_one(fd, dest, buf, len);
}

static int send_handles(int fd, uint64_t dest, const uint64_t *hs, size_t n)
{
	return b1_send(fd, 0, &dest, 1, NULL, NULL, 0, hs, n, NULL, 0);
}

static int send_fds(int fd, uint64_t dest, const int *fds, size_t n)
{
	return b1_send(fd, 0, &dest, 1, NULL, NULL, 0, NULL, 0, fds, n);
}

static struct bus1_cmd_recv recv_ok(int fd, uint64_t flags)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, flags), 0);
	return r;
}

/* §6.1 / §2.2: a fresh peer reports the user defaults */
TEST(quota_defaults)
{
	int a = b1_open();
	struct bus1_cmd_peer_reset q;

	memset(&q, 0x77, sizeof(q));
	q.flags = 0;
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_PEER_QUERY, &q), 0);
	ASSERT_EQ(q.flags, 0);
	ASSERT_EQ(q.peer_flags, 0);
	ASSERT_EQ(q.max_slices, 16384);
	ASSERT_EQ(q.max_handles, 65536);
	ASSERT_EQ(q.max_inflight_bytes, 16777216);
	ASSERT_EQ(q.max_inflight_fds, 4096);
}

/* §2.3 steps 4-5 / §6.1: PEER_RESET limits, 0..0x7FFFFFFF, all-ones = keep */
TEST(quota_reset_limits_query)
{
	int a = b1_open();
	struct bus1_cmd_peer_reset q;

	ASSERT_EQ(b1_set_limits(a, 0, 7, 0x7FFFFFFF, B1_KEEP32), 0);
	ASSERT_EQ(b1_query(a, &q), 0);
	ASSERT_EQ(q.max_slices, 0);
	ASSERT_EQ(q.max_handles, 7);
	ASSERT_EQ(q.max_inflight_bytes, 0x7FFFFFFF);
	ASSERT_EQ(q.max_inflight_fds, 4096);
	/* out of range → EINVAL, nothing applied */
	ASSERT_EQ(b1_set_limits(a, 1, 1, 1, 0x80000000u), -EINVAL);
	ASSERT_EQ(b1_set_limits(a, 0xFFFFFFFEu, 1, 1, 1), -EINVAL);
	ASSERT_EQ(b1_query(a, &q), 0);
	ASSERT_EQ(q.max_slices, 0);
	ASSERT_EQ(q.max_handles, 7);
	ASSERT_EQ(q.max_inflight_bytes, 0x7FFFFFFF);
	ASSERT_EQ(q.max_inflight_fds, 4096);
}

/* §6.3 / A.3: slices under fair share; dequeue drops the share, not the charge */
TEST(quota_slices_fair_share)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r1, r2;

	ASSERT_EQ(b1_set_limits(b, 4, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(send_n(a, h, 1), 0);		/* R 4 >= 0+2 */
	ASSERT_EQ(send_n(a, h, 1), 0);		/* R 3 >= 1+2 */
	ASSERT_EQ(send_n(a, h, 1), -EDQUOT);	/* R 2 <  2+2 */
	ASSERT_EQ(send_n(a, h, 1), -EDQUOT);	/* a failure changes nothing */
	r1 = recv_ok(b, 0);
	r2 = recv_ok(b, 0);
	ASSERT_EQ(b1_recv(b, &r1, BUS1_RECV_FLAG_PEEK), -EAGAIN);
	/* dequeued: share 0, the two published slices still charged (R 2) */
	ASSERT_EQ(send_n(a, h, 1), 0);		/* R 2 >= 0+2 */
	ASSERT_EQ(send_n(a, h, 1), -EDQUOT);	/* R 1 <  1+2 */
	/* freeing the published slices refunds them */
	ASSERT_EQ(b1_slice_release(b, r2.msg.offset), 0);
	ASSERT_EQ(b1_slice_release(b, 0), 0);
	ASSERT_EQ(send_n(a, h, 1), 0);		/* R 3 >= 1+2 */
	ASSERT_EQ(send_n(a, h, 1), -EDQUOT);	/* R 2 <  2+2 */
}

/* §6.2: the receiver is charged, never the sender; max_slices 0 refuses all */
TEST(quota_slices_charged_to_receiver)
{
	int a = b1_open(), b = b1_open();
	uint64_t ha = b1_handle_to(a, 0x100, b), hb = b1_handle_to(b, 0x100, a);

	ASSERT_EQ(b1_set_limits(b, 0, B1_KEEP32, 0, B1_KEEP32), 0);
	ASSERT_EQ(send_n(a, hb, 1), -EDQUOT);
	ASSERT_EQ(b1_recv(b, &(struct bus1_cmd_recv){ 0 }, 0), -EAGAIN);
	/* b sends freely to others */
	for (int i = 0; i < 10; i++)
		ASSERT_EQ(send_n(b, ha, 16), 0);
	/* but not to itself */
	ASSERT_EQ(send_n(b, 0x100, 1), -EDQUOT);
	ASSERT_EQ(send_n(b, 0x200, 1), -EDQUOT);
	ASSERT_EQ(b1_recv(b, &(struct bus1_cmd_recv){ 0 }, 0), -EAGAIN);
}

/* §6.2 / A.3: n_handles per destination charged to the receiver, fair share */
TEST(quota_handles_charged_to_receiver)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	uint64_t dest = b1_handle_to(b, 0x100, s);	/* b's pin: 1 handle used */
	uint64_t h = b1_handle_to(o, 0x10, s);
	uint64_t hs[5] = { h, h, h, h, h };

	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, 10, B1_KEEP32, B1_KEEP32), 0);	/* R 9 */
	ASSERT_EQ(send_handles(s, dest, hs, 5), -EDQUOT);	/* 9 < 0+10 */
	ASSERT_EQ(send_handles(s, dest, hs, 4), 0);		/* 9 >= 0+8 */
	ASSERT_EQ(send_handles(s, dest, hs, 1), -EDQUOT);	/* 5 < 4+2 */
	/* charging zero handles always succeeds */
	ASSERT_EQ(send_handles(s, dest, hs, 0), 0);
	/* RECV turns the four entries into user references (R stays 5) */
	recv_ok(b, 0);
	recv_ok(b, 0);
	ASSERT_EQ(send_handles(s, dest, hs, 2), 0);		/* 5 >= 0+4 */
	ASSERT_EQ(send_handles(s, dest, hs, 1), -EDQUOT);	/* 3 < 2+2 */
	/* releasing the four references refunds them */
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(b1_release(b, 0xB), 0);
	ASSERT_EQ(b1_release(b, 0xB), -ENXIO);
	ASSERT_EQ(send_handles(s, dest, hs, 2), 0);		/* 7 >= 2+4 */
}

/* §6.2 / §2.5 step 7: HANDLE_TRANSFER charges the destination by the plain rule */
TEST(quota_transfer_plain_rule)
{
	int o = b1_open(), b = b1_open();
	uint64_t h;

	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, 1, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_transfer(o, 0x10, b, &h), 0);	/* R 1 >= 1 */
	ASSERT_EQ(b1_transfer(o, 0x10, b, NULL), -EDQUOT);
	ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), -EDQUOT);
	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ(b1_transfer(o, 0x20, b, &h), 0);
	ASSERT_EQ(b1_transfer(o, 0x10, b, NULL), -EDQUOT);
}

/* §6.2 / §2.5 step 7 / §2.8 step 10: a new node costs its creator one handle */
TEST(quota_node_creation_charges_creator)
{
	int a = b1_open(), b = b1_open();
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_set_limits(a, B1_KEEP32, 0, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, 1, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_transfer(a, 0x100, b, NULL), -EDQUOT);
	/* the destination's charge was undone */
	ASSERT_EQ(b1_transfer(b, 0x100, a, NULL), -EDQUOT);	/* a is full */
	/* with room on a, b's one unit (given back above) pays for its pin */
	ASSERT_EQ(b1_set_limits(a, B1_KEEP32, 1, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(b1_transfer(b, 0x100, a, NULL), 0);
	/* now both are full */
	ASSERT_EQ(b1_transfer(b, 0x104, a, NULL), -EDQUOT);
	/* SEND to a new user-style ID on a full peer: EDQUOT, nothing queued */
	ASSERT_EQ(b1_send_one(a, 0x200, "x", 1), -EDQUOT);
	uint64_t ph = 0x300;
	ASSERT_EQ(b1_send(b, 0, NULL, 0, NULL, NULL, 0, &ph, 1, NULL, 0), -EDQUOT);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
}

/*
 * §6.2: a charge is checked against the user's counter first. With the
 * peer's own maximum raised, the user's 65536 handles run out first; units
 * given back to the user are usable again at once.
 */
TEST(quota_user_counter_runs_out_first)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;
	int n = 1, ret;

	ASSERT_EQ(b1_set_handles(b, 0x7FFFFFFF), 0);
	/* the new node's pin is charged to a, the reference to b */
	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	while ((ret = b1_transfer(a, 0x100, b, NULL)) == 0)
		n++;
	ASSERT_EQ(ret, -EDQUOT);
	/* one pin and n references: the user's whole maximum */
	ASSERT_EQ(n, 65535);
	struct bus1_cmd_peer_reset q;
	ASSERT_EQ(b1_query(b, &q), 0);
	ASSERT_EQ(q.max_handles, 0x7FFFFFFF);
	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ(b1_transfer(a, 0x100, b, NULL), 0);
	ASSERT_EQ(b1_transfer(a, 0x100, b, NULL), -EDQUOT);
}

/* §2.9 step 6.4 / §6.2: PEEK charges each valid entry by the plain rule */
TEST(quota_peek_charges_handles)
{
	int s = b1_open(), b = b1_open(), o = b1_open(), p[2];
	uint64_t dest = b1_handle_to(b, 0x100, s);
	uint64_t h = b1_handle_to(o, 0x10, s);
	struct bus1_cmd_recv r;
	int low;

	ASSERT_OK(pipe(p));
	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, 3, B1_KEEP32, B1_KEEP32), 0);	/* R 2 */
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, NULL, 0, &h, 1, &p[0], 1), 0);	/* R 1 */
	r = recv_ok(b, BUS1_RECV_FLAG_PEEK);	/* +1 reference: R 0 */
	ASSERT_EQ(r.msg.n_handles, 1);
	low = b1_lowest_free_fd();
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_PEEK), -EDQUOT);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS), -EDQUOT);
	/* allocated fd numbers were given back */
	ASSERT_EQ(b1_lowest_free_fd(), low);
	/* a plain RECV converts the message's charge and needs nothing new */
	r = recv_ok(b, 0);
	ASSERT_EQ(r.msg.n_handles, 1);
	ASSERT_EQ(b1_release(b, 0xB), 0);
	ASSERT_EQ(b1_release(b, 0xB), 0);
	ASSERT_EQ(b1_release(b, 0xB), -ENXIO);
	/* everything refunded: two units free again */
	ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), 0);
	ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), 0);
	ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), -EDQUOT);
}

/* §2.3 step 5: lowering a max below usage drives remaining negative */
TEST(quota_reset_below_usage)
{
	int o = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(o, 0x10, b);

	ASSERT_EQ(b1_transfer(o, 0x10, b, NULL), 0);
	ASSERT_EQ(b1_transfer(o, 0x10, b, NULL), 0);	/* 3 references */
	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, 1, B1_KEEP32, B1_KEEP32), 0);	/* R -2 */
	ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), -EDQUOT);
	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ(b1_release(b, h), 0);			/* R 0 */
	ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), -EDQUOT);
	ASSERT_EQ(b1_release(b, h), 0);			/* R 1 */
	ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), 0);
	ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), -EDQUOT);
	/* raising the max moves remaining by the difference */
	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, 4, B1_KEEP32, B1_KEEP32), 0);	/* R 3 */
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), 0);
	ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), -EDQUOT);
}

/* §2.3 step 5: raising max_slices while messages are queued */
TEST(quota_reset_raises_slices)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);

	ASSERT_EQ(b1_set_limits(b, 2, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(send_n(a, h, 1), 0);		/* R 1, share 1 */
	ASSERT_EQ(send_n(a, h, 1), -EDQUOT);
	ASSERT_EQ(b1_set_limits(b, 8, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);	/* R 7 */
	ASSERT_EQ(send_n(a, h, 1), 0);		/* 7 >= 1+2 */
	ASSERT_EQ(send_n(a, h, 1), 0);		/* 6 >= 2+2 */
	ASSERT_EQ(send_n(a, h, 1), 0);		/* 5 >= 3+2 */
	ASSERT_EQ(send_n(a, h, 1), -EDQUOT);	/* 4 <  4+2 */
}

/* §6.3 / A.3: in-flight bytes (slice sizes), given back on dequeue */
TEST(quota_inflight_bytes)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, B1_KEEP32, 64, B1_KEEP32), 0);
	ASSERT_EQ(send_n(a, h, 33), -EDQUOT);	/* slice 40: 64 < 80 */
	ASSERT_EQ(send_n(a, h, 32), 0);		/* 64 >= 64 */
	ASSERT_EQ(send_n(a, h, 1), -EDQUOT);	/* 32 < 32+16 */
	ASSERT_EQ(send_n(a, h, 0), -EDQUOT);	/* an empty message is 8 bytes */
	r = recv_ok(b, 0);
	ASSERT_EQ(r.msg.n_bytes, 32);
	/* dequeued: the bytes are back although the slice is still published */
	ASSERT_EQ(send_n(a, h, 32), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 32);
	/* 63 admits 24 but not 32 */
	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, B1_KEEP32, 63, B1_KEEP32), 0);
	ASSERT_EQ(send_n(a, h, 32), -EDQUOT);
	ASSERT_EQ(send_n(a, h, 24), 0);
}

/*
 * A message of exactly `half` bytes goes from `a` to `r` through `h`, then
 * not even `extra` more bytes do; `r` has that one message queued.
 */
static void expect_half_then_full(int a, uint64_t h, int r, struct iovec *v, size_t half, size_t extra)
{
	struct bus1_cmd_recv m;

	v->iov_len = half;
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 1, NULL, 0, NULL, 0), 0);
	v->iov_len = extra;
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 1, NULL, 0, NULL, 0), -EDQUOT);
	ASSERT_EQ(b1_recv(r, &m, 0), 0);
	ASSERT_EQ(m.msg.n_bytes, half);
	ASSERT_EQ(b1_recv(r, &m, 0), -EAGAIN);
}

/* §6.1 / A.3: default 16 MiB in-flight bytes: one message may take half */
TEST(quota_inflight_bytes_default)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	size_t half = 8u << 20;
	char *buf = malloc(half + 8);
	struct iovec v = { buf, half + 8 };

	ASSERT_TRUE(buf != NULL);
	memset(buf, 1, half + 8);
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EDQUOT);
	expect_half_then_full(a, h, b, &v, half, 1);
}

/* A.3: the user-wide rule: queued bytes on all peers of the user count */
TEST(quota_inflight_bytes_user_wide)
{
	int a = b1_open(), c[3] = { b1_open(), b1_open(), b1_open() };
	uint64_t h[3];
	size_t q = 4u << 20;
	char *buf = calloc(1, q);
	struct iovec v = { buf, q };
	struct bus1_cmd_recv r;

	ASSERT_TRUE(buf != NULL);
	for (int i = 0; i < 3; i++)
		h[i] = b1_handle_to(c[i], 0x100, a);
	/* user: R 16M, s 0 → R 12M, s 4M → R 8M, s 8M */
	ASSERT_EQ(b1_send(a, 0, &h[0], 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_send(a, 0, &h[1], 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	/* a third peer with untouched counters is still refused: 8M < 8M+8M */
	ASSERT_EQ(b1_send(a, 0, &h[2], 1, NULL, &v, 1, NULL, 0, NULL, 0), -EDQUOT);
	/* dequeuing one message gives its bytes back to the user */
	ASSERT_EQ(b1_recv(c[0], &r, 0), 0);
	ASSERT_EQ(b1_send(a, 0, &h[2], 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
}

/* §6.3 / A.3: in-flight fds, given back on dequeue */
TEST(quota_inflight_fds)
{
	int a = b1_open(), b = b1_open(), p[2];
	uint64_t h = b1_handle_to(b, 0x100, a);
	int fds[3];
	struct bus1_cmd_recv r;

	ASSERT_OK(pipe(p));
	fds[0] = fds[1] = fds[2] = p[0];
	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, B1_KEEP32, B1_KEEP32, 4), 0);
	ASSERT_EQ(send_fds(a, h, fds, 3), -EDQUOT);	/* 4 < 6 */
	ASSERT_EQ(send_fds(a, h, fds, 2), 0);		/* 4 >= 4 */
	ASSERT_EQ(send_fds(a, h, fds, 1), -EDQUOT);	/* 2 < 2+2 */
	ASSERT_EQ(send_fds(a, h, fds, 0), 0);		/* zero always fits */
	r = recv_ok(b, 0);
	ASSERT_EQ(r.msg.n_fds, 2);
	ASSERT_EQ(send_fds(a, h, fds, 2), 0);
	/* max 0: no fd at all, plain messages still pass */
	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, B1_KEEP32, B1_KEEP32, 0), 0);
	ASSERT_EQ(send_fds(a, h, fds, 1), -EDQUOT);
	ASSERT_EQ(send_n(a, h, 1), 0);
}

/* §2.8 end: failed SENDs leave every counter as it was */
TEST(quota_failed_send_changes_nothing)
{
	int a = b1_open(), b = b1_open(), dead = b1_open(), p[2];
	uint64_t d[2] = { b1_handle_to(b, 0x100, a), b1_handle_to(dead, 0x100, a) };
	uint64_t o = b1_handle_to(dead, 0x200, a);
	int fds[2];
	struct iovec v = { "0123456789abcdef", 16 };

	ASSERT_OK(pipe(p));
	fds[0] = fds[1] = p[1];
	ASSERT_EQ(b1_set_limits(b, 2, 5, 80, 4), 0);	/* b's pin: handles R 4 */
	ASSERT_EQ(b1_disconnect(dead), 0);
	for (int i = 0; i < 20; i++)
		ASSERT_EQ(b1_send(a, 0, d, 2, NULL, &v, 1, &o, 1, fds, 2), -ESHUTDOWN);
	/* exactly the full budget is available: 2 handles, 32 bytes, 2 fds */
	uint64_t hs[2] = { o, o };
	/* slice 16+16+8 = 40: 80 >= 0+80 bytes, 4 >= 0+4 handles and fds */
	ASSERT_EQ(b1_send(a, 0, d, 1, NULL, &v, 1, hs, 2, fds, 2), 0);
	ASSERT_EQ(b1_send(a, 0, d, 1, NULL, NULL, 0, NULL, 0, NULL, 0), -EDQUOT);
}

/* §2.3 step 6 / §6.2: a flushing reset refunds what queued messages held */
TEST(quota_flush_refunds)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_peer_reset rs = {
		.flags = BUS1_PEER_RESET_FLAG_FLUSH, .peer_flags = (uint64_t)-1,
		.max_slices = 6, .max_handles = B1_KEEP32,
		.max_inflight_bytes = B1_KEEP32, .max_inflight_fds = B1_KEEP32,
	};

	ASSERT_EQ(b1_set_limits(b, 4, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	ASSERT_EQ(send_n(a, h, 1), 0);
	ASSERT_EQ(send_n(a, h, 1), 0);
	ASSERT_EQ(send_n(a, h, 1), -EDQUOT);
	/* flush and new limit in one call: both apply */
	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_PEER_RESET, &rs), 0);
	ASSERT_EQ(b1_query(b, &rs), 0);
	ASSERT_EQ(rs.max_slices, 6);
	h = b1_handle_to(b, 0x200, a);
	ASSERT_EQ(send_n(a, h, 1), 0);		/* 6 >= 2 */
	ASSERT_EQ(send_n(a, h, 1), 0);		/* 5 >= 3 */
	ASSERT_EQ(send_n(a, h, 1), 0);		/* 4 >= 4 */
	ASSERT_EQ(send_n(a, h, 1), -EDQUOT);	/* 3 <  5 */
}

/* §6.2: RECV converts entry charges; a later transfer sees the right budget */
TEST(quota_recv_converts_charges)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	uint64_t dest = b1_handle_to(b, 0x100, s);
	uint64_t hs[2] = { b1_handle_to(o, 0x10, s), b1_handle_to(o, 0x20, s) };

	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, 5, B1_KEEP32, B1_KEEP32), 0);	/* pin: R 4 */
	ASSERT_EQ(send_handles(s, dest, hs, 2), 0);		/* R 2 */
	recv_ok(b, 0);						/* still R 2 */
	ASSERT_EQ(b1_transfer(o, 0x30, b, NULL), 0);
	ASSERT_EQ(b1_transfer(o, 0x30, b, NULL), 0);
	ASSERT_EQ(b1_transfer(o, 0x30, b, NULL), -EDQUOT);
	ASSERT_EQ(b1_release(b, 0xB), 0);			/* first received */
	ASSERT_EQ(b1_transfer(o, 0x30, b, NULL), 0);
	ASSERT_EQ(b1_transfer(o, 0x30, b, NULL), -EDQUOT);
}

/* §2.9 step 6.2 / §6.2: INVALID entries give their handle charge back */
TEST(quota_invalid_entries_refunded)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	uint64_t dest = b1_handle_to(b, 0x100, s);
	uint64_t gone = b1_handle_to(o, 0x10, s);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_destroy_one(o, 0x10), 0);
	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, 3, B1_KEEP32, B1_KEEP32), 0);	/* pin: R 2 */
	ASSERT_EQ(send_handles(s, dest, &gone, 1), 0);		/* R 1 */
	r = recv_ok(b, 0);
	ASSERT_EQ(r.msg.n_handles, 1);
	/* the INVALID entry's unit came back: two transfers fit */
	ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), 0);
	ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), 0);
	ASSERT_EQ(b1_transfer(o, 0x20, b, NULL), -EDQUOT);
}

/* A.3: the charges of one SEND accumulate on a receiver owning several nodes */
TEST(quota_multicast_same_receiver_accumulates)
{
	int a = b1_open(), b = b1_open();
	uint64_t d[3] = { b1_handle_to(b, 0x100, a), b1_handle_to(b, 0x200, a),
			  b1_handle_to(b, 0x300, a) };
	struct iovec v = { "m", 1 };

	ASSERT_EQ(b1_set_limits(b, 4, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	/* 4 >= 0+2, 3 >= 1+2, 2 < 2+2: the whole call fails */
	ASSERT_EQ(b1_send(a, 0, d, 3, NULL, &v, 1, NULL, 0, NULL, 0), -EDQUOT);
	ASSERT_EQ(b1_recv(b, &(struct bus1_cmd_recv){ 0 }, 0), -EAGAIN);
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_send(a, 0, d + 2, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EDQUOT);
}

/* §2.9 step 5 / §6.2: discarding a stale message refunds slice and handles */
TEST(quota_discard_refunds)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	uint64_t dest = b1_handle_to(b, 0x100, s), h = b1_handle_to(o, 0x10, s);
	uint64_t hs[2] = { h, h }, id = 0x100;
	struct bus1_cmd_recv r;

	/* b holds only what the test gives it: pin of 0x100 */
	ASSERT_EQ(b1_set_limits(b, 2, 5, B1_KEEP32, B1_KEEP32), 0);	/* handles R 4 */
	ASSERT_EQ(send_handles(s, dest, hs, 2), 0);		/* slices 1, handles 2 */
	ASSERT_EQ(send_handles(s, dest, hs, 1), -EDQUOT);
	ASSERT_EQ(b1_destroy(b, &id, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);	/* message and DESTROY discarded */
	/* all back: 2 slices, 5 handles (the pin went too) */
	dest = b1_handle_to(b, 0x200, s);				/* pin: R 4 */
	ASSERT_EQ(send_handles(s, dest, hs, 2), 0);
}

/* §2.3 step 6.3 / §6.2: a flush refunds the handle entries of queued messages */
TEST(quota_flush_refunds_handles)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	uint64_t dest = b1_handle_to(b, 0x100, s), h = b1_handle_to(o, 0x10, s);
	uint64_t hs[3] = { h, h, h };

	ASSERT_EQ(b1_set_limits(b, B1_KEEP32, 7, B1_KEEP32, B1_KEEP32), 0);	/* R 6 */
	ASSERT_EQ(send_handles(s, dest, hs, 3), 0);		/* 6 >= 6: R 3 */
	ASSERT_EQ(send_handles(s, dest, hs, 1), -EDQUOT);
	ASSERT_EQ(b1_reset(b, BUS1_PEER_RESET_FLAG_FLUSH), 0);	/* R 7 */
	dest = b1_handle_to(b, 0x200, s);				/* R 6 */
	ASSERT_EQ(send_handles(s, dest, hs, 3), 0);
}

/* §8.6 / A.3: a disconnected receiver gives its in-flight bytes back to the user */
TEST(quota_disconnect_refunds_user)
{
	int a = b1_open(), c1 = b1_open(), c2 = b1_open();
	uint64_t h1 = b1_handle_to(c1, 0x100, a), h2 = b1_handle_to(c2, 0x100, a);
	size_t half = 8u << 20;
	char *buf = calloc(1, half);
	struct iovec v = { buf, half };

	ASSERT_TRUE(buf != NULL);
	ASSERT_EQ(b1_send(a, 0, &h1, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
	/* the user has 8 MiB left with an 8 MiB share: nothing more fits */
	v.iov_len = 8;
	ASSERT_EQ(b1_send(a, 0, &h2, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EDQUOT);
	ASSERT_EQ(b1_disconnect(c1), 0);
	v.iov_len = half;
	ASSERT_EQ(b1_send(a, 0, &h2, 1, NULL, &v, 1, NULL, 0, NULL, 0), 0);
}

/* Opens a peer accounted to the user `uid` (real UID at open, §3.1). */
static int open_as(uid_t uid)
{
	int fd;

	ASSERT_OK(setresuid(uid, 0, 0));
	fd = b1_open();
	ASSERT_OK(setresuid(0, 0, 0));
	return fd;
}

/* A.3 / §6.3: a flooding user is stopped at its share; another user still gets in */
TEST(quota_fair_share_between_users)
{
	int r, root_s, x_s;
	uint64_t hr, hx;

	if (geteuid() != 0)
		t_skip("needs root to take other user IDs");
	r = b1_open();
	root_s = b1_open();
	x_s = open_as(4321);
	hr = b1_handle_to(r, 0x100, root_s);
	hx = b1_handle_to(r, 0x100, x_s);
	ASSERT_EQ(b1_set_limits(r, 8, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
	/* user 4321: 8>=0+2, 7>=1+2, 6>=2+2, 5>=3+2, then 4 < 4+2 */
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(send_n(x_s, hx, 1), 0);
	ASSERT_EQ(send_n(x_s, hx, 1), -EDQUOT);
	/* the receiver's own user still has a share: 4>=0+2, 3>=1+2, 2 < 2+2 */
	ASSERT_EQ(send_n(root_s, hr, 1), 0);
	ASSERT_EQ(send_n(root_s, hr, 1), 0);
	ASSERT_EQ(send_n(root_s, hr, 1), -EDQUOT);
	ASSERT_EQ(send_n(x_s, hx, 1), -EDQUOT);
	/* dequeuing user 4321's messages lowers only its share */
	for (int i = 0; i < 4; i++) {
		struct bus1_cmd_recv m = recv_ok(r, 0);

		ASSERT_EQ(b1_slice_release(r, m.msg.offset), 0);
	}
	/* R 6 (two root messages queued), user 4321 share 0: 6 >= 0+2 */
	ASSERT_EQ(send_n(x_s, hx, 1), 0);
	ASSERT_EQ(send_n(root_s, hr, 1), 0);	/* 5 >= 2+2 */
	ASSERT_EQ(send_n(root_s, hr, 1), -EDQUOT);	/* 4 < 3+2 */
}

/*
 * §6.2 / A.3: a charge that passes the user rule but fails the peer rule is
 * EDQUOT with nothing changed: the user's counters keep no trace of it.
 */
TEST(quota_peer_edquot_leaves_user_unchanged)
{
	int a = b1_open(), c1 = b1_open(), c2 = b1_open(), p[2];
	uint64_t h1 = b1_handle_to(c1, 0x100, a), h2 = b1_handle_to(c2, 0x100, a);
	size_t half = 8u << 20;
	char *buf = calloc(1, half);
	struct iovec v = { buf, half };
	struct bus1_cmd_recv r;
	int fds[2];

	ASSERT_TRUE(buf != NULL);
	ASSERT_OK(pipe(p));
	fds[0] = fds[1] = p[0];
	/* c1 admits no in-flight bytes and no fds */
	ASSERT_EQ(b1_set_limits(c1, B1_KEEP32, B1_KEEP32, 0, 0), 0);
	for (int i = 0; i < 50; i++) {
		ASSERT_EQ(send_n(a, h1, 8), -EDQUOT);
		ASSERT_EQ(b1_send(a, 0, &h1, 1, NULL, &v, 1, NULL, 0, fds, 2), -EDQUOT);
	}
	ASSERT_EQ(b1_recv(c1, &r, 0), -EAGAIN);
	/* exactly half of the user's 16 MiB still fits: the user holds nothing */
	expect_half_then_full(a, h2, c2, &v, half, 8);
}
