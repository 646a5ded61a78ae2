/* SPDX-License-Identifier: MIT */
/*
 * The memory the shim maps for itself is not the caller's: an ioctl
 * argument inside the domain segment or inside the shim's own read-write
 * mapping of a pool is EFAULT, for writing (it would corrupt the bus) and
 * for reading (it would copy out the bus's state or another peer's
 * messages), and the call changes nothing. The application's own mapping
 * of its pool (mmap of its peer fd) is its memory: readable, not writable.
 *
 * The mappings are found in /proc/self/maps by size and permissions alone
 * (a shared read-write mapping of 8 GiB is the segment, one of 512 MiB a
 * pool), not by name. The watcher stays off, so the segment's header only
 * changes through the calls made here.
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "bus1-util.h"
#include "mp-util.h"

#define SM_SEGMENT_SIZE (8ULL << 30)
/* Offsets into the segment: the magic, the heap top (the reproducer's
 * offset), the undo log, the heap. */
static const uint64_t sm_offsets[] = { 0, 88, 1 << 20, (1 << 20) + (4ULL << 20) * 24 };

/* The start of the first mapping of `size` bytes with permissions `perms` (0 if none). */
static uint8_t *sm_mapping(uint64_t size, const char *perms)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "re");
	uint8_t *found = NULL;

	ASSERT_TRUE(f != NULL);
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned long long lo, hi;
		char p[8];

		if (sscanf(line, "%llx-%llx %7s", &lo, &hi, p) == 3 && hi - lo == size && !strcmp(p, perms))
			found = (uint8_t *)(uintptr_t)lo;
	}
	fclose(f);
	return found;
}

/* This process's read-write mapping of the segment (the watcher is off). */
static uint8_t *sm_segment(void)
{
	uint8_t *seg = sm_mapping(SM_SEGMENT_SIZE, "rw-s");

	ASSERT_TRUE(seg != NULL);
	return seg;
}

/* Two peers, a with a node b holds a handle to (returned in *h); returns the segment. */
static uint8_t *sm_bus(int *a, int *b, uint64_t *h)
{
	ASSERT_OK(setenv("BUS1_NO_WATCHER", "1", 1));
	*a = b1_open();
	*b = b1_open();
	*h = mp_node(*a, 0x100, *b);
	return sm_segment();
}

/* The bus still works: a message goes round, and a had nothing else queued. */
static void sm_bus_works(int a, int b, uint64_t h)
{
	const uint8_t *pool = b1_map(a);
	struct bus1_cmd_recv r;
	int c = b1_open();

	ASSERT_EQ(b1_send_one(b, h, "works", 5), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 5);
	ASSERT_EQ(memcmp(pool + r.msg.offset, "works", 5), 0);
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	ASSERT_OK(close(c));
	munmap((void *)pool, B1_POOL_SIZE);
}

/* Runs `call` with an argument at each offset of the segment; each must be EFAULT and leave the bytes there as they were. */
#define SM_EACH_OFFSET(seg, len, call)							\
	for (unsigned i_ = 0; i_ < sizeof(sm_offsets) / sizeof(sm_offsets[0]); i_++) {	\
		uint8_t *at = (seg) + sm_offsets[i_];					\
		uint8_t before_[128];							\
											\
		memcpy(before_, at, (len));						\
		ASSERT_EQ((call), -EFAULT);						\
		ASSERT_MEMEQ(before_, at, (len));					\
	}

/* §2.2: PEER_QUERY, both layouts, into the segment */
TEST(sm_query_into_segment)
{
	int a, b;
	uint64_t h;
	uint8_t *seg;

	seg = sm_bus(&a, &b, &h);
	SM_EACH_OFFSET(seg, sizeof(struct bus1_cmd_peer_reset), b1_ioctl(a, BUS1_CMD_PEER_QUERY, at));
	SM_EACH_OFFSET(seg, sizeof(struct bus1_cmd_peer_reset_u64), b1_ioctl(a, BUS1_CMD_PEER_QUERY_U64, at));
	sm_bus_works(a, b, h);
}

/* §2.5: HANDLE_TRANSFER's struct in the segment: no handle is made */
TEST(sm_transfer_into_segment)
{
	int a, b;
	uint64_t h;
	uint8_t *seg;

	seg = sm_bus(&a, &b, &h);
	SM_EACH_OFFSET(seg, sizeof(struct bus1_cmd_handle_transfer), b1_ioctl(a, BUS1_CMD_HANDLE_TRANSFER, at));
	sm_bus_works(a, b, h);
}

/* §2.8: SEND with CONTINUE whose error array lies in the segment: nothing is sent */
TEST(sm_send_errors_into_segment)
{
	int a, b, gone;
	uint64_t h, h2, d[2];
	uint8_t *seg;
	struct bus1_cmd_recv r;
	struct iovec v = { "x", 1 };

	seg = sm_bus(&a, &b, &h);
	gone = b1_open();
	h2 = mp_node(gone, 0x100, b);
	ASSERT_OK(close(gone));
	d[0] = h;
	d[1] = h2;
	SM_EACH_OFFSET(seg, 16, b1_send(b, BUS1_SEND_FLAG_CONTINUE, d, 2, (uint64_t *)at, &v, 1, NULL, 0, NULL, 0));
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	sm_bus_works(a, b, h);
}

