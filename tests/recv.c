/* SPDX-License-Identifier: MIT */
/*
 * RECV (§2.9): validation in order, what is reported for data
 * messages and notifications, PEEK, max_offset/ERANGE (4.3), EAGAIN, and
 * that a failing RECV leaves the message queued and writes nothing back.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include "bus1-util.h"

/* RECV with an explicit max_offset, msg pre-filled with a pattern. */
static int recv_at(int fd, struct bus1_cmd_recv *r, uint64_t flags, uint64_t max_offset)
{
	memset(r, 0xA5, sizeof(*r));
	r->flags = flags;
	r->max_offset = max_offset;
	return b1_ioctl(fd, BUS1_CMD_RECV, r);
}

/* The msg part still holds the 0xA5 pattern: nothing was written back. */
static void assert_untouched(const struct bus1_cmd_recv *r)
{
	uint8_t pat[sizeof(r->msg)];

	memset(pat, 0xA5, sizeof(pat));
	ASSERT_MEMEQ(&r->msg, pat, sizeof(pat));
}

/* §2.9 step 1: unreadable argument → EFAULT; the message stays queued */
TEST(recv_efault_argument)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, 0x100, "m", 1), 0);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, NULL), -EFAULT);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, b1_bad_ptr()), -EFAULT);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, b1_edge(95)), -EFAULT);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 1);
	/* EFAULT also on an empty queue (step 1 precedes step 5) */
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, NULL), -EFAULT);
}

/* §2.9 step 2: flags other than PEEK|SEED|INSTALL_FDS → EINVAL */
TEST(recv_einval_flags)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	/* before EAGAIN of an empty queue */
	ASSERT_EQ(recv_at(a, &r, 8, B1_POOL_SIZE), -EINVAL);
	assert_untouched(&r);
	ASSERT_EQ(b1_send_one(a, 0x100, "m", 1), 0);
	ASSERT_EQ(recv_at(a, &r, 8, B1_POOL_SIZE), -EINVAL);
	ASSERT_EQ(recv_at(a, &r, 1ULL << 63, B1_POOL_SIZE), -EINVAL);
	ASSERT_EQ(recv_at(a, &r, BUS1_RECV_FLAG_PEEK | 0x10, B1_POOL_SIZE), -EINVAL);
	assert_untouched(&r);
	/* the message is still there; all three valid flags together are fine */
	ASSERT_EQ(recv_at(a, &r, BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS,
			  B1_POOL_SIZE), 0);
	ASSERT_EQ(r.msg.n_bytes, 1);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
}

/* §2.9 step 5: empty queue → EAGAIN, nothing written */
TEST(recv_eagain_empty)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	ASSERT_EQ(recv_at(a, &r, 0, B1_POOL_SIZE), -EAGAIN);
	assert_untouched(&r);
	ASSERT_EQ(recv_at(a, &r, BUS1_RECV_FLAG_PEEK, B1_POOL_SIZE), -EAGAIN);
	ASSERT_EQ(recv_at(a, &r, BUS1_RECV_FLAG_INSTALL_FDS, 0), -EAGAIN);
	/* after the only message was consumed */
	ASSERT_EQ(b1_send_one(a, 0x100, "m", 1), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(recv_at(a, &r, 0, B1_POOL_SIZE), -EAGAIN);
	assert_untouched(&r);
	ASSERT_FALSE(b1_revents(a, POLLIN) & POLLIN);
}

/* §2.9 step 6.7 / §4.2 / §4.6 / §10.3: every field of a DATA message */
TEST(recv_data_fields)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x1000, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, h, "hello", 5), 0);
	ASSERT_EQ(recv_at(b, &r, 0, B1_POOL_SIZE), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.flags, 0);
	/* the receiver's node ID, not the sender's handle 0xB */
	ASSERT_EQ_U64(r.msg.destination, 0x1000);
	ASSERT_EQ(r.msg.uid, getuid());
	ASSERT_EQ(r.msg.gid, getgid());
	ASSERT_EQ(r.msg.pid, getpid());
	ASSERT_EQ(r.msg.tid, syscall(SYS_gettid));
	ASSERT_EQ_U64(r.msg.offset, 0);
	ASSERT_EQ(r.msg.n_bytes, 5);
	ASSERT_EQ(r.msg.n_handles, 0);
	ASSERT_EQ(r.msg.n_fds, 0);
	ASSERT_EQ(r.msg.n_secctx, 0);
}

static int thread_fd;
static uint64_t thread_dest;
static long thread_tid;

