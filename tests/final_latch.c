/* SPDX-License-Identifier: MIT */
/*
 * Which ABI a peer speaks, and what follows from it (built with
 * -DBUS1_ABI_FINAL; the v1 side is spelled out in abi-both.h).
 *
 * BUS1_ABI=v1 or final fixes a peer's ABI at open: the other ABI's RECV
 * number is ENOTTY. By default (auto) the peer is undetermined until its
 * first RECV, with either number, or a PEER_RESET with peer_flags 0 or 1
 * (v1) latches it, even when that call fails; a disconnected peer answers
 * ESHUTDOWN first and latches nothing. Both RECV numbers stay served; only
 * the peer flags and the pool follow the latch. Where the two ABIs collide
 * on one peer (PEEK, seeds, quotas), each RECV keeps its own meaning.
 *
 * The latch is observed through the peer flags: a v1 peer accepts
 * peer_flags 1 and reports it, a final one rejects it, an undetermined one
 * accepts it and becomes v1.
 */
#define _GNU_SOURCE
#include <sys/syscall.h>

#include "abi-both.h"

static int open_as(const char *abi)
{
	int fd;

	ASSERT_OK(setenv("BUS1_ABI", abi, 1));
	fd = b1_open();
	ASSERT_OK(unsetenv("BUS1_ABI"));
	return fd;
}

/* The peer speaks (or latches to) v1: peer flags 1 accepted and reported. */
static void expect_v1(int fd)
{
	ASSERT_EQ(b1_set_peer_flags(fd, B1_V1_PEER_WANT_SECCTX), 0);
	ASSERT_EQ(b1_peer_flags(fd), B1_V1_PEER_WANT_SECCTX);
	ASSERT_EQ(b1_set_peer_flags(fd, 0), 0);
	ASSERT_EQ(b1_peer_flags(fd), 0);
}

/* The peer speaks final: peer flags 0 and 1 rejected, none reported. */
static void expect_final(int fd)
{
	ASSERT_EQ(b1_set_peer_flags(fd, 1), -EINVAL);
	ASSERT_EQ(b1_set_peer_flags(fd, 0), -EINVAL);
	ASSERT_EQ(b1_peer_flags(fd), 0);
	ASSERT_EQ(b1_set_peer_flags(fd, (uint64_t)-1), 0);
}

/*
 * The peer is still undetermined: a final RECV, even a failing one, latches
 * it to final. (A peer latched to v1 would accept peer flags 1 after it.)
 */
static void expect_undetermined(int fd)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_peer_flags(fd), 0);
	ASSERT_EQ(b1_recv(fd, &r, 0x4), -EINVAL);
	expect_final(fd);
}

/* a fresh peer is undetermined: no peer flags, all-ones accepted */
TEST(latch_fresh_peer_undetermined)
{
	int a = b1_open(), b = b1_open();

	ASSERT_EQ(b1_peer_flags(a), 0);
	ASSERT_EQ(b1_set_peer_flags(a, (uint64_t)-1), 0);
	ASSERT_EQ(b1_set_peer_flags(a, 2), -EINVAL);
	expect_undetermined(a);
	/* and the other one, latched by peer flags 1 */
	expect_v1(b);
}

