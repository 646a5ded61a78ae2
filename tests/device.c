/* SPDX-License-Identifier: MIT */
/*
 * The device node and open() (§1.1, §8.1): stat/access report a
 * world-accessible character device; every open creates a new, independent,
 * fresh peer whatever the access mode and O_NONBLOCK; fd flags behave as for
 * any descriptor.
 */
#define _GNU_SOURCE
#include <libgen.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <limits.h>

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

/*
 * A vfork child shares its parent's memory, not its descriptors, until it
 * execs or exits. Closing peer fds or dup2()ing over them there (what a
 * child does before exec) changes only the child's descriptors: the
 * parent's fds are still the same peers, with their handles and queues.
 */
TEST(vfork_child_closing_peer_fds_leaves_the_parents)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h;
	struct bus1_cmd_recv r;
	int status;
	pid_t pid;

	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	ASSERT_EQ(b1_send_one(b, h, "queued", 6), 0);
	pid = vfork();
	if (pid == 0) {
		close(a);
		dup2(c, b);
		close(c);
		_exit(0);
	}
	ASSERT_TRUE(pid > 0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* a still holds its queued message, b still holds its handle */
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(b1_send_one(b, h, "after", 5), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 5);
	/* and c is still a peer of its own */
	assert_fresh_peer(c);
	/* the parent's own close is the one that counts */
	ASSERT_OK(close(a));
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_NODE_DESTROY);
}

/*
 * The same for a vfork child that closes every descriptor from 3 on
 * before it would exec (closefrom): the parent's peers stay its own, and
 * so does its epoll set over one of them.
 */
TEST(vfork_child_closefrom_leaves_the_parents)
{
	int a = b1_open(), b = b1_open(), ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0xab };
	uint64_t h;
	struct bus1_cmd_recv r;
	int status;
	pid_t pid;

	ASSERT_GE(ep, 0);
	ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	pid = vfork();
	if (pid == 0) {
		closefrom(3);
		_exit(0);
	}
	ASSERT_TRUE(pid > 0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ASSERT_EQ(epoll_wait(ep, &ev, 1, 0), 0);
	ASSERT_EQ(b1_send_one(b, h, "after", 5), 0);
	ASSERT_EQ(epoll_wait(ep, &ev, 1, 1000), 1);
	ASSERT_EQ_U64(ev.data.u64, 0xab);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 5);
	close(ep);
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

/* -------------------------------------------- a peer fd is the device file */

/* fstat of fd shows the device node that stat(device) shows. */
static void assert_fstat_is_device(int fd)
{
	struct stat dev, st;
	struct statx stx;

	ASSERT_OK(stat(b1_device(), &dev));
	ASSERT_OK(fstat(fd, &st));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	ASSERT_EQ(st.st_mode & 07777, 0666);
	ASSERT_EQ_U64(st.st_rdev, dev.st_rdev);
	ASSERT_EQ_U64(st.st_ino, dev.st_ino);
	ASSERT_EQ_U64(st.st_dev, dev.st_dev);
	memset(&st, 0, sizeof(st));
	ASSERT_OK(fstatat(fd, "", &st, AT_EMPTY_PATH));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	ASSERT_EQ_U64(st.st_rdev, dev.st_rdev);
	ASSERT_OK(statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx));
	ASSERT_TRUE(S_ISCHR(stx.stx_mode));
	ASSERT_EQ(makedev(stx.stx_rdev_major, stx.stx_rdev_minor), dev.st_rdev);
	ASSERT_EQ_U64(stx.stx_ino, dev.st_ino);
}

/*
 * §1.1: fstat/fstatat(AT_EMPTY_PATH)/statx(AT_EMPTY_PATH) of a peer fd
 * describe the device node, as for the module's file: on the fd, a dup,
 * in a forked child, and on a copy received over SCM_RIGHTS whose first
 * use is the fstat.
 */
TEST(fstat_peer_fd_is_the_device)
{
	int fd = open_dev(O_RDWR | O_CLOEXEC), d = dup(fd), sv[2], got;
	pid_t pid;

	ASSERT_GE(d, 0);
	assert_fstat_is_device(fd);
	assert_fstat_is_device(d);
	pid = mp_fork();
	if (pid == 0) {
		assert_fstat_is_device(fd);
		_exit(0);
	}
	mp_reap(pid);
	mp_socketpair(sv);
	mp_send_fd(sv[0], fd);
	got = mp_recv_fd(sv[1]);
	assert_fstat_is_device(got);
	assert_fresh_peer(got);
}