static void *thread_send(void *arg)
{
	thread_tid = syscall(SYS_gettid);
	return (void *)(intptr_t)b1_send_one(thread_fd, thread_dest, "t", 1);
}

/* §4.6: pid/tid are those of the task calling SEND, not of the peer's opener */
TEST(recv_tid_of_sending_thread)
{
	int a = b1_open(), b = b1_open();
	struct bus1_cmd_recv r;
	pthread_t t;
	void *ret;

	thread_fd = a;
	thread_dest = b1_handle_to(b, 0x100, a);
	ASSERT_EQ(pthread_create(&t, NULL, thread_send, NULL), 0);
	ASSERT_EQ(pthread_join(t, &ret), 0);
	ASSERT_EQ((intptr_t)ret, 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.pid, getpid());
	ASSERT_EQ(r.msg.tid, thread_tid);
	ASSERT_NE(r.msg.tid, getpid());
	ASSERT_EQ(r.msg.uid, getuid());
	ASSERT_EQ(r.msg.gid, getgid());
}

/* §2.9 step 1: the input msg contents are ignored */
TEST(recv_input_msg_ignored)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, 0x100, "abc", 3), 0);
	memset(&r, 0xFF, sizeof(r));
	r.flags = 0;
	r.max_offset = B1_POOL_SIZE;
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, &r), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.flags, 0);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_EQ(r.msg.offset, 0);
	ASSERT_EQ(r.msg.n_bytes, 3);
	ASSERT_EQ(r.msg.n_handles, 0);
	ASSERT_EQ(r.msg.n_fds, 0);
	ASSERT_EQ(r.msg.n_secctx, 0);
}

/* §2.9 PEEK: the message stays queued; PEEK and RECV report the same slice */
TEST(recv_peek_keeps_message)
{
	int a = b1_open();
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv p1, p2, r;

	ASSERT_EQ(b1_send_one(a, 0x100, "first", 5), 0);
	ASSERT_EQ(b1_send_one(a, 0x100, "second", 6), 0);
	ASSERT_EQ(b1_recv(a, &p1, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_EQ(b1_recv(a, &p2, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_TRUE(b1_revents(a, POLLIN) & POLLIN);
	ASSERT_MEMEQ(&p1.msg, &p2.msg, sizeof(p1.msg));
	ASSERT_EQ(p1.msg.n_bytes, 5);
	ASSERT_MEMEQ(pool + p1.msg.offset, "first", 5);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_MEMEQ(&r.msg, &p1.msg, sizeof(r.msg));
	/* now the second one is at the head */
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_EQ(r.msg.n_bytes, 6);
	ASSERT_EQ(r.msg.offset, 8);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 6);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}

/* §2.9 step 7: PEEK of a notification leaves it queued */
TEST(recv_peek_notification)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_destroy_one(b, 0x100), 0);
	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_PEEK), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
		ASSERT_EQ_U64(r.msg.destination, h);
	}
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}

