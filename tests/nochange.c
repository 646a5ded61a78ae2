// SPDX-License-Identifier: MIT
/*
 * A failed call changes nothing: no ID, fd, handle reference or slice
 * moves. These cases replay the sequences that once broke that rule:
 * a RECV that fails after it gave the message's handles their IDs (the
 * ID must stay with the handle, and leave no trace in the ID table once
 * the handle is gone), a RECV that fails after it took the message's fds
 * out of the fd vault (the fds must stay with the message), and results
 * that could not be written back after the call had taken effect.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>

#include "harness.h"
#include "bus1-util.h"
#include "mp-util.h"

/* The first kernel-assigned ID a peer learns about (§3.3): remote, counter 1. */
#define FIRST_ID 0xbULL

/* A valid RECV struct on a read-only page: only the write-back can fail. */
static struct bus1_cmd_recv *ro_recv(uint64_t flags)
{
	struct bus1_cmd_recv r = { .flags = flags, .max_offset = B1_POOL_SIZE };
	struct bus1_cmd_recv *ro = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_TRUE(ro != MAP_FAILED);
	*ro = r;
	ASSERT_OK(mprotect(ro, 4096, PROT_READ));
	return ro;
}

/*
 * b sends `a` a message carrying b's node 0x200; a's RECV of it fails at
 * the write-back, after the handle got a's first kernel ID.
 */
static void failed_recv_of_handle(int a, int b, uint64_t flags)
{
	uint64_t dest = b1_handle_to(a, 0x100, b), node = 0x200;
	struct iovec v = { "x", 1 };
	struct bus1_cmd_recv *ro = ro_recv(flags);

	ASSERT_EQ(b1_send(b, 0, &dest, 1, NULL, &v, 1, &node, 1, NULL, 0), 0);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, ro), -EFAULT);
	munmap(ro, 4096);
	/* a was never told the ID: it is not in its table */
	ASSERT_EQ(b1_release(a, FIRST_ID), -ENXIO);
}

/* The reproducer's sequence: the flush frees the handle; its ID must not stay behind. */
TEST(recv_failed_then_flush_leaves_no_id)
{
	for (int round = 0; round < 50; round++) {
		int a = b1_open(), b = b1_open();

		failed_recv_of_handle(a, b, 0);
		ASSERT_EQ(b1_reset(a, BUS1_PEER_RESET_FLAG_FLUSH), 0);
		ASSERT_EQ(b1_release(a, FIRST_ID), -ENXIO);
		/* the counter moved on: the next exposure gets the next ID */
		ASSERT_EQ_U64(b1_handle_to(b, 0x300, a), 0x13);
		ASSERT_EQ(b1_release(a, 0x13), 0);
		ASSERT_EQ(b1_release(a, 0x13), -ENXIO);
		b1_check_domain();
		ASSERT_OK(close(a));
		ASSERT_OK(close(b));
	}
	b1_check_domain();
}

/*
 * The peer goes away (disconnect or close) with the handle: a new peer,
 * whose record may take the old one's place, starts with an empty table.
 */
static void failed_recv_then_teardown(int disconnect)
{
	for (int round = 0; round < 50; round++) {
		int a = b1_open(), b = b1_open(), c;

		failed_recv_of_handle(a, b, 0);
		if (disconnect) {
			ASSERT_EQ(b1_disconnect(a), 0);
			ASSERT_EQ(b1_release(a, FIRST_ID), -ESHUTDOWN);
		}
		ASSERT_OK(close(a));
		c = b1_open();
		ASSERT_EQ(b1_release(c, FIRST_ID), -ENXIO);
		/* c's own first ID is the same number, and works as usual */
		ASSERT_EQ_U64(b1_handle_to(b, 0x400, c), FIRST_ID);
		ASSERT_EQ(b1_release(c, FIRST_ID), 0);
		ASSERT_EQ(b1_release(c, FIRST_ID), -ENXIO);
		b1_check_domain();
		ASSERT_OK(close(b));
		ASSERT_OK(close(c));
	}
	b1_check_domain();
}

TEST(recv_failed_then_disconnect_leaves_no_id)
{
	failed_recv_then_teardown(1);
}

TEST(recv_failed_then_close_leaves_no_id)
{
	failed_recv_then_teardown(0);
}

/* §2.9 step 6.2: the ID stays with the handle, so a retry reports the same ID. */
TEST(recv_retry_reports_the_same_id)
{
	static const uint64_t modes[] = { 0, BUS1_RECV_FLAG_PEEK };

	for (int i = 0; i < 2; i++) {
		int a = b1_open(), b = b1_open();
		const uint8_t *pool = b1_map(a);
		struct bus1_cmd_recv r;
		uint64_t id;

		failed_recv_of_handle(a, b, modes[i]);
		ASSERT_EQ(b1_recv(a, &r, modes[i]), 0);
		ASSERT_EQ(r.msg.n_handles, 1);
		memcpy(&id, pool + r.msg.offset + 8, 8);
		ASSERT_EQ_U64(id, FIRST_ID);
		/* now it is a's, with exactly the one reference the RECV gave */
		ASSERT_EQ(b1_release(a, FIRST_ID), 0);
		ASSERT_EQ(b1_release(a, FIRST_ID), -ENXIO);
		b1_check_domain();
		ASSERT_OK(close(a));
		ASSERT_OK(close(b));
	}
}

