/* SPDX-License-Identifier: MIT */
/*
 * Test runner: forks one child per registered case, gives it a fresh domain,
 * enforces its timeout and reports "ok"/"FAIL"/"skip" lines plus a summary
 * ("N passed, M failed, K skipped").
 *
 * Usage: <test-binary> [substring-filter...]
 * Environment: BUS1_TEST_TMP (base directory for domains; default /dev/shm
 * when it exists, else $TMPDIR or /tmp), BUS1_TEST_VERBOSE=1. Sets
 * BUS1_TEST_HOOKS=1 (the shim's test-only commands, see bus1-util.h).
 *
 * With the base directory on a disk (not a memory file system), a case also
 * fails if any of its domain directories holds bus data (a segment, pool,
 * peer socket or vault) after it ended: the bus keeps those in memory,
 * under /dev/shm, whatever file system holds the domain directory.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>

#define T_MAX_CASES 1024
/* Exit status of a case that called t_skip (the automake convention). */
#define T_SKIP_STATUS 77
#define T_REASON_MAX 512

struct t_case {
	const char *name;
	const char *file;
	t_fn fn;
	unsigned timeout_s;
};

struct t_child {
	const char *name;
	t_child_fn fn;
};

static struct t_case t_cases[T_MAX_CASES];
static struct t_child t_children[T_MAX_CASES];
static unsigned t_n_children;
static char t_exe[4096];
static unsigned t_n_cases;
static char t_base[4096];
static char t_cur_domain[4096];
static unsigned t_domain_seq;
/* Shared with the case's process: why it skipped itself. */
static char *t_skip_reason;

void t_register(const char *name, t_fn fn, const char *file, unsigned timeout_s)
{
	if (t_n_cases >= T_MAX_CASES) {
		fprintf(stderr, "too many test cases\n");
		abort();
	}
	t_cases[t_n_cases++] = (struct t_case){ name, file, fn, timeout_s };
}

void t_register_child(const char *name, t_child_fn fn)
{
	if (t_n_children >= T_MAX_CASES) {
		fprintf(stderr, "too many child entry points\n");
		abort();
	}
	t_children[t_n_children++] = (struct t_child){ name, fn };
}

const char *t_self_exe(void)
{
	if (!t_exe[0]) {
		ssize_t n = readlink("/proc/self/exe", t_exe, sizeof(t_exe) - 1);

		if (n < 0) {
			perror("readlink /proc/self/exe");
			abort();
		}
		t_exe[n] = 0;
	}
	return t_exe;
}

/* "--child NAME args...": runs a T_CHILD entry point instead of the cases. */
static int t_run_child(int argc, char **argv)
{
	for (unsigned i = 0; i < t_n_children; i++)
		if (strcmp(t_children[i].name, argv[2]) == 0)
			return t_children[i].fn(argc - 3, argv + 3);
	fprintf(stderr, "no child entry point %s\n", argv[2]);
	return 127;
}

void t_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "    %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	_exit(1);
}

void t_skip(const char *fmt, ...)
{
	va_list ap;

	if (t_skip_reason) {
		va_start(ap, fmt);
		vsnprintf(t_skip_reason, T_REASON_MAX, fmt, ap);
		va_end(ap);
	}
	fflush(stdout);
	fflush(stderr);
	_exit(T_SKIP_STATUS);
}

unsigned t_scale(void)
{
	static unsigned scale;

	if (!scale) {
		const char *v = getenv("BUS1_TEST_SCALE");
		long n = v ? strtol(v, NULL, 10) : 1;

		scale = n >= 1 && n <= 100000 ? (unsigned)n : 1;
	}
	return scale;
}

const char *t_domain(void)
{
	return t_cur_domain;
}

const char *t_memory_dir_of(const char *domain)
{
	static char mem[4096];
	char link[4096];
	ssize_t n;

	snprintf(link, sizeof(link), "%s/memory", domain);
	n = readlink(link, mem, sizeof(mem) - 1);
	if (n < 0)
		return domain;
	mem[n] = 0;
	return mem;
}

const char *t_memory_dir(void)
{
	return t_memory_dir_of(t_cur_domain);
}

const char *t_new_domain(const char *tag)
{
	static char path[4096];

	snprintf(path, sizeof(path), "%s.%s.%u", t_cur_domain, tag, ++t_domain_seq);
	return path;
}

static int t_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	remove(path);
	return 0;
}

