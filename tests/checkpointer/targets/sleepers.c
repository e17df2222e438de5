/* Two processes asleep in system calls: usage `sleepers OUTFILE`.
 * The parent forks a child that blocks in read() on an empty pipe, then blocks in
 * wait4() for it. On SIGUSR1 the parent's handler (SA_RESTART) writes one byte into
 * the pipe; the child reads it, appends "child read x", exits with status 5; the
 * parent's wait4 returns, it appends "parent waited 5" and exits 0. Anything else
 * appends BAD. Both append "asleep <pid>" once before sleeping. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int out, pipefd[2];

static void say(const char *text) { write(out, text, strlen(text)); }

static void on_usr1(int sig) { write(pipefd[1], "x", 1); }

int main(int argc, char **argv) {
    out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (pipe(pipefd)) return 2;
    pid_t child = fork();
    if (child == 0) {
        close(pipefd[1]);
        char line[64], c = 0;
        snprintf(line, sizeof line, "asleep %d\n", (int)getpid());
        say(line);
        ssize_t got = read(pipefd[0], &c, 1);
        if (got == 1)
            snprintf(line, sizeof line, "child read %c\n", c);
        else
            snprintf(line, sizeof line, "BAD child read %d\n", (int)got);
        say(line);
        _exit(5);
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1, sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    char line[64];
    snprintf(line, sizeof line, "asleep %d\n", (int)getpid());
    say(line);
    int status = 0;
    pid_t got = wait4(child, &status, 0, NULL);
    if (got != child || !WIFEXITED(status)) {
        snprintf(line, sizeof line, "BAD wait4 %d status %x\n", (int)got, status);
        say(line);
        return 1;
    }
    snprintf(line, sizeof line, "parent waited %d\n", WEXITSTATUS(status));
    say(line);
    return 0;
}