/* the final RECV latches final; the v1 RECV is still served, in its layout */
TEST(latch_by_final_recv)
{
	int a = b1_open();
	struct bus1_cmd_recv r;
	struct b1_recv_v1 v1;

	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	expect_final(a);
	ASSERT_EQ(b1_send_one(a, 0x100, "v1 layout", 9), 0);
	ASSERT_EQ(b1_recv_v1(a, &v1, 0), 0);
	ASSERT_EQ(v1.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(v1.msg.n_bytes, 9);
	ASSERT_EQ(v1.msg.uid, getuid());
	ASSERT_EQ(v1.msg.pid, getpid());
	ASSERT_EQ(v1.msg.n_secctx, 0);
	expect_final(a);
}

/* the v1 RECV latches v1; the final RECV is still served, in its layout */
TEST(latch_by_v1_recv)
{
	int a = b1_open();
	struct bus1_cmd_recv r;
	struct b1_recv_v1 v1;

	ASSERT_EQ(b1_recv_v1(a, &v1, 0), -EAGAIN);
	ASSERT_EQ(b1_send_one(a, 0x100, "final layout", 12), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 12);
	expect_v1(a);
}

/* PEER_RESET with peer flags 0 or 1, either layout, latches v1 */
TEST(latch_by_reset_peer_flags)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	struct bus1_cmd_peer_reset_u64 r64 = { .peer_flags = 1, .max_slices = B1_KEEP64,
		.max_handles = B1_KEEP64, .max_inflight_bytes = B1_KEEP64, .max_inflight_fds = B1_KEEP64 };
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_set_peer_flags(a, 0), 0);
	ASSERT_EQ(b1_set_peer_flags(b, 1), 0);
	ASSERT_EQ(b1_ioctl(c, BUS1_CMD_PEER_RESET_U64, &r64), 0);
	ASSERT_EQ(b1_peer_flags(b), 1);
	ASSERT_EQ(b1_peer_flags(c), 1);
	/* a final RECV afterwards latches nothing more */
	for (int fd = a; fd <= c; fd++) {
		ASSERT_EQ(b1_recv(fd, &r, 0), -EAGAIN);
		expect_v1(fd);
	}
}

/* a call latches as soon as it is decoded, so a failing one latches too */
TEST(latch_by_failing_calls)
{
	int a = b1_open(), b = b1_open(), c = b1_open(), d = b1_open(), e = b1_open();
	struct bus1_cmd_peer_reset bad = { .flags = 0x80, .peer_flags = 0,
		.max_slices = B1_KEEP32, .max_handles = B1_KEEP32,
		.max_inflight_bytes = B1_KEEP32, .max_inflight_fds = B1_KEEP32 };
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, b1_bad_ptr()), -EFAULT);
	expect_final(a);
	ASSERT_EQ(b1_recv(b, &r, 0x4), -EINVAL);
	expect_final(b);
	ASSERT_EQ(b1_ioctl(c, B1_V1_CMD_RECV, b1_bad_ptr()), -EFAULT);
	expect_v1(c);
	ASSERT_EQ(b1_ioctl(d, BUS1_CMD_PEER_RESET, &bad), -EINVAL);
	ASSERT_EQ(b1_recv(d, &r, 0), -EAGAIN);
	expect_v1(d);
	/* ERANGE on the final number */
	ASSERT_EQ(b1_send_one(e, 0x100, "x", 1), 0);
	r = (struct bus1_cmd_recv){ .max_offset = 0 };
	ASSERT_EQ(b1_ioctl(e, BUS1_CMD_RECV, &r), -ERANGE);
	expect_final(e);
}

/* no other call latches */
TEST(latch_not_by_other_calls)
{
	for (int round = 0; round < 2; round++) {
		int a = b1_open(), b = b1_open(), p[2];
		uint64_t h = b1_handle_to(a, 0x100, b), node = 0x200;
		struct bus1_cmd_peer_reset_u64 q64 = { 0 };
		struct b1_recv_v1 v1;
		const uint8_t *map;

		ASSERT_OK(pipe(p));
		ASSERT_EQ(b1_send(a, 0, &(uint64_t){ 0x300 }, 1, NULL, NULL, 0, NULL, 0, &p[0], 1), 0);
		ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_SEED, NULL, 0, NULL, NULL, 0, NULL, 0, NULL, 0), 0);
		ASSERT_EQ(b1_ioctl(a, BUS1_CMD_PEER_QUERY_U64, &q64), 0);
		ASSERT_EQ(b1_peer_flags(a), 0);
		ASSERT_EQ(b1_reset(a, 0), 0);
		ASSERT_EQ(b1_set_limits(a, 100, B1_KEEP32, B1_KEEP32, B1_KEEP32), 0);
		ASSERT_EQ(b1_set_peer_flags(a, 2), -EINVAL);
		ASSERT_EQ(b1_transfer(a, 0x400, b, NULL), 0);
		ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
		ASSERT_EQ(b1_destroy(a, &node, 1, 0), 0);
		ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
		ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
		map = b1_map(a);
		ASSERT_TRUE(map != NULL);
		ASSERT_EQ(b1_ioctl(a, _IOWR(BUS1_IOCTL_MAGIC, 0x50, __u64), NULL), -ENOTTY);
		ASSERT_EQ(b1_ioctl(a, _IOWR(BUS1_IOCTL_MAGIC, 0x51, struct b1_recv_final), NULL), -ENOTTY);
		ASSERT_EQ(b1_ioctl(a, _IOWR(BUS1_IOCTL_MAGIC, 0x50, struct bus1_cmd_send), NULL), -ENOTTY);
		ASSERT_EQ(b1_ioctl(a, FIOCLEX, NULL), 0);
		if (round == 0) {
			/* not latched to v1: a final RECV latches final now */
			expect_undetermined(a);
		} else {
			/* not latched to final: a v1 RECV latches v1 now */
			ASSERT_EQ(b1_recv_v1(a, &v1, B1_V1_RECV_SEED), 0);
			expect_v1(a);
		}
	}
}

