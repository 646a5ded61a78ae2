/* SPDX-License-Identifier: MIT */
/*
 * Global ordering as seen from one process (§7, §3.7, §3.8):
 * FIFO per queue, identical relative order of multicasts on every common
 * receiver (also with concurrent senders), messages versus NODE_DESTROY,
 * NODE_RELEASE production, withholding and withdrawal, and reset (7.8).
 */
#include <pthread.h>

#include "bus1-util.h"

static const uint8_t *pool_of(int fd)
{
	static const uint8_t *pool[256];

	ASSERT_LT(fd, 256);
	if (!pool[fd])
		pool[fd] = b1_map(fd);
	return pool[fd];
}

/* Next entry is DATA; returns its first u32 of payload. */
static uint32_t recv_u32(int fd)
{
	struct bus1_cmd_recv r;
	uint32_t v;

	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.n_bytes, 4);
	memcpy(&v, pool_of(fd) + r.msg.offset, 4);
	ASSERT_EQ(b1_slice_release(fd, r.msg.offset), 0);
	return v;
}

/* Next entry is DATA with n handles; copies the IDs out. */
static void recv_ids(int fd, uint64_t *ids, size_t n)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.n_handles, n);
	memcpy(ids, pool_of(fd) + r.msg.offset + (r.msg.n_bytes + 7) / 8 * 8, 8 * n);
}

static void expect_note(int fd, uint64_t type, uint64_t dest)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, type);
	ASSERT_EQ_U64(r.msg.destination, dest);
}

static int send_u32(int fd, const uint64_t *d, size_t n, uint32_t v)
{
	struct iovec iv = { &v, 4 };

	return b1_send(fd, 0, d, n, NULL, &iv, 1, NULL, 0, NULL, 0);
}

static int send_carry(int fd, uint64_t dest, uint64_t h)
{
	return b1_send(fd, 0, &dest, 1, NULL, NULL, 0, &h, 1, NULL, 0);
}

/* §7.1 (3): one queue is FIFO, also across senders in causal order */
TEST(order_fifo)
{
	int a = b1_open(), s1 = b1_open(), s2 = b1_open();
	uint64_t h1 = b1_handle_to(a, 0x100, s1), h2 = b1_handle_to(a, 0x100, s2);

	for (uint32_t i = 0; i < 300; i++)
		ASSERT_EQ(send_u32(i % 3 ? s1 : s2, i % 3 ? &h1 : &h2, 1, i), 0);
	for (uint32_t i = 0; i < 300; i++)
		ASSERT_EQ(recv_u32(a), i);
	b1_expect_empty(a);
}

struct mc_args {
	int fd;
	uint64_t d[2];
	uint32_t tag;
	int n;
	int err;
};

static void *mc_thread(void *p)
{
	struct mc_args *m = p;

	for (int i = 0; i < m->n && !m->err; i++)
		m->err = send_u32(m->fd, m->d, 2, m->tag | (uint32_t)i);
	return NULL;
}

/* §7.1 (4): concurrent multicasts are seen in the same order by both receivers */
TEST(order_concurrent_multicasts_agree)
{
	int a = b1_open(), b = b1_open();
	struct mc_args m[3];
	pthread_t t[3];
	const int n = 300;
	static uint32_t seq_a[900], seq_b[900];
	int next[3] = { 0, 0, 0 };

	for (int i = 0; i < 3; i++) {
		m[i].fd = b1_open();
		m[i].d[0] = b1_handle_to(a, 0x100, m[i].fd);
		m[i].d[1] = b1_handle_to(b, 0x100, m[i].fd);
		m[i].tag = (uint32_t)i << 24;
		m[i].n = n;
		m[i].err = 0;
	}
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, mc_thread, &m[i]), 0);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(pthread_join(t[i], NULL), 0);
		ASSERT_EQ(m[i].err, 0);
	}
	for (int i = 0; i < 3 * n; i++) {
		seq_a[i] = recv_u32(a);
		seq_b[i] = recv_u32(b);
		ASSERT_EQ(seq_a[i], seq_b[i]);
		/* and each sender's messages stay in its order */
		ASSERT_EQ(seq_a[i] & 0xFFFFFF, next[seq_a[i] >> 24]++);
	}
	b1_expect_empty(a);
	b1_expect_empty(b);
}

