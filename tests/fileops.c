/* SPDX-License-Identifier: MIT */
/*
 * File operations the module does not provide on a peer fd (§1.1): read and
 * write fail with EINVAL, llseek is a no-op that succeeds, and none of them
 * disturbs the peer's queue or readiness.
 */
#include <sys/uio.h>

#include "bus1-util.h"

/* §1.1: read/write → EINVAL */
TEST(read_write_einval)
{
	int fd = b1_open();
	char buf[16] = "x";
	struct iovec v = { buf, sizeof(buf) };

	ASSERT_ERRNO(read(fd, buf, sizeof(buf)), EINVAL);
	ASSERT_ERRNO(write(fd, buf, sizeof(buf)), EINVAL);
	ASSERT_ERRNO(readv(fd, &v, 1), EINVAL);
	ASSERT_ERRNO(writev(fd, &v, 1), EINVAL);
	ASSERT_ERRNO(pread(fd, buf, sizeof(buf), 0), EINVAL);
	ASSERT_ERRNO(pwrite(fd, buf, sizeof(buf), 0), EINVAL);
}

/* §1.1: llseek is a no-op that succeeds */
TEST(lseek_noop)
{
	int fd = b1_open();

	ASSERT_EQ(lseek(fd, 100, SEEK_SET), 0);
	ASSERT_EQ(lseek(fd, 0, SEEK_END), 0);
	ASSERT_EQ(lseek(fd, 5, SEEK_CUR), 0);
}

/* read() on a peer with a queued message neither consumes it nor clears POLLIN */
TEST(read_leaves_queue_alone)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;
	struct bus1_cmd_recv r;
	char buf[64];

	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	ASSERT_EQ(b1_send_one(b, h, "hello", 5), 0);
	ASSERT_TRUE(b1_revents(a, POLLIN) & POLLIN);
	ASSERT_ERRNO(read(a, buf, sizeof(buf)), EINVAL);
	ASSERT_TRUE(b1_revents(a, POLLIN) & POLLIN);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.n_bytes, 5);
}

/* Other descriptors are untouched by the interposition */
TEST(plain_fds_pass_through)
{
	int p[2];
	char c = 0;

	(void)b1_open();
	ASSERT_OK(pipe(p));
	ASSERT_EQ(write(p[1], "z", 1), 1);
	ASSERT_EQ(read(p[0], &c, 1), 1);
	ASSERT_EQ(c, 'z');
	ASSERT_ERRNO(lseek(p[0], 0, SEEK_SET), ESPIPE);
}
