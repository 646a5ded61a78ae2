/* SPDX-License-Identifier: MIT */
/*
 * The ioctl dispatcher (§2.0): which numbers are bus1 commands,
 * ENOTTY for everything else, ESHUTDOWN on a disconnected peer before any
 * decoding, EFAULT for unreadable arguments, the generic VFS fd ioctls, and
 * ioctls on descriptors that are not bus1 peers passing through untouched.
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <termios.h>

#include "bus1-util.h"

/* Every command number of 1.5 (and 1.6) is what the ABI table says. */
_Static_assert(BUS1_CMD_PEER_DISCONNECT == 0xC0089600u, "disconnect nr");
_Static_assert(BUS1_CMD_PEER_QUERY == 0xC0209601u, "query nr");
_Static_assert(BUS1_CMD_PEER_RESET == 0xC0209602u, "reset nr");
_Static_assert(BUS1_CMD_HANDLE_RELEASE == 0xC0089610u, "release nr");
_Static_assert(BUS1_CMD_HANDLE_TRANSFER == 0xC0209611u, "transfer nr");
_Static_assert(BUS1_CMD_NODES_DESTROY == 0xC0189620u, "destroy nr");
_Static_assert(BUS1_CMD_SLICE_RELEASE == 0xC0089630u, "slice nr");
_Static_assert(BUS1_CMD_SEND == 0xC0509640u, "send nr");
_Static_assert(BUS1_CMD_RECV == 0xC0609650u, "recv nr");
_Static_assert(BUS1_CMD_PEER_QUERY_U64 == 0xC0309601u, "query u64 nr");
_Static_assert(BUS1_CMD_PEER_RESET_U64 == 0xC0309602u, "reset u64 nr");
_Static_assert(BUS1_CMD_NODE_DESTROY == BUS1_CMD_NODES_DESTROY, "man-page alias");

/* A big zeroed buffer: a valid argument for every command with flags 0. */
static uint64_t zbuf[32];

/* Encodings that are not bus1 commands (2.0 step 3). */
static const unsigned long bogus_cmds[] = {
	_IOWR(BUS1_IOCTL_MAGIC, 0x03, __u64),			/* unused nr */
	_IOWR(BUS1_IOCTL_MAGIC, 0x12, __u64),
	_IOWR(BUS1_IOCTL_MAGIC, 0x21, __u64),
	_IOWR(BUS1_IOCTL_MAGIC, 0x31, __u64),
	_IOWR(BUS1_IOCTL_MAGIC, 0x41, __u64),
	_IOWR(BUS1_IOCTL_MAGIC, 0x51, __u64),
	_IOWR(BUS1_IOCTL_MAGIC, 0xff, __u64),
	_IOWR(BUS1_IOCTL_MAGIC, 0x40, __u64),			/* SEND nr, wrong size */
	_IOWR(BUS1_IOCTL_MAGIC, 0x50, struct bus1_cmd_send),	/* RECV nr, wrong size */
	_IOWR(BUS1_IOCTL_MAGIC, 0x10, struct bus1_cmd_peer_reset), /* RELEASE nr, wrong size */
	_IOR(BUS1_IOCTL_MAGIC, 0x01, struct bus1_cmd_peer_reset),  /* wrong direction */
	_IOW(BUS1_IOCTL_MAGIC, 0x02, struct bus1_cmd_peer_reset),
	_IOR(BUS1_IOCTL_MAGIC, 0x10, __u64),
	_IOW(BUS1_IOCTL_MAGIC, 0x30, __u64),
	_IO(BUS1_IOCTL_MAGIC, 0x00),				/* DISCONNECT without size */
	_IOR(BUS1_IOCTL_MAGIC, 0x00, __u64),			/* ...other direction */
	_IOWR(BUS1_IOCTL_MAGIC, 0x00, struct bus1_cmd_peer_reset), /* ...other size */
	_IO(BUS1_IOCTL_MAGIC, 0x40),
	_IOWR(0x97, 0x01, struct bus1_cmd_peer_reset),		/* other magic */
	_IOWR(0x95, 0x40, struct bus1_cmd_send),
	0,
	TCGETS,							/* tty ioctl */
	FIONREAD,						/* not a VFS-generic one */
	TIOCOUTQ,
};

#define N_BOGUS (sizeof(bogus_cmds) / sizeof(bogus_cmds[0]))

