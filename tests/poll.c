/* SPDX-License-Identifier: MIT */
/*
 * Readiness of a peer fd (§8.2): POLLOUT always while connected,
 * POLLIN iff something is queued, POLLHUP alone once disconnected, through
 * poll, ppoll, select and epoll, including wake-ups of blocked waiters.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>

#include "bus1-util.h"

#define ALL_EV (POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM | POLLPRI)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* §8.2: a fresh connected peer is writable, not readable */
TEST(poll_fresh)
{
	int a = b1_open();

	ASSERT_EQ(b1_revents(a, ALL_EV), POLLOUT | POLLWRNORM);
	ASSERT_EQ(b1_revents(a, POLLIN), 0);
	ASSERT_EQ(b1_revents(a, 0), 0);
}

/* §8.2: a queued message adds POLLIN|POLLRDNORM; RECV of the last entry clears it */
TEST(poll_in_after_message)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(b, h, "1", 1), 0);
	ASSERT_EQ(b1_send_one(b, h, "2", 1), 0);
	ASSERT_EQ(b1_revents(a, ALL_EV), POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM);
	ASSERT_EQ(b1_revents(b, ALL_EV), POLLOUT | POLLWRNORM);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(b1_revents(a, ALL_EV), POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(b1_revents(a, ALL_EV), POLLOUT | POLLWRNORM);
}

/* §8.2: PEEK keeps POLLIN; so does a failed (ERANGE) RECV */
TEST(poll_peek_erange_keep_pollin)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(b, h, "0123456789", 10), 0);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_TRUE(b1_revents(a, POLLIN) & POLLIN);
	memset(&r, 0, sizeof(r));
	r.max_offset = 8;
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, &r), -ERANGE);
	ASSERT_TRUE(b1_revents(a, POLLIN) & POLLIN);
}

/* §8.2: notifications make the queue readable too */
TEST(poll_in_on_notifications)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_release(b, h), 0);
	ASSERT_EQ(b1_revents(a, POLLIN), POLLIN);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_RELEASE);
	ASSERT_EQ(b1_revents(a, POLLIN), 0);
	h = b1_share(a, 0x200, b);
	ASSERT_EQ(b1_destroy_one(a, 0x200), 0);
	ASSERT_EQ(b1_revents(b, POLLIN), POLLIN);
	ASSERT_EQ(b1_revents(a, POLLIN), POLLIN);
}

/* §8.2 / §8.3: disconnected → POLLHUP alone, even with queued messages */
TEST(poll_hup_only)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	int a2 = dup(a);

	ASSERT_GE(a2, 0);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(b1_disconnect(a), 0);
	ASSERT_HUP(b1_revents(a, ALL_EV));
	ASSERT_EQ(b1_revents(a, 0), POLLHUP);
	ASSERT_HUP(b1_revents(a2, POLLIN));
	/* the other side is unaffected */
	ASSERT_EQ(b1_revents(b, POLLOUT | POLLHUP), POLLOUT);
}

/* §8.4 / §8.2: a flushing reset clears POLLIN */
TEST(poll_reset_clears_pollin)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);

	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(b1_revents(a, POLLIN), POLLIN);
	ASSERT_EQ(b1_reset(a, 0), 0);
	ASSERT_EQ(b1_revents(a, POLLIN), POLLIN);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_EQ(b1_revents(a, ALL_EV), POLLOUT | POLLWRNORM);
}

/* §8.2: select() and pselect() see the same readiness */
TEST(select_readiness)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	struct timeval tv = { 0, 0 };
	struct timespec ts = { 0, 0 };
	fd_set rd, wr;

	FD_ZERO(&rd); FD_ZERO(&wr);
	FD_SET(a, &rd); FD_SET(a, &wr);
	ASSERT_EQ(select(a + 1, &rd, &wr, NULL, &tv), 1);
	ASSERT_FALSE(FD_ISSET(a, &rd));
	ASSERT_TRUE(FD_ISSET(a, &wr));
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	FD_ZERO(&rd); FD_ZERO(&wr);
	FD_SET(a, &rd); FD_SET(a, &wr);
	ASSERT_EQ(pselect(a + 1, &rd, &wr, NULL, &ts, NULL), 2);
	ASSERT_TRUE(FD_ISSET(a, &rd));
	ASSERT_TRUE(FD_ISSET(a, &wr));
}

