/* A parent and a child that share one fd table (clone with CLONE_FILES, as fork otherwise):
 * `shared_fd_table OUTFILE`; both sleep, the parent writes "ready" once the child runs. */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	FILE *out = fopen(argv[1], "w");
	long child = syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
	if (child < 0)
		return 1;
	if (child == 0)
		for (;;)
			pause();
	fprintf(out, "ready\n");
	fflush(out);
	for (;;)
		pause();
}