/* §2.0 step 3: unknown numbers (other nr, size, direction, magic) → ENOTTY */
TEST(unknown_commands_enotty)
{
	int fd = b1_open();
	struct bus1_cmd_peer_reset q;

	for (size_t i = 0; i < N_BOGUS; i++) {
		memset(zbuf, 0, sizeof(zbuf));
		errno = 0;
		if (ioctl(fd, bogus_cmds[i], zbuf) != -1 || errno != ENOTTY)
			t_fail(__FILE__, __LINE__, "cmd 0x%lx: errno %d, expected ENOTTY",
			       bogus_cmds[i], errno);
	}
	/* the peer is still live and untouched */
	ASSERT_EQ(b1_query(fd, &q), 0);
	ASSERT_EQ(q.max_slices, 16384);
}

/* §2.0 step 3: ENOTTY is decided by the number, not by reading the argument */
TEST(unknown_command_bad_pointer_enotty)
{
	int fd = b1_open();

	ASSERT_ERRNO(ioctl(fd, _IOWR(BUS1_IOCTL_MAGIC, 0x03, __u64), b1_bad_ptr()), ENOTTY);
	ASSERT_ERRNO(ioctl(fd, _IOWR(BUS1_IOCTL_MAGIC, 0x40, __u64), NULL), ENOTTY);
	ASSERT_ERRNO(ioctl(fd, FIONREAD, b1_bad_ptr()), ENOTTY);
}

/* §2.0 step 3: an unknown command leaves the peer state alone (no message consumed) */
TEST(unknown_command_changes_nothing)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;
	int n = -1;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	ASSERT_EQ(b1_send_one(b, h, "abc", 3), 0);
	/* FIONREAD would report queued bytes on a socket; on bus1 it is ENOTTY */
	ASSERT_ERRNO(ioctl(a, FIONREAD, &n), ENOTTY);
	ASSERT_EQ(n, -1);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.n_bytes, 3);
}

/* §2.0 step 2: on a disconnected peer ESHUTDOWN comes before ENOTTY */
TEST(disconnected_unknown_eshutdown)
{
	int fd = b1_open();

	ASSERT_EQ(b1_disconnect(fd), 0);
	for (size_t i = 0; i < N_BOGUS; i++) {
		memset(zbuf, 0, sizeof(zbuf));
		errno = 0;
		if (ioctl(fd, bogus_cmds[i], zbuf) != -1 || errno != ESHUTDOWN)
			t_fail(__FILE__, __LINE__, "cmd 0x%lx: errno %d, expected ESHUTDOWN",
			       bogus_cmds[i], errno);
	}
}

/* §2.0 step 2 / §8.3: every known command except DISCONNECT → ESHUTDOWN */
TEST(disconnected_known_eshutdown)
{
	static const unsigned long cmds[] = {
		BUS1_CMD_PEER_QUERY, BUS1_CMD_PEER_RESET, BUS1_CMD_HANDLE_RELEASE,
		BUS1_CMD_HANDLE_TRANSFER, BUS1_CMD_NODES_DESTROY,
		BUS1_CMD_SLICE_RELEASE, BUS1_CMD_SEND, BUS1_CMD_RECV,
		BUS1_CMD_PEER_QUERY_U64, BUS1_CMD_PEER_RESET_U64,
	};
	int fd = b1_open();

	ASSERT_EQ(b1_disconnect(fd), 0);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		memset(zbuf, 0, sizeof(zbuf));
		/* transfer to self, otherwise a zero struct is valid */
		if (cmds[i] == BUS1_CMD_HANDLE_TRANSFER)
			zbuf[2] = (uint64_t)-1;
		errno = 0;
		if (ioctl(fd, cmds[i], zbuf) != -1 || errno != ESHUTDOWN)
			t_fail(__FILE__, __LINE__, "cmd 0x%lx: errno %d, expected ESHUTDOWN",
			       cmds[i], errno);
	}
}

/* §2.0 step 2: ESHUTDOWN precedes EFAULT (the argument is never read) */
TEST(disconnected_bad_pointer_eshutdown)
{
	static const unsigned long cmds[] = {
		BUS1_CMD_PEER_QUERY, BUS1_CMD_PEER_RESET, BUS1_CMD_HANDLE_RELEASE,
		BUS1_CMD_HANDLE_TRANSFER, BUS1_CMD_NODES_DESTROY,
		BUS1_CMD_SLICE_RELEASE, BUS1_CMD_SEND, BUS1_CMD_RECV,
	};
	int fd = b1_open();
	void *bad = b1_bad_ptr();

	ASSERT_EQ(b1_disconnect(fd), 0);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		ASSERT_ERRNO(ioctl(fd, cmds[i], bad), ESHUTDOWN);
		ASSERT_ERRNO(ioctl(fd, cmds[i], NULL), ESHUTDOWN);
	}
}

