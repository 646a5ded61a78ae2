/* SPDX-License-Identifier: MIT */
/*
 * The device node and open() (SEMANTICS.md 1.1, 8.1): stat/access report a
 * world-accessible character device; every open creates a new, independent,
 * fresh peer whatever the access mode and O_NONBLOCK; fd flags behave as for
 * any descriptor.
 */
#define _GNU_SOURCE
#include <libgen.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "bus1-util.h"
#include "mp-util.h"

static int open_dev(int flags)
{
	int fd = open(b1_device(), flags);

	if (fd < 0)
		t_fail(__FILE__, __LINE__, "open(%s, 0x%x): %s", b1_device(), flags, strerror(errno));
	return fd;
}

/* A peer answers QUERY with the defaults (and is thus a fresh bus1 peer). */
static void assert_fresh_peer(int fd)
{
	struct bus1_cmd_peer_reset q;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_query(fd, &q), 0);
	ASSERT_EQ_U64(q.peer_flags, 0);
	ASSERT_EQ(q.max_slices, 16384);
	ASSERT_EQ(q.max_handles, 65536);
	ASSERT_EQ(q.max_inflight_bytes, 16777216);
	ASSERT_EQ(q.max_inflight_fds, 4096);
	ASSERT_EQ(b1_recv(fd, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_slice_release(fd, 0), -ENXIO);
}

/* §1.1: stat/lstat/fstatat report a character device with mode 0666 */
TEST(device_stat_chardev)
{
	struct stat st;

	ASSERT_OK(stat(b1_device(), &st));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	ASSERT_EQ(st.st_mode & 07777, 0666);
	ASSERT_OK(lstat(b1_device(), &st));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	ASSERT_OK(fstatat(AT_FDCWD, b1_device(), &st, 0));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	ASSERT_EQ(st.st_mode & 07777, 0666);
}

/* §1.1: statx agrees */
TEST(device_statx_chardev)
{
	struct statx stx;

	ASSERT_OK(statx(AT_FDCWD, b1_device(), 0, STATX_BASIC_STATS, &stx));
	ASSERT_TRUE(stx.stx_mask & STATX_TYPE);
	ASSERT_TRUE(S_ISCHR(stx.stx_mode));
	ASSERT_EQ(stx.stx_mode & 07777, 0666);
}

/* §1.1: access() reports a readable and writable node */
TEST(device_access)
{
	ASSERT_OK(access(b1_device(), F_OK));
	ASSERT_OK(access(b1_device(), R_OK));
	ASSERT_OK(access(b1_device(), W_OK));
	ASSERT_OK(access(b1_device(), R_OK | W_OK));
	ASSERT_OK(faccessat(AT_FDCWD, b1_device(), R_OK | W_OK, 0));
}

/* §8.1: every open creates a fresh, independent peer */
TEST(open_independent_peers)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h;

	assert_fresh_peer(a);
	assert_fresh_peer(b);
	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
	/* C knows nothing of either */
	ASSERT_EQ(b1_release(c, h), -ENXIO);
	assert_fresh_peer(c);
	/* and a peer opened later starts with its own ID counter */
	ASSERT_EQ(b1_transfer(a, 0x100, b1_open(), &h), 0);
	ASSERT_EQ_U64(h, 0xB);
}

/* §1.1: the access mode does not matter for ioctls (O_RDONLY, O_WRONLY) */
TEST(open_access_modes)
{
	int r = open_dev(O_RDONLY | O_CLOEXEC);
	int w = open_dev(O_WRONLY | O_CLOEXEC);
	int rw = open_dev(O_RDWR | O_CLOEXEC);
	uint64_t h;
	struct bus1_cmd_recv m;

	assert_fresh_peer(r);
	assert_fresh_peer(w);
	assert_fresh_peer(rw);
	ASSERT_EQ(b1_transfer(r, 0x100, w, &h), 0);
	ASSERT_EQ(b1_send_one(w, h, "ro", 2), 0);
	ASSERT_EQ(b1_recv(r, &m, 0), 0);
	ASSERT_EQ(m.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(m.msg.destination, 0x100);
	ASSERT_EQ(b1_transfer(w, 0x200, rw, &h), 0);
	ASSERT_EQ(b1_send_one(rw, h, "wo", 2), 0);
	ASSERT_EQ(b1_recv(w, &m, 0), 0);
	ASSERT_EQ_U64(m.msg.destination, 0x200);
}

/* §1.1: O_NONBLOCK given to open is kept on the description (F_GETFL) */
TEST(open_getfl_nonblock)
{
	int r = open_dev(O_RDONLY);
	int w = open_dev(O_WRONLY | O_NONBLOCK);

	ASSERT_EQ(fcntl(r, F_GETFL) & O_NONBLOCK, 0);
	ASSERT_TRUE(fcntl(w, F_GETFL) & O_NONBLOCK);
	ASSERT_OK(fcntl(r, F_SETFL, O_NONBLOCK));
	ASSERT_TRUE(fcntl(r, F_GETFL) & O_NONBLOCK);
	assert_fresh_peer(r);
}

/*
 * §1.1: F_GETFL shows what the module's file shows, which is what any
 * character device opened the same way shows (/dev/null here): the access
 * mode of the open, and O_LARGEFILE, which the kernel sets on every 64-bit
 * open. The same on a duplicate, in a forked child, and on a copy received
 * over SCM_RIGHTS whose first use is this F_GETFL.
 */
TEST(open_getfl_access_mode)
{
	static const int modes[] = { O_RDONLY, O_WRONLY, O_RDWR };

	for (unsigned i = 0; i < 3; i++) {
		int fd = open_dev(modes[i]), d = dup(fd), sv[2], got, fl;
		int chr = open("/dev/null", modes[i] | O_CLOEXEC);
		pid_t pid;

		ASSERT_GE(d, 0);
		ASSERT_GE(chr, 0);
		fl = fcntl(fd, F_GETFL);
		ASSERT_EQ(fl & O_ACCMODE, modes[i]);
		ASSERT_EQ(fl, fcntl(chr, F_GETFL));
		close(chr);
		ASSERT_EQ(fcntl(d, F_GETFL), fl);
		ASSERT_OK(fcntl(d, F_SETFL, O_NONBLOCK));
		ASSERT_EQ(fcntl(fd, F_GETFL), fl | O_NONBLOCK);
		pid = mp_fork();
		if (pid == 0) {
			ASSERT_EQ(fcntl(fd, F_GETFL), fl | O_NONBLOCK);
			_exit(0);
		}
		mp_reap(pid);
		mp_socketpair(sv);
		mp_send_fd(sv[0], fd);
		got = mp_recv_fd(sv[1]);
		ASSERT_EQ(fcntl(got, F_GETFL), fl | O_NONBLOCK);
		close(got);
		close(sv[0]);
		close(sv[1]);
		close(d);
		close(fd);
	}
}

/* A socket or pipe keeps its own flags: only peer fds are translated. */
TEST(open_getfl_other_fds_unchanged)
{
	int sv[2], p[2];

	ASSERT_OK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv));
	ASSERT_OK(pipe2(p, O_CLOEXEC));
	ASSERT_EQ(fcntl(sv[0], F_GETFL), O_RDWR);
	ASSERT_EQ(fcntl(p[0], F_GETFL), O_RDONLY);
	ASSERT_EQ(fcntl(p[1], F_GETFL), O_WRONLY);
	close(sv[0]);
	close(sv[1]);
	close(p[0]);
	close(p[1]);
}