/* Sockets, pipes and a number reused after a peer fd was closed keep theirs. */
TEST(fstat_other_fds_unchanged)
{
	int sv[2], p[2], fd = open_dev(O_RDWR | O_CLOEXEC), s;
	struct stat st;

	ASSERT_OK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv));
	ASSERT_OK(pipe2(p, O_CLOEXEC));
	ASSERT_OK(fstat(sv[0], &st));
	ASSERT_TRUE(S_ISSOCK(st.st_mode));
	ASSERT_OK(fstatat(sv[0], "", &st, AT_EMPTY_PATH));
	ASSERT_TRUE(S_ISSOCK(st.st_mode));
	ASSERT_OK(fstat(p[0], &st));
	ASSERT_TRUE(S_ISFIFO(st.st_mode));
	ASSERT_OK(close(fd));
	s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ASSERT_EQ(s, fd);
	ASSERT_OK(fstat(s, &st));
	ASSERT_TRUE(S_ISSOCK(st.st_mode));
	ASSERT_ERRNO(fstat(1000, &st), EBADF);
}

/* §1.1: /proc/<self>/fd/N of a peer fd links to the device path */
TEST(proc_fd_link_is_the_device)
{
	int fd = open_dev(O_RDWR | O_CLOEXEC), sv[2];
	char path[64], buf[256];
	size_t len = strlen(b1_device());
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, buf, sizeof(buf));
	ASSERT_EQ(n, (ssize_t)len);
	ASSERT_MEMEQ(buf, b1_device(), len);
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", getpid(), fd);
	n = readlinkat(AT_FDCWD, path, buf, sizeof(buf));
	ASSERT_EQ(n, (ssize_t)len);
	ASSERT_MEMEQ(buf, b1_device(), len);
	/* truncated like any readlink */
	ASSERT_EQ(readlink(path, buf, 4), 4);
	ASSERT_MEMEQ(buf, b1_device(), 4);
	/* other descriptors keep their links */
	ASSERT_OK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", sv[0]);
	n = readlink(path, buf, sizeof(buf) - 1);
	ASSERT_GT(n, 0);
	buf[n] = 0;
	ASSERT_EQ(strncmp(buf, "socket:[", 8), 0);
}

/* §1.1: opening /proc/self/fd/N of a peer fd opens the node again: a new peer */
TEST(proc_fd_link_reopens_the_node)
{
	int fd = open_dev(O_RDWR | O_CLOEXEC), again;
	struct bus1_cmd_peer_reset q;
	char path[64];
	uint64_t h;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	again = open(path, O_RDWR | O_CLOEXEC);
	ASSERT_TRUE(again >= 0 && again != fd);
	ASSERT_EQ(b1_query(again, &q), 0);
	/* a peer of its own: it can hold a handle to fd's node and send to it */
	ASSERT_EQ(b1_transfer(fd, 0x100, again, &h), 0);
	ASSERT_EQ(b1_send_one(again, h, "x", 1), 0);
	ASSERT_EQ(b1_revents(fd, POLLIN), POLLIN);
	ASSERT_OK(close(again));
	ASSERT_OK(close(fd));
}

/* Checks that the inherited descriptor argv[0] stats as the device node. */
T_CHILD(stat_shows_node)
{
	struct stat st;

	ASSERT_EQ(argc, 1);
	ASSERT_OK(fstat((int)mp_arg(argv[0]), &st));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	return 0;
}

