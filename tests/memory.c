/* SPDX-License-Identifier: MIT */
/*
 * Where a domain's memory lives and when it goes. A domain directory on a
 * disk holds only a `memory` link; segment, pools and sockets live in
 * memory (/dev/shm), so no bus data is written to the disk. The memory of
 * a domain goes with the last process that leaves it normally, and memory
 * left by killed processes is removed by the next process that attaches a
 * domain; links of domains that are gone are removed. A full memory file
 * system makes the calls that need more memory fail with ENOMEM (never
 * EFAULT), and such a call changes nothing.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include "bus1-util.h"
#include "mp-util.h"

#define MEM_TMPFS_MAGIC 0x01021994

static int mem_on_tmpfs(const char *path)
{
	struct statfs sf;

	ASSERT_OK(statfs(path, &sf));
	return sf.f_type == MEM_TMPFS_MAGIC;
}

/* A new directory on a disk file system (skips the case if there is none). */
static char *mem_disk_dir(void)
{
	static const char *bases[] = { "/var/tmp", "/tmp" };

	for (unsigned i = 0; i < 2; i++) {
		char *p;

		if (access(bases[i], W_OK) || mem_on_tmpfs(bases[i]))
			continue;
		ASSERT_TRUE(asprintf(&p, "%s/bus1-memory.XXXXXX", bases[i]) > 0);
		if (mkdtemp(p))
			return p;
	}
	t_skip("no disk file system to put a domain on");
}

static void mem_rm_rf(const char *path)
{
	char cmd[4200];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	ASSERT_EQ(system(cmd), 0);
}

/* The device of the mapping of `size` bytes with permissions `perms`. */
static dev_t mem_mapping_dev(uint64_t size, const char *perms)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "re");
	dev_t dev = 0;

	ASSERT_TRUE(f != NULL);
	while (!dev && fgets(line, sizeof(line), f)) {
		unsigned long long lo, hi, off;
		unsigned maj, min;
		char p[8];

		if (sscanf(line, "%llx-%llx %7s %llx %x:%x", &lo, &hi, p, &off, &maj, &min) == 6 && hi - lo == size &&
		    !strcmp(p, perms))
			dev = makedev(maj, min);
	}
	fclose(f);
	ASSERT_TRUE(dev != 0);
	return dev;
}

/* A domain on a disk: the directory holds only `memory`; segment and pools are mapped from /dev/shm */
TEST(mem_disk_domain_keeps_its_data_in_memory)
{
	char *disk = mem_disk_dir();
	char *dom, files[4096], *big = malloc(1 << 20);
	const uint8_t *pool;
	struct bus1_cmd_recv r;
	struct stat ds, shm, st;
	uint64_t h;
	int a, b;

	ASSERT_TRUE(asprintf(&dom, "%s/dom", disk) > 0);
	ASSERT_OK(setenv("BUS1_DOMAIN", dom, 1));
	a = b1_open();
	b = b1_open();
	pool = b1_map(a);
	h = mp_node(a, 0x100, b);
	memset(big, 'm', 1 << 20);
	for (int i = 0; i < 8; i++) {
		ASSERT_EQ(b1_send_one(b, h, big, 1 << 20), 0);
		ASSERT_EQ(b1_recv(a, &r, 0), 0);
		ASSERT_EQ(pool[r.msg.offset + 12345], 'm');
		ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
	}

	/* the directory on the disk: a link, nothing else */
	mp_dir_files(dom, files, sizeof(files), NULL);
	ASSERT_EQ(strcmp(files, "memory\n"), 0);
	ASSERT_OK(lstat(t_memory_dir_of(dom), &st));
	ASSERT_TRUE(S_ISDIR(st.st_mode));
	ASSERT_TRUE(mem_on_tmpfs(t_memory_dir_of(dom)));
	ASSERT_EQ(strncmp(t_memory_dir_of(dom), "/dev/shm/", 9), 0);

	/* the mappings are of files on /dev/shm, not on the disk */
	ASSERT_OK(stat(dom, &ds));
	ASSERT_OK(stat("/dev/shm", &shm));
	ASSERT_TRUE(mem_mapping_dev(8ULL << 30, "rw-s") == shm.st_dev);
	ASSERT_TRUE(mem_mapping_dev(B1_SHIM_POOL_MAP, "rw-s") == shm.st_dev);
	ASSERT_TRUE(mem_mapping_dev(B1_POOL_SIZE, "r--s") == shm.st_dev);
	ASSERT_TRUE(ds.st_dev != shm.st_dev);
	mem_rm_rf(disk);
}

