/* SPDX-License-Identifier: MIT */
/*
 * HANDLE_TRANSFER (§2.5): validation order, destination fd
 * decoding, on-demand node creation (3.4), coalescing (3.6), destroyed and
 * released nodes (3.10), quota (6.2) and the write-back.
 */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <sys/socket.h>

#include "bus1-util.h"



/* Raw transfer with every field chosen by the caller. */
static int xfer(int fd, uint64_t flags, uint64_t src, uint64_t dst_fd, uint64_t *dst)
{
	struct bus1_cmd_handle_transfer t = {
		.flags = flags, .src_handle = src, .dst_fd = dst_fd,
		.dst_handle = 0x5a5a5a5a5a5a5a5aULL,
	};
	int r = b1_ioctl(fd, BUS1_CMD_HANDLE_TRANSFER, &t);

	ASSERT_EQ_U64(t.flags, flags);
	ASSERT_EQ_U64(t.src_handle, src);
	ASSERT_EQ_U64(t.dst_fd, dst_fd);
	if (dst)
		*dst = t.dst_handle;
	return r;
}

static void expect_msg(int fd, uint64_t type, uint64_t dest)
{
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_recv(fd, &r, 0), 0);
	ASSERT_EQ(r.msg.type, type);
	ASSERT_EQ_U64(r.msg.destination, dest);
	if (type == BUS1_MSG_DATA)
		ASSERT_OK(b1_slice_release(fd, r.msg.offset));
}

/* §2.5 step 1: unreadable struct → EFAULT, nothing created */
TEST(transfer_efault)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;

	ASSERT_ERRNO(ioctl(a, BUS1_CMD_HANDLE_TRANSFER, b1_bad_ptr()), EFAULT);
	ASSERT_ERRNO(ioctl(a, BUS1_CMD_HANDLE_TRANSFER, NULL), EFAULT);
	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
}

/* §2.5 step 2: flags != 0 → EINVAL, before dst_fd and src_handle are looked at */
TEST(transfer_flags_einval)
{
	int a = b1_open(), b = b1_open();
	uint64_t h = 0;
	uint64_t bits[] = { 1, 2, 0x80, 1ULL << 63 };

	for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
		ASSERT_EQ(xfer(a, bits[i], 0x100, b, &h), -EINVAL);
		ASSERT_EQ_U64(h, 0x5a5a5a5a5a5a5a5aULL);
		ASSERT_EQ(xfer(a, bits[i], 0x1, 9999, &h), -EINVAL);
	}
	/* nothing was created: B's first handle still gets the first kernel ID */
	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
}

/* §2.5 step 3: dst_fd not an open fd → EBADF (before src_handle: ENXIO) */
TEST(transfer_dst_fd_ebadf)
{
	int a = b1_open();
	uint64_t h;

	ASSERT_EQ(xfer(a, 0, 0x100, 9999, &h), -EBADF);
	ASSERT_EQ(xfer(a, 0, 0x1, 9999, &h), -EBADF);
	/* low 32 bits 0xFFFFFFFF: the unsigned fd 4294967295, not "self" */
	ASSERT_EQ(xfer(a, 0, 0x100, 0xFFFFFFFFULL, &h), -EBADF);
	ASSERT_EQ(xfer(a, 0, 0x100, 0x7FFFFFFFULL, &h), -EBADF);
	ASSERT_EQ_U64(h, 0x5a5a5a5a5a5a5a5aULL);
	/* a closed peer fd */
	int b = b1_open();

	ASSERT_OK(close(b));
	ASSERT_EQ(xfer(a, 0, 0x100, b, &h), -EBADF);
}