/* §2.9 step 7 / §4.6: every field of NODE_DESTROY */
TEST(recv_node_destroy_fields)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_destroy_one(b, 0x100), 0);
	/* max_offset is not checked for notifications */
	ASSERT_EQ(recv_at(a, &r, 0, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ(r.msg.flags, 0);
	ASSERT_EQ_U64(r.msg.destination, h);
	ASSERT_EQ(r.msg.uid, 0xFFFFFFFFu);
	ASSERT_EQ(r.msg.gid, 0xFFFFFFFFu);
	ASSERT_EQ(r.msg.pid, 0);
	ASSERT_EQ(r.msg.tid, 0);
	ASSERT_EQ_U64(r.msg.offset, BUS1_OFFSET_INVALID);
	ASSERT_EQ(r.msg.n_bytes, 0);
	ASSERT_EQ(r.msg.n_handles, 0);
	ASSERT_EQ(r.msg.n_fds, 0);
	ASSERT_EQ(r.msg.n_secctx, 0);
	/* the owner's own notification names its node ID */
	ASSERT_EQ(recv_at(b, &r, 0, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_EQ_U64(r.msg.offset, BUS1_OFFSET_INVALID);
}

/* §2.9 step 7 / §3.7: every field of NODE_RELEASE */
TEST(recv_node_release_fields)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_release(a, h), 0);
	ASSERT_EQ(recv_at(b, &r, 0, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_RELEASE);
	ASSERT_EQ(r.msg.flags, 0);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_EQ(r.msg.uid, 0xFFFFFFFFu);
	ASSERT_EQ(r.msg.gid, 0xFFFFFFFFu);
	ASSERT_EQ(r.msg.pid, 0);
	ASSERT_EQ(r.msg.tid, 0);
	ASSERT_EQ_U64(r.msg.offset, BUS1_OFFSET_INVALID);
	ASSERT_EQ(r.msg.n_bytes, 0);
	ASSERT_EQ(r.msg.n_handles, 0);
	ASSERT_EQ(r.msg.n_fds, 0);
	ASSERT_EQ(r.msg.n_secctx, 0);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
}

/* §4.3: slice end beyond max_offset → ERANGE, nothing written, stays queued */
TEST(recv_erange)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, 0x100, "hello", 5), 0);	/* slice [0, 8) */
	ASSERT_EQ(recv_at(a, &r, 0, 0), -ERANGE);
	assert_untouched(&r);
	ASSERT_EQ(recv_at(a, &r, 0, 7), -ERANGE);
	assert_untouched(&r);
	ASSERT_EQ(recv_at(a, &r, BUS1_RECV_FLAG_PEEK, 5), -ERANGE);
	assert_untouched(&r);
	ASSERT_TRUE(b1_revents(a, POLLIN) & POLLIN);
	/* equality is allowed */
	ASSERT_EQ(recv_at(a, &r, 0, 8), 0);
	ASSERT_EQ(r.msg.n_bytes, 5);
	ASSERT_EQ(r.msg.offset, 0);
	/* the next slice is [8, 16) */
	ASSERT_EQ(b1_send_one(a, 0x100, "x", 1), 0);
	ASSERT_EQ(recv_at(a, &r, 0, 15), -ERANGE);
	ASSERT_EQ(recv_at(a, &r, 0, 16), 0);
	ASSERT_EQ(r.msg.offset, 8);
}

/* §4.3 / §2.9 step 6.1: the whole slice counts, handles and fds included */
TEST(recv_erange_whole_slice)
{
	int a = b1_open(), p[2];
	uint64_t h = 0x100;
	struct iovec v = { "x", 1 };
	struct bus1_cmd_recv r;

	ASSERT_OK(pipe(p));
	/* 1 byte + 1 handle + 1 fd: 8 + 8 + 8 = 24 bytes */
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, &v, 1, &h, 1, &p[0], 1), 0);
	ASSERT_EQ(recv_at(a, &r, 0, 8), -ERANGE);
	ASSERT_EQ(recv_at(a, &r, 0, 16), -ERANGE);
	ASSERT_EQ(recv_at(a, &r, 0, 23), -ERANGE);
	assert_untouched(&r);
	ASSERT_EQ(recv_at(a, &r, 0, 24), 0);
	ASSERT_EQ(r.msg.n_bytes, 1);
	ASSERT_EQ(r.msg.n_handles, 1);
	ASSERT_EQ(r.msg.n_fds, 1);
}

/* §4.3: ERANGE installs no fd and no handle reference; later RECV works */
TEST(recv_erange_installs_nothing)
{
	int a = b1_open(), b = b1_open(), p[2];
	uint64_t h = b1_handle_to(b, 0x100, a);
	uint64_t hb = b1_handle_to(a, 0x200, b);
	struct iovec v = { "x", 1 };
	struct bus1_cmd_recv r;
	int low;

	ASSERT_OK(pipe(p));
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, &v, 1, &h, 1, &p[1], 1), 0);
	close(p[1]);
	/* prime whatever the RECV path needs, then take the fd baseline */
	ASSERT_EQ(b1_send_one(b, hb, "w", 1), 0);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	low = b1_lowest_free_fd();
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(recv_at(b, &r, BUS1_RECV_FLAG_INSTALL_FDS, 8), -ERANGE);
	ASSERT_EQ(recv_at(b, &r, BUS1_RECV_FLAG_INSTALL_FDS | BUS1_RECV_FLAG_PEEK, 8), -ERANGE);
	ASSERT_EQ(b1_lowest_free_fd(), low);
	/* no user reference was added: the node's own handle still has only the pin */
	ASSERT_EQ(b1_release(b, 0x100), -EBUSY);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	ASSERT_EQ(r.msg.n_handles, 1);
	ASSERT_EQ(r.msg.n_fds, 1);
	ASSERT_EQ(b1_release(b, 0x100), 0);
	ASSERT_EQ(b1_release(b, 0x100), -EBUSY);
}

