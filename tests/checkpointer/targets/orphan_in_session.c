/* An orphan in a session whose leader lives on: usage `orphan_in_session OUTFILE [zombie]`.
 * The root is a child subreaper. Its child L makes a session (setsid), forks A, which forks
 * B and exits: B is re-parented to the root (the nearest subreaper), and stays in L's
 * session and process group, which its new parent is not in (zdtm session00's DETACH case,
 * as under a namespace's init). With `zombie`, L then exits too, never reaped: B's session
 * and group are led by a zombie (zdtm session03). Forever, B checks its parent, session and
 * group, appends a line "<n> <pid> ok" to OUTFILE and sleeps 5 ms; a mismatch writes a BAD
 * line and exits 1. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t root = getpid();
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    if (fork() == 0) {
        pid_t leader = setsid();
        if (fork() == 0) {
            if (fork() != 0)
                _exit(0);           /* A: B's first parent, gone */
            while (getppid() != root)
                usleep(1000);
            struct timespec ts = {0, 5 * 1000 * 1000};
            char line[128];
            for (unsigned long n = 1;; n++) {
                if (getppid() != root || getsid(0) != leader || getpgid(0) != leader) {
                    int len = snprintf(line, sizeof line, "BAD parent %d (not %d), session %d, group %d (not %d)\n",
                                       getppid(), root, getsid(0), getpgid(0), leader);
                    write(fd, line, len);
                    exit(1);
                }
                int len = snprintf(line, sizeof line, "%lu %d ok\n", n, getpid());
                write(fd, line, len);
                nanosleep(&ts, NULL);
            }
        }
        wait(NULL);
        if (argc > 2)
            _exit(0);               /* L: a zombie, the root never waits */
        for (;;)
            pause();
    }
    for (;;)
        pause();
}
