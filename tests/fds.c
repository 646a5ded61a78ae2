/* SPDX-License-Identifier: MIT */
/*
 * File descriptors in messages (§2.8 step 7.3, §2.9 step 6.3,
 * 4.4): which fds SEND accepts, installation with INSTALL_FDS (fresh
 * close-on-exec numbers in the slice), n_fds without installation, PEEK,
 * EMFILE, and that every message holds its own file references, which go
 * away when it is dequeued without INSTALL_FDS, discarded or never sent.
 *
 * Whether a file reference is still held anywhere is observed through a
 * pipe: its non-blocking read end reports EOF only once no write end is
 * left open in any message or process.
 */
#define _GNU_SOURCE
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>

#include "bus1-util.h"

static int send_fds(int fd, const uint64_t *d, size_t nd, const int *fds, size_t n)
{
	struct iovec v = { "fd", 2 };

	return b1_send(fd, 0, d, nd, NULL, &v, 1, NULL, 0, fds, n);
}

/* A pipe whose read end is non-blocking. */
static void mkpipe(int p[2])
{
	ASSERT_OK(pipe(p));
	ASSERT_OK(fcntl(p[0], F_SETFL, O_NONBLOCK));
}

/* The pipe has no writer left anywhere. */
static void assert_eof(int rd)
{
	char c;

	ASSERT_EQ(read(rd, &c, 1), 0);
}

/* Some write end of the pipe is still open somewhere. */
static void assert_writer_alive(int rd)
{
	char c;

	ASSERT_ERRNO(read(rd, &c, 1), EAGAIN);
}

/* Installed fd numbers of a received message (offset A(2) = 8). */
static void installed(int fd, const struct bus1_cmd_recv *r, int *out, size_t n)
{
	static const uint8_t *pool[64];

	if (!pool[fd])
		pool[fd] = b1_map(fd);
	ASSERT_EQ(r->msg.n_fds, n);
	memcpy(out, pool[fd] + r->msg.offset + 8, 4 * n);
}

/* §2.8 step 7.3: EFAULT / EBADF / EOPNOTSUPP, the first failing fd decides */
TEST(fds_validation)
{
	int a = b1_open(), b = b1_open(), other = b1_open(), sp[2], p[2], closed;
	uint64_t h = b1_handle_to(b, 0x100, a);
	int *fe = b1_edge(4), f[2];

	mkpipe(p);
	ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp));
	/* a number that is certainly not open */
	closed = 4000;
	ASSERT_ERRNO(fcntl(closed, F_GETFD), EBADF);

	ASSERT_EQ(send_fds(a, &h, 1, b1_bad_ptr(), 1), -EFAULT);
	fe[0] = p[1];
	ASSERT_EQ(send_fds(a, &h, 1, fe, 2), -EFAULT);
	f[0] = -1;
	ASSERT_EQ(send_fds(a, &h, 1, f, 1), -EBADF);
	f[0] = -2147483647 - 1;
	ASSERT_EQ(send_fds(a, &h, 1, f, 1), -EBADF);
	f[0] = closed;
	ASSERT_EQ(send_fds(a, &h, 1, f, 1), -EBADF);
	f[0] = 100000;
	ASSERT_EQ(send_fds(a, &h, 1, f, 1), -EBADF);
	/* bus1 peers, including the caller's own fd */
	f[0] = other;
	ASSERT_EQ(send_fds(a, &h, 1, f, 1), -EOPNOTSUPP);
	f[0] = a;
	ASSERT_EQ(send_fds(a, &h, 1, f, 1), -EOPNOTSUPP);
	/* a disconnected peer's fd is still a bus1 fd: EOPNOTSUPP, not ESHUTDOWN */
	int gone = b1_open();
	ASSERT_EQ(b1_disconnect(gone), 0);
	f[0] = gone;
	ASSERT_EQ(send_fds(a, &h, 1, f, 1), -EOPNOTSUPP);
	/* and under CONTINUE as well (it is not a per-destination failure) */
	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_CONTINUE, &h, 1, NULL, NULL, 0, NULL, 0, f, 1), -EOPNOTSUPP);
	/* AF_UNIX sockets */
	f[0] = sp[0];
	ASSERT_EQ(send_fds(a, &h, 1, f, 1), -EOPNOTSUPP);
	int dg = socket(AF_UNIX, SOCK_DGRAM, 0);
	ASSERT_GE(dg, 0);
	f[0] = dg;
	ASSERT_EQ(send_fds(a, &h, 1, f, 1), -EOPNOTSUPP);
	/* order */
	f[0] = closed;
	f[1] = other;
	ASSERT_EQ(send_fds(a, &h, 1, f, 2), -EBADF);
	f[0] = sp[1];
	f[1] = -1;
	ASSERT_EQ(send_fds(a, &h, 1, f, 2), -EOPNOTSUPP);
	f[0] = p[1];
	f[1] = -1;
	ASSERT_EQ(send_fds(a, &h, 1, f, 2), -EBADF);
	ASSERT_EQ(b1_recv(b, &(struct bus1_cmd_recv){ 0 }, 0), -EAGAIN);
	/* none of the rejected calls kept a reference to the pipe */
	close(p[1]);
	assert_eof(p[0]);
}

