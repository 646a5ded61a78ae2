// SPDX-License-Identifier: MIT
/*
 * A damaged domain fails safe. The shim's test-only command B1_TEST_DAMAGE
 * breaks the segment in a way the engine detects (a bad offset, a list
 * that does not end, a duplicate table key). The call that meets it fails
 * with EIO, every later call on that domain, in any process, with
 * ENOTRECOVERABLE; no process is killed, each says once on stderr what
 * happened, another domain keeps working, and once nobody uses the
 * damaged domain any more the next process to open it starts it afresh.
 */
#define _GNU_SOURCE
#include <sys/wait.h>

#include "harness.h"
#include "bus1-util.h"
#include "mp-util.h"

/*
 * Sends what is written to fd 2 (the shim's lines, and those of children)
 * to a new file of the case's directory, to read it back later; the C
 * library's stderr, which failed assertions use, stays where it was.
 */
static const char *capture_stderr(const char *tag)
{
	static char path[4096];
	int fd, orig;

	snprintf(path, sizeof(path), "%s.%s.stderr", t_domain(), tag);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ASSERT_GE(fd, 0);
	fflush(stderr);
	orig = fcntl(2, F_DUPFD_CLOEXEC, 3);
	ASSERT_GE(orig, 0);
	stderr = fdopen(orig, "w");
	ASSERT_TRUE(stderr != NULL);
	ASSERT_GE(dup2(fd, 2), 0);
	close(fd);
	return path;
}

/* How many lines of the file at `path` contain `word`. */
static int lines_with(const char *path, const char *word)
{
	char line[4096];
	int n = 0;
	FILE *f = fopen(path, "r");

	ASSERT_TRUE(f != NULL);
	while (fgets(line, sizeof(line), f))
		n += strstr(line, word) != NULL;
	fclose(f);
	return n;
}

/* Every kind of call on the peers of a damaged domain is refused. */
static void expect_refused(int a, int b)
{
	struct bus1_cmd_recv r;
	struct bus1_cmd_peer_reset q;
	uint64_t h;

	ASSERT_EQ(b1_recv(a, &r, 0), -ENOTRECOVERABLE);
	ASSERT_EQ(b1_recv(b, &r, 0), -ENOTRECOVERABLE);
	ASSERT_EQ(b1_send_one(a, 0x100, "x", 1), -ENOTRECOVERABLE);
	ASSERT_EQ(b1_query(a, &q), -ENOTRECOVERABLE);
	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), -ENOTRECOVERABLE);
	ASSERT_EQ(b1_release(b, 0xb), -ENOTRECOVERABLE);
	ASSERT_EQ(b1_reset(b, BUS1_PEER_RESET_FLAG_FLUSH), -ENOTRECOVERABLE);
	ASSERT_ERRNO(open(b1_device(), O_RDWR | O_CLOEXEC), ENOTRECOVERABLE);
	/* waiters see hang-up, and so meet the errno */
	ASSERT_EQ(b1_revents(a, POLLIN) & POLLHUP, POLLHUP);
	ASSERT_EQ(b1_revents(b, POLLIN | POLLOUT) & POLLHUP, POLLHUP);
	errno = 0;
	ASSERT_TRUE(mmap(NULL, 4096, PROT_READ, MAP_SHARED, a, 0) == MAP_FAILED);
	ASSERT_EQ(errno, ENOTRECOVERABLE);
}

/* Another domain of the same process still works. */
static void expect_other_domain_works(void)
{
	ASSERT_OK(setenv("BUS1_DOMAIN", t_new_domain("other"), 1));
	b1_expect_new_pair_works();
	b1_check_domain();
	ASSERT_OK(setenv("BUS1_DOMAIN", t_domain(), 1));
}

/* The damaged domain's checker report is not empty and names the mark. */
static void expect_check_reports(int fd, const char *err)
{
	ASSERT_GT(ioctl(fd, B1_TEST_CHECK, 0), 0);
	ASSERT_GE(lines_with(err, "bus1: check: the domain is marked damaged"), 1);
}

/* Damage of `kind` on b, met by `meet`; then everything about it. */
static void damage_and_meet(uint64_t kind, int (*meet)(int a, int b), const char *found)
{
	const char *err = capture_stderr("damage");
	int a = b1_open(), b = b1_open();
	uint64_t id = b1_handle_to(a, 0x100, b);

	ASSERT_EQ(b1_send_one(b, id, "queued", 6), 0);
	ASSERT_EQ(b1_damage(b, kind), 0);
	ASSERT_EQ(meet(a, b), -EIO);
	expect_refused(a, b);
	/* exactly one line, saying what was found */
	ASSERT_EQ(lines_with(err, "is damaged"), 1);
	ASSERT_EQ(lines_with(err, found), 1);
	/* the watcher keeps running without a word more */
	mp_sleep_ms(600);
	ASSERT_EQ(lines_with(err, "damaged"), 1);
	expect_check_reports(a, err);
	expect_other_domain_works();
	/* closing the peers of a damaged domain works too */
	ASSERT_OK(close(a));
	ASSERT_OK(close(b));
}

static int meet_by_recv(int a, int b)
{
	struct bus1_cmd_recv r;

	(void)a;
	return b1_recv(b, &r, 0);
}

