/* SPDX-License-Identifier: MIT */
/*
 * The floor of the pingpong benchmark under the peer-fd design
 * (docs/design.md, fixed decision 2): the same cross-process round trip with
 * every system call a bus1 hop makes and none of the bus's own work.
 *
 * A peer fd is an AF_UNIX datagram socket that is readable exactly while
 * its queue is non-empty, so a bus1 hop is: poll() on the own socket, a
 * recvfrom() that drains the readiness token (the RECV that empties the
 * queue), the payload read out of a shared mapping (the pool), and a
 * send() of an empty token through a connected datagram socket (the SEND
 * that makes the other queue non-empty) after the payload was copied into
 * the other side's shared buffer. Here that is all a hop does: no lock,
 * no allocation, no accounting.
 *
 * The same round trip with the token going through a pipe instead is
 * measured too: a pipe wakes its reader faster than a datagram socket, but
 * cannot be a peer fd (it cannot report POLLHUP while it is open for both
 * reading and writing, nor carry SCM_RIGHTS for the fd vault), so it shows
 * what another readiness object could gain at best.
 *
 * Baseline in the same run, alternating rounds: the UDS ping-pong of
 * bench/pingpong.c (AF_UNIX SOCK_SEQPACKET, poll() + recv() + write()).
 * The ratio socket floor/UDS is the lowest ratio bench/pingpong can reach
 * with this readiness design, however fast the engine.
 *
 * Needs no shim: bench/bin/floor-pingpong [round-trips]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NAME "floor-pingpong"
#include "common.h"

#define ROUNDS 7

/*
 * How a hop is made: a token through the peer socket, a token through a
 * pipe (for comparison), or the whole message over the UDS baseline.
 */
enum kind { SOCKET, PIPE, UDS, NKINDS };

/* One side: the descriptor it polls and drains, the one it rings the
 * other side through, and the two payload buffers in the shared mapping. */
struct token_end {
	int kind;
	int own, ring;
	const uint8_t *inbox;
	uint8_t *outbox;
};

static void bind_at(int fd, const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(a.sun_path))
		fail("socket path length", strlen(path), sizeof(a.sun_path) - 1);
	strcpy(a.sun_path, path);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind");
}

static int connected_to(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		die("socket");
	strcpy(a.sun_path, path);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	return fd;
}

