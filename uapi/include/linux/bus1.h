/* SPDX-License-Identifier: MIT */
/*
 * bus1 — binary interface of the bus1 capability message bus.
 *
 * This header is the binary contract between C programs and the bus1 device
 * (the userspace implementation in this repository, or the original kernel
 * module: both expose exactly these numbers and layouts). Every structure is
 * 8-byte aligned and has no implicit padding.
 *
 * It describes two versions of the interface:
 *
 *  - by default, the RFC v1 ABI (2016), which the module was posted with;
 *  - with BUS1_ABI_FINAL defined before the first inclusion, the final ABI
 *    (the bus1 tree's last state, 2019). It drops RECV's PEEK flag, the
 *    sender's credentials and security context and the peer flags:
 *    struct bus1_cmd_recv shrinks to 72 bytes and gets a new ioctl number,
 *    and the RECV and message flag bits are renumbered. Every other
 *    structure and number is the same in both.
 *
 * One bus serves programs of both kinds at once, talking to each other.
 *
 * Where the bus1(7) man page uses different names than the module's header,
 * both spellings are provided (see "Man-page spellings" below).
 */
#ifndef _UAPI_LINUX_BUS1_H
#define _UAPI_LINUX_BUS1_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define BUS1_FD_MAX			(256)

#define BUS1_IOCTL_MAGIC		0x96
#define BUS1_HANDLE_INVALID		((__u64)-1)
#define BUS1_OFFSET_INVALID		((__u64)-1)

/* bits of handle IDs */
enum {
	BUS1_HANDLE_FLAG_MANAGED			= 1ULL <<  0,
	BUS1_HANDLE_FLAG_REMOTE				= 1ULL <<  1,
};

#ifndef BUS1_ABI_FINAL
/* bus1_cmd_peer_reset.peer_flags (the final ABI has none: pass all-ones) */
enum {
	BUS1_PEER_FLAG_WANT_SECCTX			= 1ULL <<  0,
};
#endif

/* bus1_cmd_peer_reset.flags */
enum {
	BUS1_PEER_RESET_FLAG_FLUSH			= 1ULL <<  0,
	BUS1_PEER_RESET_FLAG_FLUSH_SEED			= 1ULL <<  1,
};

/* argument of BUS1_CMD_PEER_QUERY and BUS1_CMD_PEER_RESET (32 bytes) */
struct bus1_cmd_peer_reset {
	__u64 flags;
	__u64 peer_flags;
	__u32 max_slices;
	__u32 max_handles;
	__u32 max_inflight_bytes;
	__u32 max_inflight_fds;
} __attribute__((__aligned__(8)));

/* argument of BUS1_CMD_HANDLE_TRANSFER (32 bytes) */
struct bus1_cmd_handle_transfer {
	__u64 flags;
	__u64 src_handle;
	__u64 dst_fd;
	__u64 dst_handle;
} __attribute__((__aligned__(8)));

/* bus1_cmd_nodes_destroy.flags */
enum {
	BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES		= 1ULL <<  0,
};

/* argument of BUS1_CMD_NODES_DESTROY (24 bytes) */
struct bus1_cmd_nodes_destroy {
	__u64 flags;
	__u64 ptr_nodes;
	__u64 n_nodes;
} __attribute__((__aligned__(8)));

/* bus1_cmd_send.flags */
enum {
	BUS1_SEND_FLAG_CONTINUE				= 1ULL <<  0,
	BUS1_SEND_FLAG_SEED				= 1ULL <<  1,
};

/* argument of BUS1_CMD_SEND (80 bytes) */
struct bus1_cmd_send {
	__u64 flags;
	__u64 ptr_destinations;
	__u64 ptr_errors;
	__u64 n_destinations;
	__u64 ptr_vecs;
	__u64 n_vecs;
	__u64 ptr_handles;
	__u64 n_handles;
	__u64 ptr_fds;
	__u64 n_fds;
} __attribute__((__aligned__(8)));

/* bus1_cmd_recv.flags */
#ifdef BUS1_ABI_FINAL
enum {
	BUS1_RECV_FLAG_SEED				= 1ULL <<  0,
	BUS1_RECV_FLAG_INSTALL_FDS			= 1ULL <<  1,
};
#else
enum {
	BUS1_RECV_FLAG_PEEK				= 1ULL <<  0,
	BUS1_RECV_FLAG_SEED				= 1ULL <<  1,
	BUS1_RECV_FLAG_INSTALL_FDS			= 1ULL <<  2,
};
#endif

/* bus1_cmd_recv.msg.type */
enum {
	BUS1_MSG_NONE,
	BUS1_MSG_DATA,
	BUS1_MSG_NODE_DESTROY,
	BUS1_MSG_NODE_RELEASE,
};

