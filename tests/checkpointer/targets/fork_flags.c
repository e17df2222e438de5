/* Memory a fork does not copy: usage `fork_flags OUTFILE HEAP_MIB`.
 * A heap of HEAP_MIB MiB and two 64-page regions, one under MADV_DONTFORK (a fork's child
 * lacks it) and one under MADV_WIPEONFORK (the child has it empty), each filled with its own
 * pattern. Forever: checks both regions and one 64 KiB slice of the heap, appends a
 * fixed-width line "<n> <pid> ok" to OUTFILE, sleeps 5 ms. On a mismatch it writes a BAD
 * line and exits 1: an image taken from a fork snapshot must still hold both regions. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define REGION (64 * 4096)

static unsigned char pattern(size_t i, int salt) { return (unsigned char)(i * 13 + salt + (i >> 12)); }

static unsigned char *region(int advice, int salt) {
    unsigned char *p = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || madvise(p, REGION, advice) != 0) exit(2);
    for (size_t i = 0; i < REGION; i++) p[i] = pattern(i, salt);
    return p;
}

static int check(int fd, const char *name, unsigned char *p, size_t from, size_t to, int salt) {
    for (size_t i = from; i < to; i++)
        if (p[i] != pattern(i, salt)) {
            char line[96];
            int len = snprintf(line, sizeof line, "BAD %s at %zu: %u\n", name, i, p[i]);
            write(fd, line, len);
            return 0;
        }
    return 1;
}

int main(int argc, char **argv) {
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    size_t size = (size_t)atol(argv[2]) << 20;
    unsigned char *heap = malloc(size);
    if (fd < 0 || !heap) return 2;
    for (size_t i = 0; i < size; i++) heap[i] = pattern(i, 1);
    unsigned char *dontfork = region(MADV_DONTFORK, 2), *wipeonfork = region(MADV_WIPEONFORK, 3);
    pid_t pid = getpid();
    for (unsigned long n = 1;; n++) {
        size_t base = (n * 65536) % (size - 65536 + 1);
        if (!check(fd, "heap", heap, base, base + 65536, 1) || !check(fd, "dontfork", dontfork, 0, REGION, 2)
            || !check(fd, "wipeonfork", wipeonfork, 0, REGION, 3))
            return 1;
        char line[64];
        int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n, (int)pid);
        if (write(fd, line, len) != len) return 3;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
