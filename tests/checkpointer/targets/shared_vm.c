/* A parent and a child that share one address space without being threads of one process
 * (clone with CLONE_VM, as stress-ng --vm-rw does): `shared_vm OUTFILE`; both sleep, the
 * parent writes "ready" once the child runs. */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static char stack[65536];

static int sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

int main(int argc, char **argv)
{
	FILE *out = fopen(argv[1], "w");
	if (!out || clone(sleeper, stack + sizeof stack, CLONE_VM | SIGCHLD, NULL) < 0)
		return 1;
	fprintf(out, "ready\n");
	fflush(out);
	for (;;)
		pause();
}
