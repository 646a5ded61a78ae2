/* SPDX-License-Identifier: MIT */
/*
 * Cases with a known outcome, for tests/sh/harness.sh: the runner must
 * report each as what it is, and a skip never as a pass.
 */
#include "harness.h"

TEST(passes)
{
	ASSERT_EQ(1, 1);
}

TEST(fails)
{
	ASSERT_EQ(1, 2);
}

TEST(skips)
{
	t_skip("no widget here");
	ASSERT_EQ(1, 2);
}

/* Exits with the skip status without saying why: that is a failure. */
TEST(exits_77_without_a_reason)
{
	_exit(77);
}