/* on a disconnected peer ESHUTDOWN comes first, and nothing latches (the pool does not grow) */
TEST(latch_not_on_a_disconnected_peer)
{
	int a = b1_open(), f = open_as("v1");
	const volatile uint8_t *map = mmap(NULL, B1_POOL_SIZE + 4096, PROT_READ, MAP_SHARED, a, 0);
	struct bus1_cmd_recv r;

	ASSERT_TRUE(map != MAP_FAILED);
	ASSERT_EQ(b1_disconnect(a), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), -ESHUTDOWN);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, b1_bad_ptr()), -ESHUTDOWN);
	ASSERT_EQ(b1_set_peer_flags(a, 1), -ESHUTDOWN);
	ASSERT_EQ(b1_sigbus_at(map, B1_POOL_SIZE), 1);
	/* a peer fixed to v1: ESHUTDOWN, not ENOTTY */
	ASSERT_EQ(b1_disconnect(f), 0);
	ASSERT_EQ(b1_recv(f, &r, 0), -ESHUTDOWN);
}

/* BUS1_ABI=v1: the final RECV number is ENOTTY (before its argument is read); v1 rules */
TEST(latch_fixed_v1)
{
	int a = open_as("v1");
	struct bus1_cmd_recv r;
	struct b1_recv_v1 v1;

	ASSERT_EQ(b1_send_one(a, 0x100, "x", 1), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), -ENOTTY);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, b1_bad_ptr()), -ENOTTY);
	ASSERT_EQ(b1_recv(a, &r, 0x4), -ENOTTY);
	expect_v1(a);
	ASSERT_EQ(b1_recv_v1(a, &v1, 0), 0);
	ASSERT_EQ(v1.msg.n_bytes, 1);
}

/* BUS1_ABI=final: the v1 RECV number is ENOTTY; final rules from the start */
TEST(latch_fixed_final)
{
	int a = open_as("final");
	struct bus1_cmd_recv r;
	struct b1_recv_v1 v1;

	expect_final(a);
	ASSERT_EQ(b1_send_one(a, 0x100, "x", 1), 0);
	ASSERT_EQ(b1_recv_v1(a, &v1, 0), -ENOTTY);
	ASSERT_EQ(b1_recv_v1(a, &v1, B1_V1_RECV_PEEK), -ENOTTY);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 1);
}

/* any other BUS1_ABI value means auto; the setting is read at every open */
TEST(latch_other_values_are_auto)
{
	const char *vals[] = { "auto", "", "V1", "FINAL", "v2", "final " };

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		int a = open_as(vals[i]), b = open_as(vals[i]);
		struct b1_recv_v1 v1;
		struct bus1_cmd_recv r;

		ASSERT_EQ(b1_recv_v1(a, &v1, 0), -EAGAIN);
		ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
		expect_v1(a);
		ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
		ASSERT_EQ(b1_recv_v1(b, &v1, 0), -EAGAIN);
		expect_final(b);
	}
}

/* each peer latches on its own; a latch never changes */
TEST(latch_per_peer_for_good)
{
	int a = b1_open(), b = b1_open();
	struct b1_recv_v1 v1;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_recv_v1(b, &v1, 0), -EAGAIN);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(b1_recv_v1(a, &v1, 0), -EAGAIN);
		ASSERT_EQ(b1_set_peer_flags(a, 0), -EINVAL);
		ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	}
	expect_final(a);
	expect_v1(b);
}

