/* SPDX-License-Identifier: MIT */
/*
 * The trust boundary on the file system. A domain directory or file that
 * another user could control refuses the open with EPERM and a trace line
 * saying why, and nothing is created in it or followed through it; files
 * and sockets get exact modes whatever the umask; a stray datagram never
 * leaves a peer readable for good; a group-writable set-group-ID directory
 * named on purpose is a domain shared by its group, and only then.
 *
 * The squatting attacks are replayed with two made-up unprivileged users:
 * A, the victim, and B, the attacker (and a group G); their steps run in
 * processes of their own (setpriv), the test process (root) checks the
 * outcome. Without root, or without setpriv, those cases are skipped.
 */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include "bus1-util.h"
#include "mp-util.h"

struct tr_users {
	uid_t a, b, c;	/* victim, attacker, an outsider */
	gid_t g;	/* a group A and B may join */
};

/* The made-up users of this case (unique per test process). */
static struct tr_users tr_users(void)
{
	unsigned base = 42000 + (unsigned)(getpid() % 4000) * 4;
	char parent[4096];

	if (geteuid() != 0)
		t_skip("needs root to act as other users");
	if (system("setpriv --help >/dev/null 2>&1") != 0)
		t_skip("needs setpriv");
	/* the other users must reach the case's directories */
	snprintf(parent, sizeof(parent), "%s", t_domain());
	*strrchr(parent, '/') = 0;
	ASSERT_OK(chmod(parent, 0711));
	return (struct tr_users){ base, base + 1, base + 3, base + 2 };
}

/* A new directory of the case owned by uid:gid with exactly `mode`. */
static const char *tr_dir(const char *tag, mode_t mode, uid_t uid, gid_t gid)
{
	char *path = strdup(t_new_domain(tag));

	ASSERT_OK(mkdir(path, 0700));
	ASSERT_OK(chown(path, uid, gid));
	ASSERT_OK(chmod(path, mode));
	return path;
}