/* §2.8 step 7.3 / §4.4: other files are accepted, O_PATH always */
TEST(fds_accepted_kinds)
{
	int a = b1_open(), b = b1_open(), p[2];
	uint64_t h = b1_handle_to(b, 0x100, a);
	char path[256];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int f[8], n = 0, us;

	mkpipe(p);
	f[n++] = p[0];
	f[n++] = p[1];
	f[n++] = eventfd(0, 0);
	f[n++] = open("/dev/null", O_RDWR);
	f[n++] = open("/", O_PATH | O_DIRECTORY);
	/* an O_PATH descriptor of a bound AF_UNIX socket is accepted */
	snprintf(path, sizeof(path), "/tmp/bus1-fds-%d.sock", getpid());
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	us = socket(AF_UNIX, SOCK_STREAM, 0);
	ASSERT_GE(us, 0);
	ASSERT_OK(bind(us, (struct sockaddr *)&sa, sizeof(sa)));
	f[n++] = open(path, O_PATH);
	unlink(path);
	f[n++] = open("/proc/self/exe", O_RDONLY);
	for (int i = 0; i < n; i++)
		ASSERT_GE(f[i], 0);
	ASSERT_EQ(send_fds(a, &h, 1, f, n), 0);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.n_fds, n);
	/* an inet socket, where the system allows one */
	int in = socket(AF_INET, SOCK_DGRAM, 0);

	if (in >= 0) {
		ASSERT_EQ(send_fds(a, &h, 1, &in, 1), 0);
		ASSERT_EQ(b1_recv(b, &r, 0), 0);
		ASSERT_EQ(r.msg.n_fds, 1);
	}
}

/* §2.9 step 6.3 / §4.4: INSTALL_FDS creates close-on-exec fds for the same files */
TEST(fds_install)
{
	int a = b1_open(), b = b1_open(), p[2], got;
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;
	char c;

	mkpipe(p);
	ASSERT_EQ(send_fds(a, &h, 1, &p[1], 1), 0);
	/* the sender may close right after SEND */
	close(p[1]);
	assert_writer_alive(p[0]);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	installed(b, &r, &got, 1);
	ASSERT_GE(got, 0);
	ASSERT_EQ(fcntl(got, F_GETFD), FD_CLOEXEC);
	ASSERT_EQ(write(got, "!", 1), 1);
	ASSERT_EQ(read(p[0], &c, 1), 1);
	ASSERT_EQ(c, '!');
	/* the message's own reference went with the dequeue */
	close(got);
	assert_eof(p[0]);
}

/* §2.9 step 6.7 / §4.4: n_fds without INSTALL_FDS; no fd, files dropped */
TEST(fds_without_install)
{
	int a = b1_open(), b = b1_open(), p[2], f[3], low;
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	mkpipe(p);
	f[0] = f[1] = f[2] = p[1];
	ASSERT_EQ(send_fds(a, &h, 1, f, 3), 0);
	close(p[1]);
	low = b1_lowest_free_fd();
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.n_fds, 3);
	ASSERT_EQ(r.msg.n_bytes, 2);
	ASSERT_EQ(b1_lowest_free_fd(), low);
	assert_eof(p[0]);
}

