/* SPDX-License-Identifier: MIT */
/*
 * Small helpers around the bus1 ioctls for the test suite. Every wrapper
 * returns 0 on success or -errno on failure, so a case can write
 * ASSERT_EQ(b1_send_one(fd, id, "x", 1), -ESHUTDOWN).
 */
#ifndef BUS1_TEST_UTIL_H
#define BUS1_TEST_UTIL_H

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <linux/bus1.h>

#include "harness.h"

/* Size of every peer's pool (§5.1) ... */
#define B1_POOL_SIZE (1ULL << 29)
/* ... but a peer that speaks bus1's final ABI has a 4 GiB pool. */
#define B1_POOL_SIZE_FINAL (1ULL << 32)
/*
 * The shim's own read-write mapping of a pool is as long as the pool: that
 * of a v1 (or undetermined) peer, 512 MiB.
 */
#define B1_SHIM_POOL_MAP B1_POOL_SIZE

static inline const char *b1_device(void)
{
	const char *d = getenv("BUS1_DEVICE");

	return d ? d : "/dev/bus1";
}

/* Opens a new peer; fails the case if that is impossible. */
static inline int b1_open(void)
{
	int fd = open(b1_device(), O_RDWR | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		t_fail(__FILE__, __LINE__, "open(%s): %s", b1_device(), strerror(errno));
	return fd;
}

/* Any ioctl, returning 0 or -errno. */
static inline int b1_ioctl(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) < 0 ? -errno : 0;
}

/* ioctl with a raw integer argument (PEER_DISCONNECT). */
static inline int b1_ioctl_raw(int fd, unsigned long cmd, unsigned long arg)
{
	return ioctl(fd, cmd, arg) < 0 ? -errno : 0;
}

static inline int b1_disconnect(int fd)
{
	return b1_ioctl_raw(fd, BUS1_CMD_PEER_DISCONNECT, 0);
}

static inline int b1_query(int fd, struct bus1_cmd_peer_reset *q)
{
	memset(q, 0, sizeof(*q));
	return b1_ioctl(fd, BUS1_CMD_PEER_QUERY, q);
}

/* PEER_RESET with flags; limits left unchanged, peer flags unchanged. */
static inline int b1_reset(int fd, uint64_t flags)
{
	struct bus1_cmd_peer_reset r = {
		.flags = flags,
		.peer_flags = (uint64_t)-1,
		.max_slices = (uint32_t)-1,
		.max_handles = (uint32_t)-1,
		.max_inflight_bytes = (uint32_t)-1,
		.max_inflight_fds = (uint32_t)-1,
	};

	return b1_ioctl(fd, BUS1_CMD_PEER_RESET, &r);
}

static inline int b1_release(int fd, uint64_t id)
{
	return b1_ioctl(fd, BUS1_CMD_HANDLE_RELEASE, &id);
}

/* HANDLE_TRANSFER from src_fd's handle to dst_fd (-1: same peer). */
static inline int b1_transfer(int src_fd, uint64_t src_handle, int dst_fd, uint64_t *dst_handle)
{
	struct bus1_cmd_handle_transfer t = {
		.flags = 0,
		.src_handle = src_handle,
		.dst_fd = dst_fd < 0 ? (uint64_t)-1 : (uint64_t)dst_fd,
		.dst_handle = BUS1_HANDLE_INVALID,
	};
	int r = b1_ioctl(src_fd, BUS1_CMD_HANDLE_TRANSFER, &t);

	if (dst_handle)
		*dst_handle = t.dst_handle;
	return r;
}

static inline int b1_destroy(int fd, const uint64_t *ids, size_t n, uint64_t flags)
{
	struct bus1_cmd_nodes_destroy d = {
		.flags = flags,
		.ptr_nodes = (uintptr_t)ids,
		.n_nodes = n,
	};

	return b1_ioctl(fd, BUS1_CMD_NODES_DESTROY, &d);
}

static inline int b1_destroy_one(int fd, uint64_t id)
{
	return b1_destroy(fd, &id, 1, 0);
}

static inline int b1_slice_release(int fd, uint64_t offset)
{
	return b1_ioctl(fd, BUS1_CMD_SLICE_RELEASE, &offset);
}

/* Full SEND. */
static inline int b1_send(int fd, uint64_t flags,
			  const uint64_t *dests, size_t n_dests, uint64_t *errors,
			  const struct iovec *vecs, size_t n_vecs,
			  const uint64_t *handles, size_t n_handles,
			  const int *fds, size_t n_fds)
{
	struct bus1_cmd_send s = {
		.flags = flags,
		.ptr_destinations = (uintptr_t)dests,
		.ptr_errors = (uintptr_t)errors,
		.n_destinations = n_dests,
		.ptr_vecs = (uintptr_t)vecs,
		.n_vecs = n_vecs,
		.ptr_handles = (uintptr_t)handles,
		.n_handles = n_handles,
		.ptr_fds = (uintptr_t)fds,
		.n_fds = n_fds,
	};

	return b1_ioctl(fd, BUS1_CMD_SEND, &s);
}