/* §2.0 step 2: ESHUTDOWN precedes EINVAL for bad flags */
TEST(disconnected_bad_flags_eshutdown)
{
	int fd = b1_open();
	struct bus1_cmd_peer_reset q = { .flags = 1 };
	struct bus1_cmd_peer_reset r = { .flags = 0x80, .peer_flags = 0x80 };
	struct bus1_cmd_nodes_destroy d = { .flags = 0x80 };
	struct bus1_cmd_send s = { .flags = 0x80 };
	struct bus1_cmd_recv rv = { .flags = 0x80 };
	struct bus1_cmd_handle_transfer t = { .flags = 0x80, .dst_fd = 9999 };

	ASSERT_EQ(b1_disconnect(fd), 0);
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_QUERY, &q), -ESHUTDOWN);
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_RESET, &r), -ESHUTDOWN);
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_NODES_DESTROY, &d), -ESHUTDOWN);
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_SEND, &s), -ESHUTDOWN);
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_RECV, &rv), -ESHUTDOWN);
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_HANDLE_TRANSFER, &t), -ESHUTDOWN);
	/* nothing was written back */
	ASSERT_EQ_U64(t.dst_handle, 0);
	ASSERT_EQ_U64(q.max_slices, 0);
}

/* §2.0 step 1 / §2.1 step 1: DISCONNECT's EINVAL comes before ESHUTDOWN */
TEST(disconnect_arg_checked_before_shutdown)
{
	int fd = b1_open();

	ASSERT_EQ(b1_ioctl_raw(fd, BUS1_CMD_PEER_DISCONNECT, 1), -EINVAL);
	ASSERT_EQ(b1_disconnect(fd), 0);
	ASSERT_EQ(b1_ioctl_raw(fd, BUS1_CMD_PEER_DISCONNECT, 1), -EINVAL);
	ASSERT_EQ(b1_ioctl_raw(fd, BUS1_CMD_PEER_DISCONNECT, (unsigned long)-1), -EINVAL);
	ASSERT_EQ(b1_disconnect(fd), -ESHUTDOWN);
}

/* §0 / §2.0: every command with an unreadable argument → EFAULT */
TEST(bad_pointer_efault)
{
	static const unsigned long cmds[] = {
		BUS1_CMD_PEER_QUERY, BUS1_CMD_PEER_RESET, BUS1_CMD_HANDLE_RELEASE,
		BUS1_CMD_HANDLE_TRANSFER, BUS1_CMD_NODES_DESTROY,
		BUS1_CMD_SLICE_RELEASE, BUS1_CMD_SEND, BUS1_CMD_RECV,
		BUS1_CMD_PEER_QUERY_U64, BUS1_CMD_PEER_RESET_U64,
	};
	int fd = b1_open();
	void *bad = b1_bad_ptr();
	struct bus1_cmd_peer_reset q;

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		errno = 0;
		if (ioctl(fd, cmds[i], bad) != -1 || errno != EFAULT)
			t_fail(__FILE__, __LINE__, "cmd 0x%lx bad ptr: errno %d", cmds[i], errno);
		errno = 0;
		if (ioctl(fd, cmds[i], NULL) != -1 || errno != EFAULT)
			t_fail(__FILE__, __LINE__, "cmd 0x%lx NULL: errno %d", cmds[i], errno);
		errno = 0;
		if (ioctl(fd, cmds[i], (void *)-4096L) != -1 || errno != EFAULT)
			t_fail(__FILE__, __LINE__, "cmd 0x%lx kernel ptr: errno %d", cmds[i], errno);
	}
	/* the peer survived all of it */
	ASSERT_EQ(b1_query(fd, &q), 0);
	ASSERT_EQ(q.max_handles, 65536);
}

/* §2.0 / §1.5: an argument that straddles into an unmapped page → EFAULT */
TEST(partially_readable_argument_efault)
{
	/* 8 readable (zero) bytes, then the hole: every struct command must fail */
	uint8_t *p = b1_edge(8);
	int fd = b1_open();

	memset(p, 0, 8);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY, p), EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_RESET, p), EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_NODES_DESTROY, p), EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_SEND, p), EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_RECV, p), EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_HANDLE_TRANSFER, p), EFAULT);
	/* a u64 argument exactly at the end of the page is fine: 0 is unpublished */
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_SLICE_RELEASE, p), ENXIO);
	/* ...but one byte later it straddles */
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_SLICE_RELEASE, p + 1), EFAULT);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_HANDLE_RELEASE, p + 4), EFAULT);
}

