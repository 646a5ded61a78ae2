/* SPDX-License-Identifier: MIT */
/*
 * Peer descriptors that travel between processes: inherited through fork,
 * duplicated, passed with SCM_RIGHTS, or kept across execve. In the new
 * process the descriptor is the same peer on its first use (ioctl, mmap,
 * HANDLE_TRANSFER destination), with no set-up call (§1.1, §8.5), and the
 * open file description's last close disconnects the peer wherever it
 * happens (§8.5, §8.6).
 */
#define _GNU_SOURCE
#include <spawn.h>

#include "mp-util.h"

/* A message "payload" from b to a's node 0x100. */
static uint64_t send_setup(int a, int b, const char *payload)
{
	uint64_t h = mp_node(a, 0x100, b);

	ASSERT_EQ(b1_send_one(b, h, payload, strlen(payload)), 0);
	return h;
}

/*
 * The owner of b's handle h is gone (§8.5, §8.6): SEND to h fails with
 * ESHUTDOWN and b gets NODE_DESTROY for h. A last close made through the C
 * library (close, or exit() closing the process's peer fds) disconnects the
 * peer before it returns (and before waitpid() reports a child whose exit
 * closed it), so SEND is checked first, without waiting.
 */
static void expect_owner_gone(int b, uint64_t h)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
	ASSERT_EQ(mp_recv_wait(b, &r, 0, MP_WAIT_MS), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, h);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
}

/*
 * The same when the last fd went away behind the C library's back (_exit,
 * execve closing it, a received fd the process never used): the shim tears
 * the peer down within a bounded time (docs/design.md, fixed decision 5), so b first
 * waits for the NODE_DESTROY; a SEND made before it may still succeed (the
 * message is dropped with the peer's queue).
 */
static void expect_owner_gone_soon(int b, uint64_t h)
{
	struct bus1_cmd_recv r;

	for (;;) {
		ASSERT_EQ(mp_recv_wait(b, &r, 0, MP_WAIT_MS), 0);
		if (r.msg.type == BUS1_MSG_NODE_DESTROY)
			break;
	}
	ASSERT_EQ_U64(r.msg.destination, h);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
}

/* §4.6: a forked child's SEND on an inherited fd carries the child's pid/tid */
TEST(fork_child_sends_on_inherited_fd)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;
	pid_t pid = mp_fork();

	if (pid == 0) {
		ASSERT_EQ(b1_send_one(b, h, "forked", 6), 0);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_EQ(r.msg.pid, pid);
	ASSERT_EQ(r.msg.tid, pid);
	ASSERT_EQ(r.msg.n_bytes, 6);
	ASSERT_MEMEQ(pool + r.msg.offset, "forked", 6);
}

/*
 * §2.9, §5.3: a forked child receives on the inherited fd and maps the pool
 * itself; the message and the slice are gone for the parent too (same peer).
 */
