/* SPDX-License-Identifier: MIT */
/*
 * Global order across processes (§7.1): every receiver sees transactions in
 * one total order consistent with causality — concurrent multicasts from
 * different processes interleave identically at every common receiver, a
 * message sent after receiving another (or after any completed operation,
 * side channels included) is ordered after it, and node destruction takes
 * its place in the same order for everyone.
 *
 * Receivers run in their own processes and log what they see into shared
 * memory; the case compares the logs once they are done.
 */
#define _GNU_SOURCE
#include <sched.h>

#include "mp-util.h"

#define OR_NODE 0x100
#define OR_WAIT_MS 20000
/* Log entry for a NODE_DESTROY. */
#define OR_DESTROY UINT64_MAX
#define OR_EV(sender, seq) (((uint64_t)(sender) << 32) | (uint32_t)(seq))

struct or_log {
	int64_t n;
	uint64_t ev[];
};

static struct or_log *or_log_new(size_t cap)
{
	void *p = mmap(NULL, sizeof(struct or_log) + cap * 8, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	ASSERT_TRUE(p != MAP_FAILED);
	return p;
}

/* Multicasts (tag, seq) to dests, retrying while the receivers are full. */
static void or_send(int fd, const uint64_t *dests, size_t n, uint32_t tag, uint64_t seq)
{
	static char buf[MP_MSG_MAX];
	struct iovec v = { buf, mp_msg_build(buf, tag, seq, 0, seq % 64) };
	int ret;

	while ((ret = b1_send(fd, 0, dests, n, NULL, &v, 1, NULL, 0, NULL, 0)) == -EDQUOT)
		mp_sleep_ms(1);
	ASSERT_EQ(ret, 0);
}

/*
 * Receives into log until `expect` entries (DATA and NODE_DESTROY) were
 * seen; checks each payload. Runs in a forked child.
 */
static void or_receive(int fd, struct or_log *log, int64_t expect)
{
	const uint8_t *pool = b1_map(fd);

	while (log->n < expect) {
		struct bus1_cmd_recv m;
		struct mp_msg_hdr h;

		ASSERT_EQ(mp_recv_wait(fd, &m, 0, OR_WAIT_MS), 0);
		if (m.msg.type == BUS1_MSG_NODE_DESTROY) {
			log->ev[log->n++] = OR_DESTROY;
			continue;
		}
		ASSERT_EQ(m.msg.type, BUS1_MSG_DATA);
		ASSERT_TRUE(mp_msg_check(pool + m.msg.offset, m.msg.n_bytes, &h));
		log->ev[log->n++] = OR_EV(h.sender, h.seq);
		ASSERT_EQ(b1_slice_release(fd, m.msg.offset), 0);
	}
}

static pid_t or_fork_receiver(int fd, struct or_log *log, int64_t expect)
{
	pid_t pid = fork();

	ASSERT_GE(pid, 0);
	if (pid == 0) {
		or_receive(fd, log, expect);
		_exit(0);
	}
	return pid;
}

/* A start line: senders wait on it so that they really run concurrently. */
static void or_wait_go(int *go)
{
	char c;

	close(go[1]);
	mp_read_full(go[0], &c, 1);
}

static void or_release_go(int *go, int n)
{
	close(go[0]);
	for (int i = 0; i < n; i++)
		mp_put(go[1], "g", 1);
	close(go[1]);
}

/* Per-sender FIFO: each tag's sequence numbers appear as 0, 1, 2, ... */
static void or_check_fifo(const struct or_log *log, uint32_t max_tag)
{
	int64_t next[16] = { 0 };

	for (int64_t i = 0; i < log->n; i++) {
		uint64_t e = log->ev[i];

		if (e == OR_DESTROY)
			continue;
		ASSERT_LE(e >> 32, max_tag);
		ASSERT_EQ((uint32_t)e, next[e >> 32]);
		next[e >> 32]++;
	}
}

/* Number of places where the sender changes (how interleaved a log is). */
static int64_t or_switches(const struct or_log *log)
{
	int64_t n = 0;

	for (int64_t i = 1; i < log->n; i++)
		n += (log->ev[i] >> 32) != (log->ev[i - 1] >> 32);
	return n;
}

static void or_expect_same(const struct or_log *a, const struct or_log *b)
{
	ASSERT_EQ(a->n, b->n);
	for (int64_t i = 0; i < a->n; i++)
		if (a->ev[i] != b->ev[i])
			t_fail(__FILE__, __LINE__, "logs differ at %lld: 0x%llx vs 0x%llx", (long long)i,
			       (unsigned long long)a->ev[i], (unsigned long long)b->ev[i]);
}

/*
 * §7.1 (4): two processes multicast 3000 messages each to the same two
 * receivers in two other processes; both receivers log the very same
 * interleaving, and each sender's messages in sending order.
 */
TEST_TIMEOUT(or_two_senders_same_interleaving, 40)
{
	enum { N = 3000 };
	int r[2] = { b1_open(), b1_open() };
	int s[2] = { b1_open(), b1_open() };
	uint64_t d[2][2];
	struct or_log *log[2] = { or_log_new(2 * N), or_log_new(2 * N) };
	pid_t rp[2], sp[2];
	int go[2];

	for (int k = 0; k < 2; k++)
		for (int i = 0; i < 2; i++)
			ASSERT_EQ(b1_transfer(r[i], OR_NODE, s[k], &d[k][i]), 0);
	ASSERT_OK(pipe(go));
	for (int i = 0; i < 2; i++)
		rp[i] = or_fork_receiver(r[i], log[i], 2 * N);
	for (int k = 0; k < 2; k++) {
		sp[k] = fork();
		ASSERT_GE(sp[k], 0);
		if (sp[k] == 0) {
			or_wait_go(go);
			for (int q = 0; q < N; q++) {
				or_send(s[k], d[k], 2, k + 1, q);
				if (q % 16 == 15)
					sched_yield();
			}
			_exit(0);
		}
	}
	or_release_go(go, 2);
	for (int k = 0; k < 2; k++)
		mp_reap(sp[k]);
	for (int i = 0; i < 2; i++)
		mp_reap(rp[i]);
	or_check_fifo(log[0], 2);
	or_expect_same(log[0], log[1]);
	printf("    note: %lld sender switches in %lld messages\n",
	       (long long)or_switches(log[0]), (long long)log[0]->n);
}

/*
 * §7.1 (1): a relay process forwards every message it receives from S as a
 * new multicast; both receivers see each original before its relayed copy,
 * and agree on the whole interleaving.
 */
TEST_TIMEOUT(or_relay_is_ordered_after_cause, 40)
{
	enum { N = 2000 };
	int r[2] = { b1_open(), b1_open() }, c = b1_open(), s = b1_open();
	uint64_t ds[3], dc[2];
	struct or_log *log[2] = { or_log_new(2 * N), or_log_new(2 * N) };
	pid_t rp[2], cp, sp;

	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(b1_transfer(r[i], OR_NODE, s, &ds[i]), 0);
		ASSERT_EQ(b1_transfer(r[i], OR_NODE, c, &dc[i]), 0);
	}
	ASSERT_EQ(b1_transfer(c, OR_NODE, s, &ds[2]), 0);
	for (int i = 0; i < 2; i++)
		rp[i] = or_fork_receiver(r[i], log[i], 2 * N);
	cp = fork();
	ASSERT_GE(cp, 0);
	if (cp == 0) {
		const uint8_t *pool = b1_map(c);

		for (int q = 0; q < N; q++) {
			struct bus1_cmd_recv m;
			struct mp_msg_hdr h;

			ASSERT_EQ(mp_recv_wait(c, &m, 0, OR_WAIT_MS), 0);
			ASSERT_TRUE(mp_msg_check(pool + m.msg.offset, m.msg.n_bytes, &h));
			ASSERT_EQ(h.seq, q);
			ASSERT_EQ(b1_slice_release(c, m.msg.offset), 0);
			or_send(c, dc, 2, 2, q);
		}
		_exit(0);
	}
	sp = fork();
	ASSERT_GE(sp, 0);
	if (sp == 0) {
		for (int q = 0; q < N; q++)
			or_send(s, ds, 3, 1, q);
		_exit(0);
	}
	mp_reap(sp);
	mp_reap(cp);
	for (int i = 0; i < 2; i++)
		mp_reap(rp[i]);
	for (int i = 0; i < 2; i++) {
		int64_t seen_orig = 0;

		or_check_fifo(log[i], 2);
		for (int64_t k = 0; k < log[i]->n; k++) {
			uint64_t e = log[i]->ev[k];

			if (e >> 32 == 1)
				seen_orig = (uint32_t)e + 1;
			else if ((int64_t)(uint32_t)e >= seen_orig)
				t_fail(__FILE__, __LINE__, "receiver %d: relay of %u before the original", i,
				       (uint32_t)e);
		}
	}
	or_expect_same(log[0], log[1]);
}

