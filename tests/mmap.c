/* SPDX-License-Identifier: MIT */
/*
 * mmap of the receive pool (§5.4): read-only only, the generic
 * mmap rules for offset and access mode, ESHUTDOWN after disconnect, mappings
 * at offsets and beyond the pool, and mappings outliving the peer.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "bus1-util.h"

static uint64_t recv_offset(int fd, uint64_t n_bytes)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.n_bytes, n_bytes);
	return r.msg.offset;
}

static int open_dev(int flags)
{
	int fd = open(b1_device(), flags | O_CLOEXEC);

	if (fd < 0)
		t_fail(__FILE__, __LINE__, "open(%s, 0x%x): %s", b1_device(), flags, strerror(errno));
	return fd;
}

/* §5.4: read-only mappings, shared or private, work and show the pool */
TEST(mmap_readonly_ok)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;
	uint8_t *s = mmap(NULL, 4096, PROT_READ, MAP_SHARED, a, 0);
	uint8_t *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, a, 0);

	ASSERT_TRUE(s != MAP_FAILED);
	ASSERT_TRUE(p != MAP_FAILED);
	ASSERT_EQ(b1_send_one(b, h, "visible", 7), 0);
	off = recv_offset(a, 7);
	ASSERT_EQ_U64(off, 0);
	ASSERT_MEMEQ(s, "visible", 7);
	ASSERT_OK(munmap(s, 4096));
	ASSERT_OK(munmap(p, 4096));
}

/* §5.4: any write access → EPERM (shared or private) */
TEST(mmap_write_eperm)
{
	int a = b1_open();

	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0) == MAP_FAILED);
	ASSERT_EQ(errno, EPERM);
	ASSERT_TRUE(mmap(NULL, 4096, PROT_WRITE, MAP_SHARED, a, 0) == MAP_FAILED);
	ASSERT_EQ(errno, EPERM);
	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, a, 0) == MAP_FAILED);
	ASSERT_EQ(errno, EPERM);
	ASSERT_TRUE(mmap(NULL, B1_POOL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, a, 4096) == MAP_FAILED);
	ASSERT_EQ(errno, EPERM);
}

/* §5.4: a later mprotect(PROT_WRITE) on a pool mapping → EACCES */
TEST(mmap_mprotect_write_eacces)
{
	int a = b1_open();
	void *s = mmap(NULL, 8192, PROT_READ, MAP_SHARED, a, 0);
	void *p = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, a, 0);

	ASSERT_TRUE(s != MAP_FAILED);
	ASSERT_TRUE(p != MAP_FAILED);
	ASSERT_ERRNO(mprotect(s, 4096, PROT_READ | PROT_WRITE), EACCES);
	ASSERT_ERRNO(mprotect(p, 8192, PROT_READ | PROT_WRITE), EACCES);
	/* lowering to PROT_NONE and back to PROT_READ is fine */
	ASSERT_OK(mprotect(s, 4096, PROT_NONE));
	ASSERT_OK(mprotect(s, 4096, PROT_READ));
	ASSERT_EQ(((volatile uint8_t *)s)[0], 0);
}

/* §5.4: normal mmap rules: unaligned offset and zero length → EINVAL */
TEST(mmap_generic_einval)
{
	int a = b1_open();

	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ, MAP_SHARED, a, 8) == MAP_FAILED);
	ASSERT_EQ(errno, EINVAL);
	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ, MAP_SHARED, a, 100) == MAP_FAILED);
	ASSERT_EQ(errno, EINVAL);
	ASSERT_TRUE(mmap(NULL, 0, PROT_READ, MAP_SHARED, a, 0) == MAP_FAILED);
	ASSERT_EQ(errno, EINVAL);
}

/* §5.4 / §1.1: the fd needs read access → EACCES on an O_WRONLY peer */
TEST(mmap_wronly_eacces)
{
	int w = open_dev(O_WRONLY), r = open_dev(O_RDONLY);
	void *p;

	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ, MAP_SHARED, w, 0) == MAP_FAILED);
	ASSERT_EQ(errno, EACCES);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, r, 0);
	ASSERT_TRUE(p != MAP_FAILED);
	ASSERT_EQ(((volatile uint8_t *)p)[0], 0);
}

