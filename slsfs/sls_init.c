/* sls-init: PID 1 of a persistence group started with `sls run --init`.
 *
 * Why: PID 1 of a PID namespace ending kills every other process in it, so a program
 * that daemonizes (forks, lets the parent exit) would take its own daemon down with it.
 * This init runs the command as its child and stays until no process of the namespace
 * is left: orphans are re-parented to it, and it reaps them. Like docker's --init.
 *
 *   sls-init [--root DIR] -- CMD ARGS...
 *
 * --root: chroot(DIR) and chdir("/") first (the init's own executable stays outside).
 * Exit status: the command's (128 + signal if a signal ended it), once every process
 * has ended. SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to the init are
 * passed on to every other process of the namespace (as PID 1 it would otherwise
 * ignore them). It is checkpointed and restored with the group like any process: its
 * state is a pid and a status, and it sleeps in wait4().
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

static void pass_on(int signo)
{
    kill(-1, signo);   /* every process of the namespace but this one */
}

int main(int argc, char **argv)
{
    int first = 1;
    if (first + 1 < argc && strcmp(argv[first], "--root") == 0) {
        if (chroot(argv[first + 1]) != 0 || chdir("/") != 0) {
            fprintf(stderr, "sls-init: cannot enter root %s: %s\n", argv[first + 1], strerror(errno));
            return 126;
        }
        first += 2;
    }
    if (first < argc && strcmp(argv[first], "--") == 0)
        first++;
    if (first >= argc) {
        fprintf(stderr, "usage: sls-init [--root DIR] -- CMD ARGS...\n");
        return 2;
    }

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = pass_on;
    action.sa_flags = SA_RESTART;
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaction(forwarded[i], &action, NULL);

    pid_t command = fork();
    if (command < 0) {
        fprintf(stderr, "sls-init: fork: %s\n", strerror(errno));
        return 126;
    }
    if (command == 0) {
        action.sa_handler = SIG_DFL;
        for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
            sigaction(forwarded[i], &action, NULL);
        execvp(argv[first], argv + first);
        fprintf(stderr, "sls-init: cannot run %s: %s\n", argv[first], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }

    int result = 0;
    for (;;) {
        int status;
        pid_t pid = wait(&status);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            break;   /* ECHILD: nothing is left */
        }
        if (pid == command)
            result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return result;
}