/* §4.3: an ERANGE head blocks the queue until retried with a larger max_offset */
TEST(recv_erange_blocks_queue)
{
	int a = b1_open();
	struct bus1_cmd_recv r;
	char big[64] = "big";

	ASSERT_EQ(b1_send_one(a, 0x100, big, sizeof(big)), 0);	/* [0, 64) */
	ASSERT_EQ(b1_send_one(a, 0x100, "s", 1), 0);		/* [64, 72) */
	ASSERT_EQ(recv_at(a, &r, 0, 32), -ERANGE);
	ASSERT_EQ(recv_at(a, &r, 0, 32), -ERANGE);
	ASSERT_EQ(recv_at(a, &r, 0, B1_POOL_SIZE), 0);
	ASSERT_EQ(r.msg.n_bytes, 64);
	ASSERT_EQ(recv_at(a, &r, 0, 72), 0);
	ASSERT_EQ(r.msg.n_bytes, 1);
	ASSERT_EQ(r.msg.offset, 64);
}

/* §2.9 step 9: an unwritable struct → EFAULT; the shim keeps the message */
TEST(recv_efault_on_writeback)
{
	int a = b1_open();
	struct bus1_cmd_recv *ro;
	struct bus1_cmd_recv r;
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_TRUE(p != MAP_FAILED);
	ro = p;
	memset(ro, 0, sizeof(*ro));
	ro->max_offset = B1_POOL_SIZE;
	ASSERT_OK(mprotect(p, 4096, PROT_READ));
	ASSERT_EQ(b1_send_one(a, 0x100, "keep", 4), 0);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, ro), -EFAULT);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 4);
}

/* §2.0 / §8.3: RECV on a disconnected peer → ESHUTDOWN before any check */
TEST(recv_on_disconnected_peer)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, 0x100, "m", 1), 0);
	ASSERT_EQ(b1_disconnect(a), 0);
	ASSERT_EQ(recv_at(a, &r, 0xFF, 0), -ESHUTDOWN);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, NULL), -ESHUTDOWN);
	ASSERT_EQ(b1_recv(a, &r, 0), -ESHUTDOWN);
}

/* §2.9 steps 6.2/6.6 / §3.3 / §10.2: payload handles get kernel IDs in order, usable */
TEST(recv_installs_handles)
{
	int s = b1_open(), r1 = b1_open(), o = b1_open();
	const uint8_t *pool = b1_map(r1);
	uint64_t dest = b1_handle_to(r1, 0x100, s);
	uint64_t hs[3] = { b1_handle_to(o, 0x10, s), b1_handle_to(o, 0x20, s), 0 };
	uint64_t ids[3];
	struct iovec v = { "abc", 3 };
	struct bus1_cmd_recv r;

	hs[2] = hs[0];
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, &v, 1, hs, 3, NULL, 0), 0);
	ASSERT_EQ(b1_recv(r1, &r, 0), 0);
	ASSERT_EQ(r.msg.n_handles, 3);
	/* IDs at A(3) = 8, assigned in array order: 0xB, 0x13, and 0xB again */
	memcpy(ids, pool + r.msg.offset + 8, sizeof(ids));
	ASSERT_EQ_U64(ids[0], 0xB);
	ASSERT_EQ_U64(ids[1], 0x13);
	ASSERT_EQ_U64(ids[2], 0xB);
	/* the received IDs work as destinations (the owner sees its own node IDs) */
	ASSERT_EQ(b1_send_one(r1, ids[1], "to20", 4), 0);
	ASSERT_EQ(b1_recv(o, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.destination, 0x20);
	/* 0xB carries two user references */
	ASSERT_EQ(b1_release(r1, 0xB), 0);
	ASSERT_EQ(b1_release(r1, 0xB), 0);
	ASSERT_EQ(b1_release(r1, 0xB), -ENXIO);
}

/* §2.9 step 5: a message to a node the receiver released is discarded */
TEST(recv_discards_message_to_released_node)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	uint64_t id = 0x100;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, h, "queued", 6), 0);
	/* destroyed after the message: it would be delivered; but released too */
	ASSERT_EQ(b1_destroy(b, &id, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	/* its slice was freed without being published */
	ASSERT_EQ(b1_slice_release(b, 0), -ENXIO);
	ASSERT_EQ(b1_send_one(b, 0x200, "n", 1), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 0);
}

/* §2.9: RECV after a flushing reset finds nothing */
TEST(recv_after_flush)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(a, h, "1", 1), 0);
	ASSERT_EQ(b1_send_one(a, h, "2", 1), 0);
	ASSERT_EQ(b1_reset(b, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	/* the sender's handle saw the node destroyed */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, h);
}