/* §1.1: O_PATH opens the node without making a peer; the descriptor stats as the node, refuses I/O with EBADF and reopens through /proc as the device */
TEST(open_path_descriptor)
{
	struct stat want, st;
	struct statx stx;
	struct bus1_cmd_peer_reset q;
	char path[64], buf[256];
	size_t len = strlen(b1_device());
	ssize_t n;
	int fd, peer, copy;

	ASSERT_OK(stat(b1_device(), &want));
	fd = open(b1_device(), O_PATH | O_CLOEXEC);
	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(fcntl(fd, F_GETFL) & O_PATH, O_PATH);
	ASSERT_OK(fstat(fd, &st));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	ASSERT_EQ_U64(st.st_rdev, want.st_rdev);
	ASSERT_EQ_U64(st.st_ino, want.st_ino);
	ASSERT_OK(fstatat(fd, "", &st, AT_EMPTY_PATH));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	ASSERT_OK(statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx));
	ASSERT_TRUE(S_ISCHR(stx.stx_mode));
	/* no peer: every operation is refused as on any path descriptor */
	ASSERT_ERRNO(ioctl(fd, BUS1_CMD_PEER_QUERY, &q), EBADF);
	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED);
	ASSERT_EQ(errno, EBADF);
	ASSERT_ERRNO(read(fd, buf, 1), EBADF);
	/* its /proc link is the device, and opening that link opens the node */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, buf, sizeof(buf));
	ASSERT_EQ(n, (ssize_t)len);
	ASSERT_MEMEQ(buf, b1_device(), len);
	peer = open(path, O_RDWR | O_CLOEXEC);
	ASSERT_TRUE(peer >= 0);
	ASSERT_EQ(b1_query(peer, &q), 0);
	/* a copy is the same kind of descriptor, also after exec */
	copy = dup(fd);
	ASSERT_OK(fstat(copy, &st));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	mp_reap(mp_spawn("stat_shows_node", mp_str(copy), (char *)NULL));
	ASSERT_OK(close(copy));
	ASSERT_OK(close(fd));
	ASSERT_OK(close(peer));
	/* the node is not a directory */
	ASSERT_ERRNO(open(b1_device(), O_PATH | O_DIRECTORY | O_CLOEXEC), ENOTDIR);
}

/* The value after "name:\t" on the line of `text` starting with name. */
static const char *fdinfo_field(const char *text, const char *name)
{
	size_t len = strlen(name);

	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, name, len) && l[len] == ':' && l[len + 1] == '\t')
			return l + len + 2;
	return NULL;
}

/* Reads a whole /proc file with open+read. */
static void read_text(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		t_fail(__FILE__, __LINE__, "open(%s): %s", path, strerror(errno));
	n = read(fd, buf, size - 1);
	ASSERT_GE(n, 0);
	buf[n] = 0;
	close(fd);
}

/* The serial of the module's last fdinfo line: "bus1-peer:\t%16llx\n". */
static unsigned long long fdinfo_serial(const char *text)
{
	const char *v = fdinfo_field(text, "bus1-peer");
	unsigned long long serial;

	ASSERT_TRUE(v != NULL);
	ASSERT_EQ(strlen(v), 17);
	ASSERT_EQ(v[16], '\n');
	ASSERT_EQ(sscanf(v, "%llx", &serial), 1);
	ASSERT_NE(serial, 0);
	return serial;
}

/*
 * §1.1: /proc/<self>/fdinfo/N of a peer fd reads as the module's file: the
 * position, the file's flags (with O_CLOEXEC when the fd has it), the
 * mount and inode of the device node, then "bus1-peer:\t" and the peer's
 * serial in hex right-aligned in 16 characters; the same peer behind a dup,
 * another peer with another serial. fopen sees the same.
 */
