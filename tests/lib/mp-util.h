/* SPDX-License-Identifier: MIT */
/*
 * Helpers for multi-process cases: forking and reaping children (a failing
 * child fails the case), exec'ing T_CHILD entry points, pipe/socket based
 * synchronisation, passing descriptors with SCM_RIGHTS and waiting for a
 * peer to become readable.
 *
 * Every wait is bounded, so a lost wake-up or a dead partner shows up as a
 * failed assertion instead of a hang until the case's timeout.
 */
#ifndef BUS1_MP_UTIL_H
#define BUS1_MP_UTIL_H

#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "bus1-util.h"

#define MP_A8(x) (((uint64_t)(x) + 7) & ~(uint64_t)7)

/* Default bound for every wait that should finish at once. */
#define MP_WAIT_MS 5000

/* Opens a peer whose fd survives execve (b1_open() sets O_CLOEXEC). */
static inline int mp_open_inherit(void)
{
	int fd = open(b1_device(), O_RDWR | O_NONBLOCK);

	if (fd < 0)
		t_fail(__FILE__, __LINE__, "open(%s): %s", b1_device(), strerror(errno));
	return fd;
}

static inline double mp_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline void mp_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static inline pid_t mp_fork(void)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		t_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
	return pid;
}

/* Waits for pid and returns its raw wait status. */
static inline int mp_wait(pid_t pid)
{
	int status = 0;

	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			t_fail(__FILE__, __LINE__, "waitpid(%d): %s", (int)pid, strerror(errno));
	}
	return status;
}

/* Reaps pid; fails the case unless it exited with status 0. */
#define mp_reap(pid) mp_reap_at(__FILE__, __LINE__, (pid))
static inline void mp_reap_at(const char *file, int line, pid_t pid)
{
	int status = mp_wait(pid);

	if (WIFSIGNALED(status))
		t_fail(file, line, "child %d killed by signal %d", (int)pid, WTERMSIG(status));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		t_fail(file, line, "child %d exited with status %d", (int)pid,
		       WEXITSTATUS(status));
}

/*
 * Forks and execs the T_CHILD entry `name` with the given string arguments
 * (NULL-terminated list). Descriptors without FD_CLOEXEC are inherited.
 */
static inline pid_t mp_spawn(const char *name, ...)
{
	const char *argv[32];
	unsigned n = 0;
	va_list ap;
	const char *a;
	pid_t pid;

	argv[n++] = t_self_exe();
	argv[n++] = "--child";
	argv[n++] = name;
	va_start(ap, name);
	while ((a = va_arg(ap, const char *)) && n < 31)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	pid = mp_fork();
	if (pid == 0) {
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	return pid;
}

/* Integer and u64 arguments for mp_spawn(). */
static inline const char *mp_str(long long v)
{
	static char bufs[16][32];
	static unsigned next;
	char *b = bufs[next++ % 16];

	snprintf(b, sizeof(bufs[0]), "%lld", v);
	return b;
}

static inline const char *mp_hex(uint64_t v)
{
	static char bufs[16][32];
	static unsigned next;
	char *b = bufs[next++ % 16];

	snprintf(b, sizeof(bufs[0]), "0x%" PRIx64, v);
	return b;
}

static inline long long mp_arg(const char *s)
{
	return strtoll(s, NULL, 0);
}

static inline uint64_t mp_arg_u64(const char *s)
{
	return strtoull(s, NULL, 0);
}

/* A pipe whose ends survive exec. */
static inline void mp_pipe(int p[2])
{
	if (pipe(p) < 0)
		t_fail(__FILE__, __LINE__, "pipe: %s", strerror(errno));
}

/* A stream socket pair whose ends survive exec. */
static inline void mp_socketpair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		t_fail(__FILE__, __LINE__, "socketpair: %s", strerror(errno));
}

static inline void mp_put(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t r = write(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			t_fail(__FILE__, __LINE__, "write(%d): %s", fd, strerror(errno));
		p += r;
		n -= r;
	}
}

/* Reads exactly n bytes within timeout_ms; fails on EOF or timeout. */
static inline void mp_get_ms(int fd, void *buf, size_t n, int timeout_ms)
{
	char *p = buf;
	double end = mp_now() + timeout_ms / 1000.0;

	while (n) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		int left = (int)((end - mp_now()) * 1000);
		ssize_t r;

		if (left < 0)
			left = 0;
		r = poll(&pf, 1, left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			t_fail(__FILE__, __LINE__, "read(%d): timed out after %d ms", fd, timeout_ms);
		r = read(fd, p, n);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0)
			t_fail(__FILE__, __LINE__, "read(%d): %s", fd, strerror(errno));
		if (r == 0)
			t_fail(__FILE__, __LINE__, "read(%d): unexpected EOF", fd);
		p += r;
		n -= r;
	}
}

static inline void mp_get(int fd, void *buf, size_t n)
{
	mp_get_ms(fd, buf, n, 10000);
}

static inline void mp_put_u64(int fd, uint64_t v)
{
	mp_put(fd, &v, sizeof(v));
}

static inline uint64_t mp_get_u64(int fd)
{
	uint64_t v;

	mp_get(fd, &v, sizeof(v));
	return v;
}

