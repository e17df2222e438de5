/* Mappings that come and go: usage `remapper OUTFILE`. Every 5 ms it maps a new
 * 1 MiB region, fills it with a pattern derived from n, checks the previous region's
 * pattern, unmaps it, grows its heap by 4 KiB with sbrk, and appends "<n> <pid> ok".
 * A restored image with stale or missing pages makes it write BAD (or crash). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define REGION (1 << 20)

int main(int argc, char **argv) {
    int out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    unsigned char *previous = NULL;
    unsigned long previous_n = 0;
    pid_t pid = getpid();
    for (unsigned long n = 1;; n++) {
        unsigned char *region = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) return 2;
        for (size_t i = 0; i < REGION; i += 4096) region[i] = (unsigned char)(n + i / 4096);
        if (previous) {
            for (size_t i = 0; i < REGION; i += 4096)
                if (previous[i] != (unsigned char)(previous_n + i / 4096)) {
                    write(out, "BAD region contents\n", 20);
                    return 1;
                }
            munmap(previous, REGION);
        }
        unsigned char *grown = sbrk(4096);
        memset(grown, (int)n, 4096);
        previous = region, previous_n = n;
        char line[64];
        int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n, (int)pid);
        if (write(out, line, len) != len) return 3;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
