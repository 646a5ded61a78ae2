/* Harness self-check: runs without bus1 at all. */
#include <sys/wait.h>

#include "bus1-util.h"

TEST(harness_domain_is_set)
{
	ASSERT_TRUE(getenv("BUS1_DOMAIN") != NULL);
	ASSERT_EQ(strcmp(getenv("BUS1_DOMAIN"), t_domain()), 0);
}

T_CHILD(echo_status)
{
	return argc == 1 ? atoi(argv[0]) : 99;
}

TEST(harness_exec_child)
{
	pid_t pid = fork();
	int status;

	ASSERT_GE(pid, 0);
	if (pid == 0) {
		execl(t_self_exe(), t_self_exe(), "--child", "echo_status", "7", (char *)NULL);
		_exit(98);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 7);
}
