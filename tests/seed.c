/* SPDX-License-Identifier: MIT */
/*
 * Seed messages (§4.9, A.1, §2.8 step 8, §2.9 step 4, §2.3):
 * SEND with SEED replaces the caller's single seed, RECV with SEED returns
 * it like a DATA message (consumed unless PEEK), FLUSH_SEED drops it and a
 * FLUSH without FLUSH_SEED spares it and the nodes it references. The RFC v1
 * ENOTSUPP (524) is never returned.
 */
#define _GNU_SOURCE
#include <sys/syscall.h>

#include "bus1-util.h"

#define ENOTSUPP_KERNEL 524

static int send_seed(int fd, const char *data, const uint64_t *hs, size_t nh,
		     const int *fds, size_t nf)
{
	struct iovec v = { (void *)data, data ? strlen(data) : 0 };

	return b1_send(fd, BUS1_SEND_FLAG_SEED, NULL, 0, NULL, &v, data ? 1 : 0,
		       hs, nh, fds, nf);
}

/* RECV of the seed; checks the payload and that it looks like DATA. */
static struct bus1_cmd_recv recv_seed(int fd, uint64_t flags, const char *data)
{
	static const uint8_t *pool[64];
	struct bus1_cmd_recv r;

	if (!pool[fd])
		pool[fd] = b1_map(fd);
	ASSERT_EQ(b1_recv(fd, &r, BUS1_RECV_FLAG_SEED | flags), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.flags & BUS1_MSG_FLAG_CONTINUE, 0);
	ASSERT_EQ(r.msg.n_bytes, strlen(data));
	ASSERT_MEMEQ(pool[fd] + r.msg.offset, data, strlen(data));
	return r;
}

static void expect_no_seed(int fd)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, BUS1_RECV_FLAG_SEED), -EAGAIN);
	ASSERT_EQ(b1_recv(fd, &r, BUS1_RECV_FLAG_SEED | BUS1_RECV_FLAG_PEEK), -EAGAIN);
}

/* §2.9 step 4: no seed → EAGAIN, also with messages queued */
TEST(seed_none_eagain)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	expect_no_seed(a);
	ASSERT_EQ(b1_send_one(a, 0x100, "queued", 6), 0);
	expect_no_seed(a);
	/* the queued message is untouched */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 6);
}

/* A.1 / §4.9: set, read like DATA from the own pool, consumed */
TEST(seed_send_recv)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	ASSERT_EQ(send_seed(a, "the seed", NULL, 0, NULL, 0), 0);
	r = recv_seed(a, 0, "the seed");
	ASSERT_EQ(r.msg.offset, 0);
	ASSERT_EQ(r.msg.n_handles, 0);
	ASSERT_EQ(r.msg.n_fds, 0);
	ASSERT_EQ(r.msg.uid, getuid());
	ASSERT_EQ(r.msg.gid, getgid());
	ASSERT_EQ(r.msg.pid, getpid());
	ASSERT_EQ(r.msg.tid, syscall(SYS_gettid));
	expect_no_seed(a);
	/* the slice was published like any received one */
	ASSERT_EQ(b1_slice_release(a, 0), 0);
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
}

/* A.1: PEEK leaves the seed in place */
TEST(seed_peek)
{
	int a = b1_open();
	struct bus1_cmd_recv r1, r2;

	ASSERT_EQ(send_seed(a, "persist", NULL, 0, NULL, 0), 0);
	r1 = recv_seed(a, BUS1_RECV_FLAG_PEEK, "persist");
	r2 = recv_seed(a, BUS1_RECV_FLAG_PEEK, "persist");
	ASSERT_EQ(r1.msg.offset, r2.msg.offset);
	r2 = recv_seed(a, 0, "persist");
	ASSERT_EQ(r1.msg.offset, r2.msg.offset);
	expect_no_seed(a);
}

/* A.1: a new seed atomically replaces (and frees) the previous one */
TEST(seed_replace)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	ASSERT_EQ(send_seed(a, "first seed 16 by", NULL, 0, NULL, 0), 0);	/* [0,16) */
	ASSERT_EQ(send_seed(a, "second seed 16 b", NULL, 0, NULL, 0), 0);	/* [16,32) */
	/* the first seed's slice is free again: an equal one reuses offset 0 */
	ASSERT_EQ(send_seed(a, "third seed 16 by", NULL, 0, NULL, 0), 0);
	r = recv_seed(a, 0, "third seed 16 by");
	ASSERT_EQ(r.msg.offset, 0);
	expect_no_seed(a);
	/* and the second one's slice was freed as well */
	ASSERT_EQ(b1_send_one(a, 0x100, "0123456789abcdef", 16), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 16);
}

