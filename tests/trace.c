/* SPDX-License-Identifier: MIT */
/*
 * BUS1_TRACE: one line per call the shim answers for the device or a peer
 * fd ("bus1 <pid>/<tid> <seconds>: ..."), with arguments and results
 * decoded: IDs and offsets in hex, commands, message types, flags and
 * errno values by name. BUS1_TRACE=1 writes to stderr, any other value
 * names a file (%p: the process ID). See docs/man/bus1.7.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <regex.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "abi-both.h"
#include "mp-util.h"

/* Reads all of fd into buf (NUL-terminated). */
static void tr_slurp(int fd, char *buf, size_t size)
{
	size_t len = 0;
	ssize_t n;

	while (len < size - 1 && (n = read(fd, buf + len, size - 1 - len)) > 0)
		len += (size_t)n;
	buf[len] = 0;
}

/*
 * Runs T_CHILD `child` (with the argument `arg`, if not NULL) with
 * BUS1_TRACE=`trace` (unset if NULL) and its stdout and stderr captured;
 * returns its pid once it exited with 0.
 */
static pid_t tr_run(const char *trace, const char *child, const char *arg,
		    char *out, size_t out_size, char *err, size_t err_size)
{
	int po[2], pe[2];
	pid_t pid;

	mp_pipe(po);
	mp_pipe(pe);
	pid = mp_fork();
	if (pid == 0) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		if (trace)
			setenv("BUS1_TRACE", trace, 1);
		else
			unsetenv("BUS1_TRACE");
		execl(t_self_exe(), t_self_exe(), "--child", child, arg, (char *)NULL);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	tr_slurp(po[0], out, out_size);
	tr_slurp(pe[0], err, err_size);
	close(po[0]);
	close(pe[0]);
	mp_reap(pid);
	return pid;
}

