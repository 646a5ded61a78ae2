/* SPDX-License-Identifier: MIT */
/*
 * Minimal test harness for the C test suite.
 *
 * Each test file defines cases with TEST(name) { ... }. The runner (harness.c)
 * executes every case in a forked child with its own fresh bus1 domain
 * (BUS1_DOMAIN points at a new, not yet existing directory), so cases cannot
 * see each other's peers, and a crash or hang fails only that case.
 *
 * Assertions print where and why they failed and end the case at once.
 * A case that cannot run here (it needs root, say) calls t_skip() with the
 * reason: it is reported as skipped, never as passed.
 *
 * Cases cite the behaviour they check by section of docs/reference.md:
 * "§2.8 step 9.4" is step 9.4 of section 2.8, "A.3" its appendix.
 */
#ifndef BUS1_TEST_HARNESS_H
#define BUS1_TEST_HARNESS_H

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void (*t_fn)(void);

void t_register(const char *name, t_fn fn, const char *file, unsigned timeout_s);
void t_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 3, 4)));
/*
 * Ends the case as skipped, with the reason why it cannot run here (it needs
 * root, say): the runner reports it as such, never as passed.
 */
void t_skip(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* The domain directory of the running case (also in $BUS1_DOMAIN). */
const char *t_domain(void);
/*
 * The directory the bus keeps the running case's domain files in: the
 * domain directory itself on a memory file system, else the directory its
 * `memory` link names.
 */
const char *t_memory_dir(void);
/* The same for the domain directory `domain`. */
const char *t_memory_dir_of(const char *domain);
/* A fresh, unused domain path (for cases that need a second, isolated bus). */
const char *t_new_domain(const char *tag);

/*
 * Exec entry points: T_CHILD(name) { ... return status; } defines code a case
 * can run in a freshly exec'd copy of the test binary:
 *   execl(t_self_exe(), t_self_exe(), "--child", "name", args..., NULL);
 * The entry receives the arguments after its name and its return value
 * becomes the exit status.
 */
typedef int (*t_child_fn)(int argc, char **argv);
void t_register_child(const char *name, t_child_fn fn);
/*
 * BUS1_TEST_SCALE=N (default 1): long-running cases repeat their loops N
 * times, and every case's timeout is N times longer. CI runs the suite at
 * scale 1; larger scales turn the wake-up stress into minutes-long runs.
 */
unsigned t_scale(void);
/* Absolute path of the running test binary (valid after exec too). */
const char *t_self_exe(void);

#define T_CHILD(name)								\
	static int T_CAT(t_child_, name)(int argc, char **argv);		\
	__attribute__((constructor)) static void T_CAT(t_creg_, name)(void)	\
	{ t_register_child(#name, T_CAT(t_child_, name)); }			\
	static int T_CAT(t_child_, name)(int argc, char **argv)

#define T_CAT_(a, b) a##b
#define T_CAT(a, b) T_CAT_(a, b)

/* TEST(name): a case with the default timeout (20 s). */
#define TEST(name) TEST_TIMEOUT(name, 20)
/* TEST_TIMEOUT(name, seconds): a case with its own timeout. */
#define TEST_TIMEOUT(name, secs)						\
	static void T_CAT(test_, name)(void);					\
	__attribute__((constructor)) static void T_CAT(t_reg_, name)(void)	\
	{ t_register(#name, T_CAT(test_, name), __FILE__, (secs)); }		\
	static void T_CAT(test_, name)(void)

#define ASSERT_TRUE(cond)							\
	do { if (!(cond)) t_fail(__FILE__, __LINE__,				\
			"assertion failed: %s (errno=%d %s)", #cond,		\
			errno, strerror(errno)); } while (0)

#define ASSERT_FALSE(cond) ASSERT_TRUE(!(cond))

#define ASSERT_CMP(a, op, b)							\
	do {									\
		long long t_a_ = (long long)(a), t_b_ = (long long)(b);	\
		if (!(t_a_ op t_b_))						\
			t_fail(__FILE__, __LINE__,				\
				"%s %s %s: %lld (0x%llx) vs %lld (0x%llx)",	\
				#a, #op, #b, t_a_, (unsigned long long)t_a_,	\
				t_b_, (unsigned long long)t_b_);		\
	} while (0)

#define ASSERT_EQ(a, b) ASSERT_CMP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_CMP(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_CMP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_CMP(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_CMP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_CMP(a, >=, b)

/* Unsigned 64-bit comparison (IDs, offsets). */
#define ASSERT_EQ_U64(a, b)							\
	do {									\
		uint64_t t_a_ = (uint64_t)(a), t_b_ = (uint64_t)(b);		\
		if (t_a_ != t_b_)						\
			t_fail(__FILE__, __LINE__,				\
				"%s == %s: 0x%" PRIx64 " vs 0x%" PRIx64,	\
				#a, #b, t_a_, t_b_);				\
	} while (0)

/* expr must evaluate to -1 with errno == e (for raw syscalls). */
#define ASSERT_ERRNO(expr, e)							\
	do {									\
		errno = 0;							\
		long t_r_ = (long)(expr);					\
		int t_e_ = errno;						\
		if (t_r_ != -1 || t_e_ != (e))					\
			t_fail(__FILE__, __LINE__,				\
				"%s: expected -1/%s(%d), got %ld/%s(%d)",	\
				#expr, strerror(e), (e), t_r_,			\
				strerror(t_e_), t_e_);				\
	} while (0)

/* expr must evaluate to 0 (for raw syscalls returning 0 or -1). */
#define ASSERT_OK(expr)								\
	do {									\
		errno = 0;							\
		long t_r_ = (long)(expr);					\
		if (t_r_ != 0)							\
			t_fail(__FILE__, __LINE__,				\
				"%s: expected 0, got %ld (errno %d %s)",	\
				#expr, t_r_, errno, strerror(errno));		\
	} while (0)

#define ASSERT_MEMEQ(a, b, n)							\
	do { if (memcmp((a), (b), (n)) != 0)					\
		t_fail(__FILE__, __LINE__, "memory differs: %s vs %s (%zu bytes)", \
			#a, #b, (size_t)(n)); } while (0)

#endif /* BUS1_TEST_HARNESS_H */
