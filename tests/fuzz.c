// SPDX-License-Identifier: MIT
/*
 * Random ioctls against a small bus (docs/design.md, fixed decision 6): every call
 * made from random commands, flags, IDs, offsets, counts and pointers
 * (valid, NULL, unmapped, read-only, running into a guard page) must
 * answer 0 or -1 with an errno docs/reference.md lists for that command,
 * never crash the caller or damage the bus. Each run is reproducible
 * from its seed.
 *
 * Every payload that can be delivered carries a header (length and
 * checksum of the rest), so a message that arrives torn or mixed with
 * another is caught at RECV. Afterwards the bus must still work (a fresh
 * pair of peers exchanges a message) and, once every peer is closed, the
 * domain directory is back to its empty state. The runs happen in exec'd
 * children with BUS1_DEBUG_HEAP=1, so every transaction also checks the
 * segment heap.
 *
 * The invariant checker (the shim's test-only B1_TEST_CHECK) runs every
 * few thousand calls and after every run.
 *
 * The long-lived mode runs seed after seed on the same four peers, so the
 * fds, handles, queued messages and flushes of one seed meet the next, and
 * checks the invariants and the memory the bus holds between seeds. CI
 * runs it for a few seconds; `make fuzz FUZZ_SECONDS=...` as long as asked.
 *
 * To replay a failing seed with every call printed:
 *   FZ_TRACE=1 BUS1_DOMAIN=/tmp/d BUS1_TEST_HOOKS=1 LD_PRELOAD=.../libbus1_preload.so \
 *     tests/bin/fuzz --child fuzz_alone <seed> <calls>
 * and a long-lived run up to its failing seed (both are printed):
 *     tests/bin/fuzz --child fuzz_long <seconds> <first seed> <last seed>
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "bus1-util.h"
#include "mp-util.h"
#include "abi-both.h"

#define NPEERS 4
#define MAX_IDS 64
#define MAX_OFFS 64
#define FZ_MAGIC 0xb1f022e5u

struct fz_peer {
	int fd;			/* -1 once closed */
	int dup;		/* a second fd of the same peer */
	const uint8_t *pool;
	uint64_t ids[MAX_IDS];	/* IDs this peer was told about */
	unsigned n_ids;
	uint64_t offs[MAX_OFFS];	/* offsets RECV reported */
	unsigned n_offs;
};

struct fz {
	uint64_t rng;
	struct fz_peer p[NPEERS];
	int pipe[2];		/* plain fds to pass in messages */
	int unix_sock;		/* an AF_UNIX socket: EOPNOTSUPP as message fd */
	uint8_t *buf;		/* writable scratch memory */
	void *bad;		/* PROT_NONE page */
	void *ro;		/* read-only page */
	uint8_t *edge;		/* last bytes before a PROT_NONE page */
	uint8_t *ro_arg;	/* a page made read-only after an argument is put there */
	/*
	 * The peers are this process's alone: disconnected ones are replaced,
	 * and what RECV reports is checked at once. Peers shared with other
	 * processes making random calls are not: their slices may be released
	 * (with a stale offset) and reused, and a PEEK elsewhere rewrites the
	 * fd numbers in a slice, before this process looks.
	 */
	int own_peers;
	unsigned long calls, ok, delivered;
	/* the invariants are checked every this many calls (0: never) */
	unsigned long check_every;
	/*
	 * A process was killed while using the peers: the fds of messages it
	 * did not receive may be gone (a carrier it held when it died), so an
	 * fd slot may read -1 (never another number). Counted in lost_fds.
	 */
	int fds_may_be_lost;
	unsigned long lost_fds;
};

static uint64_t fz_next(struct fz *z)
{
	/* xorshift64*: small, fast and good enough to pick cases */
	z->rng ^= z->rng >> 12;
	z->rng ^= z->rng << 25;
	z->rng ^= z->rng >> 27;
	return z->rng * 0x2545F4914F6CDD1DULL;
}

static unsigned fz_below(struct fz *z, unsigned n)
{
	return (unsigned)(fz_next(z) % n);
}

static int fz_chance(struct fz *z, unsigned percent)
{
	return fz_below(z, 100) < percent;
}

static void fz_remember(uint64_t *set, unsigned *n, unsigned max, uint64_t v, struct fz *z)
{
	for (unsigned i = 0; i < *n; i++)
		if (set[i] == v)
			return;
	if (*n < max)
		set[(*n)++] = v;
	else
		set[fz_below(z, max)] = v;
}

/* A handle ID for peer `p`: mostly one it knows, else a random kind. */
static uint64_t fz_id(struct fz *z, struct fz_peer *p)
{
	if (p->n_ids && fz_chance(z, 70))
		return p->ids[fz_below(z, p->n_ids)];
	switch (fz_below(z, 6)) {
	case 0: return BUS1_HANDLE_INVALID;
	case 1: return 0;
	case 2: return (uint64_t)(fz_below(z, 16) + 1) << 8;	/* user-style: a new node */
	case 3: return ((uint64_t)fz_below(z, 64) << 2) | 1;	/* managed, unknown */
	case 4: return ((uint64_t)fz_below(z, 64) << 2) | 2;
	default: return fz_next(z);
	}
}

