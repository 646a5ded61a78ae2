/* SPDX-License-Identifier: MIT */
/*
 * The pool of a peer that speaks the final ABI (built with -DBUS1_ABI_FINAL):
 * 4 GiB instead of 512 MiB. A peer whose ABI is not yet known has the
 * smaller pool; the final RECV that latches it grows the pool once, file
 * and mappings included: every slice and every mapping made before stays
 * valid, pages up to 4 GiB become readable, and SIGBUS starts at 4 GiB. A
 * v1 peer's pool never grows. The largest slice follows the receiver's
 * pool.
 */
#define _GNU_SOURCE
#include "mp-util.h"
#include "abi-both.h"

#define MIB (1ULL << 20)
#define CHUNK (8 * MIB)		/* the largest message the in-flight quota lets through */

/* A read-only mapping of the first 4 GiB + 4 KiB of fd's pool. */
static const volatile uint8_t *map_4g(int fd)
{
	void *p = mmap(NULL, B1_POOL_SIZE_FINAL + 4096, PROT_READ, MAP_SHARED, fd, 0);

	ASSERT_TRUE(p != MAP_FAILED);
	return p;
}

static int open_as(const char *abi)
{
	int fd;

	ASSERT_OK(setenv("BUS1_ABI", abi, 1));
	fd = mp_open_inherit();
	ASSERT_OK(unsetenv("BUS1_ABI"));
	return fd;
}

/* RECV with the whole 4 GiB as max_offset. */
static int recv_4g(int fd, struct bus1_cmd_recv *r)
{
	memset(r, 0, sizeof(*r));
	r->max_offset = B1_POOL_SIZE_FINAL;
	return b1_ioctl(fd, BUS1_CMD_RECV, r);
}

/* The pool ends at `size`: its last byte reads, the next one is SIGBUS. */
static void expect_pool_end(const volatile uint8_t *map, uint64_t size)
{
	ASSERT_EQ(b1_sigbus_at(map, size - 1), 0);
	ASSERT_EQ(b1_sigbus_at(map, size), 1);
}

/* the final RECV grows an undetermined peer's pool; what was there stays */
TEST(pool_grows_at_the_final_latch)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b);
	const volatile uint8_t *map = map_4g(a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(b, h, "queued before", 13), 0);
	ASSERT_EQ(b1_send_one(b, h, "and another", 11), 0);
	expect_pool_end(map, B1_POOL_SIZE);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);		/* latches, grows */
	ASSERT_EQ(r.msg.offset, 0);
	ASSERT_MEMEQ((const void *)map, "queued before", 13);
	expect_pool_end(map, B1_POOL_SIZE_FINAL);
	ASSERT_EQ(map[B1_POOL_SIZE], 0);
	/* the slice queued before the growth is where it was */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 16);
	ASSERT_MEMEQ((const void *)(map + 16), "and another", 11);
	/* a new mapping sees the same */
	const uint8_t *m2 = b1_map(a);
	ASSERT_MEMEQ(m2 + 16, "and another", 11);
}

/* 5.1: with BUS1_ABI=final the pool is 4 GiB from the start */
TEST(pool_fixed_final_is_4gib_from_open)
{
	int a = open_as("final");

	expect_pool_end(map_4g(a), B1_POOL_SIZE_FINAL);
}

/* a v1 peer's pool stays 512 MiB, also after final RECVs */
TEST(pool_v1_never_grows)
{
	int a = b1_open(), f = open_as("v1");
	const volatile uint8_t *ma = map_4g(a), *mf = map_4g(f);
	struct b1_recv_v1 v1;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv_v1(a, &v1, 0), -EAGAIN);	/* latches v1 */
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);		/* served, latches nothing */
	expect_pool_end(ma, B1_POOL_SIZE);
	ASSERT_EQ(b1_recv(f, &r, 0), -ENOTTY);
	expect_pool_end(mf, B1_POOL_SIZE);
}

/* an undetermined peer has the v1 pool; calls that do not latch do not grow it */
TEST(pool_undetermined_is_v1_sized)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b);
	const volatile uint8_t *map = map_4g(a);
	struct bus1_cmd_peer_reset q;

	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(b1_query(a, &q), 0);
	ASSERT_EQ(b1_reset(a, 0), 0);
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
	expect_pool_end(map, B1_POOL_SIZE);
}

