/* A self-checking process tree joined by a pipe: usage `tree OUTFILE`.
 * The parent (a session leader) forks a child that names itself "tree-zombie" and exits
 * with status 7, never reaped (a zombie: `ps` shows that name), and a reader child in its own process group. The parent writes
 * 0, 1, 2, ... as 4-byte numbers into the pipe as fast as it can, so the pipe is
 * always full (data in flight, the parent asleep in write). The reader checks the
 * numbers, its parent, group and session, and appends "<n> <pid> ok" every 5 ms.
 * The parent checks its zombie (waitid WNOWAIT) and its session every 1024 numbers.
 * Any mismatch appends a BAD line and exits 1. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int out;

static void bad(const char *what) {
    char line[128];
    int len = snprintf(line, sizeof line, "BAD %s (pid %d)\n", what, (int)getpid());
    write(out, line, len);
    exit(1);
}

int main(int argc, char **argv) {
    out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    setsid(); /* fails harmlessly when already a session leader */
    pid_t parent = getpid();
    pid_t zombie = fork();
    if (zombie == 0) {
        prctl(PR_SET_NAME, "tree-zombie");
        _exit(7);
    }
    siginfo_t first;
    if (waitid(P_PID, zombie, &first, WEXITED | WNOWAIT) != 0) bad("zombie never exited");
    int p[2];
    if (pipe(p)) bad("pipe");
    pid_t child = fork();
    if (child == 0) {
        close(p[1]);
        setpgid(0, 0);
        unsigned int expect = 0, got;
        for (unsigned long n = 1;; n++) {
            if (read(p[0], &got, 4) != 4) bad("short read");
            if (got != expect++) bad("pipe data out of order");
            if (getppid() != parent) bad("parent changed");
            if (getpgrp() != getpid()) bad("process group changed");
            if (getsid(0) != parent) bad("session changed");
            char line[64];
            int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n, (int)getpid());
            if (write(out, line, len) != len) return 3;
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    close(p[0]);
    for (unsigned int k = 0;; k++) {
        if (write(p[1], &k, 4) != 4) bad("write");
        if (k % 1024 == 0) {
            siginfo_t info;
            memset(&info, 0, sizeof info);
            if (waitid(P_PID, zombie, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != zombie ||
                info.si_status != 7)
                bad("zombie lost");
            if (getsid(0) != getpid()) bad("parent session changed");
        }
    }
}