TEST(fork_child_receives_and_maps)
{
	int a = b1_open(), b = b1_open();
	struct bus1_cmd_recv r;
	pid_t pid;

	send_setup(a, b, "to the child");
	pid = mp_fork();
	if (pid == 0) {
		const uint8_t *pool = b1_map(a);

		ASSERT_EQ(b1_recv(a, &r, 0), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
		ASSERT_EQ_U64(r.msg.destination, 0x100);
		ASSERT_EQ(r.msg.n_bytes, 12);
		ASSERT_EQ_U64(r.msg.offset, 0);
		ASSERT_MEMEQ(pool + r.msg.offset, "to the child", 12);
		ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
	ASSERT_FALSE(b1_revents(a, POLLIN) & POLLIN);
}

/*
 * Exec'd entry: duplicates the inherited peer fd with the method argv[1],
 * closes the original and uses only the duplicate (first use: RECV, or mmap
 * with "map-first"); expects the payload argv[2] at offset 0.
 */
T_CHILD(dup_recv)
{
	int fd = mp_arg(argv[0]), d = -1;
	const char *how = argv[1], *want = argv[2];
	int map_first = argc > 3 && !strcmp(argv[3], "map-first");
	const uint8_t *pool = NULL;
	struct bus1_cmd_recv r;

	if (!strcmp(how, "dup"))
		d = dup(fd);
	else if (!strcmp(how, "dup2"))
		d = dup2(fd, 100);
	else if (!strcmp(how, "dup3"))
		d = dup3(fd, 101, O_CLOEXEC);
	else if (!strcmp(how, "F_DUPFD"))
		d = fcntl(fd, F_DUPFD, 200);
	else if (!strcmp(how, "F_DUPFD_CLOEXEC"))
		d = fcntl(fd, F_DUPFD_CLOEXEC, 300);
	ASSERT_GE(d, 0);
	ASSERT_NE(d, fd);
	ASSERT_OK(close(fd));
	if (map_first)
		pool = b1_map(d);
	ASSERT_EQ(b1_recv(d, &r, 0), 0);
	if (!map_first)
		pool = b1_map(d);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_EQ(r.msg.n_bytes, strlen(want));
	ASSERT_EQ_U64(r.msg.offset, 0);
	ASSERT_MEMEQ(pool, want, strlen(want));
	ASSERT_EQ(b1_slice_release(d, 0), 0);
	return 0;
}

/*
 * §1.1, §8.5: a duplicate made in an exec'd process is the same peer on its
 * first use, and closing the original there does not disconnect it.
 */
static void dup_in_exec_child(const char *how, const char *mode)
{
	int a = mp_open_inherit(), b = b1_open();
	uint64_t h = send_setup(a, b, how);
	struct bus1_cmd_peer_reset q;
	struct bus1_cmd_recv r;

	mp_reap(mp_spawn("dup_recv", mp_str(a), how, how, mode, (char *)NULL));
	/* the child consumed the message and released its slice */
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
	/* still connected: the parent's fd keeps the peer */
	ASSERT_EQ(b1_query(a, &q), 0);
	ASSERT_EQ(b1_send_one(b, h, "again", 5), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 5);
}

/* §1.1: dup() of an inherited peer fd, first use RECV */
TEST(dup_in_exec_child)
{
	dup_in_exec_child("dup", "recv-first");
}

/* §1.1: dup2() of an inherited peer fd, first use RECV */
TEST(dup2_in_exec_child)
{
	dup_in_exec_child("dup2", "recv-first");
}

/* §1.1, §5.4: dup3(O_CLOEXEC) of an inherited peer fd, first use mmap */
TEST(dup3_in_exec_child)
{
	dup_in_exec_child("dup3", "map-first");
}

/* §1.1: fcntl(F_DUPFD) of an inherited peer fd, first use RECV */
TEST(fcntl_dupfd_in_exec_child)
{
	dup_in_exec_child("F_DUPFD", "recv-first");
}

/* §1.1, §5.4: fcntl(F_DUPFD_CLOEXEC) of an inherited peer fd, first use mmap */
TEST(fcntl_dupfd_cloexec_in_exec_child)
{
	dup_in_exec_child("F_DUPFD_CLOEXEC", "map-first");
}

/*
 * §8.5: closing one of two fds of the open file description keeps the peer;
 * closing the last one disconnects it (the holder sees ESHUTDOWN and a
 * NODE_DESTROY).
 */
TEST(dup_close_original_then_last)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_recv r;
	int d = dup(a);

	ASSERT_GE(d, 0);
	ASSERT_OK(close(a));
	ASSERT_EQ(b1_send_one(b, h, "dup", 3), 0);
	ASSERT_EQ(b1_recv(d, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_OK(close(d));
	expect_owner_gone(b, h);
}

/*
 * §8.5: dup2() onto the last fd of another peer closes that peer; the fd
 * number then names the duplicated peer.
 */
TEST(dup2_over_last_fd_disconnects)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t ha = mp_node(a, 0x100, b);
	uint64_t hc = mp_node(c, 0x200, b);
	struct bus1_cmd_recv r;

	ASSERT_EQ(dup2(a, c), c);
	expect_owner_gone(b, hc);
	ASSERT_EQ(b1_send_one(b, ha, "to a", 4), 0);
	ASSERT_EQ(b1_recv(c, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}

/* Exec'd entry: receives a peer fd over socket argv[0]; first use is RECV. */
T_CHILD(scm_recv)
{
	int sock = mp_arg(argv[0]);
	const char *want = argv[1];
	int fd = mp_recv_fd(sock);
	struct bus1_cmd_recv r;
	const uint8_t *pool;

	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_EQ(r.msg.n_bytes, strlen(want));
	pool = b1_map(fd);
	ASSERT_MEMEQ(pool + r.msg.offset, want, strlen(want));
	ASSERT_EQ(b1_slice_release(fd, r.msg.offset), 0);
	return 0;
}

/* §1.1: a peer fd received with SCM_RIGHTS works on its first ioctl */
TEST(scm_rights_first_use_recv)
{
	int a = b1_open(), b = b1_open();
	int sv[2];
	struct bus1_cmd_recv r;
	pid_t pid;

	mp_socketpair(sv);
	send_setup(a, b, "over the socket");
	pid = mp_spawn("scm_recv", mp_str(sv[1]), "over the socket", (char *)NULL);
	mp_send_fd(sv[0], a);
	mp_reap(pid);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_slice_release(a, 0), -ENXIO);
}

/*
 * Exec'd entry: receives a peer fd over socket argv[0]; its first use is
 * mmap; expects argv[2] at pool offset argv[1] and releases that slice.
 */
T_CHILD(scm_map_first)
{
	int sock = mp_arg(argv[0]);
	uint64_t off = mp_arg_u64(argv[1]);
	const char *want = argv[2];
	int fd = mp_recv_fd(sock);
	const uint8_t *pool = b1_map(fd);

	ASSERT_MEMEQ(pool + off, want, strlen(want));
	ASSERT_EQ(b1_slice_release(fd, off), 0);
	return 0;
}

/*
 * §5.4, §2.7: the first use of a received peer fd may be mmap; the mapping
 * shows the slice the parent received, and the child can release it.
 */
TEST(scm_rights_first_use_mmap)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_recv r;
	int sv[2];
	pid_t pid;

	mp_socketpair(sv);
	ASSERT_EQ(b1_send_one(b, h, "first", 5), 0);
	ASSERT_EQ(b1_send_one(b, h, "second message", 14), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.offset, 8);
	pid = mp_spawn("scm_map_first", mp_str(sv[1]), mp_str(8), "second message", (char *)NULL);
	mp_send_fd(sv[0], a);
	mp_reap(pid);
	ASSERT_EQ(b1_slice_release(a, 8), -ENXIO);
	ASSERT_EQ(b1_slice_release(a, 0), 0);
}

/*
 * §8.5: a peer whose creator sent its fd away and exited stays alive while
 * the fd is in flight and after it was received; its first use in the
 * receiving process is as HANDLE_TRANSFER source.
 */
TEST(scm_rights_creator_exits)
{
	int a = b1_open();
	int sv[2], x;
	uint64_t h;
	struct bus1_cmd_recv r;
	pid_t pid;

	mp_socketpair(sv);
	pid = mp_fork();
	if (pid == 0) {
		int c = b1_open();

		mp_send_fd(sv[1], c);
		ASSERT_OK(close(c));
		_exit(0);
	}
	mp_reap(pid);
	x = mp_recv_fd(sv[0]);
	h = mp_node(x, 0x200, a);
	ASSERT_EQ_U64(h, 0xB);
	ASSERT_EQ(b1_send_one(a, h, "alive", 5), 0);
	ASSERT_EQ(b1_recv(x, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x200);
	ASSERT_EQ(r.msg.n_bytes, 5);
}

/*
 * Exec'd entry: peer fd argv[0] kept across exec; receives a message that
 * carries a handle (expected ID argv[1]) and answers through that handle.
 */
T_CHILD(exec_reply)
{
	int fd = mp_arg(argv[0]);
	uint64_t want = mp_arg_u64(argv[1]);
	struct bus1_cmd_recv r;
	const uint8_t *pool;

	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	pool = b1_map(fd);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.n_bytes, 4);
	ASSERT_MEMEQ(pool + r.msg.offset, "ping", 4);
	ASSERT_EQ(r.msg.n_handles, 1);
	ASSERT_EQ_U64(mp_slice_handle(pool, &r, 0), want);
	ASSERT_EQ(b1_send_one(fd, want, "pong", 4), 0);
	return 0;
}

/*
 * §1.1, §3.6, §3.9: a peer fd opened without O_CLOEXEC survives execve; the
 * new image receives a message with a handle (coalesced with the handle it
 * already holds) and replies through it.
 */
TEST(exec_keeps_peer_without_cloexec)
{
	int a = mp_open_inherit(), b = b1_open();
	uint64_t ha = mp_node(a, 0x100, b);
	uint64_t hb = mp_node(b, 0x300, a);
	uint64_t node = 0x300;
	struct iovec v = { "ping", 4 };
	const uint8_t *pool = b1_map(b);
	struct bus1_cmd_recv r;
	pid_t pid;

	ASSERT_EQ_U64(hb, 0xB);
	ASSERT_EQ(b1_send(b, 0, &ha, 1, NULL, &v, 1, &node, 1, NULL, 0), 0);
	pid = mp_spawn("exec_reply", mp_str(a), mp_hex(hb), (char *)NULL);
	mp_reap(pid);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x300);
	ASSERT_EQ(r.msg.pid, pid);
	ASSERT_MEMEQ(pool + r.msg.offset, "pong", 4);
}

/* Exec'd entry: the O_CLOEXEC peer fd argv[0] must not exist here. */
T_CHILD(fd_closed)
{
	int fd = mp_arg(argv[0]);

	ASSERT_ERRNO(fcntl(fd, F_GETFD), EBADF);
	return 0;
}

/*
 * §8.5: b1_open()'s O_CLOEXEC fd is closed by execve; when that was the
 * last fd of the peer, the peer is disconnected.
 */
TEST(last_close_by_exec)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	pid_t pid = mp_fork();

	if (pid == 0) {
		execl(t_self_exe(), t_self_exe(), "--child", "fd_closed", mp_str(a), (char *)NULL);
		_exit(127);
	}
	ASSERT_OK(close(a));
	mp_reap(pid);
	expect_owner_gone_soon(b, h);
}