struct destroy_race {
	int fd;
	uint64_t d[2];
	volatile int stop;
	int sent;
	int err;
};

static void *stream_thread(void *p)
{
	struct destroy_race *s = p;

	while (!s->stop && !s->err && s->sent < 3000)
		s->err = send_u32(s->fd, s->d, 2, (uint32_t)s->sent++);
	return NULL;
}

/* Position of the NODE_DESTROY within a stream of DATA messages. */
static int destroy_position(int fd, uint64_t h, int total)
{
	struct bus1_cmd_recv r;
	int pos = -1, seen = 0;

	while (b1_recv(fd, &r, 0) == 0) {
		if (r.msg.type == BUS1_MSG_NODE_DESTROY) {
			ASSERT_EQ(pos, -1);
			ASSERT_EQ_U64(r.msg.destination, h);
			pos = seen;
			continue;
		}
		ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
		uint32_t v;

		memcpy(&v, pool_of(fd) + r.msg.offset, 4);
		ASSERT_EQ(v, seen);
		seen++;
		ASSERT_EQ(b1_slice_release(fd, r.msg.offset), 0);
	}
	ASSERT_EQ(seen, total);
	return pos;
}

/* §7.1 (4, 5): a destruction lands at the same place in both receivers' streams */
TEST(order_destroy_within_multicast_stream)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t ha = b1_handle_to(c, 0x10, a), hb = b1_handle_to(c, 0x10, b);
	struct destroy_race s = { .fd = b1_open() };
	pthread_t t;
	int pa, pb, before, after;

	s.d[0] = b1_handle_to(a, 0x100, s.fd);
	s.d[1] = b1_handle_to(b, 0x100, s.fd);
	ASSERT_EQ(pthread_create(&t, NULL, stream_thread, &s), 0);
	while (s.sent < 50 && !s.err)
		usleep(100);
	before = s.sent - 1;	/* messages 0 .. before-1 have completed */
	ASSERT_EQ(b1_destroy_one(c, 0x10), 0);
	after = s.sent;		/* messages from here on start later */
	usleep(2000);
	s.stop = 1;
	ASSERT_EQ(pthread_join(t, NULL), 0);
	ASSERT_EQ(s.err, 0);
	pa = destroy_position(a, ha, s.sent);
	pb = destroy_position(b, hb, s.sent);
	ASSERT_EQ(pa, pb);
	/* and consistently with causality (§7.1 (1)) */
	ASSERT_GE(pa, before);
	ASSERT_LE(pa, after);
}

/* §3.8 / §7.1 (5): a message ordered before the destruction comes first */
TEST(order_message_then_destroy)
{
	int a = b1_open(), s = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, s);

	ASSERT_EQ(send_u32(s, &h, 1, 1), 0);
	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	ASSERT_EQ(send_u32(s, &h, 1, 2), 0);	/* after: discarded */
	ASSERT_EQ(recv_u32(a), 1);
	expect_note(a, BUS1_MSG_NODE_DESTROY, 0x100);
	b1_expect_empty(a);
	expect_note(s, BUS1_MSG_NODE_DESTROY, h);
	b1_expect_empty(s);
}

