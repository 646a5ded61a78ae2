/* SPDX-License-Identifier: MIT */
/*
 * File descriptors in messages across processes (§2.8 step 7.3, §2.9 step
 * 6.3, §4.4): the receiving process gets new descriptors (close-on-exec)
 * for the same open files; the message holds its own references while in
 * flight; the limits and errnos of §2.8/§4.7/§6.3 apply; and every
 * reference is dropped when the message is dequeued, flushed or never
 * received. Dropping is checked through a pipe: once the message's write
 * end is gone, the reader sees EOF.
 *
 * Pipes are created with O_CLOEXEC and after forking the processes that
 * must not hold them, so the only write ends are the ones a case counts.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdatomic.h>
#include <sys/un.h>

#include "mp-util.h"

static void pipe_cloexec(int p[2])
{
	if (pipe2(p, O_CLOEXEC) < 0)
		t_fail(__FILE__, __LINE__, "pipe2: %s", strerror(errno));
}

/* SEND of `data` plus n fds to one destination. */
static int send_fds(int fd, uint64_t dest, const char *data, const int *fds, size_t n)
{
	struct iovec v = { (void *)data, strlen(data) };

	return b1_send(fd, 0, &dest, 1, NULL, &v, 1, NULL, 0, fds, n);
}

/* How many descriptors of this process refer to the pipe (or file) with inode ino. */
static unsigned count_refs(ino_t ino)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	unsigned n = 0;

	ASSERT_TRUE(d != NULL);
	while ((e = readdir(d))) {
		struct stat st;

		if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
			continue;
		if (fstat(atoi(e->d_name), &st) == 0 && st.st_ino == ino && S_ISFIFO(st.st_mode))
			n++;
	}
	closedir(d);
	return n;
}

static ino_t ino_of(int fd)
{
	struct stat st;

	ASSERT_OK(fstat(fd, &st));
	return st.st_ino;
}

/*
 * Forks a receiver on peer fd: it waits for one DATA message, receives it
 * with INSTALL_FDS, writes `text` into every received fd and exits (which
 * closes them).
 */