/* §8.5: the last fd closed by a child's explicit close() disconnects the peer */
TEST(last_close_by_child_close)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_peer_reset q;
	int go[2];
	pid_t pid;

	mp_pipe(go);
	pid = mp_fork();
	if (pid == 0) {
		char c;

		mp_get(go[0], &c, 1);
		ASSERT_EQ(b1_query(a, &q), 0);
		ASSERT_OK(close(a));
		_exit(0);
	}
	ASSERT_OK(close(a));
	mp_put(go[1], "g", 1);
	mp_reap(pid);
	expect_owner_gone(b, h);
}

/* §8.5: the last fd closed by a child's exit disconnects the peer */
TEST(last_close_by_child_exit)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_peer_reset q;
	int go[2];
	pid_t pid;

	mp_pipe(go);
	pid = mp_fork();
	if (pid == 0) {
		char c;

		mp_get(go[0], &c, 1);
		ASSERT_EQ(b1_query(a, &q), 0);
		_exit(0);
	}
	ASSERT_OK(close(a));
	mp_put(go[1], "g", 1);
	mp_reap(pid);
	expect_owner_gone_soon(b, h);
}

/*
 * §8.5, §2.5 step 5, §8.6: once the owner's last fd died with its process,
 * its node is destroyed: the holder gets NODE_DESTROY, HANDLE_TRANSFER of
 * its handle then succeeds with dst_handle = BUS1_HANDLE_INVALID and SEND
 * fails with ESHUTDOWN. The module disconnects synchronously on the last
 * close; the shim cannot see a process exit, and tears such a peer down
 * within a bounded time (docs/design.md, fixed decision 5), so the case first waits
 * for the notification.
 */
