/* Threads holding different seccomp filters of their own: usage `seccomp_threads OUTFILE`.
 * Worker A installs (without TSYNC: for itself only) a filter that makes getppid fail with
 * EPERM; worker B one that makes getsid fail with EACCES; the main thread has none. Every
 * millisecond each thread calls both and checks it gets what its own filter says (A:
 * getppid EPERM, getsid allowed; B: the reverse; main: both allowed). The main thread
 * appends "<n> <pid> ok" every 5 ms and every 100 lines checks that both workers went on
 * checking. A mismatch (a filter lost, or one thread's filter given to another) writes
 * "BAD ..." and exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

static int out;
static volatile unsigned long rounds[2];

static void bad(const char *who, const char *what, long result, int err)
{
    char line[160];
    int len = snprintf(line, sizeof line, "BAD %s: %s gave %ld (errno %d)\n", who, what, result, err);
    write(out, line, len);
    exit(1);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {0, ms * 1000 * 1000};
    nanosleep(&ts, NULL);
}

/* Make syscall `nr` fail with `err` in the calling thread only. */
static void deny(int nr, int err)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof code / sizeof code[0], code};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
        bad("setup", "seccomp", -1, errno);
}

/* Check that getppid fails with `ppid_err` (0: succeeds) and getsid with `sid_err`. */
static void check(const char *who, int ppid_err, int sid_err)
{
    errno = 0;
    long r = syscall(SYS_getppid);
    if (ppid_err ? !(r == -1 && errno == ppid_err) : r <= 0)
        bad(who, "getppid", r, errno);
    errno = 0;
    r = syscall(SYS_getsid, 0);
    if (sid_err ? !(r == -1 && errno == sid_err) : r <= 0)
        bad(who, "getsid", r, errno);
}

static void *worker(void *arg)
{
    long i = (long)arg;
    if (i == 0)
        deny(SYS_getppid, EPERM);
    else
        deny(SYS_getsid, EACCES);
    for (;;) {
        if (i == 0)
            check("thread A", EPERM, 0);
        else
            check("thread B", 0, EACCES);
        rounds[i]++;
        sleep_ms(1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t threads[2];
    unsigned long seen[2] = {0, 0};
    char line[64];
    if (argc != 2)
        return 2;
    out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (long i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, worker, (void *)i);
    for (unsigned long n = 1;; n++) {
        check("main thread", 0, 0);
        if (n % 100 == 0) {
            for (int i = 0; i < 2; i++) {
                if (rounds[i] == seen[i])
                    bad(i ? "thread B" : "thread A", "progress", (long)rounds[i], 0);
                seen[i] = rounds[i];
            }
        }
        int len = snprintf(line, sizeof line, "%lu %d ok\n", n, getpid());
        write(out, line, len);
        sleep_ms(5);
    }
}