/*
 * §7.1 "causal includes side channels": B sends its i-th multicast only
 * after A's i-th multicast returned and A told B so through a pipe; every
 * receiver sees A's i-th before B's i-th.
 */
TEST_TIMEOUT(or_side_channel_causality, 40)
{
	enum { N = 2000 };
	int r[2] = { b1_open(), b1_open() }, a = b1_open(), b = b1_open();
	uint64_t da[2], db[2];
	struct or_log *log[2] = { or_log_new(2 * N), or_log_new(2 * N) };
	int pipe_ab[2];
	pid_t rp[2], ap, bp;

	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(b1_transfer(r[i], OR_NODE, a, &da[i]), 0);
		ASSERT_EQ(b1_transfer(r[i], OR_NODE, b, &db[i]), 0);
	}
	ASSERT_OK(pipe(pipe_ab));
	for (int i = 0; i < 2; i++)
		rp[i] = or_fork_receiver(r[i], log[i], 2 * N);
	ap = fork();
	ASSERT_GE(ap, 0);
	if (ap == 0) {
		for (int q = 0; q < N; q++) {
			or_send(a, da, 2, 1, q);
			mp_put(pipe_ab[1], &q, sizeof(q));
		}
		_exit(0);
	}
	bp = fork();
	ASSERT_GE(bp, 0);
	if (bp == 0) {
		for (int q = 0; q < N; q++) {
			int got;

			mp_read_full(pipe_ab[0], &got, sizeof(got));
			ASSERT_EQ(got, q);
			or_send(b, db, 2, 2, q);
		}
		_exit(0);
	}
	mp_reap(ap);
	mp_reap(bp);
	for (int i = 0; i < 2; i++)
		mp_reap(rp[i]);
	for (int i = 0; i < 2; i++) {
		int64_t a_done = 0;

		or_check_fifo(log[i], 2);
		for (int64_t k = 0; k < log[i]->n; k++) {
			uint64_t e = log[i]->ev[k];

			if (e >> 32 == 1)
				a_done = (uint32_t)e + 1;
			else if ((int64_t)(uint32_t)e >= a_done)
				t_fail(__FILE__, __LINE__, "receiver %d: B's %u before A's", i, (uint32_t)e);
		}
	}
	or_expect_same(log[0], log[1]);
}