/* bus1_cmd_recv.msg.flags */
#ifdef BUS1_ABI_FINAL
enum {
	BUS1_MSG_FLAG_CONTINUE				= 1ULL <<  0,
};
#else
enum {
	BUS1_MSG_FLAG_HAS_SECCTX			= 1ULL <<  0,
	BUS1_MSG_FLAG_CONTINUE				= 1ULL <<  1,
};
#endif

#ifdef BUS1_ABI_FINAL
/* argument of BUS1_CMD_RECV (72 bytes; msg is 56 bytes at offset 16) */
struct bus1_cmd_recv {
	__u64 flags;
	__u64 max_offset;
	struct {
		__u64 type;
		__u64 flags;
		__u64 destination;
		__u64 offset;
		__u64 n_bytes;
		__u64 n_handles;
		__u64 n_fds;
	} __attribute__((__aligned__(8))) msg;
} __attribute__((__aligned__(8)));
#else
/* argument of BUS1_CMD_RECV (96 bytes; msg is 80 bytes at offset 16) */
struct bus1_cmd_recv {
	__u64 flags;
	__u64 max_offset;
	struct {
		__u64 type;
		__u64 flags;
		__u64 destination;
		__u32 uid;
		__u32 gid;
		__u32 pid;
		__u32 tid;
		__u64 offset;
		__u64 n_bytes;
		__u64 n_handles;
		__u64 n_fds;
		__u64 n_secctx;
	} __attribute__((__aligned__(8))) msg;
} __attribute__((__aligned__(8)));
#endif

/*
 * The numbers follow from the structures: every command is the same in
 * both ABIs except BUS1_CMD_RECV (0xC0609650 in the RFC v1 ABI, 0xC0489650
 * in the final one).
 */
enum {
	BUS1_CMD_PEER_DISCONNECT	= _IOWR(BUS1_IOCTL_MAGIC, 0x00,
						__u64),
	BUS1_CMD_PEER_QUERY		= _IOWR(BUS1_IOCTL_MAGIC, 0x01,
						struct bus1_cmd_peer_reset),
	BUS1_CMD_PEER_RESET		= _IOWR(BUS1_IOCTL_MAGIC, 0x02,
						struct bus1_cmd_peer_reset),
	BUS1_CMD_HANDLE_RELEASE		= _IOWR(BUS1_IOCTL_MAGIC, 0x10,
						__u64),
	BUS1_CMD_HANDLE_TRANSFER	= _IOWR(BUS1_IOCTL_MAGIC, 0x11,
						struct bus1_cmd_handle_transfer),
	BUS1_CMD_NODES_DESTROY		= _IOWR(BUS1_IOCTL_MAGIC, 0x20,
						struct bus1_cmd_nodes_destroy),
	BUS1_CMD_SLICE_RELEASE		= _IOWR(BUS1_IOCTL_MAGIC, 0x30,
						__u64),
	BUS1_CMD_SEND			= _IOWR(BUS1_IOCTL_MAGIC, 0x40,
						struct bus1_cmd_send),
	BUS1_CMD_RECV			= _IOWR(BUS1_IOCTL_MAGIC, 0x50,
						struct bus1_cmd_recv),
};

/*
 * Man-page spellings.
 *
 * bus1(7) names the destroy command NODE_DESTROY and its struct
 * bus1_cmd_node_destroy (same layout and number as NODES_DESTROY), and the
 * reset flags BUS1_CMD_PEER_RESET_FLAG_*.
 */
#define bus1_cmd_node_destroy			bus1_cmd_nodes_destroy
#define BUS1_CMD_NODE_DESTROY			BUS1_CMD_NODES_DESTROY
#define BUS1_CMD_PEER_RESET_FLAG_FLUSH		BUS1_PEER_RESET_FLAG_FLUSH
#define BUS1_CMD_PEER_RESET_FLAG_FLUSH_SEED	BUS1_PEER_RESET_FLAG_FLUSH_SEED

/*
 * bus1(7) also shows struct bus1_cmd_peer_reset with four __u64 limit fields
 * (48 bytes), which gives different ioctl numbers. The module never accepted
 * them; this implementation does, with the same meaning as the 32-byte
 * commands (a limit above 0x7FFFFFFF, other than all-ones, is EINVAL).
 */
struct bus1_cmd_peer_reset_u64 {
	__u64 flags;
	__u64 peer_flags;
	__u64 max_slices;
	__u64 max_handles;
	__u64 max_inflight_bytes;
	__u64 max_inflight_fds;
} __attribute__((__aligned__(8)));

enum {
	BUS1_CMD_PEER_QUERY_U64		= _IOWR(BUS1_IOCTL_MAGIC, 0x01,
						struct bus1_cmd_peer_reset_u64),
	BUS1_CMD_PEER_RESET_U64		= _IOWR(BUS1_IOCTL_MAGIC, 0x02,
						struct bus1_cmd_peer_reset_u64),
};

#endif /* _UAPI_LINUX_BUS1_H */
