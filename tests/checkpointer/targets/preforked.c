/* A pre-forking server's memory: usage `preforked OUTFILE [HEAP_MIB] [WORKERS]`.
 * The master fills a heap (private anonymous memory) with a known pattern, then forks
 * WORKERS workers that share it copy-on-write; worker 0 writes its first page. It writes
 * "heap ADDRESS SIZE", one "worker PID" line each, then "ready" (once worker 0 has written
 * its page: it says so through a pipe, closed by all after). At each SIGUSR1 the
 * master and every worker check the heap (the pattern; worker 0's first page its own)
 * and append "ok PID" (or "BAD PID ...") to OUTFILE. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static unsigned char *heap;
static size_t size;
static int out, mine;       /* mine: worker 0, whose first page differs */
static volatile sig_atomic_t asked;

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7 + 3 + (i >> 12)); }

static void on_usr1(int signo) { (void)signo; asked = 1; }

static void say(const char *line) { write(out, line, strlen(line)); }

static void check(void) {
    char line[96];
    for (size_t i = 0; i < size; i++) {
        unsigned char want = (mine && i < 4096) ? 0x5a : pattern(i);
        if (heap[i] != want) {
            snprintf(line, sizeof line, "BAD %d at %zu\n", getpid(), i);
            say(line);
            return;
        }
    }
    snprintf(line, sizeof line, "ok %d\n", getpid());
    say(line);
}

static void serve(void) {
    sigset_t none;
    sigemptyset(&none);
    for (;;) {
        sigsuspend(&none);
        if (asked) {
            asked = 0;
            check();
        }
    }
}

int main(int argc, char **argv) {
    out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    size = (size_t)(argc > 2 ? atol(argv[2]) : 16) << 20;
    int workers = argc > 3 ? atoi(argv[3]) : 3;
    heap = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (out < 0 || heap == MAP_FAILED) return 2;
    for (size_t i = 0; i < size; i++) heap[i] = pattern(i);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    signal(SIGUSR1, on_usr1);
    char line[96];
    snprintf(line, sizeof line, "heap %lx %zu\n", (unsigned long)heap, size);
    say(line);
    int written[2];
    if (pipe(written) < 0) return 2;
    for (int n = 0; n < workers; n++) {
        pid_t child = fork();
        if (child == 0) {
            if (n == 0) {
                mine = 1;
                memset(heap, 0x5a, 4096);
                if (write(written[1], "w", 1) != 1) return 2;
            }
            close(written[0]);
            close(written[1]);
            serve();
        }
        snprintf(line, sizeof line, "worker %d\n", child);
        say(line);
    }
    char done;
    if (read(written[0], &done, 1) != 1) return 2;
    close(written[0]);
    close(written[1]);
    say("ready\n");
    serve();
}