/* A.1: the seed is not part of the queue: no POLLIN, normal RECV ignores it */
TEST(seed_not_in_queue)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	ASSERT_EQ(send_seed(a, "hidden", NULL, 0, NULL, 0), 0);
	ASSERT_FALSE(b1_revents(a, POLLIN) & POLLIN);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_send_one(a, 0x100, "queued", 6), 0);
	ASSERT_EQ(b1_send_one(a, 0x100, "queued", 6), 0);
	/* the seed never carries CONTINUE, the queue is left alone */
	recv_seed(a, BUS1_RECV_FLAG_PEEK, "hidden");
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 6);
	recv_seed(a, 0, "hidden");
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 6);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}

/* §2.8 step 8: SEED with CONTINUE or with destinations → EINVAL, never 524 */
TEST(seed_einval)
{
	int a = b1_open();
	uint64_t d = 0x100;
	struct iovec v = { "s", 1 };

	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_SEED | BUS1_SEND_FLAG_CONTINUE,
			  NULL, 0, NULL, &v, 1, NULL, 0, NULL, 0), -EINVAL);
	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_SEED, &d, 1, NULL, &v, 1, NULL, 0, NULL, 0), -EINVAL);
	expect_no_seed(a);
	/* the destination was not even looked at: no message to 0x100 */
	ASSERT_EQ(b1_recv(a, &(struct bus1_cmd_recv){ 0 }, 0), -EAGAIN);
	/* zero destinations: the pointer is not read */
	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_SEED, b1_bad_ptr(), 0, b1_bad_ptr(),
			  &v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_NE(b1_send(a, BUS1_SEND_FLAG_SEED, NULL, 0, NULL, &v, 1, NULL, 0, NULL, 0),
		  -ENOTSUPP_KERNEL);
}

/* §4.9: template errors precede the SEED checks; a failure keeps the old seed */
TEST(seed_template_errors_first)
{
	int a = b1_open(), other = b1_open();
	uint64_t d = 0x100, bad_h = 0x1;
	int bad_fd = -1;
	struct iovec badv = { (void *)0xffff880000000000ULL, 1 };
	const uint64_t sc = BUS1_SEND_FLAG_SEED | BUS1_SEND_FLAG_CONTINUE;
	struct bus1_cmd_send s = { .flags = BUS1_SEND_FLAG_SEED | 4 };

	ASSERT_EQ(send_seed(a, "old", NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_SEND, &s), -EINVAL);
	s = (struct bus1_cmd_send){ .flags = sc, .n_vecs = 1025 };
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_SEND, &s), -EMSGSIZE);
	ASSERT_EQ(b1_send(a, sc, &d, 1, NULL, &badv, 1, NULL, 0, NULL, 0), -EFAULT);
	ASSERT_EQ(b1_send(a, sc, &d, 1, NULL, NULL, 0, &bad_h, 1, NULL, 0), -ENXIO);
	ASSERT_EQ(b1_send(a, sc, &d, 1, NULL, NULL, 0, NULL, 0, &bad_fd, 1), -EBADF);
	ASSERT_EQ(b1_send(a, sc, &d, 1, NULL, NULL, 0, NULL, 0, &other, 1), -EOPNOTSUPP);
	/* without CONTINUE/destinations the same template errors apply */
	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_SEED, NULL, 0, NULL, &badv, 1, NULL, 0, NULL, 0), -EFAULT);
	/* unreadable payload bytes: EFAULT while copying */
	badv = (struct iovec){ b1_bad_ptr(), 8 };
	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_SEED, NULL, 0, NULL, &badv, 1, NULL, 0, NULL, 0), -EFAULT);
	recv_seed(a, 0, "old");
}

/* A.1: handles in a seed are installed at RECV like in a DATA message */
TEST(seed_with_handles)
{
	int a = b1_open(), o = b1_open();
	const uint8_t *pool = b1_map(a);
	uint64_t remote = b1_handle_to(o, 0x10, a);
	uint64_t hs[3] = { 0x100, remote, 0x100 }, ids[3];
	struct bus1_cmd_recv r;

	/* 0x100 is created by the seed itself */
	ASSERT_EQ(send_seed(a, "hh", hs, 3, NULL, 0), 0);
	r = recv_seed(a, 0, "hh");
	ASSERT_EQ(r.msg.n_handles, 3);
	memcpy(ids, pool + r.msg.offset + 8, sizeof(ids));
	ASSERT_EQ_U64(ids[0], 0x100);
	ASSERT_EQ_U64(ids[1], remote);
	ASSERT_EQ_U64(ids[2], 0x100);
	/* each entry added a user reference */
	ASSERT_EQ(b1_release(a, 0x100), 0);
	ASSERT_EQ(b1_release(a, 0x100), 0);
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
	ASSERT_EQ(b1_release(a, remote), 0);
	ASSERT_EQ(b1_release(a, remote), 0);
	ASSERT_EQ(b1_release(a, remote), -ENXIO);
}

