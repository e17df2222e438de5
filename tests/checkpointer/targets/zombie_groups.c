/* Zombies keep their process groups: usage `zombie_groups OUTFILE`.
 * Two zombie children, never waited for: one that made its own process group (it led
 * it), and one that a child made with CLONE_PARENT inside that child's own group before the
 * child exited and was reaped (a group whose leader is gone: zdtm zombie01). Forever:
 * checks both are still zombies in those groups (getpgid works on a zombie; a shell's job
 * table goes by it), appends a fixed-width line "<n> <pid> ok" to OUTFILE and sleeps 5 ms;
 * a mismatch writes a BAD line and exits 1. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int fd;

static void check(pid_t zombie, pid_t group) {
    siginfo_t info = {0};
    pid_t got = getpgid(zombie);
    if (waitid(P_PID, zombie, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != zombie || got != group) {
        char line[96];
        int len = snprintf(line, sizeof line, "BAD zombie %d: group %d, not %d (waited: %d)\n", zombie, got, group,
                           info.si_pid);
        write(fd, line, len);
        exit(1);
    }
}

int main(int argc, char **argv) {
    fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int pipes[2];
    if (fd < 0 || pipe(pipes) != 0) return 2;
    pid_t leader = fork();
    if (leader == 0) {
        setpgid(0, 0);
        _exit(0);
    }
    pid_t gone = fork();
    if (gone == 0) {            /* makes a group, leaves a sibling in it, exits */
        setpgid(0, 0);
        pid_t sibling = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
        if (sibling == 0)
            _exit(0);
        write(pipes[1], &sibling, sizeof sibling);
        _exit(0);
    }
    pid_t sibling;
    if (read(pipes[0], &sibling, sizeof sibling) != sizeof sibling || waitpid(gone, NULL, 0) != gone) return 2;
    siginfo_t info;
    if (waitid(P_PID, leader, &info, WEXITED | WNOWAIT) != 0 || waitid(P_PID, sibling, &info, WEXITED | WNOWAIT) != 0)
        return 2;
    pid_t pid = getpid();
    for (unsigned long n = 1;; n++) {
        check(leader, leader);
        check(sibling, gone);
        char line[64];
        int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n, (int)pid);
        if (write(fd, line, len) != len) return 3;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