TEST(transfer_after_owner_exit_is_invalid)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_recv r;
	uint64_t x = 0;
	int go[2];
	pid_t pid;

	mp_pipe(go);
	pid = mp_fork();
	if (pid == 0) {
		char ch;

		mp_get(go[0], &ch, 1);
		_exit(0);
	}
	ASSERT_OK(close(a));
	mp_put(go[1], "g", 1);
	mp_reap(pid);
	/* the child's exit closed the last copy of a */
	ASSERT_EQ(mp_recv_wait(b, &r, 0, MP_WAIT_MS), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, h);
	ASSERT_EQ(b1_transfer(b, h, c, &x), 0);
	ASSERT_EQ_U64(x, BUS1_HANDLE_INVALID);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
}

/*
 * §8.5, §8.6: the owner's process exits holding the last fd while messages
 * are still queued to it (so no SEND needs to wake it); the holder is told
 * within a bounded time (docs/design.md, fixed decision 5), and SEND then fails.
 */
TEST(owner_exit_with_queued_messages)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_recv r;
	int go[2];
	pid_t pid;

	ASSERT_EQ(b1_send_one(b, h, "unread", 6), 0);
	mp_pipe(go);
	pid = mp_fork();
	if (pid == 0) {
		char ch;

		mp_get(go[0], &ch, 1);
		_exit(0);
	}
	ASSERT_OK(close(a));
	mp_put(go[1], "g", 1);
	mp_reap(pid);
	ASSERT_EQ(mp_recv_wait(b, &r, 0, MP_WAIT_MS), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, h);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
}