/* Sends `n` fds (both ends of a pipe, alternating) from `from` to `to`'s node `dest`. */
static void send_fds(int from, uint64_t dest, int n, const int pipefd[2])
{
	int fds[8];
	struct iovec v = { "f", 1 };

	for (int i = 0; i < n; i++)
		fds[i] = pipefd[i & 1];
	ASSERT_EQ(b1_send(from, 0, &dest, 1, NULL, &v, 1, NULL, 0, fds, n), 0);
}

/* RECVs with INSTALL_FDS (plus `flags`) and checks that all `n` fds arrived open. */
static void recv_open_fds(int fd, const uint8_t *pool, uint64_t flags, int n)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, BUS1_RECV_FLAG_INSTALL_FDS | flags), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ(r.msg.n_fds, n);
	for (int i = 0; i < n; i++) {
		int f;

		memcpy(&f, pool + r.msg.offset + MP_A8(r.msg.n_bytes) + 8 * r.msg.n_handles + 4 * i, 4);
		ASSERT_GE(f, 0);
		ASSERT_EQ(fcntl(f, F_GETFD), FD_CLOEXEC);
		ASSERT_OK(close(f));
	}
	if (!(flags & BUS1_RECV_FLAG_PEEK))
		ASSERT_EQ(b1_slice_release(fd, r.msg.offset), 0);
}

/* The reproducer's sequence: a RECV that fails at the write-back keeps the fds with the message. */
TEST(recv_failed_keeps_the_fds)
{
	int a = b1_open(), b = b1_open(), p[2], low;
	uint64_t dest = b1_handle_to(b, 0x100, a);
	const uint8_t *pool = b1_map(b);
	struct bus1_cmd_recv *ro = ro_recv(BUS1_RECV_FLAG_INSTALL_FDS);

	ASSERT_OK(pipe(p));
	send_fds(a, dest, 2, p);
	low = b1_lowest_free_fd();
	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_RECV, ro), -EFAULT);
	ASSERT_EQ(b1_lowest_free_fd(), low);	/* nothing stayed installed */
	recv_open_fds(b, pool, 0, 2);
	b1_expect_empty(b);
	b1_check_domain();
}

/* The same for PEEK: the failed PEEK installs nothing, the next one installs them all. */
TEST(peek_failed_keeps_the_fds)
{
	int a = b1_open(), b = b1_open(), p[2], low;
	uint64_t dest = b1_handle_to(b, 0x100, a);
	const uint8_t *pool = b1_map(b);
	struct bus1_cmd_recv *ro = ro_recv(BUS1_RECV_FLAG_INSTALL_FDS | BUS1_RECV_FLAG_PEEK);

	ASSERT_OK(pipe(p));
	send_fds(a, dest, 3, p);
	low = b1_lowest_free_fd();
	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_RECV, ro), -EFAULT);
	ASSERT_EQ(b1_lowest_free_fd(), low);
	recv_open_fds(b, pool, BUS1_RECV_FLAG_PEEK, 3);
	recv_open_fds(b, pool, 0, 3);
	b1_expect_empty(b);
	b1_check_domain();
}

/*
 * The fd message sits behind a readiness token of an earlier message, so
 * the failing RECV has already taken that token out of the peer socket
 * when it fails: the socket must still match the queue afterwards.
 */