TEST(proc_fdinfo_module_line)
{
	int a = open_dev(O_RDONLY | O_CLOEXEC), b = open_dev(O_RDWR), d = fcntl(a, F_DUPFD, 0);
	char path[64], text[512], dirinfo[512];
	unsigned long long sa, sb;
	char *dir = strdup(b1_device());
	struct stat dev;
	FILE *f;
	int dfd;

	ASSERT_GE(d, 0);
	ASSERT_OK(stat(b1_device(), &dev));
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", a);
	read_text(path, text, sizeof(text));
	ASSERT_EQ(strncmp(text, "pos:\t0\n", 7), 0);
	ASSERT_EQ(strtol(fdinfo_field(text, "flags"), NULL, 8), fcntl(a, F_GETFL) | O_CLOEXEC);
	ASSERT_EQ(strtoull(fdinfo_field(text, "ino"), NULL, 10), dev.st_ino);
	/* the mount of the directory the device node is in */
	dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ASSERT_GE(dfd, 0);
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", dfd);
	read_text(path, dirinfo, sizeof(dirinfo));
	ASSERT_EQ(atoi(fdinfo_field(text, "mnt_id")), atoi(fdinfo_field(dirinfo, "mnt_id")));
	ASSERT_TRUE(fdinfo_field(dirinfo, "bus1-peer") == NULL);
	sa = fdinfo_serial(text);

	/* the dup has no O_CLOEXEC and the same peer */
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", getpid(), d);
	read_text(path, text, sizeof(text));
	ASSERT_EQ(strtol(fdinfo_field(text, "flags"), NULL, 8), fcntl(a, F_GETFL));
	ASSERT_EQ_U64(fdinfo_serial(text), sa);

	snprintf(path, sizeof(path), "/proc/thread-self/fdinfo/%d", b);
	f = fopen(path, "re");
	ASSERT_TRUE(f != NULL);
	ASSERT_EQ(fread(text, 1, sizeof(text) - 1, f) > 0, 1);
	text[strlen(text)] = 0;
	fclose(f);
	ASSERT_EQ(strtol(fdinfo_field(text, "flags"), NULL, 8), fcntl(b, F_GETFL));
	ASSERT_EQ(fcntl(b, F_GETFL) & O_ACCMODE, O_RDWR);
	sb = fdinfo_serial(text);
	ASSERT_NE(sa, sb);
	free(dir);
}

/*
 * §1.1: an O_PATH descriptor of the node has no file operations, so its
 * fdinfo holds only the kernel's generic lines: O_PATH in the flags (with
 * O_CLOEXEC as the fd has it), the device node's mount and inode, and no
 * driver line.
 */
TEST(proc_fdinfo_of_path_descriptor)
{
	int fd = open(b1_device(), O_PATH | O_CLOEXEC), copy;
	char path[64], text[512], peerinfo[512];
	int peer = open_dev(O_RDWR | O_CLOEXEC);
	struct stat dev;

	ASSERT_GE(fd, 0);
	ASSERT_OK(stat(b1_device(), &dev));
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	read_text(path, text, sizeof(text));
	ASSERT_EQ(strncmp(text, "pos:\t0\n", 7), 0);
	ASSERT_EQ(strtol(fdinfo_field(text, "flags"), NULL, 8), O_PATH | O_CLOEXEC);
	ASSERT_EQ(strtoull(fdinfo_field(text, "ino"), NULL, 10), dev.st_ino);
	ASSERT_TRUE(fdinfo_field(text, "bus1-peer") == NULL);
	/* the same mount as a peer of the same node */
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", peer);
	read_text(path, peerinfo, sizeof(peerinfo));
	ASSERT_EQ(atoi(fdinfo_field(text, "mnt_id")), atoi(fdinfo_field(peerinfo, "mnt_id")));
	/* a dup without O_CLOEXEC shows just O_PATH */
	copy = fcntl(fd, F_DUPFD, 0);
	ASSERT_GE(copy, 0);
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", copy);
	read_text(path, text, sizeof(text));
	ASSERT_EQ(strtol(fdinfo_field(text, "flags"), NULL, 8), O_PATH);
	ASSERT_OK(close(copy));
	ASSERT_OK(close(fd));
	ASSERT_OK(close(peer));
}

/* Other descriptors' fdinfo is the kernel's own; a closed one has none. */
TEST(proc_fdinfo_other_fds_unchanged)
{
	int sv[2], fd = open_dev(O_RDWR | O_CLOEXEC);
	char path[64], text[512];

	ASSERT_OK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv));
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", sv[0]);
	read_text(path, text, sizeof(text));
	ASSERT_TRUE(fdinfo_field(text, "pos") != NULL);
	ASSERT_TRUE(fdinfo_field(text, "bus1-peer") == NULL);
	ASSERT_OK(close(fd));
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	ASSERT_ERRNO(open(path, O_RDONLY | O_CLOEXEC), ENOENT);
	ASSERT_ERRNO(open("/proc/self/fdinfo/1000", O_RDONLY | O_CLOEXEC), ENOENT);
}

/*
 * §1.1: fopen of the device opens a peer as open() does (the C library's
 * fopen does not go through the open symbol); fclose closes it, so the
 * descriptor number is an ordinary one again afterwards.
 */