/*
 * §7.1 (4): three senders with overlapping destination sets
 * (S1→{R1,R2}, S2→{R2,R3}, S3→{R3,R1}); the union of what the receivers
 * saw must be consistent with a single total order: no cycle among the
 * "seen before" relations of the three logs.
 */
TEST_TIMEOUT(or_overlapping_sets_one_total_order, 40)
{
	enum { N = 1500, NR = 3, NM = 3 * N };
	int r[NR], s[NR];
	uint64_t d[NR][2];
	struct or_log *log[NR];
	pid_t rp[NR], sp[NR];
	/* graph over messages (tag 1..3, seq): edges from consecutive log entries */
	static int succ[NR][NM], indeg[NM], order[NM];
	int n_done = 0, head = 0;
	int go[2];

	for (int i = 0; i < NR; i++) {
		r[i] = b1_open();
		s[i] = b1_open();
		log[i] = or_log_new(2 * N);
	}
	for (int k = 0; k < NR; k++) {
		ASSERT_EQ(b1_transfer(r[k], OR_NODE, s[k], &d[k][0]), 0);
		ASSERT_EQ(b1_transfer(r[(k + 1) % NR], OR_NODE, s[k], &d[k][1]), 0);
	}
	ASSERT_OK(pipe(go));
	for (int i = 0; i < NR; i++)
		rp[i] = or_fork_receiver(r[i], log[i], 2 * N);
	for (int k = 0; k < NR; k++) {
		sp[k] = fork();
		ASSERT_GE(sp[k], 0);
		if (sp[k] == 0) {
			or_wait_go(go);
			for (int q = 0; q < N; q++) {
				or_send(s[k], d[k], 2, k + 1, q);
				if (q % 16 == 15)
					sched_yield();
			}
			_exit(0);
		}
	}
	or_release_go(go, NR);
	for (int k = 0; k < NR; k++)
		mp_reap(sp[k]);
	for (int i = 0; i < NR; i++)
		mp_reap(rp[i]);
	/* Kahn's algorithm over the union of the logs' "directly before" edges */
	memset(succ, 0xff, sizeof(succ));
	for (int i = 0; i < NR; i++) {
		or_check_fifo(log[i], NR);
		for (int64_t k = 1; k < log[i]->n; k++) {
			uint64_t a = log[i]->ev[k - 1], b = log[i]->ev[k];
			int u = ((a >> 32) - 1) * N + (uint32_t)a;
			int v = ((b >> 32) - 1) * N + (uint32_t)b;

			succ[i][u] = v;
			indeg[v]++;
		}
	}
	for (int v = 0; v < NM; v++)
		if (!indeg[v])
			order[n_done++] = v;
	while (head < n_done) {
		int u = order[head++];

		for (int i = 0; i < NR; i++) {
			int w = succ[i][u];

			if (w >= 0 && --indeg[w] == 0)
				order[n_done++] = w;
		}
	}
	if (n_done != NM)
		t_fail(__FILE__, __LINE__, "the receivers' orders form a cycle (%d of %d ordered)", n_done, NM);
}