/* A pointer argument: mostly to `size` valid bytes, else a bad kind. */
static void *fz_ptr(struct fz *z, size_t size, int bad_percent)
{
	if (!fz_chance(z, bad_percent))
		return z->buf + 8 * fz_below(z, 64);
	switch (fz_below(z, 5)) {
	case 0: return NULL;
	case 1: return z->bad;
	case 2: return size > 1 ? z->edge + 4096 - (size - 1) : z->bad;	/* runs into the guard */
	case 3: return (void *)0xffff800000000000ULL;
	default: return (void *)(uintptr_t)fz_next(z);
	}
}

/*
 * The `size` bytes at `arg` copied to a page that is then made read-only:
 * a valid argument whose write-back fails, after everything else the call
 * does (how a RECV once left an ID behind its handle).
 */
static void *fz_ro_copy(struct fz *z, const void *arg, size_t size)
{
	ASSERT_OK(mprotect(z->ro_arg, 4096, PROT_READ | PROT_WRITE));
	memcpy(z->ro_arg, arg, size);
	ASSERT_OK(mprotect(z->ro_arg, 4096, PROT_READ));
	return z->ro_arg;
}

/* The argument pointer of a call: mostly `arg`, sometimes read-only, sometimes bad. */
static void *fz_arg(struct fz *z, void *arg, size_t size)
{
	if (fz_chance(z, 3))
		return fz_ptr(z, size, 100);
	if (fz_chance(z, 10))
		return fz_ro_copy(z, arg, size);
	return arg;
}

static int fz_in(int e, const int *allowed)
{
	for (; *allowed; allowed++)
		if (*allowed == e)
			return 1;
	return 0;
}

/* Checks the outcome of one call; `what` names it for the failure text. */
static int fz_tracing = -1;

static void fz_check(struct fz *z, const char *what, int r, int e, const int *allowed)
{
	if (fz_tracing < 0)
		fz_tracing = getenv("FZ_TRACE") != NULL;
	if (fz_tracing)
		fprintf(stderr, "%lu %s -> %d %d\n", z->calls, what, r, r ? e : 0);
	z->calls++;
	if (r == 0) {
		z->ok++;
		return;
	}
	if (r != -1 || !fz_in(e, allowed))
		t_fail(__FILE__, __LINE__, "%s: returned %d errno %d (%s), not a listed errno",
		       what, r, e, strerror(e));
}

#define FZT(...) do { if (fz_tracing > 0) fprintf(stderr, "   " __VA_ARGS__); } while (0)

#define CALL(z, what, expr, ...)						\
	({									\
		static const int allowed_[] = { __VA_ARGS__, ESHUTDOWN, 0 };	\
		errno = 0;							\
		int r_ = (expr);						\
		int e_ = errno;							\
		fz_check((z), (what), r_, e_, allowed_);			\
		r_ == 0 ? 0 : -e_;						\
	})

