/* A mapping that grows down as it is used (MAP_GROWSDOWN, as a thread library's or an
 * interpreter's own stacks; zdtm grow_map): usage `grows_down OUTFILE`.
 * A one-page MAP_GROWSDOWN mapping at the top of a 2 MiB hole. Forever: writes its number
 * into the next page below (the kernel grows the mapping on that touch) until 400 pages,
 * then starts over from the top; checks every page written so far still holds its number,
 * appends a fixed-width line "<n> <pid> ok" to OUTFILE and sleeps 5 ms. A page that lost
 * its number writes a BAD line and exits 1 (a mapping that does not grow: SIGSEGV). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096L
#define HOLE 512
#define DEPTH 400

int main(int argc, char **argv) {
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char *hole = mmap(NULL, HOLE * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fd < 0 || hole == MAP_FAILED || munmap(hole, HOLE * PAGE) != 0) return 2;
    char *top = mmap(hole + (HOLE - 1) * PAGE, PAGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_GROWSDOWN, -1, 0);
    if (top == MAP_FAILED) return 2;
    pid_t pid = getpid();
    for (unsigned long n = 1;; n++) {
        long depth = n % DEPTH;
        *(volatile long *)(top - depth * PAGE) = (long)depth;
        for (long k = 1; k <= (n < DEPTH ? depth : DEPTH - 1); k++)
            if (*(long *)(top - k * PAGE) != k) {
                char line[64];
                int len = snprintf(line, sizeof line, "BAD page %ld holds %ld\n", k, *(long *)(top - k * PAGE));
                write(fd, line, len);
                return 1;
            }
        char line[64];
        int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n, (int)pid);
        if (write(fd, line, len) != len) return 3;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