TEST(recv_failed_keeps_the_fds_behind_a_token)
{
	int a = b1_open(), b = b1_open(), p[2];
	uint64_t dest = b1_handle_to(b, 0x100, a);
	const uint8_t *pool = b1_map(b);
	struct bus1_cmd_recv r, *ro = ro_recv(BUS1_RECV_FLAG_INSTALL_FDS);

	ASSERT_OK(pipe(p));
	ASSERT_EQ(b1_send_one(a, dest, "plain", 5), 0);	/* a plain token */
	send_fds(a, dest, 2, p);			/* the vault behind it */
	ASSERT_EQ(b1_recv(b, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 5);
	ASSERT_EQ(b1_ioctl(b, BUS1_CMD_RECV, ro), -EFAULT);
	ASSERT_EQ(b1_revents(b, POLLIN) & POLLIN, POLLIN);
	recv_open_fds(b, pool, 0, 2);
	b1_expect_empty(b);
	ASSERT_EQ(b1_revents(b, POLLIN) & POLLIN, 0);
	b1_check_domain();
}

/*
 * One page of memory seen through two mappings: `rw` stays writable, while
 * another thread keeps switching `flipped` between writable and read-only.
 * Arguments are filled in and results read through `rw`; the ioctl gets
 * `flipped`.
 */
struct flipper {
	uint8_t *rw, *flipped;
	volatile int stop;
	pthread_t thread;
};

static void *flip(void *arg)
{
	struct flipper *f = arg;

	while (!f->stop) {
		mprotect(f->flipped, 4096, PROT_READ);
		mprotect(f->flipped, 4096, PROT_READ | PROT_WRITE);
	}
	return NULL;
}

static void flipper_start(struct flipper *f)
{
	int mfd = memfd_create("flipper", MFD_CLOEXEC);

	ASSERT_GE(mfd, 0);
	ASSERT_OK(ftruncate(mfd, 4096));
	f->rw = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	f->flipped = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	ASSERT_TRUE(f->rw != MAP_FAILED && f->flipped != MAP_FAILED);
	ASSERT_OK(close(mfd));
	f->stop = 0;
	ASSERT_EQ(pthread_create(&f->thread, NULL, flip, f), 0);
}

static void flipper_stop(struct flipper *f)
{
	f->stop = 1;
	ASSERT_EQ(pthread_join(f->thread, NULL), 0);
}

/*
 * The result struct of RECV becomes read-only at any moment: each RECV
 * either delivers its message and reports it, or fails with EFAULT and
 * leaves it queued. No message is lost between the two.
 */
TEST_TIMEOUT(recv_writeback_race_loses_nothing, 60)
{
	enum { N = 20000, BATCH = 500 };
	int a = b1_open();
	const uint8_t *pool = b1_map(a);
	struct flipper f;
	struct bus1_cmd_recv *r;
	unsigned next = 0, sent = 0, faults = 0;

	flipper_start(&f);
	r = (struct bus1_cmd_recv *)f.rw;
	while (next < N) {
		unsigned seq;

		if (next == sent)
			for (unsigned i = 0; i < BATCH; i++, sent++)
				ASSERT_EQ(b1_send_one(a, 0x100, &sent, sizeof(sent)), 0);

		*r = (struct bus1_cmd_recv){ .max_offset = B1_POOL_SIZE };
		if (ioctl(a, BUS1_CMD_RECV, f.flipped) < 0) {
			ASSERT_EQ(errno, EFAULT);
			faults++;
			continue;
		}
		ASSERT_EQ(r->msg.n_bytes, sizeof(seq));
		memcpy(&seq, pool + r->msg.offset, sizeof(seq));
		ASSERT_EQ(seq, next);
		ASSERT_EQ(b1_slice_release(a, r->msg.offset), 0);
		next++;
	}
	flipper_stop(&f);
	b1_expect_empty(a);
	printf("    note: %u RECVs failed with EFAULT, no message was lost\n", faults);
	b1_check_domain();
}

/*
 * The same for HANDLE_TRANSFER: each transfer either takes effect and
 * reports the ID, or fails with EFAULT and gives no reference.
 */
TEST_TIMEOUT(transfer_writeback_race_gives_no_extra_reference, 60)
{
	enum { N = 20000 };
	int a = b1_open(), b = b1_open();
	struct flipper f;
	struct bus1_cmd_handle_transfer *t;
	unsigned done = 0, faults = 0;

	flipper_start(&f);
	t = (struct bus1_cmd_handle_transfer *)f.rw;
	for (unsigned i = 0; i < N; i++) {
		*t = (struct bus1_cmd_handle_transfer){ 0, 0x100, (uint64_t)b, BUS1_HANDLE_INVALID };
		if (ioctl(a, BUS1_CMD_HANDLE_TRANSFER, f.flipped) < 0) {
			ASSERT_EQ(errno, EFAULT);
			faults++;
			continue;
		}
		ASSERT_EQ_U64(t->dst_handle, FIRST_ID);
		done++;
	}
	flipper_stop(&f);
	/* b holds exactly one reference per transfer that succeeded */
	for (unsigned i = 0; i < done; i++)
		ASSERT_EQ(b1_release(b, FIRST_ID), 0);
	ASSERT_EQ(b1_release(b, FIRST_ID), -ENXIO);
	printf("    note: %u of %u transfers failed with EFAULT\n", faults, N);
	b1_check_domain();
}

/*
 * A SEND that fails after it copied payload into the receiver's pool (a
 * bad iovec behind a good one) leaves no pool memory behind: the pages
 * its copy touched go back with the domain's periodic sweep, as pages of
 * released slices do.
 */
TEST(send_failed_after_copy_leaves_no_pool_pages)
{
	enum { LEN = 4 << 20 };
	int a = b1_open(), b = b1_open();
	uint64_t dest = b1_handle_to(b, 0x100, a);
	const uint8_t *pool = b1_map(b);
	uint8_t *buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct iovec v[2] = { { buf, LEN }, { b1_bad_ptr(), 1 } };
	double t0 = mp_now_ms();

	ASSERT_TRUE(buf != MAP_FAILED);
	memset(buf, 0xa5, LEN);
	ASSERT_EQ(b1_send(a, 0, &dest, 1, NULL, v, 2, NULL, 0, NULL, 0), -EFAULT);
	b1_expect_empty(b);
	while (b1_resident_kib(pool, LEN) > 0 && mp_now_ms() - t0 < 3000)
		mp_sleep_ms(50);
	ASSERT_EQ(b1_resident_kib(pool, LEN), 0);
	b1_check_domain();
}