/* Fails unless `text` contains `want`. */
#define TR_HAS(text, ...) tr_has(__FILE__, __LINE__, (text), __VA_ARGS__)
static void __attribute__((format(printf, 4, 5)))
tr_has(const char *file, int line, const char *text, const char *fmt, ...)
{
	char want[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(want, sizeof(want), fmt, ap);
	va_end(ap);
	if (!strstr(text, want))
		t_fail(file, line, "trace lacks \"%s\" in:\n%s", want, text);
}

/*
 * Every line is "bus1 <pid>/<tid> <s>.<us>: ...", of process `pid` (and,
 * for a single-threaded one, its thread), timestamps never going back.
 * Returns the number of lines.
 */
static int tr_check_prefixes(const char *text, pid_t pid)
{
	regex_t re;
	regmatch_t m[4];
	double last = 0;
	int lines = 0;
	const char *p = text;

	ASSERT_EQ(regcomp(&re, "^bus1 ([0-9]+)/([0-9]+) ([0-9]+\\.[0-9]{6}): [^\n]+$", REG_EXTENDED | REG_NEWLINE), 0);
	while (*p) {
		const char *nl = strchr(p, '\n');
		char line[4096];
		double t;

		ASSERT_TRUE(nl != NULL);
		snprintf(line, sizeof(line), "%.*s", (int)(nl - p), p);
		if (regexec(&re, line, 4, m, 0) != 0)
			t_fail(__FILE__, __LINE__, "malformed trace line: %s", line);
		ASSERT_EQ(atoi(line + m[1].rm_so), pid);
		ASSERT_EQ(atoi(line + m[2].rm_so), pid);
		t = strtod(line + m[3].rm_so, NULL);
		ASSERT_TRUE(t >= last);
		last = t;
		lines++;
		p = nl + 1;
	}
	regfree(&re);
	return lines;
}

/*
 * Makes one call of every kind, and prints the facts the trace must show
 * (descriptors, IDs, offsets) to stdout, one "name value" per line.
 */
T_CHILD(traced_calls)
{
	struct bus1_cmd_peer_reset q;
	struct bus1_cmd_peer_reset_u64 q64 = { 0 };
	struct bus1_cmd_recv r;
	struct iovec v[2] = { { "hello", 5 }, { " world", 6 } };
	uint64_t h, own = 0x200, err[2], dests[2];
	int a = b1_open(), b = b1_open(), p[2], fd;
	void *map;

	ASSERT_EQ(argc, 0);
	ASSERT_OK(pipe(p));
	printf("a %d\nb %d\npipe %d\n", a, b, p[0]);
	ASSERT_EQ(b1_query(a, &q), 0);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_PEER_QUERY_U64, &q64), 0);
	ASSERT_EQ(b1_set_slices(a, 100), 0);
	h = b1_handle_to(b, 0x100, a);
	printf("h %#llx\n", (unsigned long long)h);
	/* a payload handle of a's own, a new node, and an fd */
	ASSERT_EQ(b1_send(a, 0, &h, 1, NULL, v, 2, &own, 1, &p[0], 1), 0);
	map = mmap(NULL, B1_POOL_SIZE, PROT_READ, MAP_SHARED, b, 0);
	ASSERT_TRUE(map != MAP_FAILED);
	printf("map %p\n", map);
	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, b, 0) == MAP_FAILED);
	ASSERT_EQ(b1_recv(b, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	printf("pid %d\noffset %#llx\n", getpid(), (unsigned long long)r.msg.offset);
	ASSERT_EQ(b1_slice_release(b, r.msg.offset), 0);
	ASSERT_EQ(b1_release(b, 0x3), -ENXIO);
	/* the node travels to b; destroying it tells b */
	ASSERT_EQ(b1_destroy(a, &own, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ_U64(r.msg.type, BUS1_MSG_NODE_DESTROY);
	printf("destroyed %#llx\n", (unsigned long long)r.msg.destination);
	ASSERT_EQ(b1_disconnect(b1_open()), 0);
	ASSERT_EQ(b1_ioctl_raw(a, 0xdeadbeef, 0), -ENOTTY);
	ASSERT_ERRNO(open(b1_device(), O_RDWR | O_DIRECTORY), ENOTDIR);
	/* CONTINUE: one destination delivered, one whose owner is gone */
	fd = b1_open();
	dests[0] = h;
	dests[1] = b1_handle_to(fd, 0x400, a);
	ASSERT_OK(close(fd));
	ASSERT_EQ(b1_send(a, BUS1_SEND_FLAG_CONTINUE, dests, 2, err, v, 1, NULL, 0, NULL, 0), 0);
	ASSERT_EQ_U64(err[1], ESHUTDOWN);
	/* the final ABI's RECV, in its own layout */
	{
		struct b1_recv_final rf;

		ASSERT_EQ(b1_recv_final(b, &rf, 0), 0);
		printf("final %#llx\n", (unsigned long long)rf.msg.offset);
	}
	ASSERT_OK(setenv("BUS1_DOMAIN", "/proc/no-such-domain", 1));
	ASSERT_ERRNO(open(b1_device(), O_RDWR | O_CLOEXEC), ENOENT);
	fd = open(b1_device(), O_PATH | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	/* waits that involve a peer fd */
	{
		struct pollfd pf = { .fd = b, .events = POLLIN };
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 7 };
		int ep = epoll_create1(EPOLL_CLOEXEC);

		ASSERT_EQ(b1_send_one(a, h, "w", 1), 0);
		ASSERT_EQ(poll(&pf, 1, 0), 1);
		ASSERT_GE(ep, 0);
		ASSERT_OK(epoll_ctl(ep, EPOLL_CTL_ADD, b, &ev));
		ASSERT_EQ(epoll_wait(ep, &ev, 1, 0), 1);
		printf("ep %d\n", ep);
	}
	ASSERT_OK(close(b));
	printf("done\n");
	return 0;
}

/* BUS1_TRACE=1: every call on stderr, decoded, prefixed with pid, tid and time */
TEST(trace_decodes_every_call)
{
	static char out[4096], err[1 << 16];
	char dev_open[256];
	int a = -1, b = -1, pipe_fd = -1, pid_seen = -1;
	unsigned long long h = 0, offset = 0, destroyed = 0, final_offset = 0;
	int ep = -1;
	pid_t pid = tr_run("1", "traced_calls", NULL, out, sizeof(out), err, sizeof(err));

	ASSERT_EQ(sscanf(out, "a %d\nb %d\npipe %d\nh %llx\n", &a, &b, &pipe_fd, &h), 4);
	ASSERT_TRUE(strstr(out, "\npid ") != NULL);
	ASSERT_EQ(sscanf(strstr(out, "\npid "), "\npid %d\noffset %llx\n", &pid_seen, &offset), 2);
	ASSERT_EQ(sscanf(strstr(out, "\ndestroyed "), "\ndestroyed %llx\n", &destroyed), 1);
	ASSERT_EQ(sscanf(strstr(out, "\nfinal "), "\nfinal %llx\n", &final_offset), 1);
	ASSERT_EQ(sscanf(strstr(out, "\nep "), "\nep %d\n", &ep), 1);
	ASSERT_TRUE(strstr(out, "\ndone\n") != NULL);
	ASSERT_EQ(pid_seen, pid);
	ASSERT_GE(tr_check_prefixes(err, pid), 20);

	snprintf(dev_open, sizeof(dev_open), ": open \"%s\" O_RDWR|O_NONBLOCK|O_CLOEXEC domain ", b1_device());
	TR_HAS(err, "%s", dev_open);
	TR_HAS(err, " -> fd %d (peer 0x1)\n", a);
	TR_HAS(err, " -> fd %d (peer 0x2)\n", b);
	TR_HAS(err, ": fd %d peer 0x1 PEER_QUERY {flags 0} -> 0 {peer_flags 0, max_slices 16384, "
	       "max_handles 65536, max_inflight_bytes 16777216, max_inflight_fds 4096}\n", a);
	TR_HAS(err, ": fd %d peer 0x1 PEER_QUERY_U64 {flags 0} -> 0 {peer_flags 0, max_slices 16384,", a);
	TR_HAS(err, ": fd %d peer 0x1 PEER_RESET {flags 0, peer_flags keep, max_slices 100, max_handles keep, "
	       "max_inflight_bytes keep, max_inflight_fds keep} -> 0\n", a);
	TR_HAS(err, ": fd %d peer 0x2 HANDLE_TRANSFER {flags 0, src_handle 0x100, dst_fd %d} -> 0 {dst_handle %#llx}\n",
	       b, a, h);
	TR_HAS(err, ": fd %d peer 0x1 SEND {flags 0, destinations [%#llx], vecs 2 (11 bytes), handles [0x200], fds [%d]} -> 0\n",
	       a, h, pipe_fd);
	TR_HAS(err, ": fd %d peer 0x2 mmap {len 0x20000000, prot PROT_READ, flags MAP_SHARED, offset 0x0} -> 0x", b);
	TR_HAS(err, ": fd %d peer 0x2 mmap {len 0x1000, prot PROT_READ|PROT_WRITE, flags MAP_SHARED, offset 0x0} -> -1 EPERM\n", b);
	TR_HAS(err, ": fd %d peer 0x2 RECV {flags INSTALL_FDS, max_offset 0x20000000} -> 0 {type DATA, flags 0, "
	       "destination 0x100, uid %u, gid %u, pid %d, tid %d, offset 0x%llx, n_bytes 11, n_handles 1, n_fds 1, n_secctx 0}\n",
	       b, getuid(), getgid(), pid, pid, offset);
	TR_HAS(err, ": fd %d peer 0x2 SLICE_RELEASE {offset 0x%llx} -> 0\n", b, offset);
	TR_HAS(err, ": fd %d peer 0x2 HANDLE_RELEASE {id 0x3} -> -1 ENXIO\n", b);
	TR_HAS(err, ": fd %d peer 0x1 NODES_DESTROY {flags RELEASE_HANDLES, nodes [0x200]} -> 0\n", a);
	TR_HAS(err, ": fd %d peer 0x2 RECV {flags 0, max_offset 0x20000000} -> 0 {type NODE_DESTROY, flags 0, destination %#llx}\n",
	       b, destroyed);
	TR_HAS(err, ": fd %d peer 0x2 RECV (final) {flags 0, max_offset 0x100000000} -> 0 {type DATA, flags 0, "
	       "destination 0x100, offset 0x%llx, n_bytes 5, n_handles 0, n_fds 0}\n", b, final_offset);
	TR_HAS(err, " PEER_DISCONNECT {arg 0x0} -> 0\n");
	TR_HAS(err, ": fd %d peer 0x1 ioctl 0xdeadbeef arg 0x0 -> -1 ENOTTY\n", a);
	TR_HAS(err, ": open \"%s\" O_RDWR|O_DIRECTORY -> -1 ENOTDIR\n", b1_device());
	TR_HAS(err, ": fd %d peer 0x1 SEND {flags CONTINUE, destinations [%#llx, 0x", a, h);
	TR_HAS(err, "vecs 1 (5 bytes), handles [], fds []} -> 0 {errors [0, ESHUTDOWN]}\n");
	TR_HAS(err, ": open \"%s\" O_RDWR|O_CLOEXEC domain /proc/no-such-domain -> -1 ENOENT\n", b1_device());
	TR_HAS(err, ": open \"%s\" O_RDONLY|O_CLOEXEC|O_PATH -> fd ", b1_device());
	TR_HAS(err, " (a path descriptor, no peer)\n");
	TR_HAS(err, ": poll [fd %d peer 0x2 IN -> IN] -> 1\n", b);
	TR_HAS(err, ": epoll_wait epfd %d [peer fds %d] -> 1\n", ep, b);
	TR_HAS(err, ": fd %d peer 0x2 closed (the last in this process)\n", b);
	/* the pipe and other descriptors are not the shim's business */
	ASSERT_TRUE(strstr(err, "E?") == NULL);
}

/* Opens a peer, forks a child that opens one too, and changes directory. */
T_CHILD(traced_fork)
{
	pid_t pid;
	int first = b1_open(), fd;

	ASSERT_EQ(argc, 0);
	ASSERT_OK(chdir("/"));
	/* the trace file is the shim's own: closefrom does not take it */
	closefrom(3);
	fd = b1_open();
	pid = mp_fork();
	if (pid == 0) {
		b1_open();
		_exit(0);
	}
	mp_reap(pid);
	printf("%d %d %d\n", first, fd, pid);
	return 0;
}

/* BUS1_TRACE=FILE: lines go to the file, one per process with %p, mode 0600 */
TEST(trace_to_a_file_per_process)
{
	static char out[256], err[4096], text[1 << 14];
	char dir[4096], path[8192];
	struct stat st;
	int fd, first_fd, child_fd, tfd;
	pid_t pid, grandchild;

	snprintf(dir, sizeof(dir), "%s.trace", t_domain());
	ASSERT_OK(mkdir(dir, 0700));
	ASSERT_OK(chdir(dir));
	/* relative: resolved against the directory at the first call */
	pid = tr_run("t.%p.log", "traced_fork", NULL, out, sizeof(out), err, sizeof(err));
	ASSERT_EQ(err[0], 0);
	ASSERT_EQ(sscanf(out, "%d %d %d", &first_fd, &child_fd, &grandchild), 3);

	snprintf(path, sizeof(path), "%s/t.%d.log", dir, pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_OK(fstat(fd, &st));
	ASSERT_EQ(st.st_mode & 0777, 0600);
	tr_slurp(fd, text, sizeof(text));
	close(fd);
	/* open, closefrom's close, open, exit's close */
	ASSERT_EQ(tr_check_prefixes(text, pid), 4);
	TR_HAS(text, " -> fd %d (peer 0x1)\n", first_fd);
	TR_HAS(text, ": fd %d peer 0x1 closed (the last in this process)\n", first_fd);
	TR_HAS(text, " -> fd %d (peer 0x2)\n", child_fd);

	snprintf(path, sizeof(path), "%s/t.%d.log", dir, grandchild);
	tfd = open(path, O_RDONLY | O_CLOEXEC);
	ASSERT_GE(tfd, 0);
	tr_slurp(tfd, text, sizeof(text));
	close(tfd);
	/* its open (it leaves with _exit, which closes nothing itself) */
	ASSERT_EQ(tr_check_prefixes(text, grandchild), 1);
	TR_HAS(text, "(peer 0x3)\n");
}

/* Opens the device in the domain argv[0], which must be refused. */
T_CHILD(refused_open)
{
	ASSERT_EQ(argc, 1);
	ASSERT_OK(setenv("BUS1_DOMAIN", argv[0], 1));
	ASSERT_ERRNO(open(b1_device(), O_RDWR | O_CLOEXEC), EPERM);
	return 0;
}

/* An open refused for a directory others could control says which and why */
TEST(trace_names_a_refused_directory)
{
	static char out[256], err[4096];
	char dir[4096];

	snprintf(dir, sizeof(dir), "%s.open", t_domain());
	ASSERT_OK(mkdir(dir, 0700));
	ASSERT_OK(chmod(dir, 0777));
	tr_run("1", "refused_open", dir, out, sizeof(out), err, sizeof(err));
	TR_HAS(err, " domain %s -> -1 EPERM (refused: %s: ", dir, dir);
	TR_HAS(err, "writable");
}

/* Makes a few calls, tracing or not. */
T_CHILD(quiet_calls)
{
	struct bus1_cmd_peer_reset q;
	int fd = b1_open();

	ASSERT_EQ(argc, 0);
	ASSERT_EQ(b1_query(fd, &q), 0);
	ASSERT_EQ(b1_ioctl_raw(fd, 0xdeadbeef, 0), -ENOTTY);
	ASSERT_OK(close(fd));
	return 0;
}

/* BUS1_TRACE unset, empty or 0: nothing is written */
TEST(trace_off_writes_nothing)
{
	static char out[256], err[4096];
	const char *off[] = { NULL, "", "0" };

	for (unsigned i = 0; i < 3; i++) {
		tr_run(off[i], "quiet_calls", NULL, out, sizeof(out), err, sizeof(err));
		ASSERT_EQ(out[0], 0);
		ASSERT_EQ(err[0], 0);
	}
	tr_run("1", "quiet_calls", NULL, out, sizeof(out), err, sizeof(err));
	TR_HAS(err, " PEER_QUERY {flags 0} -> 0 {");
}
