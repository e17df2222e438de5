/* Memory with the advice and locks programs give it: usage `advised OUTFILE`.
 * One 4-page private anonymous mapping each: locked (mlock), locked on fault
 * (mlock2 MLOCK_ONFAULT), kept out of core dumps (MADV_DONTDUMP), reserved without swap
 * accounting (MAP_NORESERVE), and advised MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_MERGEABLE,
 * MADV_SEQUENTIAL, MADV_RANDOM; each filled with its own byte. And one inaccessible (PROT_NONE)
 * mapping locked (as mlockall(MCL_FUTURE) locks a thread stack's guard page; mlock answers
 * ENOMEM for it, yet locks it). Writes "<name> <address>"
 * per mapping to OUTFILE, then forever checks the bytes, appends "<n> <pid> ok" and
 * sleeps 10 ms (a changed byte: a BAD line, exit 1). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SIZE (4 * 4096)
enum { LOCKED, ONFAULT, DONTDUMP, NORESERVE, HUGEPAGE, NOHUGEPAGE, MERGEABLE, SEQUENTIAL, RANDOM, LOCKED_NONE,
       COUNT };
static const char *names[COUNT] = {"locked", "lockonfault", "dontdump", "noreserve", "hugepage", "nohugepage",
                                   "mergeable", "sequential", "random", "locked_none"};
static const int advice[COUNT] = {0, 0, MADV_DONTDUMP, 0, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_MERGEABLE,
                                  MADV_SEQUENTIAL, MADV_RANDOM, 0};

int main(int argc, char **argv) {
    FILE *out = fopen(argv[1], "w");
    unsigned char *maps[COUNT];
    if (!out) return 2;
    for (int i = 0; i < COUNT; i++) {
        if (i == LOCKED_NONE) {
            maps[i] = mmap(NULL, SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (maps[i] == MAP_FAILED || (mlock(maps[i], SIZE) && errno != ENOMEM)) return 2;
            fprintf(out, "%s %lx\n", names[i], (unsigned long)maps[i]);
            continue;
        }
        maps[i] = mmap(NULL, SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | (i == NORESERVE ? MAP_NORESERVE : 0), -1, 0);
        if (maps[i] == MAP_FAILED) return 2;
        if ((i == LOCKED && mlock(maps[i], SIZE)) || (i == ONFAULT && mlock2(maps[i], SIZE, MLOCK_ONFAULT))
            || (advice[i] && madvise(maps[i], SIZE, advice[i])))
            return 2;
        memset(maps[i], 'a' + i, SIZE);
        fprintf(out, "%s %lx\n", names[i], (unsigned long)maps[i]);
    }
    fflush(out);
    for (unsigned long n = 1;; n++) {
        for (int i = 0; i < LOCKED_NONE; i++)
            for (int at = 0; at < SIZE; at++)
                if (maps[i][at] != 'a' + i) {
                    fprintf(out, "BAD %s at %d\n", names[i], at);
                    return 1;
                }
        fprintf(out, "%08lu %7d ok\n", n, (int)getpid());
        fflush(out);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