/*
 * 4.7: the largest slice is the receiving peer's: a 600 MiB payload
 * is EMSGSIZE for a v1 or undetermined receiver; for a final one the slice
 * fits and the in-flight byte quota, checked after the pool, says EDQUOT.
 */
TEST(pool_largest_slice_by_receiver)
{
	int u = b1_open(), v = b1_open(), f = b1_open(), s = b1_open();
	uint64_t d[3] = { b1_handle_to(u, 0x100, s), b1_handle_to(v, 0x100, s), b1_handle_to(f, 0x100, s) };
	struct iovec big = { mmap(NULL, 600 * MIB, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0), 600 * MIB };
	struct b1_recv_v1 v1;
	struct bus1_cmd_recv r;

	ASSERT_TRUE(big.iov_base != MAP_FAILED);
	ASSERT_EQ(b1_recv_v1(v, &v1, 0), -EAGAIN);
	ASSERT_EQ(b1_recv(f, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_send(s, 0, &d[0], 1, NULL, &big, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	ASSERT_EQ(b1_send(s, 0, &d[1], 1, NULL, &big, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	ASSERT_EQ(b1_send(s, 0, &d[2], 1, NULL, &big, 1, NULL, 0, NULL, 0), -EDQUOT);
	/* just below the v1 limit (2^29 - 8 bytes) the v1 receiver gets EDQUOT too */
	big.iov_len = B1_POOL_SIZE - 8;
	ASSERT_EQ(b1_send(s, 0, &d[1], 1, NULL, &big, 1, NULL, 0, NULL, 0), -EDQUOT);
	big.iov_len = B1_POOL_SIZE - 7;
	ASSERT_EQ(b1_send(s, 0, &d[1], 1, NULL, &big, 1, NULL, 0, NULL, 0), -EMSGSIZE);
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(b1_recv(i == 0 ? u : i == 1 ? v : f, &r, 0), -EAGAIN);
}

/*
 * Sends argv[2] messages of CHUNK bytes (byte i of message k is k + i) to
 * handle argv[1] on the inherited peer fd argv[0], after one small
 * message and a go-ahead byte on fd argv[3]; reports each result on fd
 * argv[4].
 */
T_CHILD(send_chunks)
{
	int fd = mp_arg(argv[0]), n = mp_arg(argv[2]), go = mp_arg(argv[3]), out = mp_arg(argv[4]);
	uint64_t dest = mp_arg_u64(argv[1]);
	uint8_t *buf = malloc(CHUNK);
	char c;

	ASSERT_TRUE(buf != NULL);
	ASSERT_EQ(b1_send_one(fd, dest, "first", 5), 0);	/* maps the pool here */
	for (int k = 0; k < n; k++) {
		int32_t r;

		mp_read_full(go, &c, 1);
		for (size_t i = 0; i < CHUNK; i += 4096)
			buf[i] = (uint8_t)(k + i / 4096);
		buf[CHUNK - 1] = (uint8_t)~k;
		r = b1_send_one(fd, dest, buf, CHUNK);
		mp_put(out, &r, sizeof(r));
		if (r)
			break;
	}
	return 0;
}

/*
 * 5.1: a final peer receives a slice that ends beyond 512 MiB. The
 * sender is another process that mapped the pool (in the shim) before it
 * grew; the receiver reads every slice through its mapping made before the
 * growth, and the first slice stays valid all along.
 */
TEST_TIMEOUT(pool_final_receives_beyond_512mib, 120)
{
	int a = b1_open(), b = mp_open_inherit(), go[2], res[2];
	uint64_t h = b1_handle_to(a, 0x100, b), end = 0;
	const volatile uint8_t *map = map_4g(a);
	const int n = 65;
	struct bus1_cmd_recv r;
	pid_t pid;
	char c = 1;

	mp_pipe(go);
	mp_pipe(res);
	pid = mp_spawn("send_chunks", mp_str(b), mp_hex(h), mp_str(n), mp_str(go[0]), mp_str(res[1]), (char *)NULL);
	ASSERT_EQ(mp_recv_wait(a, &r, 0, MP_WAIT_MS), 0);	/* "first": latches, grows */
	ASSERT_EQ(r.msg.offset, 0);
	ASSERT_MEMEQ((const void *)map, "first", 5);
	for (int k = 0; k < n; k++) {
		int32_t sent;

		mp_put(go[1], &c, 1);
		mp_get(res[0], &sent, sizeof(sent));
		ASSERT_EQ(sent, 0);
		ASSERT_EQ(recv_4g(a, &r), 0);
		ASSERT_EQ_U64(r.msg.offset, 8 + (uint64_t)k * CHUNK);
		ASSERT_EQ(r.msg.n_bytes, CHUNK);
		ASSERT_EQ(map[r.msg.offset + 4096], (uint8_t)(k + 1));
		ASSERT_EQ(map[r.msg.offset + CHUNK - 1], (uint8_t)~k);
		end = r.msg.offset + r.msg.n_bytes;
	}
	mp_reap(pid);
	ASSERT_TRUE(end > B1_POOL_SIZE + CHUNK);
	ASSERT_MEMEQ((const void *)map, "first", 5);
	/* max_offset still says how far the caller can read */
	ASSERT_EQ(b1_send_one(b, h, "tail", 4), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), -ERANGE);
	ASSERT_EQ(recv_4g(a, &r), 0);
	ASSERT_EQ_U64(r.msg.offset, end);
	ASSERT_MEMEQ((const void *)(map + end), "tail", 4);
}

/*
 * Sends "first" to handle argv[1] on the inherited peer fd argv[0] (which
 * maps the receiver's pool in this process, at its size then), reports
 * the result on fd argv[3], waits for a byte on fd argv[2], sends "late"
 * and reports that result too.
 */
T_CHILD(send_first_and_late)
{
	int fd = mp_arg(argv[0]), go = mp_arg(argv[2]), out = mp_arg(argv[3]);
	uint64_t dest = mp_arg_u64(argv[1]);
	int32_t r;
	char c;

	r = b1_send_one(fd, dest, "first", 5);
	mp_put(out, &r, sizeof(r));
	mp_read_full(go, &c, 1);
	r = b1_send_one(fd, dest, "late", 4);
	mp_put(out, &r, sizeof(r));
	return 0;
}

/*
 * A sender mapped the receiver's pool while it was 512 MiB; the pool then
 * grew and filled past 512 MiB. The sender's next small message (which
 * would go in one section, straight into the mapping it has) lands beyond
 * its old mapping: it is delivered there, intact.
 * (The chunks' end is 8-aligned: CHUNK is.)
 */
TEST_TIMEOUT(pool_small_send_beyond_an_old_mapping, 120)
{
	int a = b1_open(), b = mp_open_inherit(), go[2], res[2];
	uint64_t h = b1_handle_to(a, 0x100, b), end = 0;
	const volatile uint8_t *map = map_4g(a);
	uint8_t *buf = calloc(1, CHUNK);
	struct bus1_cmd_recv r;
	int32_t sent;
	pid_t pid;
	char c = 1;

	ASSERT_TRUE(buf != NULL);
	mp_pipe(go);
	mp_pipe(res);
	pid = mp_spawn("send_first_and_late", mp_str(b), mp_hex(h), mp_str(go[0]), mp_str(res[1]), (char *)NULL);
	mp_get(res[0], &sent, sizeof(sent));
	ASSERT_EQ(sent, 0);
	ASSERT_EQ(recv_4g(a, &r), 0);			/* "first": latches, grows */
	ASSERT_EQ(r.msg.offset, 0);
	/* this process fills the grown pool past 512 MiB, keeping every slice */
	while (end <= B1_POOL_SIZE) {
		ASSERT_EQ(b1_send_one(b, h, buf, CHUNK), 0);
		ASSERT_EQ(recv_4g(a, &r), 0);
		end = r.msg.offset + r.msg.n_bytes;
	}
	/* a small slice of its own there, so that the page directory
	 * reaches the next one already */
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_EQ(recv_4g(a, &r), 0);
	ASSERT_EQ_U64(r.msg.offset, end);
	end += 8;
	mp_put(go[1], &c, 1);
	mp_get(res[0], &sent, sizeof(sent));
	ASSERT_EQ(sent, 0);
	ASSERT_EQ(recv_4g(a, &r), 0);
	ASSERT_EQ_U64(r.msg.offset, end);
	ASSERT_EQ(r.msg.n_bytes, 4);
	ASSERT_MEMEQ((const void *)(map + end), "late", 4);
	ASSERT_MEMEQ((const void *)map, "first", 5);
	mp_reap(pid);
	free(buf);
}