/* A.1 / §4.4: fds in a seed; PEEK with INSTALL_FDS installs a fresh set each time */
TEST(seed_with_fds)
{
	int a = b1_open(), p[2], got[2];
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;
	char c;

	ASSERT_OK(pipe(p));
	ASSERT_EQ(send_seed(a, "f", NULL, 0, &p[1], 1), 0);
	close(p[1]);
	r = recv_seed(a, BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS, "f");
	ASSERT_EQ(r.msg.n_fds, 1);
	memcpy(&got[0], pool + r.msg.offset + 8, 4);
	r = recv_seed(a, BUS1_RECV_FLAG_INSTALL_FDS, "f");
	memcpy(&got[1], pool + r.msg.offset + 8, 4);
	ASSERT_NE(got[0], got[1]);
	ASSERT_EQ(write(got[0], "1", 1), 1);
	ASSERT_EQ(write(got[1], "2", 1), 1);
	ASSERT_EQ(read(p[0], &c, 1), 1);
	ASSERT_EQ(c, '1');
	ASSERT_EQ(read(p[0], &c, 1), 1);
	ASSERT_EQ(c, '2');
	expect_no_seed(a);
}

/* §2.9 steps 4 and 9: an unwritable RECV struct → EFAULT, and the seed is kept */
TEST(seed_recv_efault_keeps_seed)
{
	int a = b1_open();
	struct bus1_cmd_recv r = { .flags = BUS1_RECV_FLAG_SEED, .max_offset = B1_POOL_SIZE };

	ASSERT_EQ(send_seed(a, "s", NULL, 0, NULL, 0), 0);
	ASSERT_ERRNO(ioctl(a, BUS1_CMD_RECV, b1_straddle(&r, sizeof(r), sizeof(r) - 8, PROT_READ)),
		     EFAULT);
	recv_seed(a, 0, "s");
	expect_no_seed(a);
}

/*
 * §2.9 steps 4, 6.3 and 6.4 on the seed: EMFILE (INSTALL_FDS) and the PEEK
 * handle charge (EDQUOT) fail the RECV, install nothing and keep the seed.
 */
TEST(seed_emfile_edquot_keep_seed)
{
	int a = b1_open(), o = b1_open(), p[2], f[4], low;
	const uint8_t *pool = b1_map(a);
	uint64_t remote = b1_handle_to(o, 0x10, a), id;
	struct bus1_cmd_recv r;
	struct rlimit old;

	ASSERT_OK(pipe(p));
	f[0] = f[1] = f[2] = f[3] = p[1];
	ASSERT_EQ(send_seed(a, "e", &remote, 1, f, 4), 0);
	close(p[1]);
	/* a RECV first, so that any lazily opened state exists; its reference goes again */
	recv_seed(a, BUS1_RECV_FLAG_PEEK, "e");
	ASSERT_EQ(b1_release(a, remote), 0);
	/* room for two more fds, not four */
	low = b1_limit_fd_room(2, &old);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_SEED | BUS1_RECV_FLAG_INSTALL_FDS), -EMFILE);
	ASSERT_EQ(b1_lowest_free_fd(), low);
	ASSERT_OK(setrlimit(RLIMIT_NOFILE, &old));
	/* no handle unit left for the PEEK's reference */
	ASSERT_EQ(b1_set_handles(a, 0), 0);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_SEED | BUS1_RECV_FLAG_PEEK), -EDQUOT);
	ASSERT_EQ(b1_set_handles(a, 65536), 0);
	/* the seed is whole: four fds to the pipe, the handle, the payload */
	r = recv_seed(a, BUS1_RECV_FLAG_INSTALL_FDS, "e");
	ASSERT_EQ(r.msg.n_handles, 1);
	ASSERT_EQ(r.msg.n_fds, 4);
	memcpy(&id, pool + r.msg.offset + 8, 8);
	ASSERT_EQ_U64(id, remote);
	for (int i = 0; i < 4; i++) {
		int fd;

		memcpy(&fd, pool + r.msg.offset + 16 + 4 * i, 4);
		ASSERT_EQ(write(fd, "x", 1), 1);
	}
	expect_no_seed(a);
}