static uint32_t fz_sum(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

/* Verifies a received DATA message and learns its handles and fds. */
static void fz_received(struct fz *z, struct fz_peer *p, const struct bus1_cmd_recv *r, int installed)
{
	const uint8_t *s = p->pool + r->msg.offset;
	uint32_t hdr[3];

	ASSERT_LT(r->msg.offset, B1_POOL_SIZE);
	z->delivered++;
	if (!z->own_peers)
		return;
	if (r->msg.n_bytes) {
		ASSERT_GE(r->msg.n_bytes, sizeof(hdr));
		memcpy(hdr, s, sizeof(hdr));
		ASSERT_EQ(hdr[0], FZ_MAGIC);
		ASSERT_EQ(hdr[1], r->msg.n_bytes);
		if (hdr[2] != fz_sum(s + sizeof(hdr), r->msg.n_bytes - sizeof(hdr)))
			t_fail(__FILE__, __LINE__, "torn payload: RECV flags 0x%llx offset 0x%llx n_bytes %llu n_handles %llu n_fds %llu, call %lu",
			       (unsigned long long)r->flags, (unsigned long long)r->msg.offset,
			       (unsigned long long)r->msg.n_bytes, (unsigned long long)r->msg.n_handles,
			       (unsigned long long)r->msg.n_fds, z->calls);
	}
	for (unsigned i = 0; i < r->msg.n_handles; i++) {
		uint64_t h = mp_slice_handle(p->pool, r, i);

		if (h != BUS1_HANDLE_INVALID)
			fz_remember(p->ids, &p->n_ids, MAX_IDS, h, z);
	}
	if (installed)
		for (unsigned i = 0; i < r->msg.n_fds; i++) {
			int fd = mp_slice_fd(p->pool, r, i);

			if (fd == -1 && z->fds_may_be_lost) {
				z->lost_fds++;
				continue;
			}
			ASSERT_EQ(fcntl(fd, F_GETFD), FD_CLOEXEC);
			close(fd);
		}
	fz_remember(p->offs, &p->n_offs, MAX_OFFS, r->msg.offset, z);
}

static struct fz_peer *fz_peer(struct fz *z)
{
	return &z->p[fz_below(z, NPEERS)];
}

static int fz_fd(struct fz *z, struct fz_peer *p)
{
	return fz_chance(z, 30) ? p->dup : p->fd;
}

static void fz_send(struct fz *z, struct fz_peer *p)
{
	uint64_t dests[8], handles[8];
	int fds[4];
	struct iovec vecs[6];
	uint8_t *payload = z->buf + 8192;
	struct bus1_cmd_send s = { 0 };
	unsigned nd = fz_below(z, 4), nh = fz_chance(z, 30) ? fz_below(z, 4) : 0;
	unsigned nf = fz_chance(z, 15) ? fz_below(z, 3) : 0;
	size_t len = fz_chance(z, 10) ? 0 : 12 + fz_below(z, 3000), at = 0;
	unsigned nv = 0;
	uint32_t hdr[3];

	for (unsigned i = 0; i < nd; i++)
		dests[i] = fz_id(z, p);
	for (unsigned i = 0; i < nh; i++)
		handles[i] = fz_id(z, p);
	for (unsigned i = 0; i < nf; i++) {
		switch (fz_below(z, 8)) {
		case 0: fds[i] = -1; break;
		case 1: fds[i] = 999; break;
		case 2: fds[i] = p->fd; break;
		case 3: fds[i] = z->unix_sock; break;
		default: fds[i] = z->pipe[i & 1]; break;
		}
	}
	/* the payload: a checked header, then random bytes, in random pieces */
	if (len) {
		for (size_t i = 12; i < len; i++)
			payload[i] = (uint8_t)fz_next(z);
		hdr[0] = FZ_MAGIC;
		hdr[1] = (uint32_t)len;
		hdr[2] = fz_sum(payload + 12, len - 12);
		memcpy(payload, hdr, sizeof(hdr));
		while (at < len && nv < 5) {
			size_t piece = nv == 4 ? len - at : 1 + fz_below(z, (unsigned)(len - at));

			vecs[nv].iov_base = payload + at;
			vecs[nv++].iov_len = piece;
			at += piece;
		}
		if (at < len)
			vecs[nv - 1].iov_len += len - at;
	}
	/* sometimes one piece is bad: the whole call must fail */
	if (nv && fz_chance(z, 8)) {
		unsigned v = fz_below(z, nv);

		if (fz_chance(z, 50))
			vecs[v].iov_base = fz_ptr(z, vecs[v].iov_len, 100);
		else
			vecs[v].iov_len = fz_chance(z, 50) ? (size_t)-1 : 0x80000000u;
	}
	s.flags = fz_chance(z, 90) ? (fz_chance(z, 30) ? BUS1_SEND_FLAG_CONTINUE : 0) : fz_next(z) & 7;
	s.ptr_destinations = (uintptr_t)(nd ? (void *)dests : fz_ptr(z, 8, 50));
	s.n_destinations = nd;
	s.ptr_errors = fz_chance(z, 50) ? 0 : (uintptr_t)fz_ptr(z, 8 * nd, 10);
	s.ptr_vecs = (uintptr_t)vecs;
	s.n_vecs = nv;
	s.ptr_handles = (uintptr_t)handles;
	s.n_handles = nh;
	s.ptr_fds = (uintptr_t)fds;
	s.n_fds = nf;
	if (fz_chance(z, 5)) {
		/* one list pointer or count goes wrong */
		switch (fz_below(z, 6)) {
		case 0: s.ptr_destinations = (uintptr_t)fz_ptr(z, 8 * nd, 100); break;
		case 1: s.ptr_handles = (uintptr_t)fz_ptr(z, 8 * nh, 100); break;
		case 2: s.ptr_fds = (uintptr_t)fz_ptr(z, 4 * nf, 100); break;
		case 3: s.n_vecs = 1025; break;
		case 4: s.n_fds = 257; break;
		default: s.n_destinations = 0x80000000ULL; break;
		}
	}
	if (s.flags & BUS1_SEND_FLAG_SEED)
		s.n_destinations = fz_chance(z, 70) ? 0 : s.n_destinations;
	FZT("peer %d send flags 0x%llx nd %llu len %zu\n", (int)(p - z->p), (unsigned long long)s.flags,
	    (unsigned long long)s.n_destinations, len);
	CALL(z, "SEND", ioctl(fz_fd(z, p), BUS1_CMD_SEND, fz_chance(z, 3) ? fz_ptr(z, sizeof(s), 100) : &s),
	     EFAULT, EINVAL, EMSGSIZE, ENXIO, EBADF, EOPNOTSUPP, ENOTUNIQ, EDQUOT, EXFULL, ENOMEM);
}

static void fz_recv(struct fz *z, struct fz_peer *p)
{
	struct bus1_cmd_recv r = { 0 };
	uint64_t flags = fz_chance(z, 90) ? fz_next(z) & 7 : fz_next(z);

	if (!z->own_peers)
		flags &= ~(uint64_t)BUS1_RECV_FLAG_INSTALL_FDS;
	void *arg;

	r.flags = flags;
	r.max_offset = fz_chance(z, 85) ? B1_POOL_SIZE : fz_next(z) % B1_POOL_SIZE;
	arg = fz_arg(z, &r, sizeof(r));
	if (CALL(z, "RECV", ioctl(fz_fd(z, p), BUS1_CMD_RECV, arg), EFAULT, EINVAL, EAGAIN, ERANGE, EMFILE, EDQUOT) ||
	    arg != &r)
		return;
	ASSERT_EQ_U64(r.flags, flags);
	FZT("peer %d recv flags 0x%llx type %llu off 0x%llx n %llu\n", (int)(p - z->p), (unsigned long long)flags,
	    (unsigned long long)r.msg.type, (unsigned long long)r.msg.offset, (unsigned long long)r.msg.n_bytes);
	switch (r.msg.type) {
	case BUS1_MSG_DATA:
		fz_received(z, p, &r, !!(flags & BUS1_RECV_FLAG_INSTALL_FDS));
		break;
	case BUS1_MSG_NODE_DESTROY:
	case BUS1_MSG_NODE_RELEASE:
		ASSERT_EQ_U64(r.msg.offset, BUS1_OFFSET_INVALID);
		ASSERT_EQ(r.msg.n_bytes, 0);
		break;
	default:
		t_fail(__FILE__, __LINE__, "RECV: message type %llu", (unsigned long long)r.msg.type);
	}
}

/*
 * The final ABI's RECV on the same peers (each peer latches to the ABI of
 * its first RECV; both numbers stay served): its own flag bits, its own
 * errnos (never EDQUOT), its 72-byte layout, and what it delivers checked
 * like any other delivery.
 */
static void fz_recv_final(struct fz *z, struct fz_peer *p)
{
	struct b1_recv_final f = { 0 };
	struct bus1_cmd_recv r = { 0 };
	uint64_t flags = fz_chance(z, 90) ? fz_next(z) & 3 : fz_next(z);
	int bad = fz_chance(z, 3);

	if (!z->own_peers)
		flags &= ~B1_FINAL_RECV_INSTALL_FDS;
	f.flags = flags;
	f.max_offset = fz_chance(z, 85) ? B1_POOL_SIZE : fz_next(z) % B1_POOL_SIZE;
	if (CALL(z, "RECV (final)", ioctl(fz_fd(z, p), B1_FINAL_CMD_RECV, bad ? fz_ptr(z, sizeof(f), 100) : &f),
		 EFAULT, EINVAL, EAGAIN, ERANGE, EMFILE) || bad)
		return;
	ASSERT_EQ_U64(f.flags, flags);
	ASSERT_EQ_U64(f.msg.flags & ~B1_FINAL_MSG_CONTINUE, 0);
	FZT("peer %d recv (final) flags 0x%llx type %llu off 0x%llx n %llu\n", (int)(p - z->p), (unsigned long long)flags,
	    (unsigned long long)f.msg.type, (unsigned long long)f.msg.offset, (unsigned long long)f.msg.n_bytes);
	r.flags = flags;
	r.msg.type = f.msg.type;
	r.msg.destination = f.msg.destination;
	r.msg.offset = f.msg.offset;
	r.msg.n_bytes = f.msg.n_bytes;
	r.msg.n_handles = f.msg.n_handles;
	r.msg.n_fds = f.msg.n_fds;
	switch (f.msg.type) {
	case BUS1_MSG_DATA:
		fz_received(z, p, &r, !!(flags & B1_FINAL_RECV_INSTALL_FDS));
		break;
	case BUS1_MSG_NODE_DESTROY:
	case BUS1_MSG_NODE_RELEASE:
		ASSERT_EQ_U64(f.msg.offset, BUS1_OFFSET_INVALID);
		ASSERT_EQ(f.msg.n_bytes, 0);
		break;
	default:
		t_fail(__FILE__, __LINE__, "RECV (final): message type %llu", (unsigned long long)f.msg.type);
	}
}

static void fz_transfer(struct fz *z, struct fz_peer *p)
{
	struct fz_peer *q = fz_peer(z);
	struct bus1_cmd_handle_transfer t = { 0 };
	void *arg;

	t.flags = fz_chance(z, 95) ? 0 : fz_next(z);
	t.src_handle = fz_id(z, p);
	switch (fz_below(z, 10)) {
	case 0: t.dst_fd = (uint64_t)-1; q = p; break;
	case 1: t.dst_fd = (uint64_t)z->pipe[0]; q = NULL; break;
	case 2: t.dst_fd = 999; q = NULL; break;
	case 3: t.dst_fd = ((uint64_t)0xdead << 32) | (uint32_t)q->fd; break;	/* truncated to 32 bits */
	default: t.dst_fd = (uint64_t)fz_fd(z, q); break;
	}
	t.dst_handle = fz_next(z);
	arg = fz_arg(z, &t, sizeof(t));
	if (CALL(z, "HANDLE_TRANSFER", ioctl(fz_fd(z, p), BUS1_CMD_HANDLE_TRANSFER, arg),
		 EFAULT, EINVAL, EBADF, EOPNOTSUPP, ENXIO, EDQUOT, ENOMEM) || arg != &t)
		return;
	if (t.src_handle != BUS1_HANDLE_INVALID && !(t.src_handle & 3))
		fz_remember(p->ids, &p->n_ids, MAX_IDS, t.src_handle, z);
	if (q && t.dst_handle != BUS1_HANDLE_INVALID)
		fz_remember(q->ids, &q->n_ids, MAX_IDS, t.dst_handle, z);
}

static void fz_destroy(struct fz *z, struct fz_peer *p)
{
	uint64_t ids[6];
	struct bus1_cmd_nodes_destroy d = { 0 };
	unsigned n = fz_below(z, 4);

	for (unsigned i = 0; i < n; i++)
		ids[i] = fz_chance(z, 10) && i ? ids[i - 1] : fz_id(z, p);
	d.flags = fz_chance(z, 90) ? fz_next(z) & 1 : fz_next(z);
	d.ptr_nodes = (uintptr_t)(fz_chance(z, 5) ? fz_ptr(z, 8 * n, 100) : ids);
	d.n_nodes = fz_chance(z, 3) ? 65537 : n;
	CALL(z, "NODES_DESTROY", ioctl(fz_fd(z, p), BUS1_CMD_NODES_DESTROY, fz_chance(z, 3) ? fz_ptr(z, 24, 100) : &d),
	     EFAULT, EINVAL, ENXIO, ENOTUNIQ, EREMOTE, ESTALE, EDQUOT);
}

static const unsigned long fz_known_cmds[] = {
	BUS1_CMD_PEER_DISCONNECT, BUS1_CMD_PEER_QUERY, BUS1_CMD_PEER_RESET, BUS1_CMD_HANDLE_RELEASE,
	BUS1_CMD_HANDLE_TRANSFER, BUS1_CMD_NODES_DESTROY, BUS1_CMD_SLICE_RELEASE, BUS1_CMD_SEND,
	BUS1_CMD_RECV, BUS1_CMD_PEER_QUERY_U64, BUS1_CMD_PEER_RESET_U64, B1_FINAL_CMD_RECV,
};

/* A bus1-magic ioctl number that names no command. */
static unsigned long fz_unknown_cmd(struct fz *z)
{
	for (;;) {
		unsigned long cmd = _IOC(fz_below(z, 4), BUS1_IOCTL_MAGIC, fz_below(z, 0x60), fz_below(z, 128));
		int known = 0;

		for (size_t i = 0; i < sizeof(fz_known_cmds) / sizeof(fz_known_cmds[0]); i++)
			known |= cmd == fz_known_cmds[i];
		if (!known)
			return cmd;
	}
}

static void fz_small(struct fz *z, struct fz_peer *p)
{
	uint64_t v;
	struct bus1_cmd_peer_reset q = { 0 };

	switch (fz_below(z, 7)) {
	case 0:
		v = fz_id(z, p);
		CALL(z, "HANDLE_RELEASE", ioctl(fz_fd(z, p), BUS1_CMD_HANDLE_RELEASE, fz_chance(z, 5) ? fz_ptr(z, 8, 100) : &v),
		     EFAULT, ENXIO, EBUSY);
		break;
	case 1:
	case 2:
		v = p->n_offs && fz_chance(z, 80) ? p->offs[fz_below(z, p->n_offs)] : fz_next(z) % B1_POOL_SIZE;
		FZT("peer %d slice release 0x%llx\n", (int)(p - z->p), (unsigned long long)v);
		CALL(z, "SLICE_RELEASE", ioctl(fz_fd(z, p), BUS1_CMD_SLICE_RELEASE, fz_chance(z, 5) ? fz_ptr(z, 8, 100) : &v),
		     EFAULT, ENXIO);
		break;
	case 3:
		q.flags = fz_chance(z, 90) ? 0 : fz_next(z);
		CALL(z, "PEER_QUERY", ioctl(fz_fd(z, p), BUS1_CMD_PEER_QUERY, fz_chance(z, 5) ? fz_ptr(z, sizeof(q), 100) : &q),
		     EFAULT, EINVAL);
		break;
	case 4:
		/* mostly limits that change nothing or grow; flushes are rare */
		q.flags = fz_chance(z, 90) ? (fz_chance(z, 10) ? BUS1_PEER_RESET_FLAG_FLUSH : 0) : fz_next(z) & 7;
		q.peer_flags = fz_chance(z, 80) ? (uint64_t)-1 : fz_next(z) & 3;
		q.max_slices = fz_chance(z, 80) ? 0xffffffffu : (uint32_t)fz_next(z) & 0x8000ffffu;
		q.max_handles = fz_chance(z, 80) ? 0xffffffffu : (uint32_t)fz_next(z) & 0x8000ffffu;
		q.max_inflight_bytes = 0xffffffffu;
		q.max_inflight_fds = fz_chance(z, 90) ? 0xffffffffu : (uint32_t)fz_next(z) & 0x800000ffu;
		FZT("peer %d reset flags 0x%llx\n", (int)(p - z->p), (unsigned long long)q.flags);
		if (CALL(z, "PEER_RESET", ioctl(fz_fd(z, p), BUS1_CMD_PEER_RESET, fz_chance(z, 5) ? fz_ptr(z, sizeof(q), 100) : &q),
			 EFAULT, EINVAL) == 0 && (q.flags & BUS1_PEER_RESET_FLAG_FLUSH)) {
			p->n_ids = 0;
			p->n_offs = 0;
		}
		break;
	case 5:
		/* a command this bus does not have: another nr, size or direction */
		v = fz_unknown_cmd(z);
		CALL(z, "unknown ioctl", ioctl(fz_fd(z, p), v, fz_ptr(z, 8, 50)), ENOTTY);
		break;
	default: {
		/* mmap: writable mappings are refused; reading ones work */
		int prot = fz_chance(z, 50) ? PROT_READ : PROT_READ | PROT_WRITE;
		size_t len = 4096 * (1 + fz_below(z, 64));
		off_t off = 4096 * (off_t)fz_below(z, 16);
		void *m;

		errno = 0;
		m = mmap(NULL, len, prot, MAP_SHARED, fz_fd(z, p), off);
		z->calls++;
		if (m == MAP_FAILED) {
			ASSERT_EQ(prot & PROT_WRITE, PROT_WRITE);
			ASSERT_EQ(errno, EPERM);
		} else {
			ASSERT_EQ(prot, PROT_READ);
			ASSERT_OK(munmap(m, len));
			z->ok++;
		}
	}
	}
}

/* Receives until nothing is left; releases every slice it was given. */
static void fz_drain(struct fz *z, struct fz_peer *p)
{
	struct bus1_cmd_recv r;
	int n = 0;

	while (b1_recv(p->fd, &r, z->own_peers ? BUS1_RECV_FLAG_INSTALL_FDS : 0) == 0) {
		FZT("peer %d drain type %llu off 0x%llx n %llu\n", (int)(p - z->p), (unsigned long long)r.msg.type,
		    (unsigned long long)r.msg.offset, (unsigned long long)r.msg.n_bytes);
		if (r.msg.type == BUS1_MSG_DATA) {
			int rel;

			fz_received(z, p, &r, z->own_peers);
			rel = b1_slice_release(p->fd, r.msg.offset);
			ASSERT_TRUE(rel == 0 || (!z->own_peers && rel == -ENXIO));
		}
		ASSERT_LT(++n, 100000);
	}
}

static void fz_setup(struct fz *z, uint64_t seed, const int *fds)
{
	int sv[2];

	memset(z, 0, sizeof(*z));
	z->rng = seed * 0x9E3779B97F4A7C15ULL + 1;
	for (int i = 0; i < NPEERS; i++) {
		z->p[i].fd = fds ? fds[i] : b1_open();
		z->p[i].dup = dup(z->p[i].fd);
		ASSERT_GE(z->p[i].dup, 0);
		z->p[i].pool = b1_map(z->p[i].fd);
	}
	ASSERT_OK(pipe(z->pipe));
	ASSERT_OK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv));
	z->unix_sock = sv[0];
	z->buf = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(z->buf != MAP_FAILED);
	z->bad = b1_bad_ptr();
	z->ro = b1_ro_page();
	z->edge = b1_edge(4096);
	z->ro_arg = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(z->ro_arg != MAP_FAILED);
	/*
	 * Each peer starts out knowing a node of every other peer (shared
	 * peers may have lost the node to another process's random calls).
	 */
	for (int i = 0; i < NPEERS; i++)
		for (int j = 0; j < NPEERS; j++) {
			uint64_t h = BUS1_HANDLE_INVALID;
			int r = b1_transfer(z->p[i].fd, 0x100 * (i + 1), z->p[j].fd, &h);

			if (!fds)
				ASSERT_EQ(r, 0);
			if (r == 0 && h != BUS1_HANDLE_INVALID)
				fz_remember(z->p[j].ids, &z->p[j].n_ids, MAX_IDS, h, z);
		}
}