/* §3.9 / §7.7: carried handles are valid iff the message precedes the destruction */
TEST(order_carried_handle_around_destruction)
{
	int a = b1_open(), s = b1_open(), c = b1_open();
	uint64_t dest = b1_handle_to(a, 0x100, s), hm = b1_handle_to(c, 0x10, s);
	uint64_t id;

	ASSERT_EQ(send_carry(s, dest, hm), 0);
	ASSERT_EQ(b1_destroy_one(c, 0x10), 0);
	ASSERT_EQ(send_carry(s, dest, hm), 0);
	recv_ids(a, &id, 1);
	ASSERT_EQ_U64(id, 0xB);
	expect_note(a, BUS1_MSG_NODE_DESTROY, 0xB);
	recv_ids(a, &id, 1);
	ASSERT_EQ_U64(id, BUS1_HANDLE_INVALID);
	b1_expect_empty(a);
}

/* §3.8: NODE_DESTROY is dropped if the holder released the handle meanwhile */
TEST(order_destroy_dropped_after_release)
{
	int a = b1_open(), s = b1_open(), c = b1_open();
	uint64_t dest = b1_handle_to(a, 0x100, s), hm = b1_handle_to(c, 0x10, s);
	uint64_t id;

	ASSERT_EQ(send_carry(s, dest, hm), 0);
	ASSERT_EQ(b1_destroy_one(c, 0x10), 0);
	recv_ids(a, &id, 1);
	ASSERT_EQ_U64(id, 0xB);
	ASSERT_EQ(b1_release(a, 0xB), 0);
	b1_expect_empty(a);
}

/* §3.7 / §7.4: NODE_RELEASE is ordered after earlier messages */
TEST(order_release_after_data)
{
	int a = b1_open(), s = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, s);

	ASSERT_EQ(send_u32(s, &h, 1, 7), 0);
	ASSERT_EQ(b1_release(s, h), 0);
	ASSERT_EQ(recv_u32(a), 7);
	expect_note(a, BUS1_MSG_NODE_RELEASE, 0x100);
	b1_expect_empty(a);
	/* the sender's ID is gone */
	ASSERT_EQ(send_u32(s, &h, 1, 8), -ENXIO);
}

/* §3.7 / §0.1 (9): withheld while a queued message carries the node */
TEST(order_release_withheld_while_carried)
{
	int a = b1_open(), s = b1_open(), c = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, s), hc = b1_handle_to(c, 0x100, s);
	uint64_t id;

	ASSERT_EQ(send_carry(s, hc, h), 0);
	ASSERT_EQ(b1_release(s, h), 0);
	b1_expect_empty(a);
	/* the receiver's reference is taken before the message's is dropped */
	recv_ids(c, &id, 1);
	ASSERT_EQ_U64(id, 0xB);
	b1_expect_empty(a);
	ASSERT_EQ(b1_release(c, 0xB), 0);
	expect_note(a, BUS1_MSG_NODE_RELEASE, 0x100);
	b1_expect_empty(a);
}

/* §3.7: discarding the carrying message (flush) releases the node */
TEST(order_release_when_carrier_discarded)
{
	int a = b1_open(), s = b1_open(), c = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, s), hc = b1_handle_to(c, 0x100, s);

	ASSERT_EQ(send_carry(s, hc, h), 0);
	ASSERT_EQ(b1_release(s, h), 0);
	b1_expect_empty(a);
	ASSERT_EQ(b1_reset(c, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	expect_note(a, BUS1_MSG_NODE_RELEASE, 0x100);
	b1_expect_empty(a);
}

/* §3.7: a pending NODE_RELEASE is withdrawn when the count goes 0 → 1 again */
TEST(order_release_withdrawn_by_transfer)
{
	int a = b1_open(), s = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, s);

	ASSERT_EQ(b1_release(s, h), 0);
	ASSERT_TRUE(b1_revents(a, POLLIN) & POLLIN);
	h = b1_handle_to(a, 0x100, s);
	ASSERT_EQ_U64(h, 0x13);	/* a new handle, a new ID */
	b1_expect_empty(a);
	/* and produced anew on the next 1 → 0 */
	ASSERT_EQ(b1_release(s, h), 0);
	expect_note(a, BUS1_MSG_NODE_RELEASE, 0x100);
	b1_expect_empty(a);
}