/* §2.3 step 6 / A.1: FLUSH_SEED drops the seed; FLUSH alone keeps it */
TEST(seed_flush_flags)
{
	int a = b1_open();
	struct bus1_cmd_recv r;

	ASSERT_EQ(send_seed(a, "kept", NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	recv_seed(a, BUS1_RECV_FLAG_PEEK, "kept");
	ASSERT_EQ(b1_reset(a, 0), 0);
	recv_seed(a, BUS1_RECV_FLAG_PEEK, "kept");
	/* FLUSH_SEED alone drops the seed but leaves the queue */
	ASSERT_EQ(b1_send_one(a, 0x100, "msg", 3), 0);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH_SEED), 0);
	expect_no_seed(a);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 3);
	/* both flags */
	ASSERT_EQ(send_seed(a, "gone", NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH | BUS1_PEER_RESET_FLAG_FLUSH_SEED), 0);
	expect_no_seed(a);
}

/* §2.3 / A.1: FLUSH spares the nodes the seed references; FLUSH_SEED does not */
TEST(seed_flush_spares_nodes)
{
	int a = b1_open(), b = b1_open();
	uint64_t hn = b1_handle_to(a, 0x100, b), hm = b1_handle_to(a, 0x200, b);
	uint64_t keep = 0x100;
	struct bus1_cmd_recv r;

	ASSERT_EQ(send_seed(a, "n", &keep, 1, NULL, 0), 0);
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	/* only 0x200 was destroyed */
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, hm);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	/* the seed's handle entry is still valid */
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_SEED | BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_EQ(r.msg.n_handles, 1);
	uint64_t id;

	memcpy(&id, b1_map(a) + r.msg.offset + 8, 8);
	ASSERT_NE(id, BUS1_HANDLE_INVALID);
	/* dropping the seed with the flush destroys the node */
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH | BUS1_PEER_RESET_FLAG_FLUSH_SEED), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, hn);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	expect_no_seed(a);
}

/* §4.3 / A.1: ERANGE applies to the seed; it stays */
TEST(seed_erange)
{
	int a = b1_open();
	struct bus1_cmd_recv r = { .flags = BUS1_RECV_FLAG_SEED, .max_offset = 8 };

	ASSERT_EQ(send_seed(a, "more than eight", NULL, 0, NULL, 0), 0);	/* 16 */
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, &r), -ERANGE);
	r = (struct bus1_cmd_recv){ .flags = BUS1_RECV_FLAG_SEED, .max_offset = 16 };
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, &r), 0);
	ASSERT_EQ(r.msg.n_bytes, 15);
	expect_no_seed(a);
}

/* §3.7 / A.1: the seed's handles and files are held until it is dropped */
TEST(seed_holds_references)
{
	int a = b1_open(), o = b1_open(), p[2];
	uint64_t h = b1_handle_to(o, 0x10, a);
	struct bus1_cmd_recv r;
	char c;

	ASSERT_OK(pipe(p));
	ASSERT_OK(fcntl(p[0], F_SETFL, O_NONBLOCK));
	ASSERT_EQ(send_seed(a, "ref", &h, 1, &p[1], 1), 0);
	close(p[1]);
	ASSERT_EQ(b1_release(a, h), 0);
	/* carried by the seed: no NODE_RELEASE yet, the pipe has a writer */
	ASSERT_EQ(b1_recv(o, &r, 0), -EAGAIN);
	ASSERT_ERRNO(read(p[0], &c, 1), EAGAIN);
	/* replacing the seed frees the old one with everything it held */
	ASSERT_EQ(send_seed(a, "new", NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_recv(o, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_RELEASE);
	ASSERT_EQ_U64(r.msg.destination, 0x10);
	ASSERT_EQ(read(p[0], &c, 1), 0);
}

/*
 * §2.9 step 4: with SEED the queue is not looked at: no seed is EAGAIN even
 * when the queue's head would fail with ERANGE, and the head stays.
 */
TEST(seed_flag_ignores_queue_head)
{
	int a = b1_open();
	struct bus1_cmd_recv r = { .flags = BUS1_RECV_FLAG_SEED, .max_offset = 0 };

	ASSERT_EQ(b1_send_one(a, 0x100, "head", 4), 0);
	r.flags = 0;
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, &r), -ERANGE);
	r.flags = BUS1_RECV_FLAG_SEED;
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, &r), -EAGAIN);
	r.flags = BUS1_RECV_FLAG_SEED | BUS1_RECV_FLAG_PEEK;
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, &r), -EAGAIN);
	/* a seed is checked against max_offset on its own */
	ASSERT_EQ(send_seed(a, "seed", NULL, 0, NULL, 0), 0);	/* [8, 16) */
	r = (struct bus1_cmd_recv){ .flags = BUS1_RECV_FLAG_SEED, .max_offset = 15 };
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, &r), -ERANGE);
	r.max_offset = 16;
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, &r), 0);
	ASSERT_EQ(r.msg.offset, 8);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 4);
	ASSERT_EQ(r.msg.offset, 0);
}