/* §2.5 step 3: the upper 32 bits of dst_fd are ignored */
TEST(transfer_dst_fd_truncated)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;

	ASSERT_EQ(xfer(a, 0, 0x100, (1ULL << 32) | (uint64_t)b, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
	ASSERT_EQ(xfer(a, 0, 0x100, 0xFFFFFFFF00000000ULL | (uint64_t)b, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
	ASSERT_EQ(b1_release(b, 0xB), 0);
	ASSERT_EQ(b1_release(b, 0xB), 0);
	ASSERT_EQ(b1_release(b, 0xB), -ENXIO);
}

/* §2.5 step 3: open but not a bus1 peer → EOPNOTSUPP (pipe, file, unix socket) */
TEST(transfer_dst_fd_eopnotsupp)
{
	int a = b1_open(), b = b1_open();
	int p[2], sv[2], nul = open("/dev/null", O_RDWR);
	uint64_t h;

	ASSERT_OK(pipe(p));
	ASSERT_OK(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv));
	ASSERT_GE(nul, 0);
	ASSERT_EQ(xfer(a, 0, 0x100, p[0], &h), -EOPNOTSUPP);
	ASSERT_EQ(xfer(a, 0, 0x100, p[1], &h), -EOPNOTSUPP);
	ASSERT_EQ(xfer(a, 0, 0x100, sv[0], &h), -EOPNOTSUPP);
	ASSERT_EQ(xfer(a, 0, 0x100, nul, &h), -EOPNOTSUPP);
	/* EOPNOTSUPP comes before src resolution (ENXIO) */
	ASSERT_EQ(xfer(a, 0, 0x3, p[0], &h), -EOPNOTSUPP);
	ASSERT_EQ(b1_transfer(a, 0x100, b, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
}

/* §2.5 step 3: a disconnected destination → ESHUTDOWN, before src resolution */
TEST(transfer_dst_disconnected_eshutdown)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;

	ASSERT_EQ(b1_disconnect(b), 0);
	ASSERT_EQ(xfer(a, 0, 0x100, b, &h), -ESHUTDOWN);
	ASSERT_EQ(xfer(a, 0, 0x1, b, &h), -ESHUTDOWN);
	ASSERT_EQ_U64(h, 0x5a5a5a5a5a5a5a5aULL);
	/* the caller disconnected: ESHUTDOWN from the dispatcher */
	int c = b1_open();

	ASSERT_EQ(b1_disconnect(a), 0);
	ASSERT_EQ(xfer(a, 0, 0x100, c, &h), -ESHUTDOWN);
}

/* §2.5 step 4: unknown src with bit 0 or 1 → ENXIO */
TEST(transfer_src_enxio)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;
	uint64_t ids[] = { 1, 2, 3, 0xB, 0x13, BUS1_HANDLE_INVALID };

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		ASSERT_EQ(xfer(a, 0, ids[i], b, &h), -ENXIO);
		ASSERT_EQ(xfer(a, 0, ids[i], B1_KEEP64, &h), -ENXIO);
	}
	ASSERT_EQ_U64(h, 0x5a5a5a5a5a5a5a5aULL);
	b1_expect_empty(a);
	b1_expect_empty(b);
}

/* §2.5 steps 4-8 / §3.4: an unknown user-style src creates a node */
TEST(transfer_creates_node)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;

	ASSERT_EQ(xfer(a, 0, 0x100, b, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
	/* the node exists: owner pin (EBUSY), B can send to it */
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
	ASSERT_EQ(b1_send_one(b, h, "x", 1), 0);
	expect_msg(a, BUS1_MSG_DATA, 0x100);
	/* ID 0 is a user-chosen ID like any other */
	ASSERT_EQ(xfer(a, 0, 0, b, &h), 0);
	ASSERT_EQ_U64(h, 0x13);
	ASSERT_EQ(b1_send_one(b, h, "y", 1), 0);
	expect_msg(a, BUS1_MSG_DATA, 0);
	/* so is the largest multiple of 4 */
	ASSERT_EQ(xfer(a, 0, 0xFFFFFFFFFFFFFFFCULL, b, &h), 0);
	ASSERT_EQ_U64(h, 0x1B);
	ASSERT_EQ(b1_send_one(b, h, "z", 1), 0);
	expect_msg(a, BUS1_MSG_DATA, 0xFFFFFFFFFFFFFFFCULL);
}

/* §2.5: transfer to self (-1 or another fd of the same peer) returns the own ID */
TEST(transfer_to_self)
{
	int a = b1_open();
	int a2 = dup(a);
	uint64_t h;

	ASSERT_GE(a2, 0);
	ASSERT_EQ(xfer(a, 0, 0x100, B1_KEEP64, &h), 0);
	ASSERT_EQ_U64(h, 0x100);
	ASSERT_EQ(xfer(a, 0, 0x100, a, &h), 0);
	ASSERT_EQ_U64(h, 0x100);
	ASSERT_EQ(xfer(a, 0, 0x100, a2, &h), 0);
	ASSERT_EQ_U64(h, 0x100);
	/* pin + 3 user references */
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(b1_release(a, 0x100), 0);
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
	expect_msg(a, BUS1_MSG_NODE_RELEASE, 0x100);
}

/* §2.5 step 6 / §3.6: repeated transfers coalesce; transfer to the owner gives its node ID */
TEST(transfer_coalesces)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hb, hb2, hc, ha;

	ASSERT_EQ(xfer(a, 0, 0x100, b, &hb), 0);
	ASSERT_EQ(xfer(a, 0, 0x100, b, &hb2), 0);
	ASSERT_EQ_U64(hb, hb2);
	/* a remote handle passed on: C gets its own first ID */
	ASSERT_EQ(xfer(b, 0, hb, c, &hc), 0);
	ASSERT_EQ_U64(hc, 0xB);
	ASSERT_EQ(xfer(c, 0, hc, b, &hb2), 0);
	ASSERT_EQ_U64(hb2, hb);
	ASSERT_EQ(xfer(c, 0, hc, a, &ha), 0);
	ASSERT_EQ_U64(ha, 0x100);
	/* B holds 3 references, C 1, A pin + 1 */
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(b1_release(b, hb), 0);
	ASSERT_EQ(b1_release(b, hb), -ENXIO);
	ASSERT_EQ(b1_release(a, 0x100), 0);
	b1_expect_empty(a);
	ASSERT_EQ(b1_release(c, hc), 0);
	expect_msg(a, BUS1_MSG_NODE_RELEASE, 0x100);
}

/* §2.5: the input dst_handle is ignored */
TEST(transfer_dst_handle_input_ignored)
{
	int a = b1_open(), b = b1_open();
	struct bus1_cmd_handle_transfer t = {
		.flags = 0, .src_handle = 0x100, .dst_fd = (uint64_t)b,
		.dst_handle = 0x13,
	};

	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_HANDLE_TRANSFER, &t), 0);
	ASSERT_EQ_U64(t.dst_handle, 0xB);
	t.dst_handle = 0;
	t.src_handle = 0x200;
	ASSERT_EQ(b1_ioctl(a, BUS1_CMD_HANDLE_TRANSFER, &t), 0);
	ASSERT_EQ_U64(t.dst_handle, 0x13);
	ASSERT_EQ_U64(t.flags, 0);
	ASSERT_EQ_U64(t.src_handle, 0x200);
	ASSERT_EQ_U64(t.dst_fd, (uint64_t)b);
}

