/* A self-checking multi-threaded worker: usage `threads OUTFILE`.
 * Four workers, each with a thread-local counter and its own tid, add to shared
 * counters under a mutex and sleep 1 ms. The main thread appends a line
 * "<n> <pid> ok" every 5 ms (after checking the shared total under the mutex),
 * and every 200 lines checks that every worker made progress. Any mismatch
 * (tid changed, TLS lost, total wrong, a worker stalled) writes BAD and exits 1. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 4
static int out;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long counts[WORKERS], total;
static __thread unsigned long mine;
static __thread pid_t my_tid;

static void bad(const char *what) {
    char line[128];
    int len = snprintf(line, sizeof line, "BAD %s\n", what);
    write(out, line, len);
    exit(1);
}

static void sleep_ms(long ms) {
    struct timespec ts = {0, ms * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void *worker(void *arg) {
    long i = (long)arg;
    my_tid = syscall(SYS_gettid);
    for (;;) {
        if (syscall(SYS_gettid) != my_tid) bad("tid changed");
        pthread_mutex_lock(&lock);
        if (counts[i] != mine) bad("thread-local counter lost");
        counts[i]++, total++, mine++;
        pthread_mutex_unlock(&lock);
        sleep_ms(1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pthread_t threads[WORKERS];
    unsigned long seen[WORKERS] = {0};
    for (long i = 0; i < WORKERS; i++) pthread_create(&threads[i], NULL, worker, (void *)i);
    pid_t pid = getpid();
    for (unsigned long n = 1;; n++) {
        pthread_mutex_lock(&lock);
        unsigned long sum = 0;
        for (int i = 0; i < WORKERS; i++) sum += counts[i];
        if (sum != total) bad("total");
        if (n % 200 == 0) {
            for (int i = 0; i < WORKERS; i++) {
                if (counts[i] == seen[i]) bad("worker stalled");
                seen[i] = counts[i];
            }
        }
        pthread_mutex_unlock(&lock);
        char line[64];
        int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n, (int)pid);
        if (write(out, line, len) != len) return 3;
        sleep_ms(5);
    }
}
