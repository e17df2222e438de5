/* Zero pages that restore must tell apart: usage `zero_pages OUTFILE MAPFILE`.
 * MAPFILE (3 pages of 0xAA) is mapped privately: page 1 is overwritten with zeros (a
 * restore must write those zeros: the file says 0xAA), page 2 with 0x55, page 0 left
 * alone. 8 anonymous pages: 0, 1, 3 and 6 hold a pattern, 2 is written then zeroed,
 * 5 is only read (both zero in the image; fresh memory is zero too), 4 and 7 untouched.
 * Prints "<file map> <anon map>" addresses (hex) to OUTFILE.addr, then forever: checks
 * every page, appends "<n> <pid> ok" to OUTFILE (a BAD line and exit 1 on a mismatch),
 * sleeps 5 ms. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static int anon_value(int page, size_t i) {
    return (page == 0 || page == 1 || page == 3 || page == 6) ? (unsigned char)(page * 31 + i + 1) : 0;
}

int main(int argc, char **argv) {
    int out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int file = open(argv[2], O_RDONLY);
    unsigned char *fmap = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, file, 0);
    unsigned char *anon = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (out < 0 || file < 0 || fmap == MAP_FAILED || anon == MAP_FAILED) return 2;
    memset(fmap + PAGE, 0, PAGE);
    memset(fmap + 2 * PAGE, 0x55, PAGE);
    for (int page = 0; page < 8; page++)
        for (size_t i = 0; i < PAGE; i++)
            if (anon_value(page, i) || page == 2) anon[page * PAGE + i] = page == 2 ? 0xFF : anon_value(page, i);
    memset(anon + 2 * PAGE, 0, PAGE);
    volatile unsigned char sink = anon[5 * PAGE];
    (void)sink;
    char name[4096], line[64];
    snprintf(name, sizeof name, "%s.addr", argv[1]);
    FILE *addr = fopen(name, "w");
    fprintf(addr, "%lx %lx\n", (unsigned long)fmap, (unsigned long)anon);
    fclose(addr);
    pid_t pid = getpid();
    for (unsigned long n = 1;; n++) {
        for (size_t i = 0; i < 3 * PAGE; i++) {
            unsigned char want = i < PAGE ? 0xAA : i < 2 * PAGE ? 0 : 0x55;
            if (fmap[i] != want) {
                int len = snprintf(line, sizeof line, "BAD file map at %zu: %d\n", i, fmap[i]);
                write(out, line, len);
                return 1;
            }
        }
        for (size_t i = 0; i < 8 * PAGE; i++)
            if (anon[i] != anon_value(i / PAGE, i % PAGE)) {
                int len = snprintf(line, sizeof line, "BAD anon map at %zu: %d\n", i, anon[i]);
                write(out, line, len);
                return 1;
            }
        int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n, (int)pid);
        if (write(out, line, len) != len) return 3;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