/* SEND of one buffer to one destination, no handles, no fds. */
static inline int b1_send_one(int fd, uint64_t dest, const void *data, size_t len)
{
	struct iovec v = { .iov_base = (void *)data, .iov_len = len };

	return b1_send(fd, 0, &dest, 1, NULL, &v, len ? 1 : 0, NULL, 0, NULL, 0);
}

/* RECV with max_offset = whole pool. */
static inline int b1_recv(int fd, struct bus1_cmd_recv *r, uint64_t flags)
{
	memset(r, 0, sizeof(*r));
	r->flags = flags;
	r->max_offset = B1_POOL_SIZE;
	return b1_ioctl(fd, BUS1_CMD_RECV, r);
}

/* Maps the whole pool read-only; fails the case on error. */
static inline const uint8_t *b1_map(int fd)
{
	void *p = mmap(NULL, B1_POOL_SIZE, PROT_READ, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		t_fail(__FILE__, __LINE__, "mmap pool: %s", strerror(errno));
	return p;
}

/*
 * KiB of a pool mapping's first `len` bytes that are resident in memory
 * (mincore: the pool file's pages present in the page cache).
 */
static inline unsigned long b1_resident_kib(const uint8_t *pool, size_t len)
{
	size_t pages = len / 4096;
	unsigned char *v = malloc(pages);
	unsigned long n = 0;

	if (!v || mincore((void *)pool, len, v) < 0)
		t_fail(__FILE__, __LINE__, "mincore: %s", strerror(errno));
	for (size_t i = 0; i < pages; i++)
		n += v[i] & 1;
	free(v);
	return n * 4;
}

/* poll() revents for fd with a zero timeout. */
static inline short b1_revents(int fd, short events)
{
	struct pollfd p = { .fd = fd, .events = events };

	if (poll(&p, 1, 0) < 0)
		t_fail(__FILE__, __LINE__, "poll: %s", strerror(errno));
	return p.revents;
}

/*
 * A disconnected peer reports POLLHUP and nothing else (§8.2), whatever
 * was asked for and whatever was still queued.
 */
#define ASSERT_HUP(revents) ASSERT_EQ((revents), POLLHUP)

/* PEER_RESET limit fields (§2.3): all-ones leaves a limit or the flags unchanged. */
#define B1_KEEP32 0xFFFFFFFFu
#define B1_KEEP64 ((uint64_t)-1)

/* PEER_RESET of the four limits only, without a flush; returns 0 or -errno. */
static inline int b1_set_limits(int fd, uint32_t slices, uint32_t handles, uint32_t bytes, uint32_t fds)
{
	struct bus1_cmd_peer_reset r = {
		.flags = 0, .peer_flags = B1_KEEP64,
		.max_slices = slices, .max_handles = handles,
		.max_inflight_bytes = bytes, .max_inflight_fds = fds,
	};

	return b1_ioctl(fd, BUS1_CMD_PEER_RESET, &r);
}

static inline int b1_set_handles(int fd, uint32_t handles)
{
	return b1_set_limits(fd, B1_KEEP32, handles, B1_KEEP32, B1_KEEP32);
}

static inline int b1_set_slices(int fd, uint32_t slices)
{
	return b1_set_limits(fd, slices, B1_KEEP32, B1_KEEP32, B1_KEEP32);
}

/*
 * A copy of `size` bytes of `tmpl` placed so that only its first `head`
 * bytes lie on a writable page and the rest on a page with protection
 * `prot`: PROT_READ (readable, faults on write) or PROT_NONE (faults on any
 * access; bytes there are not copied). A NULL `tmpl` copies nothing (the
 * pages start zeroed).
 */
static inline void *b1_straddle(const void *tmpl, size_t size, size_t head, int prot)
{
	uint8_t *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *s;

	if (p == MAP_FAILED)
		t_fail(__FILE__, __LINE__, "mmap: %s", strerror(errno));
	s = p + 4096 - head;
	if (tmpl)
		memcpy(s, tmpl, prot == PROT_NONE ? head : size);
	if (mprotect(p + 4096, 4096, prot) < 0)
		t_fail(__FILE__, __LINE__, "mprotect: %s", strerror(errno));
	return s;
}

/* An address that faults on access (a PROT_NONE page). */
static inline void *b1_bad_ptr(void)
{
	void *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		t_fail(__FILE__, __LINE__, "mmap: %s", strerror(errno));
	return p;
}

/* A read-only page (readable, faults on write), zero-filled. */
static inline void *b1_ro_page(void)
{
	void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		t_fail(__FILE__, __LINE__, "mmap: %s", strerror(errno));
	return p;
}

/*
 * Creates node `id` of `owner` on demand and gives `holder` a handle to
 * it; returns the holder's ID, which must be a managed one.
 */
static inline uint64_t b1_handle_to(int owner, uint64_t id, int holder)
{
	uint64_t h = BUS1_HANDLE_INVALID;

	ASSERT_EQ(b1_transfer(owner, id, holder, &h), 0);
	ASSERT_EQ_U64(h & BUS1_HANDLE_FLAG_MANAGED, BUS1_HANDLE_FLAG_MANAGED);
	return h;
}

/* As b1_handle_to, checking only that the holder got a valid ID. */
static inline uint64_t b1_share(int owner, uint64_t id, int holder)
{
	uint64_t h = BUS1_HANDLE_INVALID;

	ASSERT_EQ(b1_transfer(owner, id, holder, &h), 0);
	ASSERT_NE(h, BUS1_HANDLE_INVALID);
	return h;
}

/*
 * The bus works: a new pair of peers of the current domain exchanges a
 * message (its payload read back from the pool) and has nothing else
 * queued. For the end of a test that tried to damage the domain.
 */
static inline void b1_expect_new_pair_works(void)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b);
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(b, h, "still works", 11), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.n_bytes, 11);
	ASSERT_EQ(memcmp(pool + r.msg.offset, "still works", 11), 0);
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	munmap((void *)pool, B1_POOL_SIZE);
	ASSERT_OK(close(a));
	ASSERT_OK(close(b));
}