/*
 * §7.1 (5), §3.8: the owner multicasts 500 messages to two holders of its
 * node, then destroys it, while another process keeps multicasting to the
 * same two; both holders see all the owner's messages before NODE_DESTROY,
 * and the destruction at the same place among the other sender's messages.
 */
TEST_TIMEOUT(or_destroy_ordered_identically, 40)
{
	enum { N = 500, NT = 1500 };
	int r[2] = { b1_open(), b1_open() }, o = b1_open(), t = b1_open();
	uint64_t dor[2], dt[2], h[2];
	struct or_log *log[2] = { or_log_new(N + NT + 1), or_log_new(N + NT + 1) };
	pid_t rp[2], op, tp;

	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(b1_transfer(r[i], OR_NODE, o, &dor[i]), 0);
		ASSERT_EQ(b1_transfer(r[i], OR_NODE, t, &dt[i]), 0);
		ASSERT_EQ(b1_transfer(o, 0x500, r[i], &h[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		rp[i] = or_fork_receiver(r[i], log[i], N + NT + 1);
	tp = fork();
	ASSERT_GE(tp, 0);
	if (tp == 0) {
		for (int q = 0; q < NT; q++)
			or_send(t, dt, 2, 2, q);
		_exit(0);
	}
	op = fork();
	ASSERT_GE(op, 0);
	if (op == 0) {
		for (int q = 0; q < N; q++)
			or_send(o, dor, 2, 1, q);
		ASSERT_EQ(b1_destroy_one(o, 0x500), 0);
		_exit(0);
	}
	mp_reap(op);
	mp_reap(tp);
	for (int i = 0; i < 2; i++)
		mp_reap(rp[i]);
	for (int i = 0; i < 2; i++) {
		int64_t owner_msgs = 0, destroyed = 0;

		or_check_fifo(log[i], 2);
		for (int64_t k = 0; k < log[i]->n; k++) {
			uint64_t e = log[i]->ev[k];

			if (e == OR_DESTROY) {
				ASSERT_EQ(owner_msgs, N);
				destroyed++;
			} else if (e >> 32 == 1) {
				owner_msgs++;
			}
		}
		ASSERT_EQ(destroyed, 1);
	}
	or_expect_same(log[0], log[1]);
}

/*
 * §7.1 (1)/(2): a token goes round three processes 1500 times; at each hop
 * the holder first logs the hop to a fourth peer, then passes the token on.
 * The log peer must see the hops strictly in order.
 */
TEST_TIMEOUT(or_causal_chain_through_three_processes, 40)
{
	enum { NP = 3, HOPS = 1500 };
	int lg = b1_open(), p[NP];
	uint64_t to_log[NP], to_next[NP];
	struct or_log *log = or_log_new(HOPS);
	pid_t pid[NP], lp;

	for (int i = 0; i < NP; i++)
		p[i] = b1_open();
	for (int i = 0; i < NP; i++) {
		ASSERT_EQ(b1_transfer(lg, OR_NODE, p[i], &to_log[i]), 0);
		ASSERT_EQ(b1_transfer(p[(i + 1) % NP], OR_NODE, p[i], &to_next[i]), 0);
	}
	lp = or_fork_receiver(lg, log, HOPS);
	for (int i = 0; i < NP; i++) {
		pid[i] = fork();
		ASSERT_GE(pid[i], 0);
		if (pid[i] == 0) {
			const uint8_t *pool = b1_map(p[i]);

			for (int hop = i; hop < HOPS; hop += NP) {
				if (hop > 0) {
					struct bus1_cmd_recv m;
					struct mp_msg_hdr h;

					ASSERT_EQ(mp_recv_wait(p[i], &m, 0, OR_WAIT_MS), 0);
					ASSERT_TRUE(mp_msg_check(pool + m.msg.offset, m.msg.n_bytes, &h));
					ASSERT_EQ(h.seq, hop - 1);
					ASSERT_EQ(b1_slice_release(p[i], m.msg.offset), 0);
				}
				or_send(p[i], &to_log[i], 1, i + 1, hop);
				if (hop + 1 < HOPS)
					or_send(p[i], &to_next[i], 1, i + 1, hop);
			}
			_exit(0);
		}
	}
	for (int i = 0; i < NP; i++)
		mp_reap(pid[i]);
	mp_reap(lp);
	ASSERT_EQ(log->n, HOPS);
	for (int k = 0; k < HOPS; k++)
		ASSERT_EQ_U64(log->ev[k], OR_EV(k % NP + 1, k));
}

/*
 * Stress: four processes multicast to random, overlapping subsets of five
 * receivers (single destinations included), each in its own process,
 * 1500 messages each per unit of BUS1_TEST_SCALE. Every receiver gets
 * exactly the messages addressed to it, each sender's in sending order,
 * and the union of the receivers' orders fits one total order (no cycle
 * among their "directly before" relations).
 */
#define OS_SENDERS 4
#define OS_RECEIVERS 5

/* The receivers of sender `k`'s message `q`: a non-empty subset, as a bit mask. */
static unsigned os_dests(int k, uint64_t q)
{
	uint64_t x = (q + 1) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(k + 1) * 0xbf58476d1ce4e5b9ULL;

	x ^= x >> 31;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 29;
	return 1 + (unsigned)(x % ((1u << OS_RECEIVERS) - 1));
}

TEST_TIMEOUT(or_stress_random_overlapping_multicasts, 60)
{
	const int64_t n = 1500 * (int64_t)t_scale(), nm = OS_SENDERS * n;
	int r[OS_RECEIVERS], s[OS_SENDERS];
	uint64_t d[OS_SENDERS][OS_RECEIVERS];
	int64_t expect[OS_RECEIVERS] = { 0 };
	struct or_log *log[OS_RECEIVERS];
	pid_t rp[OS_RECEIVERS], sp[OS_SENDERS];
	int64_t *succ, *indeg, *order, n_done = 0, head = 0;
	int go[2];

	for (int i = 0; i < OS_RECEIVERS; i++)
		r[i] = b1_open();
	for (int k = 0; k < OS_SENDERS; k++) {
		s[k] = b1_open();
		for (int i = 0; i < OS_RECEIVERS; i++)
			ASSERT_EQ(b1_transfer(r[i], OR_NODE, s[k], &d[k][i]), 0);
		for (int64_t q = 0; q < n; q++)
			for (int i = 0; i < OS_RECEIVERS; i++)
				expect[i] += os_dests(k, q) >> i & 1;
	}
	for (int i = 0; i < OS_RECEIVERS; i++) {
		log[i] = or_log_new(expect[i]);
		rp[i] = or_fork_receiver(r[i], log[i], expect[i]);
	}
	ASSERT_OK(pipe(go));
	for (int k = 0; k < OS_SENDERS; k++) {
		sp[k] = fork();
		ASSERT_GE(sp[k], 0);
		if (sp[k] == 0) {
			or_wait_go(go);
			for (int64_t q = 0; q < n; q++) {
				unsigned m = os_dests(k, q);
				uint64_t dests[OS_RECEIVERS];
				size_t nd = 0;

				for (int i = 0; i < OS_RECEIVERS; i++)
					if (m >> i & 1)
						dests[nd++] = d[k][i];
				or_send(s[k], dests, nd, k + 1, q);
				if (q % 32 == 31)
					sched_yield();
			}
			_exit(0);
		}
	}
	or_release_go(go, OS_SENDERS);
	for (int k = 0; k < OS_SENDERS; k++)
		mp_reap(sp[k]);
	for (int i = 0; i < OS_RECEIVERS; i++)
		mp_reap(rp[i]);

	succ = calloc((size_t)(OS_RECEIVERS * nm), sizeof(*succ));
	indeg = calloc((size_t)nm, sizeof(*indeg));
	order = calloc((size_t)nm, sizeof(*order));
	ASSERT_TRUE(succ && indeg && order);
	for (int64_t v = 0; v < OS_RECEIVERS * nm; v++)
		succ[v] = -1;
	for (int i = 0; i < OS_RECEIVERS; i++) {
		int64_t last[OS_SENDERS + 1];

		for (int k = 0; k <= OS_SENDERS; k++)
			last[k] = -1;
		ASSERT_EQ(log[i]->n, expect[i]);
		for (int64_t j = 0; j < log[i]->n; j++) {
			uint64_t e = log[i]->ev[j];
			uint32_t tag = e >> 32, q = (uint32_t)e;

			/* addressed to this receiver, each sender's in order, once */
			ASSERT_TRUE(tag >= 1 && tag <= OS_SENDERS && q < n);
			ASSERT_TRUE(os_dests(tag - 1, q) >> i & 1);
			ASSERT_GT((int64_t)q, last[tag]);
			last[tag] = q;
			if (j > 0) {
				uint64_t p = log[i]->ev[j - 1];
				int64_t u = ((p >> 32) - 1) * n + (uint32_t)p, v = (int64_t)(tag - 1) * n + q;

				succ[i * nm + u] = v;
				indeg[v]++;
			}
		}
	}
	/* Kahn's algorithm over the union of the logs' "directly before" edges */
	for (int64_t v = 0; v < nm; v++)
		if (!indeg[v])
			order[n_done++] = v;
	while (head < n_done) {
		int64_t u = order[head++];

		for (int i = 0; i < OS_RECEIVERS; i++) {
			int64_t w = succ[i * nm + u];

			if (w >= 0 && --indeg[w] == 0)
				order[n_done++] = w;
		}
	}
	if (n_done != nm)
		t_fail(__FILE__, __LINE__, "the receivers' orders form a cycle (%lld of %lld ordered)",
		       (long long)n_done, (long long)nm);
	printf("    note: %lld messages, %lld deliveries\n", (long long)nm,
	       (long long)(expect[0] + expect[1] + expect[2] + expect[3] + expect[4]));
	free(succ);
	free(indeg);
	free(order);
}