/* §2.5 step 5: a destroyed node transfers as INVALID and changes nothing */
TEST(transfer_destroyed_invalid)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hb, h;

	ASSERT_EQ(xfer(a, 0, 0x100, b, &hb), 0);
	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	/* the owner itself, the holder, to a third peer, to self */
	ASSERT_EQ(xfer(a, 0, 0x100, c, &h), 0);
	ASSERT_EQ_U64(h, BUS1_HANDLE_INVALID);
	ASSERT_EQ(xfer(b, 0, hb, c, &h), 0);
	ASSERT_EQ_U64(h, BUS1_HANDLE_INVALID);
	ASSERT_EQ(xfer(b, 0, hb, B1_KEEP64, &h), 0);
	ASSERT_EQ_U64(h, BUS1_HANDLE_INVALID);
	ASSERT_EQ(xfer(a, 0, 0x100, B1_KEEP64, &h), 0);
	ASSERT_EQ_U64(h, BUS1_HANDLE_INVALID);
	/* nothing changed: C has no handle (first ID unused), B one reference */
	b1_expect_empty(c);
	ASSERT_EQ(xfer(c, 0, 0x700, b, &h), 0);
	ASSERT_EQ_U64(h, 0x13);
	ASSERT_EQ(xfer(b, 0, h, c, &h), 0);
	ASSERT_EQ_U64(h, 0x700);
	expect_msg(b, BUS1_MSG_NODE_DESTROY, hb);
	ASSERT_EQ(b1_release(b, hb), 0);
	ASSERT_EQ(b1_release(b, hb), -ENXIO);
	/* the owner still has exactly its pin: one release (now allowed) */
	ASSERT_EQ(b1_release(a, 0x100), 0);
	ASSERT_EQ(b1_release(a, 0x100), -EBUSY);
}