/* §3.7 / §3.8: destruction withdraws a pending NODE_RELEASE */
TEST(order_release_withdrawn_by_destroy)
{
	int a = b1_open(), s = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, s);

	ASSERT_EQ(b1_release(s, h), 0);
	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	expect_note(a, BUS1_MSG_NODE_DESTROY, 0x100);
	b1_expect_empty(a);
}

/* §3.7: after a NODE_RELEASE was dequeued a later 1 → 0 queues a new one */
TEST(order_release_again_after_dequeue)
{
	int a = b1_open(), s = b1_open();

	for (int i = 0; i < 3; i++) {
		uint64_t h = b1_handle_to(a, 0x100, s);

		ASSERT_EQ(b1_release(s, h), 0);
		expect_note(a, BUS1_MSG_NODE_RELEASE, 0x100);
		b1_expect_empty(a);
	}
	/* the owner's own extra references count too */
	ASSERT_EQ(b1_transfer(a, 0x100, -1, NULL), 0);
	ASSERT_EQ(b1_release(a, 0x100), 0);
	expect_note(a, BUS1_MSG_NODE_RELEASE, 0x100);
	b1_expect_empty(a);
	/* never for a node that was created and never shared */
	ASSERT_EQ(b1_send_one(a, 0x200, "x", 1), 0);
	ASSERT_EQ(b1_recv(a, &(struct bus1_cmd_recv){ 0 }, 0), 0);
	b1_expect_empty(a);
}

/* §7.8: a flushing reset drops what came before, not what comes after */
TEST(order_reset_boundary)
{
	int a = b1_open(), s = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, s);

	ASSERT_EQ(send_u32(s, &h, 1, 1), 0);
	ASSERT_EQ(send_u32(s, &h, 1, 2), 0);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	b1_expect_empty(a);
	h = b1_handle_to(a, 0x200, s);
	ASSERT_EQ(send_u32(s, &h, 1, 3), 0);
	ASSERT_EQ(recv_u32(a), 3);
	b1_expect_empty(a);
}

/* §7.1 (1): causality through a third peer */
TEST(order_causal_relay)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t ac = b1_handle_to(c, 0x100, a), ab = b1_handle_to(b, 0x100, a);
	uint64_t bc = b1_handle_to(c, 0x100, b);

	ASSERT_EQ(send_u32(a, &ac, 1, 1), 0);
	ASSERT_EQ(send_u32(a, &ab, 1, 2), 0);
	ASSERT_EQ(recv_u32(b), 2);
	ASSERT_EQ(send_u32(b, &bc, 1, 3), 0);
	ASSERT_EQ(recv_u32(c), 1);
	ASSERT_EQ(recv_u32(c), 3);
}

/* §8.6: messages of a departed sender are still delivered, then NODE_DESTROY */
TEST(order_sender_disconnected_after_send)
{
	int a = b1_open(), s = b1_open();
	uint64_t dest = b1_handle_to(a, 0x100, s), id;
	struct bus1_cmd_recv r;
	pid_t me = getpid();

	ASSERT_EQ(send_carry(s, dest, 0x500), 0);	/* s's own new node */
	ASSERT_EQ(b1_disconnect(s), 0);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.pid, me);
	recv_ids(a, &id, 1);
	ASSERT_EQ_U64(id, 0xB);		/* ordered before the destruction: valid */
	expect_note(a, BUS1_MSG_NODE_DESTROY, 0xB);
	/* s's handle to 0x100 was dropped after its nodes were destroyed (§2.3 step 6) */
	expect_note(a, BUS1_MSG_NODE_RELEASE, 0x100);
	b1_expect_empty(a);
	ASSERT_EQ(b1_send_one(a, 0xB, "x", 1), -ESHUTDOWN);
}
