/* A parent that makes children with clone(CLONE_VFORK | CLONE_PTRACE) in a loop, as
 * stress-ng --clone does (usage `vfork_ptrace_loop OUTFILE COUNT`): each child exits at
 * once. While a freeze has the parent seized, the kernel attaches such a child to the
 * tracer, stopped, and the parent waits inside clone() until it runs. The parent writes
 * "ready" to OUTFILE once the loop runs and "done" after COUNT children. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char stack[64 * 1024];

static int child(void *arg)
{
    (void)arg;
    _exit(0);
}

static void say(const char *path, const char *what, int length)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    write(fd, what, length);
    close(fd);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    long count = atol(argv[2]);
    for (long n = 0; n < count; n++) {
        pid_t pid = clone(child, stack + sizeof stack, CLONE_VFORK | CLONE_PTRACE | SIGCHLD, NULL);
        if (pid < 0)
            return 1;
        waitpid(pid, NULL, __WALL);
        if (n == 10)
            say(argv[1], "ready", 5);
    }
    say(argv[1], "done", 4);
    return 0;
}
