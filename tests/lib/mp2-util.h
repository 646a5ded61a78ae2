/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the multi-process groups (mp_teardown, mp_crash, mp_quota,
 * mp_order, mp_scale): spawning exec'd children, reaping them with a
 * checked exit status, waiting for messages with a bound, checksummed
 * payloads and a look at the domain directory.
 */
#ifndef BUS1_MP2_UTIL_H
#define BUS1_MP2_UTIL_H

#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "bus1-util.h"

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

/* Lets fd survive exec (b1_open sets O_CLOEXEC). */
static inline void mp_keep_fd(int fd)
{
	int fl = fcntl(fd, F_GETFD);

	if (fl < 0 || fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC) < 0)
		t_fail(__FILE__, __LINE__, "fcntl(%d): %s", fd, strerror(errno));
}

/*
 * Forks and execs the T_CHILD entry `name` with the given NULL-terminated
 * argument list. `crash`, if not NULL, is put into BUS1_CRASH_AT of the
 * child only. Descriptors the child needs must have been passed through
 * mp_keep_fd() first.
 */
static inline pid_t mp_spawnv(const char *crash, const char *name, char *const *args)
{
	char *argv[64];
	int n = 0;
	pid_t pid;

	argv[n++] = (char *)t_self_exe();
	argv[n++] = (char *)"--child";
	argv[n++] = (char *)name;
	while (args && *args && n < 63)
		argv[n++] = *args++;
	argv[n] = NULL;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		t_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
	if (pid == 0) {
		if (crash)
			setenv("BUS1_CRASH_AT", crash, 1);
		else
			unsetenv("BUS1_CRASH_AT");
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

/* mp_spawn(crash, name, "arg", ..., NULL) */
static inline pid_t mp_spawn(const char *crash, const char *name, ...)
{
	char *args[60];
	int n = 0;
	va_list ap;

	va_start(ap, name);
	while (n < 59 && (args[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	args[n] = NULL;
	return mp_spawnv(crash, name, args);
}

/* waitpid with EINTR retry; returns the raw status. */
static inline int mp_wait(pid_t pid)
{
	int st = 0;

	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR)
			t_fail(__FILE__, __LINE__, "waitpid(%d): %s", (int)pid, strerror(errno));
	}
	return st;
}

/* The child must have exited with status 0 (its own assertions passed). */
#define MP_EXPECT_OK(pid)							\
	do {									\
		pid_t mp_p_ = (pid);						\
		int mp_s_ = mp_wait(mp_p_);					\
		if (!WIFEXITED(mp_s_) || WEXITSTATUS(mp_s_) != 0)		\
			t_fail(__FILE__, __LINE__,				\
				"child %d (%s): %s %d", (int)mp_p_, #pid,	\
				WIFEXITED(mp_s_) ? "exit status" : "signal",	\
				WIFEXITED(mp_s_) ? WEXITSTATUS(mp_s_)		\
						 : WTERMSIG(mp_s_));		\
	} while (0)

/* The child must have been killed by SIGKILL. */
#define MP_EXPECT_KILLED(pid)							\
	do {									\
		pid_t mp_p_ = (pid);						\
		int mp_s_ = mp_wait(mp_p_);					\
		if (!WIFSIGNALED(mp_s_) || WTERMSIG(mp_s_) != SIGKILL)		\
			t_fail(__FILE__, __LINE__,				\
				"child %d (%s) not killed by SIGKILL: %s %d",	\
				(int)mp_p_, #pid,				\
				WIFEXITED(mp_s_) ? "exit status" : "signal",	\
				WIFEXITED(mp_s_) ? WEXITSTATUS(mp_s_)		\
						 : WTERMSIG(mp_s_));		\
	} while (0)

/* Waits up to timeout_ms for POLLIN on fd; returns revents (0 on timeout). */
static inline short mp_poll_in(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	double end = mp_now_ms() + timeout_ms;
	int r;

	for (;;) {
		int left = (int)(end - mp_now_ms());

		r = poll(&p, 1, left < 0 ? 0 : left);
		if (r >= 0 || errno != EINTR)
			break;
	}
	if (r < 0)
		t_fail(__FILE__, __LINE__, "poll: %s", strerror(errno));
	return r ? p.revents : 0;
}

/*
 * RECV, waiting in poll up to timeout_ms for something deliverable.
 * Returns 0 or -errno (-EAGAIN on timeout).
 */
static inline int mp_recv_wait(int fd, struct bus1_cmd_recv *r, uint64_t flags, int timeout_ms)
{
	double end = mp_now_ms() + timeout_ms;
	int ret;

	for (;;) {
		ret = b1_recv(fd, r, flags);
		if (ret != -EAGAIN)
			return ret;
		double left = end - mp_now_ms();

		if (left <= 0)
			return -EAGAIN;
		mp_poll_in(fd, left > 50 ? 50 : (int)left + 1);
	}
}

/* Full write/read on a pipe or socket (fails the case on error/EOF). */
static inline void mp_write(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			t_fail(__FILE__, __LINE__, "write: %s", strerror(errno));
		p += w;
		n -= w;
	}
}

/* Returns 1 when n bytes were read, 0 on EOF before the first byte. */
static inline int mp_read(int fd, void *buf, size_t n)
{
	char *p = buf;
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, p + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			t_fail(__FILE__, __LINE__, "read: %s", strerror(errno));
		if (r == 0) {
			if (got == 0)
				return 0;
			t_fail(__FILE__, __LINE__, "short read (%zu of %zu)", got, n);
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

static inline uint64_t mp_u64(const char *s)
{
	return strtoull(s, NULL, 0);
}

static inline const char *mp_fmt(char *buf, uint64_t v)
{
	sprintf(buf, "0x%" PRIx64, v);
	return buf;
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
 * The files of the domain directory: their names (sorted, one per line,
 * into buf) and the sum of their allocated blocks. Returns the file count.
 */
static inline int mp_domain_files(char *buf, size_t size, unsigned long long *blocks)
{
	struct dirent **list;
	int n = scandir(t_domain(), &list, NULL, alphasort);
	int count = 0;
	size_t used = 0;

	if (n < 0)
		t_fail(__FILE__, __LINE__, "scandir(%s): %s", t_domain(), strerror(errno));
	if (blocks)
		*blocks = 0;
	buf[0] = 0;
	for (int i = 0; i < n; i++) {
		const char *nm = list[i]->d_name;

		if (strcmp(nm, ".") && strcmp(nm, "..")) {
			char path[4096];
			struct stat st;

			snprintf(path, sizeof(path), "%s/%s", t_domain(), nm);
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
 * Waits up to `ms` until the domain directory lists exactly `want` (as
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

/* st_blocks of one file of the domain directory (-1 if missing). */
static inline long long mp_domain_file_blocks(const char *name)
{
	char path[4096];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", t_domain(), name);
	if (lstat(path, &st) < 0)
		return -1;
	return st.st_blocks;
}

/* Sends fd over a unix socket (SCM_RIGHTS). */
static inline void mp_send_fd(int sock, int fd)
{
	char c = 'F';
	struct iovec v = { &c, 1 };
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } u;
	struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1,
			    .msg_control = u.b, .msg_controllen = sizeof(u.b) };
	struct cmsghdr *c1 = CMSG_FIRSTHDR(&m);

	memset(&u, 0, sizeof(u));
	c1->cmsg_level = SOL_SOCKET;
	c1->cmsg_type = SCM_RIGHTS;
	c1->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c1), &fd, sizeof(int));
	if (sendmsg(sock, &m, 0) != 1)
		t_fail(__FILE__, __LINE__, "sendmsg: %s", strerror(errno));
}

static inline int mp_recv_fd(int sock)
{
	char c;
	struct iovec v = { &c, 1 };
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } u;
	struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1,
			    .msg_control = u.b, .msg_controllen = sizeof(u.b) };
	struct cmsghdr *c1;
	int fd;

	if (recvmsg(sock, &m, MSG_CMSG_CLOEXEC) != 1)
		t_fail(__FILE__, __LINE__, "recvmsg: %s", strerror(errno));
	c1 = CMSG_FIRSTHDR(&m);
	if (!c1 || c1->cmsg_type != SCM_RIGHTS)
		t_fail(__FILE__, __LINE__, "no fd received");
	memcpy(&fd, CMSG_DATA(c1), sizeof(int));
	return fd;
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

#endif /* BUS1_MP2_UTIL_H */
