/* SPDX-License-Identifier: MIT */
/*
 * Helpers for multi-process cases: forking and reaping children (a failing
 * child fails the case), exec'ing T_CHILD entry points (optionally with a
 * crash point), pipe/socket based synchronisation, passing descriptors with
 * SCM_RIGHTS, waiting for a peer to become readable, self-checking payloads
 * and a look at the domain directory.
 *
 * Waits for the bus are bounded, so a lost wake-up or a dead partner shows
 * up as a failed assertion instead of a hang until the case's timeout.
 */
#ifndef BUS1_MP_UTIL_H
#define BUS1_MP_UTIL_H

#include <dirent.h>
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

/*
 * Evaluates `expr`, a wait that something will end well within MP_WAIT_MS:
 * a wait that runs into its timeout still reports what became ready by
 * then, so a lost wake-up shows only as the time it took.
 */
#define MP_WOKEN(expr)							\
	({								\
		double w_t0_ = mp_now_ms();				\
		__typeof__(expr) w_v_ = (expr);				\
		double w_dt_ = mp_now_ms() - w_t0_;			\
		if (w_dt_ >= MP_WAIT_MS / 2)				\
			t_fail(__FILE__, __LINE__,			\
			       "%s took %.0f ms: lost wake-up", #expr, w_dt_); \
		w_v_;							\
	})

/* Opens a peer whose fd survives execve (b1_open() sets O_CLOEXEC). */
static inline int mp_open_inherit(void)
{
	int fd = open(b1_device(), O_RDWR | O_NONBLOCK);

	if (fd < 0)
		t_fail(__FILE__, __LINE__, "open(%s): %s", b1_device(), strerror(errno));
	return fd;
}

/* Monotonic time in milliseconds. */
static inline double mp_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
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

/*
 * Forks a child that waits for a byte on pipe end `rd` (the parent writes
 * it right before it blocks), sleeps `ms`, runs `body` and exits;
 * evaluates to the child's pid.
 */
#define MP_DELAYED_CHILD(rd, ms, body)					\
	({								\
		pid_t d_pid_ = mp_fork();				\
		if (d_pid_ == 0) {					\
			char d_c_;					\
			mp_get((rd), &d_c_, 1);				\
			mp_sleep_ms(ms);				\
			body;						\
			_exit(0);					\
		}							\
		d_pid_;							\
	})

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

/* Lets fd survive exec (b1_open sets O_CLOEXEC). */
static inline void mp_keep_fd(int fd)
{
	int fl = fcntl(fd, F_GETFD);

	if (fl < 0 || fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC) < 0)
		t_fail(__FILE__, __LINE__, "fcntl(%d): %s", fd, strerror(errno));
}