/* Sends one descriptor (with one byte of data) over a unix socket. */
static inline void mp_send_fd(int sock, int fd)
{
	char byte = 'F';
	struct iovec v = { &byte, 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	struct msghdr m = {
		.msg_iov = &v, .msg_iovlen = 1,
		.msg_control = c.buf, .msg_controllen = sizeof(c.buf),
	};
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);

	memset(&c, 0, sizeof(c));
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &fd, sizeof(int));
	if (sendmsg(sock, &m, 0) != 1)
		t_fail(__FILE__, __LINE__, "sendmsg(SCM_RIGHTS): %s", strerror(errno));
}

/* Receives one descriptor sent by mp_send_fd() (no FD_CLOEXEC). */
static inline int mp_recv_fd(int sock)
{
	char byte;
	struct iovec v = { &byte, 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	struct msghdr m = {
		.msg_iov = &v, .msg_iovlen = 1,
		.msg_control = c.buf, .msg_controllen = sizeof(c.buf),
	};
	struct cmsghdr *h;
	struct pollfd pf = { .fd = sock, .events = POLLIN };
	int fd;

	if (poll(&pf, 1, 10000) != 1)
		t_fail(__FILE__, __LINE__, "recvmsg(SCM_RIGHTS): timed out");
	if (recvmsg(sock, &m, 0) != 1)
		t_fail(__FILE__, __LINE__, "recvmsg(SCM_RIGHTS): %s", strerror(errno));
	h = CMSG_FIRSTHDR(&m);
	if (!h || h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
		t_fail(__FILE__, __LINE__, "recvmsg: no SCM_RIGHTS");
	memcpy(&fd, CMSG_DATA(h), sizeof(int));
	return fd;
}

/*
 * Creates node `id` owned by `owner` (by transferring the unknown user-style
 * ID, §3.4) and gives `holder` a handle; returns the holder's handle ID.
 */
static inline uint64_t mp_node(int owner, uint64_t id, int holder)
{
	uint64_t h = BUS1_HANDLE_INVALID;
	int r = b1_transfer(owner, id, holder, &h);

	if (r)
		t_fail(__FILE__, __LINE__, "HANDLE_TRANSFER(0x%" PRIx64 "): %s", id, strerror(-r));
	return h;
}

/* Waits up to timeout_ms for any of `events` (or POLLHUP/POLLERR); returns revents. */
static inline short mp_poll_wait(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	double end = mp_now() + timeout_ms / 1000.0;

	for (;;) {
		int left = (int)((end - mp_now()) * 1000);
		int r;

		if (left < 0)
			left = 0;
		r = poll(&p, 1, left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			t_fail(__FILE__, __LINE__, "poll: %s", strerror(errno));
		if (r > 0 || left == 0)
			return p.revents;
	}
}

/*
 * RECV that waits up to timeout_ms for something deliverable (RECV itself
 * never blocks): returns 0 or -errno, -EAGAIN if nothing arrived in time.
 */
static inline int mp_recv_wait(int fd, struct bus1_cmd_recv *r, uint64_t flags, int timeout_ms)
{
	double end = mp_now() + timeout_ms / 1000.0;

	for (;;) {
		int ret = b1_recv(fd, r, flags);
		int left;

		if (ret != -EAGAIN)
			return ret;
		left = (int)((end - mp_now()) * 1000);
		if (left <= 0)
			return -EAGAIN;
		if (left > 100)
			left = 100;
		mp_poll_wait(fd, POLLIN, left);
	}
}

/* Descriptor number i of a DATA message received with INSTALL_FDS (§4.1). */
static inline int mp_slice_fd(const uint8_t *pool, const struct bus1_cmd_recv *r, unsigned i)
{
	int fd;

	memcpy(&fd, pool + r->msg.offset + MP_A8(r->msg.n_bytes) + 8 * r->msg.n_handles + 4 * i,
	       sizeof(fd));
	return fd;
}

/* Handle ID number i of a received DATA message (§4.1). */
static inline uint64_t mp_slice_handle(const uint8_t *pool, const struct bus1_cmd_recv *r, unsigned i)
{
	uint64_t h;

	memcpy(&h, pool + r->msg.offset + MP_A8(r->msg.n_bytes) + 8 * i, sizeof(h));
	return h;
}

/*
 * Reads a pipe until EOF, bounded by timeout_ms: returns 1 on EOF (every
 * write end is closed), 0 on timeout. Data found on the way is discarded.
 */
static inline int mp_pipe_eof(int rfd, int timeout_ms)
{
	double end = mp_now() + timeout_ms / 1000.0;
	char buf[256];

	for (;;) {
		struct pollfd p = { .fd = rfd, .events = POLLIN };
		int left = (int)((end - mp_now()) * 1000);
		ssize_t n;

		if (left < 0)
			left = 0;
		if (poll(&p, 1, left) <= 0) {
			if (left == 0)
				return 0;
			continue;
		}
		n = read(rfd, buf, sizeof(buf));
		if (n == 0)
			return 1;
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			t_fail(__FILE__, __LINE__, "read(%d): %s", rfd, strerror(errno));
	}
}

/* Whether some write end of the pipe read end rfd is still open (now). */
static inline int mp_pipe_has_writer(int rfd)
{
	struct pollfd p = { .fd = rfd, .events = POLLIN };

	if (poll(&p, 1, 0) < 0)
		t_fail(__FILE__, __LINE__, "poll: %s", strerror(errno));
	return !(p.revents & POLLHUP);
}

#endif /* BUS1_MP_UTIL_H */
