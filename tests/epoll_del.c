/* SPDX-License-Identifier: MIT */
/*
 * epoll_ctl(EPOLL_CTL_DEL) racing an epoll_wait on the same set in another
 * thread: the wait reports the peer fd with the data the application gave,
 * or not at all; never anything else (the kernel's item for a peer fd
 * carries the shim's tag, which an event of an item deleted meanwhile must
 * not leak: tokio, for one, takes the data for a pointer).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>

#include "bus1-util.h"

#define APP_DATA 0x1234567ULL

static int ep, peer;
static volatile int stop;
static volatile long stray, seen;

static void *waiter(void *arg)
{
	(void)arg;
	while (!stop) {
		struct epoll_event ev[8];
		int n = epoll_wait(ep, ev, 8, 1);

		for (int i = 0; i < n; i++) {
			if (ev[i].data.u64 == APP_DATA)
				seen++;
			else
				stray++;
		}
	}
	return NULL;
}

TEST_TIMEOUT(epoll_del_racing_a_wait_leaks_no_tag, 60)
{
	int a = b1_open();
	uint64_t h;
	pthread_t t;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = APP_DATA };

	peer = b1_open();
	h = b1_handle_to(peer, 0x100, a);
	ASSERT_EQ(b1_send_one(a, h, "x", 1), 0);
	/* disconnected: its socket reports a hang-up to the kernel's wait too */
	ASSERT_EQ(b1_disconnect(peer), 0);
	ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_TRUE(ep >= 0);
	ASSERT_OK(pthread_create(&t, NULL, waiter, NULL));
	for (int i = 0; i < 20000; i++) {
		ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_ADD, peer, &ev));
		if (i % 4 == 0)
			sched_yield();
		ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_DEL, peer, NULL));
	}
	stop = 1;
	ASSERT_OK(pthread_join(t, NULL));
	printf("    note: %ld events with the application's data, %ld stray\n", (long)seen, (long)stray);
	ASSERT_EQ(stray, 0);
}