TEST(fopen_device_and_fclose)
{
	FILE *f = fopen(b1_device(), "r+e"), *g;
	int fd, p[2];
	char c;

	ASSERT_TRUE(f != NULL);
	fd = fileno(f);
	assert_fresh_peer(fd);
	ASSERT_EQ(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
	ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	g = fopen(b1_device(), "r");
	ASSERT_TRUE(g != NULL);
	ASSERT_EQ(fcntl(fileno(g), F_GETFL) & O_ACCMODE, O_RDONLY);
	ASSERT_OK(fclose(g));
	ASSERT_TRUE(fopen(b1_device(), "wx") == NULL);
	ASSERT_EQ(errno, EEXIST);
	ASSERT_OK(fclose(f));
	ASSERT_OK(pipe2(p, O_CLOEXEC));
	ASSERT_EQ(p[0], fd);
	ASSERT_EQ(write(p[1], "x", 1), 1);
	ASSERT_EQ(read(p[0], &c, 1), 1);
	ASSERT_ERRNO(ioctl(p[0], BUS1_CMD_PEER_QUERY, &c), ENOTTY);
}

/*
 * A domain left behind by another version of the shim (its segment names
 * another layout version): nothing uses it any more, so the next open starts
 * it afresh instead of failing for good. The segment starts with the magic
 * "bus1-shm" and the layout version (two u64).
 */
#define SEG_MAGIC 0x627573312d73686dULL

static uint64_t segment_word(int index)
{
	char path[4096];
	uint64_t v = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/segment", t_memory_dir());
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(pread(fd, &v, sizeof(v), index * sizeof(v)), (ssize_t)sizeof(v));
	close(fd);
	return v;
}

static void set_segment_version(uint64_t version)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/segment", t_memory_dir());
	fd = open(path, O_WRONLY | O_CLOEXEC);
	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(pwrite(fd, &version, sizeof(version), sizeof(uint64_t)), (ssize_t)sizeof(version));
	close(fd);
}

static int domain_has(const char *name)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", t_memory_dir(), name);
	return access(path, F_OK) == 0;
}

/* In a fresh process: open() answers 0 with a fresh peer, or -errno. */
static int open_in_child(void)
{
	pid_t pid = mp_fork();
	int status;

	if (pid == 0) {
		int fd = open(b1_device(), O_RDWR | O_CLOEXEC);

		if (fd < 0)
			_exit(errno);
		assert_fresh_peer(fd);
		_exit(0);
	}
	status = mp_wait(pid);
	ASSERT_TRUE(WIFEXITED(status));
	return -WEXITSTATUS(status);
}

/* Leaves two peers (one with a queued message) to a process that dies. */
static uint64_t leave_dead_domain(void)
{
	pid_t pid = mp_fork();

	if (pid == 0) {
		int a = b1_open(), b = b1_open();
		uint64_t h;

		ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
		ASSERT_EQ(b1_send_one(b, h, "old", 3), 0);
		kill(getpid(), SIGKILL);
	}
	ASSERT_EQ(WTERMSIG(mp_wait(pid)), SIGKILL);
	ASSERT_EQ_U64(segment_word(0), SEG_MAGIC);
	ASSERT_TRUE(domain_has("peer.2") && domain_has("pool.2"));
	return segment_word(1);
}

/* A stale domain nobody uses is started afresh by the next open */
TEST(open_stale_version_domain_starts_afresh)
{
	uint64_t version = leave_dead_domain();

	set_segment_version(version + 1);
	ASSERT_EQ(open_in_child(), 0);
	ASSERT_EQ_U64(segment_word(1), version);
	/* the old peers' sockets and pools are gone; the new peer is serial 1 */
	ASSERT_FALSE(domain_has("peer.2") || domain_has("pool.2"));
	ASSERT_EQ(open_in_child(), 0);
}

/* In a fresh process: three peers open and talk. */
static void three_peers_in_child(void)
{
	pid_t pid = mp_fork();

	if (pid == 0) {
		int a = b1_open(), b = b1_open(), c = b1_open();
		struct bus1_cmd_recv r;
		uint64_t h;

		assert_fresh_peer(c);
		ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
		ASSERT_EQ(b1_send_one(b, h, "new", 3), 0);
		ASSERT_EQ(b1_recv(a, &r, 0), 0);
		ASSERT_EQ_U64(r.msg.destination, 0x100);
		_exit(0);
	}
	mp_reap(pid);
}

