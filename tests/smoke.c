/* Harness self-check: runs without bus1 at all. */
#include "bus1-util.h"

TEST(harness_domain_is_set)
{
	ASSERT_TRUE(getenv("BUS1_DOMAIN") != NULL);
	ASSERT_EQ(strcmp(getenv("BUS1_DOMAIN"), t_domain()), 0);
}