/* §2.9 PEEK / §10.7: every PEEK installs again; re-receiving a published slice works */
TEST(recv_peek_installs_each_time)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t dest = b1_handle_to(b, 0x100, s), h = b1_handle_to(o, 0x10, s), id;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, NULL, 0, &h, 1, NULL, 0), 0);
	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_PEEK), 0);
		memcpy(&id, pool + r.msg.offset, 8);
		ASSERT_EQ_U64(id, 0xB);
	}
	/* the slice is still published from the PEEKs: RECV must succeed */
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.n_handles, 1);
	memcpy(&id, pool + r.msg.offset, 8);
	ASSERT_EQ_U64(id, 0xB);
	/* three installations, three user references */
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(b1_release(b, 0xB), 0);
	ASSERT_EQ(b1_release(b, 0xB), -ENXIO);
}

/* §2.9 step 6.2: an ID assigned by a RECV that then fails stays with the handle */
TEST(recv_failed_peek_keeps_assigned_id)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t dest = b1_handle_to(b, 0x100, s), h = b1_handle_to(o, 0x10, s);
	uint64_t hs[2] = { h, h }, ids[2];
	struct bus1_cmd_peer_reset lim = {
		.peer_flags = (uint64_t)-1, .max_slices = 0xFFFFFFFFu,
		.max_handles = 4, .max_inflight_bytes = 0xFFFFFFFFu,
		.max_inflight_fds = 0xFFFFFFFFu,
	};
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, NULL, 0, hs, 2, NULL, 0), 0);
	/* usage 3 (pin + two entries), max 4: one unit left, PEEK needs two */
	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_PEER_RESET, &lim), 0);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_PEEK), -EDQUOT);
	/* 0xB went to o's node 0x10 during the failed PEEK */
	ASSERT_EQ_U64(b1_handle_to(o, 0x20, b), 0x13);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	memcpy(ids, pool + r.msg.offset, 16);
	ASSERT_EQ_U64(ids[0], 0xB);
	ASSERT_EQ_U64(ids[1], 0xB);
}

/* §4.3 / §2.9 step 6.1: ERANGE comes before any handle gets an ID */
TEST(recv_erange_assigns_no_id)
{
	int s = b1_open(), b = b1_open(), o = b1_open();
	const uint8_t *pool = b1_map(b);
	uint64_t dest = b1_handle_to(b, 0x100, s), h = b1_handle_to(o, 0x10, s), id;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, NULL, 0, &h, 1, NULL, 0), 0);
	ASSERT_EQ(recv_at(b, &r, 0, 4), -ERANGE);
	ASSERT_EQ(recv_at(b, &r, BUS1_RECV_FLAG_PEEK, 4), -ERANGE);
	/* the counter was not used: the next exposure gets the first ID */
	ASSERT_EQ_U64(b1_handle_to(o, 0x20, b), 0xB);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	memcpy(&id, pool + r.msg.offset, 8);
	ASSERT_EQ_U64(id, 0x13);
}

/* §2.9 step 9: a struct whose tail is read-only → EFAULT; notification kept */
TEST(recv_efault_partially_writable)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv *tail, r = { .max_offset = B1_POOL_SIZE };

	/* bytes 0..87 writable, the last 8 (msg.n_secctx) on a read-only page */
	tail = b1_straddle(&r, sizeof(r), 88, PROT_READ);
	ASSERT_EQ(b1_destroy_one(b, 0x100), 0);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, tail), -EFAULT);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, h);
	/* a DATA message likewise */
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);	/* b's own */
	ASSERT_EQ(b1_send_one(b, 0x200, "d", 1), 0);
	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_RECV, tail), -EFAULT);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.n_bytes, 1);
}

/*
 * §2.9 steps 6.1, 6.3 and 6.4: ERANGE before EMFILE before the PEEK handle
 * charge (EDQUOT). Each failure installs nothing and keeps the message.
 */
