/* A self-checking counter: usage `counter OUTFILE [HEAP_MIB [SLICE_KIB]]`.
 * Fills a heap with a known pattern, then forever: checks one slice of the heap (64 KiB
 * unless SLICE_KIB says otherwise; the next one each line) and its own pid, appends a fixed-width line "<n> <pid> ok" to OUTFILE,
 * sleeps 5 ms in nanosleep. On any mismatch it writes a BAD line and exits 1.
 * After a restore, the file must hold one unbroken sequence of n. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7 + 3 + (i >> 12)); }

int main(int argc, char **argv) {
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    size_t size = (size_t)(argc > 2 ? atol(argv[2]) : 1) << 20;
    unsigned char *heap = malloc(size);
    if (fd < 0 || !heap) return 2;
    for (size_t i = 0; i < size; i++) heap[i] = pattern(i);
    pid_t pid = getpid();
    size_t slice = (size_t)(argc > 3 ? atol(argv[3]) : 64) << 10;
    if (slice > size) slice = size;
    for (unsigned long n = 1;; n++) {
        size_t base = (n * slice) % (size - slice + 1);
        char line[64];
        for (size_t i = base; i < base + slice; i++)
            if (heap[i] != pattern(i)) {
                int len = snprintf(line, sizeof line, "BAD heap at %zu\n", i);
                write(fd, line, len);
                return 1;
            }
        if (getpid() != pid) {
            write(fd, "BAD pid\n", 8);
            return 1;
        }
        int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n, (int)pid);
        if (write(fd, line, len) != len) return 3;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