static pid_t fork_writer(int fd, const char *text)
{
	pid_t pid = mp_fork();

	if (pid == 0) {
		const uint8_t *pool = b1_map(fd);
		struct bus1_cmd_recv r;

		ASSERT_EQ(mp_recv_wait(fd, &r, BUS1_RECV_FLAG_INSTALL_FDS, MP_WAIT_MS), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
		ASSERT_GT(r.msg.n_fds, 0);
		for (unsigned i = 0; i < r.msg.n_fds; i++) {
			int f = mp_slice_fd(pool, &r, i);

			ASSERT_EQ(write(f, text, strlen(text)), (ssize_t)strlen(text));
		}
		_exit(0);
	}
	return pid;
}

/*
 * §2.9 step 6.3, §4.4: the receiving process gets a working, close-on-exec
 * descriptor for the pipe's write end; the sender's reader sees the data,
 * then EOF once the receiver exits.
 */
TEST(pipe_end_to_child_receiver)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int p[2];
	char buf[8];
	pid_t pid = mp_fork();

	if (pid == 0) {
		const uint8_t *pool = b1_map(a);
		struct bus1_cmd_recv r;
		int fd;

		ASSERT_EQ(mp_recv_wait(a, &r, BUS1_RECV_FLAG_INSTALL_FDS, MP_WAIT_MS), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
		ASSERT_EQ(r.msg.n_bytes, 4);
		ASSERT_EQ(r.msg.n_handles, 0);
		ASSERT_EQ(r.msg.n_fds, 1);
		fd = mp_slice_fd(pool, &r, 0);
		ASSERT_GT(fd, 2);
		ASSERT_EQ(fcntl(fd, F_GETFD), FD_CLOEXEC);
		ASSERT_EQ(fcntl(fd, F_GETFL) & O_ACCMODE, O_WRONLY);
		ASSERT_EQ(write(fd, "hello", 5), 5);
		_exit(0);
	}
	pipe_cloexec(p);
	ASSERT_EQ(send_fds(b, h, "pipe", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	mp_get(p[0], buf, 5);
	ASSERT_MEMEQ(buf, "hello", 5);
	mp_reap(pid);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * §4.4: the received descriptor refers to the same open file description:
 * same st_dev/st_ino, and the file offset is shared with the sender.
 */
TEST(same_open_file_across_processes)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	char path[] = "/tmp/bus1-mp-fdpass-XXXXXX";
	int f = mkstemp(path);
	struct stat st;
	pid_t pid;

	ASSERT_GE(f, 0);
	ASSERT_OK(unlink(path));
	ASSERT_EQ(write(f, "0123456789", 10), 10);
	ASSERT_EQ(lseek(f, 3, SEEK_SET), 3);
	ASSERT_OK(fstat(f, &st));
	ASSERT_EQ(send_fds(b, h, "file", &f, 1), 0);
	pid = mp_fork();
	if (pid == 0) {
		const uint8_t *pool = b1_map(a);
		struct bus1_cmd_recv r;
		struct stat st2;
		char buf[2];
		int fd;

		/* the child inherited f as well; use only the received one */
		ASSERT_OK(close(f));
		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
		ASSERT_EQ(r.msg.n_fds, 1);
		fd = mp_slice_fd(pool, &r, 0);
		ASSERT_OK(fstat(fd, &st2));
		ASSERT_EQ(st2.st_dev, st.st_dev);
		ASSERT_EQ(st2.st_ino, st.st_ino);
		ASSERT_EQ(lseek(fd, 0, SEEK_CUR), 3);
		ASSERT_EQ(read(fd, buf, 2), 2);
		ASSERT_MEMEQ(buf, "34", 2);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_EQ(lseek(f, 0, SEEK_CUR), 5);
}

/*
 * §2.8 step 7.3, §8.6: the message keeps its fds alive although the
 * sending process closed them and exited before the message was received.
 */
TEST(fds_survive_sender_exit)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_recv r;
	int sv[2], rd;
	char buf[8];
	pid_t snd, rcv;

	mp_socketpair(sv);
	snd = mp_fork();
	if (snd == 0) {
		int p[2];

		pipe_cloexec(p);
		ASSERT_EQ(send_fds(b, h, "from the dead", &p[1], 1), 0);
		ASSERT_OK(close(p[1]));
		mp_send_fd(sv[1], p[0]);
		ASSERT_OK(close(p[0]));
		ASSERT_OK(close(b));
		_exit(0);
	}
	rd = mp_recv_fd(sv[0]);
	mp_reap(snd);
	/* only the queued message holds the write end now */
	ASSERT_TRUE(mp_pipe_has_writer(rd));
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_EQ(r.msg.pid, snd);
	ASSERT_EQ(r.msg.n_fds, 1);
	rcv = fork_writer(a, "alive");
	mp_get(rd, buf, 5);
	ASSERT_MEMEQ(buf, "alive", 5);
	mp_reap(rcv);
	ASSERT_TRUE(mp_pipe_eof(rd, MP_WAIT_MS));
}

/*
 * §2.9 step 6.3, §4.4: RECV without INSTALL_FDS reports n_fds, installs
 * nothing (the fd area of the fresh pool stays zero) and drops the files.
 */
TEST(recv_without_install_drops_fds)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int ready[2], p[2];
	pid_t pid;

	mp_pipe(ready);
	pid = mp_fork();
	if (pid == 0) {
		const uint8_t *pool = b1_map(a);
		struct bus1_cmd_recv r;
		ino_t ino = mp_get_u64(ready[0]);

		ASSERT_EQ(b1_recv(a, &r, 0), 0);
		ASSERT_EQ(count_refs(ino), 0);
		ASSERT_EQ(r.msg.n_fds, 2);
		ASSERT_EQ(r.msg.n_bytes, 3);
		ASSERT_EQ(mp_slice_fd(pool, &r, 0), 0);
		ASSERT_EQ(mp_slice_fd(pool, &r, 1), 0);
		_exit(0);
	}
	pipe_cloexec(p);
	{
		int fds[2] = { p[1], p[1] };

		ASSERT_EQ(send_fds(b, h, "two", fds, 2), 0);
	}
	ASSERT_OK(close(p[1]));
	ASSERT_TRUE(mp_pipe_has_writer(p[0]));
	mp_put_u64(ready[1], ino_of(p[0]));
	mp_reap(pid);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * §2.9 PEEK, §4.4: every PEEK with INSTALL_FDS installs a fresh set in the
 * calling process, and the final RECV one more; all of them work.
 */
TEST(peek_installs_fresh_sets)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int ready[2], p[2];
	char buf[4];
	pid_t pid;

	mp_pipe(ready);
	pid = mp_fork();
	if (pid == 0) {
		const uint8_t *pool = b1_map(a);
		struct bus1_cmd_recv r;
		int f1, f2, f3;
		char c;

		mp_get(ready[0], &c, 1);
		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS), 0);
		f1 = mp_slice_fd(pool, &r, 0);
		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS), 0);
		f2 = mp_slice_fd(pool, &r, 0);
		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
		f3 = mp_slice_fd(pool, &r, 0);
		ASSERT_NE(f1, f2);
		ASSERT_NE(f2, f3);
		ASSERT_NE(f1, f3);
		ASSERT_EQ(write(f1, "1", 1), 1);
		ASSERT_EQ(write(f2, "2", 1), 1);
		ASSERT_EQ(write(f3, "3", 1), 1);
		ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
		_exit(0);
	}
	pipe_cloexec(p);
	ASSERT_EQ(send_fds(b, h, "peek", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	mp_put(ready[1], "g", 1);
	mp_get(p[0], buf, 3);
	ASSERT_MEMEQ(buf, "123", 3);
	mp_reap(pid);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * §4.4: descriptors are installed only in the process that calls RECV:
 * two processes sharing the peer each get their own working descriptor,
 * the third (the parent) gets none.
 */
TEST(install_only_in_calling_process)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int go1[2], go2[2], p[2];
	char buf[4];
	pid_t c1, c2;

	mp_pipe(go1);
	mp_pipe(go2);
	c1 = mp_fork();
	if (c1 == 0) {
		struct bus1_cmd_recv r;
		char c;

		mp_get(go1[0], &c, 1);
		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS), 0);
		ASSERT_EQ(write(mp_slice_fd(b1_map(a), &r, 0), "A", 1), 1);
		_exit(0);
	}
	c2 = mp_fork();
	if (c2 == 0) {
		struct bus1_cmd_recv r;
		char c;

		mp_get(go2[0], &c, 1);
		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
		ASSERT_EQ(write(mp_slice_fd(b1_map(a), &r, 0), "B", 1), 1);
		_exit(0);
	}
	pipe_cloexec(p);
	ASSERT_EQ(send_fds(b, h, "shared", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	mp_put(go1[1], "g", 1);
	mp_get(p[0], buf, 1);
	ASSERT_EQ(buf[0], 'A');
	mp_reap(c1);
	mp_put(go2[1], "g", 1);
	mp_get(p[0], buf, 1);
	ASSERT_EQ(buf[0], 'B');
	mp_reap(c2);
	/* nothing was installed here: only the read end refers to the pipe */
	ASSERT_EQ(count_refs(ino_of(p[0])), 1);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * §2.3 step 6.3, §2.9: a flushing reset issued by another process sharing
 * the receiver drops the queued message's files.
 */
TEST(flush_elsewhere_drops_queued_fds)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_recv r;
	int p[2];
	pid_t pid;

	pipe_cloexec(p);
	ASSERT_EQ(send_fds(b, h, "flushed", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	ASSERT_TRUE(mp_pipe_has_writer(p[0]));
	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}

/*
 * §2.9 PEEK, §2.3: descriptors installed by a PEEK stay valid after the
 * message is flushed; only their closing ends the pipe.
 */
TEST(peeked_fds_outlive_flush)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int ready[2], go[2], p[2];
	char c, buf[4];
	pid_t pid;

	mp_pipe(ready);
	mp_pipe(go);
	pid = mp_fork();
	if (pid == 0) {
		struct bus1_cmd_recv r;
		int fd;

		mp_get(go[0], &c, 1);
		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS), 0);
		fd = mp_slice_fd(b1_map(a), &r, 0);
		ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
		ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
		mp_put(ready[1], "r", 1);
		mp_get(go[0], &c, 1);
		ASSERT_EQ(write(fd, "ok", 2), 2);
		_exit(0);
	}
	pipe_cloexec(p);
	ASSERT_EQ(send_fds(b, h, "peek", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	mp_put(go[1], "g", 1);
	mp_get(ready[0], &c, 1);
	ASSERT_TRUE(mp_pipe_has_writer(p[0]));
	mp_put(go[1], "g", 1);
	mp_get(p[0], buf, 2);
	ASSERT_MEMEQ(buf, "ok", 2);
	mp_reap(pid);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * §8.5, §8.6: the receiver's last close (in its own process) discards the
 * never-received message and its files.
 */
TEST(receiver_close_drops_fds)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int go[2], p[2];
	pid_t pid;

	mp_pipe(go);
	pid = mp_fork();
	if (pid == 0) {
		char c;

		mp_get(go[0], &c, 1);
		ASSERT_OK(close(a));
		_exit(0);
	}
	ASSERT_OK(close(a));
	pipe_cloexec(p);
	ASSERT_EQ(send_fds(b, h, "never read", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	ASSERT_TRUE(mp_pipe_has_writer(p[0]));
	mp_put(go[1], "g", 1);
	mp_reap(pid);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/* §2.1, §8.6: PEER_DISCONNECT of the receiver, in another process, drops queued files */
TEST(receiver_disconnect_drops_fds)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int p[2];
	pid_t pid;

	pipe_cloexec(p);
	ASSERT_EQ(send_fds(b, h, "never read", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(b1_disconnect(a), 0);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * docs/design.md, fixed decision 5, §8.6: a receiver process killed with messages
 * carrying fds queued: the files are released within a bounded time.
 */
TEST(receiver_killed_drops_fds)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int ready[2], p[2];
	char c;
	pid_t pid;

	mp_pipe(ready);
	pid = mp_fork();
	if (pid == 0) {
		struct bus1_cmd_peer_reset q;

		ASSERT_EQ(b1_query(a, &q), 0);
		mp_put(ready[1], "r", 1);
		for (;;)
			pause();
	}
	ASSERT_OK(close(a));
	mp_get(ready[0], &c, 1);
	pipe_cloexec(p);
	ASSERT_EQ(send_fds(b, h, "one", &p[1], 1), 0);
	ASSERT_EQ(send_fds(b, h, "two", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	ASSERT_TRUE(mp_pipe_has_writer(p[0]));
	ASSERT_OK(kill(pid, SIGKILL));
	ASSERT_TRUE(WIFSIGNALED(mp_wait(pid)));
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * §3.11, §2.9 step 5: a message sent to a node destroyed before it is
 * discarded at RECV, and its files with it.
 */
TEST(discarded_message_drops_fds)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_recv r;
	int p[2];
	pid_t pid;

	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	pipe_cloexec(p);
	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(send_fds(b, h, "too late", &p[1], 1), 0);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_OK(close(p[1]));
	/* only the owner's own NODE_DESTROY is delivered */
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS), -EAGAIN);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * §2.8 "On any error ... file references are dropped": a SEND that fails
 * after the fds were taken keeps no reference to them.
 */
TEST(failed_send_keeps_no_fd)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	uint64_t dests[2] = { h, 0x7 };
	struct iovec v = { "x", 1 };
	struct bus1_cmd_recv r;
	int p[2], bad[2];
	pid_t pid;

	pipe_cloexec(p);
	bad[0] = p[1];
	bad[1] = -1;
	pid = mp_fork();
	if (pid == 0) {
		/* unknown remote-style second destination → ENXIO */
		ASSERT_EQ(b1_send(b, 0, dests, 2, NULL, &v, 1, NULL, 0, &p[1], 1), -ENXIO);
		/* second fd invalid → EBADF */
		ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, &v, 1, NULL, 0, bad, 2), -EBADF);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_OK(close(p[1]));
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}

/*
 * §2.8, §4.4: one multicast carrying a pipe end reaches receivers in two
 * processes; each gets its own working descriptor and the pipe ends only
 * when both are closed.
 */
TEST(multicast_fd_to_two_processes)
{
	int a1 = b1_open(), a2 = b1_open(), b = b1_open();
	uint64_t d[2] = { mp_node(a1, 0x100, b), mp_node(a2, 0x200, b) };
	struct iovec v = { "mc", 2 };
	int go[2], p[2];
	char buf[4];
	pid_t r1, r2;

	mp_pipe(go);
	r1 = fork_writer(a1, "1");
	r2 = mp_fork();
	if (r2 == 0) {
		const uint8_t *pool = b1_map(a2);
		struct bus1_cmd_recv r;
		char c;

		mp_get(go[0], &c, 1);
		ASSERT_EQ(b1_recv(a2, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
		ASSERT_EQ(r.msg.n_fds, 1);
		ASSERT_EQ(write(mp_slice_fd(pool, &r, 0), "2", 1), 1);
		mp_get(go[0], &c, 1);
		_exit(0);
	}
	pipe_cloexec(p);
	ASSERT_EQ(b1_send(b, 0, d, 2, NULL, &v, 1, NULL, 0, &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	mp_get(p[0], buf, 1);
	ASSERT_EQ(buf[0], '1');
	mp_reap(r1);
	mp_put(go[1], "g", 1);
	mp_get(p[0], buf, 1);
	ASSERT_EQ(buf[0], '2');
	/* r2 still holds its descriptor */
	ASSERT_TRUE(mp_pipe_has_writer(p[0]));
	mp_put(go[1], "g", 1);
	mp_reap(r2);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * §2.9 step 6.3, §4.1: a received descriptor can be sent on to a third
 * process in another message.
 */
TEST(received_fd_forwarded)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t ha = mp_node(a, 0x100, b);
	uint64_t hc = mp_node(c, 0x200, a);
	int p[2];
	char buf[8];
	pid_t mid, last;

	last = fork_writer(c, "relay");
	mid = mp_fork();
	if (mid == 0) {
		const uint8_t *pool = b1_map(a);
		struct bus1_cmd_recv r;
		int fd;

		ASSERT_EQ(mp_recv_wait(a, &r, BUS1_RECV_FLAG_INSTALL_FDS, MP_WAIT_MS), 0);
		fd = mp_slice_fd(pool, &r, 0);
		ASSERT_EQ(send_fds(a, hc, "fwd", &fd, 1), 0);
		_exit(0);
	}
	pipe_cloexec(p);
	ASSERT_EQ(send_fds(b, ha, "orig", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	mp_get(p[0], buf, 5);
	ASSERT_MEMEQ(buf, "relay", 5);
	mp_reap(mid);
	mp_reap(last);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

#define MANY 256

/*
 * §1.2, §4.7: BUS1_FD_MAX (256) descriptors in one message arrive in order
 * in another process (128 pipes, both ends), each close-on-exec with the
 * right access mode.
 */
TEST(max_fds_in_order)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	static int fds[MANY];
	static ino_t ino[MANY];
	struct stat st;
	pid_t pid;

	for (unsigned i = 0; i < MANY; i += 2) {
		pipe_cloexec(&fds[i]);
		ASSERT_OK(fstat(fds[i], &st));
		ino[i] = ino[i + 1] = st.st_ino;
	}
	ASSERT_EQ(send_fds(b, h, "many", fds, MANY), 0);
	pid = mp_fork();
	if (pid == 0) {
		const uint8_t *pool = b1_map(a);
		struct bus1_cmd_recv r;

		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
		ASSERT_EQ(r.msg.n_fds, MANY);
		for (unsigned i = 0; i < MANY; i++) {
			int fd = mp_slice_fd(pool, &r, i);

			ASSERT_OK(fstat(fd, &st));
			if (st.st_ino != ino[i])
				t_fail(__FILE__, __LINE__, "fd %u: inode %lu, want %lu", i,
				       (unsigned long)st.st_ino, (unsigned long)ino[i]);
			ASSERT_EQ(fcntl(fd, F_GETFL) & O_ACCMODE, i % 2 ? O_WRONLY : O_RDONLY);
			ASSERT_EQ(fcntl(fd, F_GETFD), FD_CLOEXEC);
		}
		_exit(0);
	}
	mp_reap(pid);
}

/*
 * §2.8 step 3, §2.8 step 7.3, §4.4: n_fds > 256 → EMSGSIZE before the array
 * is read; -1 or a closed fd → EBADF; a bus1 peer fd (also one received over
 * a socket and never used) or an AF_UNIX socket → EOPNOTSUPP.
 */
TEST(send_fd_errnos)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_send s = {
		.ptr_destinations = (uintptr_t)&h,
		.n_destinations = 1,
		.ptr_fds = (uintptr_t)b1_bad_ptr(),
		.n_fds = BUS1_FD_MAX + 1,
	};
	struct bus1_cmd_recv r;
	int sv[2], dg[2], fd;
	pid_t pid;

	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_SEND, &s), -EMSGSIZE);
	s.n_fds = 1;
	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_SEND, &s), -EFAULT);
	fd = -1;
	ASSERT_EQ(send_fds(b, h, "x", &fd, 1), -EBADF);
	fd = 999;
	ASSERT_EQ(send_fds(b, h, "x", &fd, 1), -EBADF);
	ASSERT_EQ(send_fds(b, h, "x", &a, 1), -EOPNOTSUPP);
	ASSERT_EQ(send_fds(b, h, "x", &b, 1), -EOPNOTSUPP);
	mp_socketpair(sv);
	ASSERT_EQ(send_fds(b, h, "x", &sv[0], 1), -EOPNOTSUPP);
	ASSERT_OK(socketpair(AF_UNIX, SOCK_DGRAM, 0, dg));
	ASSERT_EQ(send_fds(b, h, "x", &dg[0], 1), -EOPNOTSUPP);
	/* a peer fd this process has never used, received from another one */
	pid = mp_fork();
	if (pid == 0) {
		int c = b1_open();

		mp_send_fd(sv[1], c);
		_exit(0);
	}
	fd = mp_recv_fd(sv[0]);
	mp_reap(pid);
	ASSERT_EQ(send_fds(b, h, "x", &fd, 1), -EOPNOTSUPP);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}

/*
 * §2.8 step 7.3: an O_PATH descriptor is always accepted, even one for a
 * unix socket; the receiving process gets an O_PATH descriptor for the
 * same inode.
 */
TEST(o_path_fd_accepted)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	int s, o;
	pid_t pid;

	/* a bound unix socket in the domain directory */
	snprintf(path, sizeof(path), "%s/mp-o-path.sock", t_domain());
	s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ASSERT_GE(s, 0);
	memcpy(addr.sun_path, path, strlen(path) + 1);
	ASSERT_OK(bind(s, (struct sockaddr *)&addr, sizeof(addr)));
	o = open(path, O_PATH | O_CLOEXEC);
	ASSERT_GE(o, 0);
	ASSERT_OK(fstat(o, &st));
	ASSERT_TRUE(S_ISSOCK(st.st_mode));
	ASSERT_EQ(send_fds(b, h, "opath", &o, 1), 0);
	ASSERT_OK(close(o));
	pid = mp_fork();
	if (pid == 0) {
		const uint8_t *pool = b1_map(a);
		struct bus1_cmd_recv r;
		struct stat st2;
		int fd;

		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
		ASSERT_EQ(r.msg.n_fds, 1);
		fd = mp_slice_fd(pool, &r, 0);
		ASSERT_TRUE(fcntl(fd, F_GETFL) & O_PATH);
		ASSERT_OK(fstat(fd, &st2));
		ASSERT_EQ(st2.st_ino, st.st_ino);
		ASSERT_EQ(st2.st_dev, st.st_dev);
		_exit(0);
	}
	mp_reap(pid);
}

/*
 * Fills the descriptor table of this process (soft limit lowered to 64)
 * and frees exactly `free_slots` numbers.
 */
static void leave_free_slots(unsigned free_slots)
{
	struct rlimit rl;
	int last[64], n = 0, fd;

	ASSERT_OK(getrlimit(RLIMIT_NOFILE, &rl));
	rl.rlim_cur = 64;
	ASSERT_OK(setrlimit(RLIMIT_NOFILE, &rl));
	while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
		last[n++ % 64] = fd;
	ASSERT_EQ(errno, EMFILE);
	ASSERT_GE(n, (int)free_slots);
	for (unsigned i = 0; i < free_slots; i++)
		ASSERT_OK(close(last[(n - 1 - i) % 64]));
}

/*
 * §2.9 step 6.3: RECV with INSTALL_FDS needing more descriptor numbers than
 * the process has free fails with EMFILE, installs nothing and leaves the
 * message queued; with enough free numbers it succeeds. "Enough" is four
 * more than the message's fds: the shim's fd vault needs them while it
 * works (README, known limits).
 */
TEST(emfile_keeps_message_queued)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int ready[2], p[2];
	char c, buf[4];
	pid_t pid;

	mp_pipe(ready);
	pid = mp_fork();
	if (pid == 0) {
		const uint8_t *pool = b1_map(a);
		struct bus1_cmd_recv r;
		int f;

		mp_get(ready[0], &c, 1);
		leave_free_slots(2);
		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS), -EMFILE);
		/* still two free numbers, nothing was installed */
		f = dup(0);
		ASSERT_GE(f, 0);
		ASSERT_OK(close(f));
		/* five more free numbers: now exactly 3 + 4 */
		{
			struct rlimit rl;

			ASSERT_OK(getrlimit(RLIMIT_NOFILE, &rl));
			rl.rlim_cur += 4;
			ASSERT_OK(setrlimit(RLIMIT_NOFILE, &rl));
		}
		ASSERT_OK(close(ready[0]));
		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
		ASSERT_EQ(r.msg.n_fds, 3);
		/* the vault's descriptors are closed again: four numbers left */
		{
			int extra[4];

			for (unsigned i = 0; i < 4; i++)
				ASSERT_GE(extra[i] = dup(0), 0);
			ASSERT_ERRNO(dup(0), EMFILE);
			for (unsigned i = 0; i < 4; i++)
				ASSERT_OK(close(extra[i]));
		}
		for (unsigned i = 0; i < 3; i++)
			ASSERT_EQ(write(mp_slice_fd(pool, &r, i), "e", 1), 1);
		_exit(0);
	}
	pipe_cloexec(p);
	{
		int fds[3] = { p[1], p[1], p[1] };

		ASSERT_EQ(send_fds(b, h, "three", fds, 3), 0);
	}
	ASSERT_OK(close(p[1]));
	mp_put(ready[1], "g", 1);
	mp_get(p[0], buf, 3);
	ASSERT_MEMEQ(buf, "eee", 3);
	mp_reap(pid);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * §6.3, A.3: in-flight fds are charged to the receiver under the
 * fair-share rule: with max_inflight_fds = 2, one queued fd from the
 * (same-user) sender is allowed (2 ≥ 0 + 2), a second is not (1 < 1 + 2),
 * nor is a message with 2 fds (2 < 0 + 4); messages without fds are
 * unaffected; dequeuing gives the charge back.
 */
TEST(inflight_fd_quota_across_processes)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_peer_reset q = {
		.flags = 0,
		.peer_flags = (uint64_t)-1,
		.max_slices = (uint32_t)-1,
		.max_handles = (uint32_t)-1,
		.max_inflight_bytes = (uint32_t)-1,
		.max_inflight_fds = 2,
	};
	struct bus1_cmd_recv r;
	int go[2], done[2], p[2];
	char c;
	pid_t pid;

	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_PEER_RESET, &q), 0);
	ASSERT_EQ(b1_query(a, &q), 0);
	ASSERT_EQ(q.max_inflight_fds, 2);
	mp_pipe(go);
	mp_pipe(done);
	pipe_cloexec(p);
	pid = mp_fork();
	if (pid == 0) {
		int two[2] = { p[1], p[1] };

		ASSERT_EQ(send_fds(b, h, "two", two, 2), -EDQUOT);
		ASSERT_EQ(send_fds(b, h, "one", &p[1], 1), 0);
		ASSERT_EQ(send_fds(b, h, "one", &p[1], 1), -EDQUOT);
		ASSERT_EQ(b1_send_one(b, h, "none", 4), 0);
		mp_put(done[1], "d", 1);
		mp_get(go[0], &c, 1);
		ASSERT_EQ(send_fds(b, h, "again", &p[1], 1), 0);
		_exit(0);
	}
	ASSERT_OK(close(p[1]));
	mp_get(done[0], &c, 1);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_fds, 1);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_fds, 0);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	mp_put(go[1], "g", 1);
	mp_reap(pid);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_fds, 1);
	ASSERT_EQ(r.msg.n_bytes, 5);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * Exec'd entry: inherited peer argv[0]; the first use is RECV with
 * INSTALL_FDS; writes argv[1] into the received descriptor.
 */