/* Opens two peers in the domain argv[0], sends a message round and returns normally (or is killed if argv[1] says so). */
T_CHILD(mem_use_domain)
{
	struct bus1_cmd_recv r;
	int a, b;
	uint64_t h;

	ASSERT_EQ(argc, 2);
	ASSERT_OK(setenv("BUS1_DOMAIN", argv[0], 1));
	a = b1_open();
	b = b1_open();
	h = mp_node(a, 0x100, b);
	ASSERT_EQ(b1_send_one(b, h, "bye", 3), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	if (!strcmp(argv[1], "kill"))
		kill(getpid(), SIGKILL);
	return 0;
}

/* The memory of a domain goes with the last process that leaves it; memory left by a killed one goes with the next attach */
TEST(mem_memory_goes_with_its_domain)
{
	char *disk = mem_disk_dir();
	char *dom, *dom2, mem[4096];

	ASSERT_TRUE(asprintf(&dom, "%s/dom", disk) > 0);
	ASSERT_TRUE(asprintf(&dom2, "%s/dom2", disk) > 0);
	mp_reap(mp_spawn("mem_use_domain", dom, "exit", (char *)NULL));
	snprintf(mem, sizeof(mem), "%s", t_memory_dir_of(dom));
	ASSERT_EQ(strncmp(mem, "/dev/shm/", 9), 0);
	ASSERT_ERRNO(access(mem, F_OK), ENOENT);
	/* a tmpfs domain keeps its directory, not its files */
	mp_reap(mp_spawn("mem_use_domain", t_domain(), "exit", (char *)NULL));
	ASSERT_OK(access(t_domain(), F_OK));
	mp_expect_domain_files("", 0);

	/* killed: nobody left it, its memory stays ... */
	mp_reap_killed(mp_spawn("mem_use_domain", dom, "kill", (char *)NULL));
	ASSERT_OK(access(mem, F_OK));
	/* ... until its directory is gone and a process attaches a domain */
	mem_rm_rf(dom);
	mp_reap(mp_spawn("mem_use_domain", dom2, "exit", (char *)NULL));
	ASSERT_ERRNO(access(mem, F_OK), ENOENT);
	ASSERT_ERRNO(access(t_memory_dir_of(dom2), F_OK), ENOENT);
	mem_rm_rf(disk);
}

/* A forked child that leaves normally does not take its parent's claim on the domain with it */
TEST(mem_forked_child_leaves_parent_claim)
{
	char *disk = mem_disk_dir();
	char *dom;
	pid_t pid;
	int a;

	ASSERT_TRUE(asprintf(&dom, "%s/dom", disk) > 0);
	ASSERT_OK(setenv("BUS1_DOMAIN", dom, 1));
	ASSERT_OK(close(b1_open()));	/* attached, no peer open */
	pid = mp_fork();
	if (pid == 0)
		exit(0);	/* leaves the domain, at exit */
	mp_reap(pid);
	if (access(t_memory_dir_of(dom), F_OK)) {
		mem_rm_rf(disk);
		t_fail(__FILE__, __LINE__, "the child removed the memory its parent uses");
	}
	a = open(b1_device(), O_RDWR | O_CLOEXEC);
	mem_rm_rf(disk);
	ASSERT_TRUE(a >= 0);
}

/* A peer whose opener exits goes with its socket and pool within the watcher's bound, while others use the domain */
TEST(mem_peer_files_go_after_opener_exit)
{
	int a = b1_open();
	pid_t pid;

	(void)a;
	pid = mp_fork();
	if (pid == 0) {
		b1_open();
		_exit(0);	/* no exit handlers: the kernel closes the fd */
	}
	mp_reap(pid);
	mp_expect_domain_files("peer.1\npool.1\nsegment\n", 2000);
	pid = mp_fork();
	if (pid == 0) {
		b1_open();
		kill(getpid(), SIGKILL);
	}
	mp_reap_killed(pid);
	mp_expect_domain_files("peer.1\npool.1\nsegment\n", 2000);
}

/* The link naming a long domain goes with its memory; links of domains that are gone are removed */
TEST(mem_links_of_vanished_domains_removed)
{
	char links[64], base[4096], *dom, *stale;
	struct stat st;
	int n = 0;
	DIR *d;
	struct dirent *e;

	snprintf(links, sizeof(links), "/dev/shm/bus1-%u.links", (unsigned)geteuid());
	snprintf(base, sizeof(base), "%s", t_domain());
	*strrchr(base, '/') = 0;
	if (!mem_on_tmpfs(base) || access("/dev/shm", F_OK))
		t_skip("domains here are not on /dev/shm");
	ASSERT_TRUE(asprintf(&dom, "%s/%0120d", t_new_domain("long"), 0) > 0);
	mp_reap(mp_spawn("mem_use_domain", dom, "exit", (char *)NULL));
	/* a link of a directory that is gone */
	ASSERT_TRUE(mkdir(links, 0700) == 0 || errno == EEXIST);
	ASSERT_TRUE(asprintf(&stale, "%s/1-2", links) > 0);
	unlink(stale);
	ASSERT_OK(symlink("/nonexistent/bus1-domain", stale));
	/* the next long domain's link removes it; its own goes when it is left */
	mp_reap(mp_spawn("mem_use_domain", dom, "exit", (char *)NULL));
	ASSERT_ERRNO(lstat(stale, &st), ENOENT);
	d = opendir(links);
	while (d && (e = readdir(d))) {
		char target[4096];
		char path[4200];
		ssize_t len;

		snprintf(path, sizeof(path), "%s/%s", links, e->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len > 0) {
			target[len] = 0;
			n += !strcmp(target, dom);
		}
	}
	if (d)
		closedir(d);
	ASSERT_EQ(n, 0);
}

/* ------------------------------------------------- a full memory file system */

/* Fills the file system of `dir` with one file; returns its descriptor. */
static int mem_fill(const char *dir)
{
	char path[4200];
	int fd;
	off_t size = 0;

	snprintf(path, sizeof(path), "%s/filler", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_TRUE(fd >= 0);
	for (off_t step = 1 << 22; step >= 4096; step /= 2)
		while (fallocate(fd, 0, size, step) == 0)
			size += step;
	ASSERT_EQ(errno, ENOSPC);
	return fd;
}

/*
 * Mounts a tmpfs of `size` in a mount namespace of the case's own (it goes
 * with the case's processes) and points BUS1_DOMAIN into it, with the
 * watcher off; returns the mount point. Skips the case where that is not
 * allowed.
 */
static char *mem_small_domain(const char *size)
{
	char *dir, *dom, opts[64];

	if (geteuid() != 0 || unshare(CLONE_NEWNS) < 0)
		t_skip("cannot mount a file system here (needs root)");
	ASSERT_OK(mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL));
	dir = strdup(t_new_domain("small"));
	ASSERT_OK(mkdir(dir, 0700));
	snprintf(opts, sizeof(opts), "size=%s,mode=0700", size);
	if (mount("tmpfs", dir, "tmpfs", 0, opts) < 0)
		t_skip("cannot mount a tmpfs here: %s", strerror(errno));
	ASSERT_OK(setenv("BUS1_NO_WATCHER", "1", 1));
	ASSERT_TRUE(asprintf(&dom, "%s/dom", dir) > 0);
	ASSERT_OK(setenv("BUS1_DOMAIN", dom, 1));
	return dir;
}

/*
 * A domain on an 8 MiB tmpfs (mounted in a mount namespace of the case's
 * own). With the file system full, a SEND that needs new pool pages, and
 * calls that need the segment to grow, fail with ENOMEM and change
 * nothing; once there is room again everything works.
 */
TEST(mem_full_file_system_is_enomem)
{
	char *dir = mem_small_domain("8m");
	int a, b, filler, n;
	uint64_t h, ids[1], last = 0, step = 0, id;
	struct bus1_cmd_peer_reset q1, q2;
	struct bus1_cmd_recv r;
	char *big = calloc(1, 256 << 10);
	const uint8_t *pool;

	a = b1_open();
	b = b1_open();
	pool = b1_map(a);
	h = mp_node(a, 0x100, b);
	filler = mem_fill(dir);

	/* new pool pages cannot be had: ENOMEM, nothing queued, nothing charged */
	ASSERT_EQ(b1_query(a, &q1), 0);
	ASSERT_EQ(b1_send_one(b, h, big, 256 << 10), -ENOMEM);
	ids[0] = h;
	ASSERT_EQ(b1_send(b, 0, &h, 1, NULL, NULL, 0, ids, 1, NULL, 0), -ENOMEM);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_query(a, &q2), 0);
	ASSERT_MEMEQ(&q1, &q2, sizeof(q1));

	/* the segment cannot grow: new nodes and handles fail with ENOMEM at some point */
	for (n = 0; n < 200000; n++) {
		int ret = b1_transfer(a, 0x1000 + 4 * (uint64_t)n, b, &id);

		if (ret) {
			ASSERT_EQ(ret, -ENOMEM);
			break;
		}
		step = id - last;
		last = id;
	}
	ASSERT_LT(n, 200000);
	ASSERT_GT(n, 2);
	printf("    note: %d nodes made before the segment could not grow\n", n);

	/* with room again, everything works, and nothing of the failed calls shows: b's next handle ID follows its last */
	ASSERT_OK(ftruncate(filler, 0));
	ASSERT_EQ(b1_transfer(a, 0x1000 + 4 * (uint64_t)n, b, &id), 0);
	ASSERT_EQ_U64(id, last + step);
	ASSERT_EQ(b1_send_one(b, h, big, 256 << 10), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 256 << 10);
	ASSERT_EQ(pool[r.msg.offset + 1000], 0);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
}

/*
 * The same for a transaction whose undo log outgrows what was backed with
 * memory so far: a multicast to thousands of nodes on a full file system
 * fails with ENOMEM (no message anywhere), and succeeds once there is room.
 */
TEST(mem_full_file_system_big_transaction)
{
	enum { N = 4000 };
	static uint64_t dests[N];
	struct bus1_cmd_recv r;
	char *dir = mem_small_domain("16m");
	int a, b, filler, got = 0;

	a = b1_open();
	b = b1_open();
	for (int i = 0; i < N; i++)
		dests[i] = mp_node(a, 0x1000 + 4 * (uint64_t)i, b);
	filler = mem_fill(dir);
	ASSERT_EQ(b1_send(b, 0, dests, N, NULL, NULL, 0, NULL, 0, NULL, 0), -ENOMEM);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	ASSERT_OK(ftruncate(filler, 0));
	ASSERT_EQ(b1_send(b, 0, dests, N, NULL, NULL, 0, NULL, 0, NULL, 0), 0);
	while (b1_recv(a, &r, 0) == 0)
		got++;
	ASSERT_EQ(got, N);
}