/* Closes a disconnected peer and puts a new one, known to the others, in its place. */
static void fz_replace(struct fz *z, struct fz_peer *p)
{
	munmap((void *)p->pool, B1_POOL_SIZE);
	ASSERT_OK(close(p->dup));
	ASSERT_OK(close(p->fd));
	memset(p, 0, sizeof(*p));
	p->fd = b1_open();
	p->dup = dup(p->fd);
	ASSERT_GE(p->dup, 0);
	p->pool = b1_map(p->fd);
	for (int j = 0; j < NPEERS; j++) {
		uint64_t h = BUS1_HANDLE_INVALID;
		int r;

		if (&z->p[j] == p || b1_query(z->p[j].fd, &(struct bus1_cmd_peer_reset){ 0 }))
			continue;
		/* the other peer's handle quota may have been lowered by a reset */
		r = b1_transfer(p->fd, 0x100, z->p[j].fd, &h);
		ASSERT_TRUE(r == 0 || r == -EDQUOT);
		if (r == 0)
			fz_remember(z->p[j].ids, &z->p[j].n_ids, MAX_IDS, h, z);
	}
}

/* Checks the invariants of the bus through any of the peers. */
static void fz_check_bus(struct fz *z, const char *when)
{
	int n = ioctl(z->p[0].fd, B1_TEST_CHECK, 0);

	if (n != 0)
		t_fail(__FILE__, __LINE__, "invariant check %s (after call %lu): %s", when, z->calls,
		       n < 0 ? strerror(errno) : "violations listed above");
}

