/* What a fork does with memory, as the program asked: usage `fork_advice OUTFILE`.
 * Three one-page regions filled with their own pattern: one under MADV_WIPEONFORK (a child's
 * copy is empty: the random-number state of OpenSSL/BoringSSL/LibreSSL), one under
 * MADV_DONTFORK (a child has none), and one MAP_DROPPABLE (Linux 6.11; the kernel may empty
 * it at any time, and a child's copy is empty: glibc's getrandom state). Forever: forks a
 * child that checks its copies (exit 0: as asked; 1: the wiped page holds data; 2: the
 * dontfork page is mapped; 3: the droppable page holds data), checks that its own wiped and
 * dontfork pages still hold their patterns, then appends a fixed-width line
 * "<n> <pid> <kept|empty> ok" to OUTFILE (kept: the droppable page still holds its pattern;
 * empty: it is all zero) and sleeps 10 ms. A mismatch writes a BAD line and exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif
#define PAGE 4096

static void fill(unsigned char *p, int salt) { for (int i = 0; i < PAGE; i++) p[i] = (unsigned char)(i * 7 + salt) | 1; }

static int holds(const unsigned char *p, int salt) {
    for (int i = 0; i < PAGE; i++)
        if (p[i] != ((unsigned char)(i * 7 + salt) | 1)) return 0;
    return 1;
}

static int empty(const unsigned char *p) {
    for (int i = 0; i < PAGE; i++)
        if (p[i]) return 0;
    return 1;
}

static unsigned char *page(int flags, int advice, int salt) {
    unsigned char *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || (advice && madvise(p, PAGE, advice) != 0)) exit(2);
    fill(p, salt);
    return p;
}

static void bad(int fd, const char *what) {
    char line[96];
    int len = snprintf(line, sizeof line, "BAD %s\n", what);
    write(fd, line, len);
    exit(1);
}

int main(int argc, char **argv) {
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 2;
    unsigned char *wiped = page(MAP_PRIVATE, MADV_WIPEONFORK, 1);
    unsigned char *unforked = page(MAP_PRIVATE, MADV_DONTFORK, 2);
    unsigned char *droppable = page(MAP_DROPPABLE, 0, 3);
    pid_t pid = getpid();
    for (unsigned long n = 1;; n++) {
        pid_t child = fork();
        if (child == 0) {
            if (!empty(wiped)) _exit(1);
            if (madvise(unforked, PAGE, MADV_NORMAL) == 0 || errno != ENOMEM) _exit(2);
            if (!empty(droppable)) _exit(3);
            _exit(0);
        }
        int status;
        if (child < 0 || waitpid(child, &status, 0) != child) bad(fd, "fork");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            char what[64];
            snprintf(what, sizeof what, "child saw %s", !WIFEXITED(status) ? "a signal" :
                     WEXITSTATUS(status) == 1 ? "data in the wiped page" :
                     WEXITSTATUS(status) == 2 ? "the dontfork page" : "data in the droppable page");
            bad(fd, what);
        }
        if (!holds(wiped, 1)) bad(fd, "wiped page lost its data");
        if (!holds(unforked, 2)) bad(fd, "dontfork page lost its data");
        const char *state = holds(droppable, 3) ? "kept" : empty(droppable) ? "empty" : NULL;
        if (!state) bad(fd, "droppable page changed");
        char line[64];
        int len = snprintf(line, sizeof line, "%08lu %7d %5s ok\n", n, (int)pid, state);
        if (write(fd, line, len) != len) return 3;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
