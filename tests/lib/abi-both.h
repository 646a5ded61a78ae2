/* SPDX-License-Identifier: MIT */
/*
 * Both ABIs' RECV in one program. <linux/bus1.h> gives one layout, the RFC
 * v1 one by default and the final one with BUS1_ABI_FINAL; cases that speak
 * both on one bus (or on one peer) spell each out here, by its own name.
 * Whichever layout the header gave must be the matching one below.
 */
#ifndef BUS1_TEST_ABI_BOTH_H
#define BUS1_TEST_ABI_BOTH_H

#include <signal.h>
#include <sys/wait.h>

#include "bus1-util.h"

/* The RFC v1 RECV: 96 bytes, sender credentials and n_secctx. */
struct b1_recv_v1 {
	uint64_t flags;
	uint64_t max_offset;
	struct {
		uint64_t type;
		uint64_t flags;
		uint64_t destination;
		uint32_t uid;
		uint32_t gid;
		uint32_t pid;
		uint32_t tid;
		uint64_t offset;
		uint64_t n_bytes;
		uint64_t n_handles;
		uint64_t n_fds;
		uint64_t n_secctx;
	} msg;
};

#define B1_V1_CMD_RECV			0xC0609650u
#define B1_V1_RECV_PEEK			0x1ULL
#define B1_V1_RECV_SEED			0x2ULL
#define B1_V1_RECV_INSTALL_FDS		0x4ULL
#define B1_V1_MSG_HAS_SECCTX		0x1ULL
#define B1_V1_MSG_CONTINUE		0x2ULL
#define B1_V1_PEER_WANT_SECCTX		0x1ULL

/* The final RECV: 72 bytes, nothing about the sender. */
struct b1_recv_final {
	uint64_t flags;
	uint64_t max_offset;
	struct {
		uint64_t type;
		uint64_t flags;
		uint64_t destination;
		uint64_t offset;
		uint64_t n_bytes;
		uint64_t n_handles;
		uint64_t n_fds;
	} msg;
};

#define B1_FINAL_CMD_RECV		0xC0489650u
#define B1_FINAL_RECV_SEED		0x1ULL
#define B1_FINAL_RECV_INSTALL_FDS	0x2ULL
#define B1_FINAL_MSG_CONTINUE		0x1ULL

_Static_assert(sizeof(struct b1_recv_v1) == 96, "v1 RECV is 96 bytes");
_Static_assert(sizeof(struct b1_recv_final) == 72, "final RECV is 72 bytes");
_Static_assert(B1_V1_CMD_RECV == (unsigned)_IOWR(0x96, 0x50, struct b1_recv_v1), "v1 RECV number");
_Static_assert(B1_FINAL_CMD_RECV == (unsigned)_IOWR(0x96, 0x50, struct b1_recv_final), "final RECV number");

#ifdef BUS1_ABI_FINAL
_Static_assert(sizeof(struct bus1_cmd_recv) == sizeof(struct b1_recv_final), "the header's final RECV");
_Static_assert(BUS1_CMD_RECV == B1_FINAL_CMD_RECV, "the header's final RECV number");
_Static_assert(BUS1_RECV_FLAG_SEED == B1_FINAL_RECV_SEED, "final SEED");
_Static_assert(BUS1_RECV_FLAG_INSTALL_FDS == B1_FINAL_RECV_INSTALL_FDS, "final INSTALL_FDS");
_Static_assert(BUS1_MSG_FLAG_CONTINUE == B1_FINAL_MSG_CONTINUE, "final CONTINUE");
#else
_Static_assert(sizeof(struct bus1_cmd_recv) == sizeof(struct b1_recv_v1), "the header's v1 RECV");
_Static_assert(BUS1_CMD_RECV == B1_V1_CMD_RECV, "the header's v1 RECV number");
_Static_assert(BUS1_RECV_FLAG_PEEK == B1_V1_RECV_PEEK, "v1 PEEK");
_Static_assert(BUS1_MSG_FLAG_CONTINUE == B1_V1_MSG_CONTINUE, "v1 CONTINUE");
#endif

/* v1 RECV with max_offset = the v1 pool; 0 or -errno. */
static inline int b1_recv_v1(int fd, struct b1_recv_v1 *r, uint64_t flags)
{
	memset(r, 0, sizeof(*r));
	r->flags = flags;
	r->max_offset = B1_POOL_SIZE;
	return b1_ioctl(fd, B1_V1_CMD_RECV, r);
}

/* Final RECV with max_offset = the final pool; 0 or -errno. */
static inline int b1_recv_final(int fd, struct b1_recv_final *r, uint64_t flags)
{
	memset(r, 0, sizeof(*r));
	r->flags = flags;
	r->max_offset = B1_POOL_SIZE_FINAL;
	return b1_ioctl(fd, B1_FINAL_CMD_RECV, r);
}

/* PEER_RESET that changes nothing but the peer flags; 0 or -errno. */
static inline int b1_set_peer_flags(int fd, uint64_t peer_flags)
{
	struct bus1_cmd_peer_reset r = {
		.flags = 0, .peer_flags = peer_flags,
		.max_slices = B1_KEEP32, .max_handles = B1_KEEP32,
		.max_inflight_bytes = B1_KEEP32, .max_inflight_fds = B1_KEEP32,
	};

	return b1_ioctl(fd, BUS1_CMD_PEER_RESET, &r);
}

/* PEER_QUERY's peer_flags (fails the case if the query fails). */
static inline uint64_t b1_peer_flags(int fd)
{
	struct bus1_cmd_peer_reset q;

	ASSERT_EQ(b1_query(fd, &q), 0);
	return q.peer_flags;
}

/*
 * How many more handle references `holder` may take (its remaining handle
 * quota, as far as the peer's own counter limits it): HANDLE_TRANSFERs of
 * node `id` of `owner` are counted until EDQUOT, then given back.
 */
static inline unsigned b1_handles_left(int owner, uint64_t id, int holder)
{
	uint64_t h = BUS1_HANDLE_INVALID, got;
	unsigned n = 0;
	int r;

	while ((r = b1_transfer(owner, id, holder, &got)) == 0) {
		ASSERT_TRUE(n == 0 || got == h);
		h = got;
		if (++n > 100000)
			t_fail(__FILE__, __LINE__, "no handle quota in sight");
	}
	ASSERT_EQ(r, -EDQUOT);
	for (unsigned i = 0; i < n; i++)
		ASSERT_EQ(b1_release(holder, h), 0);
	return n;
}

/*
 * Whether touching byte `off` of the mapping `map` raises SIGBUS (tried in
 * a forked child; anything else fails the case).
 */
static inline int b1_sigbus_at(const volatile uint8_t *map, uint64_t off)
{
	int status;
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		(void)map[off];
		_exit(0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	ASSERT_TRUE(WIFSIGNALED(status));
	ASSERT_EQ(WTERMSIG(status), SIGBUS);
	return 1;
}

#endif /* BUS1_TEST_ABI_BOTH_H */