/* Reaps pid; fails the case unless it was killed by SIGKILL. */
#define mp_reap_killed(pid) mp_reap_killed_at(__FILE__, __LINE__, (pid))
static inline void mp_reap_killed_at(const char *file, int line, pid_t pid)
{
	int status = mp_wait(pid);

	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		t_fail(file, line, "child %d not killed by SIGKILL: %s %d", (int)pid,
		       WIFEXITED(status) ? "exit status" : "signal",
		       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/*
 * Forks and execs the T_CHILD entry `name` of the test binary `exe` with the
 * given NULL-terminated argument list, with `value` (if not NULL) in the
 * environment variable `var` of the child only (BUS1_CRASH_AT or
 * BUS1_PARK_AT; the other one is unset). Descriptors without FD_CLOEXEC
 * are inherited.
 */
static inline pid_t mp_spawn_env_v(const char *exe, const char *var, const char *value, const char *name,
				   const char *const *args)
{
	const char *argv[64];
	int n = 0;
	pid_t pid;

	argv[n++] = exe;
	argv[n++] = "--child";
	argv[n++] = name;
	while (args && *args && n < 63)
		argv[n++] = *args++;
	argv[n] = NULL;
	pid = mp_fork();
	if (pid == 0) {
		unsetenv("BUS1_CRASH_AT");
		unsetenv("BUS1_PARK_AT");
		if (value)
			setenv(var, value, 1);
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	return pid;
}

/*
 * mp_spawn_env_v with `crash`, if not NULL, in BUS1_CRASH_AT (mp_spawnv: of
 * this test binary).
 */
static inline pid_t mp_spawn_exe_v(const char *exe, const char *crash, const char *name, const char *const *args)
{
	return mp_spawn_env_v(exe, "BUS1_CRASH_AT", crash, name, args);
}

static inline pid_t mp_spawnv(const char *crash, const char *name, const char *const *args)
{
	return mp_spawn_exe_v(t_self_exe(), crash, name, args);
}

/* mp_spawn_crash(crash, name, "arg", ..., NULL): BUS1_CRASH_AT=crash in the child. */
static inline pid_t mp_spawn_crash(const char *crash, const char *name, ...)
{
	const char *args[60];
	int n = 0;
	va_list ap;

	va_start(ap, name);
	while (n < 59 && (args[n] = va_arg(ap, const char *)))
		n++;
	va_end(ap);
	args[n] = NULL;
	return mp_spawnv(crash, name, args);
}

/* mp_spawn(name, "arg", ..., NULL): no crash point in the child. */
#define mp_spawn(...) mp_spawn_crash(NULL, __VA_ARGS__)

/* Integer and u64 arguments for mp_spawn(). */
static inline const char *mp_str(long long v)
{
	static char bufs[16][32];
	static unsigned next;
	char *b = bufs[next++ % 16];

	snprintf(b, sizeof(bufs[0]), "%lld", v);
	return b;
}

/* v in hex into buf (at least 19 bytes); returns buf. */
static inline const char *mp_fmt(char *buf, uint64_t v)
{
	sprintf(buf, "0x%" PRIx64, v);
	return buf;
}

static inline const char *mp_hex(uint64_t v)
{
	static char bufs[16][32];
	static unsigned next;

	return mp_fmt(bufs[next++ % 16], v);
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
	double end = mp_now_ms() + timeout_ms;

	while (n) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		int left = (int)(end - mp_now_ms());
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

/*
 * Unbounded reads for children that report at their own pace: returns 1
 * when n bytes were read, 0 on EOF before the first byte.
 */
static inline int mp_read(int fd, void *buf, size_t n)
{
	char *p = buf;
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, p + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			t_fail(__FILE__, __LINE__, "read(%d): %s", fd, strerror(errno));
		if (r == 0) {
			if (got == 0)
				return 0;
			t_fail(__FILE__, __LINE__, "read(%d): short (%zu of %zu)", fd, got, n);
		}
		got += r;
	}
	return 1;
}

static inline void mp_read_full(int fd, void *buf, size_t n)
{
	if (!mp_read(fd, buf, n))
		t_fail(__FILE__, __LINE__, "unexpected EOF");
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
	double end = mp_now_ms() + timeout_ms;

	for (;;) {
		int left = (int)(end - mp_now_ms());
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
	double end = mp_now_ms() + timeout_ms;

	for (;;) {
		int ret = b1_recv(fd, r, flags);
		int left;

		if (ret != -EAGAIN)
			return ret;
		left = (int)(end - mp_now_ms());
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
	double end = mp_now_ms() + timeout_ms;
	char buf[256];

	for (;;) {
		struct pollfd p = { .fd = rfd, .events = POLLIN };
		int left = (int)(end - mp_now_ms());
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

/* FNV-1a, 64 bit. */
static inline uint64_t mp_fnv(const void *data, size_t n)
{
	const uint8_t *p = data;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/*
 * A self-checking message: a header naming sender, sequence number and
 * the set of destinations of the transaction, a body of pseudo-random
 * bytes derived from them, and a checksum of everything before it. The
 * length varies with the sequence number, so a message cut short or
 * mixed with another one is detected.
 */
struct mp_msg_hdr {
	uint32_t magic;
	uint32_t sender;
	uint64_t seq;
	uint64_t dests;		/* bit mask of receivers of the transaction */
	uint64_t len;		/* total length including the checksum */
};

#define MP_MSG_MAGIC 0x6d703231u
#define MP_MSG_MAX 4096

static inline size_t mp_msg_build(void *buf, uint32_t sender, uint64_t seq, uint64_t dests, size_t body)
{
	struct mp_msg_hdr *h = buf;
	uint8_t *p = (uint8_t *)(h + 1);
	uint64_t x = seq * 0x9e3779b97f4a7c15ULL ^ sender;
	size_t len = sizeof(*h) + body + 8;

	h->magic = MP_MSG_MAGIC;
	h->sender = sender;
	h->seq = seq;
	h->dests = dests;
	h->len = len;
	for (size_t i = 0; i < body; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
	uint64_t c = mp_fnv(buf, len - 8);

	memcpy(p + body, &c, 8);
	return len;
}

/* Checks a received payload; returns 1 if whole and consistent. */
static inline int mp_msg_check(const void *buf, uint64_t n, struct mp_msg_hdr *out)
{
	struct mp_msg_hdr h;
	uint64_t c;

	if (n < sizeof(h) + 8)
		return 0;
	memcpy(&h, buf, sizeof(h));
	if (h.magic != MP_MSG_MAGIC || h.len != n)
		return 0;
	memcpy(&c, (const uint8_t *)buf + n - 8, 8);
	if (c != mp_fnv(buf, n - 8))
		return 0;
	if (out)
		*out = h;
	return 1;
}

/* Raises the soft RLIMIT_NOFILE to the hard limit; returns the new limit. */
static inline rlim_t mp_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		t_fail(__FILE__, __LINE__, "getrlimit: %s", strerror(errno));
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		t_fail(__FILE__, __LINE__, "setrlimit: %s", strerror(errno));
	return rl.rlim_cur;
}

/*
 * The files of directory `dir`: their names (sorted, one per line, into buf)
 * and the sum of their allocated blocks. Returns the file count (0 if the
 * directory does not exist).
 */
static inline int mp_dir_files(const char *dir, char *buf, size_t size, unsigned long long *blocks)
{
	struct dirent **list;
	int n = scandir(dir, &list, NULL, alphasort);
	int count = 0;
	size_t used = 0;

	if (blocks)
		*blocks = 0;
	buf[0] = 0;
	if (n < 0 && errno == ENOENT)
		return 0;
	if (n < 0)
		t_fail(__FILE__, __LINE__, "scandir(%s): %s", dir, strerror(errno));
	for (int i = 0; i < n; i++) {
		const char *nm = list[i]->d_name;

		if (strcmp(nm, ".") && strcmp(nm, "..")) {
			char path[4096];
			struct stat st;

			snprintf(path, sizeof(path), "%s/%s", dir, nm);
			if (blocks && lstat(path, &st) == 0)
				*blocks += st.st_blocks;
			used += snprintf(buf + used, used < size ? size - used : 0, "%s\n", nm);
			count++;
		}
		free(list[i]);
	}
	free(list);
	return count;
}

/*
 * The files of the domain, in its memory directory (which is removed with
 * the memory of a domain nobody uses any more), as mp_dir_files() gives them.
 */
static inline int mp_domain_files(char *buf, size_t size, unsigned long long *blocks)
{
	return mp_dir_files(t_memory_dir(), buf, size, blocks);
}

/*
 * Waits up to `ms` until the domain's memory directory lists exactly `want` (as
 * mp_domain_files() prints it); fails the case with both lists otherwise.
 */
#define mp_expect_domain_files(want, ms) mp_expect_domain_files_at(__FILE__, __LINE__, (want), (ms))
static inline void mp_expect_domain_files_at(const char *file, int line, const char *want, unsigned ms)
{
	static char got[1 << 16];
	double t0 = mp_now_ms();

	for (;;) {
		mp_domain_files(got, sizeof(got), NULL);
		if (!strcmp(got, want) || mp_now_ms() - t0 >= ms)
			break;
		mp_sleep_ms(20);
	}
	if (strcmp(got, want))
		t_fail(file, line, "domain files (%zu bytes of names), first ones:\n%.400s\n--- expected:\n%s",
		       strlen(got), got, want);
}

/* st_blocks of one file of the domain's memory directory (-1 if missing). */
static inline long long mp_domain_file_blocks(const char *name)
{
	char path[4096];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", t_memory_dir(), name);
	if (lstat(path, &st) < 0)
		return -1;
	return st.st_blocks;
}

/* Expects a notification of `type` about `id` as the next entry of fd. */
#define MP_EXPECT_NOTE(fd, ty, id, timeout_ms)					\
	do {									\
		struct bus1_cmd_recv mp_r_;					\
		ASSERT_EQ(mp_recv_wait((fd), &mp_r_, 0, (timeout_ms)), 0);	\
		ASSERT_EQ(mp_r_.msg.type, (ty));				\
		ASSERT_EQ_U64(mp_r_.msg.destination, (id));			\
		ASSERT_EQ_U64(mp_r_.msg.offset, BUS1_OFFSET_INVALID);		\
	} while (0)

#endif /* BUS1_MP_UTIL_H */