static void hop_send(void *end, const uint8_t *buf)
{
	struct token_end *e = end;
	ssize_t r;

	if (e->kind == UDS) {
		if (write(e->ring, buf, MSG_SIZE) != MSG_SIZE)
			die("write");
		return;
	}
	memcpy(e->outbox, buf, MSG_SIZE);
	if (e->kind == PIPE)
		r = write(e->ring, "", 1) == 1 ? 0 : -1;
	else
		r = send(e->ring, NULL, 0, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (r < 0)
		die("send token");
}

static void hop_recv(void *end, uint8_t *buf)
{
	struct token_end *e = end;
	ssize_t r;
	char c;

	wait_in(e->own);
	if (e->kind == UDS) {
		if (recv(e->own, buf, MSG_SIZE, 0) != MSG_SIZE)
			die("recv");
		return;
	}
	if (e->kind == PIPE)
		r = read(e->own, &c, 1);
	else
		r = recvfrom(e->own, &c, sizeof(c), MSG_DONTWAIT, NULL, NULL);
	if (r < 0)
		die("drain token");
	memcpy(buf, e->inbox, MSG_SIZE);
}

/* The child echoes n messages of each kind per round. */
static void echo(const struct hop *h, long n, int uds)
{
	uint64_t want[NKINDS] = { 0 };
	uint8_t buf[1];

	for (int r = 0; r < ROUNDS; r++)
		for (int k = 0; k < NKINDS; k++)
			for (long i = 0; i < n; i++)
				echo_one(&h[k], want[k]++);
	/* Stay until the parent has its last reply (it closes its end then):
	 * a peer gone early would make its poll() report POLLHUP. */
	if (recv(uds, buf, sizeof(buf), 0) != 0)
		die("recv end of run");
	exit(0);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	char dir[] = "/tmp/bus1-floor.XXXXXX", pa[64], pb[64];
	double t[NKINDS][ROUNDS], ratio[NKINDS][ROUNDS];
	struct token_end parent[NKINDS], child[NKINDS];
	static const char *const who[NKINDS] = { "socket", "pipe", "UDS" };
	struct hop to_child[NKINDS], to_parent[NKINDS];
	uint64_t seq[NKINDS] = { 0 };
	int sp[2], p1[2], p2[2];
	uint8_t *shm;
	pid_t pid;

	if (n <= 0)
		n = 1;
	if (!mkdtemp(dir))
		die("mkdtemp");
	snprintf(pa, sizeof(pa), "%s/a", dir);
	snprintf(pb, sizeof(pb), "%s/b", dir);
	shm = mmap(NULL, 2 * NKINDS * MSG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED)
		die("mmap");
	/* sockets as the shim makes them: bound peers, connected ringers */
	parent[SOCKET].own = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	child[SOCKET].own = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (parent[SOCKET].own < 0 || child[SOCKET].own < 0)
		die("socket");
	bind_at(parent[SOCKET].own, pa);
	bind_at(child[SOCKET].own, pb);
	parent[SOCKET].ring = connected_to(pb);
	child[SOCKET].ring = connected_to(pa);
	/* connected now: the names are not needed any more */
	unlink(pa);
	unlink(pb);
	rmdir(dir);
	if (pipe2(p1, O_CLOEXEC | O_NONBLOCK) < 0 || pipe2(p2, O_CLOEXEC | O_NONBLOCK) < 0)
		die("pipe");
	parent[PIPE].own = p1[0];
	child[PIPE].ring = p1[1];
	child[PIPE].own = p2[0];
	parent[PIPE].ring = p2[1];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		die("socketpair");
	parent[UDS].own = parent[UDS].ring = sp[0];
	child[UDS].own = child[UDS].ring = sp[1];
	for (int k = 0; k < NKINDS; k++) {
		parent[k].kind = child[k].kind = k;
		parent[k].outbox = shm + 2 * k * MSG_SIZE;
		child[k].inbox = parent[k].outbox;
		child[k].outbox = parent[k].outbox + MSG_SIZE;
		parent[k].inbox = child[k].outbox;
		to_child[k] = (struct hop){ hop_send, hop_recv, &parent[k], who[k] };
		to_parent[k] = (struct hop){ hop_send, hop_recv, &child[k], who[k] };
	}
	signal(SIGPIPE, SIG_IGN);

	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(sp[0]);
		echo(to_parent, n, sp[1]);
	}
	close(sp[1]);
	for (int r = 0; r < ROUNDS; r++) {
		for (int k = 0; k < NKINDS; k++)
			t[k][r] = time_round_trips(&to_child[k], n, &seq[k]);
		for (int k = 0; k < NKINDS; k++)
			ratio[k][r] = t[k][r] / t[UDS][r];
	}
	close(sp[0]);
	reap(pid, "echo");

	for (int k = 0; k < NKINDS; k++) {
		qsort(t[k], ROUNDS, sizeof(double), cmp_double);
		qsort(ratio[k], ROUNDS, sizeof(double), cmp_double);
	}
	printf("pingpong floor: bus1's system calls per hop, no engine, 1 KiB, %ld round trips x %d rounds (wall time per round trip, median)\n",
	       n, ROUNDS);
	printf("  floor poll+recvfrom+send, peer socket : %8.2f us\n", t[SOCKET][ROUNDS / 2] / 1e3);
	printf("  floor poll+read+write, pipe           : %8.2f us\n", t[PIPE][ROUNDS / 2] / 1e3);
	printf("  UDS   poll+recv+write (SEQPACKET)     : %8.2f us\n", t[UDS][ROUNDS / 2] / 1e3);
	printf("  ratio socket floor/UDS                : %8.3f (min %.3f, max %.3f)\n",
	       ratio[SOCKET][ROUNDS / 2], ratio[SOCKET][0], ratio[SOCKET][ROUNDS - 1]);
	printf("  ratio pipe floor/UDS                  : %8.3f (min %.3f, max %.3f)\n",
	       ratio[PIPE][ROUNDS / 2], ratio[PIPE][0], ratio[PIPE][ROUNDS - 1]);
	return 0;
}