/* §2.9: RECV's struct in the segment: the message stays queued */
TEST(sm_recv_into_segment)
{
	int a, b;
	uint64_t h;
	uint8_t *seg;
	struct bus1_cmd_recv r;

	seg = sm_bus(&a, &b, &h);
	ASSERT_EQ(b1_send_one(b, h, "kept", 4), 0);
	SM_EACH_OFFSET(seg, sizeof(struct bus1_cmd_recv), b1_ioctl(a, BUS1_CMD_RECV, at));
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 4);
	ASSERT_EQ(b1_slice_release(a, r.msg.offset), 0);
	sm_bus_works(a, b, h);
}

/* Arguments only read are refused too: reset, release, destroy, slice release, send's struct, vectors, IDs, fds and payload */
TEST(sm_reads_from_segment)
{
	int a, b;
	uint64_t h;
	uint8_t *seg;
	struct bus1_cmd_recv r;

	seg = sm_bus(&a, &b, &h);
	SM_EACH_OFFSET(seg, 32, b1_ioctl(a, BUS1_CMD_PEER_RESET, at));
	SM_EACH_OFFSET(seg, 8, b1_ioctl(b, BUS1_CMD_HANDLE_RELEASE, at));
	SM_EACH_OFFSET(seg, 8, b1_ioctl(a, BUS1_CMD_SLICE_RELEASE, at));
	SM_EACH_OFFSET(seg, 8, b1_destroy(a, (const uint64_t *)at, 1, 0));
	SM_EACH_OFFSET(seg, sizeof(struct bus1_cmd_send), b1_ioctl(b, BUS1_CMD_SEND, at));
	SM_EACH_OFFSET(seg, 8, b1_send(b, 0, (const uint64_t *)at, 1, NULL, NULL, 0, NULL, 0, NULL, 0));
	SM_EACH_OFFSET(seg, 16, b1_send(b, 0, &h, 1, NULL, (const struct iovec *)at, 1, NULL, 0, NULL, 0));
	SM_EACH_OFFSET(seg, 8, b1_send(b, 0, &h, 1, NULL, NULL, 0, (const uint64_t *)at, 1, NULL, 0));
	SM_EACH_OFFSET(seg, 4, b1_send(b, 0, &h, 1, NULL, NULL, 0, NULL, 0, (const int *)at, 1));
	/* a payload read from the segment would hand out the bus's state */
	SM_EACH_OFFSET(seg, 64, b1_send_one(b, h, at, 64));
	ASSERT_EQ(b1_recv(a, &r, 0), -EAGAIN);
	sm_bus_works(a, b, h);
}

/*
 * The shim's read-write mapping of a receiver's pool (made when this
 * process sent to it) is not the caller's either: reading a payload from
 * it would copy out another peer's messages, writing there would forge
 * them. The application's own read-only mapping of its pool is its memory.
 */
TEST(sm_shim_pool_mapping)
{
	int a, b, c;
	uint64_t h, hc;
	uint8_t *shim_pool;
	const uint8_t *own;
	struct bus1_cmd_recv r;

	(void)sm_bus(&a, &b, &h);
	c = b1_open();
	hc = mp_node(c, 0x100, b);
	ASSERT_EQ(b1_send_one(b, h, "for a only", 10), 0);
	shim_pool = sm_mapping(B1_SHIM_POOL_MAP, "rw-s");
	ASSERT_TRUE(shim_pool != NULL);
	/* the message for a, read out of the shim's mapping, does not go to c */
	ASSERT_EQ(b1_send_one(b, hc, shim_pool, 10), -EFAULT);
	ASSERT_EQ(b1_recv(c, &r, 0), -EAGAIN);
	/* nor is anything written into it */
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_RECV, shim_pool), -EFAULT);
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_PEER_QUERY, shim_pool + 4096), -EFAULT);
	/* a's own mapping: a can forward what it received */
	own = b1_map(a);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(memcmp(own + r.msg.offset, "for a only", 10), 0);
	ASSERT_EQ(b1_transfer(c, 0x100, a, &hc), 0);
	ASSERT_EQ(b1_send_one(a, hc, own + r.msg.offset, 10), 0);
	/* (its second MiB is zeros, so the query itself is fine) */
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_PEER_QUERY, (void *)(own + (1 << 20))), -EFAULT);
	ASSERT_EQ(b1_recv(c, &r, 0), 0);
	ASSERT_EQ(r.msg.n_bytes, 10);
}

/* The shim's mappings cannot be unmapped or mapped over by the application */
TEST(sm_mappings_stay)
{
	int a, b;
	uint64_t h;
	uint8_t *seg;

	seg = sm_bus(&a, &b, &h);
	ASSERT_ERRNO(munmap(seg, 4096), EINVAL);
	ASSERT_ERRNO(munmap(seg - 4096, 8192), EINVAL);
	ASSERT_TRUE(mmap(seg, 4096, PROT_READ, MAP_SHARED | MAP_FIXED, a, 0) == MAP_FAILED);
	ASSERT_EQ(errno, EINVAL);
	ASSERT_TRUE(mmap(seg + 4096, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED);
	ASSERT_EQ(errno, EINVAL);
	sm_bus_works(a, b, h);
}
