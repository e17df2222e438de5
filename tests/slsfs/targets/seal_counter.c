/* A target for the group stop's syncfs: usage `seal_counter FILE mmap|reopen`.
 * Keeps a counter in memory and in FILE (a 20-byte decimal at offset 0), like
 * atomic_counter, but never through an fd kept open: `mmap` writes it through a shared
 * writable mapping of FILE whose fd was closed at once (the kernel holds the dirty page;
 * only the mapping keeps the file open for writing), `reopen` opens FILE, writes and
 * closes it at each step (between steps nothing holds it open for writing). Each step
 * first compares file and memory; a difference after a restore is written to FILE.bad
 * ("MISMATCH memory=M file=F") and the target exits 3. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void mismatch(const char *path, unsigned long memory, unsigned long file) {
    char bad[4096], line[128];
    snprintf(bad, sizeof bad, "%s.bad", path);
    int len = snprintf(line, sizeof line, "MISMATCH memory=%lu file=%lu\n", memory, file);
    int b = open(bad, O_WRONLY | O_CREAT | O_APPEND, 0644);
    write(b, line, len);
    close(b);
    exit(3);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int mapped = strcmp(argv[2], "mmap") == 0;
    int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
    if (fd < 0 || ftruncate(fd, 4096) != 0) return 2;
    char *page = NULL;
    if (mapped) {
        page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (page == MAP_FAILED) return 2;
    }
    close(fd);
    unsigned long counter = 0;
    int first = 1;
    for (;;) {
        char buf[32] = {0};
        if (mapped) {
            memcpy(buf, page, 20);
        } else {
            fd = open(argv[1], O_RDWR);
            if (fd < 0 || pread(fd, buf, 20, 0) < 0) return 4;
        }
        unsigned long in_file = strtoul(buf, NULL, 10);
        if (first) counter = in_file;
        else if (in_file != counter) mismatch(argv[1], counter, in_file);
        first = 0;
        counter++;
        snprintf(buf, sizeof buf, "%020lu", counter);
        if (mapped) {
            memcpy(page, buf, 20);
        } else {
            if (pwrite(fd, buf, 20, 0) != 20) return 4;
            close(fd);
        }
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
