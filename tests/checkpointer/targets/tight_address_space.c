/* A process with no room left under its address-space limit: `tight_address_space OUTFILE
 * [hard]`. It sets its soft RLIMIT_AS to the size of its address space now (the hard limit
 * stays unlimited; with `hard`, it is set the same), checks that a new one-page mapping is refused, then writes line n, "<n> <pid>
 * ok", at its place in OUTFILE every 5 ms (pwrite(2) and nanosleep(2) only: no memory of its
 * own is needed; a restored copy rewrites the lines from where its image was taken). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char line[64];
    long pages = 0;
    FILE *statm = fopen("/proc/self/statm", "r");
    if (out < 0 || !statm || fscanf(statm, "%ld", &pages) != 1)
        return 1;
    fclose(statm);
    struct rlimit limit = {(rlim_t)pages * sysconf(_SC_PAGESIZE), RLIM_INFINITY};
    if (argc > 2 && strcmp(argv[2], "hard") == 0)
        limit.rlim_max = limit.rlim_cur;
    if (setrlimit(RLIMIT_AS, &limit) != 0)
        return 1;
    if (mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED) {
        write(out, "BAD the limit left room for a mapping\n", 38);
        return 1;
    }
    struct timespec pause = {0, 5000000};
    for (long n = 1;; n++) {
        int size = snprintf(line, sizeof line, "%08ld %7d ok\n", n, getpid());
        pwrite(out, line, size, (n - 1) * size);
        nanosleep(&pause, NULL);
    }
}