/* §1.1: O_NONBLOCK is irrelevant: RECV on a blocking fd returns EAGAIN at once */
TEST(open_blocking_never_blocks)
{
	int a = open_dev(O_RDWR);
	struct bus1_cmd_recv r;

	alarm(5);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_PEEK), -EAGAIN);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_SEED), -EAGAIN);
	assert_fresh_peer(a);
}

/* §8.1: O_CLOEXEC is honoured like for any open() */
TEST(open_cloexec_flag)
{
	int a = open_dev(O_RDWR);
	int b = open_dev(O_RDWR | O_CLOEXEC);

	ASSERT_EQ(fcntl(a, F_GETFD) & FD_CLOEXEC, 0);
	ASSERT_EQ(fcntl(b, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	ASSERT_OK(fcntl(a, F_SETFD, FD_CLOEXEC));
	ASSERT_EQ(fcntl(a, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	assert_fresh_peer(a);
}

/* §1.1: the same node reached through another spelling of the path is the device */
TEST(open_other_path_spellings)
{
	char path[4096], dir[4096], base[4096], alt[8192];
	int fd, dfd;

	snprintf(path, sizeof(path), "%s", b1_device());
	snprintf(dir, sizeof(dir), "%s", dirname(path));
	snprintf(path, sizeof(path), "%s", b1_device());
	snprintf(base, sizeof(base), "%s", basename(path));
	snprintf(alt, sizeof(alt), "%s/./%s", dir, base);
	fd = open(alt, O_RDWR | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	assert_fresh_peer(fd);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ASSERT_GE(dfd, 0);
	fd = openat(dfd, base, O_RDWR | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	assert_fresh_peer(fd);
	ASSERT_OK(chdir(dir));
	fd = open(base, O_RDWR | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	assert_fresh_peer(fd);
}

/* §8.5: dup()ed fds share one peer: state made through one is seen by the other */
TEST(dup_shares_peer)
{
	int a = b1_open(), b = b1_open();
	int b2 = dup(b), b3 = fcntl(b, F_DUPFD_CLOEXEC, 100);
	uint64_t h;
	struct bus1_cmd_recv r;

	ASSERT_GE(b2, 0);
	ASSERT_GE(b3, 100);
	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	ASSERT_EQ(b1_send_one(b2, h, "via dup", 7), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(b1_release(b3, h), 0);
	ASSERT_EQ(b1_release(b, h), -ENXIO);
}

/* §8.5: dup2 onto an existing peer fd closes that peer's last reference */
TEST(dup2_over_peer_closes_it)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h;
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	ASSERT_EQ(dup2(c, a), a);
	/* A's peer was closed: B's handle is dead */
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, h);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), -ESHUTDOWN);
	/* and fd `a` now is peer C */
	ASSERT_EQ(b1_transfer(a, 0x300, b, &h), 0);
	ASSERT_EQ(b1_send_one(b, h, "c", 1), 0);
	ASSERT_EQ(b1_recv(c, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.destination, 0x300);
}

/* §1.1 / §8.1: closing a peer fd succeeds once; the number is then invalid */
TEST(close_peer_fd)
{
	int a = b1_open();
	struct bus1_cmd_peer_reset q;

	ASSERT_OK(close(a));
	ASSERT_ERRNO(close(a), EBADF);
	ASSERT_ERRNO(ioctl(a, BUS1_CMD_PEER_QUERY, &q), EBADF);
}

/* §1.1: ordinary files are not affected by the interposed open/stat */
TEST(other_paths_untouched)
{
	struct stat st;
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	ASSERT_GE(fd, 0);
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY, &st), ENOTTY);
	ASSERT_OK(stat("/dev/null", &st));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	ASSERT_EQ(major(st.st_rdev), 1);
	ASSERT_EQ(minor(st.st_rdev), 3);
	ASSERT_OK(stat("/", &st));
	ASSERT_TRUE(S_ISDIR(st.st_mode));
	ASSERT_ERRNO(stat("/nonexistent-bus1-test-path", &st), ENOENT);
}