static const char *tr_path(const char *dir, const char *name)
{
	char *p;

	ASSERT_TRUE(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

/* The default domain of uid and its memory and links directories. */
static const char *tr_default_dir(uid_t uid, const char *suffix)
{
	char *p;

	ASSERT_TRUE(asprintf(&p, "/dev/shm/bus1-%u%s", (unsigned)uid, suffix) > 0);
	return p;
}

static void tr_rm_rf(const char *path)
{
	char cmd[4200];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	ASSERT_EQ(system(cmd), 0);
}

static void tr_forget_defaults(uid_t uid)
{
	tr_rm_rf(tr_default_dir(uid, ""));
	tr_rm_rf(tr_default_dir(uid, ".mem"));
	tr_rm_rf(tr_default_dir(uid, ".links"));
}

/*
 * Runs the T_CHILD entry `name` (arguments up to a NULL) as uid/gid, with
 * supplementary group `group` (0: none), BUS1_DOMAIN = `domain` (NULL: the
 * default domain, XDG_RUNTIME_DIR unset) and BUS1_TRACE=1. Its stderr goes
 * to `err` (if non-NULL). Returns its exit status.
 */
static int tr_run(uid_t uid, gid_t gid, gid_t group, const char *domain, char *err, size_t errsz, const char *name, ...)
{
	const char *argv[16];
	char ru[32], rg[32], gr[32], scratch[256];
	int n = 0, p[2], status;
	size_t len = 0;
	ssize_t got;
	va_list ap;
	pid_t pid;

	snprintf(ru, sizeof(ru), "--reuid=%u", (unsigned)uid);
	snprintf(rg, sizeof(rg), "--regid=%u", (unsigned)gid);
	snprintf(gr, sizeof(gr), "--groups=%u", (unsigned)group);
	argv[n++] = "setpriv";
	argv[n++] = ru;
	argv[n++] = rg;
	argv[n++] = group ? gr : "--clear-groups";
	argv[n++] = t_self_exe();
	argv[n++] = "--child";
	argv[n++] = name;
	va_start(ap, name);
	while (n < 15 && (argv[n] = va_arg(ap, const char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	mp_pipe(p);
	pid = mp_fork();
	if (pid == 0) {
		dup2(p[1], 2);
		if (domain)
			setenv("BUS1_DOMAIN", domain, 1);
		else
			unsetenv("BUS1_DOMAIN");
		unsetenv("XDG_RUNTIME_DIR");
		setenv("BUS1_TRACE", "1", 1);
		execvp("setpriv", (char **)argv);
		_exit(127);
	}
	close(p[1]);
	while ((got = read(p[0], err ? err + len : scratch, err ? errsz - 1 - len : sizeof(scratch))) > 0)
		if (err)
			len += (size_t)got;
	if (err)
		err[len] = 0;
	close(p[0]);
	status = mp_wait(pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Checks the type, mode and group of every file the bus keeps in `dir`. */
static void tr_expect_modes(const char *dir, mode_t mode, gid_t gid, int count)
{
	char files[4096], *name, *save = NULL;
	int n = 0;

	mp_dir_files(dir, files, sizeof(files), NULL);
	for (name = strtok_r(files, "\n", &save); name; name = strtok_r(NULL, "\n", &save)) {
		int sock = !strncmp(name, "peer.", 5) || !strncmp(name, "vault.", 6);
		struct stat st;

		ASSERT_OK(lstat(tr_path(dir, name), &st));
		if (!strcmp(name, "memory"))
			continue;
		ASSERT_EQ(st.st_mode & S_IFMT, sock ? S_IFSOCK : S_IFREG);
		ASSERT_EQ(st.st_mode & 07777, mode);
		if (gid != (gid_t)-1)
			ASSERT_EQ(st.st_gid, gid);
		n++;
	}
	ASSERT_EQ(n, count);
}

/* Whether `dir` holds nothing at all. */
static int tr_empty(const char *dir)
{
	char files[4096];

	mp_dir_files(dir, files, sizeof(files), NULL);
	if (files[0])
		printf("    note: %s holds:\n%s", dir, files);
	return files[0] == 0;
}

static void tr_write_file(const char *path, const char *content, uid_t uid, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	ASSERT_OK(fchown(fd, uid, uid));
	ASSERT_OK(fchmod(fd, mode));
	close(fd);
}

/* Whether the file at path still holds exactly `content`. */
static int tr_file_is(const char *path, const char *content)
{
	char buf[256];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	struct stat st;

	ASSERT_TRUE(fd >= 0);
	ASSERT_OK(fstat(fd, &st));
	n = read(fd, buf, sizeof(buf));
	close(fd);
	return st.st_size == (off_t)strlen(content) && n == (ssize_t)strlen(content) && !memcmp(buf, content, (size_t)n);
}

static void tr_expect_mode(const char *path, mode_t type, mode_t mode, gid_t gid)
{
	struct stat st;

	ASSERT_OK(lstat(path, &st));
	ASSERT_EQ(st.st_mode & S_IFMT, type);
	ASSERT_EQ(st.st_mode & 07777, mode);
	if (gid != (gid_t)-1)
		ASSERT_EQ(st.st_gid, gid);
}

/* ----------------------------------------------------- the users' steps */

/* mkdir argv[0], then exactly mode argv[1] (octal). */
T_CHILD(tr_mkdir)
{
	ASSERT_EQ(argc, 2);
	ASSERT_OK(mkdir(argv[0], 0700));
	ASSERT_OK(chmod(argv[0], (mode_t)strtol(argv[1], NULL, 8)));
	return 0;
}

/* symlink argv[0] at argv[1]. */
T_CHILD(tr_symlink)
{
	ASSERT_EQ(argc, 2);
	ASSERT_OK(symlink(argv[0], argv[1]));
	return 0;
}

/* Creates file argv[0] (mode 0644) holding argv[1]. */
T_CHILD(tr_mkfile)
{
	int fd;

	ASSERT_EQ(argc, 2);
	fd = open(argv[0], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	ASSERT_TRUE(fd >= 0);
	ASSERT_EQ(write(fd, argv[1], strlen(argv[1])), (ssize_t)strlen(argv[1]));
	close(fd);
	return 0;
}

/* Opens a peer with umask 0; exits with the open's errno (0: it worked, and a message went round). */
T_CHILD(tr_open)
{
	int a, b;
	uint64_t h;
	struct bus1_cmd_recv r;

	umask(0);
	a = open(b1_device(), O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (a < 0)
		return errno;
	b = b1_open();
	h = mp_node(a, 0x100, b);
	ASSERT_EQ(b1_send_one(b, h, "hi", 2), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 2);
	return 0;
}

/* Sends a datagram to the socket at argv[0]; exits with sendto's errno. */
T_CHILD(tr_sendto)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	ASSERT_EQ(argc, 1);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[0]);
	if (sendto(s, "x", 1, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return errno;
	return 0;
}

/*
 * Opens peers a (serial 1) and b with a handle to a's node, reports on
 * pipe argv[1] and waits on pipe argv[0] (meanwhile a.pool is swapped);
 * then sends to a, which must fail with EPERM without a trace of the
 * message anywhere, and so must mapping a's pool. a still works for what
 * needs no pool.
 */
T_CHILD(tr_pool_swap_victim)
{
	int rd = (int)mp_arg(argv[0]), wr = (int)mp_arg(argv[1]);
	struct bus1_cmd_peer_reset q;
	int a, b;
	uint64_t h;
	char c;

	ASSERT_EQ(argc, 2);
	a = b1_open();
	b = b1_open();
	h = mp_node(a, 0x100, b);
	ASSERT_EQ(write(wr, "r", 1), 1);
	ASSERT_EQ(read(rd, &c, 1), 1);
	ASSERT_EQ(b1_send_one(b, h, "secret for a", 12), -EPERM);
	ASSERT_TRUE(mmap(NULL, B1_POOL_SIZE, PROT_READ, MAP_SHARED, a, 0) == MAP_FAILED);
	ASSERT_EQ(errno, EPERM);
	ASSERT_EQ(b1_query(a, &q), 0);
	return 0;
}

/* ------------------------------------------------------- squatting A's bus */

/* B makes A's default domain first, world-writable, with `segment` a link to A's file: A refuses it and touches nothing */
TEST(tr_default_dir_made_by_other_user_refused)
{
	struct tr_users u = tr_users();
	const char *dflt = tr_default_dir(u.a, "");
	const char *home = tr_dir("home", 0755, u.a, u.a);
	const char *victim = tr_path(home, "victim");
	char err[4096], want[4200];

	tr_forget_defaults(u.a);
	tr_write_file(victim, "precious\n", u.a, 0644);
	ASSERT_EQ(tr_run(u.b, u.b, 0, NULL, NULL, 0, "tr_mkdir", dflt, "0777", NULL), 0);
	ASSERT_EQ(tr_run(u.b, u.b, 0, NULL, NULL, 0, "tr_symlink", victim, tr_path(dflt, "segment"), NULL), 0);

	ASSERT_EQ(tr_run(u.a, u.a, 0, NULL, err, sizeof(err), "tr_open", NULL), EPERM);
	snprintf(want, sizeof(want), "-> -1 EPERM (refused: %s: is writable by every user (mode 0777))", dflt);
	ASSERT_TRUE(strstr(err, want) != NULL);
	ASSERT_TRUE(tr_file_is(victim, "precious\n"));
	ASSERT_OK(unlink(tr_path(dflt, "segment")));
	ASSERT_TRUE(tr_empty(dflt));
	ASSERT_ERRNO(access(tr_default_dir(u.a, ".mem"), F_OK), ENOENT);

	/* also when B leaves it writable by a group only (one A is in) */
	ASSERT_OK(chown(dflt, u.b, u.g));
	ASSERT_OK(chmod(dflt, 02770));
	ASSERT_EQ(tr_run(u.a, u.a, u.g, NULL, err, sizeof(err), "tr_open", NULL), EPERM);
	ASSERT_TRUE(strstr(err, "the default domain is private") != NULL);
	/* or closes it again: it is still B's */
	ASSERT_OK(chmod(dflt, 0755));
	ASSERT_EQ(tr_run(u.a, u.a, 0, NULL, err, sizeof(err), "tr_open", NULL), EPERM);
	ASSERT_TRUE(strstr(err, "belongs to uid") != NULL);
	ASSERT_TRUE(tr_empty(dflt));

	/* once it is gone, A's open makes it A's, mode 0700 */
	tr_rm_rf(dflt);
	ASSERT_EQ(tr_run(u.a, u.a, 0, NULL, NULL, 0, "tr_open", NULL), 0);
	tr_expect_mode(dflt, S_IFDIR, 0700, u.a);
	tr_forget_defaults(u.a);
}

/* B makes A's default domain a symbolic link to a directory of B's: A refuses it, B's directory stays empty */
TEST(tr_default_dir_link_to_other_users_dir_refused)
{
	struct tr_users u = tr_users();
	const char *dflt = tr_default_dir(u.a, "");
	const char *bdir = tr_dir("b", 0777, u.b, u.b);
	const char *home = tr_dir("home", 0700, u.a, u.a);
	const char *alias = tr_path(home, "bus");
	char err[4096];

	tr_forget_defaults(u.a);
	ASSERT_EQ(tr_run(u.b, u.b, 0, NULL, NULL, 0, "tr_symlink", bdir, dflt, NULL), 0);
	ASSERT_EQ(tr_run(u.a, u.a, 0, NULL, err, sizeof(err), "tr_open", NULL), EPERM);
	ASSERT_TRUE(strstr(err, "is a symbolic link, not a directory") != NULL);
	/* named explicitly, the default directory is just as strict */
	ASSERT_EQ(tr_run(u.a, u.a, 0, dflt, err, sizeof(err), "tr_open", NULL), EPERM);
	/* an explicit name is followed, but lands in B's directory */
	ASSERT_OK(symlink(bdir, alias));
	ASSERT_EQ(tr_run(u.a, u.a, 0, alias, err, sizeof(err), "tr_open", NULL), EPERM);
	ASSERT_TRUE(strstr(err, "is writable by every user") != NULL);
	ASSERT_OK(chmod(bdir, 0755));
	ASSERT_EQ(tr_run(u.a, u.a, 0, alias, err, sizeof(err), "tr_open", NULL), EPERM);
	ASSERT_TRUE(strstr(err, "belongs to uid") != NULL);
	ASSERT_TRUE(tr_empty(bdir));
	tr_forget_defaults(u.a);
}

/* B's file takes the place of A's pool: senders refuse to write A's messages into it, A cannot map it */
TEST(tr_pool_swapped_in_refused)
{
	struct tr_users u = tr_users();
	const char *dom = tr_dir("dom", 0700, u.a, u.a);
	const char *bdir = tr_dir("b", 0755, u.b, u.b);
	const char *bfile = tr_path(bdir, "pool");
	char rd[16], wr[16], c, err[8192];
	int go[2], ready[2], status, bfd;
	pid_t pid;

	mp_pipe(go);
	mp_pipe(ready);
	snprintf(rd, sizeof(rd), "%d", go[0]);
	snprintf(wr, sizeof(wr), "%d", ready[1]);
	pid = mp_fork();
	if (pid == 0) {
		close(go[1]);
		close(ready[0]);
		_exit(tr_run(u.a, u.a, 0, dom, err, sizeof(err), "tr_pool_swap_victim", rd, wr, NULL));
	}
	close(go[0]);
	close(ready[1]);
	ASSERT_EQ(read(ready[0], &c, 1), 1);
	/* B's file, with A's pool's name and size, where A's pool was */
	ASSERT_EQ(tr_run(u.b, u.b, 0, NULL, NULL, 0, "tr_mkfile", bfile, "B's", NULL), 0);
	ASSERT_OK(truncate(bfile, B1_POOL_SIZE));
	ASSERT_OK(chmod(bfile, 0666));	/* so that A could write into it */
	bfd = open(bfile, O_RDONLY | O_CLOEXEC);
	ASSERT_TRUE(bfd >= 0);
	ASSERT_OK(rename(bfile, tr_path(t_memory_dir_of(dom), "pool.1")));
	ASSERT_EQ(write(go[1], "g", 1), 1);
	status = mp_wait(pid);
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 0);
	/* nothing of A's message reached B's file */
	{
		char buf[16];
		struct stat st;

		ASSERT_EQ(pread(bfd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
		ASSERT_MEMEQ(buf, "B's\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
		ASSERT_OK(fstat(bfd, &st));
		ASSERT_EQ(st.st_blocks, 8);
		close(bfd);
	}
}

/* A link planted as `segment` in A's own domain is never followed: the linked file is untouched */
TEST(tr_segment_link_not_followed)
{
	struct tr_users u = tr_users();
	const char *dom = tr_dir("dom", 0700, u.a, u.a);
	const char *home = tr_dir("home", 0755, u.a, u.a);
	const char *victim = tr_path(home, "victim");
	char err[4096];

	tr_write_file(victim, "precious\n", u.a, 0644);
	ASSERT_OK(symlink(victim, tr_path(t_memory_dir_of(dom), "segment")));
	if (tr_run(u.a, u.a, 0, dom, err, sizeof(err), "tr_open", NULL) != EPERM)
		t_fail(__FILE__, __LINE__, "%s", err);
	ASSERT_TRUE(strstr(err, "/segment: is a symbolic link") != NULL);
	ASSERT_TRUE(tr_file_is(victim, "precious\n"));
	/* a segment that is B's (open to A) is refused as well */
	ASSERT_OK(unlink(tr_path(t_memory_dir_of(dom), "segment")));
	tr_write_file(tr_path(t_memory_dir_of(dom), "segment"), "", u.b, 0666);
	ASSERT_EQ(tr_run(u.a, u.a, 0, dom, err, sizeof(err), "tr_open", NULL), EPERM);
	ASSERT_TRUE(strstr(err, "/segment: belongs to uid") != NULL);
	ASSERT_TRUE(tr_file_is(tr_path(t_memory_dir_of(dom), "segment"), ""));
}

/* Another user cannot reach A's peer sockets at all, whatever A's umask was */
TEST(tr_peer_sockets_closed_to_other_users)
{
	struct tr_users u = tr_users();
	const char *sock;
	int a;

	/* the test process is the victim here */
	umask(0);
	a = b1_open();
	umask(022);
	sock = tr_path(t_memory_dir(), "peer.1");
	tr_expect_mode(sock, S_IFSOCK, 0600, (gid_t)-1);
	ASSERT_EQ(tr_run(u.b, u.b, 0, NULL, NULL, 0, "tr_sendto", sock, NULL), EACCES);
	/* even with the directory opened up, the socket itself stays closed */
	ASSERT_OK(chmod(t_memory_dir(), 0711));
	ASSERT_EQ(tr_run(u.b, u.b, 0, NULL, NULL, 0, "tr_sendto", sock, NULL), EACCES);
	ASSERT_EQ(b1_revents(a, POLLIN), 0);
}

/* B pre-makes A's memory or links directory: A's domains that need them are refused, nothing is made there */
TEST(tr_memory_and_links_dirs_made_by_other_user_refused)
{
	struct tr_users u = tr_users();
	const char *mem = tr_default_dir(u.a, ".mem");
	const char *links = tr_default_dir(u.a, ".links");
	char disk[] = "/var/tmp/bus1-trust.XXXXXX";
	char err[4096], *long_dom;
	const char *dom;

	tr_forget_defaults(u.a);
	if (!mkdtemp(disk))
		t_skip("no /var/tmp");
	dom = tr_path(disk, "dom");
	ASSERT_OK(chmod(disk, 0755));
	ASSERT_OK(mkdir(dom, 0700));
	ASSERT_OK(chown(dom, u.a, u.a));
	ASSERT_EQ(tr_run(u.b, u.b, 0, NULL, NULL, 0, "tr_mkdir", mem, "0777", NULL), 0);
	if (tr_run(u.a, u.a, 0, dom, err, sizeof(err), "tr_open", NULL) != EPERM || !strstr(err, ".mem: belongs to uid") || !tr_empty(dom)) {
		printf("%s", err);
		tr_rm_rf(disk);
		t_fail(__FILE__, __LINE__, "a domain on a disk used a memory directory made by another user");
	}
	ASSERT_TRUE(tr_empty(mem));
	tr_rm_rf(disk);

	/* a domain path too long for socket addresses needs the links directory */
	ASSERT_EQ(tr_run(u.b, u.b, 0, NULL, NULL, 0, "tr_mkdir", links, "0777", NULL), 0);
	dom = tr_dir("l", 0755, u.a, u.a);
	ASSERT_TRUE(asprintf(&long_dom, "%s/%0150d", dom, 0) > 0);
	ASSERT_EQ(tr_run(u.a, u.a, 0, long_dom, err, sizeof(err), "tr_open", NULL), EPERM);
	ASSERT_TRUE(strstr(err, ".links: belongs to uid") != NULL);
	ASSERT_TRUE(tr_empty(links));
	ASSERT_TRUE(tr_empty(long_dom));
	tr_forget_defaults(u.a);
}

/* -------------------------------------------------- modes and stray data */

/* Segment, pool, socket and vault have exactly mode 0600, whatever the umask */
TEST(tr_modes_ignore_umask)
{
	const uint8_t *pool;
	struct bus1_cmd_recv r;
	int a, b, fd;
	uint64_t h;

	umask(0);	/* nothing may come out more open than 0600 */
	a = b1_open();
	b = b1_open();
	pool = b1_map(a);
	h = mp_node(a, 0x100, b);
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, NULL, 0, NULL, 0, &fd, 1), 0);
	tr_expect_modes(t_memory_dir(), 0600, (gid_t)-1, 6);	/* segment, 2 pools, 2 peers, a vault */

	umask(0277);	/* nor less open than 0600 */
	ASSERT_OK(setenv("BUS1_DOMAIN", t_new_domain("m"), 1));
	a = b1_open();
	b = b1_open();
	h = mp_node(a, 0x100, b);
	ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, NULL, 0, NULL, 0, &fd, 1), 0);
	tr_expect_modes(t_memory_dir_of(getenv("BUS1_DOMAIN")), 0600, (gid_t)-1, 6);
	/* and they work: the message and its fd arrive */
	pool = b1_map(a);
	ASSERT_EQ(b1_recv(a, &r, BUS1_RECV_FLAG_INSTALL_FDS), 0);
	ASSERT_EQ(r.msg.n_fds, 1);
	ASSERT_TRUE(mp_slice_fd(pool, &r, 0) >= 0);
	umask(022);
}

/* The domain directory made on first use is exactly 0700, whatever the umask */
TEST(tr_new_domain_dir_is_0700)
{
	const char *dom = t_new_domain("d");
	struct stat st;

	ASSERT_OK(setenv("BUS1_DOMAIN", dom, 1));
	umask(0277);	/* would leave the owner without write permission */
	b1_open();
	umask(022);
	ASSERT_OK(stat(dom, &st));
	ASSERT_EQ(st.st_mode & 07777, 0700);
}

/* What the kernel says of fd (a waiter the shim cannot see: a raw poll(2) system call). */
static short raw_revents(int fd, short events)
{
	struct pollfd p = { .fd = fd, .events = events };

	ASSERT_GE(syscall(SYS_poll, &p, 1, 0), 0);
	return p.revents;
}

/*
 * A datagram someone else puts into a peer socket does not make the peer
 * readable for waits made through the shim, and does not leave the socket
 * readable for good for waiters that look at the socket itself.
 */
TEST(tr_stray_datagram_does_not_stick)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int a = b1_open(), b = b1_open();
	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;
	uint64_t h = mp_node(a, 0x100, b);
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	char ctl[CMSG_SPACE(sizeof(int))];
	struct iovec v = { "stray", 5 };
	struct msghdr m = { .msg_name = &sa, .msg_namelen = sizeof(sa), .msg_iov = &v, .msg_iovlen = 1,
			    .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/peer.1", t_memory_dir());
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &devnull, sizeof(int));

	/* on an empty queue: the shim's poll sees nothing; one RECV clears the socket */
	ASSERT_EQ(sendmsg(s, &m, 0), 5);
	ASSERT_EQ(b1_revents(a, POLLIN) & POLLIN, 0);
	ASSERT_EQ(raw_revents(a, POLLIN) & POLLIN, POLLIN);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	ASSERT_EQ(raw_revents(a, POLLIN) & POLLIN, 0);

	/* behind a queued message: the message comes, at most one RECV more */
	ASSERT_EQ(b1_send_one(b, h, "real", 4), 0);
	ASSERT_EQ(sendto(s, "x", 1, 0, (struct sockaddr *)&sa, sizeof(sa)), 1);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(memcmp(pool + r.msg.offset, "real", 4), 0);
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
	ASSERT_EQ(b1_revents(a, POLLIN) & POLLIN, 0);
	if (raw_revents(a, POLLIN) & POLLIN)
		ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	ASSERT_EQ(raw_revents(a, POLLIN) & POLLIN, 0);

	/* and the bus works as before */
	ASSERT_EQ(b1_send_one(b, h, "again", 5), 0);
	ASSERT_EQ(b1_revents(a, POLLIN) & POLLIN, POLLIN);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 5);
	ASSERT_EQ(b1_revents(a, POLLIN) & POLLIN, 0);
	ASSERT_EQ(raw_revents(a, POLLIN) & POLLIN, 0);
}

/* ---------------------------------------------------- a domain shared on purpose */

/*
 * A's side: opens pa and pb (a handle to pa's node), hands pb's fd and the
 * handle to B over socket argv[0], waits for B's message (its uid is
 * argv[1]) on pa, says so on pipe argv[2] and stays until pipe argv[3]
 * closes.
 */
T_CHILD(tr_shared_a)
{
	int sock = (int)mp_arg(argv[0]), done = (int)mp_arg(argv[2]), hold = (int)mp_arg(argv[3]);
	int pa, pb;
	uint64_t h;
	struct bus1_cmd_recv r;
	const uint8_t *pool;
	char c;

	ASSERT_EQ(argc, 4);
	umask(077);	/* the group gets in all the same */
	pa = b1_open();
	pb = b1_open();
	pool = b1_map(pa);
	h = mp_node(pa, 0x100, pb);
	mp_send_fd(sock, pb);
	mp_put_u64(sock, h);
	ASSERT_EQ(mp_recv_wait(pa, &r, 0, MP_WAIT_MS), 0);
	ASSERT_EQ(r.msg.n_bytes, 6);
	ASSERT_EQ(memcmp(pool + r.msg.offset, "from B", 6), 0);
	ASSERT_EQ(r.msg.uid, (uint32_t)mp_arg(argv[1]));
	ASSERT_EQ(write(done, "d", 1), 1);
	while (read(hold, &c, 1) > 0)
		;
	return 0;
}

/* B's side: gets A's peer fd and handle on socket argv[0], opens a peer of its own, sends to A's node, stays until pipe argv[1] closes. */
T_CHILD(tr_shared_b)
{
	int sock = (int)mp_arg(argv[0]), hold = (int)mp_arg(argv[1]);
	int pb, pc;
	uint64_t h;
	char c;

	ASSERT_EQ(argc, 2);
	umask(077);
	pb = mp_recv_fd(sock);
	h = mp_get_u64(sock);
	pc = b1_open();
	ASSERT_EQ(b1_transfer(pc, 0x100, pb, NULL), 0);
	ASSERT_EQ(b1_send_one(pb, h, "from B", 6), 0);
	while (read(hold, &c, 1) > 0)
		;
	return 0;
}

/* Runs A and B on the shared domain `dom`; checks that the files they made are group g's, mode 0660. */
static void tr_shared_run(struct tr_users u, const char *dom)
{
	char s0[16], s1[16], uid_b[16], dw[16], hr[16], c;
	int sv[2], done[2], hold[2];
	pid_t pa, pb;

	mp_socketpair(sv);
	mp_pipe(done);
	mp_pipe(hold);
	snprintf(s0, sizeof(s0), "%d", sv[0]);
	snprintf(s1, sizeof(s1), "%d", sv[1]);
	snprintf(uid_b, sizeof(uid_b), "%u", (unsigned)u.b);
	snprintf(dw, sizeof(dw), "%d", done[1]);
	snprintf(hr, sizeof(hr), "%d", hold[0]);
	pa = mp_fork();
	if (pa == 0) {
		close(hold[1]);
		_exit(tr_run(u.a, u.a, u.g, dom, NULL, 0, "tr_shared_a", s0, uid_b, dw, hr, NULL));
	}
	pb = mp_fork();
	if (pb == 0) {
		close(hold[1]);
		_exit(tr_run(u.b, u.b, u.g, dom, NULL, 0, "tr_shared_b", s1, hr, NULL));
	}
	close(done[1]);
	close(hold[0]);
	ASSERT_EQ(read(done[0], &c, 1), 1);
	/* segment, three peers' sockets and pools */
	tr_expect_modes(t_memory_dir_of(dom), 0660, u.g, 7);
	close(hold[1]);
	mp_reap(pa);
	mp_reap(pb);
	/* someone outside the group gets nowhere */
	ASSERT_EQ(tr_run(u.c, u.c, 0, dom, NULL, 0, "tr_open", NULL), EACCES);
}

/* A directory of root's, group G, mode 2770: A and B (both in G) share a bus there, and the bus's files are G's */
TEST(tr_shared_group_domain)
{
	struct tr_users u = tr_users();
	const char *dom = tr_dir("shared", 02770, 0, u.g);
	char disk[] = "/var/tmp/bus1-shared.XXXXXX";
	char want[64];
	const char *ddom, *mem;

	tr_shared_run(u, dom);

	/* on a disk, the memory goes to a directory of the group on /dev/shm */
	if (!mkdtemp(disk))
		t_skip("no /var/tmp");
	ASSERT_OK(chmod(disk, 0755));
	ddom = tr_path(disk, "dom");
	ASSERT_OK(mkdir(ddom, 0700));
	ASSERT_OK(chown(ddom, 0, u.g));
	ASSERT_OK(chmod(ddom, 02770));
	tr_shared_run(u, ddom);
	mem = t_memory_dir_of(ddom);
	snprintf(want, sizeof(want), "/dev/shm/bus1-g%u.mem/", (unsigned)u.g);
	if (strncmp(mem, want, strlen(want)) != 0) {
		tr_rm_rf(disk);
		t_fail(__FILE__, __LINE__, "memory of a shared disk domain in %s", mem);
	}
	/* the last one out removed it */
	ASSERT_ERRNO(access(mem, F_OK), ENOENT);
	tr_rm_rf(disk);
	/* (the group's directory stays if its maker was not the last one out) */
	want[strlen(want) - 1] = 0;
	tr_rm_rf(want);
}

/* Group-writable is shared only when set-group-ID, and only where nobody else can have made the directory */
TEST(tr_shared_domain_rules)
{
	struct tr_users u = tr_users();
	const char *plain = tr_dir("plain", 0770, u.a, u.g);
	const char *pub = tr_dir("pub", 01777, 0, 0);
	const char *priv = tr_dir("priv", 0755, 0, 0);
	const char *planted = tr_path(pub, "bus");
	const char *placed = tr_path(priv, "bus");
	char err[4096];

	ASSERT_EQ(tr_run(u.a, u.a, u.g, plain, err, sizeof(err), "tr_open", NULL), EPERM);
	ASSERT_TRUE(strstr(err, "is writable by its group but not set-group-ID (mode 0770)") != NULL);
	ASSERT_TRUE(tr_empty(plain));

	/* B (in G) plants a shared directory where anyone could have */
	ASSERT_EQ(tr_run(u.b, u.b, u.g, NULL, NULL, 0, "tr_mkdir", planted, "0770", NULL), 0);
	ASSERT_OK(chown(planted, u.b, u.g));
	ASSERT_OK(chmod(planted, 02770));
	ASSERT_EQ(tr_run(u.a, u.a, u.g, planted, err, sizeof(err), "tr_open", NULL), EPERM);
	ASSERT_TRUE(strstr(err, "anyone could have made it") != NULL);
	ASSERT_TRUE(tr_empty(planted));
	/* its owner may use it */
	ASSERT_EQ(tr_run(u.b, u.b, u.g, planted, NULL, 0, "tr_open", NULL), 0);

	/* where only root can make directories, A's shared directory is B's to use too */
	ASSERT_OK(mkdir(placed, 0700));
	ASSERT_OK(chown(placed, u.a, u.g));
	ASSERT_OK(chmod(placed, 02770));
	ASSERT_EQ(tr_run(u.b, u.b, u.g, placed, NULL, 0, "tr_open", NULL), 0);
	ASSERT_EQ(tr_run(u.a, u.a, u.g, placed, NULL, 0, "tr_open", NULL), 0);
}