T_CHILD(exec_install)
{
	int fd = mp_arg(argv[0]);
	const char *text = argv[1];
	struct bus1_cmd_recv r;
	int f;

	ASSERT_EQ(b1_recv(fd, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	ASSERT_EQ(r.msg.n_fds, 1);
	f = mp_slice_fd(b1_map(fd), &r, 0);
	ASSERT_EQ(fcntl(f, F_GETFD), FD_CLOEXEC);
	ASSERT_EQ(write(f, text, strlen(text)), (ssize_t)strlen(text));
	return 0;
}

/* §4.4, §1.1: an exec'd process installs fds on the first use of its inherited peer fd */
TEST(exec_receiver_installs_fds)
{
	int a = mp_open_inherit(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int p[2];
	char buf[8];

	pipe_cloexec(p);
	ASSERT_EQ(send_fds(b, h, "exec", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	mp_reap(mp_spawn("exec_install", mp_str(a), "exec'd", (char *)NULL));
	mp_get(p[0], buf, 6);
	ASSERT_MEMEQ(buf, "exec'd", 6);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * §8.6: a committed message keeps its files when the sending peer is
 * disconnected (by another process) before the message is received.
 */
TEST(fds_survive_sender_disconnect)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int p[2];
	char buf[8];
	pid_t pid;

	pipe_cloexec(p);
	ASSERT_EQ(send_fds(b, h, "orphan", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(b1_disconnect(b), 0);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_TRUE(mp_pipe_has_writer(p[0]));
	mp_reap(fork_writer(a, "kept"));
	mp_get(p[0], buf, 4);
	ASSERT_MEMEQ(buf, "kept", 4);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

#define FD_SENDERS 3
#define FD_EACH 400

struct fdrec {
	uint32_t sender;
	uint32_t seq;
};

/*
 * §2.8, §2.9, §4.4: senders in three processes interleave messages with
 * and without fds (each sender passes its own pipe); a receiver in a fourth
 * process installs them all. Every message arrives once, in per-sender
 * order, each fd refers to its sender's pipe, and afterwards every pipe
 * reaches EOF (no reference left anywhere).
 */
TEST_TIMEOUT(concurrent_fd_senders, 30)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int pipes[FD_SENDERS][2], go[2];
	pid_t rcv, snd[FD_SENDERS];

	rcv = mp_fork();
	if (rcv == 0) {
		const uint8_t *pool = b1_map(a);
		unsigned next[FD_SENDERS] = { 0 }, total = 0;

		while (total < FD_SENDERS * FD_EACH) {
			struct bus1_cmd_recv r;
			struct fdrec m;

			ASSERT_EQ(mp_recv_wait(a, &r, BUS1_RECV_FLAG_INSTALL_FDS, MP_WAIT_MS), 0);
			ASSERT_EQ(r.msg.n_bytes, sizeof(m));
			memcpy(&m, pool + r.msg.offset, sizeof(m));
			ASSERT_LT(m.sender, FD_SENDERS);
			ASSERT_EQ(m.seq, next[m.sender]);
			next[m.sender]++;
			total++;
			ASSERT_EQ(r.msg.n_fds, m.seq % 2);
			if (r.msg.n_fds) {
				int f = mp_slice_fd(pool, &r, 0);

				ASSERT_EQ(write(f, &m, sizeof(m)), (ssize_t)sizeof(m));
				ASSERT_OK(close(f));
			}
			ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
		}
		_exit(0);
	}
	mp_pipe(go);
	for (unsigned s = 0; s < FD_SENDERS; s++)
		pipe_cloexec(pipes[s]);
	for (unsigned s = 0; s < FD_SENDERS; s++) {
		snd[s] = mp_fork();
		if (snd[s] == 0) {
			char c;

			mp_get(go[0], &c, 1);
			for (unsigned q = 0; q < FD_EACH; q++) {
				struct fdrec m = { s, q };
				struct iovec v = { &m, sizeof(m) };

				ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, &v, 1, NULL, 0,
						  &pipes[s][1], q % 2), 0);
			}
			_exit(0);
		}
	}
	for (unsigned s = 0; s < FD_SENDERS; s++)
		ASSERT_OK(close(pipes[s][1]));
	mp_put(go[1], "gggggggg", FD_SENDERS);
	for (unsigned s = 0; s < FD_SENDERS; s++)
		mp_reap(snd[s]);
	mp_reap(rcv);
	for (unsigned s = 0; s < FD_SENDERS; s++) {
		struct fdrec recs[FD_EACH];
		ssize_t n = read(pipes[s][0], recs, sizeof(recs));

		ASSERT_EQ(n, (ssize_t)(FD_EACH / 2 * sizeof(struct fdrec)));
		for (unsigned i = 0; i < FD_EACH / 2; i++) {
			ASSERT_EQ(recs[i].sender, s);
			ASSERT_EQ(recs[i].seq, 2 * i + 1);
		}
		ASSERT_TRUE(mp_pipe_eof(pipes[s][0], MP_WAIT_MS));
	}
}

/*
 * §2.9 PEEK, §4.4: PEEK of a message with BUS1_FD_MAX fds installs the full
 * set, in order, every time; the final RECV a further one.
 */
TEST(peek_max_fds_repeatedly)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	static int fds[MANY];
	static ino_t ino[MANY];
	pid_t pid;

	for (unsigned i = 0; i < MANY; i += 2) {
		pipe_cloexec(&fds[i]);
		ino[i] = ino[i + 1] = ino_of(fds[i]);
	}
	ASSERT_EQ(send_fds(b, h, "many", fds, MANY), 0);
	pid = mp_fork();
	if (pid == 0) {
		const uint8_t *pool = b1_map(a);
		static const uint64_t flags[3] = {
			BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS,
			BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS,
			BUS1_RECV_FLAG_INSTALL_FDS,
		};

		for (unsigned k = 0; k < 3; k++) {
			struct bus1_cmd_recv r;

			ASSERT_EQ(b1_recv(a, &r, flags[k]), 0);
			ASSERT_EQ(r.msg.n_fds, MANY);
			for (unsigned i = 0; i < MANY; i++) {
				int fd = mp_slice_fd(pool, &r, i);

				if (ino_of(fd) != ino[i])
					t_fail(__FILE__, __LINE__, "pass %u fd %u: wrong file", k, i);
			}
		}
		{
			struct bus1_cmd_recv r;

			ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
		}
		_exit(0);
	}
	mp_reap(pid);
}

/*
 * §2.3, §4.4: after a flush dropped several queued fd messages (from two
 * processes), new fd messages are delivered normally.
 */
TEST(flush_then_new_fd_messages)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_recv r;
	int p[2], q[2];
	char buf[8];
	pid_t pid;

	pipe_cloexec(p);
	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(send_fds(b, h, "c1", &p[1], 1), 0);
		ASSERT_EQ(send_fds(b, h, "c2", &p[1], 1), 0);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_EQ(send_fds(b, h, "p1", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	/* the flush destroyed node 0x100: b's handle is dead; make a new one */
	h = mp_node(a, 0x200, b);
	pipe_cloexec(q);
	ASSERT_EQ(send_fds(b, h, "after", &q[1], 1), 0);
	ASSERT_OK(close(q[1]));
	mp_reap(fork_writer(a, "fresh"));
	mp_get(q[0], buf, 5);
	ASSERT_MEMEQ(buf, "fresh", 5);
	ASSERT_TRUE(mp_pipe_eof(q[0], MP_WAIT_MS));
}

/* SEND_FLAG_SEED of `data` with n fds. */
static int send_seed(int fd, const char *data, const int *fds, size_t n)
{
	struct iovec v = { (void *)data, strlen(data) };

	return b1_send(fd, BUS1_SEND_FLAG_SEED, NULL, 0, NULL, &v, 1, NULL, 0, fds, n);
}

/*
 * A.1, §4.9: a seed carries fds like any message; another process sharing
 * the peer reads it with RECV_FLAG_SEED | INSTALL_FDS (PEEK keeps it), and
 * FLUSH_SEED drops it together with its files.
 */
TEST(seed_fds_across_processes)
{
	int a = b1_open();
	struct bus1_cmd_recv r;
	int p[2];
	char buf[4];
	pid_t pid;

	pipe_cloexec(p);
	ASSERT_EQ(send_seed(a, "seed", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	pid = mp_fork();
	if (pid == 0) {
		const uint8_t *pool = b1_map(a);

		ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_SEED | BUS1_RECV_FLAG_PEEK |
				  BUS1_RECV_FLAG_INSTALL_FDS), 0);
		ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
		ASSERT_EQ(r.msg.n_bytes, 4);
		ASSERT_MEMEQ(pool + r.msg.offset, "seed", 4);
		ASSERT_EQ(r.msg.n_fds, 1);
		ASSERT_EQ(write(mp_slice_fd(pool, &r, 0), "s", 1), 1);
		_exit(0);
	}
	mp_reap(pid);
	mp_get(p[0], buf, 1);
	ASSERT_EQ(buf[0], 's');
	/* still held by the seed */
	ASSERT_TRUE(mp_pipe_has_writer(p[0]));
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH_SEED), 0);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_SEED), -EAGAIN);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
}

/*
 * A.1: replacing the seed (from another process sharing the peer) frees
 * the old seed and its files; the new seed's files stay.
 */
TEST(seed_replaced_drops_old_fds)
{
	int a = b1_open();
	int p[2], q[2];
	pid_t pid;

	pipe_cloexec(p);
	ASSERT_EQ(send_seed(a, "old", &p[1], 1), 0);
	ASSERT_OK(close(p[1]));
	pipe_cloexec(q);
	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(send_seed(a, "new", &q[1], 1), 0);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_OK(close(q[1]));
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
	ASSERT_TRUE(mp_pipe_has_writer(q[0]));
	ASSERT_OK(close(a));
	ASSERT_TRUE(mp_pipe_eof(q[0], MP_WAIT_MS));
}

/*
 * §2.9 step 6.8: RECV without INSTALL_FDS drops the dequeued message's
 * files even while another message with fds stays queued.
 */
TEST(recv_without_install_while_fd_message_queued)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	int p[2], q[2];
	pid_t pid;

	pipe_cloexec(p);
	pipe_cloexec(q);
	ASSERT_EQ(send_fds(b, h, "first", &p[1], 1), 0);
	ASSERT_EQ(send_fds(b, h, "second", &q[1], 1), 0);
	ASSERT_OK(close(p[1]));
	ASSERT_OK(close(q[1]));
	pid = mp_fork();
	if (pid == 0) {
		struct bus1_cmd_recv r;

		ASSERT_EQ(b1_recv(a, &r, 0), 0);
		ASSERT_EQ(r.msg.n_bytes, 5);
		ASSERT_EQ(r.msg.n_fds, 1);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
	ASSERT_TRUE(mp_pipe_has_writer(q[0]));
	ASSERT_OK(close(a));
	ASSERT_TRUE(mp_pipe_eof(q[0], MP_WAIT_MS));
}

/*
 * A.1, §2.3: FLUSH_SEED drops a seed (set by another process) and its files
 * while a message with fds stays queued; the message keeps its own.
 */
TEST(flush_seed_while_fd_message_queued)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	struct bus1_cmd_recv r;
	int p[2], q[2];
	pid_t pid;

	pipe_cloexec(p);
	pipe_cloexec(q);
	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(send_seed(a, "seed", &p[1], 1), 0);
		ASSERT_EQ(send_fds(b, h, "queued", &q[1], 1), 0);
		_exit(0);
	}
	mp_reap(pid);
	ASSERT_OK(close(p[1]));
	ASSERT_OK(close(q[1]));
	ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH_SEED), 0);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
	ASSERT_TRUE(mp_pipe_has_writer(q[0]));
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 6);
	ASSERT_TRUE(mp_pipe_eof(q[0], MP_WAIT_MS));
}