/* a peer fd shared by two processes latches to whichever calls first */
TEST(latch_shared_fd_first_caller)
{
	int a = b1_open(), status;
	struct b1_recv_v1 v1;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		struct bus1_cmd_recv r;

		_exit(b1_recv(a, &r, 0) == -EAGAIN ? 0 : 1);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ASSERT_EQ(b1_recv_v1(a, &v1, 0), -EAGAIN);
	expect_final(a);
}

/* ------------------------------- where the two ABIs meet on one peer */

/* PEEK exists only on the v1 number, and only it charges: a final RECV of the same message does not */
TEST(collide_peek_charges_only_on_the_v1_number)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b), hs[] = { 0x200 };
	struct bus1_cmd_recv r;
	struct b1_recv_v1 v1;

	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);		/* a final program's peer */
	ASSERT_EQ(b1_set_handles(a, 3), 0);
	ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, NULL, 0, hs, 1, NULL, 0), 0);
	b1_handle_to(c, 0x300, a);			/* a's last handle unit */
	ASSERT_EQ(b1_recv_v1(a, &v1, B1_V1_RECV_PEEK), -EDQUOT);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_handles, 1);
	b1_expect_empty(a);
}

/*
 * The PEEK state (queued and published) arises from a v1 PEEK; a
 * final RECV then delivers the message into its still-published slice,
 * rewriting the same handle ID (no EFAULT, as the v1 module would give),
 * and SLICE_RELEASE frees it once.
 */
TEST(collide_peek_then_final_recv)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b), carried = 0x200, id1, id2;
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;
	struct b1_recv_v1 v1;

	ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, &(struct iovec){ "peeked", 6 }, 1, &carried, 1, NULL, 0), 0);
	ASSERT_EQ(b1_recv_v1(a, &v1, B1_V1_RECV_PEEK), 0);
	ASSERT_EQ(b1_slice_release(a, v1.msg.offset), 0);	/* only unpublished */
	ASSERT_EQ(b1_recv_v1(a, &v1, B1_V1_RECV_PEEK), 0);
	memcpy(&id1, pool + v1.msg.offset + 8, sizeof(id1));
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.offset, v1.msg.offset);
	ASSERT_EQ(r.msg.n_bytes, 6);
	ASSERT_EQ(r.msg.n_handles, 1);
	memcpy(&id2, pool + r.msg.offset + 8, sizeof(id2));
	ASSERT_EQ_U64(id2, id1);
	/* two PEEKs and the RECV: three references */
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(b1_release(a, id1), 0);
	ASSERT_EQ(b1_release(a, id1), -ENXIO);
	b1_expect_empty(a);
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), -ENXIO);
	/* freed: the next message takes the same place */
	ASSERT_EQ(b1_send_one(b, h, "next", 4), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.offset, v1.msg.offset);
}

/* a seed follows the RECV number: v1 PEEK leaves it, the final RECV consumes it */
TEST(collide_seed_by_recv_number)
{
	int a = b1_open();
	struct bus1_cmd_recv r;
	struct b1_recv_v1 v1;

	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_SEED, NULL, 0, NULL, &(struct iovec){ "seed", 4 }, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_recv_v1(a, &v1, B1_V1_RECV_SEED | B1_V1_RECV_PEEK), 0);
	ASSERT_EQ(v1.msg.n_bytes, 4);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_SEED), 0);
	ASSERT_EQ(r.msg.n_bytes, 4);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_SEED), -EAGAIN);
	ASSERT_EQ(b1_recv_v1(a, &v1, B1_V1_RECV_SEED | B1_V1_RECV_PEEK), -EAGAIN);
}

/*
 * The sender's credentials are recorded at every SEND and shown only
 * by the v1 RECV; no security context anywhere (n_secctx 0, no HAS_SECCTX,
 * the same slice sizes), even for a v1 peer that asked for one.
 */