/* §3.10: a released node transfers as INVALID */
TEST(transfer_released_invalid)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hb, h;

	ASSERT_EQ(xfer(a, 0, 0x100, b, &hb), 0);
	ASSERT_EQ(b1_destroy(a, (uint64_t[]){ 0x100 }, 1, BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES), 0);
	ASSERT_EQ(xfer(b, 0, hb, c, &h), 0);
	ASSERT_EQ_U64(h, BUS1_HANDLE_INVALID);
	/* the owner's ID now names a new node */
	ASSERT_EQ(xfer(a, 0, 0x100, c, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
}

/* §2.5 step 7: destination without handle quota → EDQUOT, no node created */
TEST(transfer_dst_edquot)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;

	ASSERT_EQ(b1_set_handles(b, 0), 0);
	ASSERT_EQ(xfer(a, 0, 0x100, b, &h), -EDQUOT);
	ASSERT_EQ_U64(h, 0x5a5a5a5a5a5a5a5aULL);
	/* nothing of the failed attempt is left; the retry gets the first ID */
	ASSERT_EQ(b1_set_handles(b, 100), 0);
	ASSERT_EQ(xfer(a, 0, 0x100, b, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
}

/* §2.5 step 7: a new node needs quota on the caller; the destination charge is undone */
TEST(transfer_src_edquot)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;

	ASSERT_EQ(b1_set_handles(a, 0), 0);
	ASSERT_EQ(b1_set_handles(b, 2), 0);
	for (int i = 0; i < 8; i++)
		ASSERT_EQ(xfer(a, 0, 0x100 + 4 * i, b, &h), -EDQUOT);
	ASSERT_EQ(b1_set_handles(a, 10), 0);
	ASSERT_EQ(xfer(a, 0, 0x100, b, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
	ASSERT_EQ(b1_release(b, h), 0);
	/*
	 * An existing node needs no quota on the caller, and B's charges were
	 * undone by every failure, so its 2 units still allow this.
	 */
	ASSERT_EQ(b1_set_handles(a, 0), 0);
	ASSERT_EQ(xfer(a, 0, 0x100, b, &h), 0);
	ASSERT_EQ_U64(h, 0x13);
}

/*
 * §2.5 steps 4, 5 and 7: resolving src_handle (ENXIO) and the destroyed-node
 * shortcut (success, INVALID) both come before any handle charge (EDQUOT).
 */
TEST(transfer_src_checks_before_edquot)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t h, hc = b1_handle_to(a, 0x100, c);
	struct bus1_cmd_recv r;

	ASSERT_EQ(b1_destroy_one(a, 0x100), 0);
	expect_msg(a, BUS1_MSG_NODE_DESTROY, 0x100);
	expect_msg(c, BUS1_MSG_NODE_DESTROY, hc);
	/* the destination cannot be charged anything */
	ASSERT_EQ(b1_set_handles(b, 0), 0);
	ASSERT_EQ(xfer(a, 0, 0x1, b, &h), -ENXIO);
	ASSERT_EQ(xfer(a, 0, 0xB, b, &h), -ENXIO);
	ASSERT_EQ(xfer(c, 0, 0x13, b, &h), -ENXIO);
	ASSERT_EQ_U64(h, 0x5a5a5a5a5a5a5a5aULL);
	/* a destroyed node succeeds with INVALID, owner and holder alike */
	ASSERT_EQ(xfer(a, 0, 0x100, b, &h), 0);
	ASSERT_EQ_U64(h, BUS1_HANDLE_INVALID);
	ASSERT_EQ(xfer(c, 0, hc, b, &h), 0);
	ASSERT_EQ_U64(h, BUS1_HANDLE_INVALID);
	/* a caller that cannot pay for a new node: unknown managed IDs are ENXIO */
	ASSERT_EQ(b1_set_handles(a, 0), 0);
	ASSERT_EQ(xfer(a, 0, 0x3, B1_KEEP64, &h), -ENXIO);
	ASSERT_EQ(xfer(a, 0, 0x100, B1_KEEP64, &h), 0);
	ASSERT_EQ_U64(h, BUS1_HANDLE_INVALID);
	/* the charges are reached once src resolves to a live node */
	ASSERT_EQ(xfer(a, 0, 0x200, B1_KEEP64, &h), -EDQUOT);
	ASSERT_EQ(b1_set_handles(a, 100), 0);
	ASSERT_EQ(xfer(a, 0, 0x200, b, &h), -EDQUOT);
	/* nothing happened to b: no ID used, no message, quota intact */
	ASSERT_EQ(b1_recv(b, &r, 0), -EAGAIN);
	ASSERT_EQ(b1_set_handles(b, 1), 0);
	ASSERT_EQ(xfer(a, 0, 0x200, b, &h), 0);
	ASSERT_EQ_U64(h, 0xB);
}

/* §2.5 step 8: a transfer (0→1 strong) withdraws a pending NODE_RELEASE */
TEST(transfer_withdraws_release)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hb, hc;

	ASSERT_EQ(xfer(a, 0, 0x100, b, &hb), 0);
	ASSERT_EQ(b1_release(b, hb), 0);
	ASSERT_EQ(xfer(a, 0, 0x100, c, &hc), 0);
	b1_expect_empty(a);
	ASSERT_EQ(b1_release(c, hc), 0);
	expect_msg(a, BUS1_MSG_NODE_RELEASE, 0x100);
}

/*
 * §2.5 steps 6 and 7: a new node given to oneself costs two units, the
 * destination's reference and the creator's pin. With one unit left the
 * second charge fails and the first is given back.
 */
TEST(transfer_self_new_node_one_unit)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;

	ASSERT_EQ(b1_set_handles(a, 1), 0);
	ASSERT_EQ(xfer(a, 0, 0x100, B1_KEEP64, &h), -EDQUOT);
	/* no pin was left behind and the unit is free again: exactly one handle from b fits */
	ASSERT_EQ(xfer(b, 0, 0x100, a, &h), 0);
	ASSERT_EQ(xfer(b, 0, 0x100, a, &h), -EDQUOT);
}

