/* SPDX-License-Identifier: MIT */
/*
 * The C side of client/tests/domain.rs: a program written for the module's
 * ABI, run under the shim, with a peer fd on its standard input.
 *
 *   three_way HANDLE
 *
 * HANDLE (hex) is its handle on the Rust test's node. It waits for one
 * message that carries a handle, sends "from C" to that handle, and then
 * "C done" to HANDLE. Exit status 0 on success; anything else is reported
 * on stderr with the failing step.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <linux/bus1.h>

#define POOL_SIZE (1ULL << 29)

static int fail(const char *what)
{
	fprintf(stderr, "three_way: %s: %s\n", what, strerror(errno));
	return 1;
}

static int send_to(int fd, uint64_t dest, const char *text)
{
	struct iovec v = { .iov_base = (void *)text, .iov_len = strlen(text) };
	struct bus1_cmd_send s = {
		.ptr_destinations = (uintptr_t)&dest, .n_destinations = 1,
		.ptr_vecs = (uintptr_t)&v, .n_vecs = 1,
	};

	return ioctl(fd, BUS1_CMD_SEND, &s);
}

int main(int argc, char **argv)
{
	const int fd = 0;
	uint64_t home, carried;
	struct bus1_cmd_recv r;
	const uint8_t *pool;

	if (argc != 2)
		return 2;
	home = strtoull(argv[1], NULL, 16);
	pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	if (pool == MAP_FAILED)
		return fail("mmap of the pool");
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		if (poll(&p, 1, 20000) != 1)
			return fail("poll (no message within 20 s)");
		memset(&r, 0, sizeof(r));
		r.max_offset = POOL_SIZE;
		if (ioctl(fd, BUS1_CMD_RECV, &r) == 0)
			break;
		if (errno != EAGAIN)
			return fail("RECV");
	}
	if (r.msg.type != BUS1_MSG_DATA || r.msg.n_handles != 1) {
		fprintf(stderr, "three_way: got type %llu with %llu handles\n",
			(unsigned long long)r.msg.type, (unsigned long long)r.msg.n_handles);
		return 1;
	}
	memcpy(&carried, pool + r.msg.offset + ((r.msg.n_bytes + 7) & ~7ULL), sizeof(carried));
	if (ioctl(fd, BUS1_CMD_SLICE_RELEASE, &r.msg.offset) < 0)
		return fail("SLICE_RELEASE");
	if (send_to(fd, carried, "from C") < 0)
		return fail("SEND to the carried handle");
	if (send_to(fd, home, "C done") < 0)
		return fail("SEND home");
	return 0;
}