/* A segment removed by hand: the next open starts a new one, and the dead peers' files do not block new peers */
TEST(open_after_segment_removed)
{
	char path[4096];
	int fd;

	leave_dead_domain();
	snprintf(path, sizeof(path), "%s/peer.txt", t_memory_dir());
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_TRUE(fd >= 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/segment", t_memory_dir());
	ASSERT_OK(unlink(path));
	three_peers_in_child();
	three_peers_in_child();
	/* other files in the directory are left alone */
	ASSERT_TRUE(domain_has("peer.txt"));
}

/* Holds the inherited fd argv[0] (never used) until its stdin is closed. */
T_CHILD(hold_unused_fd)
{
	char c;

	ASSERT_EQ(argc, 1);
	while (read(0, &c, 1) > 0)
		;
	return 0;
}

/* A stale domain still in use — mapped by a process, or one of its peer fds held — is refused with ENODEV */
TEST(open_stale_version_domain_in_use_refused)
{
	uint64_t version = leave_dead_domain();
	int go[2], fd;
	char a[16];
	pid_t user, holder;

	/* a process that maps the domain: it used a peer, closed it and waits */
	mp_pipe(go);
	user = mp_fork();
	if (user == 0) {
		char c;

		close(go[1]);
		ASSERT_OK(close(b1_open()));
		while (read(go[0], &c, 1) > 0)
			;
		_exit(0);
	}
	close(go[0]);
	mp_sleep_ms(100);
	set_segment_version(version + 1);
	ASSERT_EQ(open_in_child(), -ENODEV);
	ASSERT_EQ_U64(segment_word(1), version + 1);
	close(go[1]);
	mp_reap(user);

	/* a process that holds a peer fd across exec, without the mapping */
	set_segment_version(version);
	mp_pipe(go);
	holder = mp_fork();
	if (holder == 0) {
		close(go[1]);
		dup2(go[0], 0);
		fd = mp_open_inherit();
		snprintf(a, sizeof(a), "%d", fd);
		execl(t_self_exe(), t_self_exe(), "--child", "hold_unused_fd", a, (char *)NULL);
		_exit(127);
	}
	close(go[0]);
	mp_sleep_ms(100);
	set_segment_version(version + 1);
	ASSERT_EQ(open_in_child(), -ENODEV);
	close(go[1]);
	mp_reap(holder);

	/* nothing uses it any more */
	ASSERT_EQ(open_in_child(), 0);
	ASSERT_EQ_U64(segment_word(1), version);
}

/* Points BUS1_DOMAIN at a directory far deeper than a socket address can name; returns it. */
static const char *use_long_domain(void)
{
	static char path[1024];
	char part[201];

	memset(part, 'l', 200);
	part[200] = 0;
	snprintf(path, sizeof(path), "%s/%s/%s", t_domain(), part, part);
	ASSERT_TRUE(strlen(path) > 400);
	ASSERT_OK(setenv("BUS1_DOMAIN", path, 1));
	return path;
}

/* Sends "far" through the inherited peer fd argv[0] to handle argv[1], then waits to be killed. */
T_CHILD(send_then_wait)
{
	ASSERT_EQ(argc, 2);
	ASSERT_EQ(b1_send_one((int)mp_arg(argv[0]), mp_arg_u64(argv[1]), "far", 3), 0);
	for (;;)
		pause();
	return 0;
}

/* §1.1: BUS1_DOMAIN may be longer than a socket address; peers there work across exec and are torn down after a kill */
TEST(long_domain_path)
{
	const char *dir = use_long_domain();
	const uint8_t *pool;
	struct bus1_cmd_recv r;
	char path[1200];
	struct stat st;
	uint64_t to_a, to_b;
	int a, b;
	pid_t child;

	a = b1_open();
	b = mp_open_inherit();
	to_a = mp_node(a, 0x100, b);
	to_b = mp_node(b, 0x200, a);
	pool = b1_map(a);
	/* the peer sockets live in the domain (its memory directory) itself */
	snprintf(path, sizeof(path), "%s/peer.2", t_memory_dir_of(dir));
	ASSERT_OK(stat(path, &st));
	ASSERT_TRUE(S_ISSOCK(st.st_mode));

	/* b is recognised after exec, where it is the only fd of its peer */
	child = mp_spawn("send_then_wait", mp_str(b), mp_hex(to_a), (char *)NULL);
	ASSERT_OK(close(b));
	ASSERT_EQ(mp_recv_wait(a, &r, 0, MP_WAIT_MS), 0);
	ASSERT_EQ_U64(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x100);
	ASSERT_EQ_U64(r.msg.n_bytes, 3);
	ASSERT_EQ(memcmp(pool + r.msg.offset, "far", 3), 0);
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);

	/* killing the last holder of b destroys its node: a learns it */
	ASSERT_OK(kill(child, SIGKILL));
	mp_wait(child);
	ASSERT_EQ(mp_recv_wait(a, &r, 0, MP_WAIT_MS), 0);
	ASSERT_EQ_U64(r.msg.type, BUS1_MSG_NODE_DESTROY);
	ASSERT_EQ_U64(r.msg.destination, to_b);
	ASSERT_ERRNO(stat(path, &st), ENOENT);
}