/*
 * Exec'd entry: receives a peer fd over socket argv[0] and never uses it;
 * closes it on request ("g" → "c"), then waits for "x".
 */
T_CHILD(hold_then_close)
{
	int sock = mp_arg(argv[0]);
	int fd = mp_recv_fd(sock);
	char c;

	mp_get(sock, &c, 1);
	ASSERT_OK(close(fd));
	mp_put(sock, "c", 1);
	mp_get(sock, &c, 1);
	return 0;
}

/*
 * §8.5: a process that received the peer fd over a socket and never used it
 * closes the last fd: the peer is disconnected all the same.
 */
TEST(last_close_of_unused_received_fd)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int sv[2];
	char c;
	pid_t pid;

	mp_socketpair(sv);
	pid = mp_spawn("hold_then_close", mp_str(sv[1]), (char *)NULL);
	mp_send_fd(sv[0], a);
	ASSERT_OK(close(a));
	mp_put(sv[0], "g", 1);
	mp_get(sv[0], &c, 1);
	/* the child is still running: its close alone must have done it */
	expect_owner_gone_soon(b, h);
	mp_put(sv[0], "x", 1);
	mp_reap(pid);
}

/*
 * Exec'd entry: opens its own peer, sends its fd over socket argv[0],
 * receives a handle ID for it and sends a message to that handle.
 */
T_CHILD(own_peer_send)
{
	int sock = mp_arg(argv[0]);
	int c = b1_open();
	uint64_t h;

	mp_send_fd(sock, c);
	h = mp_get_u64(sock);
	ASSERT_EQ(b1_send_one(c, h, "via dst_fd", 10), 0);
	return 0;
}

/*
 * §2.5 step 3, §3.3: HANDLE_TRANSFER with a dst_fd received over a socket;
 * the destination is a fresh peer, so its first remote handle ID is 0xB.
 */