/*
 * §2.2–2.9 step 1 before step 2: the whole struct is read before any field
 * is checked, so invalid flags in a struct that runs into a hole are EFAULT;
 * the same struct wholly readable is EINVAL.
 */
TEST(struct_read_before_flags_check)
{
	static const struct { unsigned long cmd; size_t size; } cmds[] = {
		{ BUS1_CMD_PEER_QUERY, sizeof(struct bus1_cmd_peer_reset) },
		{ BUS1_CMD_PEER_RESET, sizeof(struct bus1_cmd_peer_reset) },
		{ BUS1_CMD_HANDLE_TRANSFER, sizeof(struct bus1_cmd_handle_transfer) },
		{ BUS1_CMD_NODES_DESTROY, sizeof(struct bus1_cmd_nodes_destroy) },
		{ BUS1_CMD_SEND, sizeof(struct bus1_cmd_send) },
		{ BUS1_CMD_RECV, sizeof(struct bus1_cmd_recv) },
	};
	uint64_t arg[16] = { 1ULL << 62 };	/* flags: a bit no command knows */
	int fd = b1_open();

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		size_t n = cmds[i].size;

		ASSERT_ERRNO(ioctl(fd, cmds[i].cmd, b1_straddle(arg, n, 8, PROT_NONE)), EFAULT);
		ASSERT_ERRNO(ioctl(fd, cmds[i].cmd, b1_straddle(arg, n, n, PROT_NONE)), EINVAL);
	}
	b1_expect_empty(fd);
}

/* §2.1 / §1.5: DISCONNECT does not dereference arg; a non-zero pointer is EINVAL */
TEST(disconnect_arg_not_dereferenced)
{
	int fd = b1_open();
	uint64_t zero = 0;
	struct bus1_cmd_peer_reset q;

	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_DISCONNECT, &zero), -EINVAL);
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_DISCONNECT, b1_bad_ptr()), -EINVAL);
	ASSERT_EQ(b1_query(fd, &q), 0);
	/* NULL is the raw value 0: disconnects */
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_DISCONNECT, NULL), 0);
	ASSERT_EQ(b1_query(fd, &q), -ESHUTDOWN);
}