/* §4.4 / §2.9 PEEK: every PEEK with INSTALL_FDS installs a fresh set */
TEST(fds_peek_installs_each_time)
{
	int a = b1_open(), b = b1_open(), p[2], got[3];
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;

	mkpipe(p);
	ASSERT_EQ(send_fds(a, &h, 1, &p[1], 1), 0);
	close(p[1]);
	/* PEEK without INSTALL_FDS installs nothing */
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_PEEK), 0);
	ASSERT_EQ(r.msg.n_fds, 1);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS), 0);
	installed(b, &r, &got[0], 1);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_INSTALL_FDS), 0);
	installed(b, &r, &got[1], 1);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	installed(b, &r, &got[2], 1);
	ASSERT_NE(got[0], got[1]);
	ASSERT_NE(got[1], got[2]);
	ASSERT_NE(got[0], got[2]);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(fcntl(got[i], F_GETFD), FD_CLOEXEC);
		ASSERT_EQ(write(got[i], "x", 1), 1);
	}
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	for (int i = 0; i < 3; i++)
		close(got[i]);
	char buf[8];

	ASSERT_EQ(read(p[0], buf, sizeof(buf)), 3);
	assert_eof(p[0]);
}

/* §2.8 end: a failed SEND keeps no file reference */
TEST(fds_failed_send_drops_files)
{
	int s = b1_open(), b = b1_open(), dead = b1_open(), p[2];
	uint64_t d[2] = { b1_handle_to(b, 0x100, s), b1_handle_to(dead, 0x100, s) };

	mkpipe(p);
	ASSERT_EQ(b1_disconnect(dead), 0);
	ASSERT_EQ(send_fds(s, d, 2, &p[1], 1), -ESHUTDOWN);
	ASSERT_EQ(b1_recv(b, &(struct bus1_cmd_recv){ 0 }, 0), -EAGAIN);
	close(p[1]);
	assert_eof(p[0]);
}

/* §2.3 step 6.3 / §5.5: a flush frees queued messages with their files */
TEST(fds_flush_drops_files)
{
	int a = b1_open(), b = b1_open(), p[2];
	uint64_t h = b1_handle_to(b, 0x100, a);

	mkpipe(p);
	ASSERT_EQ(send_fds(a, &h, 1, &p[1], 1), 0);
	ASSERT_EQ(send_fds(a, &h, 1, &p[1], 1), 0);
	close(p[1]);
	assert_writer_alive(p[0]);
	ASSERT_EQ(b1_reset(b, BUS1_PEER_RESET_FLAG_FLUSH), 0);
	assert_eof(p[0]);
}

/* §2.9 step 5: a message discarded at RECV drops its files */
TEST(fds_discarded_message_drops_files)
{
	int a = b1_open(), b = b1_open(), p[2];
	uint64_t h = b1_handle_to(b, 0x100, a);

	mkpipe(p);
	ASSERT_EQ(b1_destroy_one(b, 0x100), 0);
	ASSERT_EQ(send_fds(a, &h, 1, &p[1], 1), 0);	/* ordered after: stale */
	close(p[1]);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), -EAGAIN);
	assert_eof(p[0]);
}

/* §4.4: each receiving message holds its own references */
TEST(fds_multicast_own_references)
{
	int s = b1_open(), b = b1_open(), c = b1_open(), p[2], got;
	uint64_t d[2] = { b1_handle_to(b, 0x100, s), b1_handle_to(c, 0x100, s) };
	struct bus1_cmd_recv r;

	mkpipe(p);
	ASSERT_EQ(send_fds(s, d, 2, &p[1], 1), 0);
	close(p[1]);
	ASSERT_EQ(b1_recv(c, &r, 0), 0);	/* c drops its copy */
	assert_writer_alive(p[0]);		/* b's message still holds one */
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	installed(b, &r, &got, 1);
	assert_writer_alive(p[0]);
	close(got);
	assert_eof(p[0]);
}

