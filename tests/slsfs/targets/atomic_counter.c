/* The atomicity target: usage `atomic_counter FILE`.
 * Keeps a counter in memory and in FILE (a 20-byte decimal at offset 0, through one fd
 * kept open). Each step: read FILE; if it differs from the counter in memory, write
 * "MISMATCH memory=M file=F" to FILE.bad and exit 3; else increment the counter, write
 * it to FILE, sleep 1 ms. After a restore, memory and file must come from the same
 * instant, so the first step after the restore finds them equal. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static unsigned long read_file(int fd) {
    char buf[21] = {0};
    ssize_t got = pread(fd, buf, 20, 0);
    return got > 0 ? strtoul(buf, NULL, 10) : 0;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
    if (fd < 0) return 2;
    unsigned long counter = read_file(fd);
    for (;;) {
        unsigned long in_file = read_file(fd);
        if (in_file != counter) {
            char bad[4096], line[128];
            snprintf(bad, sizeof bad, "%s.bad", argv[1]);
            int len = snprintf(line, sizeof line, "MISMATCH memory=%lu file=%lu\n", counter, in_file);
            int b = open(bad, O_WRONLY | O_CREAT | O_APPEND, 0644);
            write(b, line, len);
            close(b);
            return 3;
        }
        counter++;
        char buf[32];
        snprintf(buf, sizeof buf, "%020lu", counter);
        if (pwrite(fd, buf, 20, 0) != 20) return 4;
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