static void t_rm_rf(const char *path)
{
	nftw(path, t_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Whether a name in a domain directory is bus data. */
static int t_is_bus_file(const char *name)
{
	return !strcmp(name, "segment") || !strncmp(name, "pool.", 5) ||
	       !strncmp(name, "peer.", 5) || !strncmp(name, "vault.", 6);
}

/* Whether `path` lies on a memory file system (tmpfs, ramfs). */
static int t_on_memory_fs(const char *path)
{
	struct statfs sf;

	return statfs(path, &sf) == 0 &&
	       (sf.f_type == 0x01021994 /* TMPFS_MAGIC */ || sf.f_type == (typeof(sf.f_type))0x858458f6 /* RAMFS_MAGIC */);
}

/*
 * Before a domain directory on a disk is removed: fails (returns 1, with a
 * line saying what) if it holds bus data, and removes the memory directory
 * its `memory` link names (the case's processes were killed, so nobody
 * left it normally).
 */
static int t_check_disk_domain(const char *path)
{
	const char *mem = t_memory_dir_of(path);
	int bad = 0;
	DIR *d;
	struct dirent *e;

	if (t_on_memory_fs(path))
		return 0;
	d = opendir(path);
	while (d && (e = readdir(d))) {
		if (t_is_bus_file(e->d_name)) {
			printf("    bus data on a disk file system: %s/%s\n", path, e->d_name);
			bad = 1;
		}
	}
	if (d)
		closedir(d);
	if (mem != path && strncmp(mem, path, strlen(path)) != 0) {
		char parent[4096];
		char *slash;

		snprintf(parent, sizeof(parent), "%s", mem);
		t_rm_rf(mem);
		slash = strrchr(parent, '/');
		if (slash) {
			*slash = 0;
			rmdir(parent);	/* if that was its last memory directory */
		}
	}
	return bad;
}

/*
 * Removes the case's domain and every extra domain it made (same prefix);
 * returns 1 if a domain directory on a disk held bus data.
 */
static int t_cleanup_domains(const char *domain)
{
	int bad = 0;

	char dir[4096], prefix[4096];
	const char *slash = strrchr(domain, '/');
	DIR *d;
	struct dirent *e;

	snprintf(dir, sizeof(dir), "%.*s", (int)(slash - domain), domain);
	snprintf(prefix, sizeof(prefix), "%s", slash + 1);
	d = opendir(dir);
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
			char p[8192];

			snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
			bad |= t_check_disk_domain(p);
			t_rm_rf(p);
		}
	}
	closedir(d);
	return bad;
}

static double t_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int t_matches(const struct t_case *c, int argc, char **argv)
{
	if (argc < 2)
		return 1;
	for (int i = 1; i < argc; i++)
		if (strstr(c->name, argv[i]))
			return 1;
	return 0;
}

static const char *t_group(const char *file)
{
	static char g[256];
	const char *b = strrchr(file, '/');
	const char *dot;

	b = b ? b + 1 : file;
	dot = strrchr(b, '.');
	snprintf(g, sizeof(g), "%.*s", dot ? (int)(dot - b) : (int)strlen(b), b);
	return g;
}

enum t_outcome { T_PASSED, T_FAILED, T_SKIPPED };

static enum t_outcome t_run_case(const struct t_case *c, unsigned idx)
{
	double start = t_now();
	pid_t pid;
	int status = 0;

	snprintf(t_cur_domain, sizeof(t_cur_domain), "%s/d%u", t_base, idx);
	t_domain_seq = 0;
	t_skip_reason[0] = 0;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(2);
	}
	if (pid == 0) {
		/* own process group, so a timeout kills forked helpers too */
		setpgid(0, 0);
		setenv("BUS1_DOMAIN", t_cur_domain, 1);
		alarm(c->timeout_s * t_scale());
		c->fn();
		fflush(stdout);
		_exit(0);
	}
	setpgid(pid, pid);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	/* reap stray helpers of this case */
	kill(-pid, SIGKILL);
	int disk_data = t_cleanup_domains(t_cur_domain);

	double dt = t_now() - start;
	const char *group = t_group(c->file);

	if (disk_data && WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == T_SKIP_STATUS)) {
		printf("FAIL   %s/%s: bus data left on a disk file system (%.2fs)\n", group, c->name, dt);
		return T_FAILED;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		printf("ok     %s/%s (%.2fs)\n", group, c->name, dt);
		return T_PASSED;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == T_SKIP_STATUS && t_skip_reason[0]) {
		printf("skip   %s/%s: %.*s (%.2fs)\n", group, c->name, T_REASON_MAX, t_skip_reason, dt);
		return T_SKIPPED;
	}
	if (WIFSIGNALED(status))
		printf("FAIL   %s/%s: killed by signal %d%s (%.2fs)\n", group, c->name,
		       WTERMSIG(status),
		       WTERMSIG(status) == SIGALRM ? " (timeout)" : "", dt);
	else
		printf("FAIL   %s/%s: exit status %d (%.2fs)\n", group, c->name,
		       WEXITSTATUS(status), dt);
	return T_FAILED;
}

int main(int argc, char **argv)
{
	const char *tmp = getenv("BUS1_TEST_TMP");
	unsigned counts[3] = { 0 };
	char tmpl[4096];
	struct stat st;

	/* the shim's test-only commands (bus1-util.h), in every case and child */
	setenv("BUS1_TEST_HOOKS", "1", 0);
	if (argc >= 3 && strcmp(argv[1], "--child") == 0)
		return t_run_child(argc, argv);
	t_self_exe();
	if (!tmp)
		tmp = stat("/dev/shm", &st) == 0 ? "/dev/shm" : getenv("TMPDIR");
	if (!tmp)
		tmp = "/tmp";
	snprintf(tmpl, sizeof(tmpl), "%s/bus1-test.XXXXXX", tmp);
	if (!mkdtemp(tmpl)) {
		perror("mkdtemp");
		return 2;
	}
	snprintf(t_base, sizeof(t_base), "%s", tmpl);
	setvbuf(stdout, NULL, _IOLBF, 0);
	t_skip_reason = mmap(NULL, T_REASON_MAX + 1, PROT_READ | PROT_WRITE,
			     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (t_skip_reason == MAP_FAILED) {
		perror("mmap");
		return 2;
	}

	for (unsigned i = 0; i < t_n_cases; i++) {
		if (!t_matches(&t_cases[i], argc, argv))
			continue;
		counts[t_run_case(&t_cases[i], i)]++;
	}
	t_rm_rf(t_base);
	printf("# %s: %u passed, %u failed, %u skipped\n",
	       t_n_cases ? t_group(t_cases[0].file) : "?",
	       counts[T_PASSED], counts[T_FAILED], counts[T_SKIPPED]);
	return counts[T_FAILED] ? 1 : 0;
}