TEST(transfer_to_received_dst_fd)
{
	int a = b1_open();
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;
	int sv[2], c;
	uint64_t h;
	pid_t pid;

	mp_socketpair(sv);
	pid = mp_spawn("own_peer_send", mp_str(sv[1]), (char *)NULL);
	c = mp_recv_fd(sv[0]);
	ASSERT_EQ(b1_transfer(a, 0x300, c, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
	mp_put_u64(sv[0], h);
	mp_reap(pid);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x300);
	ASSERT_EQ(r.msg.pid, pid);
	ASSERT_EQ(r.msg.n_bytes, 10);
	ASSERT_MEMEQ(pool + r.msg.offset, "via dst_fd", 10);
}

/*
 * Exec'd entry: receives another process's peer fd over socket argv[0] and
 * uses it (never used before in this process) as HANDLE_TRANSFER dst_fd.
 */
T_CHILD(transfer_into)
{
	int sock = mp_arg(argv[0]);
	int c = b1_open();
	int dst = mp_recv_fd(sock);
	struct bus1_cmd_recv r;
	const uint8_t *pool = b1_map(c);
	uint64_t h;

	ASSERT_EQ(b1_transfer(c, 0x400, dst, &h), 0);
	mp_put_u64(sock, h);
	ASSERT_EQ(mp_recv_wait(c, &r, 0, MP_WAIT_MS), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x400);
	ASSERT_EQ(r.msg.n_bytes, 4);
	ASSERT_MEMEQ(pool + r.msg.offset, "back", 4);
	return 0;
}

/* §2.5 step 3, §3.5: a received fd as transfer destination, used on first use */
TEST(transfer_into_received_fd)
{
	int a = b1_open();
	int sv[2];
	uint64_t h;
	pid_t pid;

	mp_socketpair(sv);
	pid = mp_spawn("transfer_into", mp_str(sv[1]), (char *)NULL);
	mp_send_fd(sv[0], a);
	h = mp_get_u64(sv[0]);
	ASSERT_EQ_U64(h, 0xB);
	ASSERT_EQ(b1_send_one(a, h, "back", 4), 0);
	mp_reap(pid);
	/* the transfer gave a exactly one user reference */
	ASSERT_EQ(b1_release(a, h), 0);
	ASSERT_EQ(b1_release(a, h), -ENXIO);
}

/*
 * Exec'd entry: receives a pipe end, a datagram unix socket and a
 * disconnected peer over socket argv[0] and checks them as dst_fd.
 */
T_CHILD(transfer_bad_dst)
{
	int sock = mp_arg(argv[0]);
	int c = b1_open();
	int pipe_r = mp_recv_fd(sock);
	int dgram = mp_recv_fd(sock);
	int dead = mp_recv_fd(sock);
	uint64_t h = 0x1234;
	struct bus1_cmd_handle_transfer t = {
		.src_handle = 0x100,
		.dst_fd = (uint64_t)-1,
	};

	ASSERT_EQ(b1_transfer(c, 0x100, pipe_r, &h), -EOPNOTSUPP);
	ASSERT_EQ(b1_transfer(c, 0x100, dgram, &h), -EOPNOTSUPP);
	ASSERT_EQ(b1_transfer(c, 0x100, dead, &h), -ESHUTDOWN);
	ASSERT_EQ(b1_transfer(c, 0x100, 999, &h), -EBADF);
	/* low 32 bits only: 1 << 32 | dead is the disconnected peer */
	t.dst_fd = (1ULL << 32) | (uint64_t)dead;
	ASSERT_EQ(b1_ioctl(c, BUS1_CMD_HANDLE_TRANSFER, &t), -ESHUTDOWN);
	return 0;
}

/*
 * §2.5 step 3: received descriptors as dst_fd: not a bus1 peer (even an
 * AF_UNIX datagram socket) → EOPNOTSUPP, a disconnected peer → ESHUTDOWN,
 * not open → EBADF.
 */
TEST(transfer_bad_received_dst_fd)
{
	int sv[2], p[2], dg[2];
	int dead = b1_open();
	pid_t pid;

	mp_socketpair(sv);
	mp_pipe(p);
	ASSERT_OK(socketpair(AF_UNIX, SOCK_DGRAM, 0, dg));
	ASSERT_EQ(b1_disconnect(dead), 0);
	pid = mp_spawn("transfer_bad_dst", mp_str(sv[1]), (char *)NULL);
	mp_send_fd(sv[0], p[0]);
	mp_send_fd(sv[0], dg[0]);
	mp_send_fd(sv[0], dead);
	mp_reap(pid);
}

/*
 * §2.1, §8.3: PEER_DISCONNECT in one process is seen by every process
 * sharing the peer: ESHUTDOWN for ioctls and mmap, POLLHUP alone, and a
 * second DISCONNECT gets ESHUTDOWN.
 */
TEST(disconnect_from_other_process)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_peer_reset q;
	struct bus1_cmd_recv r;
	pid_t pid;

	ASSERT_EQ(b1_query(a, &q), 0);
	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(b1_disconnect(a), 0);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_EQ(b1_query(a, &q), -ESHUTDOWN);
	ASSERT_EQ(b1_recv(a, &r, 0), -ESHUTDOWN);
	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ, MAP_SHARED, a, 0) == MAP_FAILED);
	ASSERT_EQ(errno, ESHUTDOWN);
	ASSERT_HUP(b1_revents(a, POLLIN | POLLOUT));
	ASSERT_EQ(b1_disconnect(a), -ESHUTDOWN);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, h);
}

/*
 * §8.5: a child that used the inherited fd and exits (closing its copy)
 * does not disconnect the peer: the parent still holds it.
 */
TEST(child_exit_keeps_shared_peer)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_recv r;
	pid_t pid;

	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(b1_send_one(b, h, "one", 3), 0);
		ASSERT_EQ(b1_recv(a, &r, 0), 0);
		_exit(0);
	}
	mp_reap(pid);
	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(b1_send_one(b, h, "two", 3), 0);
		ASSERT_OK(close(a));
		ASSERT_OK(close(b));
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.n_bytes, 3);
	ASSERT_EQ(b1_send_one(b, h, "three", 5), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 5);
	ASSERT_EQ(b1_revents(a, POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM), POLLOUT | POLLWRNORM);
}