/* §2.0: FIOCLEX/FIONCLEX act on the descriptor like for any fd */
TEST(vfs_cloexec_ioctls)
{
	int fd = b1_open();

	ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	ASSERT_OK(ioctl(fd, FIONCLEX));
	ASSERT_EQ(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
	ASSERT_OK(ioctl(fd, FIOCLEX));
	ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	/* also on a disconnected peer: the VFS handles them before the driver */
	ASSERT_EQ(b1_disconnect(fd), 0);
	ASSERT_OK(ioctl(fd, FIONCLEX));
	ASSERT_EQ(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
}

/* §2.0: FIONBIO toggles O_NONBLOCK like for any fd and is no bus1 command */
TEST(vfs_fionbio)
{
	int fd = b1_open();
	int on = 0;
	struct bus1_cmd_recv r;

	ASSERT_TRUE(fcntl(fd, F_GETFL) & O_NONBLOCK);
	ASSERT_OK(ioctl(fd, FIONBIO, &on));
	ASSERT_EQ(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	/* O_NONBLOCK is irrelevant: RECV still never blocks */
	ASSERT_EQ(b1_recv(fd, &r, 0), -EAGAIN);
	on = 1;
	ASSERT_OK(ioctl(fd, FIONBIO, &on));
	ASSERT_TRUE(fcntl(fd, F_GETFL) & O_NONBLOCK);
	ASSERT_EQ(b1_disconnect(fd), 0);
	on = 0;
	ASSERT_OK(ioctl(fd, FIONBIO, &on));
	ASSERT_EQ(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
}

/* §2.0 / docs/design.md, fixed decision 6: ioctls on a pipe reach the kernel untouched */
TEST(non_bus1_fd_pipe_passthrough)
{
	int p[2], n = -1;
	struct bus1_cmd_peer_reset q;

	(void)b1_open();
	ASSERT_OK(pipe(p));
	ASSERT_EQ(write(p[1], "xyz", 3), 3);
	ASSERT_OK(ioctl(p[0], FIONREAD, &n));
	ASSERT_EQ(n, 3);
	memset(&q, 0x5a, sizeof(q));
	ASSERT_ERRNO(ioctl(p[0], BUS1_CMD_PEER_QUERY, &q), ENOTTY);
	ASSERT_EQ(q.max_slices, 0x5a5a5a5a);
	ASSERT_ERRNO(ioctl(p[0], BUS1_CMD_PEER_DISCONNECT, 0), ENOTTY);
	ASSERT_ERRNO(ioctl(p[1], BUS1_CMD_SEND, b1_bad_ptr()), ENOTTY);
	/* the pipe is unharmed */
	ASSERT_OK(ioctl(p[0], FIONREAD, &n));
	ASSERT_EQ(n, 3);
}

/* docs/design.md, fixed decision 6: a socket, /dev/null and a bad fd behave as without the shim */
TEST(non_bus1_fd_other_passthrough)
{
	int sv[2], n = -1, nul;

	(void)b1_open();
	ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	ASSERT_EQ(write(sv[1], "ab", 2), 2);
	ASSERT_OK(ioctl(sv[0], FIONREAD, &n));
	ASSERT_EQ(n, 2);
	ASSERT_ERRNO(ioctl(sv[0], BUS1_CMD_PEER_QUERY, zbuf), ENOTTY);
	nul = open("/dev/null", O_RDWR);
	ASSERT_GE(nul, 0);
	ASSERT_ERRNO(ioctl(nul, BUS1_CMD_RECV, zbuf), ENOTTY);
	ASSERT_ERRNO(ioctl(nul, TCGETS, zbuf), ENOTTY);
	ASSERT_ERRNO(ioctl(-1, BUS1_CMD_PEER_QUERY, zbuf), EBADF);
	ASSERT_ERRNO(ioctl(987, BUS1_CMD_PEER_QUERY, zbuf), EBADF);
}

/* §8.5 / docs/design.md, fixed decision 6: a closed peer's fd number reused by a pipe is a pipe */
TEST(reused_fd_number_passthrough)
{
	int fd = b1_open(), p[2], n = -1;

	ASSERT_OK(close(fd));
	ASSERT_OK(pipe(p));
	ASSERT_TRUE(p[0] == fd || p[1] == fd);
	ASSERT_EQ(write(p[1], "q", 1), 1);
	ASSERT_OK(ioctl(p[0], FIONREAD, &n));
	ASSERT_EQ(n, 1);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY, zbuf), ENOTTY);
}

/* §2.0: dup()ed descriptors reach the same peer (ESHUTDOWN seen on both) */
TEST(dup_same_peer_dispatch)
{
	int fd = b1_open();
	int d = dup(fd);
	struct bus1_cmd_peer_reset q;

	ASSERT_GE(d, 0);
	ASSERT_EQ(b1_query(d, &q), 0);
	ASSERT_EQ(b1_disconnect(fd), 0);
	ASSERT_EQ(b1_query(d, &q), -ESHUTDOWN);
	ASSERT_EQ(b1_disconnect(d), -ESHUTDOWN);
	ASSERT_ERRNO(ioctl(d, _IOWR(BUS1_IOCTL_MAGIC, 0x03, __u64), zbuf), ESHUTDOWN);
}

/* §1.6: the 48-byte man-page numbers are bus1 commands on a live peer */
TEST(u64_variants_dispatched)
{
	int fd = b1_open();
	struct bus1_cmd_peer_reset_u64 q;

	memset(&q, 0, sizeof(q));
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_QUERY_U64, &q), 0);
	ASSERT_EQ_U64(q.max_slices, 16384);
	q.flags = 0;
	q.peer_flags = (uint64_t)-1;
	q.max_slices = q.max_handles = (uint64_t)-1;
	q.max_inflight_bytes = q.max_inflight_fds = (uint64_t)-1;
	ASSERT_EQ(b1_ioctl(fd, BUS1_CMD_PEER_RESET_U64, &q), 0);
	/* other sizes of the same nr are still unknown */
	ASSERT_ERRNO(ioctl(fd, _IOWR(BUS1_IOCTL_MAGIC, 0x01, __u64), zbuf), ENOTTY);
	ASSERT_ERRNO(ioctl(fd, _IOWR(BUS1_IOCTL_MAGIC, 0x02, struct bus1_cmd_send), zbuf), ENOTTY);
}
