/* Rewrites every page of its heap, sweep after sweep: usage `rewriter OUTFILE HEAP_MIB`.
 * Sweep g writes g into the first and last word of each page, after checking that the
 * page still holds g-1 there (what sweep g-1 left). After each sweep it appends a
 * fixed-width line "<g> <pid> ok" to OUTFILE and sleeps 1 ms. A restored rewriter whose
 * image holds any page newer than the checkpoint instant writes a BAD line and exits 1:
 * the page ahead of its sweep holds a later generation than it expects. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / sizeof(unsigned long))

int main(int argc, char **argv) {
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    size_t pages = ((size_t)(argc > 2 ? atol(argv[2]) : 16) << 20) / PAGE;
    unsigned long *heap = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fd < 0 || heap == MAP_FAILED) return 2;
    pid_t pid = getpid();
    for (unsigned long g = 1;; g++) {
        for (size_t i = 0; i < pages; i++) {
            unsigned long *page = heap + i * WORDS;
            if (page[0] != g - 1 || page[WORDS - 1] != g - 1) {
                char line[96];
                int len = snprintf(line, sizeof line, "BAD page %zu holds %lu/%lu in sweep %lu\n",
                                   i, page[0], page[WORDS - 1], g);
                write(fd, line, len);
                return 1;
            }
            page[0] = page[WORDS - 1] = g;
        }
        if (getpid() != pid) {
            write(fd, "BAD pid\n", 8);
            return 1;
        }
        char line[64];
        int len = snprintf(line, sizeof line, "%08lu %7d ok\n", g, (int)pid);
        if (write(fd, line, len) != len) return 3;
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