/*
 * §8.5: the parent closes its fd; the child's inherited copy keeps the peer
 * connected, and the child keeps receiving until it exits.
 */
TEST(parent_close_child_keeps_peer)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int go[2];
	pid_t pid;

	mp_pipe(go);
	pid = mp_fork();
	if (pid == 0) {
		struct bus1_cmd_recv r;
		const uint8_t *pool;
		char c;

		mp_get(go[0], &c, 1);
		ASSERT_EQ(mp_recv_wait(a, &r, 0, MP_WAIT_MS), 0);
		pool = b1_map(a);
		ASSERT_EQ(r.msg.n_bytes, 5);
		ASSERT_MEMEQ(pool + r.msg.offset, "later", 5);
		_exit(0);
	}
	ASSERT_OK(close(a));
	ASSERT_EQ(b1_send_one(b, h, "later", 5), 0);
	mp_put(go[1], "g", 1);
	mp_reap(pid);
	expect_owner_gone_soon(b, h);
}

/*
 * §8.5: receiving (over a socket) a second fd for a peer the process already
 * has; closing the known fd keeps the peer, closing the received one last
 * disconnects it.
 */
TEST(scm_rights_second_fd_same_peer)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_recv r;
	int sv[2], a2;

	mp_socketpair(sv);
	mp_send_fd(sv[0], a);
	a2 = mp_recv_fd(sv[1]);
	ASSERT_NE(a2, a);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	ASSERT_OK(close(a));
	ASSERT_EQ(b1_recv(a2, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_OK(close(a2));
	expect_owner_gone(b, h);
}

/* Exec'd entry: peer fd at the fixed number 50 (placed by posix_spawn); RECV then mmap. */
T_CHILD(spawned_at_50)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(50, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 7);
	ASSERT_MEMEQ(b1_map(50) + r.msg.offset, "spawned", 7);
	return 0;
}

/*
 * §1.1: posix_spawn() file actions place an O_CLOEXEC peer fd at another
 * number in the new image (dup2 clears close-on-exec); it is the same peer
 * there on first use.
 */
TEST(posix_spawn_dup2_peer)
{
	int a = b1_open(), b = b1_open();
	posix_spawn_file_actions_t fa;
	char *argv[] = { (char *)t_self_exe(), "--child", "spawned_at_50", NULL };
	extern char **environ;
	struct bus1_cmd_recv r;
	pid_t pid;

	send_setup(a, b, "spawned");
	ASSERT_OK(posix_spawn_file_actions_init(&fa));
	ASSERT_OK(posix_spawn_file_actions_adddup2(&fa, a, 50));
	ASSERT_OK(posix_spawn(&pid, t_self_exe(), &fa, NULL, argv, environ));
	posix_spawn_file_actions_destroy(&fa);
	mp_reap(pid);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}

/*
 * §1.1, §8.5: a descriptor number that named one peer and was closed can
 * come back, over a socket, as another peer: it is that other peer.
 */
TEST(fd_number_reused_for_other_peer)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_peer_reset q;
	struct bus1_cmd_recv r;
	int sv[2], num, c;
	pid_t pid;

	mp_socketpair(sv);
	pid = mp_fork();
	if (pid == 0) {
		int x = b1_open();

		/* x's node 0x500, held by the child's copy of b */
		ASSERT_EQ(b1_transfer(x, 0x500, b, NULL), 0);
		mp_send_fd(sv[1], x);
		_exit(0);
	}
	/* use the number once as peer a, then close it */
	num = dup(a);
	ASSERT_GE(num, 0);
	ASSERT_EQ(b1_query(num, &q), 0);
	ASSERT_OK(close(num));
	c = mp_recv_fd(sv[0]);
	ASSERT_EQ(c, num);
	mp_reap(pid);
	/* c is x, not a: a's message does not show up there */
	ASSERT_EQ(b1_send_one(b, h, "for a", 5), 0);
	ASSERT_EQ(b1_recv(c, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	/* b's second remote handle (0x13, §3.3) is x's node: it arrives on c */
	ASSERT_EQ(b1_send_one(b, 0x13, "for x", 5), 0);
	ASSERT_EQ(b1_recv(c, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.destination, 0x500);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}