/* §1.1: the node has no extended attributes (ls -l asks for its label) */
TEST(device_has_no_xattrs)
{
	char buf[256];

	ASSERT_ERRNO(getxattr(b1_device(), "security.selinux", buf, sizeof(buf)), ENODATA);
	ASSERT_ERRNO(lgetxattr(b1_device(), "user.x", buf, sizeof(buf)), ENODATA);
	ASSERT_EQ(listxattr(b1_device(), buf, sizeof(buf)), 0);
	ASSERT_EQ(llistxattr(b1_device(), NULL, 0), 0);
	/* other paths are the system's */
	ASSERT_ERRNO(getxattr("/nonexistent/bus1", "user.x", buf, sizeof(buf)), ENOENT);
	ASSERT_ERRNO(listxattr("/nonexistent/bus1", buf, sizeof(buf)), ENOENT);
}

/* §1.1: the node's path resolves to itself, however it is spelt */
TEST(device_realpath)
{
	char buf[PATH_MAX], spelt[PATH_MAX], link[64], *p;
	ssize_t n;
	int fd;
	const char *base = strrchr(b1_device(), '/');

	p = realpath(b1_device(), NULL);
	ASSERT_TRUE(p != NULL);
	ASSERT_EQ(strcmp(p, b1_device()), 0);
	free(p);
	ASSERT_TRUE(realpath(b1_device(), buf) == buf);
	ASSERT_EQ(strcmp(buf, b1_device()), 0);
	snprintf(spelt, sizeof(spelt), "%.*s/./%s", (int)(base - b1_device()), b1_device(), base + 1);
	p = canonicalize_file_name(spelt);
	ASSERT_TRUE(p != NULL);
	ASSERT_EQ(strcmp(p, b1_device()), 0);
	free(p);
	/* other paths are the system's */
	ASSERT_TRUE(realpath("/nonexistent/bus1", buf) == NULL);
	ASSERT_EQ(errno, ENOENT);

	/* a relative, oddly spelt device path names the node from the working directory; realpath and /proc/self/fd show its canonical form */
	ASSERT_TRUE(mkdir(t_domain(), 0700) == 0 || errno == EEXIST);
	ASSERT_OK(chdir(t_domain()));
	ASSERT_OK(mkdir("devdir", 0700));
	ASSERT_OK(setenv("BUS1_DEVICE", "devdir/..//devdir/bus1x", 1));
	ASSERT_TRUE(realpath(".", spelt) == spelt);
	strcat(spelt, "/devdir/bus1x");
	p = realpath("./devdir/bus1x", NULL);
	ASSERT_TRUE(p != NULL);
	ASSERT_EQ(strcmp(p, spelt), 0);
	free(p);
	fd = open("devdir/bus1x", O_RDWR | O_CLOEXEC);
	ASSERT_TRUE(fd >= 0);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, sizeof(buf) - 1);
	ASSERT_TRUE(n > 0);
	buf[n] = 0;
	ASSERT_EQ(strcmp(buf, spelt), 0);
	ASSERT_OK(close(fd));
}