/* `iters` random calls; a disconnected peer is replaced by a new one. */
static void fz_run(struct fz *z, unsigned long iters)
{
	for (unsigned long i = 0; i < iters; i++) {
		struct fz_peer *p = fz_peer(z);
		unsigned op = fz_below(z, 100);

		if (z->check_every && i % z->check_every == z->check_every - 1)
			fz_check_bus(z, "during the run");

		if (op < 35)
			fz_send(z, p);
		else if (op < 58)
			fz_recv(z, p);
		else if (op < 65)
			fz_recv_final(z, p);
		else if (op < 75)
			fz_transfer(z, p);
		else if (op < 82)
			fz_destroy(z, p);
		else if (op < 99)
			fz_small(z, p);
		else if (z->own_peers && fz_chance(z, 20)) {
			uint64_t arg = fz_chance(z, 50) ? 0 : fz_next(z) | 1;

			if (CALL(z, "PEER_DISCONNECT", ioctl(fz_fd(z, p), BUS1_CMD_PEER_DISCONNECT, arg), EINVAL) == 0)
				fz_replace(z, p);
		}
		if (fz_chance(z, 2))
			fz_drain(z, p);
	}
}

static void fz_close(struct fz *z)
{
	for (int i = 0; i < NPEERS; i++) {
		munmap((void *)z->p[i].pool, B1_POOL_SIZE);
		ASSERT_OK(close(z->p[i].dup));
		ASSERT_OK(close(z->p[i].fd));
	}
}