/* Nothing is queued on fd: RECV answers EAGAIN. */
static inline void b1_expect_empty(int fd)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, 0), -EAGAIN);
}

/* A pointer to the last `n` readable bytes before a PROT_NONE page. */
static inline void *b1_edge(size_t n)
{
	return b1_straddle(NULL, n, n, PROT_NONE);
}

/* The lowest free fd number (to see whether anything was installed). */
static inline int b1_lowest_free_fd(void)
{
	int fd = dup(0);

	ASSERT_GE(fd, 0);
	close(fd);
	return fd;
}

/*
 * Lowers the soft RLIMIT_NOFILE so that exactly `room` more descriptors
 * fit above the lowest free one; the old limits go to *old (for the
 * caller's setrlimit afterwards). Returns that lowest free number.
 */
static inline int b1_limit_fd_room(int room, struct rlimit *old)
{
	int low = b1_lowest_free_fd();
	struct rlimit lim;

	ASSERT_OK(getrlimit(RLIMIT_NOFILE, old));
	lim = *old;
	lim.rlim_cur = low + room;
	ASSERT_OK(setrlimit(RLIMIT_NOFILE, &lim));
	return low;
}

/*
 * Test-only commands of the shim, answered only with BUS1_TEST_HOOKS=1
 * (which the runner sets for every case; without it they are unknown
 * commands, ENOTTY, as for the module). B1_TEST_CHECK checks the
 * invariants of the fd's domain, prints each violation to stderr and
 * returns their number; B1_TEST_DAMAGE damages the domain in one of the
 * ways below, which the shim is known to detect.
 */
#define B1_TEST_CHECK _IO(BUS1_IOCTL_MAGIC, 0xf0)
#define B1_TEST_DAMAGE _IOW(BUS1_IOCTL_MAGIC, 0xf1, __u64)
#define B1_DAMAGE_OFFSET 1	/* the caller's queue head points outside the segment */
#define B1_DAMAGE_CYCLE 2	/* the caller's handle list runs in a circle */
#define B1_DAMAGE_KEY 3		/* the caller's next handle ID is already in its table */

/* Checks the invariants of fd's domain; fails the case on any violation. */
#define b1_check_fd(fd) b1_check_fd_at(__FILE__, __LINE__, (fd))
static inline void b1_check_fd_at(const char *file, int line, int fd)
{
	int n = ioctl(fd, B1_TEST_CHECK, 0);

	if (n < 0)
		t_fail(file, line, "invariant check: %s", strerror(errno));
	if (n > 0)
		t_fail(file, line, "%d invariant violations (listed above)", n);
}

/* Checks the invariants of the case's domain through a new peer. */
#define b1_check_domain() b1_check_domain_at(__FILE__, __LINE__)
static inline void b1_check_domain_at(const char *file, int line)
{
	int fd = open(b1_device(), O_RDWR | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		t_fail(file, line, "open(%s) for the invariant check: %s", b1_device(), strerror(errno));
	b1_check_fd_at(file, line, fd);
	close(fd);
}

static inline int b1_damage(int fd, uint64_t kind)
{
	return b1_ioctl(fd, B1_TEST_DAMAGE, &kind);
}

#endif /* BUS1_TEST_UTIL_H */