/* §4.4 / §4.7: up to 256 fds per message, all installed */
TEST(fds_max_256)
{
	int a = b1_open(), b = b1_open(), p[2];
	uint64_t h = b1_handle_to(b, 0x100, a);
	static int f[257], got[256];
	struct bus1_cmd_recv r;

	mkpipe(p);
	for (int i = 0; i < 257; i++)
		f[i] = p[1];
	ASSERT_EQ(send_fds(a, &h, 1, f, 257), -EMSGSIZE);
	ASSERT_EQ(send_fds(a, &h, 1, f, 256), 0);
	close(p[1]);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	installed(b, &r, got, 256);
	/* slice = A(2) + A(4 * 256) */
	ASSERT_EQ(b1_send_one(a, h, "n", 1), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.offset, 8 + 1024);
	for (int i = 0; i < 256; i++) {
		ASSERT_EQ(fcntl(got[i], F_GETFD), FD_CLOEXEC);
		for (int j = 0; j < i; j++)
			ASSERT_NE(got[i], got[j]);
	}
	for (int i = 0; i < 255; i++)
		close(got[i]);
	assert_writer_alive(p[0]);
	close(got[255]);
	assert_eof(p[0]);
}

/* §2.9 step 6.3: EMFILE aborts the RECV; nothing installed, message stays */
TEST(fds_emfile)
{
	int a = b1_open(), b = b1_open(), p[2], f[4], got[4];
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;
	struct rlimit old;

	mkpipe(p);
	f[0] = f[1] = f[2] = f[3] = p[1];
	ASSERT_EQ(send_fds(a, &h, 1, f, 4), 0);
	close(p[1]);
	/* a RECV without fds first, so that any lazily opened state exists */
	ASSERT_EQ(b1_send_one(a, h, "w", 1), 0);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_PEEK), 0);
	/* room for two more fds, not four */
	int low = b1_limit_fd_room(2, &old);

	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), -EMFILE);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS | BUS1_RECV_FLAG_PEEK), -EMFILE);
	ASSERT_EQ(b1_lowest_free_fd(), low);
	ASSERT_OK(setrlimit(RLIMIT_NOFILE, &old));
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	ASSERT_EQ(r.msg.n_bytes, 2);
	installed(b, &r, got, 4);
	for (int i = 0; i < 4; i++)
		close(got[i]);
	assert_eof(p[0]);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 1);
}

/* §4.1 / §4.4: fd numbers are written in the order of the SEND's fd array */
TEST(fds_install_order)
{
	int a = b1_open(), b = b1_open(), p[2], ev = eventfd(0, 0), got[3];
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;
	struct stat st;
	int f[3];

	mkpipe(p);
	f[0] = p[1];
	f[1] = ev;
	f[2] = p[0];
	ASSERT_EQ(send_fds(a, &h, 1, f, 3), 0);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	installed(b, &r, got, 3);
	ASSERT_EQ(fcntl(got[0], F_GETFL) & O_ACCMODE, O_WRONLY);
	ASSERT_EQ(fcntl(got[2], F_GETFL) & O_ACCMODE, O_RDONLY);
	ASSERT_OK(fstat(got[1], &st));
	/* the eventfd: writing 8 bytes works, a pipe end would be S_ISFIFO */
	ASSERT_FALSE(S_ISFIFO(st.st_mode));
	uint64_t one = 1;

	ASSERT_EQ(write(got[1], &one, 8), 8);
	ASSERT_EQ(read(ev, &one, 8), 8);
	ASSERT_EQ(one, 1);
}

/*
 * §2.8 step 7.3 / §4.4: an O_PATH descriptor is accepted whatever it
 * refers to, the bus1 device node included (only peer fds are EOPNOTSUPP);
 * the receiver gets an O_PATH descriptor of the node.
 */
TEST(fds_opath_of_device_accepted)
{
	int a = b1_open(), b = b1_open(), f[2], got[2];
	uint64_t h = b1_handle_to(b, 0x100, a);
	struct bus1_cmd_recv r;
	struct stat want, st;

	f[0] = open(b1_device(), O_PATH | O_CLOEXEC);
	ASSERT_GE(f[0], 0);
	f[1] = a;
	/* next to a peer fd it is the peer that is refused */
	ASSERT_EQ(send_fds(a, &h, 1, f, 2), -EOPNOTSUPP);
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	ASSERT_EQ(send_fds(a, &h, 1, f, 1), 0);
	f[1] = f[0];
	ASSERT_EQ(send_fds(a, &h, 1, f, 2), 0);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	installed(b, &r, got, 1);
	ASSERT_TRUE(fcntl(got[0], F_GETFL) & O_PATH);
	ASSERT_OK(stat(b1_device(), &want));
	ASSERT_OK(fstat(got[0], &st));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	ASSERT_EQ_U64(st.st_rdev, want.st_rdev);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.n_fds, 2);
}