TEST(recv_erange_emfile_edquot_order)
{
	int s = b1_open(), b = b1_open(), o = b1_open(), p[2], low;
	uint64_t dest = b1_handle_to(b, 0x100, s), h = b1_handle_to(o, 0x10, s);
	struct bus1_cmd_peer_reset lim = {
		.peer_flags = (uint64_t)-1, .max_slices = 0xFFFFFFFFu,
		.max_handles = 3, .max_inflight_bytes = 0xFFFFFFFFu,
		.max_inflight_fds = 0xFFFFFFFFu,
	};
	struct iovec v = { "x", 1 };
	struct bus1_cmd_recv r;
	struct rlimit old;
	const uint64_t pf = BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS;

	ASSERT_OK(pipe(p));
	/* a first message through the whole RECV path, fds included */
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, &v, 1, NULL, 0, &p[0], 1), 0);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	ASSERT_OK(b1_slice_release(b, r.msg.offset));
	memcpy(&low, (const uint8_t *)b1_map(b) + r.msg.offset + 8, 4);
	ASSERT_OK(close(low));
	/* 1 byte, 1 handle, 1 fd: a 24-byte slice at offset 0 */
	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_PEER_RESET, &lim), 0);	/* pin: R 2 */
	ASSERT_EQ(b1_send(s, 0, &dest, 1, NULL, &v, 1, &h, 1, &p[0], 1), 0);	/* R 1 */
	lim.max_handles = 2;
	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_PEER_RESET, &lim), 0);	/* R 0 */
	/* no fd number left for the process */
	low = b1_limit_fd_room(0, &old);
	ASSERT_EQ(recv_at(b, &r, pf, 23), -ERANGE);
	assert_untouched(&r);
	ASSERT_EQ(recv_at(b, &r, BUS1_RECV_FLAG_INSTALL_FDS, 23), -ERANGE);
	ASSERT_EQ(recv_at(b, &r, pf, B1_POOL_SIZE), -EMFILE);
	assert_untouched(&r);
	ASSERT_EQ(recv_at(b, &r, BUS1_RECV_FLAG_INSTALL_FDS, B1_POOL_SIZE), -EMFILE);
	/* without INSTALL_FDS no fd number is needed: the charge decides */
	ASSERT_EQ(recv_at(b, &r, BUS1_RECV_FLAG_PEEK, B1_POOL_SIZE), -EDQUOT);
	ASSERT_OK(setrlimit(RLIMIT_NOFILE, &old));
	ASSERT_EQ(recv_at(b, &r, pf, B1_POOL_SIZE), -EDQUOT);
	assert_untouched(&r);
	ASSERT_EQ(b1_lowest_free_fd(), low);
	/* the message is intact: a plain RECV takes it with its handle and fd */
	ASSERT_EQ(recv_at(b, &r, BUS1_RECV_FLAG_INSTALL_FDS, 24), 0);
	ASSERT_EQ_U64(r.msg.offset, 0);
	ASSERT_EQ(r.msg.n_handles, 1);
	ASSERT_EQ(r.msg.n_fds, 1);
	ASSERT_EQ(b1_release(b, 0xB), 0);
	ASSERT_EQ(b1_release(b, 0xB), -ENXIO);
}

/* Rewrites flags and max_offset of a RECV struct on a read-only page. */
static void set_ro(struct bus1_cmd_recv *ro, uint64_t flags, uint64_t max_offset)
{
	ASSERT_OK(mprotect(ro, 4096, PROT_READ | PROT_WRITE));
	memset(ro, 0, sizeof(*ro));
	ro->flags = flags;
	ro->max_offset = max_offset;
	ASSERT_OK(mprotect(ro, 4096, PROT_READ));
}

/*
 * §2.9 steps 2, 4, 5, 6.1 and 9: EINVAL, EAGAIN and ERANGE come before the
 * write-back, so a read-only struct gets those errnos and not EFAULT; only
 * a deliverable message or notification meets EFAULT, and it stays queued.
 */
TEST(recv_errors_before_writeback_efault)
{
	int a = b1_open();
	struct bus1_cmd_recv *ro, r;

	ro = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(ro != MAP_FAILED);
	set_ro(ro, 8, B1_POOL_SIZE);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, ro), -EINVAL);
	set_ro(ro, 0, B1_POOL_SIZE);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, ro), -EAGAIN);
	set_ro(ro, BUS1_RECV_FLAG_SEED, B1_POOL_SIZE);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, ro), -EAGAIN);
	ASSERT_EQ(b1_send_one(a, 0x100, "keep", 4), 0);
	set_ro(ro, BUS1_RECV_FLAG_PEEK, 7);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, ro), -ERANGE);
	set_ro(ro, 0, 7);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, ro), -ERANGE);
	set_ro(ro, 0, 8);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, ro), -EFAULT);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 4);
	ASSERT_EQ(r.msg.offset, 0);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	/* a notification is not consumed by a RECV that cannot report it */
	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	set_ro(ro, 0, 0);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, ro), -EFAULT);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}