/* §5.4 / §8.3: disconnected peer → ESHUTDOWN (before the write check) */
TEST(mmap_disconnected_eshutdown)
{
	int a = b1_open();

	ASSERT_EQ(b1_disconnect(a), 0);
	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ, MAP_SHARED, a, 0) == MAP_FAILED);
	ASSERT_EQ(errno, ESHUTDOWN);
	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0) == MAP_FAILED);
	ASSERT_EQ(errno, ESHUTDOWN);
}

/* §5.4: a mapping at a non-zero (page-aligned) offset shows that part of the pool */
TEST(mmap_at_offset)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;
	static uint8_t buf[12288];
	uint8_t *p;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + 3);
	ASSERT_EQ(b1_send_one(b, h, buf, sizeof(buf)), 0);
	off = recv_offset(a, sizeof(buf));
	ASSERT_EQ_U64(off, 0);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, a, 8192);
	ASSERT_TRUE(p != MAP_FAILED);
	ASSERT_MEMEQ(p, buf + 8192, 4096);
	/* and a mapping near the end of the pool: untouched, zero */
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, a, B1_POOL_SIZE - 4096);
	ASSERT_TRUE(p != MAP_FAILED);
	ASSERT_EQ(((volatile uint8_t *)p)[4095], 0);
}

/* §5.4: mappings may extend past 2^29; touching beyond the pool raises SIGBUS */
TEST(mmap_beyond_pool_sigbus)
{
	int a = b1_open();
	volatile uint8_t *p = mmap(NULL, B1_POOL_SIZE + 8192, PROT_READ, MAP_SHARED, a, 0);
	volatile uint8_t *q = mmap(NULL, 4096, PROT_READ, MAP_SHARED, a, B1_POOL_SIZE);
	pid_t pid;
	int status;

	ASSERT_TRUE(p != MAP_FAILED);
	ASSERT_TRUE(q != MAP_FAILED);
	ASSERT_EQ(p[B1_POOL_SIZE - 1], 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		(void)p[B1_POOL_SIZE];
		_exit(0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFSIGNALED(status));
	ASSERT_EQ(WTERMSIG(status), SIGBUS);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		(void)q[0];
		_exit(0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFSIGNALED(status));
	ASSERT_EQ(WTERMSIG(status), SIGBUS);
}

/* §5.4: any number of mappings coexist; one made before a message sees it */
TEST(mmap_multiple_mappings)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;
	const uint8_t *m1 = b1_map(a);
	const uint8_t *m2 = b1_map(a);
	const uint8_t *m3 = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, a, 0);

	ASSERT_TRUE(m3 != MAP_FAILED);
	ASSERT_TRUE(m1 != m2);
	ASSERT_EQ(b1_send_one(b, h, "shared", 6), 0);
	off = recv_offset(a, 6);
	ASSERT_MEMEQ(m1 + off, "shared", 6);
	ASSERT_MEMEQ(m2 + off, "shared", 6);
	ASSERT_MEMEQ(m3 + off, "shared", 6);
}

/* §5.4: the mapping outlives the fd and keeps the received bytes */
TEST(mmap_outlives_close)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;
	const uint8_t *m = b1_map(a);

	ASSERT_EQ(b1_send_one(b, h, "survivor", 8), 0);
	off = recv_offset(a, 8);
	ASSERT_OK(close(a));
	ASSERT_MEMEQ(m + off, "survivor", 8);
	/* no new data: sends now fail, the node is gone */
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
	ASSERT_MEMEQ(m + off, "survivor", 8);
}

/* §5.1 / §4.1: a fresh pool reads as zero; only the slice is written */
TEST(mmap_fresh_zero)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_share(a, 0x100, b), off;
	const uint8_t *m = b1_map(a);
	uint8_t zero[64] = { 0 };

	ASSERT_MEMEQ(m, zero, sizeof(zero));
	ASSERT_MEMEQ(m + (B1_POOL_SIZE >> 1), zero, sizeof(zero));
	ASSERT_EQ(b1_send_one(b, h, "abc", 3), 0);
	off = recv_offset(a, 3);
	ASSERT_MEMEQ(m + off, "abc", 3);
	ASSERT_MEMEQ(m + off + 8, zero, sizeof(zero));
}