/* The bus still works: a new pair exchanges a message, and a peer gets one. */
static void fz_bus_works(const int *old)
{
	b1_expect_new_pair_works();
	if (old) {
		int b = b1_open();
		uint64_t id;

		for (int i = 0; i < NPEERS; i++) {
			int r2 = b1_transfer(b, 0x100, old[i], &id);

			ASSERT_TRUE(r2 == 0 || r2 == -ESHUTDOWN);
		}
		close(b);
	}
}

static void fz_report(const char *who, const struct fz *z)
{
	printf("    note: %s: %lu calls, %lu succeeded, %lu messages received%s\n", who, z->calls, z->ok, z->delivered,
	       z->own_peers ? " and checked" : "");
}

/* argv: seed, iterations */
T_CHILD(fuzz_alone)
{
	struct fz z;

	fz_setup(&z, mp_arg_u64(argv[0]), NULL);
	z.own_peers = 1;
	z.check_every = 10000;
	fz_run(&z, mp_arg_u64(argv[1]));
	fz_check_bus(&z, "after the run");
	for (int i = 0; i < NPEERS; i++)
		if (b1_query(z.p[i].fd, &(struct bus1_cmd_peer_reset){ 0 }) == 0)
			fz_drain(&z, &z.p[i]);
	fz_check_bus(&z, "after the drain");
	fz_report(argv[0], &z);
	fz_bus_works(NULL);
	fz_close(&z);
	return 0;
}

