/* SPDX-License-Identifier: MIT */
/*
 * A tour of bus1, run under the shim by `make demo`.
 *
 * Two peers, in two processes: Alice creates a node and hands Bob a handle
 * to it; Bob creates a node of his own and hands Alice a handle. Alice
 * multicasts one message (payload plus a handle to a third node) to her
 * own node and to Bob's; both receive it. Alice then destroys the third
 * node and Bob, blocked in poll(), receives the NODE_DESTROY.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/bus1.h>

#define POOL_SIZE (1ULL << 29)

static void check(int r, const char *what)
{
	if (r < 0) {
		fprintf(stderr, "demo: %s: %s\n", what, strerror(errno));
		exit(1);
	}
}

static const char *type_name(uint64_t t)
{
	switch (t) {
	case BUS1_MSG_DATA: return "DATA";
	case BUS1_MSG_NODE_DESTROY: return "NODE_DESTROY";
	case BUS1_MSG_NODE_RELEASE: return "NODE_RELEASE";
	default: return "?";
	}
}

/* Waits in poll() for the next message and prints it. */
static struct bus1_cmd_recv receive(const char *who, int fd, const uint8_t *pool)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	struct bus1_cmd_recv r;

	check(poll(&p, 1, 5000), "poll");
	if (!(p.revents & POLLIN)) {
		fprintf(stderr, "demo: %s: no message after 5 s\n", who);
		exit(1);
	}
	memset(&r, 0, sizeof(r));
	r.max_offset = POOL_SIZE;
	check(ioctl(fd, BUS1_CMD_RECV, &r), "RECV");
	printf("%-5s received %-12s destination=%#" PRIx64, who, type_name(r.msg.type), (uint64_t)r.msg.destination);
	if (r.msg.type == BUS1_MSG_DATA) {
		const uint64_t *ids = (const void *)(pool + r.msg.offset + ((r.msg.n_bytes + 7) & ~7ULL));

		printf(" from pid %u: \"%.*s\"", r.msg.pid, (int)r.msg.n_bytes, (const char *)pool + r.msg.offset);
		for (uint64_t i = 0; i < r.msg.n_handles; i++)
			printf(" handle[%" PRIu64 "]=%#" PRIx64, i, (uint64_t)ids[i]);
	}
	printf("\n");
	fflush(stdout);
	return r;
}

int main(void)
{
	int alice = open("/dev/bus1", O_RDWR | O_CLOEXEC);
	int bob = open("/dev/bus1", O_RDWR | O_CLOEXEC);
	struct bus1_cmd_handle_transfer t;
	uint64_t alice_node = 0x100, bob_node = 0x200, gift = 0x300;
	uint64_t bob_sees_alice, alice_sees_bob;
	int status;
	pid_t pid;

	check(alice, "open /dev/bus1 (is the shim preloaded?)");
	check(bob, "open /dev/bus1");

	/* Alice creates node 0x100 by naming it, and gives Bob a handle. */
	t = (struct bus1_cmd_handle_transfer){ .src_handle = alice_node, .dst_fd = bob, .dst_handle = BUS1_HANDLE_INVALID };
	check(ioctl(alice, BUS1_CMD_HANDLE_TRANSFER, &t), "HANDLE_TRANSFER");
	bob_sees_alice = t.dst_handle;
	printf("alice created node %#" PRIx64 "; bob holds it as handle %#" PRIx64 "\n", alice_node, bob_sees_alice);

	/* Bob creates node 0x200 and gives Alice a handle. */
	t = (struct bus1_cmd_handle_transfer){ .src_handle = bob_node, .dst_fd = alice, .dst_handle = BUS1_HANDLE_INVALID };
	check(ioctl(bob, BUS1_CMD_HANDLE_TRANSFER, &t), "HANDLE_TRANSFER");
	alice_sees_bob = t.dst_handle;
	printf("bob   created node %#" PRIx64 "; alice holds it as handle %#" PRIx64 "\n", bob_node, alice_sees_bob);
	fflush(stdout);

	pid = fork();
	check(pid, "fork");
	if (pid == 0) {
		/* Bob's process: receive the multicast, then the destruction. */
		const uint8_t *pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, bob, 0);

		close(alice);
		if (pool == MAP_FAILED)
			check(-1, "mmap");
		struct bus1_cmd_recv r = receive("bob", bob, pool);
		check(ioctl(bob, BUS1_CMD_SLICE_RELEASE, &r.msg.offset), "SLICE_RELEASE");
		receive("bob", bob, pool);
		_exit(0);
	}

	/* Alice's process. */
	const uint8_t *pool = mmap(NULL, POOL_SIZE, PROT_READ, MAP_SHARED, alice, 0);
	uint64_t dests[2] = { alice_node, alice_sees_bob };
	const char text[] = "hello from alice";
	struct iovec v = { .iov_base = (void *)text, .iov_len = sizeof(text) - 1 };
	struct bus1_cmd_send s = {
		.ptr_destinations = (uintptr_t)dests, .n_destinations = 2,
		.ptr_vecs = (uintptr_t)&v, .n_vecs = 1,
		.ptr_handles = (uintptr_t)&gift, .n_handles = 1,
	};

	close(bob);
	if (pool == MAP_FAILED)
		check(-1, "mmap");
	check(ioctl(alice, BUS1_CMD_SEND, &s), "SEND");
	printf("alice multicast \"%s\" with a handle to new node %#" PRIx64 " to nodes %#" PRIx64 " and %#" PRIx64 "\n",
	       text, gift, dests[0], dests[1]);
	fflush(stdout);
	struct bus1_cmd_recv r = receive("alice", alice, pool);
	check(ioctl(alice, BUS1_CMD_SLICE_RELEASE, &r.msg.offset), "SLICE_RELEASE");

	/* Give Bob time to take his copy, then destroy the node we gave away. */
	usleep(200 * 1000);
	struct bus1_cmd_nodes_destroy d = { .ptr_nodes = (uintptr_t)&gift, .n_nodes = 1 };
	check(ioctl(alice, BUS1_CMD_NODES_DESTROY, &d), "NODES_DESTROY");
	printf("alice destroyed node %#" PRIx64 "\n", gift);
	fflush(stdout);
	receive("alice", alice, pool);

	check(waitpid(pid, &status, 0), "waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "demo: bob's process failed\n");
		return 1;
	}
	printf("demo finished: both peers saw the multicast and the destruction\n");
	return 0;
}
