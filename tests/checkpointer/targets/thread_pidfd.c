/* A pidfd of one of the process's own threads (pidfd_open with PIDFD_THREAD): usage
 * `thread_pidfd OUTFILE`. The main thread signals the worker through it every 5 ms
 * (pidfd_send_signal with PIDFD_SIGNAL_THREAD: SIGUSR1 to that thread alone), checks
 * that the worker's handler ran in the worker (it records gettid()) and that the signals
 * keep arriving, and appends "<n> <pid> ok" to OUTFILE; a mismatch writes BAD and exits 1. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif
#define PIDFD_SIGNAL_THREAD 1

static int out;
static volatile pid_t worker_tid, handled_in;
static volatile unsigned long handled;

static void bad(const char *what, long value)
{
    char line[128];
    int len = snprintf(line, sizeof line, "BAD %s (%ld)\n", what, value);
    write(out, line, len);
    exit(1);
}

static void on_usr1(int sig)
{
    (void)sig;
    handled_in = syscall(SYS_gettid);
    handled++;
}

static void *worker(void *arg)
{
    (void)arg;
    worker_tid = syscall(SYS_gettid);
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t thread;
    sigset_t usr1;
    char line[64];
    struct timespec ts = {0, 5 * 1000 * 1000};
    if (argc != 2)
        return 2;
    out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    signal(SIGUSR1, on_usr1);
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_create(&thread, NULL, worker, NULL);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);        /* only the worker takes it */
    while (!worker_tid)
        nanosleep(&ts, NULL);
    int pidfd = syscall(SYS_pidfd_open, worker_tid, PIDFD_THREAD);
    if (pidfd < 0)
        bad("pidfd_open", pidfd);
    for (unsigned long n = 1;; n++) {
        unsigned long before = handled;
        if (syscall(SYS_pidfd_send_signal, pidfd, SIGUSR1, NULL, PIDFD_SIGNAL_THREAD) != 0)
            bad("pidfd_send_signal", -1);
        for (int i = 0; handled == before; i++) {
            if (i == 1000)
                bad("the signal did not arrive", (long)before);
            nanosleep(&ts, NULL);
        }
        if (handled_in != worker_tid)
            bad("the signal arrived in another thread", handled_in);
        int len = snprintf(line, sizeof line, "%lu %d ok\n", n, getpid());
        write(out, line, len);
        nanosleep(&ts, NULL);
    }
}