/* §8.2: epoll reports the same, level-triggered; EPOLLHUP after disconnect */
TEST(epoll_readiness)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 42 }, out[4];
	struct bus1_cmd_recv r;

	ASSERT_GE(ep, 0);
	ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
	ASSERT_EQ(epoll_wait(ep, out, 4, 0), 0);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(epoll_wait(ep, out, 4, 0), 1);
	ASSERT_EQ(out[0].events, EPOLLIN);
	ASSERT_EQ_U64(out[0].data.u64, 42);
	/* level-triggered: still there */
	ASSERT_EQ(epoll_wait(ep, out, 4, 0), 1);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(epoll_wait(ep, out, 4, 0), 0);
	ev.events = EPOLLIN | EPOLLOUT;
	ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_MOD, a, &ev));
	ASSERT_EQ(epoll_wait(ep, out, 4, 0), 1);
	ASSERT_EQ(out[0].events, EPOLLOUT);
	ASSERT_EQ(b1_disconnect(a), 0);
	ASSERT_EQ(epoll_wait(ep, out, 4, 0), 1);
	ASSERT_HUP(out[0].events);
}

struct delayed {
	int fd;
	uint64_t dest;
	int what;	/* 0: send, 1: disconnect, 2: release */
};

static void *delayed_op(void *arg)
{
	struct delayed *d = arg;

	usleep(100 * 1000);
	if (d->what == 0)
		b1_send_one(d->fd, d->dest, "wake", 4);
	else if (d->what == 1)
		b1_disconnect(d->fd);
	else
		b1_release(d->fd, d->dest);
	return NULL;
}

/* §8.2: a blocked poll is woken when a message is committed */
TEST(poll_wakes_on_message)
{
	int a = b1_open(), b = b1_open();
	struct delayed d = { b, b1_share(a, 0x100, b), 0 };
	struct pollfd p = { .fd = a, .events = POLLIN };
	pthread_t t;
	double t0 = now();

	ASSERT_OK(pthread_create(&t, NULL, delayed_op, &d));
	ASSERT_EQ(poll(&p, 1, 5000), 1);
	ASSERT_EQ(p.revents, POLLIN);
	ASSERT_LT((now() - t0) * 1000, 3000);
	pthread_join(t, NULL);
}

/* §8.2: a blocked poll is woken by a release notification */
TEST(poll_wakes_on_notification)
{
	int a = b1_open(), b = b1_open();
	struct delayed d = { b, b1_share(a, 0x100, b), 2 };
	struct pollfd p = { .fd = a, .events = POLLIN };
	pthread_t t;

	ASSERT_OK(pthread_create(&t, NULL, delayed_op, &d));
	ASSERT_EQ(poll(&p, 1, 5000), 1);
	ASSERT_EQ(p.revents, POLLIN);
	pthread_join(t, NULL);
}

/* §8.2 / §2.1 step 2: waiters are woken by the disconnect (POLLHUP) */
TEST(poll_wakes_on_disconnect)
{
	int a = b1_open();
	struct delayed d = { a, 0, 1 };
	struct pollfd p = { .fd = a, .events = POLLIN };
	pthread_t t;

	ASSERT_OK(pthread_create(&t, NULL, delayed_op, &d));
	ASSERT_EQ(poll(&p, 1, 5000), 1);
	/* the waiter wakes to POLLHUP alone, never to a POLLIN first */
	ASSERT_HUP(p.revents);
	pthread_join(t, NULL);
}

/* §8.2: epoll_wait and ppoll block and wake too */
TEST(epoll_ppoll_wake)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b);
	struct delayed d = { b, h, 0 };
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN }, out;
	struct pollfd p = { .fd = a, .events = POLLIN };
	struct timespec ts = { 5, 0 };
	struct bus1_cmd_recv r;
	pthread_t t;

	ASSERT_GE(ep, 0);
	ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
	ASSERT_OK(pthread_create(&t, NULL, delayed_op, &d));
	ASSERT_EQ(epoll_wait(ep, &out, 1, 5000), 1);
	ASSERT_EQ(out.events, EPOLLIN);
	pthread_join(t, NULL);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_OK(pthread_create(&t, NULL, delayed_op, &d));
	ASSERT_EQ(ppoll(&p, 1, &ts, NULL), 1);
	ASSERT_EQ(p.revents, POLLIN);
	pthread_join(t, NULL);
}

/* §8.2: with nothing queued a timed poll times out (no spurious readiness) */
TEST(poll_times_out)
{
	int a = b1_open();
	struct pollfd p = { .fd = a, .events = POLLIN };
	double t0 = now();

	ASSERT_EQ(poll(&p, 1, 150), 0);
	ASSERT_GE((now() - t0) * 1000, 100);
	ASSERT_EQ(p.revents, 0);
}

/* §8.2: a disconnected peer's fd in select() is readable (hang-up) */
TEST(select_disconnected)
{
	int a = b1_open();
	struct timeval tv = { 0, 0 };
	fd_set rd;

	ASSERT_EQ(b1_disconnect(a), 0);
	FD_ZERO(&rd);
	FD_SET(a, &rd);
	ASSERT_EQ(select(a + 1, &rd, NULL, NULL, &tv), 1);
	ASSERT_TRUE(FD_ISSET(a, &rd));
}