/* argv: seed, iterations, then the NPEERS inherited peer fds */
T_CHILD(fuzz_shared)
{
	struct fz z;
	int fds[NPEERS];

	for (int i = 0; i < NPEERS; i++)
		fds[i] = (int)mp_arg(argv[2 + i]);
	fz_setup(&z, mp_arg_u64(argv[0]), fds);
	fz_run(&z, mp_arg_u64(argv[1]));
	fz_report(argv[0], &z);
	return 0;
}

/* argv: the NPEERS inherited peer fds, then whether they may be disconnected */
T_CHILD(fuzz_check_after)
{
	int fds[NPEERS];
	struct fz z;

	for (int i = 0; i < NPEERS; i++)
		fds[i] = (int)mp_arg(argv[i]);
	fz_setup(&z, 1, NULL);
	z.own_peers = 1;	/* nobody else is left to touch them */
	for (int i = 0; i < NPEERS; i++) {
		struct fz_peer p = { .fd = fds[i], .pool = b1_map(fds[i]) };

		if (b1_query(fds[i], &(struct bus1_cmd_peer_reset){ 0 }) == 0)
			fz_drain(&z, &p);
	}
	fz_report("drained after the runs", &z);
	b1_check_fd(fds[0]);
	fz_bus_works(fds);
	fz_close(&z);
	return 0;
}

/* Several seeds, one process each; the heap is checked at every commit. */
TEST_TIMEOUT(random_ioctls_one_process, 120)
{
	ASSERT_OK(setenv("BUS1_DEBUG_HEAP", "1", 1));
	for (int seed = 1; seed <= 8; seed++)
		mp_reap(mp_spawn("fuzz_alone", mp_str(seed), "50000", (char *)NULL));
	/* the last one to leave removed everything: no process uses the bus */
	mp_expect_domain_files("", 2000);
}

/*
 * Three processes make random calls on the same four peers at once while
 * a fourth is killed in the middle of its own random calls, again and
 * again. Afterwards the peers still answer, their queues drain with
 * every message intact, and the bus works.
 */
TEST_TIMEOUT(random_ioctls_shared_peers_with_kills, 120)
{
	int fds[NPEERS];
	pid_t workers[3];

	ASSERT_OK(setenv("BUS1_DEBUG_HEAP", "1", 1));
	for (int i = 0; i < NPEERS; i++) {
		fds[i] = open(b1_device(), O_RDWR | O_NONBLOCK);
		ASSERT_GE(fds[i], 0);
	}
	for (int w = 0; w < 3; w++)
		workers[w] = mp_spawn("fuzz_shared", mp_str(100 + w), "50000", mp_str(fds[0]), mp_str(fds[1]),
				      mp_str(fds[2]), mp_str(fds[3]), (char *)NULL);
	for (int k = 0; k < 8; k++) {
		pid_t victim = mp_spawn("fuzz_shared", mp_str(200 + k), "1000000", mp_str(fds[0]), mp_str(fds[1]),
					mp_str(fds[2]), mp_str(fds[3]), (char *)NULL);

		mp_sleep_ms(30 + 20 * k);
		ASSERT_OK(kill(victim, SIGKILL));
		ASSERT_TRUE(WIFSIGNALED(mp_wait(victim)));
	}
	for (int w = 0; w < 3; w++)
		mp_reap(workers[w]);
	mp_reap(mp_spawn("fuzz_check_after", mp_str(fds[0]), mp_str(fds[1]), mp_str(fds[2]), mp_str(fds[3]),
			 (char *)NULL));
	for (int i = 0; i < NPEERS; i++)
		ASSERT_OK(close(fds[i]));
	mp_expect_domain_files("segment\n", 2000);	/* the last close tore everything down */
}

/* ------------------------------------------------- the long-lived domain */

/* Calls per seed of the long-lived mode. */
#define FZ_SEED_CALLS 5000
/*
 * What the bus may hold at any seed boundary, in KiB: the domain's files
 * (segment and pools) and this process's resident memory. Quotas bound
 * what a correct bus can hold far below this; more is a leak.
 */