TEST(collide_credentials_and_secctx)
{
	int v = b1_open(), f = b1_open(), s = b1_open();
	uint64_t hv = b1_handle_to(v, 0x100, s), hf = b1_handle_to(f, 0x100, s);
	uint64_t d[] = { hv, hf };
	struct bus1_cmd_recv r;
	struct b1_recv_v1 v1;

	ASSERT_EQ(b1_set_peer_flags(v, B1_V1_PEER_WANT_SECCTX), 0);
	ASSERT_EQ(b1_send(s, 0, d, 2, NULL, &(struct iovec){ "both", 4 }, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_recv_v1(v, &v1, 0), 0);
	ASSERT_EQ(v1.msg.uid, getuid());
	ASSERT_EQ(v1.msg.gid, getgid());
	ASSERT_EQ(v1.msg.pid, getpid());
	ASSERT_EQ(v1.msg.tid, (uint32_t)syscall(SYS_gettid));
	ASSERT_EQ(v1.msg.flags & B1_V1_MSG_HAS_SECCTX, 0);
	ASSERT_EQ(v1.msg.n_secctx, 0);
	ASSERT_EQ(b1_recv(f, &r, 0), 0);
	ASSERT_EQ(r.msg.flags, 0);
	ASSERT_EQ_U64(r.msg.offset, v1.msg.offset);
	/* a message that arrives at a final peer can still be read with the v1 number, credentials and all */
	ASSERT_EQ(b1_send_one(s, hf, "late", 4), 0);
	ASSERT_EQ(b1_recv_v1(f, &v1, 0), 0);
	ASSERT_EQ(v1.msg.pid, getpid());
	ASSERT_EQ(v1.msg.uid, getuid());
}

/* CONTINUE is reported in the bit of the RECV number used */
TEST(collide_continue_bit_by_recv_number)
{
	int a = b1_open();
	uint64_t d[] = { 0x100, 0x200 };
	struct bus1_cmd_recv r;
	struct b1_recv_v1 v1;

	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_send(a, 0, d, 2, NULL, NULL, 0, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.flags, B1_FINAL_MSG_CONTINUE);
	ASSERT_EQ(b1_recv_v1(a, &v1, 0), 0);
	ASSERT_EQ(v1.msg.flags, 0);
	ASSERT_EQ(b1_recv_v1(a, &v1, 0), 0);
	ASSERT_EQ(v1.msg.flags, B1_V1_MSG_CONTINUE);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.flags, 0);
}

/* INSTALL_FDS and INVALID entries through either number: the handle quota comes back once */
TEST(collide_invalid_entries_refunded_once_both_numbers)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = b1_handle_to(a, 0x100, b), dead = 0x200, hs[] = { dead, dead, dead };
	struct bus1_cmd_recv r;
	struct b1_recv_v1 v1;

	ASSERT_EQ(b1_set_handles(a, 20), 0);		/* 19 left: a holds 0x100 */
	ASSERT_EQ(b1_destroy(b, &dead, 1, 0), 0);
	ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, NULL, 0, hs, 3, NULL, 0), 0);
	ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, NULL, 0, hs, 3, NULL, 0), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 13);
	ASSERT_EQ(b1_recv_v1(a, &v1, 0), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 19);
	ASSERT_EQ(b1_slice_release(a, v1.msg.offset), 0);
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
	ASSERT_EQ(b1_handles_left(c, 0x900, a), 19);
}

/*
 * The final latch lengthens the pool file, which takes a descriptor for a
 * moment: without one the RECV is EMFILE and nothing latches (the message
 * stays queued); once latched, RECV needs none.
 */
TEST(latch_final_at_the_fd_limit)
{
	int a = b1_open(), f = open_as("final");
	struct bus1_cmd_recv r;
	struct b1_recv_v1 v1;
	struct rlimit old;

	ASSERT_EQ(b1_send_one(a, 0x100, "x", 1), 0);
	ASSERT_EQ(b1_send_one(f, 0x100, "y", 1), 0);
	b1_limit_fd_room(0, &old);
	ASSERT_EQ(b1_recv(a, &r, 0), -EMFILE);
	ASSERT_EQ(b1_recv(f, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 1);
	ASSERT_OK(setrlimit(RLIMIT_NOFILE, &old));
	ASSERT_EQ(b1_recv_v1(a, &v1, 0), 0);
	ASSERT_EQ(v1.msg.n_bytes, 1);
	expect_v1(a);
}