/*
 * §2.9 PEEK, §4.4: a process PEEKs a message with fds (installing them) and
 * exits; another process sharing the peer then RECVs the same message and
 * gets working descriptors too.
 */
TEST(peek_in_child_then_recv_in_parent)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;
	int p[2], q[2];
	char buf[4];
	pid_t pid;

	pid = mp_fork();
	if (pid == 0) {
		ASSERT_EQ(mp_recv_wait(a, &r, BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS,
				       MP_WAIT_MS), 0);
		ASSERT_EQ(r.msg.n_fds, 2);
		ASSERT_EQ(write(mp_slice_fd(b1_map(a), &r, 0), "c", 1), 1);
		ASSERT_EQ(write(mp_slice_fd(b1_map(a), &r, 1), "C", 1), 1);
		_exit(0);
	}
	pipe_cloexec(p);
	pipe_cloexec(q);
	{
		int fds[2] = { p[1], q[1] };

		ASSERT_EQ(send_fds(b, h, "peeked", fds, 2), 0);
	}
	ASSERT_OK(close(p[1]));
	ASSERT_OK(close(q[1]));
	mp_reap(pid);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	ASSERT_EQ(r.msg.n_fds, 2);
	ASSERT_MEMEQ(pool + r.msg.offset, "peeked", 6);
	ASSERT_EQ(write(mp_slice_fd(pool, &r, 0), "p", 1), 1);
	ASSERT_EQ(write(mp_slice_fd(pool, &r, 1), "P", 1), 1);
	ASSERT_OK(close(mp_slice_fd(pool, &r, 0)));
	ASSERT_OK(close(mp_slice_fd(pool, &r, 1)));
	mp_get(p[0], buf, 2);
	ASSERT_MEMEQ(buf, "cp", 2);
	mp_get(q[0], buf, 2);
	ASSERT_MEMEQ(buf, "CP", 2);
	ASSERT_TRUE(mp_pipe_eof(p[0], MP_WAIT_MS));
	ASSERT_TRUE(mp_pipe_eof(q[0], MP_WAIT_MS));
}

