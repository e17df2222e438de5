/* Forks children that check memory: usage `forker OUTFILE [HEAP_MIB]`.
 * Fills a heap with a known pattern, then forever: forks a child that checks the
 * whole heap and exits 0 (or 1 on a mismatch), waits for it, and appends a line
 * "<n> <pid> ok" (or BAD). After a lazy restore, the first children are forked while
 * the parent's pages are still coming in: they must see the same memory. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned char pattern(size_t i) { return (unsigned char)(i * 13 + 5 + (i >> 12)); }

int main(int argc, char **argv) {
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    size_t size = (size_t)(argc > 2 ? atol(argv[2]) : 16) << 20;
    unsigned char *heap = malloc(size);
    if (fd < 0 || !heap) return 2;
    for (size_t i = 0; i < size; i++) heap[i] = pattern(i);
    pid_t pid = getpid();
    for (unsigned long n = 1;; n++) {
        pid_t child = fork();
        if (child == 0) {
            for (size_t i = 0; i < size; i++)
                if (heap[i] != pattern(i)) _exit(1);
            _exit(0);
        }
        int status = -1;
        if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status)) {
            char bad[64];
            int len = snprintf(bad, sizeof bad, "BAD child status %d\n", status);
            write(fd, bad, len);
            return 1;
        }
        char line[64];
        int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n, (int)getpid());
        if (write(fd, line, len) != len) return 3;
        if (getpid() != pid) return 4;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