static int meet_by_flush(int a, int b)
{
	(void)a;
	return b1_reset(b, BUS1_PEER_RESET_FLAG_FLUSH);
}

static int meet_by_transfer(int a, int b)
{
	uint64_t h;

	return b1_transfer(a, 0x200, b, &h);
}

TEST(bad_offset_is_eio_then_enotrecoverable)
{
	damage_and_meet(B1_DAMAGE_OFFSET, meet_by_recv, "bad shared offset");
}

TEST(endless_list_is_eio_then_enotrecoverable)
{
	damage_and_meet(B1_DAMAGE_CYCLE, meet_by_flush, "longer than the segment can hold");
}

TEST(duplicate_key_is_eio_then_enotrecoverable)
{
	damage_and_meet(B1_DAMAGE_KEY, meet_by_transfer, "duplicate table key");
}

/* argv: the two inherited peer fds; damages the domain through the second and meets it */
T_CHILD(damage_then_exit)
{
	int a = (int)mp_arg(argv[0]), b = (int)mp_arg(argv[1]);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_damage(b, B1_DAMAGE_OFFSET), 0);
	ASSERT_EQ(b1_recv(b, &r, 0), -EIO);
	ASSERT_EQ(b1_recv(a, &r, 0), -ENOTRECOVERABLE);
	return 0;
}

/* Another process found the damage: this one is refused and told by whom. */
TEST(damage_found_elsewhere_is_enotrecoverable_here)
{
	int a = mp_open_inherit(), b = mp_open_inherit();
	uint64_t id = b1_handle_to(a, 0x100, b);
	struct bus1_cmd_recv r;
	const char *err;
	pid_t child;

	ASSERT_EQ(b1_send_one(b, id, "queued", 6), 0);
	child = mp_spawn("damage_then_exit", mp_str(a), mp_str(b), (char *)NULL);
	mp_reap(child);
	err = capture_stderr("elsewhere");
	ASSERT_EQ(b1_recv(b, &r, 0), -ENOTRECOVERABLE);
	expect_refused(a, b);
	ASSERT_EQ(lines_with(err, "was found damaged by process"), 1);
	ASSERT_EQ(lines_with(err, mp_str(child)), 1);
}

/* argv: what to do: "damage" (and leave), "open" (expect a working, fresh bus) or "refused" */
T_CHILD(domain_user)
{
	int a, b;
	uint64_t id;
	struct bus1_cmd_recv r;

	if (!strcmp(argv[0], "refused")) {
		ASSERT_ERRNO(open(b1_device(), O_RDWR | O_CLOEXEC), ENOTRECOVERABLE);
		return 0;
	}
	a = b1_open();
	b = b1_open();
	id = b1_handle_to(a, 0x100, b);
	if (!strcmp(argv[0], "damage")) {
		ASSERT_EQ(b1_send_one(b, id, "queued", 6), 0);
		ASSERT_EQ(b1_damage(b, B1_DAMAGE_OFFSET), 0);
		ASSERT_EQ(b1_recv(b, &r, 0), -EIO);
		return 0;	/* exits with its peers open: they go with the process */
	}
	/* a fresh bus: the first remote ID again, nothing queued */
	ASSERT_EQ_U64(id, 0xb);
	b1_expect_empty(a);
	ASSERT_EQ(b1_send_one(b, id, "again", 5), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 5);
	b1_check_fd(a);
	return 0;
}

/*
 * A damaged domain stays refused while anyone uses it, and starts afresh
 * with the next process that opens it once nobody does. (This process
 * never opens the domain itself: it would be one of its users.)
 */
TEST(damaged_domain_starts_afresh_once_unused)
{
	int p[2];
	char c;
	pid_t holder;

	/* damaged by a process that then exits: nobody uses it any more */
	mp_reap(mp_spawn("domain_user", "damage", (char *)NULL));
	mp_reap(mp_spawn("domain_user", "open", (char *)NULL));
	/* damaged while another process holds a peer of it */
	ASSERT_OK(pipe(p));
	holder = mp_fork();
	if (holder == 0) {
		if (open(b1_device(), O_RDWR) < 0 || write(p[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	ASSERT_EQ(read(p[0], &c, 1), 1);
	mp_reap(mp_spawn("domain_user", "damage", (char *)NULL));
	mp_reap(mp_spawn("domain_user", "refused", (char *)NULL));
	ASSERT_OK(kill(holder, SIGKILL));
	ASSERT_TRUE(WIFSIGNALED(mp_wait(holder)));
	mp_reap(mp_spawn("domain_user", "open", (char *)NULL));
}

/* Without BUS1_TEST_HOOKS the test-only commands are unknown commands. */
T_CHILD(hooks_off)
{
	int a = b1_open();
	uint64_t kind = B1_DAMAGE_OFFSET;

	ASSERT_ERRNO(ioctl(a, B1_TEST_CHECK, 0), ENOTTY);
	ASSERT_ERRNO(ioctl(a, B1_TEST_DAMAGE, &kind), ENOTTY);
	b1_expect_empty(a);
	return 0;
}

TEST(test_commands_need_the_hooks)
{
	ASSERT_OK(setenv("BUS1_TEST_HOOKS", "0", 1));
	mp_reap(mp_spawn("hooks_off", (char *)NULL));
}