#define SHR_RECEIVERS 2
#define SHR_SENDERS 2
#define SHR_EACH 300

/*
 * §2.9, §4.4: two processes sharing one receiving peer race for messages
 * that carry fds from two sender processes: every message is installed by
 * exactly one of them, and every descriptor is the right sender's pipe.
 */
TEST_TIMEOUT(shared_receivers_install_fds, 30)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = mp_node(a, 0x100, b);
	atomic_uint *total = mmap(NULL, sizeof(*total), PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int pipes[SHR_SENDERS][2], go[2];
	pid_t rcv[SHR_RECEIVERS], snd[SHR_SENDERS];

	ASSERT_TRUE(total != MAP_FAILED);
	for (unsigned i = 0; i < SHR_RECEIVERS; i++) {
		rcv[i] = mp_fork();
		if (rcv[i] == 0) {
			const uint8_t *pool = b1_map(a);
			double end = mp_now_ms() + 20000;

			while (atomic_load(total) < SHR_SENDERS * SHR_EACH) {
				struct bus1_cmd_recv r;
				struct fdrec m;
				int ret = b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS);
				int f;

				if (ret == -EAGAIN) {
					ASSERT_LT(mp_now_ms(), end);
					mp_poll_wait(a, POLLIN, 50);
					continue;
				}
				ASSERT_EQ(ret, 0);
				ASSERT_EQ(r.msg.n_fds, 1);
				memcpy(&m, pool + r.msg.offset, sizeof(m));
				f = mp_slice_fd(pool, &r, 0);
				ASSERT_GE(f, 0);
				ASSERT_EQ(write(f, &m, sizeof(m)), (ssize_t)sizeof(m));
				ASSERT_OK(close(f));
				ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
				atomic_fetch_add(total, 1);
			}
			_exit(0);
		}
	}
	mp_pipe(go);
	for (unsigned s = 0; s < SHR_SENDERS; s++)
		pipe_cloexec(pipes[s]);
	for (unsigned s = 0; s < SHR_SENDERS; s++) {
		snd[s] = mp_fork();
		if (snd[s] == 0) {
			char c;

			mp_get(go[0], &c, 1);
			for (unsigned q = 0; q < SHR_EACH; q++) {
				struct fdrec m = { s, q };
				struct iovec v = { &m, sizeof(m) };

				ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, &v, 1, NULL, 0,
						  &pipes[s][1], 1), 0);
			}
			_exit(0);
		}
	}
	for (unsigned s = 0; s < SHR_SENDERS; s++)
		ASSERT_OK(close(pipes[s][1]));
	mp_put(go[1], "gggg", SHR_SENDERS);
	for (unsigned s = 0; s < SHR_SENDERS; s++)
		mp_reap(snd[s]);
	for (unsigned i = 0; i < SHR_RECEIVERS; i++)
		mp_reap(rcv[i]);
	for (unsigned s = 0; s < SHR_SENDERS; s++) {
		struct fdrec recs[SHR_EACH + 1];
		unsigned char seen[SHR_EACH] = { 0 };
		ssize_t n = read(pipes[s][0], recs, sizeof(recs));

		ASSERT_EQ(n, (ssize_t)(SHR_EACH * sizeof(struct fdrec)));
		for (unsigned i = 0; i < SHR_EACH; i++) {
			ASSERT_EQ(recs[i].sender, s);
			ASSERT_LT(recs[i].seq, SHR_EACH);
			ASSERT_EQ(seen[recs[i].seq], 0);
			seen[recs[i].seq] = 1;
		}
		ASSERT_TRUE(mp_pipe_eof(pipes[s][0], MP_WAIT_MS));
	}
}