/* §2.5 step 9: only the last field on a read-only page is enough for EFAULT, before any effect */
TEST(transfer_readonly_tail_efault)
{
	int a = b1_open(), b = b1_open();
	struct bus1_cmd_handle_transfer t = { 0, 0x100, (uint64_t)b, 0 };

	ASSERT_ERRNO(ioctl(a, BUS1_CMD_HANDLE_TRANSFER,
			   b1_straddle(&t, sizeof(t), sizeof(t) - 8, PROT_READ)), EFAULT);
	ASSERT_EQ(b1_release(b, 0xB), -ENXIO);
	b1_expect_empty(b);
	/* no node was created: a's one unit still pays for a new node's pin */
	ASSERT_EQ(b1_set_handles(a, 1), 0);
	ASSERT_EQ(xfer(a, 0, 0x200, b, NULL), 0);
}

/* §2.5 step 9: an unwritable struct → EFAULT, checked up front (no effect) */
TEST(transfer_readonly_efault)
{
	int a = b1_open(), b = b1_open();
	struct bus1_cmd_handle_transfer *t;
	uint8_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_TRUE(p != MAP_FAILED);
	t = (void *)p;
	*t = (struct bus1_cmd_handle_transfer){ 0, 0x100, (uint64_t)b, 0 };
	ASSERT_OK(mprotect(p, 4096, PROT_READ));
	ASSERT_ERRNO(ioctl(a, BUS1_CMD_HANDLE_TRANSFER, t), EFAULT);
	/* writability is checked before step 4: the transfer did not happen */
	ASSERT_EQ(b1_release(b, 0xB), -ENXIO);
	b1_expect_empty(b);
	/* a failing check (EBADF) is reported as such even from read-only memory */
	ASSERT_OK(mprotect(p, 4096, PROT_READ | PROT_WRITE));
	t->dst_fd = 9999;
	ASSERT_OK(mprotect(p, 4096, PROT_READ));
	ASSERT_ERRNO(ioctl(a, BUS1_CMD_HANDLE_TRANSFER, t), EBADF);
}

/* §2.5: the received handle is a working capability for the receiver */
TEST(transfer_result_usable)
{
	int a = b1_open(), b = b1_open();
	uint64_t h;
	struct bus1_cmd_recv r;
	const uint8_t *pool = b1_map(a);

	ASSERT_EQ(xfer(a, 0, 0x1000, b, &h), 0);
	ASSERT_EQ(b1_send_one(b, h, "payload", 7), 0);
	ASSERT_EQ(b1_recv(a, &r, 0), 0);
	ASSERT_EQ(r.msg.type, BUS1_MSG_DATA);
	ASSERT_EQ_U64(r.msg.destination, 0x1000);
	ASSERT_MEMEQ(pool + r.msg.offset, "payload", 7);
}

/* §2.5 / §8.6: transferring a handle whose owner is gone → INVALID */
TEST(transfer_owner_gone_invalid)
{
	int a = b1_open(), b = b1_open(), c = b1_open();
	uint64_t hb, h;

	ASSERT_EQ(xfer(a, 0, 0x100, b, &hb), 0);
	ASSERT_OK(close(a));
	ASSERT_EQ(xfer(b, 0, hb, c, &h), 0);
	ASSERT_EQ_U64(h, BUS1_HANDLE_INVALID);
	b1_expect_empty(c);
}