#define FZ_MEM_CAP_KIB (512u << 10)

/* KiB of disk (memory) the files of the domain directory hold. */
static unsigned long long fz_domain_kib(void)
{
	const char *dir = getenv("BUS1_DOMAIN");
	unsigned long long kib = 0;
	struct dirent *e;
	DIR *d = opendir(dir);

	ASSERT_TRUE(d != NULL);
	while ((e = readdir(d))) {
		char path[4096];
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (lstat(path, &st) == 0 && S_ISREG(st.st_mode))
			kib += (unsigned long long)st.st_blocks / 2;
	}
	closedir(d);
	return kib;
}

/* KiB of this process's resident memory. */
static unsigned long long fz_resident_kib(void)
{
	unsigned long long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	ASSERT_TRUE(f != NULL);
	ASSERT_EQ(fscanf(f, "%llu %llu", &size, &resident), 2);
	fclose(f);
	return resident * (unsigned long long)(sysconf(_SC_PAGESIZE) / 1024);
}

static double fz_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * A process making random calls on the same peers, killed after `ms`
 * milliseconds, in the middle of whatever it is doing.
 */
static void fz_intruder(struct fz *z, uint64_t seed, unsigned ms)
{
	pid_t pid;

	for (int i = 0; i < NPEERS; i++)
		mp_keep_fd(z->p[i].fd);
	pid = mp_spawn("fuzz_shared", mp_str((long long)seed), "1000000", mp_str(z->p[0].fd), mp_str(z->p[1].fd),
		       mp_str(z->p[2].fd), mp_str(z->p[3].fd), (char *)NULL);
	mp_sleep_ms(ms);
	ASSERT_OK(kill(pid, SIGKILL));
	ASSERT_TRUE(WIFSIGNALED(mp_wait(pid)));
	z->fds_may_be_lost = 1;
	for (int i = 0; i < NPEERS; i++)
		ASSERT_OK(fcntl(z->p[i].fd, F_SETFD, FD_CLOEXEC));
}

/*
 * argv: seconds, first seed, last seed (0: as many as fit). Seed after seed
 * on the same peers; between seeds the invariants are checked and the
 * memory the bus holds is capped. Every 16th seed another process makes
 * random calls on the peers too and is killed in the middle of them.
 */
T_CHILD(fuzz_long)
{
	double until = fz_now() + mp_arg(argv[0]);
	uint64_t first = mp_arg_u64(argv[1]), last = mp_arg_u64(argv[2]), seed = first;
	unsigned long long peak_files = 0, peak_rss = 0;
	struct fz z;

	fz_setup(&z, seed, NULL);
	z.own_peers = 1;
	for (;; seed++) {
		unsigned long long files, rss;

		z.rng = seed * 0x9E3779B97F4A7C15ULL + 1;
		fz_run(&z, FZ_SEED_CALLS);
		if (seed % 16 == 15)
			fz_intruder(&z, seed, 20 + (unsigned)(seed % 50));
		if (ioctl(z.p[0].fd, B1_TEST_CHECK, 0) != 0)
			t_fail(__FILE__, __LINE__, "invariants violated after seed %llu (first seed %llu; replay: "
			       "fuzz_long 100000 %llu %llu)", (unsigned long long)seed, (unsigned long long)first,
			       (unsigned long long)first, (unsigned long long)seed);
		files = fz_domain_kib();
		rss = fz_resident_kib();
		if (files > FZ_MEM_CAP_KIB || rss > FZ_MEM_CAP_KIB)
			t_fail(__FILE__, __LINE__, "after seed %llu the bus holds %llu KiB of files and %llu KiB resident",
			       (unsigned long long)seed, files, rss);
		peak_files = files > peak_files ? files : peak_files;
		peak_rss = rss > peak_rss ? rss : peak_rss;
		if (seed == last || fz_now() >= until)
			break;
	}
	for (int i = 0; i < NPEERS; i++)
		if (b1_query(z.p[i].fd, &(struct bus1_cmd_peer_reset){ 0 }) == 0)
			fz_drain(&z, &z.p[i]);
	b1_check_fd(z.p[0].fd);
	printf("    note: long-lived domain: seeds %llu..%llu, %lu calls (%lu succeeded), %lu messages checked, "
	       "no finding; at most %llu KiB of files, %llu KiB resident; %lu fds lost to killed processes\n",
	       (unsigned long long)first, (unsigned long long)seed, z.calls, z.ok, z.delivered, peak_files, peak_rss,
	       z.lost_fds);
	fz_bus_works(NULL);
	fz_close(&z);
	return 0;
}

/*
 * Many seeds in one long-lived domain (see fuzz_long): BUS1_FUZZ_SECONDS
 * long (`make fuzz FUZZ_SECONDS=...`), 5 seconds in CI.
 */
TEST_TIMEOUT(random_ioctls_long_lived_domain, 60)
{
	const char *v = getenv("BUS1_FUZZ_SECONDS");
	long secs = v ? strtol(v, NULL, 10) : 5;

	if (secs < 1)
		secs = 1;
	alarm((unsigned)secs + 120);
	mp_reap(mp_spawn("fuzz_long", mp_str(secs), mp_str(1000 + (long long)time(NULL) % 100000), "0", (char *)NULL));
	mp_expect_domain_files("", 2000);	/* the last process to leave took the memory along */
}
